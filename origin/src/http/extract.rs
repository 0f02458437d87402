//! Extractors that answer their failures as [`ApiError`], so a handler's
//! signature says what it reads and every refusal keeps OpenAI's shape.

use crate::http::ApiError;
use crate::priority::Priority;
use axum::body::Bytes;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
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

/// Parses a JSON body, naming the offending field on failure.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        // serde_json reports some type errors (a number where an enum goes) as
        // syntax errors, so ask the body itself whether it is JSON.
        if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_err() {
            return ApiError::InvalidRequest {
                message: format!("Request body is not valid JSON: {inner}"),
                param: None,
            };
        }
        match path.as_str() {
            "." => ApiError::InvalidRequest {
                message: format!("Invalid request body: {inner}"),
                param: None,
            },
            _ => ApiError::InvalidRequest {
                message: format!("Invalid value for `{path}`: {inner}"),
                param: Some(path),
            },
        }
    })
}

/// Longest identifier accepted in a path, a query or an id field.
pub const MAX_ID_BYTES: usize = 256;

/// An identifier (an id, a subject, a name) a client sent: at most
/// [`MAX_ID_BYTES`], no control characters (NUL included, which Postgres
/// cannot store: without this check it was a database error).
pub fn check_identifier(param: &str, value: &str) -> Result<(), ApiError> {
    let problem = if value.len() > MAX_ID_BYTES {
        Some(format!("is longer than {MAX_ID_BYTES} bytes"))
    } else {
        value
            .chars()
            .find(|c| c.is_control())
            .map(|c| format!("contains the control character U+{:04X}", u32::from(c)))
    };
    match problem {
        Some(problem) => Err(ApiError::InvalidRequest {
            message: format!("`{param}` {problem}."),
            param: Some(param.into()),
        }),
        None => Ok(()),
    }
}

/// A name an admin gives (a team, a subject, a key's name): 1 to 200
/// characters without control characters.
pub fn check_name(value: &str, param: &str) -> Result<(), ApiError> {
    if value.is_empty() || value.len() > 200 || value.chars().any(char::is_control) {
        return Err(ApiError::InvalidRequest {
            message: format!("`{param}` must be 1 to 200 characters without control characters."),
            param: Some(param.into()),
        });
    }
    Ok(())
}

/// Path parameters, every one an identifier ([`check_identifier`]); any
/// rejection (a segment that is not UTF-8, say) is a 400 in the API's shape.
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<ApiPath<T>, ApiError> {
        let raw = axum::extract::RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::InvalidRequest {
                message: format!("Invalid URL: {}", rejection.body_text()),
                param: None,
            })?;
        for (name, value) in &raw {
            check_identifier(name, value)?;
        }
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| ApiPath(value))
            .map_err(|rejection| ApiError::InvalidRequest {
                message: format!("Invalid URL: {}", rejection.body_text()),
                param: None,
            })
    }
}

/// The query string as the handler's type (unknown parameters refused
/// where the type says so), its values checked as identifiers; any
/// rejection is a 400 in the API's shape naming the parameter when it can.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<ApiQuery<T>, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |text: &str| {
                let text = text.replace('+', " ");
                percent_encoding::percent_decode_str(&text)
                    .decode_utf8()
                    .map(|t| t.into_owned())
                    .map_err(|_| ApiError::InvalidRequest {
                        message: format!("Invalid query string: `{pair}` is not UTF-8."),
                        param: None,
                    })
            };
            check_identifier(&decode(name)?, &decode(value)?)?;
        }
        let deserializer =
            serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer)
            .map(ApiQuery)
            .map_err(|error| {
                let path = error.path().to_string();
                let inner = error.into_inner();
                ApiError::InvalidRequest {
                    message: format!("Invalid query string: {inner}"),
                    param: (path != ".").then_some(path),
                }
            })
    }
}

/// A JSON body as the handler's type; a body that does not parse names the
/// offending field (a 400 in the API's shape).
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    BodyLimit: FromRef<S>,
    T: serde::de::DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<ApiJson<T>, ApiError> {
        let LimitedBody(body) = LimitedBody::from_request(req, state).await?;
        parse_json(&body).map(ApiJson)
    }
}
