//! API keys issued through the origin's admin API: looked up at the origin by
//! hash (a signed call only the edge can make), and the answer, found or not,
//! cached in the key-value store for every edge instance. A revocation
//! therefore reaches the edge within `api_key_cache_seconds` (default 30);
//! an unknown key is asked about again after `api_key_negative_cache_seconds`
//! (default 5), so a key created a moment ago works within that time.
//!
//! When the origin cannot answer and no fresh answer is cached, the request is
//! refused with 503 rather than admitted on an old answer: a revoked key must
//! not outlive its bound because the origin is down.

use crate::fetch;
use crate::wasi::keyvalue::store;
use serde::{Deserialize, Serialize};
use sluice_core::settings::OriginSettings;
use sluice_core::{edge_signature, identity};

/// What the origin says about an active key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Issued {
    pub subject: String,
    pub tier: identity::Tier,
    pub key_id: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub token_limits: TokenLimits,
}

/// The key's and its user's own token limits (`N/period`), set by an admin.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TokenLimits {
    pub key: Option<String>,
    pub user: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Cached {
    issued: Option<Issued>,
    checked_at_ms: u64,
}

pub struct Settings {
    pub origin: OriginSettings,
    pub cache_seconds: u64,
    pub negative_cache_seconds: u64,
}

/// The origin could not be asked; the caller answers 503.
pub struct Unavailable(pub String);

pub fn lookup(hash: &str, settings: &Settings, now_ms: u64) -> Result<Option<Issued>, Unavailable> {
    let bucket = store::open("default").ok();
    let cache_key = format!("auth:key:{hash}");
    let cached: Option<Cached> = bucket
        .as_ref()
        .and_then(|b| b.get(&cache_key).ok().flatten())
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    if let Some(cached) = cached {
        let ttl_s = if cached.issued.is_some() {
            settings.cache_seconds
        } else {
            settings.negative_cache_seconds
        };
        if now_ms.saturating_sub(cached.checked_at_ms) < ttl_s.saturating_mul(1000) {
            return Ok(cached.issued);
        }
    }
    let issued = ask_origin(hash, settings, now_ms)?;
    if let (Some(bucket), Ok(bytes)) = (
        &bucket,
        serde_json::to_vec(&Cached {
            issued: issued.clone(),
            checked_at_ms: now_ms,
        }),
    ) {
        let _ = bucket.set(&cache_key, &bytes);
    }
    Ok(issued)
}

fn ask_origin(hash: &str, settings: &Settings, now_ms: u64) -> Result<Option<Issued>, Unavailable> {
    let path = format!("/internal/v1/keys/{hash}");
    let caller = identity::Identity {
        sub: "sluice-edge".into(),
        tier: identity::Tier::Admin,
        kid: None,
        scopes: vec![identity::EDGE_INTERNAL_SCOPE.into()],
    };
    let headers = edge_signature::signed_headers(
        settings.origin.edge_secret.as_bytes(),
        "GET",
        &path,
        now_ms / 1000,
        &caller.encode(),
    );
    let url = format!("{}{path}", settings.origin.origin_url);
    let fetched = fetch::get_with(&url, &headers).map_err(Unavailable)?;
    match fetched.status {
        200 => serde_json::from_slice(&fetched.body)
            .map(Some)
            .map_err(|e| Unavailable(format!("origin key lookup answered {e}"))),
        404 => Ok(None),
        status => Err(Unavailable(format!("origin key lookup answered {status}"))),
    }
}
