//! What every edge component shares, written once: the `sluice:types`
//! bindings (each component maps the interface to this copy with
//! wit-bindgen's `with`), refusals in OpenAI's shape, the tier mapping
//! between the WIT enum and `sluice_core::identity`, and the clock.

wit_bindgen::generate!({ world: "shared-types", path: "../../wit", generate_all });

pub use sluice::types::types;

use sluice_core::settings::SettingsError;
use sluice_core::{errors, identity};
use std::sync::OnceLock;

/// Settings read once per instance and kept: the variables cannot change
/// while the application runs, so an instance that serves many requests
/// (sluice-host's reuse) parses them once, and one instantiated per request
/// (Spin) reads them as before. Nothing of a request is ever kept this way.
pub fn kept<T: Send + Sync + 'static>(
    cell: &'static OnceLock<Result<T, SettingsError>>,
    load: impl FnOnce() -> Result<T, SettingsError>,
) -> Result<&'static T, SettingsError> {
    cell.get_or_init(load).as_ref().map_err(Clone::clone)
}
use types::{Denial, Principal, Tier};

impl Denial {
    /// `status` with an OpenAI-shaped error body.
    pub fn openai(
        status: u16,
        message: &str,
        kind: &str,
        code: Option<&str>,
        param: Option<&str>,
    ) -> Denial {
        Denial::json(
            status,
            errors::openai_error(message, kind, code, param).to_string(),
        )
    }

    /// 500: the component cannot do its job (a bad variable, say).
    pub fn server_error(message: &str) -> Denial {
        Denial::openai(500, message, "server_error", None, None)
    }

    /// 503 with `Retry-After: 1`: a dependency is down; try again shortly.
    pub fn unavailable(message: &str, code: &str) -> Denial {
        Denial::openai(503, message, "server_error", Some(code), None)
            .with_header("retry-after", "1")
    }

    /// 429 in OpenAI's rate-limit shape, with `Retry-After` and the
    /// rate-limit headers of the policies that applied.
    pub fn rate_limited(retry_after_seconds: u64, headers: Vec<(String, String)>) -> Denial {
        Denial::json(429, errors::rate_limited(retry_after_seconds).to_string())
            .limited(retry_after_seconds, headers)
    }

    /// 429 for a token limit, in the shape OpenAI's own token limits answer
    /// (`type: tokens`), naming the limit, what is left and what was asked.
    pub fn tokens_limited(
        message: &str,
        retry_after_seconds: u64,
        headers: Vec<(String, String)>,
    ) -> Denial {
        Denial::json(
            429,
            errors::tokens_limited(message, retry_after_seconds).to_string(),
        )
        .limited(retry_after_seconds, headers)
    }

    fn limited(self, retry_after_seconds: u64, headers: Vec<(String, String)>) -> Denial {
        let mut denial = self.with_header("retry-after", &retry_after_seconds.to_string());
        denial.headers.extend(headers);
        denial
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Denial {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    fn json(status: u16, body: String) -> Denial {
        Denial {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.into_bytes(),
        }
    }
}

#[expect(
    clippy::derivable_impls,
    reason = "wit-bindgen generates the type; a derive would apply to every type it generates"
)]
impl Default for types::TokenLimits {
    fn default() -> types::TokenLimits {
        types::TokenLimits {
            key: None,
            user: None,
        }
    }
}

impl From<identity::Tier> for Tier {
    fn from(tier: identity::Tier) -> Tier {
        match tier {
            identity::Tier::Free => Tier::Free,
            identity::Tier::Premium => Tier::Premium,
            identity::Tier::Admin => Tier::Admin,
        }
    }
}

impl From<Tier> for identity::Tier {
    fn from(tier: Tier) -> identity::Tier {
        match tier {
            Tier::Free => identity::Tier::Free,
            Tier::Premium => identity::Tier::Premium,
            Tier::Admin => identity::Tier::Admin,
        }
    }
}

impl Principal {
    /// The identity the origin receives, signed, for this principal.
    pub fn identity(&self) -> identity::Identity {
        identity::Identity {
            sub: self.subject.clone(),
            tier: self.tier.into(),
            kid: self.key_id.clone(),
            scopes: self.scopes.clone(),
        }
    }
}

/// Milliseconds since the Unix epoch (WASI's wall clock).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Seconds since the Unix epoch: the edge signature's timestamp.
pub fn unix_now() -> u64 {
    now_ms() / 1000
}
