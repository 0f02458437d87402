//! Extractors that answer their failures as [`ApiError`], so a handler's
//! signature says what it reads and every refusal keeps OpenAI's shape.

use crate::http::ApiError;
use crate::priority::Priority;
use axum::body::Bytes;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use sluice_core::identity::{Identity, Tier};

/// The configured request-body limits, named in the 413 so a client knows
/// what to cut: `[server] body_limit_bytes` for every route (axum's
/// `DefaultBodyLimit`, which JSON extractors honour too), and
/// `ai_body_limit_bytes` for the routes that generate, whose bodies carry
/// images and long sessions.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit {
    pub default: usize,
    pub generation: usize,
}

/// The request body, read up to `BodyLimit::default`.
pub struct LimitedBody(pub Bytes);

/// The body of a route that generates, read up to `BodyLimit::generation`.
pub struct GenerationBody(pub Bytes);

/// Reads the whole body up to `limit`, past the `DefaultBodyLimit` layer
/// (this limit is the route's own), refusing a larger one with 413.
async fn read_body(req: Request, limit: usize, setting: &'static str) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|error| {
            let too_large = std::error::Error::source(&error)
                .is_some_and(|e| e.is::<http_body_util::LengthLimitError>());
            if too_large {
                ApiError::PayloadTooLarge { limit, setting }
            } else {
                ApiError::InvalidRequest {
                    message: format!("Could not read the request body: {error}"),
                    param: None,
                }
            }
        })
}

impl<S> FromRequest<S> for LimitedBody
where
    S: Send + Sync,
    BodyLimit: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<LimitedBody, ApiError> {
        read_body(req, BodyLimit::from_ref(state).default, "body_limit_bytes")
            .await
            .map(LimitedBody)
    }
}

impl<S> FromRequest<S> for GenerationBody
where
    S: Send + Sync,
    BodyLimit: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<GenerationBody, ApiError> {
        read_body(
            req,
            BodyLimit::from_ref(state).generation,
            "ai_body_limit_bytes",
        )
        .await
        .map(GenerationBody)
    }
}

/// `x-sluice-priority`, `normal` when absent.
impl<S: Send + Sync> FromRequestParts<S> for Priority {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Priority, ApiError> {
        match parts.headers.get(Priority::HEADER) {
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
}

/// 403 unless the signed caller is in the admin tier.
pub fn require_admin(who: &Identity) -> Result<(), ApiError> {
    if who.tier == Tier::Admin {
        Ok(())
    } else {
        Err(ApiError::Forbidden)
    }
}
