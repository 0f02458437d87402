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

wit_bindgen::generate!({
    world: "rate-limit-policy",
    path: "../../wit",
    with: { "sluice:types/types@0.1.0": sluice_edge_shared::types },
    generate_all,
});

use exports::sluice::rate_limit::rate_limit::Guest;
use sluice_core::rate_policy::{self, Applied, FailMode, PolicySpec};
use sluice_core::rate_window;
use sluice_core::settings::RateLimitSettings;
use sluice_core::{identity, route};
use sluice_edge_shared::now_ms;
use sluice_edge_shared::types::{Denial, Principal, RequestHead, Tier};
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
        let settings = RateLimitSettings::load(|name| config::get(name).ok().flatten())
            .map_err(|e| Denial::server_error(&e.to_string()))?;
        let checks = applicable(&who, &head, &settings);
        let default_fail = settings.fail_mode;
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
                        return Err(Denial::unavailable(
                            "Rate limiter unavailable.",
                            "rate_limiter_unavailable",
                        ));
                    }
                }
            }
        }
        let headers = rate_policy::headers(&applied);
        match rate_policy::most_restrictive(&applied) {
            Some(decisive) if !decisive.decision.allowed => Err(Denial::rate_limited(
                rate_policy::retry_after_seconds(&decisive.decision),
                headers,
            )),
            _ => Ok(headers),
        }
    }
}

/// The policies for this caller and route, narrowest first, so a refusal by a
/// narrow policy does not charge the wider ones.
fn applicable(who: &Principal, head: &RequestHead, settings: &RateLimitSettings) -> Vec<Check> {
    let anonymous = who.scopes.iter().any(|s| s == identity::ANONYMOUS_SCOPE);
    let mut checks = Vec::new();
    if let Some(ip) = &head.client_ip
        && anonymous
        && route::any_matches(&settings.ai_routes, &head.method, &head.path)
    {
        checks.push(Check {
            name: "anonymous-ai",
            spec: settings.anonymous_ai,
            key: format!("rl:anonymous-ai:{ip}"),
        });
    }
    let (tier, spec) = match who.tier {
        Tier::Free => ("free", settings.free),
        Tier::Premium => ("premium", settings.premium),
        Tier::Admin => ("admin", settings.admin),
    };
    checks.push(Check {
        name: tier,
        spec,
        key: format!("rl:{tier}:{}", who.subject),
    });
    if let Some(ip) = &head.client_ip {
        checks.push(Check {
            name: "ip",
            spec: settings.ip,
            key: format!("rl:ip:{ip}"),
        });
    }
    checks
}

struct StoreUnavailable;

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

export!(RateLimit);
