//! Response-cache rules: keys scoped to a principal, `Cache-Control` handling,
//! and the stored entry format.

use crate::route::RoutePattern;
use sha2::{Digest, Sha256};

/// Whose responses a cache key can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// Only ever served back to this subject.
    Principal(&'a str),
    /// Marked `public` by the origin: served to any authenticated caller.
    Public,
}

/// Hex SHA-256 over the parts of a request that select a response.
/// Parts are length-prefixed so no two requests share a digest by concatenation.
pub fn request_digest(method: &str, path: &str, query: Option<&str>, body: &[u8]) -> String {
    let mut h = Sha256::new();
    for part in [
        method.as_bytes(),
        path.as_bytes(),
        query.unwrap_or("").as_bytes(),
        body,
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    hex::encode(h.finalize())
}

/// Whether a request body rules out any cached answer, whatever the route
/// settings say: a streamed answer (`stream: true`), and a stateful
/// Responses call, one that continues a stored response
/// (`previous_response_id`) or is stored itself (`store`, true unless the
/// client says false): replaying it would skip the origin's record of it.
pub fn body_forbids_cache(path: &str, body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Flags {
        #[serde(default)]
        stream: Option<bool>,
        #[serde(default)]
        store: Option<bool>,
        #[serde(default)]
        previous_response_id: Option<serde::de::IgnoredAny>,
    }
    let Ok(flags) = serde_json::from_slice::<Flags>(body) else {
        return false;
    };
    let stateful = (path == "/v1/responses" || path.starts_with("/v1/responses/"))
        && (flags.store != Some(false) || flags.previous_response_id.is_some());
    flags.stream == Some(true) || stateful
}

/// The store key for a digest in a scope at a generation. Private keys carry a
/// hash of the subject, so keys of two subjects never coincide. Raising a
/// generation (see `generation_key`) makes every key built with the old one
/// unreachable at once: invalidation without listing or deleting entries.
pub fn scoped_key(scope: Scope<'_>, generation: &Generation, digest: &str) -> String {
    match scope {
        Scope::Principal(subject) => format!(
            "cache:p:{}:{}.{}:{digest}",
            subject_tag(subject),
            generation.all,
            generation.subject
        ),
        Scope::Public => format!("cache:pub:{}:{digest}", generation.all),
    }
}

/// The generations a key is built with: one for everything (purge all) and one
/// per subject (their writes, or a purge of their entries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Generation {
    pub all: u64,
    pub subject: u64,
}

/// Where a generation counter lives: `None` for the one over every entry.
pub fn generation_key(subject: Option<&str>) -> String {
    match subject {
        Some(subject) => format!("cache:gen:{}", subject_tag(subject)),
        None => "cache:gen:all".to_string(),
    }
}

/// 128 bits of SHA-256 of the subject: fixed length, no separators to escape.
pub fn subject_tag(subject: &str) -> String {
    hex::encode(&Sha256::digest(subject.as_bytes())[..16])
}

/// The directives Sluice acts on.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheControl {
    pub no_store: bool,
    pub no_cache: bool,
    pub private: bool,
    pub public: bool,
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
}

impl CacheControl {
    pub fn parse(value: &str) -> CacheControl {
        let mut cc = CacheControl::default();
        for directive in value.split(',') {
            let directive = directive.trim().to_ascii_lowercase();
            let (name, arg) = match directive.split_once('=') {
                Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                None => (directive.as_str(), None),
            };
            let seconds = arg.and_then(|a| a.parse::<u64>().ok());
            match name {
                "no-store" => cc.no_store = true,
                "no-cache" => cc.no_cache = true,
                "private" => cc.private = true,
                "public" => cc.public = true,
                "max-age" => cc.max_age = seconds,
                "s-maxage" => cc.s_maxage = seconds,
                _ => {}
            }
        }
        cc
    }
}

/// How to store an origin response, if at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Storage {
    pub ttl_seconds: u64,
    pub public: bool,
}

/// Applies the origin's `Cache-Control` to a route's default TTL.
/// Only 2xx responses without `Set-Cookie` are stored.
pub fn storage(
    route_ttl_seconds: u64,
    status: u16,
    cache_control: Option<&str>,
    sets_cookie: bool,
) -> Option<Storage> {
    if !(200..300).contains(&status) || sets_cookie {
        return None;
    }
    let cc = cache_control.map(CacheControl::parse).unwrap_or_default();
    if cc.no_store || cc.no_cache {
        return None;
    }
    let public = cc.public && !cc.private;
    let ttl_seconds = match (public, cc.s_maxage, cc.max_age) {
        (true, Some(s), _) => s,
        (_, _, Some(m)) => m,
        _ => route_ttl_seconds,
    };
    (ttl_seconds > 0).then_some(Storage {
        ttl_seconds,
        public,
    })
}

/// A stored response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub stored_at_ms: u64,
    pub expires_at_ms: u64,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

const MAGIC: &[u8; 4] = b"SCE1";

impl Entry {
    pub fn is_fresh(&self, now_ms: u64) -> bool {
        now_ms < self.expires_at_ms
    }

    pub fn age_seconds(&self, now_ms: u64) -> u32 {
        (now_ms.saturating_sub(self.stored_at_ms) / 1000).min(u64::from(u32::MAX)) as u32
    }

    /// Length-prefixed binary: no escaping, any header or body bytes survive.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.stored_at_ms.to_le_bytes());
        out.extend_from_slice(&self.expires_at_ms.to_le_bytes());
        out.extend_from_slice(&self.status.to_le_bytes());
        out.extend_from_slice(&(self.headers.len() as u32).to_le_bytes());
        for (name, value) in &self.headers {
            for part in [name.as_bytes(), value.as_bytes()] {
                out.extend_from_slice(&(part.len() as u32).to_le_bytes());
                out.extend_from_slice(part);
            }
        }
        out.extend_from_slice(&self.body);
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Entry> {
        let mut r = Reader(bytes);
        if r.take(4)? != MAGIC {
            return None;
        }
        let stored_at_ms = u64::from_le_bytes(r.take(8)?.try_into().ok()?);
        let expires_at_ms = u64::from_le_bytes(r.take(8)?.try_into().ok()?);
        let status = u16::from_le_bytes(r.take(2)?.try_into().ok()?);
        let count = r.u32()?;
        let mut headers = Vec::new();
        for _ in 0..count {
            let name = String::from_utf8(r.sized()?.to_vec()).ok()?;
            let value = String::from_utf8(r.sized()?.to_vec()).ok()?;
            headers.push((name, value));
        }
        Some(Entry {
            stored_at_ms,
            expires_at_ms,
            status,
            headers,
            body: r.0.to_vec(),
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn sized(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn streamed_and_stateful_bodies_are_never_cached() {
        let chat = "/v1/chat/completions";
        assert!(body_forbids_cache(chat, br#"{"stream":true}"#));
        assert!(!body_forbids_cache(
            chat,
            br#"{"stream":false,"store":true}"#
        ));
        let responses = "/v1/responses";
        assert!(
            body_forbids_cache(responses, br#"{"input":"x"}"#),
            "stored by default"
        );
        assert!(body_forbids_cache(responses, br#"{"store":true}"#));
        assert!(body_forbids_cache(
            responses,
            br#"{"store":false,"previous_response_id":"resp_1"}"#
        ));
        assert!(!body_forbids_cache(
            responses,
            br#"{"store":false,"input":"x"}"#
        ));
        assert!(!body_forbids_cache(responses, b"not json"));
    }

    #[test]
    fn origin_directives_decide_storage() {
        assert_eq!(
            storage(60, 200, None, false),
            Some(Storage {
                ttl_seconds: 60,
                public: false
            })
        );
        assert_eq!(storage(60, 404, None, false), None);
        assert_eq!(storage(60, 200, Some("no-store"), false), None);
        assert_eq!(storage(60, 200, Some("max-age=0"), false), None);
        assert_eq!(
            storage(60, 200, Some("private, max-age=5"), false),
            Some(Storage {
                ttl_seconds: 5,
                public: false
            })
        );
        assert_eq!(
            storage(60, 200, Some("public, max-age=5, s-maxage=30"), false),
            Some(Storage {
                ttl_seconds: 30,
                public: true
            })
        );
        assert_eq!(storage(60, 200, None, true), None);
    }

    proptest! {
        /// Two different subjects never share a private key, whatever the request.
        #[test]
        fn private_keys_never_collide_across_subjects(a in "\\PC{0,20}", b in "\\PC{0,20}", path in "/[a-z/]{0,20}",
                                                     body in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assume!(a != b);
            let digest = request_digest("GET", &path, None, &body);
            let g = Generation::default();
            let ka = scoped_key(Scope::Principal(&a), &g, &digest);
            let kb = scoped_key(Scope::Principal(&b), &g, &digest);
            prop_assert_ne!(&ka, &kb);
            prop_assert_ne!(&ka, &scoped_key(Scope::Public, &g, &digest));
            prop_assert_ne!(generation_key(Some(&a)), generation_key(Some(&b)));
        }

        /// A raised generation never rebuilds a key of an earlier one.
        #[test]
        fn generations_separate_keys(all in 0u64..1000, sub in 0u64..1000, d_all in 0u64..3, d_sub in 0u64..3) {
            prop_assume!(d_all + d_sub > 0);
            let digest = request_digest("GET", "/v1/conversations", None, b"");
            let old = Generation { all, subject: sub };
            let new = Generation { all: all + d_all, subject: sub + d_sub };
            prop_assert_ne!(scoped_key(Scope::Principal("u"), &old, &digest),
                            scoped_key(Scope::Principal("u"), &new, &digest));
        }

        #[test]
        fn entry_roundtrip(status in 100u16..600, body in proptest::collection::vec(any::<u8>(), 0..256),
                           headers in proptest::collection::vec(("[a-z-]{1,12}", "\\PC{0,30}"), 0..6)) {
            let e = Entry { stored_at_ms: 5, expires_at_ms: 10, status, headers, body };
            prop_assert_eq!(Entry::decode(&e.encode()), Some(e));
        }
    }
}

/// A cacheable route: `METHOD /path=ttl_seconds` (path as in `crate::route`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub pattern: RoutePattern,
    pub ttl_seconds: u64,
}

impl Route {
    pub fn matches(&self, method: &str, path: &str) -> bool {
        self.pattern.matches(method, path)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("cache route {index} is not `METHOD /path=seconds`")]
pub struct RouteError {
    pub index: usize,
}

/// Parses comma-separated routes, e.g. `GET /v1/me=600, GET /v1/conversations/*/messages=300`.
pub fn parse_routes(spec: &str) -> Result<Vec<Route>, RouteError> {
    spec.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .enumerate()
        .map(|(index, rule)| {
            let (head, ttl) = rule.rsplit_once('=').ok_or(RouteError { index })?;
            let ttl_seconds = ttl.trim().parse().map_err(|_| RouteError { index })?;
            let pattern = RoutePattern::parse(head).map_err(|_| RouteError { index })?;
            Ok(Route {
                pattern,
                ttl_seconds,
            })
        })
        .collect()
}

#[cfg(test)]
mod route_tests {
    use super::*;

    #[test]
    fn parses_and_matches_routes() {
        let routes = parse_routes("GET /v1/me=600, get /v1/conversations/*/messages=300").unwrap();
        assert!(routes[0].matches("GET", "/v1/me"));
        assert!(!routes[0].matches("GET", "/v1/me/x"));
        assert!(!routes[0].matches("POST", "/v1/me"));
        assert!(routes[1].matches("GET", "/v1/conversations/abc/messages"));
        assert_eq!(routes[1].ttl_seconds, 300);
        assert_eq!(parse_routes("GET /v1/me"), Err(RouteError { index: 0 }));
        assert_eq!(parse_routes("GET v1=3"), Err(RouteError { index: 0 }));
    }
}
