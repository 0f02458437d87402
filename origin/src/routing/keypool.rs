//! A deployment's provider keys (the seed's `ANTHROPIC_API_KEYS=key1,key2,...`):
//! per-key request and token budgets, the key with the most headroom first,
//! rotation away from a key the upstream rate-limited until the time it named,
//! a breaker per key, warnings as a key's quota runs low, and a share of every
//! budget kept for the critical priority class.

use crate::priority::Priority;
use crate::routing::resilience::{Breaker, BreakerState, TokenBucket};
use secrecy::SecretString;
use serde::Serialize;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Shares of a key's per-minute quota in use at which a warning is raised.
const WARNING_LEVELS: [f64; 3] = [0.70, 0.85, 0.95];

/// Budgets of one key, per minute; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyBudgets {
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u32>,
}

pub struct KeyPool {
    deployment: String,
    keys: Vec<PooledKey>,
    /// Rotates the starting point so equally good keys share the load.
    next: AtomicUsize,
    /// Share of each budget only critical requests may use.
    critical_reserve: f64,
}

struct PooledKey {
    /// `key-1`, `key-2`, ...: what logs and health reports name (never the secret).
    label: String,
    secret: Option<SecretString>,
    breaker: Breaker,
    state: Mutex<KeyState>,
}

struct KeyState {
    requests: Option<TokenBucket>,
    tokens: Option<TokenBucket>,
    cooling_until: Option<Instant>,
    warned_level: usize,
}

impl KeyState {
    fn headroom(&mut self, now: Instant) -> f64 {
        let requests = self.requests.as_mut().map_or(1.0, |b| b.headroom(now));
        let tokens = self.tokens.as_mut().map_or(1.0, |b| b.headroom(now));
        requests.min(tokens)
    }

    fn fits(&mut self, tokens: f64, reserve: f64, now: Instant) -> bool {
        self.requests
            .as_mut()
            .is_none_or(|b| b.fits(1.0, reserve, now))
            && self
                .tokens
                .as_mut()
                .is_none_or(|b| b.fits(tokens, reserve, now))
    }

    fn cooling(&self, now: Instant) -> Option<Duration> {
        self.cooling_until
            .and_then(|until| until.checked_duration_since(now))
            .filter(|left| !left.is_zero())
    }
}

/// Why no key could be leased.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exhausted {
    /// Keys are resting after a 429 or out of budget; `retry_in` is the
    /// soonest a rested key comes back, when that is what blocks.
    Busy { retry_in: Option<Duration> },
    /// Every key's breaker is open.
    Unhealthy,
}

/// A key taken for one call. Report how it went; a lease dropped without a
/// report (the caller went away) frees its breaker probe by timing out.
pub struct Lease<'a> {
    pool: &'a KeyPool,
    index: usize,
    reserved_tokens: f64,
}

/// A key's condition for health reports.
#[derive(Debug, Clone, Serialize)]
pub struct KeyHealth {
    pub key: String,
    pub breaker: BreakerState,
    pub headroom: f64,
    pub cooling_ms: u64,
}

impl KeyPool {
    /// One entry per secret; an empty list is one keyless entry (local
    /// upstreams), so budgets and the breaker still apply.
    pub fn new(
        deployment: &str,
        secrets: Vec<SecretString>,
        budgets: KeyBudgets,
        breaker: impl Fn() -> Breaker,
        critical_reserve: f64,
    ) -> KeyPool {
        let now = Instant::now();
        let secrets: Vec<Option<SecretString>> = if secrets.is_empty() {
            vec![None]
        } else {
            secrets.into_iter().map(Some).collect()
        };
        let keys = secrets
            .into_iter()
            .enumerate()
            .map(|(i, secret)| PooledKey {
                label: format!("key-{}", i + 1),
                secret,
                breaker: breaker(),
                state: Mutex::new(KeyState {
                    requests: budgets
                        .requests_per_minute
                        .map(|n| TokenBucket::per_minute(n, now)),
                    tokens: budgets
                        .tokens_per_minute
                        .map(|n| TokenBucket::per_minute(n, now)),
                    cooling_until: None,
                    warned_level: 0,
                }),
            })
            .collect();
        KeyPool {
            deployment: deployment.to_string(),
            keys,
            next: AtomicUsize::new(0),
            critical_reserve: critical_reserve.clamp(0.0, 1.0),
        }
    }

    fn state(&self, index: usize) -> std::sync::MutexGuard<'_, KeyState> {
        self.keys[index]
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Leases the usable key with the most headroom for a call expected to use
    /// `estimated_tokens`.
    pub fn acquire(
        &self,
        priority: Priority,
        estimated_tokens: u32,
    ) -> Result<Lease<'_>, Exhausted> {
        let now = Instant::now();
        let reserve = if priority == Priority::Critical {
            0.0
        } else {
            self.critical_reserve
        };
        let tokens = f64::from(estimated_tokens);
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut candidates = Vec::with_capacity(self.keys.len());
        let mut soonest_back: Option<Duration> = None;
        let mut healthy = 0;
        for offset in 0..self.keys.len() {
            let index = (start + offset) % self.keys.len();
            if !self.keys[index].breaker.is_available() {
                continue;
            }
            healthy += 1;
            let mut state = self.state(index);
            if let Some(left) = state.cooling(now) {
                soonest_back = Some(soonest_back.map_or(left, |s| s.min(left)));
                continue;
            }
            if state.fits(tokens, reserve, now) {
                candidates.push((state.headroom(now), index));
            }
        }
        // Stable sort keeps the rotated order among equal headroom.
        candidates.sort_by(|a, b| b.0.total_cmp(&a.0));
        for (_, index) in candidates {
            if !self.keys[index].breaker.try_acquire() {
                continue;
            }
            let mut state = self.state(index);
            if let Some(b) = state.requests.as_mut() {
                b.take(1.0);
            }
            if let Some(b) = state.tokens.as_mut() {
                b.take(tokens);
            }
            self.warn_if_low(index, &mut state, now);
            return Ok(Lease {
                pool: self,
                index,
                reserved_tokens: tokens,
            });
        }
        Err(if healthy == 0 {
            Exhausted::Unhealthy
        } else {
            Exhausted::Busy {
                retry_in: soonest_back,
            }
        })
    }

    fn warn_if_low(&self, index: usize, state: &mut KeyState, now: Instant) {
        let used = 1.0 - state.headroom(now);
        let level = WARNING_LEVELS.iter().filter(|&&l| used >= l).count();
        if level > state.warned_level {
            let threshold = (WARNING_LEVELS[level - 1] * 100.0).round() as u32;
            tracing::warn!(
                event = "key_quota_warning",
                deployment = %self.deployment,
                key = %self.keys[index].label,
                threshold_percent = threshold,
                used_percent = (used * 100.0).round() as u32,
                "provider key quota running low"
            );
            metrics::counter!(
                "sluice_provider_key_quota_warnings_total",
                "deployment" => self.deployment.clone(),
                "threshold" => threshold.to_string(),
            )
            .increment(1);
        }
        state.warned_level = level;
    }

    pub fn health(&self) -> Vec<KeyHealth> {
        let now = Instant::now();
        (0..self.keys.len())
            .map(|index| {
                let mut state = self.state(index);
                KeyHealth {
                    key: self.keys[index].label.clone(),
                    breaker: self.keys[index].breaker.state(),
                    headroom: state.headroom(now),
                    cooling_ms: state.cooling(now).map_or(0, |d| d.as_millis() as u64),
                }
            })
            .collect()
    }
}

/// Rests a key the upstream says has no requests or tokens left until the
/// limit resets, so the next call goes to another key instead of earning a 429.
impl crate::provider::LimitObserver for KeyPool {
    fn observe(&self, key: Option<&str>, limits: &crate::provider::UpstreamLimits) {
        use secrecy::ExposeSecret;
        let Some(index) = self
            .keys
            .iter()
            .position(|k| k.secret.as_ref().map(ExposeSecret::expose_secret) == key)
        else {
            return;
        };
        let rest = [
            (limits.remaining_requests, limits.requests_reset),
            (limits.remaining_tokens, limits.tokens_reset),
        ]
        .into_iter()
        .filter(|(left, _)| *left == Some(0))
        .map(|(_, reset)| reset.unwrap_or(Duration::from_secs(1)))
        .max();
        if let Some(rest) = rest {
            let until = Instant::now() + rest;
            let mut state = self.state(index);
            if state.cooling_until.is_none_or(|u| u < until) {
                state.cooling_until = Some(until);
            }
            drop(state);
            tracing::info!(event = "key_exhausted_upstream", deployment = %self.deployment,
                key = %self.keys[index].label, rest_ms = rest.as_millis() as u64,
                "upstream says the key has nothing left; resting it until the reset");
        }
    }
}

impl Lease<'_> {
    fn key(&self) -> &PooledKey {
        &self.pool.keys[self.index]
    }

    pub fn secret(&self) -> Option<&SecretString> {
        self.key().secret.as_ref()
    }

    pub fn label(&self) -> &str {
        &self.key().label
    }

    /// The key's shared quota window is spent (other replicas used it):
    /// rest it until the window ends and give back what was taken here.
    pub fn quota_spent(self, rest: Duration) {
        self.pool.state(self.index).cooling_until = Some(Instant::now() + rest);
        // Nothing was sent: a probe that stopped here learned nothing.
        self.key().breaker.record_success();
        tracing::info!(event = "key_quota_spent", deployment = %self.pool.deployment,
            key = %self.label(), rest_ms = rest.as_millis() as u64,
            "key's shared quota spent; rotating away until its window ends");
        metrics::counter!("sluice_provider_key_quota_exhausted_total",
            "deployment" => self.pool.deployment.clone())
        .increment(1);
        self.unused();
    }

    /// The call worked and used `used_tokens`.
    pub fn succeeded(self, used_tokens: u32) {
        self.key().breaker.record_success();
        let mut state = self.pool.state(self.index);
        if let Some(b) = state.tokens.as_mut() {
            b.settle(self.reserved_tokens, f64::from(used_tokens));
        }
    }

    /// The upstream rate-limited this key: rest it until the time it named.
    pub fn rate_limited(self, retry_after: Option<Duration>) {
        let rest = retry_after.unwrap_or(Duration::from_secs(1));
        self.pool.state(self.index).cooling_until = Some(Instant::now() + rest);
        // A 429 is an answer, not an outage: a probe that got one is done.
        self.key().breaker.record_success();
        tracing::info!(event = "key_rate_limited", deployment = %self.pool.deployment,
            key = %self.label(), rest_ms = rest.as_millis() as u64, "rotating away from a rate-limited key");
    }

    /// The call failed in a way that counts against the key (refused, or
    /// the upstream failed while using it).
    pub fn failed(self) {
        if self.key().breaker.record_failure() {
            tracing::warn!(event = "key_breaker_opened", deployment = %self.pool.deployment,
                key = %self.label(), "provider key breaker opened");
        }
    }

    /// The key was not used after all: its budgets get back what was taken.
    pub fn unused(self) {
        let mut state = self.pool.state(self.index);
        if let Some(b) = state.requests.as_mut() {
            b.settle(1.0, 0.0);
        }
        if let Some(b) = state.tokens.as_mut() {
            b.settle(self.reserved_tokens, 0.0);
        }
    }

    /// The upstream answered, but not in a way that says anything about the key.
    pub fn released(self) {
        self.key().breaker.record_success();
        let mut state = self.pool.state(self.index);
        if let Some(b) = state.tokens.as_mut() {
            b.settle(self.reserved_tokens, 0.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(keys: usize, budgets: KeyBudgets) -> KeyPool {
        KeyPool::new(
            "test",
            (0..keys).map(|i| format!("sk-{i}").into()).collect(),
            budgets,
            || Breaker::new(2, Duration::from_secs(60)),
            0.1,
        )
    }

    #[test]
    fn rests_a_key_the_upstream_says_is_spent() {
        use crate::provider::{LimitObserver, UpstreamLimits};
        let p = pool(2, KeyBudgets::default());
        p.observe(
            Some("sk-0"),
            &UpstreamLimits {
                remaining_requests: Some(0),
                requests_reset: Some(Duration::from_secs(30)),
                remaining_tokens: Some(5000),
                ..UpstreamLimits::default()
            },
        );
        for _ in 0..4 {
            let lease = p.acquire(Priority::Normal, 0).unwrap();
            assert_eq!(lease.label(), "key-2");
            lease.succeeded(0);
        }
        // Headroom left says nothing: the key is not rested.
        p.observe(
            Some("sk-1"),
            &UpstreamLimits {
                remaining_requests: Some(3),
                ..UpstreamLimits::default()
            },
        );
        assert_eq!(p.acquire(Priority::Normal, 0).unwrap().label(), "key-2");
    }

    #[test]
    fn picks_the_key_with_most_headroom() {
        let p = pool(
            2,
            KeyBudgets {
                requests_per_minute: Some(10),
                tokens_per_minute: None,
            },
        );
        let mut used = [0, 0];
        for _ in 0..8 {
            let lease = p.acquire(Priority::Normal, 0).unwrap();
            used[lease.index] += 1;
            lease.succeeded(0);
        }
        assert_eq!(used, [4, 4]);
    }

    #[test]
    fn rotates_away_from_a_rate_limited_key_until_it_rests() {
        let p = pool(2, KeyBudgets::default());
        let first = p.acquire(Priority::Normal, 10).unwrap();
        let limited = first.index;
        first.rate_limited(Some(Duration::from_millis(50)));
        for _ in 0..4 {
            let lease = p.acquire(Priority::Normal, 10).unwrap();
            assert_ne!(lease.index, limited);
            lease.succeeded(10);
        }
        let other = p.acquire(Priority::Normal, 10).unwrap();
        other.rate_limited(Some(Duration::from_millis(80)));
        let exhausted = p.acquire(Priority::Normal, 10).err().unwrap();
        assert!(
            matches!(exhausted, Exhausted::Busy { retry_in: Some(d) } if d <= Duration::from_millis(50))
        );
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(p.acquire(Priority::Normal, 10).unwrap().index, limited);
    }

    #[test]
    fn keeps_a_reserve_for_critical_requests() {
        let p = pool(
            1,
            KeyBudgets {
                requests_per_minute: Some(10),
                tokens_per_minute: Some(1000),
            },
        );
        for _ in 0..9 {
            p.acquire(Priority::Normal, 10).unwrap().succeeded(10);
        }
        assert!(
            p.acquire(Priority::High, 10).is_err(),
            "the last 10% is reserved"
        );
        p.acquire(Priority::Critical, 10).unwrap().succeeded(10);
        assert!(p.acquire(Priority::Critical, 10).is_err(), "spent");
    }

    #[test]
    fn breaker_takes_a_failing_key_out() {
        let p = pool(2, KeyBudgets::default());
        let mut failures = 0;
        while failures < 2 {
            let lease = p.acquire(Priority::Normal, 0).unwrap();
            if lease.index == 0 {
                lease.failed();
                failures += 1;
            } else {
                lease.succeeded(0);
            }
        }
        assert_eq!(p.health()[0].breaker, BreakerState::Open);
        for _ in 0..3 {
            let lease = p.acquire(Priority::Normal, 0).unwrap();
            assert_eq!(lease.index, 1);
            lease.succeeded(0);
        }
        p.acquire(Priority::Normal, 0).unwrap().failed();
        p.acquire(Priority::Normal, 0).unwrap().failed();
        assert_eq!(
            p.acquire(Priority::Normal, 0).err(),
            Some(Exhausted::Unhealthy)
        );
    }

    #[test]
    fn warns_once_per_level_as_the_quota_runs_low() {
        let p = pool(
            1,
            KeyBudgets {
                requests_per_minute: Some(100),
                tokens_per_minute: None,
            },
        );
        let mut levels = Vec::new();
        for _ in 0..96 {
            p.acquire(Priority::Critical, 0).unwrap().succeeded(0);
            levels.push(p.state(0).warned_level);
        }
        // Level 1 from 70 used, 2 from 85, 3 from 95; the refill during the
        // test (a fraction of a request) may delay a level by one request.
        assert_eq!(levels[68], 0);
        assert_eq!(levels[70], 1);
        assert_eq!((levels[83], levels[85]), (1, 2));
        assert_eq!((levels[93], levels[95]), (2, 3));
        let raised: usize = levels.windows(2).filter(|w| w[1] > w[0]).count();
        assert_eq!(raised, 3, "one warning per level");
    }
}
