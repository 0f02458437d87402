//! Extractors that answer their failures as [`ApiError`], so a handler's
//! signature says what it reads and every refusal keeps OpenAI's shape.

use crate::http::ApiError;
use crate::priority::Priority;
use axum::body::Bytes;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use sluice_core::identity::{Identity, Tier};

/// The configured request-body limit (`[server] body_limit_bytes`), named in
/// the 413 so a client knows what to cut.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// The request body, read up to [`BodyLimit`] (axum's `DefaultBodyLimit`
/// layer enforces it; this names it in the refusal).
pub struct LimitedBody(pub Bytes);

impl<S> FromRequest<S> for LimitedBody
where
    S: Send + Sync,
    BodyLimit: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<LimitedBody, ApiError> {
        let BodyLimit(limit) = BodyLimit::from_ref(state);
        Bytes::from_request(req, state)
            .await
            .map(LimitedBody)
            .map_err(|rejection| match rejection.status() {
                StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge { limit },
                _ => ApiError::InvalidRequest {
                    message: rejection.body_text(),
                    param: None,
                },
            })
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
