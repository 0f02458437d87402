//! What an operator reads: per-request metrics, gauges sampled from the queue,
//! pools, providers and Redis, readiness, the stats document, and the admin
//! listener that serves them with the status page.
//!
//! Metric names carry their unit; labels are bounded (the matched route
//! pattern, configured deployment and key labels, fixed outcome words).

mod handlers;
pub mod track;
pub mod window;

pub use handlers::{admin_app, health, ready, router};
pub use track::track;

use crate::cache::OriginCache;
use crate::clock::unix_now;
use crate::conversations::ConversationStore;
use crate::db::Db;
use crate::generation::GenerationService;
use crate::queue::JobQueue;
use crate::queue::worker::WorkerLoad;
use crate::routing::BreakerState;
use axum::http::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use window::{RequestWindow, WindowStats};

/// What the operator's views read: every subsystem's counters and probes.
#[derive(Clone)]
pub struct OpsState {
    pub generation: GenerationService,
    pub cache: OriginCache,
    pub conversations: ConversationStore,
    pub jobs: JobQueue,
    pub db: Db,
    pub db_max_connections: u32,
    pub started: Instant,
    /// The last minute of public API requests, for the status page.
    pub window: Arc<RequestWindow>,
    /// This process's queue workers (none until `worker::run` starts them).
    pub workers: Arc<WorkerLoad>,
}

/// How often gauges are refreshed from their sources.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(5);
/// Bound on each readiness probe of a dependency.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

fn breaker_value(state: BreakerState) -> f64 {
    match state {
        BreakerState::Closed => 0.0,
        BreakerState::HalfOpen => 1.0,
        BreakerState::Open => 2.0,
    }
}

/// Registers the counters whose first event may be far off at zero, so
/// dashboards and `rate()` see them (and alerts can tell 0 from missing).
pub fn register_metrics() {
    for result in ["l1_hit", "l2_hit", "miss"] {
        metrics::counter!("sluice_origin_cache_requests_total", "result" => result).increment(0);
    }
    for result in ["hit", "miss", "error"] {
        metrics::counter!("sluice_semantic_cache_requests_total", "result" => result).increment(0);
    }
    for outcome in ["completed", "retrying", "dead_lettered"] {
        metrics::counter!("sluice_jobs_processed_total", "outcome" => outcome).increment(0);
    }
    metrics::counter!("sluice_streams_cancelled_total").increment(0);
    metrics::counter!("sluice_usage_records_dropped_total").increment(0);
    metrics::counter!("sluice_db_slow_queries_total").increment(0);
    metrics::counter!("sluice_queue_worker_restarts_total").increment(0);
    for cause in ["size", "expired"] {
        metrics::counter!("sluice_origin_cache_evictions_total", "cause" => cause).increment(0);
    }
    metrics::gauge!("sluice_http_connections_active").increment(0.0);
}

/// Refreshes the sampled gauges every `SAMPLE_INTERVAL` until the process
/// ends, and folds the Prometheus histograms.
pub fn spawn_sampler(state: OpsState) -> tokio::task::JoinHandle<()> {
    register_metrics();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SAMPLE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            sample(&state).await;
        }
    })
}

/// One refresh of every sampled gauge.
pub async fn sample(state: &OpsState) {
    sluice_telemetry::prometheus().run_upkeep();
    sluice_telemetry::record_process(state.started);
    if let Some(stats) = queue_stats(state).await {
        metrics::gauge!("sluice_queue_depth", "state" => "queued").set(stats.queued as f64);
        metrics::gauge!("sluice_queue_depth", "state" => "processing").set(stats.processing as f64);
        metrics::gauge!("sluice_queue_dead_letter_jobs").set(stats.dead as f64);
        metrics::gauge!("sluice_queue_oldest_age_seconds")
            .set(stats.oldest_queued_age_ms as f64 / 1e3);
    }
    let size = state.db.size();
    let idle = state.db.num_idle() as u32;
    metrics::gauge!("sluice_db_pool_connections", "state" => "idle").set(f64::from(idle));
    metrics::gauge!("sluice_db_pool_connections", "state" => "in_use")
        .set(f64::from(size.saturating_sub(idle)));
    metrics::gauge!("sluice_db_pool_max_connections").set(f64::from(state.db_max_connections));
    for deployment in state.generation.engine().health() {
        metrics::gauge!("sluice_provider_breaker_state", "deployment" => deployment.deployment.clone())
            .set(breaker_value(deployment.breaker));
        for key in deployment.keys {
            let available = key.breaker == BreakerState::Closed && key.cooling_ms == 0;
            let labels = [
                ("deployment", deployment.deployment.clone()),
                ("key", key.key),
            ];
            metrics::gauge!("sluice_provider_key_available", &labels).set(if available {
                1.0
            } else {
                0.0
            });
            metrics::gauge!("sluice_provider_key_headroom_ratio", &labels).set(key.headroom);
        }
    }
    if let Some(up) = state.cache.ping().await {
        metrics::gauge!("sluice_redis_up", "client" => "cache").set(if up { 1.0 } else { 0.0 });
    }
    if let Some(up) = state.jobs.ping_streams().await {
        metrics::gauge!("sluice_redis_up", "client" => "queue").set(if up { 1.0 } else { 0.0 });
    }
}

/// Queue depth and age, or `None` when the queue does not answer in time.
async fn queue_stats(state: &OpsState) -> Option<crate::queue::QueueStats> {
    tokio::time::timeout(PROBE_TIMEOUT, state.jobs.stats())
        .await
        .ok()
        .and_then(Result::ok)
}

/// `/ready`: 200 when the database (and the queue's Redis, when the queue
/// runs on it) answer; the cache's Redis being down only degrades (the origin
/// serves from L1 and the database). The body says what was checked.
pub async fn readiness(state: &OpsState) -> (StatusCode, Value) {
    let database =
        tokio::time::timeout(PROBE_TIMEOUT, sqlx::query("SELECT 1").execute(&state.db)).await;
    let database_ok = matches!(database, Ok(Ok(_)));
    let cache_redis = state.cache.ping().await;
    let queue_redis = state.jobs.ping_streams().await;
    let queue = queue_stats(state).await;
    let ready = database_ok && queue_redis != Some(false);
    let degraded = cache_redis == Some(false);
    let status = match (ready, degraded) {
        (false, _) => "not_ready",
        (true, true) => "degraded",
        (true, false) => "ready",
    };
    let body = json!({
        "status": status,
        "uptime_seconds": state.started.elapsed().as_secs(),
        "memory": { "resident_bytes": sluice_telemetry::resident_memory_bytes() },
        "database": {
            "ok": database_ok,
            "pool_size": state.db.size(),
            "pool_idle": state.db.num_idle(),
            "pool_max": state.db_max_connections,
        },
        "redis": { "cache": cache_redis, "queue": queue_redis },
        "queue": queue,
        "workers": { "busy": state.workers.busy(), "total": state.workers.total() },
        "models": state.generation.engine().model_names(),
        "deployments": state.generation.engine().health(),
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, body)
}

fn hit_rate(hits: u64, misses: u64) -> Option<f64> {
    let total = hits + misses;
    (total > 0).then(|| hits as f64 / total as f64)
}

/// The stats document (seed: the monitoring dashboard API): the same for
/// `GET /v1/admin/stats` through the edge and `/stats` on the admin listener.
pub async fn stats(state: &OpsState) -> Value {
    let now = unix_now();
    let recent: WindowStats = state.window.summary(now, 10);
    let minute: WindowStats = state.window.summary(now, 59);
    let origin_cache = state.cache.stats();
    let semantic = state.generation.semantic().map(|s| s.stats());
    let queue = queue_stats(state).await;
    json!({
        "object": "stats",
        "generated_at": now,
        "uptime_seconds": state.started.elapsed().as_secs(),
        "memory": { "resident_bytes": sluice_telemetry::resident_memory_bytes() },
        "requests": {
            "last_10s": recent,
            "last_60s": minute,
            "series": state.window.series(now),
        },
        "cache": {
            "origin": origin_cache,
            "origin_hit_rate": hit_rate(origin_cache.l1_hits + origin_cache.l2_hits, origin_cache.misses),
            "semantic": semantic,
            "semantic_hit_rate": semantic.as_ref().and_then(|s| hit_rate(s.hits, s.misses)),
        },
        "queue": queue,
        "workers": {
            "busy": state.workers.busy(),
            "idle": state.workers.total().saturating_sub(state.workers.busy()),
            "total": state.workers.total(),
        },
        "database": {
            "pool_size": state.db.size(),
            "pool_idle": state.db.num_idle(),
            "pool_max": state.db_max_connections,
        },
        "deployments": state.generation.engine().health(),
    })
}
