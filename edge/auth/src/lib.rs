//! Auth policy: turns the presented credential (`Authorization: Bearer`, or
//! Anthropic's `x-api-key`, which is read only when there is no
//! `Authorization` header) into a principal.
//!
//! Bearer JWTs (anything not starting with `sk-`) are checked by `jwt`:
//! `jwt_hs256_secret`, `jwks_url`, `jwt_issuer`, `jwt_audience`,
//! `jwt_leeway_seconds`, `jwt_tier_claim` (a missing claim is the free tier),
//! `jwks_cache_seconds`, `jwks_refresh_interval_seconds`.
//!
//! API keys (`sk-...`): those in the `api_keys` variable (SHA-256 hashes,
//! `hash:subject:tier`, comma separated, compared in constant time), then
//! those issued through the origin's admin API (see `issued`).
//!
//! Routes: `anonymous_routes` (`METHOD /path, ...`) admit callers without
//! credentials as `anonymous:<ip>` with the `anonymous` scope (free tier, and
//! the rate limiter's anonymous policies); `admin_routes` need the admin tier
//! (403 otherwise).

wit_bindgen::generate!({
    world: "auth-policy",
    path: "../../wit",
    with: { "sluice:types/types@0.1.0": sluice_edge_shared::types },
    generate_all,
});

mod fetch;
mod issued;
mod jwt;

use exports::sluice::auth::auth::Guest;
use sluice_core::settings::{AuthSettings, JwtSettings, OriginSettings, SettingsError};
use sluice_core::{api_key, identity, route};
use sluice_edge_shared::types::{Denial, Principal, RequestHead, Tier, TokenLimits};
use sluice_edge_shared::{kept, now_ms};
use std::sync::OnceLock;
use wasi::config::store as config;

/// Longest credential accepted; anything longer is refused before hashing.
const MAX_CREDENTIAL_BYTES: usize = 4096;

struct Auth;

impl Guest for Auth {
    fn authenticate(head: RequestHead) -> Result<Principal, Denial> {
        static SETTINGS: OnceLock<Result<AuthSettings, SettingsError>> = OnceLock::new();
        let settings = kept(&SETTINGS, || AuthSettings::load(setting))
            .map_err(|e| Denial::server_error(&e.to_string()))?;
        let who = establish(&head, settings)?;
        if who.tier != Tier::Admin
            && route::any_matches(&settings.admin_routes, &head.method, &head.path)
        {
            return Err(Denial::openai(
                403,
                "This route needs the admin tier.",
                "permission_error",
                Some("forbidden"),
                None,
            ));
        }
        Ok(who)
    }
}

fn setting(name: &str) -> Option<String> {
    config::get(name).ok().flatten()
}

/// The credential a request presents: `Authorization: Bearer <token>`, or
/// Anthropic's `x-api-key: <key>` (what its SDKs and coding assistants send);
/// `None` when it presents neither.
fn presented_token(head: &RequestHead) -> Result<Option<&str>, Denial> {
    let header = |wanted: &str| {
        head.headers
            .iter()
            .find(|(name, _)| name == wanted)
            .map(|(_, v)| v.as_str())
    };
    let (value, bearer) = match (header("authorization"), header("x-api-key")) {
        (Some(authorization), _) => (authorization, true),
        (None, Some(key)) => (key, false),
        (None, None) => return Ok(None),
    };
    if value.len() > MAX_CREDENTIAL_BYTES {
        return Err(unauthorized(
            "Credential too large.",
            Some("invalid_request"),
        ));
    }
    let token = if bearer {
        bearer_token(value).ok_or_else(|| {
            unauthorized(
                "Authorization header must use the Bearer scheme.",
                Some("invalid_request"),
            )
        })?
    } else {
        Some(value.trim())
            .filter(|key| !key.is_empty())
            .ok_or_else(|| unauthorized("`x-api-key` is empty.", Some("invalid_request")))?
    };
    Ok(Some(token))
}

fn establish(head: &RequestHead, settings: &AuthSettings) -> Result<Principal, Denial> {
    let Some(token) = presented_token(head)? else {
        return anonymous(head, settings).ok_or_else(|| {
            unauthorized(
                "Missing API key. Send `Authorization: Bearer <key>` or `x-api-key: <key>`.",
                None,
            )
        });
    };
    if !token.starts_with("sk-") {
        return from_jwt(token);
    }
    if let Some(record) = api_key::find(&settings.api_keys, token) {
        return Ok(Principal {
            subject: record.subject.clone(),
            tier: record.tier.into(),
            key_id: Some(api_key::key_id(&record.hash).to_string()),
            scopes: Vec::new(),
            token_limits: TokenLimits::default(),
        });
    }
    static ORIGIN: OnceLock<Result<OriginSettings, SettingsError>> = OnceLock::new();
    let lookup = issued::Settings {
        origin: kept(&ORIGIN, || OriginSettings::load(setting))
            .map_err(|e| Denial::server_error(&e.to_string()))?
            .clone(),
        cache_seconds: settings.api_key_cache_seconds,
        negative_cache_seconds: settings.api_key_negative_cache_seconds,
    };
    match issued::lookup(&api_key::hash(token), &lookup, now_ms()) {
        Ok(Some(key)) => Ok(Principal {
            subject: key.subject,
            tier: key.tier.into(),
            key_id: Some(key.key_id),
            scopes: without_reserved(key.scopes),
            token_limits: TokenLimits {
                key: key.token_limits.key,
                user: key.token_limits.user,
            },
        }),
        Ok(None) => Err(unauthorized(
            "Incorrect API key provided.",
            Some("invalid_token"),
        )),
        Err(issued::Unavailable(reason)) => {
            eprintln!("event=api_key_lookup_failed reason={reason:?}");
            Err(Denial::unavailable(
                "API keys cannot be checked right now.",
                "auth_unavailable",
            ))
        }
    }
}

/// Scopes only the edge itself may hold never come from a credential.
fn without_reserved(scopes: Vec<String>) -> Vec<String> {
    scopes
        .into_iter()
        .filter(|s| s != identity::EDGE_INTERNAL_SCOPE && s != identity::ANONYMOUS_SCOPE)
        .collect()
}

fn from_jwt(token: &str) -> Result<Principal, Denial> {
    static SETTINGS: OnceLock<Result<JwtSettings, SettingsError>> = OnceLock::new();
    let settings = kept(&SETTINGS, || JwtSettings::load(setting))
        .map_err(|e| Denial::server_error(&e.to_string()))?;
    let verified = jwt::verify(token, settings, now_ms())
        .map_err(|jwt::Refusal(message)| unauthorized(&message, Some("invalid_token")))?;
    let tier = match verified.tier.as_deref() {
        None => Tier::Free,
        Some(name) => identity::Tier::parse(name)
            .map(Tier::from)
            .ok_or_else(|| unauthorized("Token names an unknown tier.", Some("invalid_token")))?,
    };
    Ok(Principal {
        subject: verified.subject,
        tier,
        key_id: Some(verified.key_id),
        scopes: without_reserved(verified.scopes),
        token_limits: TokenLimits::default(),
    })
}

/// The principal of a caller without credentials, on a route open to them.
fn anonymous(head: &RequestHead, settings: &AuthSettings) -> Option<Principal> {
    let ip = head.client_ip.as_deref()?;
    route::any_matches(&settings.anonymous_routes, &head.method, &head.path).then(|| Principal {
        subject: format!("anonymous:{ip}"),
        tier: Tier::Free,
        key_id: None,
        scopes: vec![identity::ANONYMOUS_SCOPE.to_string()],
        token_limits: TokenLimits::default(),
    })
}

fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// 401 with an RFC 6750 challenge; `error` names what was wrong with a presented token.
fn unauthorized(message: &str, error: Option<&str>) -> Denial {
    let challenge = match error {
        Some(error) => format!("Bearer realm=\"sluice\", error=\"{error}\""),
        None => "Bearer realm=\"sluice\"".to_string(),
    };
    Denial::openai(
        401,
        message,
        "invalid_request_error",
        Some("invalid_api_key"),
        None,
    )
    .with_header("www-authenticate", &challenge)
}

export!(Auth);
