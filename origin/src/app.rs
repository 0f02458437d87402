//! The application assembled: the state every feature draws its part from,
//! the features' routers merged, and the layer stack, in one place. Nothing
//! below imports this module.

use crate::budgets::{BudgetSettings, Budgets};
use crate::cache::OriginCache;
use crate::config::{Config, QueueBackend};
use crate::conversations::{ConversationStore, ConversationsState, TurnSettings};
use crate::db::Db;
use crate::generation::semantic::SemanticCache;
use crate::generation::usage::UsageLog;
use crate::generation::{GenerationService, ReusePolicy};
use crate::http::{ApiError, BodyLimit, EdgeVerifier, require_edge_signature};
use crate::keys::KeyStore;
use crate::ops::OpsState;
use crate::ops::window::RequestWindow;
use crate::queue::JobQueue;
use crate::queue::streams::JobStreams;
use crate::queue::worker::Runner;
use crate::reasoning::ReasoningStore;
use crate::responses::ResponseStore;
use crate::routing::Engine;
use crate::{budgets, conversations, generation, keys, messages, ops, queue, responses};
use axum::extract::{DefaultBodyLimit, FromRef};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Router, middleware};
use secrecy::SecretString;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

/// Every feature's sub-state; handlers take only theirs (`FromRef`, derived
/// for each field; `ConversationsState` is put together below).
#[derive(Clone, FromRef)]
pub struct AppState {
    pub generation: GenerationService,
    pub budgets: Budgets,
    pub conversations: ConversationStore,
    pub responses: ResponseStore,
    pub turns: TurnSettings,
    pub keys: KeyStore,
    pub jobs: JobQueue,
    pub usage: UsageLog,
    pub db: Db,
    pub edge: EdgeVerifier,
    pub body_limit: BodyLimit,
    pub ops: OpsState,
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
        let usage = UsageLog::start(db.clone());
        let budgets = Budgets::new(
            db.clone(),
            crate::db::is_postgres(&config.database.url),
            BudgetSettings::from_config(&config.budgets),
        );
        let generation = GenerationService::new(
            Arc::clone(&engine),
            SemanticCache::new(Arc::clone(&engine), &config.cache.semantic).map(Arc::new),
            usage.clone(),
            ReusePolicy::from_config(config),
            budgets.clone(),
            Some(ReasoningStore::new(db.clone(), &config.reasoning)),
        );
        let conversations = ConversationStore::new(db.clone(), cache.clone());
        let secret = config
            .edge
            .secret
            .clone()
            .unwrap_or_else(|| SecretString::from(String::new()));
        Ok(AppState {
            turns: TurnSettings {
                default_model: config
                    .conversations
                    .default_model
                    .as_deref()
                    .or(config.models.first().map(|m| m.name.as_str()))
                    .unwrap_or_default()
                    .into(),
                context_messages: config.conversations.context_messages,
            },
            keys: KeyStore::new(db.clone()),
            responses: ResponseStore::new(db.clone()),
            edge: EdgeVerifier::new(secret, config.edge.max_skew_secs),
            body_limit: BodyLimit {
                default: config.server.body_limit_bytes,
                generation: config.server.ai_body_limit_bytes,
            },
            ops: OpsState {
                generation: generation.clone(),
                cache,
                conversations: conversations.clone(),
                jobs: jobs.clone(),
                db: db.clone(),
                db_max_connections: config.database.max_connections,
                started: Instant::now(),
                window: Arc::default(),
                workers: Arc::default(),
            },
            generation,
            budgets,
            conversations,
            jobs,
            usage,
            db,
        })
    }

    /// Queue workers sharing this state's queue, generation service and load gauges.
    pub fn runner(&self) -> Runner {
        Runner {
            queue: self.jobs.clone(),
            generation: self.generation.clone(),
            load: Arc::clone(&self.ops.workers),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Engine(#[from] crate::routing::EngineError),
    #[error("the origin cache's Redis URL: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("the queue's Redis Streams: {0}")]
    Queue(redis::RedisError),
}

impl FromRef<AppState> for ConversationsState {
    fn from_ref(state: &AppState) -> ConversationsState {
        ConversationsState {
            store: state.conversations.clone(),
            generation: state.generation.clone(),
            settings: state.turns.clone(),
        }
    }
}

/// The public API, every feature's routes, and the probes.
///
/// Layers, outermost first:
/// - tracing sees every request, refusals included;
/// - (public API only) metrics count every response the client gets, by
///   matched route: edge refusals, timeouts (504) and panics (500) included,
///   which is why this sits outside the two layers that make those;
/// - panics become 500s instead of dropped connections;
/// - the timeout bounds everything below it;
/// - the edge signature is checked before any body is read (public API only;
///   probes stay reachable for the orchestrator);
/// - inside it, a stream the edge asked about ends with its usage (the
///   edge's token limits settle on it; the edge takes it out again);
/// - the body limit applies when a handler reads the body, so the handler can
///   answer 413 in OpenAI's shape.
pub fn app(state: AppState, request_timeout: Duration) -> Router {
    let api = Router::new()
        .merge(generation::handlers::router())
        .merge(messages::router())
        .merge(responses::router())
        .merge(conversations::router())
        .merge(queue::router())
        .merge(keys::router())
        .merge(budgets::handlers::router())
        .merge(ops::router())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(state.body_limit.default))
        .route_layer(middleware::from_fn(
            generation::usage_report::report_stream_usage,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.edge.clone(),
            require_edge_signature,
        ));
    let probes = Router::new()
        .route("/health", get(ops::health))
        .route("/ready", get(ops::ready));
    let api = counted(guarded(api, request_timeout), Arc::clone(&state.ops.window));
    guarded(probes, request_timeout)
        .merge(api)
        .with_state(state)
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
}

/// The timeout and the panic guard, which every route gets.
pub fn guarded<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    request_timeout: Duration,
) -> Router<S> {
    router
        .layer(TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            request_timeout,
        ))
        .layer(CatchPanicLayer::new())
}

/// Request metrics and the status window around `router` (see [`app`]).
pub fn counted<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    window: Arc<RequestWindow>,
) -> Router<S> {
    router.layer(middleware::from_fn_with_state(window, ops::track))
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
