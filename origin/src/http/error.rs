//! The one error type of the HTTP API, mapped to OpenAI's error shape.
//!
//! The conversions from the domain's errors (routing) and axum's rejections
//! are here; each feature's own store error (`ConversationError`,
//! `JobError`, `KeyError`) converts beside that feature's handlers, because
//! `http` sits below the features and must not import them.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use sluice_core::errors::{openai_error, rate_limited};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    InvalidRequest {
        message: String,
        param: Option<String>,
    },
    #[error("The model `{0}` does not exist or you do not have access to it.")]
    ModelNotFound(String),
    #[error(
        "Request body is larger than {limit} bytes, this route's limit (the origin's \
         `[server] {setting}`; an operator can raise it)."
    )]
    PayloadTooLarge { limit: usize, setting: &'static str },
    #[error("Request did not come through the Sluice edge: {0}")]
    EdgeSignature(String),
    /// A spend budget refused the call: `budget` describes it (in the body's `error.budget`).
    #[error("{message}")]
    InsufficientQuota {
        message: String,
        budget: Box<serde_json::Value>,
        retry_after_secs: Option<u64>,
    },
    #[error("Every upstream for this model is at its rate limit; try again later.")]
    UpstreamRateLimited { retry_in: Option<Duration> },
    #[error("The model provider failed: {0}")]
    UpstreamFailed(String),
    #[error("The model provider did not answer in time: {0}")]
    UpstreamTimeout(String),
    #[error("Every upstream for this model is unhealthy; try again shortly.")]
    NoHealthyUpstream,
    #[error("Not found.")]
    NotFound,
    #[error("No response with id '{0}' was found.")]
    ResponseNotFound(String),
    #[error("Previous response with id '{0}' not found.")]
    PreviousResponseNotFound(String),
    #[error("This route needs the admin tier.")]
    Forbidden,
    #[error("The job queue is unavailable; try again shortly.")]
    QueueUnavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("The database is unavailable.")]
    Database(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Whether a database error was caused by a value the client sent (SQLSTATE
/// class 22, data exception: a NUL byte Postgres cannot store, a number out
/// of range): the client's fault, a 400, never an outage that pages
/// operators or trips a breaker. Input is checked at the door; this is the
/// backstop for what a check missed.
fn caused_by_input(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(sqlx::Error::Database(db)) = error.downcast_ref::<sqlx::Error>()
            && db.code().is_some_and(|code| code.starts_with("22"))
        {
            return true;
        }
        next = error.source();
    }
    false
}

impl ApiError {
    /// A database error the client's input caused, told apart from an outage.
    fn is_input_fault(&self) -> bool {
        matches!(self, ApiError::Database(e) if caused_by_input(e.as_ref()))
    }

    fn status(&self) -> StatusCode {
        if self.is_input_fault() {
            return StatusCode::BAD_REQUEST;
        }
        match self {
            ApiError::InvalidRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::ModelNotFound(_)
            | ApiError::NotFound
            | ApiError::ResponseNotFound(_)
            | ApiError::PreviousResponseNotFound(_) => StatusCode::NOT_FOUND,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::EdgeSignature(_) => StatusCode::UNAUTHORIZED,
            ApiError::UpstreamRateLimited { .. } | ApiError::InsufficientQuota { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::UpstreamFailed(_) => StatusCode::BAD_GATEWAY,
            ApiError::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::NoHealthyUpstream => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::Database(_) | ApiError::QueueUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    fn kind_and_code(&self) -> (&'static str, Option<&'static str>) {
        if self.is_input_fault() {
            return ("invalid_request_error", Some("invalid_value"));
        }
        match self {
            ApiError::InvalidRequest { .. } => ("invalid_request_error", None),
            ApiError::ModelNotFound(_) => ("invalid_request_error", Some("model_not_found")),
            ApiError::PayloadTooLarge { .. } => {
                ("invalid_request_error", Some("request_too_large"))
            }
            ApiError::EdgeSignature(_) => {
                ("invalid_request_error", Some("edge_signature_required"))
            }
            ApiError::UpstreamRateLimited { .. } => {
                ("rate_limit_error", Some("rate_limit_exceeded"))
            }
            // OpenAI's own out-of-credit refusal: its SDKs raise RateLimitError.
            ApiError::InsufficientQuota { .. } => {
                ("insufficient_quota", Some("insufficient_quota"))
            }
            ApiError::UpstreamFailed(_) => ("server_error", Some("provider_error")),
            ApiError::UpstreamTimeout(_) => ("server_error", Some("provider_timeout")),
            ApiError::NoHealthyUpstream => ("server_error", Some("provider_unavailable")),
            ApiError::NotFound | ApiError::ResponseNotFound(_) => {
                ("invalid_request_error", Some("not_found"))
            }
            ApiError::PreviousResponseNotFound(_) => {
                ("invalid_request_error", Some("previous_response_not_found"))
            }
            ApiError::Forbidden => ("permission_error", Some("forbidden")),
            ApiError::Database(_) => ("server_error", Some("database_unavailable")),
            ApiError::QueueUnavailable(_) => ("server_error", Some("queue_unavailable")),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Database(e) = &self {
            if self.is_input_fault() {
                tracing::info!(event = "database_refused_input", error = %e);
                let body = openai_error(
                    "The request holds a value that cannot be stored (a NUL byte, say).",
                    "invalid_request_error",
                    Some("invalid_value"),
                    None,
                );
                return (StatusCode::BAD_REQUEST, Json(body)).into_response();
            }
            tracing::error!(error = %e, "database error");
        }
        let status = self.status();
        let (kind, code) = self.kind_and_code();
        let param = match &self {
            ApiError::InvalidRequest { param, .. } => param.as_deref(),
            ApiError::ModelNotFound(_) => Some("model"),
            ApiError::PreviousResponseNotFound(_) => Some("previous_response_id"),
            _ => None,
        };
        if let ApiError::UpstreamRateLimited { retry_in } = self {
            // Whole seconds, at least one: what `Retry-After` can say.
            let seconds = retry_in.map_or(1, |d| d.as_secs_f64().ceil().max(1.0) as u64);
            let mut response = (status, Json(rate_limited(seconds))).into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
            return response;
        }
        if let ApiError::InsufficientQuota {
            message,
            budget,
            retry_after_secs,
        } = self
        {
            let mut body = openai_error(&message, kind, code, None);
            body["error"]["budget"] = *budget;
            body["detail"] = message.into();
            body["status_code"] = 429.into();
            let mut response = (status, Json(body)).into_response();
            if let Some(seconds) = retry_after_secs {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
            }
            return response;
        }
        let body = openai_error(&self.to_string(), kind, code, param);
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Sluice-Edge realm=\"origin\""),
            );
        }
        response
    }
}

impl From<crate::routing::RouteError> for ApiError {
    fn from(error: crate::routing::RouteError) -> ApiError {
        use crate::provider::ProviderError;
        use crate::routing::RouteError;
        match error {
            RouteError::UnknownModel(model) => ApiError::ModelNotFound(model),
            RouteError::Rejected(ProviderError::Rejected { message, .. }) => {
                ApiError::InvalidRequest {
                    message: format!("The model provider rejected the request: {message}"),
                    param: None,
                }
            }
            RouteError::Rejected(other) => ApiError::InvalidRequest {
                message: other.to_string(),
                param: None,
            },
            RouteError::RateLimited { retry_in } => ApiError::UpstreamRateLimited { retry_in },
            RouteError::Unavailable(ProviderError::Timeout(when)) => {
                ApiError::UpstreamTimeout(when.to_string())
            }
            RouteError::Unavailable(other) => ApiError::UpstreamFailed(other.to_string()),
            RouteError::NoHealthyDeployment => ApiError::NoHealthyUpstream,
        }
    }
}

/// A body axum could not read as the handler's JSON type: 400 with axum's reason.
impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> ApiError {
        ApiError::InvalidRequest {
            message: rejection.body_text(),
            param: None,
        }
    }
}

/// A query string axum could not read as the handler's type: 400 with axum's reason.
impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> ApiError {
        ApiError::InvalidRequest {
            message: rejection.body_text(),
            param: None,
        }
    }
}

/// An [`ApiError`] in Anthropic's shape, for `/v1/messages`:
/// `{"type": "error", "error": {"type": ..., "message": ...}}` with the same
/// status (and `Retry-After`).
#[derive(Debug)]
pub struct AnthropicError(pub ApiError);

impl<E: Into<ApiError>> From<E> for AnthropicError {
    fn from(error: E) -> AnthropicError {
        AnthropicError(error.into())
    }
}

impl IntoResponse for AnthropicError {
    fn into_response(self) -> Response {
        let error = self.0;
        let status = error.status();
        let retry_after = match &error {
            ApiError::UpstreamRateLimited { retry_in } => {
                Some(retry_in.map_or(1, |d| d.as_secs_f64().ceil().max(1.0) as u64))
            }
            _ => None,
        };
        let body = sluice_core::errors::anthropic_error(status.as_u16(), &error.to_string());
        let mut response = (status, Json(body)).into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
        }
        response
    }
}
