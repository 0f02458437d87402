//! The Messages routes. Handlers read the body, call the generation service
//! and render its answer or events as Anthropic's.

use crate::anthropic::{MessagesRequest, to_chat::to_chat};
use crate::budgets::Payer;
use crate::generation::render::{budget_headers, route_headers, usage_headers};
use crate::generation::stream::event_stream_response;
use crate::generation::{GenerationEvent, GenerationService, Streamed};
use crate::http::error::AnthropicError;
use crate::http::{ApiError, BodyLimit, GenerationBody};
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
    if !body.get("messages").is_some_and(Value::is_array) {
        return Err(invalid(
            "messages: Field required (a list of messages).".into(),
        ));
    }
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
    if let Some(stream) = body.get("stream")
        && !stream.is_boolean()
    {
        return Err(invalid(format!("stream: must be a boolean, got {stream}.")));
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
