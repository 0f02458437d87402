//! Chat completions and embeddings on the wire: parsing and validating
//! requests, and turning what routing returns into OpenAI's JSON and SSE
//! shapes with Sluice's `x-sluice-*` usage headers.

use crate::error::ApiError;
use crate::openai::{
    AssistantMessage, ChatRequest, ChatResponse, Choice, EmbeddingsRequest, EncodingFormat, Role,
    Usage, estimate_tokens,
};
use crate::provider::{Embeddings, EventStream, StreamEvent};
use crate::routing::{Answer, Deployment, Served};
use crate::usage::{UsageLog, UsageRecord};
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use futures::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::Arc;

/// Parses a JSON body, naming the offending field on failure.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        // serde_json reports some type errors (a number where an enum goes) as
        // syntax errors, so ask the body itself whether it is JSON.
        if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_err() {
            return ApiError::InvalidRequest {
                message: format!("Request body is not valid JSON: {inner}"),
                param: None,
            };
        }
        match path.as_str() {
            "." => ApiError::InvalidRequest {
                message: format!("Invalid request body: {inner}"),
                param: None,
            },
            _ => ApiError::InvalidRequest {
                message: format!("Invalid value for `{path}`: {inner}"),
                param: Some(path),
            },
        }
    })
}

fn invalid(param: &str, message: String) -> ApiError {
    ApiError::InvalidRequest {
        message,
        param: Some(param.into()),
    }
}

pub fn parse(body: &[u8]) -> Result<ChatRequest, ApiError> {
    let request: ChatRequest = parse_json(body)?;
    if request.model.trim().is_empty() {
        return Err(invalid("model", "`model` must not be empty.".into()));
    }
    if request.messages.is_empty() {
        return Err(invalid(
            "messages",
            "`messages` must contain at least one message.".into(),
        ));
    }
    if let Some(t) = request.temperature.filter(|t| !(0.0..=2.0).contains(t)) {
        return Err(invalid(
            "temperature",
            format!("`temperature` must be between 0 and 2, got {t}."),
        ));
    }
    if request.max_output_tokens() == Some(0) {
        return Err(invalid(
            "max_tokens",
            "`max_tokens` must be at least 1.".into(),
        ));
    }
    Ok(request)
}

/// Longest embeddings batch accepted (OpenAI's own limit).
const MAX_EMBEDDING_INPUTS: usize = 2048;

pub fn parse_embeddings(body: &[u8]) -> Result<EmbeddingsRequest, ApiError> {
    let request: EmbeddingsRequest = parse_json(body)?;
    if request.model.trim().is_empty() {
        return Err(invalid("model", "`model` must not be empty.".into()));
    }
    let count = match &request.input {
        crate::openai::EmbeddingInput::One(_) => 1,
        crate::openai::EmbeddingInput::Many(v) => v.len(),
    };
    if count == 0 || count > MAX_EMBEDDING_INPUTS {
        return Err(invalid(
            "input",
            format!("`input` must hold 1 to {MAX_EMBEDDING_INPUTS} strings."),
        ));
    }
    Ok(request)
}

/// Usage and cost of one call: logged as an event, counted in metrics and
/// kept as a usage record.
pub fn record_usage(
    log: &UsageLog,
    subject: &str,
    model: &str,
    deployment: &Deployment,
    usage: Usage,
    estimated: bool,
) -> f64 {
    let cost = deployment.pricing.cost_usd(usage);
    tracing::info!(event = "usage", subject, model, deployment = %deployment.name,
        provider = deployment.provider.kind(), prompt_tokens = usage.prompt_tokens,
        completion_tokens = usage.completion_tokens, estimated, cost_usd = cost, "usage");
    let labels = [("deployment", deployment.name.clone())];
    metrics::counter!("sluice_prompt_tokens_total", &labels)
        .increment(u64::from(usage.prompt_tokens));
    metrics::counter!("sluice_completion_tokens_total", &labels)
        .increment(u64::from(usage.completion_tokens));
    metrics::counter!("sluice_cost_microdollars_total", &labels)
        .increment((cost * 1e6).round() as u64);
    log.record(UsageRecord {
        subject: subject.to_string(),
        model: model.to_string(),
        deployment: deployment.name.clone(),
        prompt_tokens: usage.prompt_tokens,
        completion_tokens: usage.completion_tokens,
        estimated,
        cost_usd: cost,
    });
    cost
}

fn route_headers(headers: &mut HeaderMap, deployment: &Deployment, attempts: u32) {
    headers.insert(
        "x-sluice-provider",
        HeaderValue::from_static(deployment.provider.kind()),
    );
    if let Ok(name) = HeaderValue::from_str(&deployment.name) {
        headers.insert("x-sluice-deployment", name);
    }
    headers.insert("x-sluice-attempts", HeaderValue::from(attempts));
}

/// OpenAI's body for a non-streamed completion.
pub fn completion_body(answer: &Answer, model: &str, created: u64) -> ChatResponse {
    ChatResponse {
        id: format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
        object: "chat.completion".into(),
        created,
        model: model.to_string(),
        choices: vec![Choice {
            index: 0,
            message: AssistantMessage {
                role: Role::Assistant,
                content: answer.completion.content.clone(),
            },
            finish_reason: answer.completion.finish_reason.clone(),
        }],
        usage: answer.usage,
    }
}

/// The JSON response for a non-streamed completion (`body` from
/// `completion_body`).
pub fn completion_response(
    served: &Served<Answer>,
    body: ChatResponse,
    subject: &str,
    coalesced: bool,
    log: &UsageLog,
) -> Response {
    let answer = &served.value;
    // A coalesced follower did not cause a call: only the leader records it.
    let cost = if coalesced {
        served.deployment.pricing.cost_usd(answer.usage)
    } else {
        record_usage(
            log,
            subject,
            &body.model,
            &served.deployment,
            answer.usage,
            answer.usage_estimated,
        )
    };
    let mut response = axum::Json(body).into_response();
    let headers = response.headers_mut();
    served_headers(headers, served, cost);
    if coalesced {
        headers.insert("x-sluice-coalesced", HeaderValue::from_static("true"));
    }
    response
}

/// An answer from the semantic cache: a new id and time, no upstream call,
/// no cost; the usage is the original answer's.
pub fn semantic_hit_response(cached: &ChatResponse, similarity: f32, created: u64) -> Response {
    let mut body = cached.clone();
    body.id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    body.created = created;
    let mut response = axum::Json(body).into_response();
    let headers = response.headers_mut();
    headers.insert("x-sluice-semantic-cache", HeaderValue::from_static("hit"));
    if let Ok(value) = HeaderValue::from_str(&format!("{similarity:.4}")) {
        headers.insert("x-sluice-semantic-similarity", value);
    }
    headers.insert("x-sluice-cost-usd", HeaderValue::from_static("0.000000"));
    response
}

/// Where the answer came from and what it used.
pub fn served_headers(headers: &mut HeaderMap, served: &Served<Answer>, cost: f64) {
    route_headers(headers, &served.deployment, served.attempts);
    usage_headers(
        headers,
        served.value.usage,
        served.value.usage_estimated,
        cost,
    );
}

fn usage_headers(headers: &mut HeaderMap, usage: Usage, estimated: bool, cost: f64) {
    for (name, value) in [
        ("x-sluice-prompt-tokens", usage.prompt_tokens),
        ("x-sluice-completion-tokens", usage.completion_tokens),
        ("x-sluice-total-tokens", usage.total_tokens),
    ] {
        headers.insert(name, HeaderValue::from(value));
    }
    if let Ok(cost) = HeaderValue::from_str(&format!("{cost:.6}")) {
        headers.insert("x-sluice-cost-usd", cost);
    }
    if estimated {
        headers.insert("x-sluice-usage-estimated", HeaderValue::from_static("true"));
    }
}

/// What a stream's chunks carry besides the text.
struct StreamMeta {
    id: String,
    created: u64,
    model: String,
    subject: String,
    include_usage: bool,
    prompt_estimate: u32,
    deployment: Arc<Deployment>,
    log: UsageLog,
}

/// Awaited with the whole text when a stream ends normally (not when the
/// client leaves or the upstream fails), before the last chunk is sent:
/// conversations store the reply, so a client that saw `[DONE]` can read it.
pub type OnStreamEnd = Box<dyn FnOnce(String) -> futures::future::BoxFuture<'static, ()> + Send>;

impl StreamMeta {
    fn chunk(&self, delta: Value, finish: Option<&str>) -> Bytes {
        sse_data(&json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model,
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }],
        }))
    }
}

fn sse_data(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

/// Where a stream is between chunks; dropping it unfinished means the client left.
struct StreamState {
    meta: StreamMeta,
    events: Option<EventStream>,
    sent_role: bool,
    sent_finish: bool,
    completion_estimate: u32,
    usage: Option<Usage>,
    /// The text so far, kept only when someone waits for it.
    text: Option<String>,
    on_end: Option<OnStreamEnd>,
}

impl StreamState {
    fn finish(&mut self) -> Bytes {
        self.events = None;
        let mut out = Vec::new();
        if !self.sent_finish {
            out.extend_from_slice(&self.meta.chunk(json!({}), Some("stop")));
        }
        let (usage, estimated) = match self.usage {
            Some(usage) => (usage, false),
            None => (
                Usage::new(self.meta.prompt_estimate, self.completion_estimate),
                true,
            ),
        };
        if self.meta.include_usage {
            out.extend_from_slice(&sse_data(&json!({
                "id": self.meta.id, "object": "chat.completion.chunk", "created": self.meta.created,
                "model": self.meta.model, "choices": [], "usage": usage,
            })));
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
        record_usage(
            &self.meta.log,
            &self.meta.subject,
            &self.meta.model,
            &self.meta.deployment,
            usage,
            estimated,
        );
        Bytes::from(out)
    }
}

impl Drop for StreamState {
    fn drop(&mut self) {
        if self.events.is_some() {
            tracing::info!(event = "stream_cancelled", deployment = %self.meta.deployment.name,
                subject = %self.meta.subject, "client went away; upstream call dropped");
            metrics::counter!("sluice_streams_cancelled_total").increment(1);
        }
    }
}

/// The SSE response for a streamed completion: every upstream event is sent
/// as it arrives. A failure after the start ends the stream with an error
/// event (OpenAI's SDKs raise it); it is never retried.
pub fn stream_response(
    served: Served<EventStream>,
    request: &ChatRequest,
    subject: &str,
    created: u64,
    log: &UsageLog,
    on_end: Option<OnStreamEnd>,
) -> Response {
    let meta = StreamMeta {
        id: format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
        created,
        model: request.model.clone(),
        subject: subject.to_string(),
        include_usage: request.include_usage(),
        prompt_estimate: request.estimated_prompt_tokens(),
        deployment: Arc::clone(&served.deployment),
        log: log.clone(),
    };
    let state = StreamState {
        meta,
        events: Some(served.value),
        sent_role: false,
        sent_finish: false,
        completion_estimate: 0,
        usage: None,
        text: on_end.as_ref().map(|_| String::new()),
        on_end,
    };
    let body = futures::stream::unfold(state, |mut state| async move {
        if !state.sent_role {
            state.sent_role = true;
            let chunk = state
                .meta
                .chunk(json!({ "role": "assistant", "content": "" }), None);
            return Some((chunk, state));
        }
        loop {
            let events = state.events.as_mut()?;
            match events.next().await {
                Some(Ok(StreamEvent::Delta(text))) => {
                    state.completion_estimate += estimate_tokens(&text);
                    if let Some(all) = &mut state.text {
                        all.push_str(&text);
                    }
                    let chunk = state.meta.chunk(json!({ "content": text }), None);
                    return Some((chunk, state));
                }
                Some(Ok(StreamEvent::Finish(reason))) => {
                    state.sent_finish = true;
                    let chunk = state.meta.chunk(json!({}), Some(&reason));
                    return Some((chunk, state));
                }
                Some(Ok(StreamEvent::Usage(usage))) => state.usage = Some(usage),
                Some(Err(error)) => {
                    tracing::warn!(event = "stream_failed", deployment = %state.meta.deployment.name,
                        error = %error, "upstream failed mid-stream");
                    state.events = None;
                    let body = sluice_core::errors::openai_error(
                        &format!("The model provider failed mid-stream: {error}"),
                        "server_error",
                        Some("provider_error"),
                        None,
                    );
                    return Some((sse_data(&body), state));
                }
                None => {
                    if let (Some(on_end), Some(text)) = (state.on_end.take(), state.text.take()) {
                        on_end(text).await;
                    }
                    let tail = state.finish();
                    return Some((tail, state));
                }
            }
        }
    })
    .map(Ok::<_, Infallible>);
    sse_response(body, &served.deployment, served.attempts)
}

fn sse_response(
    body: impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static,
    deployment: &Deployment,
    attempts: u32,
) -> Response {
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Tells nginx-style proxies in front not to buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    route_headers(headers, deployment, attempts);
    response
}

/// OpenAI's embeddings list, floats or base64 as the client asked.
pub fn embeddings_response(
    served: &Served<Embeddings>,
    request: &EmbeddingsRequest,
    inputs: &[String],
    subject: &str,
    log: &UsageLog,
) -> Response {
    let prompt_tokens = served
        .value
        .prompt_tokens
        .unwrap_or_else(|| inputs.iter().map(|t| estimate_tokens(t)).sum());
    let usage = Usage::new(prompt_tokens, 0);
    let estimated = served.value.prompt_tokens.is_none();
    let cost = record_usage(
        log,
        subject,
        &request.model,
        &served.deployment,
        usage,
        estimated,
    );
    let base64 = request.encoding_format == Some(EncodingFormat::Base64);
    let data: Vec<Value> = served
        .value
        .vectors
        .iter()
        .enumerate()
        .map(|(index, vector)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(vector)
            };
            json!({ "object": "embedding", "index": index, "embedding": embedding })
        })
        .collect();
    let mut response = axum::Json(json!({
        "object": "list", "data": data, "model": request.model,
        "usage": { "prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens },
    }))
    .into_response();
    let headers = response.headers_mut();
    route_headers(headers, &served.deployment, served.attempts);
    usage_headers(headers, usage, estimated, cost);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_offending_field() {
        let err = parse(br#"{"model":"m","messages":[{"role":"wizard","content":"x"}]}"#)
            .err()
            .unwrap();
        match err {
            ApiError::InvalidRequest { param, message } => {
                assert_eq!(param.as_deref(), Some("messages[0].role"));
                assert!(message.contains("wizard"), "{message}");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            parse(b"{not json"),
            Err(ApiError::InvalidRequest { param: None, .. })
        ));
        let numeric_role = parse(br#"{"model":"m","messages":[{"role":7}]}"#)
            .err()
            .unwrap();
        assert!(
            matches!(numeric_role, ApiError::InvalidRequest { param: Some(p), .. } if p == "messages[0].role")
        );
        assert!(matches!(
            parse(br#"{"model":"m","messages":[]}"#),
            Err(ApiError::InvalidRequest { .. })
        ));
        let missing = parse(br#"{"messages":[{"role":"user","content":"x"}]}"#)
            .err()
            .unwrap();
        assert!(missing.to_string().contains("model"), "{missing}");
        let wrong_input = parse_embeddings(br#"{"model":"e","input":[1,2]}"#)
            .err()
            .unwrap();
        assert!(wrong_input.to_string().contains("input"), "{wrong_input}");
    }

    #[test]
    fn accepts_sdk_style_requests_and_keeps_extra_fields() {
        let req = parse(
            br#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],"stream":true,
                 "stream_options":{"include_usage":true},"n":1,"top_p":1,"tools":[]}"#,
        )
        .unwrap();
        assert_eq!(req.messages[0].text(), "hi");
        assert!(req.include_usage());
        assert_eq!(req.extra["top_p"], 1);
        let forwarded = serde_json::to_value(&req).unwrap();
        assert_eq!(forwarded["tools"], json!([]));
        assert_eq!(forwarded["messages"][0]["content"][0]["text"], "hi");
    }
}
