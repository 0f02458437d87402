//! The small state machines upstream calls are guarded by. Hand-written
//! rather than taken from a crate because routing needs to read them (a
//! breaker's state for health reports, a bucket's remaining share to pick the
//! key with the most headroom, debits corrected once real usage is known),
//! which governor and the breaker crates do not expose.

use serde::Serialize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

/// Opens after `threshold` failures in a row, refuses calls for `open_for`,
/// then lets one probe through (half-open): its success closes the breaker,
/// its failure opens it again. A probe that never reports (its caller went
/// away) is replaced after another `open_for`.
pub struct Breaker {
    threshold: u32,
    open_for: Duration,
    state: Mutex<BreakerInner>,
}

struct BreakerInner {
    state: BreakerState,
    failures: u32,
    /// When the breaker opened, or when the current probe started.
    since: Instant,
}

impl Breaker {
    pub fn new(threshold: u32, open_for: Duration) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            open_for,
            state: Mutex::new(BreakerInner {
                state: BreakerState::Closed,
                failures: 0,
                since: Instant::now(),
            }),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, BreakerInner> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a call may go ahead now; in half-open, only the probe may.
    pub fn try_acquire(&self) -> bool {
        let mut inner = self.inner();
        match inner.state {
            BreakerState::Closed => true,
            BreakerState::Open | BreakerState::HalfOpen
                if inner.since.elapsed() >= self.open_for =>
            {
                inner.state = BreakerState::HalfOpen;
                inner.since = Instant::now();
                true
            }
            BreakerState::Open | BreakerState::HalfOpen => false,
        }
    }

    /// Whether a call would be let through, without taking the probe.
    pub fn is_available(&self) -> bool {
        let inner = self.inner();
        inner.state == BreakerState::Closed || inner.since.elapsed() >= self.open_for
    }

    pub fn state(&self) -> BreakerState {
        self.inner().state
    }

    pub fn record_success(&self) {
        let mut inner = self.inner();
        inner.state = BreakerState::Closed;
        inner.failures = 0;
    }

    /// Returns true when this failure opened the breaker.
    pub fn record_failure(&self) -> bool {
        let mut inner = self.inner();
        inner.failures += 1;
        let opens = inner.state == BreakerState::HalfOpen
            || (inner.state == BreakerState::Closed && inner.failures >= self.threshold);
        if opens {
            inner.state = BreakerState::Open;
            inner.since = Instant::now();
        }
        opens
    }
}

/// A per-minute budget refilled continuously. `available` may go below zero
/// when a call used more than it reserved; the debt is paid back by refill.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    available: f64,
    refilled: Instant,
}

impl TokenBucket {
    pub fn per_minute(capacity: u32, now: Instant) -> TokenBucket {
        TokenBucket {
            capacity: f64::from(capacity),
            available: f64::from(capacity),
            refilled: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.available = (self.available + elapsed * self.capacity / 60.0).min(self.capacity);
        self.refilled = now;
    }

    /// The share of the budget left, 0.0 to 1.0.
    pub fn headroom(&mut self, now: Instant) -> f64 {
        self.refill(now);
        (self.available / self.capacity).max(0.0)
    }

    /// Whether `amount` fits while keeping `reserve` (a share of capacity) back.
    pub fn fits(&mut self, amount: f64, reserve: f64, now: Instant) -> bool {
        self.refill(now);
        self.available - amount >= reserve * self.capacity
    }

    pub fn take(&mut self, amount: f64) {
        self.available -= amount;
    }

    /// Returns (or, when negative, takes) the difference between what a call
    /// reserved and what it used.
    pub fn settle(&mut self, reserved: f64, used: f64) {
        self.available = (self.available + reserved - used).min(self.capacity);
    }
}

/// Exponential backoff with full jitter: a uniform wait in
/// `[0, min(max, base * 2^attempt)]`.
pub fn backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    let ceiling = base.saturating_mul(2_u32.saturating_pow(attempt)).min(max);
    ceiling.mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_opens_probes_and_closes() {
        let breaker = Breaker::new(2, Duration::from_millis(30));
        assert!(breaker.try_acquire());
        assert!(!breaker.record_failure());
        assert!(breaker.record_failure());
        assert_eq!(breaker.state(), BreakerState::Open);
        assert!(!breaker.try_acquire());
        std::thread::sleep(Duration::from_millis(40));
        assert!(breaker.try_acquire(), "the probe");
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        assert!(!breaker.try_acquire(), "only one probe at a time");
        assert!(breaker.record_failure(), "a failed probe reopens");
        std::thread::sleep(Duration::from_millis(40));
        assert!(breaker.try_acquire());
        breaker.record_success();
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert!(breaker.try_acquire());
    }

    #[test]
    fn bucket_refills_and_keeps_the_reserve() {
        let start = Instant::now();
        let mut bucket = TokenBucket::per_minute(60, start);
        assert!(bucket.fits(50.0, 0.1, start));
        assert!(!bucket.fits(55.0, 0.1, start), "would eat into the reserve");
        assert!(bucket.fits(55.0, 0.0, start));
        bucket.take(60.0);
        assert_eq!(bucket.headroom(start), 0.0);
        let later = start + Duration::from_secs(30);
        assert!((bucket.headroom(later) - 0.5).abs() < 1e-9);
        bucket.settle(10.0, 40.0);
        assert_eq!(bucket.headroom(later), 0.0, "debt below zero reads as none");
    }

    #[test]
    fn backoff_stays_under_its_ceiling() {
        for attempt in 0..10 {
            let wait = backoff(attempt, Duration::from_millis(100), Duration::from_secs(2));
            assert!(
                wait <= Duration::from_millis(100 * 2_u64.pow(attempt)).min(Duration::from_secs(2))
            );
        }
    }
}
