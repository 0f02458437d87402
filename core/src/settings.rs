//! The edge components' settings, typed. Each component reads its variables
//! (`spin.toml`'s `[variables]`, through `wasi:config`) into one struct here,
//! and every default is written once, in [`VARIABLES`]: `spin.toml` and the
//! README's variable table are checked against it by this crate's tests.
//!
//! A variable that is unset or empty takes its default (so an empty
//! `admin_routes` cannot switch the admin check off by accident); one that
//! does not parse is an error naming it, which the component answers as 500.

use crate::api_key::{self, KeyRecord};
use crate::cache_entry::{self, Route};
use crate::client_ip::{ClientIpHeader, parse_cidrs};
use crate::cors::{self, CorsSettings};
use crate::rate_policy::{FailMode, PolicySpec};
use crate::route::{self, RoutePattern};

/// A variable an edge component reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Variable {
    pub name: &'static str,
    /// `None`: required, no default (the manifest must give it a value).
    pub default: Option<&'static str>,
}

const fn var(name: &'static str, default: &'static str) -> Variable {
    Variable {
        name,
        default: Some(default),
    }
}

/// Every variable of the edge, with its default: the one place defaults live.
pub const VARIABLES: &[Variable] = &[
    var("origin_url", "http://127.0.0.1:8081"),
    var("trusted_proxies", ""),
    var("client_ip_header", "x-forwarded-for"),
    var("max_request_body_bytes", "1048576"),
    var("max_ai_request_body_bytes", "33554432"),
    var("max_request_headers", "100"),
    var("max_request_header_bytes", "32768"),
    var("cors_allowed_origins", ""),
    var("cors_allow_credentials", "false"),
    var("cors_max_age_seconds", "600"),
    Variable {
        name: "edge_secret",
        default: None,
    },
    var("api_keys", ""),
    var("api_key_cache_seconds", "30"),
    var("api_key_negative_cache_seconds", "5"),
    var("jwt_hs256_secret", ""),
    var("jwks_url", ""),
    var("jwt_issuer", ""),
    var("jwt_audience", ""),
    var("jwt_leeway_seconds", "30"),
    var("jwt_tier_claim", "tier"),
    var("jwks_cache_seconds", "600"),
    var("jwks_refresh_interval_seconds", "30"),
    var("anonymous_routes", ""),
    var("admin_routes", "* /v1/admin/**"),
    var("rate_limit_free", "60/1m"),
    var("rate_limit_premium", "300/1m"),
    var("rate_limit_admin", "unlimited"),
    var("rate_limit_ip", "1000/15m"),
    var("rate_limit_anonymous_ai", "50/15m"),
    var(
        "ai_routes",
        "POST /v1/chat/completions, POST /v1/messages, POST /v1/responses, POST /v1/embeddings, \
         POST /v1/jobs, POST /generate, POST /v1/conversations/*/messages",
    ),
    var("rate_limit_fail_mode", "open"),
    var("tokens_free", "unlimited"),
    var("tokens_premium", "unlimited"),
    var("tokens_admin", "unlimited"),
    var(
        "token_routes",
        "POST /v1/chat/completions, POST /v1/messages, POST /v1/responses, POST /v1/embeddings, \
         POST /v1/jobs, POST /generate, POST /v1/conversations/*/messages",
    ),
    var("token_default_output_tokens", "4096"),
    var("token_image_tokens", "2500"),
    var(
        "cache_routes",
        "GET /v1/me=600, GET /v1/models=300, GET /v1/conversations=300, \
         GET /v1/conversations/*/messages=300, POST /v1/chat/completions=3600",
    ),
    var(
        "cache_invalidate_on",
        "POST /v1/conversations, POST /v1/conversations/**, PATCH /v1/conversations/**, \
         DELETE /v1/conversations/**",
    ),
    var("cache_max_entry_bytes", "1048576"),
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("edge variable `{name}`: {reason}")]
pub struct SettingsError {
    pub name: &'static str,
    pub reason: String,
}

/// Reads variables through `get` (the component's `wasi:config` lookup).
struct Reader<F> {
    get: F,
}

impl<F: Fn(&str) -> Option<String>> Reader<F> {
    /// The value, or the default when unset or blank.
    fn text(&self, name: &'static str) -> Result<String, SettingsError> {
        if let Some(value) = (self.get)(name).filter(|v| !v.trim().is_empty()) {
            return Ok(value);
        }
        let variable = VARIABLES.iter().find(|v| v.name == name);
        match variable.and_then(|v| v.default) {
            Some(default) => Ok(default.to_string()),
            None => Err(SettingsError {
                name,
                reason: "is not set".into(),
            }),
        }
    }

    /// `None` when blank (an optional feature left off).
    fn optional(&self, name: &'static str) -> Result<Option<String>, SettingsError> {
        Ok(Some(self.text(name)?).filter(|v| !v.trim().is_empty()))
    }

    fn parsed<T, E: std::fmt::Display>(
        &self,
        name: &'static str,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Result<T, SettingsError> {
        parse(self.text(name)?.trim()).map_err(|e| SettingsError {
            name,
            reason: e.to_string(),
        })
    }

    fn number<T: std::str::FromStr>(&self, name: &'static str) -> Result<T, SettingsError>
    where
        T::Err: std::fmt::Display,
    {
        self.parsed(name, str::parse)
    }

    fn routes(&self, name: &'static str) -> Result<Vec<RoutePattern>, SettingsError> {
        self.parsed(name, route::parse_list)
    }

    fn policy(&self, name: &'static str) -> Result<PolicySpec, SettingsError> {
        self.parsed(name, PolicySpec::parse)
    }
}

/// Where the edge forwards and how it signs.
#[derive(Clone)]
pub struct OriginSettings {
    /// `scheme://host:port`, no trailing slash.
    pub origin_url: String,
    pub edge_secret: String,
}

impl std::fmt::Debug for OriginSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OriginSettings")
            .field("origin_url", &self.origin_url)
            .field("edge_secret", &"[redacted]")
            .finish()
    }
}

impl OriginSettings {
    pub fn load(get: impl Fn(&str) -> Option<String>) -> Result<OriginSettings, SettingsError> {
        let reader = Reader { get };
        Ok(OriginSettings {
            origin_url: reader.text("origin_url")?.trim_end_matches('/').to_string(),
            edge_secret: reader.text("edge_secret")?,
        })
    }
}

/// Who stands in front of the edge, and where it names the client.
#[derive(Debug, Clone)]
pub struct ClientIpSettings {
    /// Peers whose client-address header is believed (none by default).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub header: ClientIpHeader,
}

impl ClientIpSettings {
    pub fn load(get: impl Fn(&str) -> Option<String>) -> Result<ClientIpSettings, SettingsError> {
        let reader = Reader { get };
        let trusted_proxies = match reader.optional("trusted_proxies")? {
            Some(spec) => parse_cidrs(&spec).map_err(|reason| SettingsError {
                name: "trusted_proxies",
                reason,
            })?,
            None => Vec::new(),
        };
        Ok(ClientIpSettings {
            trusted_proxies,
            header: reader.parsed("client_ip_header", ClientIpHeader::parse)?,
        })
    }
}

/// What the gateway reads of a request before any policy sees it. A body is
/// read whole up to `max_body_bytes`; on `ai_routes` a larger one, up to
/// `max_ai_body_bytes`, streams to the origin instead of being held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLimits {
    pub max_body_bytes: usize,
    pub max_ai_body_bytes: usize,
    pub ai_routes: Vec<RoutePattern>,
    pub max_headers: usize,
    pub max_header_bytes: usize,
}

impl RequestLimits {
    pub fn load(get: impl Fn(&str) -> Option<String>) -> Result<RequestLimits, SettingsError> {
        let reader = Reader { get };
        Ok(RequestLimits {
            max_body_bytes: reader.number("max_request_body_bytes")?,
            max_ai_body_bytes: reader.number("max_ai_request_body_bytes")?,
            ai_routes: reader.routes("ai_routes")?,
            max_headers: reader.number("max_request_headers")?,
            max_header_bytes: reader.number("max_request_header_bytes")?,
        })
    }

    /// The largest body a request may have, and the variable that sets it.
    pub fn body_limit(&self, method: &str, path: &str) -> (usize, &'static str) {
        if self.max_ai_body_bytes > self.max_body_bytes
            && route::any_matches(&self.ai_routes, method, path)
        {
            (self.max_ai_body_bytes, "max_ai_request_body_bytes")
        } else {
            (self.max_body_bytes, "max_request_body_bytes")
        }
    }
}

impl CorsSettings {
    pub fn load(get: impl Fn(&str) -> Option<String>) -> Result<CorsSettings, SettingsError> {
        let reader = Reader { get };
        let allow_credentials = reader.parsed("cors_allow_credentials", str::parse::<bool>)?;
        Ok(CorsSettings {
            allowed_origins: reader.parsed("cors_allowed_origins", |spec| {
                cors::parse_origins(spec, allow_credentials)
            })?,
            allow_credentials,
            max_age_seconds: reader.number("cors_max_age_seconds")?,
        })
    }
}

/// The auth policy's variables.
#[derive(Clone)]
pub struct AuthSettings {
    pub api_keys: Vec<KeyRecord>,
    pub api_key_cache_seconds: u64,
    pub api_key_negative_cache_seconds: u64,
    pub anonymous_routes: Vec<RoutePattern>,
    pub admin_routes: Vec<RoutePattern>,
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field("api_keys", &self.api_keys.len())
            .field("api_key_cache_seconds", &self.api_key_cache_seconds)
            .finish_non_exhaustive()
    }
}

/// How bearer JWTs are checked; read only for a request that presents one.
#[derive(Clone)]
pub struct JwtSettings {
    /// HS256 with this secret; `None`: HS256 refused.
    pub hs256_secret: Option<String>,
    /// RS256/ES256 with keys from this JWKS; `None`: refused.
    pub jwks_url: Option<String>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub leeway_seconds: u64,
    pub tier_claim: String,
    pub jwks_cache_seconds: u64,
    pub jwks_refresh_interval_seconds: u64,
}

impl std::fmt::Debug for JwtSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSettings")
            .field(
                "hs256_secret",
                &self.hs256_secret.as_ref().map(|_| "[redacted]"),
            )
            .field("jwks_url", &self.jwks_url)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl AuthSettings {
    pub fn load(get: impl Fn(&str) -> Option<String>) -> Result<AuthSettings, SettingsError> {
        let reader = Reader { get };
        Ok(AuthSettings {
            api_keys: reader.parsed("api_keys", api_key::parse_records)?,
            api_key_cache_seconds: reader.number("api_key_cache_seconds")?,
            api_key_negative_cache_seconds: reader.number("api_key_negative_cache_seconds")?,
            anonymous_routes: reader.routes("anonymous_routes")?,
            admin_routes: reader.routes("admin_routes")?,
        })
    }
}

impl JwtSettings {
    pub fn load(get: impl Fn(&str) -> Option<String>) -> Result<JwtSettings, SettingsError> {
        let reader = Reader { get };
        Ok(JwtSettings {
            hs256_secret: reader.optional("jwt_hs256_secret")?,
            jwks_url: reader.optional("jwks_url")?,
            issuer: reader.optional("jwt_issuer")?,
            audience: reader.optional("jwt_audience")?,
            leeway_seconds: reader.number("jwt_leeway_seconds")?,
            tier_claim: reader.text("jwt_tier_claim")?.trim().to_string(),
            jwks_cache_seconds: reader.number("jwks_cache_seconds")?,
            jwks_refresh_interval_seconds: reader.number("jwks_refresh_interval_seconds")?,
        })
    }
}

/// The rate-limit policy's variables.
#[derive(Debug, Clone)]
pub struct RateLimitSettings {
    pub free: PolicySpec,
    pub premium: PolicySpec,
    pub admin: PolicySpec,
    pub ip: PolicySpec,
    pub anonymous_ai: PolicySpec,
    pub ai_routes: Vec<RoutePattern>,
    /// For policies without their own `fail=`.
    pub fail_mode: FailMode,
    pub tokens: TokenSettings,
}

/// Token limits: per principal by tier (a key's or user's own limit, carried
/// by the principal, applies beside or instead), on `routes`.
#[derive(Debug, Clone)]
pub struct TokenSettings {
    pub free: PolicySpec,
    pub premium: PolicySpec,
    pub admin: PolicySpec,
    pub routes: Vec<RoutePattern>,
    /// The output a request without `max_tokens` is admitted for.
    pub default_output_tokens: u64,
    /// What an image or document part is admitted for.
    pub image_tokens: u64,
}

impl RateLimitSettings {
    pub fn load(get: impl Fn(&str) -> Option<String>) -> Result<RateLimitSettings, SettingsError> {
        let reader = Reader { get };
        Ok(RateLimitSettings {
            free: reader.policy("rate_limit_free")?,
            premium: reader.policy("rate_limit_premium")?,
            admin: reader.policy("rate_limit_admin")?,
            ip: reader.policy("rate_limit_ip")?,
            anonymous_ai: reader.policy("rate_limit_anonymous_ai")?,
            ai_routes: reader.routes("ai_routes")?,
            fail_mode: reader.parsed("rate_limit_fail_mode", |mode| {
                FailMode::parse(mode).ok_or("must be `open` or `closed`")
            })?,
            tokens: TokenSettings {
                free: reader.policy("tokens_free")?,
                premium: reader.policy("tokens_premium")?,
                admin: reader.policy("tokens_admin")?,
                routes: reader.routes("token_routes")?,
                default_output_tokens: reader.number("token_default_output_tokens")?,
                image_tokens: reader.number("token_image_tokens")?,
            },
        })
    }
}

/// The cache policy's variables for a lookup (the entry size limit is read
/// only when a response is offered: [`CacheSettings::max_entry_bytes`]).
#[derive(Debug, Clone)]
pub struct CacheSettings {
    pub routes: Vec<Route>,
    pub invalidate_on: Vec<RoutePattern>,
}

impl CacheSettings {
    pub fn load(get: impl Fn(&str) -> Option<String>) -> Result<CacheSettings, SettingsError> {
        let reader = Reader { get };
        Ok(CacheSettings {
            routes: reader.parsed("cache_routes", cache_entry::parse_routes)?,
            invalidate_on: reader.routes("cache_invalidate_on")?,
        })
    }

    /// Larger responses are not stored.
    pub fn max_entry_bytes(get: impl Fn(&str) -> Option<String>) -> Result<usize, SettingsError> {
        Reader { get }.number("cache_max_entry_bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn defaults_only(name: &str) -> Option<String> {
        (name == "edge_secret").then(|| "secret".to_string())
    }

    #[test]
    fn every_default_parses() {
        OriginSettings::load(defaults_only).unwrap();
        let client_ip = ClientIpSettings::load(defaults_only).unwrap();
        assert!(client_ip.trusted_proxies.is_empty());
        assert_eq!(client_ip.header, ClientIpHeader::XForwardedFor);
        assert_eq!(
            RequestLimits::load(defaults_only).unwrap().max_body_bytes,
            1 << 20
        );
        assert!(!CorsSettings::load(defaults_only).unwrap().enabled());
        let auth = AuthSettings::load(defaults_only).unwrap();
        assert!(
            JwtSettings::load(defaults_only)
                .unwrap()
                .hs256_secret
                .is_none()
        );
        assert!(route::any_matches(
            &auth.admin_routes,
            "GET",
            "/v1/admin/keys"
        ));
        let limits = RateLimitSettings::load(defaults_only).unwrap();
        assert_eq!(limits.ai_routes.len(), 7);
        assert_eq!(limits.fail_mode, FailMode::Open);
        assert!(limits.admin.quota.is_none());
        assert!(limits.tokens.free.quota.is_none());
        assert_eq!(limits.tokens.routes.len(), 7);
        let cache = CacheSettings::load(defaults_only).unwrap();
        assert_eq!(
            CacheSettings::max_entry_bytes(defaults_only).unwrap(),
            1 << 20
        );
        assert!(
            cache
                .routes
                .iter()
                .any(|r| r.matches("POST", "/v1/chat/completions"))
        );
    }

    #[test]
    fn blank_takes_the_default_and_bad_values_name_the_variable() {
        let blank = |name: &str| match name {
            "edge_secret" => Some("s".to_string()),
            _ => Some("  ".to_string()),
        };
        let auth = AuthSettings::load(blank).unwrap();
        assert!(!auth.admin_routes.is_empty());
        let bad = |name: &str| (name == "api_key_cache_seconds").then(|| "soon".to_string());
        let error = AuthSettings::load(bad).err().unwrap();
        assert_eq!(error.name, "api_key_cache_seconds");
        let missing = OriginSettings::load(|_| None).err().unwrap();
        assert_eq!(missing.name, "edge_secret");
        let bad_mode = |name: &str| (name == "rate_limit_fail_mode").then(|| "maybe".into());
        assert_eq!(
            RateLimitSettings::load(bad_mode).err().unwrap().name,
            "rate_limit_fail_mode"
        );
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let get = |name: &str| match name {
            "edge_secret" => Some("edge-very-secret".to_string()),
            "jwt_hs256_secret" => Some("jwt-very-secret".to_string()),
            _ => None,
        };
        let shown = format!(
            "{:?} {:?} {:?}",
            OriginSettings::load(get).unwrap(),
            AuthSettings::load(get).unwrap(),
            JwtSettings::load(get).unwrap()
        );
        assert!(!shown.contains("very-secret"), "{shown}");
    }

    fn repo_file(name: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// `[variables]` of spin.toml: name -> default (`None` when required).
    fn manifest_defaults() -> BTreeMap<String, Option<String>> {
        let manifest: toml::Table = repo_file("spin.toml").parse().unwrap();
        manifest["variables"]
            .as_table()
            .unwrap()
            .iter()
            .map(|(name, spec)| {
                let default = spec.get("default").map(|d| d.as_str().unwrap().to_string());
                (name.clone(), default)
            })
            .collect()
    }

    /// The README's edge variable table: name -> the Default column's text.
    fn readme_defaults() -> BTreeMap<String, String> {
        let readme = repo_file("README.md");
        let start = readme
            .find("### Edge policies (variables in `spin.toml`)")
            .unwrap();
        readme[start..]
            .lines()
            .skip_while(|l| !l.starts_with("| Variable |"))
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .map(|row| {
                let cells: Vec<&str> = row.split(" | ").collect();
                let unquote = |s: &str| s.trim_matches(['|', ' ', '`']).to_string();
                (unquote(cells[0]), unquote(cells[1]))
            })
            .collect()
    }

    #[test]
    fn spin_toml_declares_every_variable_with_this_default() {
        let manifest = manifest_defaults();
        for variable in VARIABLES {
            assert_eq!(
                manifest.get(variable.name),
                Some(&variable.default.map(str::to_string)),
                "spin.toml's default for `{}`",
                variable.name
            );
        }
    }

    #[test]
    fn the_readme_table_gives_every_default() {
        let readme = readme_defaults();
        for variable in VARIABLES {
            let documented = readme
                .get(variable.name)
                .unwrap_or_else(|| panic!("the README's table has no row for `{}`", variable.name));
            let expected = match variable.default {
                None => "required",
                Some("") => "empty",
                Some(default) => default,
            };
            assert_eq!(
                documented, expected,
                "README default of `{}`",
                variable.name
            );
        }
    }
}
