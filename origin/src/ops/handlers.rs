//! The operator's routes: the admin API through the edge (stats, cache
//! counts and warming; admin tier) and the admin listener (metrics, probes,
//! stats and the status page; no authentication).

use crate::http::ApiJson;
use crate::http::{ApiError, require_admin};
use crate::ops::{OpsState, readiness, stats};
use axum::extract::{FromRef, State};
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use sluice_core::identity::Identity;

/// The admin API, behind the edge signature like every public route.
pub fn router<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    OpsState: FromRef<S>,
    crate::http::BodyLimit: FromRef<S>,
{
    Router::new()
        .route("/v1/admin/stats", get(admin_stats))
        .route("/v1/admin/cache", get(cache_stats))
        .route("/v1/admin/cache/warm", post(warm_cache))
}

/// `GET /v1/admin/stats`: the admin listener's `/stats`, through the edge.
async fn admin_stats(
    State(state): State<OpsState>,
    Extension(who): Extension<Identity>,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_admin(&who)?;
    Ok(Json(stats(&state).await))
}

/// `GET /v1/admin/cache`: hit and miss counts of the origin's caches.
async fn cache_stats(
    State(state): State<OpsState>,
    Extension(who): Extension<Identity>,
) -> Result<Response, ApiError> {
    require_admin(&who)?;
    Ok(Json(json!({
        "object": "cache.stats",
        "origin": state.cache.stats(),
        "semantic": state.generation.semantic().map(|s| s.stats()),
        "conversation_database_reads": state.conversations.database_reads(),
    }))
    .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarmCache {
    /// These subjects; or, when absent, the `top` most recently active.
    subjects: Option<Vec<String>>,
    top: Option<u32>,
}

/// `POST /v1/admin/cache/warm`: preloads popular conversations (the seed's
/// cache warming) so the first reads after a deploy do not all hit the database.
async fn warm_cache(
    State(state): State<OpsState>,
    Extension(who): Extension<Identity>,
    ApiJson(body): ApiJson<WarmCache>,
) -> Result<Response, ApiError> {
    require_admin(&who)?;
    let subjects = match body.subjects {
        Some(subjects) => subjects,
        None => {
            state
                .conversations
                .active_subjects(body.top.unwrap_or(100).clamp(1, 10_000))
                .await?
        }
    };
    let pages = state.conversations.warm(&subjects).await?;
    Ok(
        Json(json!({ "object": "cache.warm", "subjects": subjects.len(), "pages": pages }))
            .into_response(),
    )
}

/// The admin listener: metrics, probes, stats and the status page. It has no
/// authentication, so it binds to loopback unless deployed behind a network
/// policy (the Kubernetes manifests expose it only to Prometheus and probes).
pub fn admin_app(state: OpsState) -> Router {
    Router::new()
        .route("/metrics", get(metrics_page))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/stats", get(stats_page))
        .route("/", get(status_page))
        .route("/status", get(status_page))
        .route("/spend", get(spend_page))
        .route("/spend.json", get(spend_data))
        .with_state(state)
}

pub async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

pub async fn ready(State(state): State<OpsState>) -> Response {
    let (code, body) = readiness(&state).await;
    (code, Json(body)).into_response()
}

async fn stats_page(State(state): State<OpsState>) -> Json<Value> {
    Json(stats(&state).await)
}

async fn metrics_page(State(state): State<OpsState>) -> Response {
    // Gauges are at most `SAMPLE_INTERVAL` old; the process ones and the
    // cache's entries are fresh.
    sluice_telemetry::record_process(state.started);
    metrics::gauge!("sluice_origin_cache_entries").set(state.cache.entries().await as f64);
    let mut response = sluice_telemetry::prometheus().render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(sluice_telemetry::PROMETHEUS_CONTENT_TYPE),
    );
    response
}

/// One self-contained page (no external scripts: the admin network may be
/// closed) that polls `/stats` and draws its charts on canvases.
async fn status_page() -> Html<&'static str> {
    Html(include_str!("status.html"))
}

/// Budgets against spend, top spenders and spend over time, drawn from
/// `/spend.json` by the page's own script.
async fn spend_page() -> Html<&'static str> {
    Html(include_str!("../budgets/spend.html"))
}

async fn spend_data(State(state): State<OpsState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        crate::budgets::handlers::spend_view(state.generation.budgets()).await?,
    ))
}
