//! Cross-origin requests from browsers, answered at the edge: a preflight
//! (`OPTIONS` with `Access-Control-Request-Method`) is answered here without
//! credentials, since browsers never send them on one; every other answer to
//! an allowed origin carries `Access-Control-Allow-Origin` and exposes the
//! rate-limit and Sluice headers, refusals included, so a browser client can
//! read why it was refused. With credentials allowed, the origin is echoed,
//! never `*` (browsers refuse `*` with credentials, and it would hand every
//! site the user's cookies).

/// Methods a preflight may ask for.
const METHODS: &str = "GET, POST, PUT, PATCH, DELETE, OPTIONS";

/// Response headers a browser client may read.
const EXPOSED: &str = "x-request-id, retry-after, ratelimit, ratelimit-policy, \
    x-ratelimit-limit, x-ratelimit-remaining, x-ratelimit-limit-tokens, \
    x-ratelimit-remaining-tokens, x-ratelimit-reset-tokens, x-cache, age, \
    x-sluice-provider, x-sluice-deployment, x-sluice-attempts, x-sluice-prompt-tokens, \
    x-sluice-completion-tokens, x-sluice-total-tokens, x-sluice-cost-usd, \
    x-sluice-budget-remaining-usd, x-sluice-budget-scope";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsSettings {
    /// Exact origins (`https://app.example.com`), `https://*.example.com`
    /// for any subdomain, or `*` for any; empty: CORS off.
    pub allowed_origins: Vec<String>,
    pub allow_credentials: bool,
    pub max_age_seconds: u64,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CorsError {
    #[error("`*` cannot be combined with credentials; list the origins")]
    WildcardWithCredentials,
    #[error("`{0}` is not an origin (`scheme://host[:port]`, `scheme://*.host` or `*`)")]
    NotAnOrigin(String),
}

/// Parses `cors_allowed_origins`: comma separated.
pub fn parse_origins(spec: &str, allow_credentials: bool) -> Result<Vec<String>, CorsError> {
    let origins: Vec<String> = spec
        .split(',')
        .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
        .filter(|o| !o.is_empty())
        .collect();
    for origin in &origins {
        if origin == "*" {
            if allow_credentials {
                return Err(CorsError::WildcardWithCredentials);
            }
            continue;
        }
        let valid = origin.split_once("://").is_some_and(|(scheme, host)| {
            !scheme.is_empty() && !host.is_empty() && !host.contains('/')
        });
        if !valid {
            return Err(CorsError::NotAnOrigin(origin.clone()));
        }
    }
    Ok(origins)
}

impl CorsSettings {
    pub fn enabled(&self) -> bool {
        !self.allowed_origins.is_empty()
    }

    fn allows(&self, origin: &str) -> bool {
        let origin = origin.to_ascii_lowercase();
        self.allowed_origins.iter().any(|allowed| {
            if allowed == "*" || *allowed == origin {
                return true;
            }
            // `https://*.example.com` admits `https://a.example.com`, not `https://example.com`.
            match (allowed.split_once("://*."), origin.split_once("://")) {
                (Some((scheme, suffix)), Some((their_scheme, host))) => {
                    scheme == their_scheme
                        && host.len() > suffix.len()
                        && host.ends_with(suffix)
                        && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
                }
                _ => false,
            }
        })
    }

    /// What `Access-Control-Allow-Origin` says to `origin`.
    fn allow_origin(&self, origin: &str) -> String {
        if !self.allow_credentials && self.allowed_origins.iter().any(|o| o == "*") {
            "*".into()
        } else {
            origin.into()
        }
    }

    /// The answer to a preflight from `origin`: `None` when the origin is not
    /// allowed (the caller refuses it). Asked-for request headers are allowed
    /// as asked: the edge and origin read the ones they know and pass on the
    /// rest, so there is nothing to gain by refusing one.
    pub fn preflight(
        &self,
        origin: &str,
        request_headers: Option<&str>,
    ) -> Option<Vec<(String, String)>> {
        if !self.allows(origin) {
            return None;
        }
        let mut headers = self.common(origin);
        headers.push(("access-control-allow-methods".into(), METHODS.into()));
        if let Some(asked) = request_headers.filter(|h| !h.trim().is_empty()) {
            headers.push(("access-control-allow-headers".into(), asked.trim().into()));
        }
        headers.push((
            "access-control-max-age".into(),
            self.max_age_seconds.to_string(),
        ));
        Some(headers)
    }

    /// Headers for an ordinary answer to `origin` (none if it is not allowed).
    pub fn response_headers(&self, origin: &str) -> Vec<(String, String)> {
        if !self.allows(origin) {
            return Vec::new();
        }
        let mut headers = self.common(origin);
        headers.push(("access-control-expose-headers".into(), EXPOSED.into()));
        headers
    }

    fn common(&self, origin: &str) -> Vec<(String, String)> {
        let mut headers = vec![
            (
                "access-control-allow-origin".into(),
                self.allow_origin(origin),
            ),
            // Caches in between must not give one origin's answer to another.
            ("vary".into(), "Origin".into()),
        ];
        if self.allow_credentials {
            headers.push(("access-control-allow-credentials".into(), "true".into()));
        }
        headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(origins: &str, credentials: bool) -> CorsSettings {
        CorsSettings {
            allowed_origins: parse_origins(origins, credentials).unwrap_or_default(),
            allow_credentials: credentials,
            max_age_seconds: 600,
        }
    }

    fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn exact_and_subdomain_origins() {
        let cors = settings("https://app.example.com, https://*.tools.dev", false);
        assert!(cors.allows("https://app.example.com"));
        assert!(cors.allows("https://a.tools.dev"));
        assert!(!cors.allows("https://tools.dev"));
        assert!(!cors.allows("https://eviltools.dev"));
        assert!(!cors.allows("http://a.tools.dev"));
        assert!(!cors.allows("https://app.example.com.evil.io"));
        let pre = cors
            .preflight(
                "https://app.example.com",
                Some("authorization, content-type"),
            )
            .unwrap_or_default();
        assert_eq!(
            header(&pre, "access-control-allow-origin"),
            Some("https://app.example.com")
        );
        assert_eq!(
            header(&pre, "access-control-allow-headers"),
            Some("authorization, content-type")
        );
        assert_eq!(cors.preflight("https://other.io", None), None);
        assert!(cors.response_headers("https://other.io").is_empty());
    }

    #[test]
    fn never_a_wildcard_with_credentials() {
        assert_eq!(
            parse_origins("*", true),
            Err(CorsError::WildcardWithCredentials)
        );
        let open = settings("*", false);
        let headers = open.response_headers("https://any.site");
        assert_eq!(header(&headers, "access-control-allow-origin"), Some("*"));
        assert_eq!(header(&headers, "access-control-allow-credentials"), None);
        let with = settings("https://app.example.com", true);
        let headers = with.response_headers("https://app.example.com");
        assert_eq!(
            header(&headers, "access-control-allow-origin"),
            Some("https://app.example.com")
        );
        assert_eq!(
            header(&headers, "access-control-allow-credentials"),
            Some("true")
        );
        assert!(parse_origins("app.example.com", false).is_err());
    }
}
