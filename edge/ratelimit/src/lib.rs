//! Rate-limit policy: GCRA per principal and tier, one record per subject in the
//! key-value store, updated by compare-and-swap so several edge instances on
//! one store stay correct.
//!
//! Variables: `rate_limit_free`, `rate_limit_premium`, `rate_limit_admin`
//! (`"60/1m"`, `"300/1m;burst=50"` or `"unlimited"`), and `rate_limit_fail_mode`
//! (`open`, the default, or `closed`) for when the store cannot be reached.

wit_bindgen::generate!({ world: "rate-limit-policy", path: "../../wit", generate_all });

use exports::sluice::edge::rate_limit::Guest;
use sluice::edge::types::{Denial, Principal, RequestHead, Tier};
use sluice_core::{errors, gcra};
use wasi::config::store as config;
use wasi::keyvalue::{atomics, store};

/// CAS attempts before giving up under contention (then the fail mode decides).
const MAX_CAS_ATTEMPTS: usize = 16;

type Headers = Vec<(String, String)>;

struct RateLimit;

impl Guest for RateLimit {
    fn check(who: Principal, _head: RequestHead) -> Result<Headers, Denial> {
        let tier = tier_name(who.tier);
        let spec = config::get(&format!("rate_limit_{tier}"))
            .ok()
            .flatten()
            .unwrap_or_default();
        if spec.trim() == "unlimited" {
            return Ok(Vec::new());
        }
        let Some(quota) = gcra::Quota::parse(&spec) else {
            return Err(server_error(&format!(
                "rate_limit_{tier} is not a valid quota: {spec:?}"
            )));
        };
        let fail_closed = config::get("rate_limit_fail_mode")
            .ok()
            .flatten()
            .as_deref()
            == Some("closed");
        let key = format!("rl:{tier}:{}", who.subject);
        match decide(&quota, &key) {
            Ok(decision) => {
                let headers = headers(tier, &quota, &decision);
                if decision.allowed {
                    Ok(headers)
                } else {
                    Err(too_many(headers, &decision))
                }
            }
            Err(_) if fail_closed => Err(unavailable()),
            Err(_) => Ok(Vec::new()),
        }
    }
}

struct StoreUnavailable;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn decide(quota: &gcra::Quota, key: &str) -> Result<gcra::Decision, StoreUnavailable> {
    let bucket = store::open("default").map_err(|_| StoreUnavailable)?;
    for _ in 0..MAX_CAS_ATTEMPTS {
        let cas = atomics::Cas::new(&bucket, key).map_err(|_| StoreUnavailable)?;
        let stored = cas.current().map_err(|_| StoreUnavailable)?;
        let stored_tat = stored.and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok());
        let decision = gcra::decide(quota, stored_tat, now_ms());
        if !decision.allowed {
            return Ok(decision);
        }
        match atomics::swap(cas, decision.new_tat_ms.to_string().as_bytes()) {
            Ok(()) => return Ok(decision),
            Err(atomics::CasError::CasFailed(_)) => continue,
            Err(atomics::CasError::StoreError(_)) => return Err(StoreUnavailable),
        }
    }
    Err(StoreUnavailable)
}

fn tier_name(tier: Tier) -> &'static str {
    match tier {
        Tier::Free => "free",
        Tier::Premium => "premium",
        Tier::Admin => "admin",
    }
}

fn ceil_seconds(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

/// The classic `X-RateLimit-*` pair plus the IETF draft `RateLimit-Policy` / `RateLimit` fields.
fn headers(policy: &str, quota: &gcra::Quota, d: &gcra::Decision) -> Headers {
    let window = ceil_seconds(quota.period_ms);
    let reset = ceil_seconds(d.reset_after_ms);
    vec![
        ("x-ratelimit-limit".into(), quota.limit.to_string()),
        ("x-ratelimit-remaining".into(), d.remaining.to_string()),
        (
            "ratelimit-policy".into(),
            format!("\"{policy}\";q={};w={window}", quota.limit),
        ),
        (
            "ratelimit".into(),
            format!("\"{policy}\";r={};t={reset}", d.remaining),
        ),
    ]
}

fn too_many(mut headers: Headers, d: &gcra::Decision) -> Denial {
    let retry_after = ceil_seconds(d.retry_after_ms).max(1);
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
