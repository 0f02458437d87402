//! What the edge reads and whom it answers, through the real edge and
//! origin: request bodies just under the limit pass and far over it are a 413
//! in the route's API shape (declared by `Content-Length` and streamed), too
//! many headers a 431; browser origins get CORS answers, preflights without
//! credentials, never `*` with credentials.
#![expect(
    clippy::unwrap_used,
    reason = "tests: any failure should fail the test"
)]

use serde_json::{Value, json};
use sluice_e2e::{DEMO_KEY, Options, Stack};

const LIMIT: usize = 64 * 1024;
const APP: &str = "https://app.example.com";

async fn start() -> Stack {
    Stack::start(Options {
        edge_variables: vec![
            ("max_request_body_bytes", LIMIT.to_string()),
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
    let response = reqwest::Client::new()
        .post(url)
        .bearer_auth(DEMO_KEY)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    // The body must arrive whole: a 413 sent while the client is still
    // sending must not be lost to a reset connection.
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
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

    // Far over: 413 in OpenAI's shape, not a 502 from a cut origin connection.
    let (status, body) = post(&chat, chat_of_size(4 << 20).into()).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "request_too_large", "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let (status, body) = post(&chat, streamed(chat_of_size(4 << 20))).await;
    assert_eq!(status, 413, "{body}");
    // One byte over is over.
    let (status, _) = post(&chat, streamed(chat_of_size(LIMIT + 1))).await;
    assert_eq!(status, 413);

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
