//! The one error type of the HTTP API, mapped to OpenAI's error shape.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use sluice_core::errors::openai_error;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    InvalidRequest {
        message: String,
        param: Option<String>,
    },
    #[error("The model `{0}` does not exist or you do not have access to it.")]
    ModelNotFound(String),
    #[error("Request body is larger than {limit} bytes.")]
    PayloadTooLarge { limit: usize },
    #[error("Request did not come through the Sluice edge: {0}")]
    EdgeSignature(String),
    #[error("The model provider failed: {0}")]
    Provider(String),
    #[error("Not found.")]
    NotFound,
    #[error("This route needs the admin tier.")]
    Forbidden,
    #[error("The database is unavailable.")]
    Database(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::ModelNotFound(_) | ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::EdgeSignature(_) => StatusCode::UNAUTHORIZED,
            ApiError::Provider(_) => StatusCode::BAD_GATEWAY,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::Database(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn kind_and_code(&self) -> (&'static str, Option<&'static str>) {
        match self {
            ApiError::InvalidRequest { .. } => ("invalid_request_error", None),
            ApiError::ModelNotFound(_) => ("invalid_request_error", Some("model_not_found")),
            ApiError::PayloadTooLarge { .. } => {
                ("invalid_request_error", Some("request_too_large"))
            }
            ApiError::EdgeSignature(_) => {
                ("invalid_request_error", Some("edge_signature_required"))
            }
            ApiError::Provider(_) => ("server_error", Some("provider_error")),
            ApiError::NotFound => ("invalid_request_error", Some("not_found")),
            ApiError::Forbidden => ("permission_error", Some("forbidden")),
            ApiError::Database(_) => ("server_error", Some("database_unavailable")),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Database(e) = &self {
            tracing::error!(error = %e, "database error");
        }
        let status = self.status();
        let (kind, code) = self.kind_and_code();
        let param = match &self {
            ApiError::InvalidRequest { param, .. } => param.as_deref(),
            ApiError::ModelNotFound(_) => Some("model"),
            _ => None,
        };
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
