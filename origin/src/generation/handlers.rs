//! `/v1/chat/completions`, `/v1/embeddings`, `/v1/models` and `/v1/me`.
//! Handlers extract, call the generation service, and render.

use crate::budgets::Payer;
use crate::generation::{Generate, GenerationService, Surface, parse, render, stream};
use crate::http::{ApiError, BodyLimit, GenerationBody};
use crate::priority::Priority;
use axum::body::Bytes;
use axum::extract::{FromRef, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::json;
use sluice_core::identity::Identity;
use std::sync::Arc;

pub fn router<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    GenerationService: FromRef<S>,
    BodyLimit: FromRef<S>,
{
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(list_models))
        .route("/v1/me", get(me))
}

impl From<crate::generation::GenerateError> for ApiError {
    fn from(error: crate::generation::GenerateError) -> ApiError {
        use crate::generation::GenerateError;
        match error {
            GenerateError::Route(e) => e.into(),
            GenerateError::Budget(e) => e.into(),
        }
    }
}

async fn chat_completions(
    State(generation): State<GenerationService>,
    Extension(who): Extension<Identity>,
    priority: Priority,
    headers: HeaderMap,
    GenerationBody(body): GenerationBody,
) -> Result<Response, ApiError> {
    answer_chat(&generation, &who, priority, &headers, body).await
}

/// A chat completion answered in OpenAI's shape, streamed or not (also the
/// synchronous form of `POST /generate`).
pub async fn answer_chat(
    generation: &GenerationService,
    who: &Identity,
    priority: Priority,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request = Arc::new(parse::parse(&body)?);
    let generate = Generate {
        surface: Surface::ChatCompletions,
        request: Arc::clone(&request),
        payer: Payer::of(who),
        priority,
        fingerprint: body,
        refuses_cache: client_refuses_cache(headers),
    };
    if request.is_stream() {
        let streamed = generation.stream(generate).await?;
        let relay = stream::Relay {
            include_usage: request.include_usage(),
            model: request.model.clone(),
            on_end: None,
        };
        return Ok(stream::sse_response(streamed, relay));
    }
    Ok(render::completion_response(
        generation.complete(generate).await?,
    ))
}

/// A client's `Cache-Control: no-cache` or `no-store` (the edge forwards it).
fn client_refuses_cache(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| matches!(d.trim(), "no-cache" | "no-store"))
}

async fn embeddings(
    State(generation): State<GenerationService>,
    Extension(who): Extension<Identity>,
    priority: Priority,
    GenerationBody(body): GenerationBody,
) -> Result<Response, ApiError> {
    let request = parse::parse_embeddings(&body)?;
    let embedded = generation
        .embed(&Payer::of(&who), &request, priority)
        .await?;
    Ok(render::embeddings_response(&embedded, &request))
}

async fn list_models(State(generation): State<GenerationService>) -> Response {
    let data: Vec<_> = generation
        .engine()
        .model_names()
        .into_iter()
        .map(|id| json!({ "id": id, "object": "model", "created": 0, "owned_by": "sluice" }))
        .collect();
    let mut response = Json(json!({ "object": "list", "data": data })).into_response();
    // The same for every caller: the edge may share it across principals.
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

async fn me(Extension(who): Extension<Identity>) -> Json<serde_json::Value> {
    Json(
        json!({ "object": "principal", "subject": who.sub, "tier": who.tier.as_str(), "key_id": who.kid, "scopes": who.scopes }),
    )
}
