//! Generation against a real HTTP upstream (tests/upstream): wire formats,
//! key rotation, breakers, fallback, retry limits, streams, cancellation and
//! coalescing, through the origin's real router on a real socket.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers: any failure should fail the test"
)]

mod upstream;

use futures::StreamExt;
use serde_json::{Value, json};
use sluice_core::edge_signature;
use sluice_core::identity::{Identity, Tier};
use sluice_origin::app::{AppState, app};
use sluice_origin::clock::unix_now;
use sluice_origin::config::Config;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use upstream::{Behaviour, REPLY, Upstream};

const SECRET: &str = "0123456789abcdef0123456789abcdef";

struct Origin {
    addr: SocketAddr,
    client: reqwest::Client,
}

/// An origin whose models all point at `up`, with fast backoff and breakers;
/// `overrides` (`key = value` lines) replace `[routing]` settings.
async fn origin(up: &Upstream, overrides: &str) -> Origin {
    let mut settings = vec![
        ("attempts", "3"),
        ("backoff_base_ms", "1"),
        ("backoff_max_ms", "20"),
        ("breaker_failures", "5"),
        ("breaker_open_ms", "300"),
        ("first_byte_timeout_ms", "2000"),
        ("stream_idle_timeout_ms", "2000"),
    ];
    for line in overrides.lines().filter(|l| !l.trim().is_empty()) {
        let (key, value) = line.split_once('=').unwrap();
        settings.retain(|(k, _)| *k != key.trim());
        settings.push((key.trim(), value.trim()));
    }
    let routing: String = settings
        .iter()
        .map(|(k, v)| format!("{k} = {v}\n"))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let openai = up.openai_base();
    let anthropic = up.anthropic_base();
    let config = Config::from_toml(&format!(
        r#"
[edge]
secret = "{SECRET}"
[database]
url = "sqlite://{db}?mode=rwc"
min_connections = 1
[routing]
{routing}

[[models]]
name = "gpt-test"
[[models.deployments]]
provider = "openai"
base_url = "{openai}"
model = "upstream-gpt"
keys = ["sk-a", "sk-b"]
input_cost_per_million = 1000.0
output_cost_per_million = 2000.0

[[models]]
name = "claude-test"
[[models.deployments]]
provider = "anthropic"
base_url = "{anthropic}"
model = "claude-upstream"
keys = ["ak-1"]

[[models]]
name = "fallback-test"
[[models.deployments]]
name = "primary"
provider = "openai"
base_url = "{openai}"
model = "broken-primary"
[[models.deployments]]
name = "secondary"
provider = "anthropic"
base_url = "{anthropic}"
model = "healthy-secondary"

[[models]]
name = "embed-test"
[[models.deployments]]
provider = "openai"
base_url = "{openai}"
model = "upstream-embed"
"#,
        db = dir.path().join("providers.db").display(),
    ))
    .unwrap();
    let db = sluice_origin::db::connect(&config.database).await.unwrap();
    std::mem::forget(dir);
    let router = app(
        AppState::new(&config, db).await.unwrap(),
        Duration::from_secs(30),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    Origin {
        addr,
        client: reqwest::Client::new(),
    }
}

impl Origin {
    fn post(&self, path: &str, subject: &str, body: &Value) -> reqwest::RequestBuilder {
        let identity = Identity {
            sub: subject.into(),
            tier: Tier::Premium,
            kid: None,
            scopes: vec![],
        }
        .encode();
        let mut request = self.client.post(format!("http://{}{path}", self.addr));
        for (name, value) in
            edge_signature::signed_headers(SECRET.as_bytes(), "POST", path, unix_now(), &identity)
        {
            request = request.header(name, value);
        }
        request.json(body)
    }

    async fn chat(&self, body: Value) -> reqwest::Response {
        self.post("/v1/chat/completions", "alice", &body)
            .send()
            .await
            .unwrap()
    }
}

fn chat_body(model: &str, stream: bool) -> Value {
    json!({
        "model": model, "stream": stream, "stream_options": { "include_usage": stream },
        "messages": [{ "role": "system", "content": "be brief" }, { "role": "user", "content": "hi" }],
    })
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// The `data:` payloads of an SSE body, in order.
fn sse_payloads(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter_map(|frame| frame.strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

fn streamed_text(payloads: &[String]) -> String {
    payloads
        .iter()
        .filter(|p| *p != "[DONE]")
        .filter_map(|p| serde_json::from_str::<Value>(p).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

#[tokio::test]
async fn openai_upstream_round_trips_with_usage_and_cost() {
    let up = Upstream::start().await;
    let origin = origin(&up, "").await;
    let response = origin.chat(chat_body("gpt-test", false)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-sluice-provider"), "openai");
    assert_eq!(header(&response, "x-sluice-deployment"), "gpt-test/1");
    assert_eq!(header(&response, "x-sluice-total-tokens"), "16");
    // 11 prompt tokens at $1000/M plus 5 completion tokens at $2000/M.
    assert_eq!(header(&response, "x-sluice-cost-usd"), "0.021000");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], REPLY);
    assert_eq!(
        body["model"], "gpt-test",
        "the client's name, not the upstream's"
    );
    let seen = up.seen();
    assert_eq!(seen[0].model, "upstream-gpt");
    assert!(seen[0].key.as_deref().is_some_and(|k| k.starts_with("sk-")));

    let response = origin.chat(chat_body("gpt-test", true)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "content-type"), "text/event-stream");
    let payloads = sse_payloads(&response.text().await.unwrap());
    assert_eq!(streamed_text(&payloads), REPLY);
    assert_eq!(payloads.last().unwrap(), "[DONE]");
    let usage: Value = serde_json::from_str(&payloads[payloads.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["total_tokens"], 16);
    assert!(up.seen()[1].stream);
}

#[tokio::test]
async fn anthropic_upstream_is_translated_both_ways() {
    let up = Upstream::start().await;
    let origin = origin(&up, "").await;
    let response = origin.chat(chat_body("claude-test", false)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-sluice-provider"), "anthropic");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], REPLY);
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["prompt_tokens"], 13);
    assert_eq!(body["usage"]["completion_tokens"], 6);
    assert_eq!(up.seen()[0].key.as_deref(), Some("ak-1"));
    assert_eq!(up.seen()[0].path, "/v1/messages");

    let response = origin.chat(chat_body("claude-test", true)).await;
    let payloads = sse_payloads(&response.text().await.unwrap());
    assert_eq!(streamed_text(&payloads), REPLY);
    let usage: Value = serde_json::from_str(&payloads[payloads.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["prompt_tokens"], 13);
    assert_eq!(usage["usage"]["completion_tokens"], 6);
}

#[tokio::test]
async fn rotates_away_from_a_rate_limited_key_until_its_retry_after() {
    let up = Upstream::start().await;
    let origin = origin(&up, "").await;
    up.for_key("sk-a", Behaviour::Status(429, Some(30)));
    for _ in 0..6 {
        let response = origin.chat(chat_body("gpt-test", false)).await;
        assert_eq!(response.status(), 200);
    }
    let to_a = up
        .seen()
        .iter()
        .filter(|s| s.key.as_deref() == Some("sk-a"))
        .count();
    assert!(to_a <= 1, "sk-a rests 30 s after its 429, got {to_a} calls");

    // Both keys limited: the client gets 429 with the upstream's wait.
    up.for_key("sk-b", Behaviour::Status(429, Some(7)));
    let response = origin.chat(chat_body("gpt-test", false)).await;
    assert_eq!(response.status(), 429);
    let retry_after: u64 = header(&response, "retry-after").parse().unwrap();
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status_code"], 429);
    assert_eq!(body["error"]["type"], "rate_limit_error");
}

#[tokio::test]
async fn breaker_opens_then_a_probe_closes_it() {
    let up = Upstream::start().await;
    let origin = origin(&up, "attempts = 1\nbreaker_failures = 2").await;
    up.for_model("upstream-embed", Behaviour::Status(500, None));
    let embed = || async {
        origin
            .post(
                "/v1/embeddings",
                "alice",
                &json!({ "model": "embed-test", "input": ["a"] }),
            )
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(embed().await, 502);
    assert_eq!(embed().await, 502);
    let calls = up.seen().len();
    assert_eq!(embed().await, 503, "open: refused without calling");
    assert_eq!(up.seen().len(), calls);
    up.clear();
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(embed().await, 200, "the half-open probe succeeds");
    assert_eq!(embed().await, 200, "closed again");
    assert_eq!(up.seen().len(), calls + 2);
}

#[tokio::test]
async fn falls_back_to_the_next_deployment_after_its_retries() {
    let up = Upstream::start().await;
    let origin = origin(&up, "").await;
    up.for_model("broken-primary", Behaviour::Status(503, None));
    let response = origin.chat(chat_body("fallback-test", false)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-sluice-deployment"), "secondary");
    assert_eq!(header(&response, "x-sluice-attempts"), "4");
    let models: Vec<String> = up.seen().into_iter().map(|s| s.model).collect();
    assert_eq!(
        models,
        [
            "broken-primary",
            "broken-primary",
            "broken-primary",
            "healthy-secondary"
        ]
    );
}

#[tokio::test]
async fn retries_only_retryable_failures_and_only_so_often() {
    let up = Upstream::start().await;
    let origin = origin(&up, "").await;
    up.for_model("upstream-gpt", Behaviour::Status(502, None));
    let response = origin.chat(chat_body("gpt-test", false)).await;
    assert_eq!(response.status(), 502);
    assert_eq!(up.seen().len(), 3, "three attempts, no more");

    let up = Upstream::start().await;
    let origin = self::origin(&up, "").await;
    up.next(1, Behaviour::Status(400, None));
    let response = origin.chat(chat_body("gpt-test", false)).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("scripted 400")
    );
    assert_eq!(up.seen().len(), 1, "a rejected request is not retried");

    // Two failures then success: the third attempt answers.
    up.next(2, Behaviour::Status(500, None));
    let response = origin.chat(chat_body("gpt-test", false)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-sluice-attempts"), "3");
}

#[tokio::test]
async fn a_started_stream_is_never_retried() {
    let up = Upstream::start().await;
    let origin = origin(&up, "").await;
    up.next(1, Behaviour::StreamThenBreak(2));
    let response = origin.chat(chat_body("gpt-test", true)).await;
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut text = String::new();
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(bytes) => text.push_str(&String::from_utf8_lossy(&bytes)),
            Err(_) => break,
        }
    }
    let payloads = sse_payloads(&text);
    assert_eq!(streamed_text(&payloads), "hello from ", "{text}");
    assert!(
        payloads.iter().any(|p| p.contains("mid-stream")),
        "ends with an error event: {payloads:?}"
    );
    assert!(!payloads.contains(&"[DONE]".to_string()));
    assert_eq!(up.seen().len(), 1, "no second call once the stream started");

    // A stream refused before its first event is retried like any call.
    up.next(1, Behaviour::Status(503, None));
    let response = origin.chat(chat_body("gpt-test", true)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-sluice-attempts"), "2");
    assert_eq!(
        streamed_text(&sse_payloads(&response.text().await.unwrap())),
        REPLY
    );
}

#[tokio::test]
async fn a_client_that_leaves_cancels_the_upstream_call() {
    let up = Upstream::start().await;
    let origin = origin(&up, "").await;
    up.next(1, Behaviour::SlowStream(Duration::from_millis(50)));
    let response = origin.chat(chat_body("gpt-test", true)).await;
    let mut body = response.bytes_stream();
    body.next().await.unwrap().unwrap();
    drop(body);
    wait_for(
        || up.abandoned() == 1,
        "the stream to be abandoned upstream",
    )
    .await;

    up.next(1, Behaviour::Delay(Duration::from_secs(10)));
    let pending = origin.chat(chat_body("gpt-test", false));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), pending)
            .await
            .is_err()
    );
    wait_for(
        || up.abandoned() == 2,
        "the completion to be abandoned upstream",
    )
    .await;
}

async fn wait_for(condition: impl Fn() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn identical_concurrent_requests_share_one_upstream_call() {
    let up = Upstream::start().await;
    let origin = origin(&up, "").await;
    up.for_model("upstream-gpt", Behaviour::Delay(Duration::from_millis(300)));
    let body = chat_body("gpt-test", false);
    let same = (0..5).map(|_| origin.chat(body.clone()));
    let responses = futures::future::join_all(same).await;
    assert_eq!(up.seen().len(), 1, "five identical requests, one call");
    let coalesced = responses
        .iter()
        .filter(|r| header(r, "x-sluice-coalesced") == "true")
        .count();
    assert_eq!(coalesced, 4);
    for response in responses {
        assert_eq!(response.status(), 200);
    }
    // Another caller with the same body is not served alice's call.
    let alice = origin.chat(body.clone());
    let bob = origin.post("/v1/chat/completions", "bob", &body).send();
    let (a, b) = futures::join!(alice, bob);
    assert_eq!(
        (a.status().as_u16(), b.unwrap().status().as_u16()),
        (200, 200)
    );
    assert_eq!(up.seen().len(), 3);
}

#[tokio::test]
async fn slow_upstreams_time_out_and_bad_input_is_4xx() {
    let up = Upstream::start().await;
    let origin = origin(&up, "attempts = 1\nfirst_byte_timeout_ms = 200").await;
    up.next(1, Behaviour::Delay(Duration::from_secs(2)));
    let started = Instant::now();
    let response = origin.chat(chat_body("gpt-test", false)).await;
    assert_eq!(response.status(), 504);
    assert!(started.elapsed() < Duration::from_secs(1));

    let response = origin.chat(chat_body("no-such-model", false)).await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "model_not_found");
    assert_eq!(body["error"]["param"], "model");
    let response = origin
        .post("/v1/embeddings", "alice", &json!({ "model": "embed-test" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("input"));
}

#[tokio::test]
async fn embeddings_come_back_in_input_order_as_floats_or_base64() {
    let up = Upstream::start().await;
    let origin = origin(&up, "").await;
    let response = origin
        .post(
            "/v1/embeddings",
            "alice",
            &json!({ "model": "embed-test", "input": ["a", "b", "c"] }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"][2]["index"], 2);
    assert_eq!(body["data"][2]["embedding"], json!([2.0, 0.5, -0.25]));
    assert_eq!(body["usage"]["prompt_tokens"], 7);
    assert_eq!(up.seen()[0].path, "/v1/embeddings");

    let response = origin
        .post(
            "/v1/embeddings",
            "alice",
            &json!({ "model": "embed-test", "input": "a", "encoding_format": "base64" }),
        )
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    let encoded = body["data"][0]["embedding"].as_str().unwrap();
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    let floats: Vec<f32> = bytes
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(floats, vec![0.0, 0.5, -0.25]);
}

#[tokio::test]
async fn the_simulator_serves_the_openai_wire_with_its_configured_failures() {
    use sluice_origin::config::SimulatedConfig;
    let config = SimulatedConfig {
        rate_limit_rate: 1.0,
        retry_after_secs: 3,
        ..SimulatedConfig::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, sluice_origin::simulator::app(config)).await });
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/v1/chat/completions"))
        .json(&chat_body("any-model", false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(header(&response, "retry-after"), "3");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = SimulatedConfig {
        time_to_first_token_ms: 30,
        tokens_per_second: 200,
        ..SimulatedConfig::default()
    };
    tokio::spawn(async move { axum::serve(listener, sluice_origin::simulator::app(config)).await });
    let started = Instant::now();
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/v1/chat/completions"))
        .json(&chat_body("any-model", true))
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    let mut first_content = None;
    let mut text = String::new();
    while let Some(chunk) = body.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        if first_content.is_none() && text.contains("\"content\":\"[simulated") {
            first_content = Some(started.elapsed());
        }
    }
    assert!(first_content.unwrap() >= Duration::from_millis(30));
    let payloads = sse_payloads(&text);
    let text = streamed_text(&payloads);
    assert!(
        text.starts_with("[simulated ") && text.ends_with("You said: hi"),
        "{text}"
    );
}
