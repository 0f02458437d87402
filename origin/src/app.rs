//! The HTTP application: state, routes and middleware, assembled in one place.

use crate::admin;
use crate::chat::{self, Models};
use crate::config::{Config, ProviderKind};
use crate::db::Db;
use crate::edge_auth::require_edge_signature;
use crate::error::ApiError;
use crate::keys::KeyStore;
use crate::provider::ChatProvider;
use crate::provider::simulated::Simulated;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router, middleware};
use serde_json::json;
use sluice_core::identity::Identity;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

#[derive(Clone)]
pub struct AppState {
    pub models: Models,
    pub keys: KeyStore,
    pub db: Db,
    pub edge_secret: Arc<str>,
    pub max_skew_secs: u64,
    pub body_limit_bytes: usize,
    pub started: Instant,
}

impl AppState {
    /// The state for `config`, on a database already connected and migrated
    /// (`crate::db::connect`).
    pub fn new(config: &Config, db: Db) -> AppState {
        let simulated: Arc<dyn ChatProvider> = Arc::new(Simulated::new(config.simulated.clone()));
        let models = config
            .models
            .iter()
            .map(|m| {
                let provider = match m.provider {
                    ProviderKind::Simulated => simulated.clone(),
                };
                (m.name.clone(), provider)
            })
            .collect::<HashMap<_, _>>();
        AppState {
            models: Models::new(models),
            keys: KeyStore::new(db.clone()),
            db,
            edge_secret: config.edge.secret.clone().unwrap_or_default().into(),
            max_skew_secs: config.edge.max_skew_secs,
            body_limit_bytes: config.server.body_limit_bytes,
            started: Instant::now(),
        }
    }
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Layers, outermost first:
/// - tracing sees every request, refusals included;
/// - panics become 500s instead of dropped connections;
/// - the timeout bounds everything below it;
/// - the edge signature is checked before any body is read (public API only;
///   probes stay reachable for the orchestrator);
/// - the body limit applies when a handler reads the body, so the handler can
///   answer 413 in OpenAI's shape.
pub fn app(state: AppState, request_timeout: Duration) -> Router {
    let api = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(list_models))
        .route("/v1/me", get(me))
        .route(
            "/v1/admin/keys",
            post(admin::create_key).get(admin::list_keys),
        )
        .route("/v1/admin/keys/{id}", delete(admin::revoke_key))
        .route("/internal/v1/keys/{hash}", get(admin::lookup_key))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(state.body_limit_bytes))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_edge_signature,
        ));
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .merge(api)
        .with_state(state)
        .layer(TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            request_timeout,
        ))
        .layer(CatchPanicLayer::new())
        .layer(TraceLayer::new_for_http())
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn ready(State(state): State<AppState>) -> Response {
    let database = sqlx::query("SELECT 1").execute(&state.db).await;
    let status = if database.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if database.is_ok() { "ready" } else { "not_ready" },
        "uptime_seconds": state.started.elapsed().as_secs(),
        "models": state.models.names(),
        "database": {
            "ok": database.is_ok(),
            "pool_size": state.db.size(),
            "pool_idle": state.db.num_idle(),
        },
    });
    (status, Json(body)).into_response()
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

async fn chat_completions(
    State(state): State<AppState>,
    Extension(who): Extension<Identity>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge {
            limit: state.body_limit_bytes,
        },
        _ => ApiError::InvalidRequest {
            message: rejection.body_text(),
            param: None,
        },
    })?;
    let request = chat::parse(&body)?;
    let answer = chat::complete(&state.models, &request, unix_now()).await?;
    let usage = answer.response.usage;
    tracing::info!(subject = %who.sub, tier = who.tier.as_str(), model = %request.model, provider = answer.provider,
        prompt_tokens = usage.prompt_tokens, completion_tokens = usage.completion_tokens, "completion");
    let mut response = if request.stream.unwrap_or(false) {
        let include_usage = request.stream_options.is_some_and(|o| o.include_usage);
        let events = chat::sse_events(&answer.response, include_usage);
        let stream =
            futures::stream::iter(events.into_iter().map(Ok::<_, std::convert::Infallible>));
        let mut response = Body::from_stream(stream).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    } else {
        Json(&answer.response).into_response()
    };
    let headers = response.headers_mut();
    headers.insert(
        "x-sluice-provider",
        HeaderValue::from_static(answer.provider),
    );
    for (name, value) in [
        ("x-sluice-prompt-tokens", usage.prompt_tokens),
        ("x-sluice-completion-tokens", usage.completion_tokens),
        ("x-sluice-total-tokens", usage.total_tokens),
    ] {
        headers.insert(name, HeaderValue::from(value));
    }
    Ok(response)
}

async fn list_models(State(state): State<AppState>) -> Response {
    let data: Vec<_> = state
        .models
        .names()
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
