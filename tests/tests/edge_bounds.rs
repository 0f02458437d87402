//! What the edge reads and whom it answers, through the real edge and
//! origin: request bodies just under the limit pass and far over it are a 413
//! in the route's API shape (declared by `Content-Length` and streamed), too
//! many headers a 431; on the AI routes a body past the held limit streams to
//! the origin, uncached, its tokens still counted; browser origins get CORS
//! answers, preflights without credentials, never `*` with credentials.
#![expect(
    clippy::unwrap_used,
    reason = "tests: any failure should fail the test"
)]

use serde_json::{Value, json};
use sluice_e2e::{DEMO_KEY, Options, Stack};

const LIMIT: usize = 64 * 1024;
/// What the AI routes take, streamed past `LIMIT`.
const AI_LIMIT: usize = 2 << 20;
const APP: &str = "https://app.example.com";

async fn start() -> Stack {
    Stack::start(Options {
        edge_variables: vec![
            ("max_request_body_bytes", LIMIT.to_string()),
            ("max_ai_request_body_bytes", AI_LIMIT.to_string()),
            (
                "cors_allowed_origins",
                format!("{APP}, https://*.tools.dev"),
            ),
            ("cors_allow_credentials", "true".into()),
        ],
        ..Options::default()
    })
    .await
}

/// A chat request whose JSON is exactly `size` bytes.
fn chat_of_size(size: usize) -> Vec<u8> {
    let frame = json!({ "model": "sluice-sim-1", "max_tokens": 5,
        "messages": [{ "role": "user", "content": "" }] })
    .to_string();
    let body = json!({ "model": "sluice-sim-1", "max_tokens": 5,
        "messages": [{ "role": "user", "content": "x".repeat(size - frame.len()) }] });
    let bytes = serde_json::to_vec(&body).unwrap();
    assert_eq!(bytes.len(), size);
    bytes
}

/// The body as a chunked stream of 8 KiB pieces (no `Content-Length`).
fn streamed(bytes: Vec<u8>) -> reqwest::Body {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        bytes.chunks(8192).map(|c| Ok(c.to_vec())).collect();
    reqwest::Body::wrap_stream(futures::stream::iter(chunks))
}

async fn post(url: &str, body: reqwest::Body) -> (u16, Value) {
    let (status, _, body) = post_as(url, DEMO_KEY, body).await;
    (status, body)
}

/// Status, `x-cache` and body of a POST as `key`.
async fn post_as(url: &str, key: &str, body: reqwest::Body) -> (u16, String, Value) {
    let response = reqwest::Client::new()
        .post(url)
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let cache = response
        .headers()
        .get("x-cache")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    // The body must arrive whole: a 413 sent while the client is still
    // sending must not be lost to a reset connection.
    let text = response.text().await.unwrap();
    (
        status,
        cache,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_over_the_limit_are_413_in_the_routes_shape_and_headers_bounded() {
    let stack = start().await;
    let chat = format!("{}/v1/chat/completions", stack.edge);

    // Just under (and at) the limit: served, declared or streamed.
    let (status, body) = post(&chat, chat_of_size(LIMIT - 100).into()).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(&chat, streamed(chat_of_size(LIMIT))).await;
    assert_eq!(status, 200, "{body}");

    // Far over: 413 in OpenAI's shape, not a 502 from a cut origin
    // connection, naming the limit to raise.
    let (status, body) = post(&chat, chat_of_size(4 << 20).into()).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "request_too_large", "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&AI_LIMIT.to_string()) && message.contains("max_ai_request_body_bytes"),
        "{message}"
    );
    let (status, body) = post(&chat, streamed(chat_of_size(4 << 20))).await;
    assert_eq!(status, 413, "{body}");
    // One byte over is over, found while streaming it to the origin.
    let (status, _) = post(&chat, streamed(chat_of_size(AI_LIMIT + 1))).await;
    assert_eq!(status, 413);
    // Other routes hold their bodies and stop at `max_request_body_bytes`.
    let title = json!({ "title": "t".repeat(LIMIT) }).to_string();
    let (status, body) = post(&format!("{}/v1/conversations", stack.edge), title.into()).await;
    assert_eq!(status, 413, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`max_request_body_bytes`"),
        "{body}"
    );

    // On Anthropic's route, Anthropic's shape.
    let (status, body) = post(
        &format!("{}/v1/messages", stack.edge),
        chat_of_size(4 << 20).into(),
    )
    .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "request_too_large", "{body}");

    // Too many headers: 431.
    let mut request = reqwest::Client::new()
        .get(format!("{}/v1/me", stack.edge))
        .bearer_auth(DEMO_KEY);
    for n in 0..120 {
        request = request.header(format!("x-extra-{n}"), "1");
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status().as_u16(), 431);

    // The edge is still serving.
    let (status, _) = post(&chat, chat_of_size(1000).into()).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn ai_bodies_past_the_held_limit_stream_uncached_and_token_limits_still_hold() {
    let stack = Stack::start(Options {
        edge_variables: vec![
            ("max_request_body_bytes", LIMIT.to_string()),
            ("max_ai_request_body_bytes", AI_LIMIT.to_string()),
            // 200 000 tokens an hour: a 512 KiB body (about 131 000) fits once.
            ("tokens_free", "200000/1h".into()),
        ],
        ..Options::default()
    })
    .await;
    let chat = format!("{}/v1/chat/completions", stack.edge);
    let body = chat_of_size(512 << 10);
    // Declared and chunked alike: served, never cached (the same body again
    // is not a hit), its tokens charged and settled.
    let (status, cache, answer) = post_as(&chat, sluice_e2e::OTHER_KEY, body.clone().into()).await;
    assert_eq!((status, cache.as_str()), (200, "BYPASS"), "{answer}");
    let (status, cache, _) = post_as(&chat, sluice_e2e::OTHER_KEY, streamed(body.clone())).await;
    assert_eq!((status, cache.as_str()), (200, "BYPASS"));

    // The token limit counts a streamed body as it passes: the first fits,
    // the second is refused before its last byte reaches the origin.
    let conversation: Value = reqwest::Client::new()
        .post(format!("{}/v1/conversations", stack.edge))
        .bearer_auth(DEMO_KEY)
        .json(&json!({ "title": "big" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let turns = format!(
        "{}/v1/conversations/{}/messages",
        stack.edge,
        conversation["id"].as_str().unwrap()
    );
    let turn = json!({ "content": "y".repeat(512 << 10), "max_tokens": 5 }).to_string();
    let (status, _, first) = post_as(&turns, DEMO_KEY, streamed(turn.clone().into_bytes())).await;
    assert_eq!(status, 201, "{first}");
    let (status, _, refused) = post_as(&turns, DEMO_KEY, streamed(turn.into_bytes())).await;
    assert_eq!(status, 429, "{refused}");
    assert_eq!(refused["error"]["type"], "tokens", "{refused}");
    let messages: Value = reqwest::Client::new()
        .get(&turns)
        .bearer_auth(DEMO_KEY)
        .header("cache-control", "no-cache")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        messages["data"].as_array().unwrap().len(),
        2,
        "the refused turn never reached the origin: {messages}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn browser_origins_get_cors_answers() {
    let stack = start().await;
    let client = reqwest::Client::new();
    let header = |response: &reqwest::Response, name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };

    // A preflight is answered without credentials.
    let preflight = client
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/v1/chat/completions", stack.edge),
        )
        .header("origin", APP)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status().as_u16(), 204);
    assert_eq!(
        header(&preflight, "access-control-allow-origin").as_deref(),
        Some(APP)
    );
    assert_eq!(
        header(&preflight, "access-control-allow-credentials").as_deref(),
        Some("true")
    );
    assert!(
        header(&preflight, "access-control-allow-methods")
            .unwrap()
            .contains("POST")
    );
    assert_eq!(
        header(&preflight, "access-control-allow-headers").as_deref(),
        Some("authorization, content-type")
    );
    // A subdomain pattern admits subdomains only; others are refused.
    let sub = client
        .request(reqwest::Method::OPTIONS, format!("{}/v1/me", stack.edge))
        .header("origin", "https://a.tools.dev")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(sub.status().as_u16(), 204);
    let other = client
        .request(reqwest::Method::OPTIONS, format!("{}/v1/me", stack.edge))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status().as_u16(), 403);
    assert_eq!(header(&other, "access-control-allow-origin"), None);

    // Answers, refusals included, carry the origin and expose the limits.
    let me = client
        .get(format!("{}/v1/me", stack.edge))
        .bearer_auth(DEMO_KEY)
        .header("origin", APP)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status().as_u16(), 200);
    assert_eq!(
        header(&me, "access-control-allow-origin").as_deref(),
        Some(APP)
    );
    assert!(header(&me, "vary").unwrap().contains("Origin"));
    assert!(
        header(&me, "access-control-expose-headers")
            .unwrap()
            .contains("x-ratelimit-remaining")
    );
    let refused = client
        .get(format!("{}/v1/me", stack.edge))
        .header("origin", APP)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    assert_eq!(
        header(&refused, "access-control-allow-origin").as_deref(),
        Some(APP)
    );
    // No Origin, no CORS headers.
    let plain = client
        .get(format!("{}/v1/me", stack.edge))
        .bearer_auth(DEMO_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(header(&plain, "access-control-allow-origin"), None);
}
