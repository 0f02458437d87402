//! Rate-limit policy: sliding-window counters in the key-value store, several
//! policies per request, the most restrictive deciding. Each policy keeps a
//! counter per subject and window, changed only by atomic `increment` (see
//! `decide`), so several edge instances on one Redis stay within the limit and
//! no store's representation of numbers or compare-and-swap behaviour matters.
//!
//! Variables (each `N/period[;burst=B][;fail=open|closed]` or `unlimited`):
//! - `rate_limit_free`, `rate_limit_premium`, `rate_limit_admin`: per principal by tier;
//! - `rate_limit_ip`: per client IP, every caller;
//! - `rate_limit_anonymous_ai`: per client IP, anonymous callers on `ai_routes`;
//! - `ai_routes`: the route group (`METHOD /path`, comma separated);
//! - `rate_limit_fail_mode`: `open` (default) or `closed`, for policies without `fail=`.
//!
//! When the store cannot be reached a fail-open policy is skipped and a
//! fail-closed one refuses with 503; either way one log line on stderr
//! (`event=rate_limit_store_unavailable`) counts it.

wit_bindgen::generate!({ world: "rate-limit-policy", path: "../../wit", generate_all });

use exports::sluice::rate_limit::rate_limit::Guest;
use sluice::types::types::{Denial, Principal, RequestHead, Tier};
use sluice_core::rate_policy::{self, Applied, FailMode, PolicySpec};
use sluice_core::rate_window;
use sluice_core::{errors, identity, route};
use wasi::config::store as config;
use wasi::keyvalue::{atomics, store};

type Headers = Vec<(String, String)>;

struct RateLimit;

/// A policy that applies to this request, and the record it counts in.
struct Check {
    name: &'static str,
    spec: PolicySpec,
    key: String,
}

impl Guest for RateLimit {
    fn check(who: Principal, head: RequestHead) -> Result<Headers, Denial> {
        let checks = applicable(&who, &head).map_err(|e| server_error(&e))?;
        let default_fail = match setting("rate_limit_fail_mode") {
            Some(mode) => FailMode::parse(&mode)
                .ok_or_else(|| server_error("rate_limit_fail_mode must be `open` or `closed`"))?,
            None => FailMode::Open,
        };
        let now = now_ms();
        let mut applied = Vec::with_capacity(checks.len());
        for check in checks {
            let Some(quota) = check.spec.quota else {
                continue;
            };
            match decide(&quota, &check.key, now) {
                Ok(decision) => {
                    let allowed = decision.allowed;
                    applied.push(Applied {
                        policy: check.name.to_string(),
                        quota,
                        decision,
                    });
                    // Later policies are not charged for a request that is refused.
                    if !allowed {
                        break;
                    }
                }
                Err(StoreUnavailable) => {
                    let mode = check.spec.fail.unwrap_or(default_fail);
                    eprintln!(
                        "event=rate_limit_store_unavailable policy={} fail_mode={}",
                        check.name,
                        mode.as_str()
                    );
                    if mode == FailMode::Closed {
                        return Err(unavailable());
                    }
                }
            }
        }
        let headers = rate_policy::headers(&applied);
        match rate_policy::most_restrictive(&applied) {
            Some(decisive) if !decisive.decision.allowed => Err(too_many(
                headers,
                rate_policy::retry_after_seconds(&decisive.decision),
            )),
            _ => Ok(headers),
        }
    }
}

/// The policies for this caller and route, narrowest first, so a refusal by a
/// narrow policy does not charge the wider ones.
fn applicable(who: &Principal, head: &RequestHead) -> Result<Vec<Check>, String> {
    let spec = |name: &str, default: &str| -> Result<PolicySpec, String> {
        let value = setting(name).unwrap_or_else(|| default.to_string());
        PolicySpec::parse(&value).map_err(|e| format!("{name}: {e}"))
    };
    let anonymous = who.scopes.iter().any(|s| s == identity::ANONYMOUS_SCOPE);
    let mut checks = Vec::new();
    if let Some(ip) = &head.client_ip {
        let ai_routes = route::parse_list(&setting("ai_routes").unwrap_or_default())
            .map_err(|e| format!("ai_routes: {e}"))?;
        if anonymous && route::any_matches(&ai_routes, &head.method, &head.path) {
            checks.push(Check {
                name: "anonymous-ai",
                spec: spec("rate_limit_anonymous_ai", "50/15m")?,
                key: format!("rl:anonymous-ai:{ip}"),
            });
        }
    }
    let (tier, tier_default) = match who.tier {
        Tier::Free => ("free", "60/1m"),
        Tier::Premium => ("premium", "300/1m"),
        Tier::Admin => ("admin", "unlimited"),
    };
    checks.push(Check {
        name: tier,
        spec: spec(&format!("rate_limit_{tier}"), tier_default)?,
        key: format!("rl:{tier}:{}", who.subject),
    });
    if let Some(ip) = &head.client_ip {
        checks.push(Check {
            name: "ip",
            spec: spec("rate_limit_ip", "1000/15m")?,
            key: format!("rl:ip:{ip}"),
        });
    }
    Ok(checks)
}

fn setting(name: &str) -> Option<String> {
    config::get(name)
        .ok()
        .flatten()
        .filter(|v| !v.trim().is_empty())
}

struct StoreUnavailable;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One sliding-window step, by atomic increments only (see
/// `sluice_core::rate_window`): count this request in the current window's
/// counter, read the previous window's with a zero increment, and take the
/// request back out if it does not fit, so concurrent callers on one store
/// never admit more than the limit together. The first request of a window
/// deletes the counter two windows back, so a subject keeps at most two.
fn decide(
    quota: &rate_window::Quota,
    key: &str,
    now: u64,
) -> Result<rate_window::Decision, StoreUnavailable> {
    let bucket = store::open("default").map_err(|_| StoreUnavailable)?;
    let window = quota.window_index(now);
    let counter = |index: u64| format!("{key}:{}:{index}", quota.window_ms());
    let current_key = counter(window);
    let current = atomics::increment(&bucket, &current_key, 1).map_err(|_| StoreUnavailable)?;
    let previous = match window.checked_sub(1) {
        Some(index) => {
            atomics::increment(&bucket, &counter(index), 0).map_err(|_| StoreUnavailable)?
        }
        None => 0,
    };
    if current == 1
        && let Some(stale) = window.checked_sub(2)
    {
        let _ = bucket.delete(&counter(stale));
    }
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    let decision = rate_window::decide(quota, now, count(previous), count(current));
    if !decision.allowed {
        let _ = atomics::increment(&bucket, &current_key, -1);
    }
    Ok(decision)
}

fn too_many(mut headers: Headers, retry_after: u64) -> Denial {
    headers.push(("retry-after".into(), retry_after.to_string()));
    headers.push(("content-type".into(), "application/json".into()));
    Denial {
        status: 429,
        headers,
        body: errors::rate_limited(retry_after).to_string().into_bytes(),
    }
}

fn unavailable() -> Denial {
    Denial {
        status: 503,
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("retry-after".into(), "1".into()),
        ],
        body: errors::openai_error(
            "Rate limiter unavailable.",
            "server_error",
            Some("rate_limiter_unavailable"),
            None,
        )
        .to_string()
        .into_bytes(),
    }
}

fn server_error(message: &str) -> Denial {
    Denial {
        status: 500,
        headers: vec![("content-type".into(), "application/json".into())],
        body: errors::openai_error(message, "server_error", None, None)
            .to_string()
            .into_bytes(),
    }
}

export!(RateLimit);
