//! A real HTTP upstream for provider tests: speaks OpenAI's chat completions
//! and embeddings and Anthropic's Messages API (SSE included), and fails on
//! demand per key, per model or for the next N calls. It records what it saw,
//! and which calls the caller abandoned before they finished. It refuses
//! what the real APIs document they refuse ([`rules`]), and runs scripted
//! tool loops for agent clients ([`agent`]).

#![allow(dead_code, reason = "shared by test crates that each use part of it")]

pub mod agent;
pub mod clouds;
pub mod rules;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const REPLY: &str = "hello from the test upstream";

#[derive(Debug, Clone)]
pub enum Behaviour {
    Answer,
    /// Answer after a delay (before any byte).
    Delay(Duration),
    /// Fail with this status; `Some(secs)` sends `Retry-After`.
    Status(u16, Option<u64>),
    /// Stream this many content chunks, then break the connection.
    StreamThenBreak(usize),
    /// Stream chunks this far apart, many of them (to be abandoned).
    SlowStream(Duration),
}

#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub key: Option<String>,
    pub model: String,
    pub stream: bool,
    /// The chat messages sent, as `role: text` (empty for embeddings).
    pub messages: Vec<String>,
    /// The whole request body and the `anthropic-beta` header.
    pub body: Value,
    pub beta: Option<String>,
}

#[derive(Default)]
pub struct Script {
    by_key: Mutex<HashMap<String, Behaviour>>,
    by_model: Mutex<HashMap<String, Behaviour>>,
    /// Per model: calls answered normally so far, and how to behave once
    /// that many have been (a break in the middle of a client's tool loop).
    by_model_from: Mutex<HashMap<String, (usize, usize, Behaviour)>>,
    next: Mutex<VecDeque<Behaviour>>,
    seen: Mutex<Vec<Seen>>,
    /// Calls whose response was dropped before it was complete.
    pub abandoned: AtomicUsize,
    /// Access tokens the test identity services issued (Entra ID, Google).
    issued_tokens: Mutex<Vec<String>>,
    tokens_issued: AtomicUsize,
    /// The audience a Google service account's assertion must name.
    google_token_uri: Mutex<String>,
}

pub struct Upstream {
    pub addr: SocketAddr,
    pub script: Arc<Script>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let script = Arc::new(Script::default());
        let app = Router::new()
            .route("/v1/chat/completions", post(openai_chat))
            .route("/v1/embeddings", post(openai_embeddings))
            .route("/v1/messages", post(anthropic_messages))
            .route("/v1/messages/count_tokens", post(anthropic_count_tokens));
        let app = clouds::routes(app).with_state(Arc::clone(&script));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        *script.google_token_uri.lock().unwrap() = format!("http://{addr}/token");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Upstream { addr, script }
    }

    pub fn openai_base(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn anthropic_base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// An Azure resource endpoint, the Gemini API's and Vertex AI's base,
    /// and Entra ID's authority: all this upstream's root.
    pub fn root(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Access tokens the identity services issued so far.
    pub fn tokens_issued(&self) -> usize {
        self.script.tokens_issued.load(Ordering::SeqCst)
    }

    /// A service account key file for Vertex deployments, naming this
    /// upstream's token endpoint.
    pub fn service_account_file(&self) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("sluice-test-sa-{}.json", self.addr.port()));
        std::fs::write(
            &path,
            clouds::service_account_json(&format!("{}/token", self.root())),
        )
        .unwrap();
        path
    }

    pub fn for_key(&self, key: &str, behaviour: Behaviour) {
        self.script
            .by_key
            .lock()
            .unwrap()
            .insert(key.into(), behaviour);
    }

    pub fn for_model(&self, model: &str, behaviour: Behaviour) {
        self.script
            .by_model
            .lock()
            .unwrap()
            .insert(model.into(), behaviour);
    }

    /// The model's calls behave so once `after` of them have been answered.
    pub fn for_model_after(&self, model: &str, after: usize, behaviour: Behaviour) {
        self.script
            .by_model_from
            .lock()
            .unwrap()
            .insert(model.into(), (0, after, behaviour));
    }

    /// The next `n` calls (whatever key or model) behave so.
    pub fn next(&self, n: usize, behaviour: Behaviour) {
        let mut next = self.script.next.lock().unwrap();
        next.extend(std::iter::repeat_n(behaviour, n));
    }

    pub fn clear(&self) {
        self.script.by_key.lock().unwrap().clear();
        self.script.by_model.lock().unwrap().clear();
        self.script.by_model_from.lock().unwrap().clear();
        self.script.next.lock().unwrap().clear();
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.script.seen.lock().unwrap().clone()
    }

    pub fn abandoned(&self) -> usize {
        self.script.abandoned.load(Ordering::SeqCst)
    }
}

impl Script {
    fn behaviour(&self, seen: Seen) -> Behaviour {
        let chosen = self
            .next
            .lock()
            .unwrap()
            .pop_front()
            .or_else(|| {
                seen.key
                    .as_ref()
                    .and_then(|k| self.by_key.lock().unwrap().get(k).cloned())
            })
            .or_else(|| self.by_model.lock().unwrap().get(&seen.model).cloned())
            .or_else(|| {
                let mut from = self.by_model_from.lock().unwrap();
                let (seen_calls, after, behaviour) = from.get_mut(&seen.model)?;
                *seen_calls += 1;
                (*seen_calls > *after).then(|| behaviour.clone())
            })
            .unwrap_or(Behaviour::Answer);
        self.seen.lock().unwrap().push(seen);
        chosen
    }
}

/// Counts the call as abandoned if dropped before `finish`.
struct Watch {
    script: Arc<Script>,
    done: bool,
}

impl Watch {
    fn finish(mut self) {
        self.done = true;
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if !self.done {
            self.script.abandoned.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// A 400 in the API's own shape (Anthropic's or OpenAI's).
fn refusal(anthropic: bool, message: &str) -> Response {
    let body = if anthropic {
        json!({ "type": "error", "error": { "type": "invalid_request_error", "message": message } })
    } else {
        json!({ "error": { "message": message, "type": "invalid_request_error", "param": null, "code": null } })
    };
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

fn failure(status: u16, retry_after: Option<u64>) -> Response {
    let mut response = (
        StatusCode::from_u16(status).unwrap(),
        axum::Json(json!({ "error": { "message": format!("scripted {status}"), "type": "test" } })),
    )
        .into_response();
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert("retry-after", secs.to_string().parse().unwrap());
    }
    response
}

pub(crate) fn sse(frames: Vec<String>, behaviour: &Behaviour, script: Arc<Script>) -> Response {
    let behaviour = behaviour.clone();
    let stream = async_stream(frames, behaviour, script);
    let mut response = Body::from_stream(stream).into_response();
    response
        .headers_mut()
        .insert("content-type", "text/event-stream".parse().unwrap());
    response
}

/// Sends `frames` in order, as the behaviour says; the watch sees abandonment.
fn async_stream(
    frames: Vec<String>,
    behaviour: Behaviour,
    script: Arc<Script>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    let watch = Watch {
        script,
        done: false,
    };
    futures::stream::unfold(
        (frames.into_iter().enumerate(), Some(watch)),
        move |(mut frames, mut watch)| {
            let behaviour = behaviour.clone();
            async move {
                let (i, frame) = match frames.next() {
                    Some(next) => next,
                    None => {
                        watch.take()?.finish();
                        return None;
                    }
                };
                match behaviour {
                    Behaviour::StreamThenBreak(n) if i == n + 1 => {
                        // Let what was sent reach the client before the break.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        watch.take()?.finish();
                        let nothing_more = Vec::new().into_iter().enumerate();
                        let broken = Err(std::io::Error::other("scripted break"));
                        return Some((broken, (nothing_more, None)));
                    }
                    Behaviour::SlowStream(gap) if i > 0 => tokio::time::sleep(gap).await,
                    _ => {}
                }
                Some((Ok(Bytes::from(frame)), (frames, watch)))
            }
        },
    )
}

pub(crate) async fn before_answer(behaviour: &Behaviour) -> Option<Response> {
    match behaviour {
        Behaviour::Status(status, retry_after) => Some(failure(*status, *retry_after)),
        Behaviour::Delay(d) => {
            tokio::time::sleep(*d).await;
            None
        }
        _ => None,
    }
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string)
}

/// The answer with the request's `x_echo` object's fields added at its top
/// level: fields no API has, for tests that they come back to the client.
fn echoed(request: &Value, mut answer: Value) -> Value {
    if let (Some(extra), Some(answer)) = (request["x_echo"].as_object(), answer.as_object_mut()) {
        answer.extend(extra.clone());
    }
    answer
}

pub(crate) async fn openai_chat(
    State(script): State<Arc<Script>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap();
    let model = request["model"].as_str().unwrap_or_default().to_string();
    let stream = request["stream"].as_bool().unwrap_or(false);
    let behaviour = script.behaviour(Seen {
        path: headers
            .get("x-test-path")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("/v1/chat/completions")
            .into(),
        key: bearer(&headers),
        model: model.clone(),
        stream,
        messages: request_messages(&request),
        body: request.clone(),
        beta: None,
    });
    let watch = Watch {
        script: Arc::clone(&script),
        done: false,
    };
    if let Some(response) = before_answer(&behaviour).await {
        watch.finish();
        return response;
    }
    if let Err(message) = rules::openai_chat(&request) {
        watch.finish();
        return refusal(false, &message);
    }
    if agent::openai_applies(&request) {
        watch.finish();
        let turn = agent::openai_turn(&request);
        let include_usage = request["stream_options"]["include_usage"].as_bool() == Some(true);
        return match agent::openai_answer(&model, &turn, stream, include_usage) {
            Ok(body) => axum::Json(body).into_response(),
            Err(frames) => sse(frames, &behaviour, script),
        };
    }
    let offers_tools = request["tools"].as_array().is_some_and(|t| !t.is_empty());
    let answered = request["messages"]
        .as_array()
        .and_then(|m| m.last())
        .is_some_and(|m| m["role"] == "tool");
    if offers_tools && !answered {
        watch.finish();
        return openai_tool_calls(&model, stream, &request);
    }
    if !stream {
        watch.finish();
        // Structured output: an object of the requested schema's shape.
        let content = match request.pointer("/response_format/json_schema/schema") {
            Some(schema) => clouds::fits(schema).to_string(),
            None => REPLY.to_string(),
        };
        return axum::Json(echoed(&request, json!({
            "id": "chatcmpl-test", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{ "index": 0, "message": { "role": "assistant", "content": content }, "finish_reason": "stop" }],
            "usage": { "prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16 },
        })))
        .into_response();
    }
    watch.finish();
    let chunk = |delta: Value, finish: Option<&str>| {
        format!(
            "data: {}\n\n",
            json!({ "id": "c", "object": "chat.completion.chunk", "created": 1, "model": model,
                    "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }] })
        )
    };
    let mut frames = vec![chunk(json!({ "role": "assistant", "content": "" }), None)];
    let words: Vec<&str> = match behaviour {
        Behaviour::SlowStream(_) => std::iter::repeat_n("tick ", 200).collect(),
        _ => REPLY.split_inclusive(' ').collect(),
    };
    frames.extend(words.iter().map(|w| chunk(json!({ "content": w }), None)));
    frames.push(chunk(json!({}), Some("stop")));
    if request["stream_options"]["include_usage"].as_bool() == Some(true) {
        frames.push(format!(
            "data: {}\n\n",
            json!({ "id": "c", "object": "chat.completion.chunk", "created": 1, "model": model, "choices": [],
                    "usage": { "prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16 } })
        ));
    }
    frames.push("data: [DONE]\n\n".into());
    sse(frames, &behaviour, script)
}

/// Two parallel tool calls (`lookup` on "a" and "b"), with every field
/// OpenAI sends that Sluice does not read, plus one no API has.
fn openai_tool_calls(model: &str, stream: bool, request: &Value) -> Response {
    let usage = json!({ "prompt_tokens": 40, "completion_tokens": 10, "total_tokens": 50,
        "prompt_tokens_details": { "cached_tokens": 30, "audio_tokens": 0 },
        "completion_tokens_details": { "reasoning_tokens": 4, "audio_tokens": 0 } });
    if !stream {
        return axum::Json(json!({
            "id": "chatcmpl-tools", "object": "chat.completion", "created": 1, "model": model,
            "system_fingerprint": "fp_test", "service_tier": "default", "x_upstream_extra": {"kept": true},
            "choices": [{ "index": 0, "logprobs": null, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": null, "refusal": null, "annotations": [],
                "tool_calls": [
                    { "id": "call_a", "type": "function", "function": { "name": "lookup", "arguments": "{\"q\":\"a\"}" } },
                    { "id": "call_b", "type": "function", "function": { "name": "lookup", "arguments": "{\"q\":\"b\"}" } }
                ] } }],
            "usage": usage,
        }))
        .into_response();
    }
    let chunk = |delta: Value, finish: Option<&str>| {
        format!(
            "data: {}\n\n",
            json!({ "id": "chatcmpl-tools", "object": "chat.completion.chunk", "created": 1, "model": model,
                    "system_fingerprint": "fp_test", "obfuscation": "xyz", "usage": null,
                    "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }] })
        )
    };
    let call = |index: u32, id: &str| {
        json!({ "tool_calls": [{ "index": index, "id": id, "type": "function",
        "function": { "name": "lookup", "arguments": "" } }] })
    };
    let args = |index: u32, part: &str| json!({ "tool_calls": [{ "index": index, "function": { "arguments": part } }] });
    let mut frames = vec![
        chunk(
            json!({ "role": "assistant", "content": null, "refusal": null }),
            None,
        ),
        chunk(call(0, "call_a"), None),
        chunk(args(0, "{\"q\":"), None),
        chunk(args(0, "\"a\"}"), None),
        chunk(call(1, "call_b"), None),
        chunk(args(1, "{\"q\":\"b\"}"), None),
        chunk(json!({}), Some("tool_calls")),
    ];
    if request["stream_options"]["include_usage"].as_bool() == Some(true) {
        frames.push(format!(
            "data: {}\n\n",
            json!({ "id": "chatcmpl-tools", "object": "chat.completion.chunk", "created": 1, "model": model,
                    "system_fingerprint": "fp_test", "choices": [], "usage": usage })
        ));
    }
    frames.push("data: [DONE]\n\n".into());
    let mut response = Body::from(frames.concat()).into_response();
    response
        .headers_mut()
        .insert("content-type", "text/event-stream".parse().unwrap());
    response
}

async fn anthropic_count_tokens(headers: HeaderMap, body: Bytes) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap();
    assert!(headers.get("x-api-key").is_some());
    let tokens = request["messages"].to_string().len() / 4;
    axum::Json(json!({ "input_tokens": tokens, "x_counted_by": "test-upstream" })).into_response()
}

/// A `tool_use` answer (text, then two tool calls), non-streamed or as
/// Anthropic streams it, with cache usage and a field no API has.
fn anthropic_tool_use(
    request: &Value,
    stream: bool,
    behaviour: &Behaviour,
    script: Arc<Script>,
) -> Response {
    let usage = json!({ "input_tokens": 20, "output_tokens": 9, "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 10 });
    if !stream {
        return axum::Json(json!({
            "id": "msg_tools", "type": "message", "role": "assistant", "model": request["model"],
            "x_anthropic_extra": "kept",
            "content": [
                { "type": "text", "text": "Looking up." },
                { "type": "tool_use", "id": "toolu_a", "name": "lookup", "input": { "q": "a" } },
                { "type": "tool_use", "id": "toolu_b", "name": "lookup", "input": { "q": "b" } }
            ],
            "stop_reason": "tool_use", "stop_sequence": null, "usage": usage,
        }))
        .into_response();
    }
    let event = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
    let mut frames = vec![
        event(
            "message_start",
            json!({ "type": "message_start", "message": {
            "id": "msg_tools", "type": "message", "role": "assistant", "model": request["model"],
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": { "input_tokens": 20, "output_tokens": 1, "cache_read_input_tokens": 100,
                       "cache_creation_input_tokens": 10 } } }),
        ),
        event(
            "content_block_start",
            json!({ "type": "content_block_start", "index": 0,
            "content_block": { "type": "text", "text": "" } }),
        ),
        event(
            "content_block_delta",
            json!({ "type": "content_block_delta", "index": 0,
            "delta": { "type": "text_delta", "text": "Looking up." } }),
        ),
        event(
            "content_block_stop",
            json!({ "type": "content_block_stop", "index": 0 }),
        ),
    ];
    for (index, (id, q)) in [(1, ("toolu_a", "a")), (2, ("toolu_b", "b"))] {
        frames.push(event(
            "content_block_start",
            json!({ "type": "content_block_start", "index": index,
            "content_block": { "type": "tool_use", "id": id, "name": "lookup", "input": {} } }),
        ));
        frames.push(event(
            "content_block_delta",
            json!({ "type": "content_block_delta", "index": index,
            "delta": { "type": "input_json_delta", "partial_json": "{\"q\":" } }),
        ));
        frames.push(event(
            "content_block_delta",
            json!({ "type": "content_block_delta", "index": index,
            "delta": { "type": "input_json_delta", "partial_json": format!("\"{q}\"}}") } }),
        ));
        frames.push(event(
            "content_block_stop",
            json!({ "type": "content_block_stop", "index": index }),
        ));
    }
    frames.push(event("message_delta", json!({ "type": "message_delta",
        "delta": { "stop_reason": "tool_use", "stop_sequence": null }, "usage": { "output_tokens": 9 } })));
    frames.push(event("message_stop", json!({ "type": "message_stop" })));
    sse(frames, behaviour, script)
}

pub(crate) async fn openai_embeddings(
    State(script): State<Arc<Script>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap();
    let behaviour = script.behaviour(Seen {
        path: "/v1/embeddings".into(),
        key: bearer(&headers),
        model: request["model"].as_str().unwrap_or_default().to_string(),
        stream: false,
        messages: Vec::new(),
        body: request.clone(),
        beta: None,
    });
    if let Some(response) = before_answer(&behaviour).await {
        return response;
    }
    let inputs = request["input"].as_array().cloned().unwrap_or_default();
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .rev() // out of order on purpose: clients must sort by index
        .map(|(i, _)| json!({ "object": "embedding", "index": i, "embedding": [i as f32, 0.5, -0.25] }))
        .collect();
    axum::Json(
        json!({ "object": "list", "data": data, "model": request["model"],
                       "usage": { "prompt_tokens": 7, "total_tokens": 7 } }),
    )
    .into_response()
}

async fn anthropic_messages(
    State(script): State<Arc<Script>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        headers
            .get("anthropic-version")
            .and_then(|v| v.to_str().ok()),
        Some("2023-06-01")
    );
    let stream = request["stream"].as_bool().unwrap_or(false);
    let behaviour = script.behaviour(Seen {
        path: "/v1/messages".into(),
        key: headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        model: request["model"].as_str().unwrap_or_default().to_string(),
        stream,
        messages: request_messages(&request),
        body: request.clone(),
        beta: headers
            .get("anthropic-beta")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    });
    if let Some(response) = before_answer(&behaviour).await {
        return response;
    }
    if let Err(message) = rules::anthropic_messages(&request) {
        return refusal(true, &message);
    }
    if agent::anthropic_applies(&request) {
        let turn = agent::anthropic_turn(&request);
        return match agent::anthropic_answer(&request["model"], &turn, stream) {
            Ok(body) => axum::Json(body).into_response(),
            Err(frames) => sse(frames, &behaviour, script),
        };
    }
    let offers_tools = request["tools"].as_array().is_some_and(|t| !t.is_empty());
    let answered = request["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_array())
        .is_some_and(|blocks| blocks.iter().any(|b| b["type"] == "tool_result"));
    if offers_tools && !answered {
        return anthropic_tool_use(&request, stream, &behaviour, script);
    }
    if !stream {
        return axum::Json(echoed(
            &request,
            json!({
                "id": "msg_test", "type": "message", "role": "assistant", "model": request["model"],
                "content": [{ "type": "text", "text": REPLY }],
                "stop_reason": "end_turn",
                "usage": { "input_tokens": 13, "output_tokens": 6 },
            }),
        ))
        .into_response();
    }
    let event = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
    let mut frames = vec![event(
        "message_start",
        json!({ "type": "message_start", "message": {
            "id": "msg_test", "type": "message", "role": "assistant", "model": request["model"],
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": { "input_tokens": 13, "output_tokens": 1 } } }),
    )];
    frames.push(event(
        "content_block_start",
        json!({ "type": "content_block_start", "index": 0, "content_block": { "type": "text", "text": "" } }),
    ));
    frames.push(event("ping", json!({ "type": "ping" })));
    for word in REPLY.split_inclusive(' ') {
        frames.push(event(
            "content_block_delta",
            json!({ "type": "content_block_delta", "index": 0, "delta": { "type": "text_delta", "text": word } }),
        ));
    }
    frames.push(event(
        "content_block_stop",
        json!({ "type": "content_block_stop", "index": 0 }),
    ));
    frames.push(event(
        "message_delta",
        json!({ "type": "message_delta", "delta": { "stop_reason": "end_turn" }, "usage": { "output_tokens": 6 } }),
    ));
    frames.push(event("message_stop", json!({ "type": "message_stop" })));
    sse(frames, &behaviour, script)
}

pub(crate) fn request_messages(request: &Value) -> Vec<String> {
    request["messages"]
        .as_array()
        .map(|messages| {
            messages
                .iter()
                .map(|m| {
                    format!(
                        "{}: {}",
                        m["role"].as_str().unwrap_or_default(),
                        m["content"].as_str().unwrap_or_default()
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}
