//! Admin API (admin tier, through the edge) for API keys, and the edge's own
//! key lookup. Handlers extract, call the key store, and map.

use crate::http::{ApiError, require_admin};
use crate::http::{ApiJson, ApiPath, ApiQuery, check_name};
use crate::keys::store::{KeyError, KeyStore, NewKey};
use axum::extract::FromRef;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::json;
use sluice_core::identity::{EDGE_INTERNAL_SCOPE, Identity, Tier};

pub fn router<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    KeyStore: FromRef<S>,
    crate::http::BodyLimit: FromRef<S>,
{
    Router::new()
        .route("/v1/admin/keys", post(create_key).get(list_keys))
        .route("/v1/admin/keys/{id}", delete(revoke_key).patch(update_key))
        .route("/v1/admin/users/{subject}", patch(update_user))
        .route("/internal/v1/keys/{hash}", get(lookup_key))
}

impl From<KeyError> for ApiError {
    fn from(e: KeyError) -> ApiError {
        match e {
            KeyError::NotFound | KeyError::NoSuchUser => ApiError::NotFound,
            KeyError::Sql(e) => ApiError::Database(Box::new(e)),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    subject: String,
    tier: Option<Tier>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    scopes: Vec<String>,
    /// The key's own token limit, `N/period[;burst=B]` or `unlimited`.
    token_limit: Option<String>,
}

/// A token limit as the edge will read it: `N/period[;burst=B][;fail=...]`
/// or `unlimited` (a user's `unlimited` lifts the tier's).
fn valid_token_limit(limit: Option<&str>) -> Result<Option<&str>, ApiError> {
    let Some(limit) = limit.map(str::trim) else {
        return Ok(None);
    };
    sluice_core::rate_policy::PolicySpec::parse(limit).map_err(|e| ApiError::InvalidRequest {
        message: format!("`token_limit`: {e}."),
        param: Some("token_limit".into()),
    })?;
    Ok(Some(limit))
}

/// `POST /v1/admin/keys`: 201 with the key, shown this once.
pub async fn create_key(
    State(keys): State<KeyStore>,
    Extension(who): Extension<Identity>,
    ApiJson(body): ApiJson<CreateKey>,
) -> Result<Response, ApiError> {
    require_admin(&who)?;
    let subject = body.subject.trim();
    check_name(subject, "subject")?;
    if subject.starts_with("anonymous:") {
        return Err(ApiError::InvalidRequest {
            message: "`subject` must not be `anonymous:...`.".into(),
            param: Some("subject".into()),
        });
    }
    if !body.name.is_empty() {
        check_name(&body.name, "name")?;
    }
    if body.scopes.iter().any(|s| {
        s == EDGE_INTERNAL_SCOPE
            || s.contains(char::is_whitespace)
            || check_name(s, "scopes").is_err()
    }) {
        return Err(ApiError::InvalidRequest {
            message: "`scopes` must be single words and not reserved.".into(),
            param: Some("scopes".into()),
        });
    }
    let created = keys
        .create(NewKey {
            subject,
            tier: body.tier,
            name: &body.name,
            scopes: &body.scopes,
            token_limit: valid_token_limit(body.token_limit.as_deref())?,
        })
        .await?;
    tracing::info!(event = "api_key_created", key_id = %created.info.id, subject = %created.info.subject, by = %who.sub);
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListKeys {
    subject: Option<String>,
}

/// `GET /v1/admin/keys[?subject=...]`
pub async fn list_keys(
    State(keys): State<KeyStore>,
    Extension(who): Extension<Identity>,
    ApiQuery(query): ApiQuery<ListKeys>,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_admin(&who)?;
    let keys = keys.list(query.subject.as_deref()).await?;
    Ok(Json(json!({ "object": "list", "data": keys })))
}

/// `DELETE /v1/admin/keys/{id}`: revoked at once here, at the edge within
/// its key cache time.
pub async fn revoke_key(
    State(keys): State<KeyStore>,
    Extension(who): Extension<Identity>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_admin(&who)?;
    let key = keys.revoke(&id).await?;
    tracing::info!(event = "api_key_revoked", key_id = %key.id, subject = %key.subject, by = %who.sub);
    Ok(Json(json!({ "revoked": true, "key": key })))
}

/// What `PATCH` changes on a key or a user: its own token limit (`null`
/// clears it).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetTokenLimit {
    token_limit: Option<String>,
}

/// `PATCH /v1/admin/keys/{id}`: reaches the edge within its key cache time.
pub async fn update_key(
    State(keys): State<KeyStore>,
    Extension(who): Extension<Identity>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<SetTokenLimit>,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_admin(&who)?;
    let limit = valid_token_limit(body.token_limit.as_deref())?;
    let key = keys.set_key_token_limit(&id, limit).await?;
    tracing::info!(event = "api_key_token_limit_set", key_id = %key.id, limit = ?limit, by = %who.sub);
    Ok(Json(json!({ "key": key })))
}

/// `PATCH /v1/admin/users/{subject}`: the user's own token limit, which
/// replaces its tier's for every key of the user.
pub async fn update_user(
    State(keys): State<KeyStore>,
    Extension(who): Extension<Identity>,
    ApiPath(subject): ApiPath<String>,
    ApiJson(body): ApiJson<SetTokenLimit>,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_admin(&who)?;
    let limit = valid_token_limit(body.token_limit.as_deref())?;
    let user = keys.set_user_token_limit(&subject, limit).await?;
    tracing::info!(event = "user_token_limit_set", subject = %user.subject, limit = ?limit, by = %who.sub);
    Ok(Json(json!({ "user": user })))
}

/// `GET /internal/v1/keys/{hash}`: the edge's lookup of a presented key. Only
/// the edge's own calls carry the internal scope (the gateway never forwards
/// `/internal/` paths), so clients cannot probe hashes here.
pub async fn lookup_key(
    State(keys): State<KeyStore>,
    Extension(who): Extension<Identity>,
    ApiPath(hash): ApiPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if !who.scopes.iter().any(|s| s == EDGE_INTERNAL_SCOPE) {
        return Err(ApiError::Forbidden);
    }
    let key = keys
        .active_by_hash(&hash)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(json!({
        "subject": key.subject,
        "tier": key.tier,
        "key_id": key.id,
        "scopes": key.scopes,
        "token_limits": { "key": key.token_limit, "user": key.user_token_limit },
    })))
}
