//! Cache policy: stores origin responses in the key-value store, scoped to the
//! principal unless the origin marked them `public`.
//!
//! Variables: `cache_routes` (`GET /v1/me=600, ...`) and `cache_max_entry_bytes`.
//! `lookup` hands the gateway an opaque ticket, `ttl:digest:subject`, that
//! `store` turns back into the private or public key.

wit_bindgen::generate!({ world: "cache-policy", path: "../../wit", generate_all });

use exports::sluice::edge::cache::{Guest, LookupResult};
use sluice::edge::types::{Principal, RequestHead, Response};
use sluice_core::cache_entry::{self, CacheControl, Entry, Scope};
use wasi::config::store as config;
use wasi::keyvalue::store;

const DEFAULT_MAX_ENTRY_BYTES: usize = 1 << 20;

/// Response headers never replayed from the cache (hop-by-hop or per-response).
const UNSTORED_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "date",
    "age",
    "x-cache",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "ratelimit",
    "ratelimit-policy",
    "retry-after",
];

struct Cache;

impl Guest for Cache {
    fn lookup(who: Principal, head: RequestHead, body: Vec<u8>) -> LookupResult {
        let routes = config::get("cache_routes")
            .ok()
            .flatten()
            .unwrap_or_default();
        let Ok(routes) = cache_entry::parse_routes(&routes) else {
            return LookupResult::Bypass(None);
        };
        let Some(route) = routes.iter().find(|r| r.matches(&head.method, &head.path)) else {
            return LookupResult::Bypass(None);
        };
        let digest =
            cache_entry::request_digest(&head.method, &head.path, head.query.as_deref(), &body);
        let ticket = format!("{}:{digest}:{}", route.ttl_seconds, who.subject);
        let client = head
            .headers
            .iter()
            .find(|(n, _)| n == "cache-control")
            .map(|(_, v)| CacheControl::parse(v))
            .unwrap_or_default();
        if client.no_store {
            return LookupResult::Bypass(None);
        }
        if client.no_cache {
            return LookupResult::Bypass(Some(ticket));
        }
        let Ok(bucket) = store::open("default") else {
            return LookupResult::Bypass(None);
        };
        let now = now_ms();
        for scope in [Scope::Principal(&who.subject), Scope::Public] {
            let key = cache_entry::scoped_key(scope, &digest);
            let Ok(Some(bytes)) = bucket.get(&key) else {
                continue;
            };
            match Entry::decode(&bytes) {
                Some(entry) if entry.is_fresh(now) => {
                    let age = entry.age_seconds(now);
                    let response = Response {
                        status: entry.status,
                        headers: entry.headers,
                        body: entry.body,
                    };
                    return LookupResult::Hit((response, age));
                }
                // Expired or unreadable: drop it so the store does not keep dead entries.
                _ => {
                    let _ = bucket.delete(&key);
                }
            }
        }
        LookupResult::Miss(ticket)
    }

    fn store(ticket: String, response: Response) -> bool {
        let mut parts = ticket.splitn(3, ':');
        let (Some(ttl), Some(digest), Some(subject)) = (parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let Ok(route_ttl) = ttl.parse::<u64>() else {
            return false;
        };
        let max_bytes = config::get("cache_max_entry_bytes")
            .ok()
            .flatten()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(DEFAULT_MAX_ENTRY_BYTES);
        if response.body.len() > max_bytes {
            return false;
        }
        let header = |name: &str| {
            response
                .headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        let sets_cookie = header("set-cookie").is_some();
        let Some(storage) = cache_entry::storage(
            route_ttl,
            response.status,
            header("cache-control"),
            sets_cookie,
        ) else {
            return false;
        };
        let scope = if storage.public {
            Scope::Public
        } else {
            Scope::Principal(subject)
        };
        let now = now_ms();
        let entry = Entry {
            stored_at_ms: now,
            expires_at_ms: now.saturating_add(storage.ttl_seconds.saturating_mul(1000)),
            status: response.status,
            headers: response
                .headers
                .into_iter()
                .filter(|(n, _)| !UNSTORED_HEADERS.contains(&n.to_ascii_lowercase().as_str()))
                .collect(),
            body: response.body,
        };
        let Ok(bucket) = store::open("default") else {
            return false;
        };
        bucket
            .set(&cache_entry::scoped_key(scope, digest), &entry.encode())
            .is_ok()
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

export!(Cache);
