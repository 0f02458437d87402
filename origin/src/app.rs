//! The HTTP application: state, routes and middleware, assembled in one place.

use crate::admin;
use crate::chat;
use crate::config::Config;
use crate::db::Db;
use crate::edge_auth::require_edge_signature;
use crate::error::ApiError;
use crate::keys::KeyStore;
use crate::priority::Priority;
use crate::routing::Engine;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router, middleware};
use serde_json::json;
use sha2::{Digest, Sha256};
use sluice_core::identity::Identity;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub keys: KeyStore,
    pub db: Db,
    pub edge_secret: Arc<str>,
    pub max_skew_secs: u64,
    pub body_limit_bytes: usize,
    pub coalesce: bool,
    pub started: Instant,
}

impl AppState {
    /// The state for `config`, on a database already connected and migrated
    /// (`crate::db::connect`).
    pub fn new(config: &Config, db: Db) -> Result<AppState, reqwest::Error> {
        Ok(AppState {
            engine: Arc::new(Engine::from_config(config)?),
            keys: KeyStore::new(db.clone()),
            db,
            edge_secret: config.edge.secret.clone().unwrap_or_default().into(),
            max_skew_secs: config.edge.max_skew_secs,
            body_limit_bytes: config.server.body_limit_bytes,
            coalesce: config.routing.coalesce,
            started: Instant::now(),
        })
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
        .route("/v1/embeddings", post(embeddings))
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
        "models": state.engine.model_names(),
        "deployments": state.engine.health(),
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

/// The body, or the limit error in OpenAI's shape.
fn read_body(state: &AppState, body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge {
            limit: state.body_limit_bytes,
        },
        _ => ApiError::InvalidRequest {
            message: rejection.body_text(),
            param: None,
        },
    })
}

fn priority(headers: &HeaderMap) -> Result<Priority, ApiError> {
    match headers.get(Priority::HEADER) {
        None => Ok(Priority::default()),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(Priority::parse)
            .ok_or_else(|| ApiError::InvalidRequest {
                message: format!(
                    "`{}` must be critical, high, normal or low.",
                    Priority::HEADER
                ),
                param: Some(Priority::HEADER.into()),
            }),
    }
}

async fn chat_completions(
    State(state): State<AppState>,
    Extension(who): Extension<Identity>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = read_body(&state, body)?;
    let request = Arc::new(chat::parse(&body)?);
    let priority = priority(&headers)?;
    if request.is_stream() {
        let served = state.engine.stream(Arc::clone(&request), priority).await?;
        return Ok(chat::stream_response(
            served,
            &request,
            &who.sub,
            unix_now(),
        ));
    }
    // Same caller, same bytes: one upstream call for all of them.
    let coalesce_key = state.coalesce.then(|| {
        let mut hash = Sha256::new();
        hash.update(who.sub.as_bytes());
        hash.update([0]);
        hash.update(&body);
        hash.finalize().into()
    });
    let (served, coalesced) = state
        .engine
        .complete(Arc::clone(&request), priority, coalesce_key)
        .await?;
    Ok(chat::completion_response(
        &served,
        &request,
        &who.sub,
        coalesced,
        unix_now(),
    ))
}

async fn embeddings(
    State(state): State<AppState>,
    Extension(who): Extension<Identity>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = read_body(&state, body)?;
    let request = chat::parse_embeddings(&body)?;
    let priority = priority(&headers)?;
    let inputs = Arc::new(request.input.clone().into_vec());
    let served = state
        .engine
        .embed(&request.model, Arc::clone(&inputs), priority)
        .await?;
    Ok(chat::embeddings_response(
        &served, &request, &inputs, &who.sub,
    ))
}

async fn list_models(State(state): State<AppState>) -> Response {
    let data: Vec<_> = state
        .engine
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
