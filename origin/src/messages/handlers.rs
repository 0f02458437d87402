//! The Messages routes. Handlers read the body, call the generation service
//! and render its answer or events as Anthropic's.

use crate::anthropic::{MessagesRequest, to_chat::to_chat};
use crate::budgets::Payer;
use crate::generation::render::{budget_headers, route_headers, usage_headers};
use crate::generation::stream::event_stream_response;
use crate::generation::{GenerationEvent, GenerationService, Streamed};
use crate::http::error::AnthropicError;
use crate::http::{ApiError, BodyLimit, GenerationBody, fields};
use crate::priority::Priority;
use crate::provider::SseEvent;
use axum::body::Bytes;
use axum::extract::{FromRef, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use futures::StreamExt;
use serde_json::{Map, Value};
use sluice_core::identity::Identity;
use std::sync::Arc;

pub fn router<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    GenerationService: FromRef<S>,
    BodyLimit: FromRef<S>,
{
    Router::new()
        .route("/v1/messages", post(create))
        .route("/v1/messages/count_tokens", post(count_tokens))
}

fn invalid(message: String) -> AnthropicError {
    AnthropicError(ApiError::InvalidRequest {
        message,
        param: None,
    })
}

/// The documented fields' types and ranges (`http::fields::MESSAGES`), each
/// message's role and content, and the blocks `system` holds.
fn check_fields(body: &Map<String, Value>, messages: &[Value]) -> Result<(), AnthropicError> {
    let nested = |name: &str, rules| {
        body.get(name)
            .and_then(Value::as_object)
            .and_then(|object| fields::refused(object, &format!("{name}."), rules))
    };
    if let Some((_, message)) = fields::refused(body, "", fields::MESSAGES)
        .or_else(|| nested("thinking", fields::MESSAGES_THINKING))
        .or_else(|| nested("tool_choice", fields::MESSAGES_TOOL_CHOICE))
    {
        return Err(invalid(message));
    }
    if body
        .get("thinking")
        .is_some_and(|t| t["type"] == "enabled" && !t["budget_tokens"].is_u64())
    {
        return Err(invalid(
            "thinking.budget_tokens: Field required when thinking is enabled.".into(),
        ));
    }
    let blocks_typed = |blocks: &Value| {
        blocks
            .as_array()
            .is_none_or(|b| b.iter().all(|b| b["type"].is_string()))
    };
    if !body.get("system").is_none_or(blocks_typed) {
        return Err(invalid(
            "system: each block must be an object with a `type`.".into(),
        ));
    }
    for (i, message) in messages.iter().enumerate() {
        if !matches!(
            message["role"].as_str(),
            Some("user" | "assistant" | "system")
        ) {
            return Err(invalid(format!(
                "messages.{i}.role: must be user or assistant, got {}.",
                message["role"]
            )));
        }
        let content = &message["content"];
        if !(content.is_string() || content.is_array()) || !blocks_typed(content) {
            return Err(invalid(format!(
                "messages.{i}.content: must be a string or a list of blocks, each with a `type`."
            )));
        }
    }
    Ok(())
}

/// The body as a Messages request; `max_tokens` is required to create a
/// message (as Anthropic requires it), not to count tokens.
fn parse(
    body: &[u8],
    headers: &HeaderMap,
    creating: bool,
) -> Result<MessagesRequest, AnthropicError> {
    let body: Map<String, Value> = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("The request body is not a JSON object: {e}")))?;
    let model = match body.get("model") {
        Some(Value::String(model)) if !model.trim().is_empty() => model.clone(),
        _ => {
            return Err(invalid(
                "model: Field required (a non-empty string).".into(),
            ));
        }
    };
    let messages = match body.get("messages") {
        Some(Value::Array(messages)) if !messages.is_empty() => messages,
        Some(Value::Array(_)) => {
            return Err(invalid(
                "messages: at least one message is required.".into(),
            ));
        }
        _ => {
            return Err(invalid(
                "messages: Field required (a list of messages).".into(),
            ));
        }
    };
    check_fields(&body, messages)?;
    if creating
        && body
            .get("max_tokens")
            .and_then(Value::as_u64)
            .is_none_or(|n| n < 1)
    {
        return Err(invalid(
            "max_tokens: Field required (an integer of at least 1).".into(),
        ));
    }
    let (chat, chat_adjusted) = match to_chat(&body) {
        Ok(translated) => (Ok(translated.chat), translated.adjusted),
        Err(why) => (Err(why), Vec::new()),
    };
    let beta = headers
        .get("anthropic-beta")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    Ok(MessagesRequest {
        model,
        body,
        chat,
        chat_adjusted,
        beta,
    })
}

async fn create(
    State(generation): State<GenerationService>,
    Extension(who): Extension<Identity>,
    priority: Priority,
    headers: HeaderMap,
    body: Result<GenerationBody, ApiError>,
) -> Result<Response, AnthropicError> {
    let GenerationBody(body) = body?;
    let request = Arc::new(parse(&body, &headers, true)?);
    if request.is_stream() {
        let streamed = generation
            .messages_stream(&Payer::of(&who), priority, request)
            .await?;
        return Ok(sse_response(streamed));
    }
    let answer = generation
        .messages(&Payer::of(&who), priority, request)
        .await?;
    let mut response = Json(&answer.body).into_response();
    let headers = response.headers_mut();
    route_headers(
        headers,
        &answer.deployment,
        answer.attempts,
        &answer.adjusted,
    );
    usage_headers(headers, answer.usage, answer.estimated, answer.cost_usd);
    budget_headers(headers, &answer.budget);
    Ok(response)
}

async fn count_tokens(
    State(generation): State<GenerationService>,
    priority: Priority,
    headers: HeaderMap,
    body: Result<GenerationBody, ApiError>,
) -> Result<Response, AnthropicError> {
    let GenerationBody(body) = body?;
    let request = Arc::new(parse(&body, &headers, false)?);
    let (count, deployment) = generation.count_tokens(priority, request).await?;
    let mut response = Json(count).into_response();
    route_headers(response.headers_mut(), &deployment, 1, &[]);
    Ok(response)
}

fn sse_event(event: &SseEvent) -> Bytes {
    Bytes::from(format!("event: {}\ndata: {}\n\n", event.event, event.data))
}

/// Anthropic's events as server-sent events; a failure after the start is
/// an `error` event, as Anthropic sends one.
fn sse_response(streamed: Streamed<SseEvent>) -> Response {
    let (deployment, attempts) = (Arc::clone(&streamed.deployment), streamed.attempts);
    let (budget, usage) = (streamed.budget.clone(), streamed.usage.clone());
    let adjusted = streamed.adjusted.clone();
    let body = streamed.events.filter_map(|event| async move {
        match event {
            GenerationEvent::Chunk(event) => Some(sse_event(&event)),
            GenerationEvent::Failed(error) => Some(sse_event(&SseEvent {
                event: "error".into(),
                data: sluice_core::errors::anthropic_error(
                    500,
                    &format!("The model provider failed mid-stream: {error}"),
                ),
            })),
            GenerationEvent::BudgetReached(message) => Some(sse_event(&SseEvent {
                event: "error".into(),
                data: sluice_core::errors::anthropic_error(429, &message),
            })),
            GenerationEvent::Done { .. } => None,
        }
    });
    let mut response = event_stream_response(body, &deployment, attempts, &adjusted, usage);
    budget_headers(response.headers_mut(), &budget);
    response
}
