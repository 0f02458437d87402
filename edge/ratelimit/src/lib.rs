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
//! Token limits (`tokens_free`, `tokens_premium`, `tokens_admin`, and a key's
//! or user's own from the principal) count tokens in the same windows:
//! `admit_tokens` adds a request's estimate to each counter (taking it back
//! if one has no room), and `settle_tokens` adds the difference between the
//! answer's usage and the estimate once the answer has ended.
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

use exports::sluice::rate_limit::rate_limit::{
    ChargedCounter, Guest, TokenAdmission, TokenCharge, TokenRequest,
};
use sluice_core::rate_policy::{self, Applied, FailMode, PolicySpec};
use sluice_core::rate_window;
use sluice_core::settings::{RateLimitSettings, SettingsError, TokenSettings};
use sluice_core::{identity, route, token_estimate};
use sluice_edge_shared::types::{Denial, Principal, RequestHead, Tier};
use sluice_edge_shared::{kept, now_ms};
use std::sync::OnceLock;
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
        let settings = load()?;
        let checks = applicable(&who, &head, settings);
        let charged = charge(checks, 1, settings.fail_mode, now_ms())?;
        let applied: Vec<Applied> = charged.iter().map(|(a, _)| a.clone()).collect();
        let headers = rate_policy::headers(&applied);
        match refusal(&charged) {
            Some(decisive) => Err(Denial::rate_limited(
                rate_policy::retry_after_seconds(&decisive.decision),
                headers,
            )),
            None => Ok(headers),
        }
    }

    fn admit_tokens(
        who: Principal,
        head: RequestHead,
        request: TokenRequest,
    ) -> Result<TokenAdmission, Denial> {
        let settings = load()?;
        let tokens = &settings.tokens;
        if !route::any_matches(&tokens.routes, &head.method, &head.path) {
            return Ok(TokenAdmission {
                charge: None,
                headers: Vec::new(),
            });
        }
        let checks = token_checks(&who, tokens)?;
        if checks.iter().all(|c| c.spec.quota.is_none()) {
            return Ok(TokenAdmission {
                charge: None,
                headers: Vec::new(),
            });
        }
        let estimate = estimate(&request, &head, tokens);
        let now = now_ms();
        let charged = charge(checks, estimate, settings.fail_mode, now)?;
        let applied: Vec<Applied> = charged.iter().map(|(a, _)| a.clone()).collect();
        let headers = rate_policy::token_headers(&applied);
        if let Some(decisive) = refusal(&charged) {
            let message = format!(
                "Token limit `{}` reached: this request is admitted for {estimate} tokens \
                 (its prompt estimate and output cap), more than the {} per {} s left now.",
                decisive.policy,
                decisive.quota.window_limit(),
                decisive.quota.window_ms().div_ceil(1000),
            );
            // The counters charged before the refusal give their tokens back.
            undo(&charged, estimate);
            return Err(Denial::tokens_limited(
                &message,
                rate_policy::retry_after_seconds(&decisive.decision),
                headers,
            ));
        }
        let counters: Vec<ChargedCounter> = charged.into_iter().filter_map(|(_, c)| c).collect();
        let charge = (!counters.is_empty()).then_some(TokenCharge { counters, estimate });
        Ok(TokenAdmission { charge, headers })
    }

    fn settle_tokens(charge: TokenCharge, used: u64) {
        let Ok(bucket) = store::open("default") else {
            return;
        };
        let delta = i64::try_from(used)
            .unwrap_or(i64::MAX)
            .saturating_sub(i64::try_from(charge.estimate).unwrap_or(i64::MAX));
        if delta == 0 {
            return;
        }
        let now = now_ms();
        for counter in charge.counters {
            // A window two behind no longer counts (and its counter is gone).
            if now / counter.window_ms.max(1) <= counter.window + 1 {
                let _ = atomics::increment(&bucket, &counter.key, delta);
            }
        }
    }
}

fn load() -> Result<&'static RateLimitSettings, Denial> {
    static SETTINGS: OnceLock<Result<RateLimitSettings, SettingsError>> = OnceLock::new();
    kept(&SETTINGS, || {
        RateLimitSettings::load(|name| config::get(name).ok().flatten())
    })
    .map_err(|e| Denial::server_error(&e.to_string()))
}

/// The first refused policy's decision (charging stops at a refusal).
fn refusal(applied: &[(Applied, Option<ChargedCounter>)]) -> Option<&Applied> {
    applied.iter().map(|(a, _)| a).find(|a| !a.decision.allowed)
}

/// Counts `cost` against each policy in turn, stopping at the first that
/// refuses (later ones are not charged for a refused request). Each applied
/// policy comes with the counter it was charged in (none for the refusing
/// one, whose charge was taken back).
fn charge(
    checks: Vec<Check>,
    cost: u64,
    default_fail: FailMode,
    now: u64,
) -> Result<Vec<(Applied, Option<ChargedCounter>)>, Denial> {
    let mut applied = Vec::with_capacity(checks.len());
    for check in checks {
        let Some(quota) = check.spec.quota else {
            continue;
        };
        match decide(&quota, &check.key, now, cost) {
            Ok((decision, counter)) => {
                let allowed = decision.allowed;
                applied.push((
                    Applied {
                        policy: check.name.to_string(),
                        quota,
                        decision,
                    },
                    allowed.then_some(counter),
                ));
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
    Ok(applied)
}

/// Takes a refused request's tokens back out of the counters it was added to.
fn undo(charged: &[(Applied, Option<ChargedCounter>)], estimate: u64) {
    let Ok(bucket) = store::open("default") else {
        return;
    };
    let back = -i64::try_from(estimate).unwrap_or(i64::MAX);
    for counter in charged.iter().filter_map(|(_, c)| c.as_ref()) {
        let _ = atomics::increment(&bucket, &counter.key, back);
    }
}

/// What the request is admitted for; a route that generates nothing
/// (embeddings) has no output.
fn estimate(request: &TokenRequest, head: &RequestHead, settings: &TokenSettings) -> u64 {
    let default_output = if head.path == "/v1/embeddings" {
        0
    } else {
        settings.default_output_tokens
    };
    let request = token_estimate::TokenRequest {
        text_bytes: request.text_bytes,
        files: request.files,
        output_tokens: request.output_tokens,
        choices: request.choices,
    };
    request.estimate(default_output, settings.image_tokens)
}

/// The caller's token policies: its key's own, then its user's own or else
/// its tier's.
fn token_checks(who: &Principal, settings: &TokenSettings) -> Result<Vec<Check>, Denial> {
    let own = |spec: &Option<String>| {
        spec.as_deref()
            .map(PolicySpec::parse)
            .transpose()
            .map_err(|e| Denial::server_error(&format!("token limit: {e}")))
    };
    let mut checks = Vec::new();
    if let (Some(spec), Some(key_id)) = (own(&who.token_limits.key)?, &who.key_id) {
        checks.push(Check {
            name: "tokens-key",
            spec,
            key: format!("tk:key:{key_id}"),
        });
    }
    let (name, spec) = match own(&who.token_limits.user)? {
        Some(spec) => ("tokens-user", spec),
        None => match who.tier {
            Tier::Free => ("tokens-free", settings.free),
            Tier::Premium => ("tokens-premium", settings.premium),
            Tier::Admin => ("tokens-admin", settings.admin),
        },
    };
    checks.push(Check {
        name,
        spec,
        key: format!("tk:{name}:{}", who.subject),
    });
    Ok(checks)
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
/// `sluice_core::rate_window`): add `cost` to the current window's counter,
/// read the previous window's with a zero increment, and take the cost back
/// out if it does not fit, so concurrent callers on one store never admit
/// more than the limit together. The first charge of a window deletes the
/// counter two windows back, so a subject keeps at most two.
fn decide(
    quota: &rate_window::Quota,
    key: &str,
    now: u64,
    cost: u64,
) -> Result<(rate_window::Decision, ChargedCounter), StoreUnavailable> {
    let bucket = store::open("default").map_err(|_| StoreUnavailable)?;
    let window = quota.window_index(now);
    let counter = |index: u64| format!("{key}:{}:{index}", quota.window_ms());
    let current_key = counter(window);
    let signed = i64::try_from(cost).unwrap_or(i64::MAX);
    let current =
        atomics::increment(&bucket, &current_key, signed).map_err(|_| StoreUnavailable)?;
    let previous = match window.checked_sub(1) {
        Some(index) => {
            atomics::increment(&bucket, &counter(index), 0).map_err(|_| StoreUnavailable)?
        }
        None => 0,
    };
    if current == signed
        && let Some(stale) = window.checked_sub(2)
    {
        let _ = bucket.delete(&counter(stale));
    }
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    let decision = rate_window::decide_cost(quota, now, count(previous), count(current), cost);
    if !decision.allowed {
        let _ = atomics::increment(&bucket, &current_key, -signed);
    }
    let charged = ChargedCounter {
        key: current_key,
        window_ms: quota.window_ms(),
        window,
    };
    Ok((decision, charged))
}

export!(RateLimit);
