//! `allowed_outbound_hosts`: which destinations a component may call.

/// One `scheme://host[:port]` entry; `*` is a wildcard for the scheme, the port,
/// the whole host, or a leading host segment (`*.example.com`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    scheme: String,
    host: String,
    port: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{0}` is not `scheme://host[:port]`")]
pub struct AllowedHostError(pub String);

impl AllowedHost {
    pub fn parse(entry: &str) -> Result<AllowedHost, AllowedHostError> {
        let err = || AllowedHostError(entry.to_string());
        let (scheme, rest) = entry.split_once("://").ok_or_else(err)?;
        let rest = rest.trim_end_matches('/');
        if scheme.is_empty() || rest.is_empty() || rest.contains('/') {
            return Err(err());
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || rest.starts_with('[') => {
                (host, Some(port.to_string()))
            }
            _ => (rest, None),
        };
        Ok(AllowedHost {
            scheme: scheme.to_ascii_lowercase(),
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    pub fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        let scheme_ok = self.scheme == "*" || self.scheme.eq_ignore_ascii_case(scheme);
        let host = host.to_ascii_lowercase();
        let host_ok = match self.host.strip_prefix("*.") {
            _ if self.host == "*" => true,
            Some(suffix) => host.ends_with(&format!(".{suffix}")),
            None => self.host == host,
        };
        let default_port = match self.scheme.as_str() {
            "http" => Some(80),
            "https" => Some(443),
            _ => None,
        };
        let port_ok = match self.port.as_deref() {
            Some("*") => true,
            Some(p) => p.parse::<u16>().ok() == Some(port),
            None => default_port == Some(port),
        };
        scheme_ok && host_ok && port_ok
    }
}

/// All entries of one component; an empty list allows nothing.
#[derive(Debug, Clone, Default)]
pub struct OutboundPolicy(Vec<AllowedHost>);

impl OutboundPolicy {
    pub fn new(entries: Vec<AllowedHost>) -> OutboundPolicy {
        OutboundPolicy(entries)
    }

    pub fn allows(&self, uri: &http::Uri) -> bool {
        let scheme = uri.scheme_str().unwrap_or("http");
        let Some(host) = uri.host() else { return false };
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        self.0
            .iter()
            .any(|a| a.allows(scheme, host.trim_matches(['[', ']']), port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(entries: &[&str]) -> OutboundPolicy {
        OutboundPolicy::new(
            entries
                .iter()
                .map(|e| AllowedHost::parse(e).unwrap())
                .collect(),
        )
    }

    #[test]
    fn matches_scheme_host_and_port() {
        let p = policy(&[
            "http://127.0.0.1:8081",
            "https://*.example.com",
            "*://localhost:*",
        ]);
        assert!(p.allows(&"http://127.0.0.1:8081/v1".parse().unwrap()));
        assert!(!p.allows(&"http://127.0.0.1:8082/v1".parse().unwrap()));
        assert!(!p.allows(&"https://127.0.0.1:8081/v1".parse().unwrap()));
        assert!(p.allows(&"https://api.example.com/".parse().unwrap()));
        assert!(!p.allows(&"https://example.com.evil.net/".parse().unwrap()));
        assert!(!p.allows(&"http://api.example.com/".parse().unwrap()));
        assert!(p.allows(&"http://localhost:9/".parse().unwrap()));
        assert!(!policy(&[]).allows(&"http://127.0.0.1/".parse().unwrap()));
    }

    #[test]
    fn rejects_malformed_entries() {
        assert!(AllowedHost::parse("127.0.0.1:80").is_err());
        assert!(AllowedHost::parse("http://host/path").is_err());
    }
}
