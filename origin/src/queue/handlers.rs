//! Async generation over HTTP: submit, poll, cancel; and the admin's view of
//! the queue and its dead letters. Handlers extract, call the queue, and map.

pub fn router<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    JobQueue: FromRef<S>,
    GenerationService: FromRef<S>,
    BodyLimit: FromRef<S>,
{
    Router::new()
        .route("/v1/jobs", post(create))
        .route("/v1/jobs/{id}", get(get_one).delete(cancel))
        .route("/generate", post(generate))
        .route("/jobs/{id}", get(get_one))
        .route("/v1/admin/queue", get(stats))
        .route("/v1/admin/jobs/dead", get(dead))
        .route("/v1/admin/jobs/{id}", get(inspect))
        .route("/v1/admin/jobs/{id}/redrive", post(redrive))
}

use crate::generation::{GenerationService, handlers::answer_chat, parse};
use crate::http::{ApiError, BodyLimit, GenerationBody, require_admin};
use crate::http::{ApiPath, ApiQuery};
use crate::priority::Priority;
use crate::queue::store::{Job, JobError, JobQueue, NewJob};
use axum::extract::{FromRef, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
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
async fn submit(
    jobs: &JobQueue,
    generation: &GenerationService,
    who: &Identity,
    priority: Priority,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let request = parse::parse(body)?;
    if request.is_stream() {
        return Err(ApiError::InvalidRequest {
            message: "Jobs are not streamed; poll `GET /v1/jobs/{id}` for the result.".into(),
            param: Some("stream".into()),
        });
    }
    if !generation.has_model(&request.model) {
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
    let (job, created) = jobs
        .submit(NewJob {
            subject: &who.sub,
            key_id: who.kid.as_deref(),
            priority,
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
async fn create(
    State(jobs): State<JobQueue>,
    State(generation): State<GenerationService>,
    Extension(who): Extension<Identity>,
    priority: Priority,
    headers: HeaderMap,
    GenerationBody(body): GenerationBody,
) -> Result<Response, ApiError> {
    submit(&jobs, &generation, &who, priority, &headers, &body).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GenerateQuery {
    #[serde(rename = "async", default)]
    run_async: bool,
}

/// The seed's form: `POST /generate?async=true` queues a job (as
/// `POST /v1/jobs`), without `async` it answers as a chat completion.
async fn generate(
    State(jobs): State<JobQueue>,
    State(generation): State<GenerationService>,
    Extension(who): Extension<Identity>,
    ApiQuery(query): ApiQuery<GenerateQuery>,
    priority: Priority,
    headers: HeaderMap,
    GenerationBody(body): GenerationBody,
) -> Result<Response, ApiError> {
    if query.run_async {
        return submit(&jobs, &generation, &who, priority, &headers, &body).await;
    }
    answer_chat(&generation, &who, priority, &headers, body).await
}

/// `GET /v1/jobs/{id}`: the caller's own jobs only.
async fn get_one(
    State(jobs): State<JobQueue>,
    Extension(who): Extension<Identity>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let job = jobs.get(Some(&who.sub), &id).await?;
    Ok(view(&job).into_response())
}

/// `DELETE /v1/jobs/{id}`: cancels; a finished job comes back as it is.
async fn cancel(
    State(jobs): State<JobQueue>,
    Extension(who): Extension<Identity>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let job = jobs.cancel(&who.sub, &id).await?;
    Ok(view(&job).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadQuery {
    limit: Option<u32>,
}

/// `GET /v1/admin/queue`: depth, age and dead letters.
async fn stats(
    State(jobs): State<JobQueue>,
    Extension(who): Extension<Identity>,
) -> Result<Response, ApiError> {
    require_admin(&who)?;
    let stats = jobs.stats().await?;
    Ok(Json(json!({ "object": "queue.stats", "stats": stats })).into_response())
}

/// `GET /v1/admin/jobs/dead?limit=`: the dead-letter queue, newest first.
async fn dead(
    State(jobs): State<JobQueue>,
    Extension(who): Extension<Identity>,
    ApiQuery(query): ApiQuery<DeadQuery>,
) -> Result<Response, ApiError> {
    require_admin(&who)?;
    let jobs = jobs.dead(query.limit.unwrap_or(100).clamp(1, 1000)).await?;
    Ok(Json(json!({ "object": "list", "data": jobs })).into_response())
}

/// `GET /v1/admin/jobs/{id}`: any caller's job, for inspection.
async fn inspect(
    State(jobs): State<JobQueue>,
    Extension(who): Extension<Identity>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    require_admin(&who)?;
    let job = jobs.get(None, &id).await?;
    Ok(view(&job).into_response())
}

/// `POST /v1/admin/jobs/{id}/redrive`: a dead job back in the queue.
async fn redrive(
    State(jobs): State<JobQueue>,
    Extension(who): Extension<Identity>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    require_admin(&who)?;
    let job = jobs.redrive(&id).await?;
    Ok(view(&job).into_response())
}
