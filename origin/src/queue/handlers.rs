//! Async generation over HTTP: submit, poll, cancel; and the admin's view of
//! the queue and its dead letters. Handlers extract, call the queue, and map.

use crate::app::{AppState, priority, read_body};
use crate::error::ApiError;
use crate::jobs::{Job, JobError, NewJob};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, extract::rejection::QueryRejection};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sluice_core::identity::Identity;

impl From<JobError> for ApiError {
    fn from(e: JobError) -> ApiError {
        match e {
            JobError::NotFound => ApiError::NotFound,
            JobError::Sql(e) => ApiError::Database(Box::new(e)),
            JobError::Streams(e) => ApiError::QueueUnavailable(Box::new(e)),
        }
    }
}

/// A job with the seed's `job_id` beside OpenAI-style `id`.
#[derive(Serialize)]
struct JobView<'a> {
    job_id: &'a str,
    #[serde(flatten)]
    job: &'a Job,
}

fn view(job: &Job) -> Json<JobView<'_>> {
    Json(JobView {
        job_id: &job.id,
        job,
    })
}

const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// Queues a non-streamed chat completion: 202 with the job. A repeated
/// `Idempotency-Key` from the same caller returns the first job (and says so).
pub async fn submit(
    state: &AppState,
    who: &Identity,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let request = crate::chat::parse(body)?;
    if request.is_stream() {
        return Err(ApiError::InvalidRequest {
            message: "Jobs are not streamed; poll `GET /v1/jobs/{id}` for the result.".into(),
            param: Some("stream".into()),
        });
    }
    if !state.engine.has_model(&request.model) {
        return Err(ApiError::ModelNotFound(request.model));
    }
    let idempotency_key = match headers.get(IDEMPOTENCY_HEADER) {
        None => None,
        Some(value) => match value.to_str() {
            Ok(key) if !key.is_empty() && key.len() <= 255 => Some(key),
            _ => {
                return Err(ApiError::InvalidRequest {
                    message: "`Idempotency-Key` must be 1 to 255 visible characters.".into(),
                    param: Some(IDEMPOTENCY_HEADER.into()),
                });
            }
        },
    };
    let stored = serde_json::to_string(&request).map_err(|e| ApiError::InvalidRequest {
        message: e.to_string(),
        param: None,
    })?;
    let (job, created) = state
        .jobs
        .submit(NewJob {
            subject: &who.sub,
            priority: priority(headers)?,
            idempotency_key,
            request: &stored,
        })
        .await?;
    let mut response = (StatusCode::ACCEPTED, view(&job)).into_response();
    if !created {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// `POST /v1/jobs`.
pub async fn create(
    State(state): State<AppState>,
    Extension(who): Extension<Identity>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = read_body(&state, body)?;
    submit(&state, &who, &headers, &body).await
}

/// `GET /v1/jobs/{id}`: the caller's own jobs only.
pub async fn get(
    State(state): State<AppState>,
    Extension(who): Extension<Identity>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job = state.jobs.get(Some(&who.sub), &id).await?;
    Ok(view(&job).into_response())
}

/// `DELETE /v1/jobs/{id}`: cancels; a finished job comes back as it is.
pub async fn cancel(
    State(state): State<AppState>,
    Extension(who): Extension<Identity>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job = state.jobs.cancel(&who.sub, &id).await?;
    Ok(view(&job).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadQuery {
    limit: Option<u32>,
}

/// `GET /v1/admin/queue`: depth, age and dead letters.
pub async fn stats(
    State(state): State<AppState>,
    Extension(who): Extension<Identity>,
) -> Result<Response, ApiError> {
    crate::admin::require_admin(&who)?;
    let stats = state.jobs.stats().await?;
    Ok(Json(json!({ "object": "queue.stats", "stats": stats })).into_response())
}

/// `GET /v1/admin/jobs/dead?limit=`: the dead-letter queue, newest first.
pub async fn dead(
    State(state): State<AppState>,
    Extension(who): Extension<Identity>,
    query: Result<Query<DeadQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    crate::admin::require_admin(&who)?;
    let Query(query) = query?;
    let jobs = state
        .jobs
        .dead(query.limit.unwrap_or(100).clamp(1, 1000))
        .await?;
    Ok(Json(json!({ "object": "list", "data": jobs })).into_response())
}

/// `GET /v1/admin/jobs/{id}`: any caller's job, for inspection.
pub async fn inspect(
    State(state): State<AppState>,
    Extension(who): Extension<Identity>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    crate::admin::require_admin(&who)?;
    let job = state.jobs.get(None, &id).await?;
    Ok(view(&job).into_response())
}

/// `POST /v1/admin/jobs/{id}/redrive`: a dead job back in the queue.
pub async fn redrive(
    State(state): State<AppState>,
    Extension(who): Extension<Identity>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    crate::admin::require_admin(&who)?;
    let job = state.jobs.redrive(&id).await?;
    Ok(view(&job).into_response())
}
