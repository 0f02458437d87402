//! The HTTP application: state, routes and middleware, assembled in one place.

use crate::admin;
use crate::cache::OriginCache;
use crate::chat;
use crate::config::{Config, QueueBackend};
use crate::conversations::ConversationStore;
use crate::conversations_api;
use crate::db::Db;
use crate::edge_auth::require_edge_signature;
use crate::error::ApiError;
use crate::job_streams::JobStreams;
use crate::jobs::JobQueue;
use crate::jobs_api;
use crate::keys::KeyStore;
use crate::ops;
use crate::priority::Priority;
use crate::routing::Engine;
use crate::semantic::{Lookup, SemanticCache};
use crate::usage::UsageLog;
use crate::window::RequestWindow;
use crate::worker::WorkerLoad;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Query, State};
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
    pub cache: OriginCache,
    /// `None` unless `[cache.semantic] embeddings_model` is set.
    pub semantic: Option<Arc<SemanticCache>>,
    pub conversations: ConversationStore,
    pub jobs: JobQueue,
    pub usage: UsageLog,
    /// For conversations that name no model.
    pub default_model: Arc<str>,
    pub context_messages: u32,
    pub db: Db,
    pub edge_secret: Arc<str>,
    pub max_skew_secs: u64,
    pub body_limit_bytes: usize,
    pub coalesce: bool,
    pub started: Instant,
    /// The last minute of public API requests, for the status page.
    pub window: Arc<RequestWindow>,
    /// This process's queue workers (none until `worker::run` starts them).
    pub workers: Arc<WorkerLoad>,
    pub db_max_connections: u32,
}

impl AppState {
    /// The state for `config`, on a database already connected and migrated
    /// (`crate::db::connect`). Starts the usage writer, so it needs a Tokio runtime.
    pub async fn new(config: &Config, db: Db) -> Result<AppState, StartError> {
        let engine = Arc::new(Engine::from_config(config)?);
        let cache = OriginCache::new(&config.cache)?;
        let mut jobs = JobQueue::new(
            db.clone(),
            config.queue.settings(),
            crate::db::is_postgres(&config.database.url),
        );
        if config.queue.backend == QueueBackend::RedisStreams {
            jobs = jobs.with_streams(
                JobStreams::connect(
                    &config.queue.redis_url,
                    &config.queue.stream_prefix,
                    config.queue.settings().visibility_timeout,
                )
                .await
                .map_err(StartError::Queue)?,
            );
        }
        Ok(AppState {
            semantic: SemanticCache::new(Arc::clone(&engine), &config.cache.semantic).map(Arc::new),
            engine,
            keys: KeyStore::new(db.clone()),
            conversations: ConversationStore::new(db.clone(), cache.clone()),
            cache,
            jobs,
            usage: UsageLog::start(db.clone()),
            default_model: config
                .conversations
                .default_model
                .as_deref()
                .or(config.models.first().map(|m| m.name.as_str()))
                .unwrap_or_default()
                .into(),
            context_messages: config.conversations.context_messages,
            db,
            edge_secret: config.edge.secret.clone().unwrap_or_default().into(),
            max_skew_secs: config.edge.max_skew_secs,
            body_limit_bytes: config.server.body_limit_bytes,
            coalesce: config.routing.coalesce,
            started: Instant::now(),
            window: Arc::default(),
            workers: Arc::default(),
            db_max_connections: config.database.max_connections,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("building the upstream HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("the origin cache's Redis URL: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("the queue's Redis Streams: {0}")]
    Queue(redis::RedisError),
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Layers, outermost first:
/// - tracing sees every request, refusals included;
/// - (public API only) metrics count every request by matched route, edge
///   refusals and timeouts included;
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
            "/v1/conversations",
            post(conversations_api::create).get(conversations_api::list),
        )
        .route(
            "/v1/conversations/{id}",
            get(conversations_api::get).delete(conversations_api::delete),
        )
        .route(
            "/v1/conversations/{id}/messages",
            get(conversations_api::messages).post(conversations_api::post_message),
        )
        .route("/v1/jobs", post(jobs_api::create))
        .route("/v1/jobs/{id}", get(jobs_api::get).delete(jobs_api::cancel))
        .route("/generate", post(generate))
        .route("/jobs/{id}", get(jobs_api::get))
        .route("/v1/admin/stats", get(admin::stats))
        .route("/v1/admin/queue", get(jobs_api::stats))
        .route("/v1/admin/cache", get(admin::cache_stats))
        .route("/v1/admin/cache/warm", post(admin::warm_cache))
        .route("/v1/admin/jobs/dead", get(jobs_api::dead))
        .route("/v1/admin/jobs/{id}", get(jobs_api::inspect))
        .route("/v1/admin/jobs/{id}/redrive", post(jobs_api::redrive))
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
        ))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state.window),
            ops::track,
        ));
    Router::new()
        .route("/health", get(ops::health))
        .route("/ready", get(ops::ready))
        .merge(api)
        .with_state(state)
        .layer(TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            request_timeout,
        ))
        .layer(CatchPanicLayer::new())
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
}

/// One span per request, a child of the caller's trace when the request
/// carries W3C trace context (the edge forwards the client's), with the
/// trace id as a field so JSON logs correlate even without trace export.
fn request_span(request: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let headers = request.headers();
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        trace_id = sluice_telemetry::trace_id(headers),
    );
    sluice_telemetry::set_parent(&span, headers);
    span
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

/// The body, or the limit error in OpenAI's shape.
pub(crate) fn read_body(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<Bytes, ApiError> {
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

pub(crate) fn priority(headers: &HeaderMap) -> Result<Priority, ApiError> {
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

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct GenerateQuery {
    #[serde(rename = "async", default)]
    run_async: bool,
}

/// The seed's form: `POST /generate?async=true` queues a job (as
/// `POST /v1/jobs`), without `async` it answers as a chat completion.
async fn generate(
    State(state): State<AppState>,
    Extension(who): Extension<Identity>,
    query: Result<Query<GenerateQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::InvalidRequest {
        message: e.body_text(),
        param: Some("async".into()),
    })?;
    let body = read_body(&state, body)?;
    if query.run_async {
        return jobs_api::submit(&state, &who, &headers, &body).await;
    }
    complete_chat(&state, &who, &headers, body).await
}

async fn chat_completions(
    State(state): State<AppState>,
    Extension(who): Extension<Identity>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = read_body(&state, body)?;
    complete_chat(&state, &who, &headers, body).await
}

async fn complete_chat(
    state: &AppState,
    who: &Identity,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request = Arc::new(chat::parse(&body)?);
    let priority = priority(headers)?;
    if request.is_stream() {
        let served = state.engine.stream(Arc::clone(&request), priority).await?;
        return Ok(chat::stream_response(
            served,
            &request,
            &who.sub,
            unix_now(),
            &state.usage,
            None,
        ));
    }
    let semantic = match &state.semantic {
        Some(cache) if SemanticCache::eligible(&request) && !client_refuses_cache(headers) => {
            cache.lookup(&who.sub, &request, priority).await
        }
        _ => None,
    };
    let pending = match semantic {
        Some(Lookup::Hit { body, similarity }) => {
            return Ok(chat::semantic_hit_response(&body, similarity, unix_now()));
        }
        Some(Lookup::Miss(pending)) => Some(pending),
        None => None,
    };
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
    let body = chat::completion_body(&served.value, &request.model, unix_now());
    let semantic_state = match (&state.semantic, pending) {
        (Some(cache), Some(pending)) => {
            // A coalesced follower's answer is the leader's, stored already.
            if !coalesced {
                cache.store(pending, &body);
            }
            Some("miss")
        }
        (Some(_), None) => Some("bypass"),
        (None, _) => None,
    };
    let mut response = chat::completion_response(&served, body, &who.sub, coalesced, &state.usage);
    if let Some(label) = semantic_state {
        response
            .headers_mut()
            .insert("x-sluice-semantic-cache", HeaderValue::from_static(label));
    }
    Ok(response)
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
        &served,
        &request,
        &inputs,
        &who.sub,
        &state.usage,
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
