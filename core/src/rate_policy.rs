//! Rate-limit policies as configured at the edge, and how several policies that
//! apply to one request combine: the most restrictive decides and names the
//! headers.

use crate::rate_window::{Decision, Quota};

/// What a policy does when its store cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    /// Admit the request (availability first; the default).
    Open,
    /// Refuse with 503 (protection first).
    Closed,
}

impl FailMode {
    pub fn parse(s: &str) -> Option<FailMode> {
        match s.trim() {
            "open" => Some(FailMode::Open),
            "closed" => Some(FailMode::Closed),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FailMode::Open => "open",
            FailMode::Closed => "closed",
        }
    }
}

/// One configured limit: `unlimited`, or `N/period` with optional
/// `;burst=B` and `;fail=open|closed` (else the global fail mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicySpec {
    /// `None` is unlimited.
    pub quota: Option<Quota>,
    pub fail: Option<FailMode>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "`{0}` is not a rate-limit policy (`N/period[;burst=B][;fail=open|closed]` or `unlimited`)"
)]
pub struct PolicyError(pub String);

impl PolicySpec {
    pub fn parse(spec: &str) -> Result<PolicySpec, PolicyError> {
        let invalid = || PolicyError(spec.to_string());
        let mut parts = spec.split(';');
        let rate = parts.next().unwrap_or("").trim();
        let mut quota = match rate {
            "unlimited" => None,
            rate => Some(Quota::parse(rate).ok_or_else(invalid)?),
        };
        let mut fail = None;
        for option in parts {
            let (name, value) = option.trim().split_once('=').ok_or_else(invalid)?;
            match name.trim() {
                "burst" => {
                    let burst = value.trim().parse().map_err(|_| invalid())?;
                    quota = quota.map(|q| q.with_burst(burst));
                }
                "fail" => fail = Some(FailMode::parse(value).ok_or_else(invalid)?),
                _ => return Err(invalid()),
            }
        }
        Ok(PolicySpec { quota, fail })
    }
}

/// A policy's decision for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Bounded set of names (`free`, `premium`, `ip`, `anonymous-ai`, ...).
    pub policy: String,
    pub quota: Quota,
    pub decision: Decision,
}

/// The decision that speaks for the request: a refusal (the longest wait) if
/// any, else the one with the fewest requests left.
pub fn most_restrictive(applied: &[Applied]) -> Option<&Applied> {
    let refused = applied
        .iter()
        .filter(|a| !a.decision.allowed)
        .max_by_key(|a| a.decision.retry_after_ms);
    refused.or_else(|| applied.iter().min_by_key(|a| a.decision.remaining))
}

fn ceil_seconds(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

/// Seconds a refused client should wait (at least 1).
pub fn retry_after_seconds(decision: &Decision) -> u64 {
    ceil_seconds(decision.retry_after_ms).max(1)
}

/// `X-RateLimit-Limit` / `-Remaining` and `RateLimit` from the most restrictive
/// policy, `RateLimit-Policy` listing every policy applied (IETF draft fields).
pub fn headers(applied: &[Applied]) -> Vec<(String, String)> {
    let Some(decisive) = most_restrictive(applied) else {
        return Vec::new();
    };
    let policies: Vec<String> = applied
        .iter()
        .map(|a| {
            format!(
                "\"{}\";q={};w={}",
                a.policy,
                a.quota.window_limit(),
                ceil_seconds(a.quota.window_ms())
            )
        })
        .collect();
    vec![
        (
            "x-ratelimit-limit".into(),
            decisive.quota.window_limit().to_string(),
        ),
        (
            "x-ratelimit-remaining".into(),
            decisive.decision.remaining.to_string(),
        ),
        ("ratelimit-policy".into(), policies.join(", ")),
        (
            "ratelimit".into(),
            format!(
                "\"{}\";r={};t={}",
                decisive.policy,
                decisive.decision.remaining,
                ceil_seconds(decisive.decision.reset_after_ms)
            ),
        ),
    ]
}

/// Token policies' headers: each applied policy in `RateLimit-Policy` (with
/// `qu="tokens"`, the draft's quota unit) and `RateLimit`, and the most
/// restrictive in OpenAI's `x-ratelimit-{limit,remaining,reset}-tokens`
/// (the names its SDKs and our own upstream reader know). The gateway joins
/// these to the request policies' fields of the same names.
pub fn token_headers(applied: &[Applied]) -> Vec<(String, String)> {
    let Some(decisive) = most_restrictive(applied) else {
        return Vec::new();
    };
    let join =
        |item: &dyn Fn(&Applied) -> String| applied.iter().map(item).collect::<Vec<_>>().join(", ");
    vec![
        (
            "ratelimit-policy".into(),
            join(&|a| {
                format!(
                    "\"{}\";q={};w={};qu=\"tokens\"",
                    a.policy,
                    a.quota.window_limit(),
                    ceil_seconds(a.quota.window_ms())
                )
            }),
        ),
        (
            "ratelimit".into(),
            join(&|a| {
                format!(
                    "\"{}\";r={};t={}",
                    a.policy,
                    a.decision.remaining,
                    ceil_seconds(a.decision.reset_after_ms)
                )
            }),
        ),
        (
            "x-ratelimit-limit-tokens".into(),
            decisive.quota.window_limit().to_string(),
        ),
        (
            "x-ratelimit-remaining-tokens".into(),
            decisive.decision.remaining.to_string(),
        ),
        (
            "x-ratelimit-reset-tokens".into(),
            format!("{}s", ceil_seconds(decisive.decision.reset_after_ms)),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate_window;

    #[test]
    fn parses_policies() {
        assert_eq!(
            PolicySpec::parse("unlimited"),
            Ok(PolicySpec {
                quota: None,
                fail: None
            })
        );
        let p = PolicySpec::parse("1000/15m;burst=100;fail=closed").unwrap();
        assert_eq!(p.quota.unwrap().limit, 1000);
        assert_eq!(p.quota.unwrap().burst, 100);
        assert_eq!(p.quota.unwrap().period_ms, 900_000);
        assert_eq!(p.fail, Some(FailMode::Closed));
        for bad in [
            "",
            "60",
            "60/1m;burst",
            "60/1m;fail=maybe",
            "60/1m;color=red",
        ] {
            assert!(PolicySpec::parse(bad).is_err(), "{bad}");
        }
    }

    /// The decision for a request that made the current window's count `current`.
    fn applied(policy: &str, spec: &str, current: u64) -> Applied {
        let quota = PolicySpec::parse(spec).unwrap().quota.unwrap();
        Applied {
            policy: policy.into(),
            quota,
            decision: rate_window::decide(&quota, 0, 0, current),
        }
    }

    #[test]
    fn token_policies_are_listed_in_tokens() {
        let quota = PolicySpec::parse("40000/1m").unwrap().quota.unwrap();
        let all = [
            Applied {
                policy: "tokens-free".into(),
                quota,
                decision: rate_window::decide_cost(&quota, 0, 0, 5000, 5000),
            },
            Applied {
                policy: "tokens-key".into(),
                quota: quota.with_burst(10_000),
                decision: rate_window::decide_cost(&quota.with_burst(10_000), 0, 0, 5000, 5000),
            },
        ];
        let h = token_headers(&all);
        assert_eq!(
            h[0].1,
            "\"tokens-free\";q=40000;w=60;qu=\"tokens\", \"tokens-key\";q=10000;w=15;qu=\"tokens\""
        );
        assert_eq!(
            h[1].1,
            "\"tokens-free\";r=35000;t=60, \"tokens-key\";r=5000;t=15"
        );
        assert_eq!(h[3], ("x-ratelimit-remaining-tokens".into(), "5000".into()));
        assert_eq!(h[4], ("x-ratelimit-reset-tokens".into(), "15s".into()));
    }

    #[test]
    fn the_most_restrictive_policy_names_the_headers() {
        let all = [applied("premium", "300/1m", 1), applied("ip", "10/1m", 1)];
        assert_eq!(most_restrictive(&all).unwrap().policy, "ip");
        let h = headers(&all);
        assert_eq!(h[0], ("x-ratelimit-limit".into(), "10".into()));
        assert_eq!(h[1], ("x-ratelimit-remaining".into(), "9".into()));
        assert_eq!(
            h[2].1, "\"premium\";q=300;w=60, \"ip\";q=10;w=60",
            "every policy is listed"
        );
        assert!(h[3].1.starts_with("\"ip\";r=9;"));

        // A refusal speaks for the request even when another policy has less left.
        let refused = applied("anonymous-ai", "1/1m", 2);
        assert!(!refused.decision.allowed);
        let all = [applied("ip", "10/1m;burst=1", 1), refused];
        assert_eq!(most_restrictive(&all).unwrap().policy, "anonymous-ai");
        assert_eq!(
            retry_after_seconds(&most_restrictive(&all).unwrap().decision),
            120
        );
    }
}
