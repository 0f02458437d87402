//! Cache policy: stores origin responses in the key-value store, scoped to the
//! principal unless the origin marked them `public`, and invalidated by
//! generation: every key carries the caller's and the global generation
//! numbers, so raising one makes all older entries unreachable at once.
//!
//! Variables:
//! - `cache_routes`: `METHOD /path=ttl_seconds, ...` (paths as in `sluice_core::route`);
//!   a POST is never cached when streamed, nor a stateful Responses call
//!   (`sluice_core::cache_entry::body_forbids_cache`);
//! - `cache_invalidate_on`: `METHOD /path, ...` whose successful (2xx) calls
//!   raise the caller's generation (writes to their conversations);
//! - `cache_max_entry_bytes`.
//!
//! Tickets handed to the gateway are `s:ttl:all:subject_gen:digest:subject`
//! (store on offer) or `w:subject` (a write that invalidates on success).

wit_bindgen::generate!({
    world: "cache-policy",
    path: "../../wit",
    with: { "sluice:types/types@0.1.0": sluice_edge_shared::types },
    generate_all,
});

use exports::sluice::cache::cache::{Guest, LookupResult};
use sluice_core::cache_entry::{self, CacheControl, Entry, Generation, Scope};
use sluice_core::route;
use sluice_core::settings::{CacheSettings, SettingsError};
use sluice_edge_shared::types::{Principal, RequestHead, Response};
use sluice_edge_shared::{kept, now_ms};
use std::sync::OnceLock;
use wasi::config::store as config;
use wasi::keyvalue::{atomics, store};

/// Attempts at raising a generation under contention.
const MAX_CAS_ATTEMPTS: usize = 32;

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
    fn find(who: Principal, head: RequestHead, body: Vec<u8>) -> LookupResult {
        let Ok(bucket) = store::open("default") else {
            return LookupResult::Bypass(None);
        };
        // A cache that cannot read its settings stays out of the way.
        let Ok(settings) = settings() else {
            return LookupResult::Bypass(None);
        };
        if route::any_matches(&settings.invalidate_on, &head.method, &head.path) {
            // Raised once the write succeeded (in `offer`). A read that raced
            // the write read the old generation in `find`, so whatever it
            // stores is unreachable after the raise: no stale entry survives.
            return LookupResult::Bypass(Some(format!("w:{}", who.subject)));
        }
        let Some(route) = settings
            .routes
            .iter()
            .find(|r| r.matches(&head.method, &head.path))
        else {
            return LookupResult::Bypass(None);
        };
        if head.method == "POST" && cache_entry::body_forbids_cache(&head.path, &body) {
            return LookupResult::Bypass(None);
        }
        let client = head
            .headers
            .iter()
            .find(|(n, _)| n == "cache-control")
            .map(|(_, v)| CacheControl::parse(v))
            .unwrap_or_default();
        if client.no_store {
            return LookupResult::Bypass(None);
        }
        let Ok(generation) = current_generation(&bucket, &who.subject) else {
            return LookupResult::Bypass(None);
        };
        let digest =
            cache_entry::request_digest(&head.method, &head.path, head.query.as_deref(), &body);
        let ticket = format!(
            "s:{}:{}:{}:{digest}:{}",
            route.ttl_seconds, generation.all, generation.subject, who.subject
        );
        if client.no_cache {
            return LookupResult::Bypass(Some(ticket));
        }
        let now = now_ms();
        for scope in [Scope::Principal(&who.subject), Scope::Public] {
            let key = cache_entry::scoped_key(scope, &generation, &digest);
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

    fn offer(ticket: String, response: Response) -> bool {
        let Ok(bucket) = store::open("default") else {
            return false;
        };
        if let Some(subject) = ticket.strip_prefix("w:") {
            if (200..300).contains(&response.status) {
                let _ = raise_generation(&bucket, &cache_entry::generation_key(Some(subject)));
            }
            return false;
        }
        let Some(ticket) = StoreTicket::parse(&ticket) else {
            return false;
        };
        static MAX_ENTRY_BYTES: OnceLock<Result<usize, SettingsError>> = OnceLock::new();
        let Ok(&max_entry_bytes) =
            kept(&MAX_ENTRY_BYTES, || CacheSettings::max_entry_bytes(setting)).map_err(log_invalid)
        else {
            return false;
        };
        if response.body.len() > max_entry_bytes {
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
            ticket.ttl_seconds,
            response.status,
            header("cache-control"),
            sets_cookie,
        ) else {
            return false;
        };
        let scope = if storage.public {
            Scope::Public
        } else {
            Scope::Principal(ticket.subject)
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
        // Stored under the generations read at lookup: if an invalidation came
        // in between, the entry is born unreachable rather than stale.
        bucket
            .set(
                &cache_entry::scoped_key(scope, &ticket.generation, ticket.digest),
                &entry.encode(),
            )
            .is_ok()
    }

    fn purge(subject: Option<String>) -> Result<(), String> {
        let bucket = store::open("default").map_err(|e| format!("{e:?}"))?;
        raise_generation(&bucket, &cache_entry::generation_key(subject.as_deref()))
            .map(|_| ())
            .map_err(|()| "the cache store did not take the purge".to_string())
    }
}

struct StoreTicket<'a> {
    ttl_seconds: u64,
    generation: Generation,
    digest: &'a str,
    subject: &'a str,
}

impl<'a> StoreTicket<'a> {
    fn parse(ticket: &'a str) -> Option<StoreTicket<'a>> {
        let mut parts = ticket.strip_prefix("s:")?.splitn(5, ':');
        let ttl_seconds = parts.next()?.parse().ok()?;
        let all = parts.next()?.parse().ok()?;
        let subject_generation = parts.next()?.parse().ok()?;
        let digest = parts.next()?;
        let subject = parts.next()?;
        Some(StoreTicket {
            ttl_seconds,
            generation: Generation {
                all,
                subject: subject_generation,
            },
            digest,
            subject,
        })
    }
}

fn current_generation(bucket: &store::Bucket, subject: &str) -> Result<Generation, ()> {
    Ok(Generation {
        all: read_generation(bucket, &cache_entry::generation_key(None))?,
        subject: read_generation(bucket, &cache_entry::generation_key(Some(subject)))?,
    })
}

/// A generation, created on first use. Created and raised values come from
/// the clock (see `raise_generation`), so one that was evicted never comes
/// back as a number an older entry was stored under.
fn read_generation(bucket: &store::Bucket, key: &str) -> Result<u64, ()> {
    match bucket.get(key) {
        Ok(Some(value)) => std::str::from_utf8(&value)
            .ok()
            .and_then(|v| v.parse().ok())
            .ok_or(()),
        Ok(None) => raise_generation(bucket, key),
        Err(_) => Err(()),
    }
}

/// Sets the generation to `max(current + 1, now_ms)` by compare-and-swap.
fn raise_generation(bucket: &store::Bucket, key: &str) -> Result<u64, ()> {
    for _ in 0..MAX_CAS_ATTEMPTS {
        let cas = atomics::Cas::new(bucket, key).map_err(|_| ())?;
        let current: Option<u64> = cas
            .current()
            .map_err(|_| ())?
            .and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok());
        let next = current.map_or(0, |c| c + 1).max(now_ms());
        match atomics::swap(cas, next.to_string().as_bytes()) {
            Ok(()) => return Ok(next),
            // Some stores report a swap they did write as failed (Spin 4.0.2's
            // Redis store reports every one); what counts is that the
            // generation is now at least `next`, by this caller or another.
            Err(atomics::CasError::CasFailed(_)) => match stored_generation(bucket, key)? {
                Some(now_stored) if now_stored >= next => return Ok(now_stored),
                _ => continue,
            },
            Err(atomics::CasError::StoreError(_)) => return Err(()),
        }
    }
    Err(())
}

fn stored_generation(bucket: &store::Bucket, key: &str) -> Result<Option<u64>, ()> {
    match bucket.get(key) {
        Ok(value) => Ok(value.and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok())),
        Err(_) => Err(()),
    }
}

fn setting(name: &str) -> Option<String> {
    config::get(name).ok().flatten()
}

fn settings() -> Result<&'static CacheSettings, ()> {
    static SETTINGS: OnceLock<Result<CacheSettings, SettingsError>> = OnceLock::new();
    kept(&SETTINGS, || CacheSettings::load(setting)).map_err(log_invalid)
}

fn log_invalid(error: sluice_core::settings::SettingsError) {
    eprintln!("event=cache_settings_invalid error={:?}", error.to_string());
}

export!(Cache);
