//! Auth policy: turns the `Authorization` header into a principal.
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

wit_bindgen::generate!({ world: "auth-policy", path: "../../wit", generate_all });

mod fetch;
mod issued;
mod jwt;

use exports::sluice::auth::auth::Guest;
use sluice::types::types::{Denial, Principal, RequestHead, Tier};
use sluice_core::{api_key, errors, identity, route};
use wasi::config::store as config;

/// Longest credential accepted; anything longer is refused before hashing.
const MAX_CREDENTIAL_BYTES: usize = 4096;

struct Auth;

impl Guest for Auth {
    fn authenticate(head: RequestHead) -> Result<Principal, Denial> {
        let who = establish(&head)?;
        let admin_routes = route::parse_list(&setting("admin_routes").unwrap_or_default())
            .map_err(|e| internal(&format!("admin_routes: {e}")))?;
        if who.tier != Tier::Admin && route::any_matches(&admin_routes, &head.method, &head.path) {
            return Err(forbidden());
        }
        Ok(who)
    }
}

fn setting(name: &str) -> Option<String> {
    config::get(name).ok().flatten()
}

fn number_setting(name: &str, default: u64) -> u64 {
    setting(name)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn establish(head: &RequestHead) -> Result<Principal, Denial> {
    let header = head
        .headers
        .iter()
        .find(|(name, _)| name == "authorization")
        .map(|(_, v)| v.as_str());
    let Some(header) = header else {
        return anonymous(head).ok_or_else(|| {
            unauthorized("Missing API key. Send `Authorization: Bearer <key>`.", None)
        });
    };
    if header.len() > MAX_CREDENTIAL_BYTES {
        return Err(unauthorized(
            "Credential too large.",
            Some("invalid_request"),
        ));
    }
    let Some(token) = bearer_token(header) else {
        return Err(unauthorized(
            "Authorization header must use the Bearer scheme.",
            Some("invalid_request"),
        ));
    };
    if !token.starts_with("sk-") {
        return from_jwt(token);
    }
    let records = match config::get("api_keys") {
        Ok(spec) => api_key::parse_records(spec.as_deref().unwrap_or("")),
        Err(_) => return Err(internal("auth configuration unavailable")),
    };
    let records = records.map_err(|e| internal(&e.to_string()))?;
    if let Some(record) = api_key::find(&records, token) {
        return Ok(Principal {
            subject: record.subject.clone(),
            tier: to_wit(record.tier),
            key_id: Some(api_key::key_id(&record.hash).to_string()),
            scopes: Vec::new(),
        });
    }
    let settings = issued::Settings {
        origin_url: setting("origin_url").unwrap_or_default(),
        edge_secret: setting("edge_secret").unwrap_or_default(),
        cache_seconds: number_setting("api_key_cache_seconds", 30),
        negative_cache_seconds: number_setting("api_key_negative_cache_seconds", 5),
    };
    match issued::lookup(&api_key::hash(token), &settings, now_ms()) {
        Ok(Some(key)) => Ok(Principal {
            subject: key.subject,
            tier: to_wit(key.tier),
            key_id: Some(key.key_id),
            scopes: without_reserved(key.scopes),
        }),
        Ok(None) => Err(unauthorized(
            "Incorrect API key provided.",
            Some("invalid_token"),
        )),
        Err(issued::Unavailable(reason)) => {
            eprintln!("event=api_key_lookup_failed reason={reason:?}");
            Err(unavailable())
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

fn unavailable() -> Denial {
    Denial {
        status: 503,
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("retry-after".into(), "1".into()),
        ],
        body: errors::openai_error(
            "API keys cannot be checked right now.",
            "server_error",
            Some("auth_unavailable"),
            None,
        )
        .to_string()
        .into_bytes(),
    }
}

fn from_jwt(token: &str) -> Result<Principal, Denial> {
    let nonempty = |name: &str| setting(name).filter(|v| !v.trim().is_empty());
    let settings = jwt::Settings {
        hs256_secret: nonempty("jwt_hs256_secret"),
        jwks_url: nonempty("jwks_url"),
        issuer: nonempty("jwt_issuer"),
        audience: nonempty("jwt_audience"),
        leeway_seconds: number_setting("jwt_leeway_seconds", 30),
        tier_claim: nonempty("jwt_tier_claim").unwrap_or_else(|| "tier".into()),
        jwks_cache_seconds: number_setting("jwks_cache_seconds", 600),
        jwks_refresh_interval_seconds: number_setting("jwks_refresh_interval_seconds", 30),
    };
    let verified = jwt::verify(token, &settings, now_ms())
        .map_err(|jwt::Refusal(message)| unauthorized(&message, Some("invalid_token")))?;
    let tier = match verified.tier.as_deref() {
        None => Tier::Free,
        Some(name) => identity::Tier::parse(name)
            .map(to_wit)
            .ok_or_else(|| unauthorized("Token names an unknown tier.", Some("invalid_token")))?,
    };
    Ok(Principal {
        subject: verified.subject,
        tier,
        key_id: Some(verified.key_id),
        scopes: without_reserved(verified.scopes),
    })
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The principal of a caller without credentials, on a route open to them.
fn anonymous(head: &RequestHead) -> Option<Principal> {
    let open = route::parse_list(&setting("anonymous_routes").unwrap_or_default()).ok()?;
    let ip = head.client_ip.as_deref()?;
    route::any_matches(&open, &head.method, &head.path).then(|| Principal {
        subject: format!("anonymous:{ip}"),
        tier: Tier::Free,
        key_id: None,
        scopes: vec![identity::ANONYMOUS_SCOPE.to_string()],
    })
}

fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn to_wit(tier: identity::Tier) -> Tier {
    match tier {
        identity::Tier::Free => Tier::Free,
        identity::Tier::Premium => Tier::Premium,
        identity::Tier::Admin => Tier::Admin,
    }
}

/// 401 with an RFC 6750 challenge; `error` names what was wrong with a presented token.
fn unauthorized(message: &str, error: Option<&str>) -> Denial {
    let challenge = match error {
        Some(error) => format!("Bearer realm=\"sluice\", error=\"{error}\""),
        None => "Bearer realm=\"sluice\"".to_string(),
    };
    Denial {
        status: 401,
        headers: vec![
            ("www-authenticate".into(), challenge),
            ("content-type".into(), "application/json".into()),
        ],
        body: errors::openai_error(
            message,
            "invalid_request_error",
            Some("invalid_api_key"),
            None,
        )
        .to_string()
        .into_bytes(),
    }
}

fn forbidden() -> Denial {
    Denial {
        status: 403,
        headers: vec![("content-type".into(), "application/json".into())],
        body: errors::openai_error(
            "This route needs the admin tier.",
            "permission_error",
            Some("forbidden"),
            None,
        )
        .to_string()
        .into_bytes(),
    }
}

fn internal(message: &str) -> Denial {
    Denial {
        status: 500,
        headers: vec![("content-type".into(), "application/json".into())],
        body: errors::openai_error(message, "server_error", None, None)
            .to_string()
            .into_bytes(),
    }
}

export!(Auth);
