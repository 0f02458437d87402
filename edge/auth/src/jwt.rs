//! Bearer JWTs: HS256 with a shared secret, RS256 and ES256 with keys from a
//! JWKS URL. Signature and claim checks are jsonwebtoken's (RustCrypto, so it
//! builds for wasm32); what is ours is which key may verify which token.
//!
//! - The algorithm must be one this edge is configured for: HS256 only with
//!   `jwt_hs256_secret`, RS256/ES256 only with `jwks_url`. `alg: none` and
//!   anything else is refused before any key is looked at.
//! - HS256 tokens are verified with the configured secret only, never with a
//!   JWKS key, so an HS256 token "signed" with a public RSA key (algorithm
//!   confusion) cannot verify.
//! - RS256/ES256 tokens must name a `kid` that the JWKS holds with a matching
//!   key type; an unknown `kid` refreshes the JWKS at most once per
//!   `jwks_refresh_interval_seconds`, so a flood of forged kids cannot turn the
//!   edge into a load generator against the identity provider.

use crate::fetch;
use crate::wasi::keyvalue::store;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

/// Read from variables by `sluice_core::settings`; JWTs are refused when
/// neither a secret nor a JWKS URL is set.
pub use sluice_core::settings::JwtSettings as Settings;

/// Why a token was refused; the message goes to the client, so it names the
/// rule, never key material.
#[derive(Debug)]
pub struct Refusal(pub String);

/// The verified identity in a token.
pub struct Verified {
    pub subject: String,
    pub tier: Option<String>,
    pub scopes: Vec<String>,
    pub key_id: String,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    scp: Option<Vec<String>>,
    #[serde(flatten)]
    rest: serde_json::Map<String, serde_json::Value>,
}

pub fn verify(token: &str, settings: &Settings, now_ms: u64) -> Result<Verified, Refusal> {
    let header =
        jsonwebtoken::decode_header(token).map_err(|_| Refusal("Malformed token.".into()))?;
    let (key, key_id) = match header.alg {
        Algorithm::HS256 => {
            let secret = settings
                .hs256_secret
                .as_deref()
                .ok_or_else(|| Refusal("HS256 tokens are not accepted here.".into()))?;
            (
                DecodingKey::from_secret(secret.as_bytes()),
                "hs256".to_string(),
            )
        }
        Algorithm::RS256 | Algorithm::ES256 => {
            let url = settings
                .jwks_url
                .as_deref()
                .ok_or_else(|| Refusal("Signed tokens are not accepted here.".into()))?;
            let kid = header
                .kid
                .as_deref()
                .ok_or_else(|| Refusal("Token has no key id (kid).".into()))?;
            let jwk = find_key(url, kid, settings, now_ms)?
                .ok_or_else(|| Refusal("Unknown key id (kid).".into()))?;
            if !fits(&jwk, header.alg) {
                return Err(Refusal("Key id does not fit the token's algorithm.".into()));
            }
            let key = DecodingKey::from_jwk(&jwk)
                .map_err(|_| Refusal("Unusable key in the key set.".into()))?;
            (key, kid.to_string())
        }
        _ => return Err(Refusal("Token algorithm is not accepted.".into())),
    };
    let mut validation = Validation::new(header.alg);
    validation.leeway = settings.leeway_seconds;
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp", "sub"]);
    if let Some(issuer) = &settings.issuer {
        validation.set_issuer(&[issuer]);
    }
    match &settings.audience {
        Some(audience) => validation.set_audience(&[audience]),
        None => validation.validate_aud = false,
    }
    let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|e| {
        use jsonwebtoken::errors::ErrorKind;
        Refusal(
            match e.kind() {
                ErrorKind::ExpiredSignature => "Token has expired.",
                ErrorKind::ImmatureSignature => "Token is not valid yet.",
                ErrorKind::InvalidIssuer => "Token issuer is not accepted.",
                ErrorKind::InvalidAudience => "Token audience is not accepted.",
                ErrorKind::MissingRequiredClaim(_) => "Token lacks a required claim.",
                ErrorKind::InvalidSignature => "Token signature does not verify.",
                _ => "Token is not valid.",
            }
            .into(),
        )
    })?;
    let claims = data.claims;
    let tier = match claims.rest.get(&settings.tier_claim) {
        None => None,
        Some(serde_json::Value::String(tier)) => Some(tier.clone()),
        Some(_) => return Err(Refusal("Tier claim is not a string.".into())),
    };
    let scopes = match (claims.scope, claims.scp) {
        (Some(scope), _) => scope.split_whitespace().map(str::to_string).collect(),
        (None, Some(scp)) => scp,
        (None, None) => Vec::new(),
    };
    Ok(Verified {
        subject: claims.sub,
        tier,
        scopes,
        key_id: format!("jwt:{key_id}"),
    })
}

/// RS256 needs an RSA key, ES256 a P-256 key; a key that states its own
/// algorithm must state this one.
fn fits(jwk: &Jwk, alg: Algorithm) -> bool {
    let declared = jwk.common.key_algorithm.map(|a| a.to_string());
    if declared.is_some_and(|d| d != format!("{alg:?}")) {
        return false;
    }
    match (&jwk.algorithm, alg) {
        (AlgorithmParameters::RSA(_), Algorithm::RS256) => true,
        (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES256) => {
            ec.curve == EllipticCurve::P256
        }
        _ => false,
    }
}

/// The JWKS as cached in the key-value store, shared by every edge instance.
#[derive(Serialize, Deserialize)]
struct CachedKeys {
    fetched_at_ms: u64,
    keys: JwkSet,
}

fn cache_key(url: &str) -> String {
    format!("auth:jwks:{}", sluice_core::cache_entry::subject_tag(url))
}

/// The key for `kid`: from the cached JWKS while fresh, else fetched. An
/// unknown `kid` triggers one refresh per interval.
fn find_key(
    url: &str,
    kid: &str,
    settings: &Settings,
    now_ms: u64,
) -> Result<Option<Jwk>, Refusal> {
    let bucket = store::open("default").ok();
    let key = cache_key(url);
    let cached: Option<CachedKeys> = bucket
        .as_ref()
        .and_then(|b| b.get(&key).ok().flatten())
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    let max_age_ms = settings.jwks_cache_seconds.saturating_mul(1000);
    let refresh_gap_ms = settings.jwks_refresh_interval_seconds.saturating_mul(1000);
    if let Some(cached) = &cached {
        let fresh = now_ms.saturating_sub(cached.fetched_at_ms) < max_age_ms;
        if fresh && let Some(jwk) = cached.keys.find(kid) {
            return Ok(Some(jwk.clone()));
        }
        // Known to be stale or missing the kid: refresh, unless done just now.
        if now_ms.saturating_sub(cached.fetched_at_ms) < refresh_gap_ms {
            return Ok(cached.keys.find(kid).cloned());
        }
    }
    match fetch::get(url).and_then(|body| {
        serde_json::from_slice::<JwkSet>(&body).map_err(|e| format!("JWKS is not a key set: {e}"))
    }) {
        Ok(keys) => {
            let found = keys.find(kid).cloned();
            if let (Some(bucket), Ok(bytes)) = (
                &bucket,
                serde_json::to_vec(&CachedKeys {
                    fetched_at_ms: now_ms,
                    keys,
                }),
            ) {
                let _ = bucket.set(&key, &bytes);
            }
            Ok(found)
        }
        Err(e) => {
            eprintln!("event=jwks_fetch_failed error={e:?}");
            // Keys we already have stay usable while the provider is down.
            match cached {
                Some(cached) => Ok(cached.keys.find(kid).cloned()),
                None => Err(Refusal("Signing keys are unavailable.".into())),
            }
        }
    }
}
