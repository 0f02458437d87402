//! Auth policy: turns the `Authorization` header into a principal.
//!
//! API keys (`sk-...`) are configured as SHA-256 hashes in the `api_keys`
//! variable (`hash:subject:tier`, comma separated) and compared in constant time.

wit_bindgen::generate!({ world: "auth-policy", path: "../../wit", generate_all });

use exports::sluice::edge::auth::Guest;
use sluice::edge::types::{Denial, Principal, RequestHead, Tier};
use sluice_core::{api_key, errors, identity};
use wasi::config::store as config;

/// Longest credential accepted; anything longer is refused before hashing.
const MAX_CREDENTIAL_BYTES: usize = 4096;

struct Auth;

impl Guest for Auth {
    fn authenticate(head: RequestHead) -> Result<Principal, Denial> {
        let header = head
            .headers
            .iter()
            .find(|(name, _)| name == "authorization")
            .map(|(_, v)| v.as_str());
        let Some(header) = header else {
            return Err(unauthorized(
                "Missing API key. Send `Authorization: Bearer <key>`.",
                None,
            ));
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
        let records = match config::get("api_keys") {
            Ok(spec) => api_key::parse_records(spec.as_deref().unwrap_or("")),
            Err(_) => return Err(internal("auth configuration unavailable")),
        };
        let records = records.map_err(|e| internal(&e.to_string()))?;
        match api_key::find(&records, token) {
            Some(record) => Ok(Principal {
                subject: record.subject.clone(),
                tier: to_wit(record.tier),
                key_id: Some(api_key::key_id(&record.hash).to_string()),
                scopes: Vec::new(),
            }),
            None => Err(unauthorized(
                "Incorrect API key provided.",
                Some("invalid_token"),
            )),
        }
    }
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
