//! Route patterns in edge settings: `METHOD /path`, where a `*` segment matches
//! one path segment and a final `**` matches the rest (or nothing). The method
//! may be `*` for any.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePattern {
    method: String,
    segments: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("route `{0}` is not `METHOD /path`")]
pub struct RouteError(pub String);

impl RoutePattern {
    pub fn parse(rule: &str) -> Result<RoutePattern, RouteError> {
        let invalid = || RouteError(rule.to_string());
        let (method, path) = rule.trim().split_once(' ').ok_or_else(invalid)?;
        let path = path.trim();
        if method.is_empty() || !path.starts_with('/') {
            return Err(invalid());
        }
        let segments: Vec<String> = path[1..].split('/').map(str::to_string).collect();
        if segments[..segments.len() - 1].iter().any(|s| s == "**") {
            return Err(invalid());
        }
        Ok(RoutePattern {
            method: method.to_ascii_uppercase(),
            segments,
        })
    }

    pub fn matches(&self, method: &str, path: &str) -> bool {
        if self.method != "*" && !self.method.eq_ignore_ascii_case(method) {
            return false;
        }
        let Some(path) = path.strip_prefix('/') else {
            return false;
        };
        let mut actual = path.split('/');
        for (i, pattern) in self.segments.iter().enumerate() {
            if pattern == "**" && i == self.segments.len() - 1 {
                return true;
            }
            match actual.next() {
                Some(segment) if pattern == "*" && !segment.is_empty() => {}
                Some(segment) if segment == pattern => {}
                _ => return false,
            }
        }
        actual.next().is_none()
    }
}

/// Parses a comma-separated list of patterns.
pub fn parse_list(spec: &str) -> Result<Vec<RoutePattern>, RouteError> {
    spec.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(RoutePattern::parse)
        .collect()
}

pub fn any_matches(patterns: &[RoutePattern], method: &str, path: &str) -> bool {
    patterns.iter().any(|p| p.matches(method, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_exact_single_segment_and_rest() {
        let me = RoutePattern::parse("GET /v1/me").unwrap();
        assert!(me.matches("get", "/v1/me"));
        assert!(!me.matches("GET", "/v1/me/x"));
        assert!(!me.matches("POST", "/v1/me"));

        let messages = RoutePattern::parse("GET /v1/conversations/*/messages").unwrap();
        assert!(messages.matches("GET", "/v1/conversations/c1/messages"));
        assert!(!messages.matches("GET", "/v1/conversations//messages"));
        assert!(!messages.matches("GET", "/v1/conversations/c1/messages/m2"));
        assert!(!messages.matches("GET", "/v1/conversations"));

        let admin = RoutePattern::parse("* /v1/admin/**").unwrap();
        assert!(admin.matches("DELETE", "/v1/admin/keys/k1"));
        assert!(admin.matches("GET", "/v1/admin"));
        assert!(!admin.matches("GET", "/v1/administrator"));
    }

    #[test]
    fn refuses_malformed_rules() {
        assert!(RoutePattern::parse("GET v1").is_err());
        assert!(RoutePattern::parse("/v1/me").is_err());
        assert!(RoutePattern::parse("GET /a/**/b").is_err());
        assert_eq!(parse_list(" GET /a , POST /b ,").unwrap().len(), 2);
    }
}
