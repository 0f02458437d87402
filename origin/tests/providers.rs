//! Generation against a real HTTP upstream (tests/upstream): wire formats,
//! key rotation, breakers, fallback, retry limits, streams, cancellation and
//! coalescing, tool calls, Messages and Responses, and (a property) unknown
//! fields both ways, through the origin's real router on a real socket.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers: any failure should fail the test"
)]

mod upstream;

use futures::StreamExt;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use serde_json::{Map, Value, json};
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
    /// A request as the edge sends it: signed, for `subject`.
    fn request(&self, method: &str, path: &str, subject: &str) -> reqwest::RequestBuilder {
        let identity = Identity {
            sub: subject.into(),
            tier: Tier::Premium,
            kid: None,
            scopes: vec![],
        }
        .encode();
        let url = format!("http://{}{path}", self.addr);
        let mut request = self.client.request(method.parse().unwrap(), url);
        for (name, value) in
            edge_signature::signed_headers(SECRET.as_bytes(), method, path, unix_now(), &identity)
        {
            request = request.header(name, value);
        }
        request
    }

    fn post(&self, path: &str, subject: &str, body: &Value) -> reqwest::RequestBuilder {
        self.request("POST", path, subject).json(body)
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

fn tools() -> Value {
    json!([{ "type": "function", "function": { "name": "lookup", "description": "Looks a word up.",
        "parameters": { "type": "object", "properties": { "q": { "type": "string" } }, "required": ["q"] } } }])
}

/// Every chunk of an SSE body as JSON (without `[DONE]`).
fn chunks(payloads: &[String]) -> Vec<Value> {
    payloads
        .iter()
        .filter(|p| *p != "[DONE]")
        .map(|p| serde_json::from_str(p).unwrap())
        .collect()
}

/// Tool calls reassembled from streamed deltas: (id, name, arguments) by index.
fn streamed_tool_calls(chunks: &[Value]) -> Vec<(String, String, String)> {
    let mut calls: Vec<(String, String, String)> = Vec::new();
    for chunk in chunks {
        for call in chunk["choices"][0]["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let index = call["index"].as_u64().unwrap() as usize;
            if calls.len() <= index {
                calls.resize(index + 1, Default::default());
            }
            if let Some(id) = call["id"].as_str() {
                calls[index].0 = id.into();
            }
            if let Some(name) = call["function"]["name"].as_str() {
                calls[index].1 = name.into();
            }
            calls[index].2 += call["function"]["arguments"].as_str().unwrap_or("");
        }
    }
    calls
}

#[tokio::test]
async fn openai_tool_calls_and_unknown_fields_pass_through_both_ways() {
    let up = Upstream::start().await;
    let origin = origin(&up, "").await;
    let sent = json!({
        "model": "gpt-test", "tools": tools(), "tool_choice": "auto", "parallel_tool_calls": true,
        "temperature": 0.7, "x_client_extra": { "nested": [1, 2] }, "metadata": { "run": "r1" },
        "messages": [{ "role": "user", "content": [
            { "type": "text", "text": "look up a and b" },
            { "type": "image_url", "image_url": { "url": "data:image/png;base64,AAAA", "detail": "low" } }] }],
    });
    let response = origin.chat(sent.clone()).await;
    assert_eq!(response.status(), 200);
    // 40 prompt tokens at $1000/M and 10 completion tokens at $2000/M.
    assert_eq!(header(&response, "x-sluice-cost-usd"), "0.060000");
    let body: Value = response.json().await.unwrap();
    let mut forwarded = up.seen()[0].body.clone();
    assert_eq!(forwarded["model"], "upstream-gpt");
    forwarded["model"] = json!("gpt-test");
    assert_eq!(forwarded, sent, "the request goes as the client sent it");
    assert_eq!(body["model"], "gpt-test");
    for field in ["system_fingerprint", "service_tier", "x_upstream_extra"] {
        assert!(body.get(field).is_some(), "{field} kept: {body}");
    }
    let message = &body["choices"][0]["message"];
    assert_eq!(message["content"], Value::Null);
    assert_eq!(message["refusal"], Value::Null);
    assert_eq!(message["tool_calls"][1]["id"], "call_b");
    assert_eq!(
        message["tool_calls"][0]["function"]["arguments"],
        r#"{"q":"a"}"#
    );
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 30);
    assert_eq!(
        body["usage"]["completion_tokens_details"]["reasoning_tokens"],
        4
    );

    // Streamed without include_usage: the deltas as sent, no usage.
    let mut streamed = sent.clone();
    streamed["stream"] = json!(true);
    let response = origin.chat(streamed).await;
    assert_eq!(header(&response, "x-sluice-provider"), "openai");
    let chunks = chunks(&sse_payloads(&response.text().await.unwrap()));
    assert_eq!(
        streamed_tool_calls(&chunks),
        [
            ("call_a".into(), "lookup".into(), r#"{"q":"a"}"#.into()),
            ("call_b".into(), "lookup".into(), r#"{"q":"b"}"#.into())
        ]
    );
    assert!(
        chunks
            .iter()
            .all(|c| c["obfuscation"] == "xyz" && c["model"] == "gpt-test")
    );
    assert!(
        chunks.iter().all(|c| c.get("usage").is_none()),
        "the client did not ask for usage"
    );
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );
    let asked = &up.seen()[1].body;
    assert_eq!(
        asked["stream_options"]["include_usage"], true,
        "Sluice asks for usage"
    );

    // The tool results go back with their ids.
    let mut second = sent.clone();
    second["messages"].as_array_mut().unwrap().extend([
        message.clone(),
        json!({ "role": "tool", "tool_call_id": "call_a", "content": "A" }),
        json!({ "role": "tool", "tool_call_id": "call_b", "content": "B" }),
    ]);
    let response = origin.chat(second.clone()).await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], REPLY);
    let mut forwarded = up.seen()[2].body.clone();
    forwarded["model"] = json!("gpt-test");
    assert_eq!(forwarded, second);
}

#[tokio::test]
async fn anthropic_upstream_translates_tools_images_and_cache_control() {
    let up = Upstream::start().await;
    let origin = origin(&up, "").await;
    let sent = json!({
        "model": "claude-test", "tools": tools(), "tool_choice": "required",
        "messages": [
            { "role": "system", "content": [{ "type": "text", "text": "sys", "cache_control": { "type": "ephemeral" } }] },
            { "role": "user", "content": [
                { "type": "text", "text": "look up a and b" },
                { "type": "image_url", "image_url": { "url": "https://example.com/cat.png" } }] }],
    });
    let response = origin.chat(sent.clone()).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let seen = up.seen()[0].body.clone();
    assert_eq!(seen["tools"][0]["input_schema"]["required"], json!(["q"]));
    assert_eq!(seen["tool_choice"], json!({ "type": "any" }));
    assert_eq!(
        seen["system"][0]["cache_control"],
        json!({ "type": "ephemeral" })
    );
    assert_eq!(
        seen["messages"][0]["content"][1]["source"],
        json!({ "type": "url", "url": "https://example.com/cat.png" })
    );
    let message = &body["choices"][0]["message"];
    assert_eq!(message["content"], "Looking up.");
    assert_eq!(message["tool_calls"][0]["id"], "toolu_a");
    assert_eq!(
        message["tool_calls"][1]["function"]["arguments"],
        r#"{"q":"b"}"#
    );
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(body["usage"]["prompt_tokens"], 130);
    assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 100);
    assert_eq!(body["usage"]["cache_creation_input_tokens"], 10);

    let mut streamed = sent.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({ "include_usage": true });
    let response = origin.chat(streamed).await;
    let chunks = chunks(&sse_payloads(&response.text().await.unwrap()));
    assert_eq!(
        streamed_tool_calls(&chunks),
        [
            ("toolu_a".into(), "lookup".into(), r#"{"q":"a"}"#.into()),
            ("toolu_b".into(), "lookup".into(), r#"{"q":"b"}"#.into())
        ]
    );
    assert_eq!(
        chunks.last().unwrap()["usage"]["prompt_tokens_details"]["cached_tokens"],
        100
    );

    let mut second = sent.clone();
    second["messages"].as_array_mut().unwrap().extend([
        message.clone(),
        json!({ "role": "tool", "tool_call_id": "toolu_a", "content": "A" }),
        json!({ "role": "tool", "tool_call_id": "toolu_b", "content": "no such word", "is_error": true }),
    ]);
    let body: Value = origin.chat(second).await.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], REPLY);
    let seen = up.seen()[2].body.clone();
    let turns = seen["messages"].as_array().unwrap();
    assert_eq!(turns[1]["content"][1]["type"], "tool_use");
    assert_eq!(turns[1]["content"][1]["input"], json!({ "q": "a" }));
    assert_eq!(
        turns[2]["content"][0],
        json!({ "type": "tool_result", "tool_use_id": "toolu_a", "content": "A" })
    );
    assert_eq!(turns[2]["content"][1]["is_error"], true);
}

impl Origin {
    async fn messages(&self, body: &Value, beta: Option<&str>) -> reqwest::Response {
        let mut request = self.post("/v1/messages", "alice", body);
        if let Some(beta) = beta {
            request = request.header("anthropic-beta", beta);
        }
        request.send().await.unwrap()
    }
}

/// `(event, data)` of an SSE body with named events (Anthropic's, Responses').
fn named_events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|f| !f.trim().is_empty())
        .map(|frame| {
            let mut lines = frame.lines();
            let event = lines
                .next()
                .unwrap()
                .strip_prefix("event: ")
                .unwrap()
                .to_string();
            let data = lines.next().unwrap().strip_prefix("data: ").unwrap();
            (event, serde_json::from_str(data).unwrap())
        })
        .collect()
}

fn messages_body(model: &str) -> Value {
    json!({
        "model": model, "max_tokens": 256, "x_client_field": { "kept": [1] },
        "system": [{ "type": "text", "text": "sys", "cache_control": { "type": "ephemeral" } }],
        "tools": [{ "name": "lookup", "description": "Looks a word up.",
                    "input_schema": { "type": "object", "properties": { "q": { "type": "string" } } } }],
        "messages": [{ "role": "user", "content": "look up a and b" }],
    })
}

#[tokio::test]
async fn messages_pass_through_natively_to_anthropic() {
    let up = Upstream::start().await;
    let origin = origin(&up, "").await;
    let sent = messages_body("claude-test");
    let response = origin.messages(&sent, Some("tools-2024-04-04")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-sluice-provider"), "anthropic");
    assert_eq!(header(&response, "x-sluice-prompt-tokens"), "130");
    let body: Value = response.json().await.unwrap();
    let seen = &up.seen()[0];
    let mut forwarded = seen.body.clone();
    assert_eq!(forwarded["model"], "claude-upstream");
    forwarded["model"] = json!("claude-test");
    assert_eq!(forwarded, sent, "the body goes as the client sent it");
    assert_eq!(seen.beta.as_deref(), Some("tools-2024-04-04"));
    assert_eq!(body["model"], "claude-test");
    assert_eq!(body["x_anthropic_extra"], "kept");
    assert_eq!(body["content"][2]["id"], "toolu_b");
    assert_eq!(body["usage"]["cache_read_input_tokens"], 100);

    let mut streamed = sent.clone();
    streamed["stream"] = json!(true);
    let response = origin.messages(&streamed, None).await;
    let events = named_events(&response.text().await.unwrap());
    assert_eq!(events[0].0, "message_start");
    assert_eq!(events[0].1["message"]["model"], "claude-test");
    assert_eq!(events.last().unwrap().0, "message_stop");
    assert_eq!(events.len(), 14, "every upstream event relayed");

    let response = origin
        .post("/v1/messages/count_tokens", "alice", &sent)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let count: Value = response.json().await.unwrap();
    assert_eq!(count["x_counted_by"], "test-upstream");
}

#[tokio::test]
async fn messages_are_translated_for_openai_upstreams() {
    let up = Upstream::start().await;
    let origin = origin(&up, "").await;
    let sent = messages_body("gpt-test");
    let response = origin.messages(&sent, None).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let seen = up.seen()[0].body.clone();
    assert_eq!(
        seen["messages"][0]["content"][0]["cache_control"],
        json!({ "type": "ephemeral" })
    );
    assert_eq!(seen["tools"][0]["function"]["name"], "lookup");
    assert_eq!(body["type"], "message");
    assert_eq!(body["model"], "gpt-test");
    assert_eq!(body["stop_reason"], "tool_use");
    assert_eq!(
        body["content"][0],
        json!({ "type": "tool_use", "id": "call_a", "name": "lookup", "input": { "q": "a" } })
    );
    assert_eq!(body["usage"]["cache_read_input_tokens"], 30);
    assert_eq!(body["usage"]["input_tokens"], 10);

    let mut streamed = sent.clone();
    streamed["stream"] = json!(true);
    let text = origin.messages(&streamed, None).await.text().await.unwrap();
    let events = named_events(&text);
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(names[..2], ["message_start", "ping"]);
    assert_eq!(names[names.len() - 2..], ["message_delta", "message_stop"]);
    let partial: String = events
        .iter()
        .filter(|(_, d)| d["index"] == 0 && d["delta"]["type"] == "input_json_delta")
        .map(|(_, d)| d["delta"]["partial_json"].as_str().unwrap())
        .collect();
    assert_eq!(partial, r#"{"q":"a"}"#);
    let stop = &events[events.len() - 2].1;
    assert_eq!(stop["delta"]["stop_reason"], "tool_use");
    assert_eq!(stop["usage"]["output_tokens"], 10);

    // The tool result goes back as a `tool` message.
    let mut second = sent.clone();
    second["messages"].as_array_mut().unwrap().extend([
        json!({ "role": "assistant", "content": body["content"] }),
        json!({ "role": "user", "content": [{ "type": "tool_result", "tool_use_id": "call_a", "content": "A" }] }),
    ]);
    let body: Value = origin.messages(&second, None).await.json().await.unwrap();
    assert_eq!(body["content"][0]["text"], REPLY);
    assert_eq!(body["stop_reason"], "end_turn");
    let seen = up.seen()[2].body.clone();
    assert_eq!(seen["messages"][2]["tool_calls"][0]["id"], "call_a");
    assert_eq!(
        seen["messages"][3],
        json!({ "role": "tool", "content": "A", "tool_call_id": "call_a" })
    );

    let count: Value = origin
        .post("/v1/messages/count_tokens", "alice", &sent)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(count["input_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn messages_errors_are_in_anthropics_shape() {
    let up = Upstream::start().await;
    let origin = origin(&up, "").await;
    let mut no_limit = messages_body("gpt-test");
    no_limit.as_object_mut().unwrap().remove("max_tokens");
    for (body, status, kind) in [
        (no_limit, 400, "invalid_request_error"),
        (messages_body("no-such-model"), 404, "not_found_error"),
    ] {
        let response = origin.messages(&body, None).await;
        assert_eq!(response.status(), status);
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["type"], "error");
        assert_eq!(error["error"]["type"], kind, "{error}");
    }
    up.for_model("upstream-gpt", Behaviour::Status(429, Some(3)));
    let response = origin.messages(&messages_body("gpt-test"), None).await;
    assert_eq!(response.status(), 429);
    assert!(!header(&response, "retry-after").is_empty());
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["type"], "rate_limit_error");
}

fn response_tools() -> Value {
    json!([{ "type": "function", "name": "lookup", "description": "Looks a word up.", "strict": true,
        "parameters": { "type": "object", "properties": { "q": { "type": "string" } }, "required": ["q"] } }])
}

#[tokio::test]
async fn responses_continue_a_tool_loop_across_a_provider_fallback() {
    let up = Upstream::start().await;
    let origin = origin(&up, "attempts = 1").await;
    let first = origin
        .post(
            "/v1/responses",
            "alice",
            &json!({
                "model": "fallback-test", "instructions": "be brief", "tools": response_tools(),
                "input": "look up a and b", "x_client_extra": { "kept": 1 },
            }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(header(&first, "x-sluice-deployment"), "primary");
    assert_eq!(header(&first, "cache-control"), "private, no-store");
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["object"], "response");
    assert_eq!(first["status"], "completed");
    assert_eq!(first["model"], "fallback-test");
    assert_eq!(first["instructions"], "be brief");
    assert_eq!(first["store"], true);
    let calls: Vec<&Value> = first["output"].as_array().unwrap().iter().collect();
    assert_eq!(calls.len(), 2, "{first}");
    assert_eq!(
        (calls[0]["type"].as_str(), calls[0]["call_id"].as_str()),
        (Some("function_call"), Some("call_a"))
    );
    assert_eq!(calls[1]["arguments"], "{\"q\":\"b\"}");
    // What the upstream sent that the Responses shape has no name for stays.
    assert_eq!(first["system_fingerprint"], "fp_test");
    assert_eq!(first["x_upstream_extra"]["kept"], true);
    assert_eq!(first["service_tier"], "default");
    assert_eq!(first["usage"]["input_tokens"], 40);
    assert_eq!(first["usage"]["input_tokens_details"]["cached_tokens"], 30);
    assert_eq!(
        first["usage"]["output_tokens_details"]["reasoning_tokens"],
        4
    );
    let seen = up.seen();
    let sent = &seen.last().unwrap().body;
    assert_eq!(
        sent["messages"][0],
        json!({ "role": "system", "content": "be brief" })
    );
    assert_eq!(sent["tools"][0]["function"]["name"], "lookup");
    assert_eq!(sent["tools"][0]["function"]["strict"], true);
    assert_eq!(
        sent["x_client_extra"]["kept"], 1,
        "unknown fields reach the upstream"
    );
    assert!(sent.get("store").is_none() && sent.get("instructions").is_none());

    // The primary breaks: the next turn goes to the Anthropic fallback, which
    // gets the whole conversation from Sluice's store.
    up.for_model("broken-primary", Behaviour::Status(500, None));
    let id = first["id"].as_str().unwrap();
    let second = origin
        .post("/v1/responses", "alice", &json!({
            "model": "fallback-test", "previous_response_id": id, "tools": response_tools(),
            "input": [
                { "type": "function_call_output", "call_id": "call_a", "output": "A is for apple" },
                { "type": "function_call_output", "call_id": "call_b", "output": "B is for bee" },
            ],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 200);
    assert_eq!(header(&second, "x-sluice-deployment"), "secondary");
    let second: Value = second.json().await.unwrap();
    assert_eq!(second["previous_response_id"], id);
    assert_eq!(second["output"][0]["type"], "message");
    assert_eq!(second["output"][0]["content"][0]["text"], REPLY);
    let seen = up.seen();
    let anthropic = &seen
        .iter()
        .rev()
        .find(|s| s.path == "/v1/messages")
        .unwrap()
        .body;
    assert!(
        anthropic.get("system").is_none(),
        "instructions are not carried over: {anthropic}"
    );
    let messages = anthropic["messages"].as_array().unwrap();
    assert_eq!(messages[0]["role"], "user");
    assert_eq!(messages[1]["content"][0]["type"], "tool_use");
    assert_eq!(messages[1]["content"][0]["id"], "call_a");
    assert_eq!(messages[1]["content"][1]["input"], json!({ "q": "b" }));
    assert_eq!(messages[2]["content"][0]["tool_use_id"], "call_a");
    assert_eq!(messages[2]["content"][1]["content"], "B is for bee");

    // Stored per caller: retrievable, listed, deletable, invisible to others.
    let second_id = second["id"].as_str().unwrap();
    let path = format!("/v1/responses/{second_id}");
    let got = origin.request("GET", &path, "alice").send().await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.json::<Value>().await.unwrap(), second);
    for method in ["GET", "DELETE"] {
        let other = origin.request(method, &path, "bob").send().await.unwrap();
        assert_eq!(other.status(), 404, "{method} by another caller");
    }
    let items = origin
        .request("GET", &format!("{path}/input_items?order=asc"), "alice")
        .send()
        .await
        .unwrap();
    let items: Value = items.json().await.unwrap();
    let kinds: Vec<&str> = items["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "message",
            "function_call",
            "function_call",
            "function_call_output",
            "function_call_output"
        ]
    );
    let stranger = origin
        .post(
            "/v1/responses",
            "bob",
            &json!({ "model": "gpt-test", "previous_response_id": id, "input": "hi" }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(stranger.status(), 404);
    let stranger: Value = stranger.json().await.unwrap();
    assert_eq!(stranger["error"]["code"], "previous_response_not_found");
    assert_eq!(stranger["error"]["param"], "previous_response_id");
    let deleted = origin
        .request("DELETE", &path, "alice")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.json::<Value>().await.unwrap()["deleted"], true);
    assert_eq!(
        origin
            .request("GET", &path, "alice")
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    // `store: false` keeps nothing.
    let unstored: Value = origin
        .post(
            "/v1/responses",
            "alice",
            &json!({ "model": "gpt-test", "input": "hi", "store": false }),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(unstored["output"][0]["content"][0]["text"], REPLY);
    let path = format!("/v1/responses/{}", unstored["id"].as_str().unwrap());
    assert_eq!(
        origin
            .request("GET", &path, "alice")
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

#[tokio::test]
async fn responses_stream_semantic_events_from_an_anthropic_tool_use() {
    let up = Upstream::start().await;
    let origin = origin(&up, "").await;
    let response = origin
        .post("/v1/responses", "alice", &json!({
            "model": "claude-test", "stream": true, "tools": response_tools(), "input": "look up a and b",
            "max_output_tokens": 300,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "content-type"), "text/event-stream");
    let events = named_events(&response.text().await.unwrap());
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names[..2], ["response.created", "response.in_progress"]);
    assert_eq!(*names.last().unwrap(), "response.completed");
    for (name, data) in &events {
        assert_eq!(data["type"], name.as_str());
    }
    let deltas: Vec<(u64, &str)> = events
        .iter()
        .filter(|(n, _)| n == "response.function_call_arguments.delta")
        .map(|(_, d)| {
            (
                d["output_index"].as_u64().unwrap(),
                d["delta"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        deltas,
        [(1, "{\"q\":"), (1, "\"a\"}"), (2, "{\"q\":"), (2, "\"b\"}")]
    );
    let text: String = events
        .iter()
        .filter(|(n, _)| n == "response.output_text.delta")
        .map(|(_, d)| d["delta"].as_str().unwrap())
        .collect();
    assert_eq!(text, "Looking up.");
    let completed = &events.last().unwrap().1["response"];
    assert_eq!(completed["status"], "completed");
    assert_eq!(completed["max_output_tokens"], 300);
    let output = completed["output"].as_array().unwrap();
    assert_eq!(output[1]["call_id"], "toolu_a");
    assert_eq!(output[2]["arguments"], "{\"q\":\"b\"}");
    assert_eq!(completed["usage"]["output_tokens"], 9);
    let sent = up.seen().pop().unwrap().body;
    assert_eq!(sent["max_tokens"], 300);
    assert_eq!(sent["tools"][0]["name"], "lookup");
    // Stored when the stream ended, before `response.completed` was sent.
    let path = format!("/v1/responses/{}", completed["id"].as_str().unwrap());
    let stored: Value = origin
        .request("GET", &path, "alice")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(&stored, completed);
}

#[tokio::test]
async fn responses_refuse_what_they_cannot_serve_in_openais_shape() {
    let up = Upstream::start().await;
    let origin = origin(&up, "").await;
    for (body, param) in [
        (
            json!({ "model": "gpt-test", "input": "x", "tools": [{ "type": "web_search" }] }),
            "tools[0].type",
        ),
        (json!({ "model": "gpt-test", "input": 7 }), "input"),
        (
            json!({ "model": "gpt-test", "input": "x", "temperature": 9 }),
            "temperature",
        ),
        (
            json!({ "model": "gpt-test", "input": "x", "text": { "format": { "type": "yaml" } } }),
            "text.format.type",
        ),
    ] {
        let response = origin
            .post("/v1/responses", "alice", &body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["type"], "invalid_request_error");
        assert_eq!(error["error"]["param"], param, "{error}");
    }
    let unknown = origin
        .post(
            "/v1/responses",
            "alice",
            &json!({ "model": "no-such", "input": "x" }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    assert!(up.seen().is_empty(), "nothing refused reached the upstream");
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "\\PC{0,16}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Fields with names no API uses, holding any JSON.
fn unknown_fields() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map("x_[a-z_]{1,12}", json_value(), 1..5)
        .prop_map(|m| m.into_iter().collect())
}

/// Every field of `fields` is in `object`, unchanged.
fn holds(object: &Value, fields: &Map<String, Value>, what: &str) -> Result<(), TestCaseError> {
    for (name, value) in fields {
        prop_assert_eq!(&object[name], value, "{} lost or changed {}", what, name);
    }
    Ok(())
}

/// Property: fields Sluice does not know survive the round trip. Random
/// `x_...` fields added to a request reach the upstream as sent, and those
/// the upstream adds to its answer (the test upstream echoes the request's
/// `x_echo` object) reach the client: on chat completions, on Responses
/// (translated to chat) and on Messages (native to an Anthropic upstream).
#[test]
fn unknown_fields_survive_the_round_trip() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (up, origin) = runtime.block_on(async {
        let up = Upstream::start().await;
        let origin = origin(&up, "").await;
        (up, origin)
    });
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 32,
        ..ProptestConfig::default()
    });
    runner
        .run(&(unknown_fields(), unknown_fields()), |(sent, echoed)| {
            runtime.block_on(async {
                let with = |mut body: Value| {
                    let object = body.as_object_mut().unwrap();
                    object.extend(sent.clone());
                    object.insert("x_echo".into(), Value::Object(echoed.clone()));
                    body
                };
                let cases = [
                    (
                        "/v1/chat/completions",
                        with(json!({ "model": "gpt-test",
                        "messages": [{ "role": "user", "content": "hi" }] })),
                    ),
                    (
                        "/v1/responses",
                        with(json!({ "model": "gpt-test", "input": "hi", "store": false })),
                    ),
                    (
                        "/v1/messages",
                        with(json!({ "model": "claude-test", "max_tokens": 16,
                        "messages": [{ "role": "user", "content": "hi" }] })),
                    ),
                ];
                for (path, body) in cases {
                    let response = origin.post(path, "alice", &body).send().await.unwrap();
                    prop_assert_eq!(response.status(), 200, "{}", path);
                    let answer: Value = response.json().await.unwrap();
                    let seen = up.seen().pop().unwrap();
                    holds(&seen.body, &sent, &format!("{path} on the way up"))?;
                    holds(&answer, &echoed, &format!("{path} on the way back"))?;
                }
                Ok(())
            })
        })
        .unwrap();
}
