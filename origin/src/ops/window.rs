//! The last minute of requests, second by second, for the status page and the
//! stats endpoint: rates and latency percentiles an operator reads without a
//! Prometheus server. Prometheus gets the same events as histograms (`ops`);
//! this keeps only 60 small slots, so it costs the same at any traffic.
//!
//! Every request records here, so recording takes no lock: a mutex held by a
//! descheduled thread stalled other requests (origin P99 +1 ms at 2000 req/s
//! on 2 cores). Slots are atomics; the first request of a new second resets
//! its slot, and a request racing that reset may be lost or counted in the
//! new second, which a status page can afford.

use serde::Serialize;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Seconds of history kept.
pub const WINDOW_SECS: u64 = 60;
/// Latency buckets grow by 25 %: a percentile is off by at most that much.
const BUCKET_GROWTH: f64 = 1.25;
const FIRST_BUCKET_SECS: f64 = 0.000_05;
const BUCKETS: usize = 64;

struct Slot {
    /// The unix second the counts belong to; `u64::MAX` before first use.
    second: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
    latency: [AtomicU32; BUCKETS],
}

impl Default for Slot {
    fn default() -> Slot {
        Slot {
            second: AtomicU64::new(u64::MAX),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU32::new(0)),
        }
    }
}

/// A slot's counts for one second, copied out.
struct Counts {
    requests: u64,
    errors: u64,
    latency: [u64; BUCKETS],
}

impl Slot {
    /// The counts if the slot holds `second`.
    fn read(&self, second: u64) -> Option<Counts> {
        if self.second.load(Ordering::Acquire) != second {
            return None;
        }
        Some(Counts {
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            latency: std::array::from_fn(|i| u64::from(self.latency[i].load(Ordering::Relaxed))),
        })
    }
}

pub struct RequestWindow {
    slots: Vec<Slot>,
}

impl Default for RequestWindow {
    fn default() -> RequestWindow {
        RequestWindow {
            slots: (0..WINDOW_SECS).map(|_| Slot::default()).collect(),
        }
    }
}

/// One second of the window, for charts.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SecondStats {
    /// Unix time of the second.
    pub t: u64,
    pub requests: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

/// A span of seconds summed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WindowStats {
    pub seconds: u64,
    pub requests: u64,
    pub requests_per_second: f64,
    /// Share of requests answered 5xx.
    pub error_rate: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

fn bucket_of(elapsed: Duration) -> usize {
    let secs = elapsed.as_secs_f64();
    if secs <= FIRST_BUCKET_SECS {
        return 0;
    }
    let index = (secs / FIRST_BUCKET_SECS).ln() / BUCKET_GROWTH.ln();
    (index.ceil() as usize).min(BUCKETS - 1)
}

fn bucket_upper_ms(index: usize) -> f64 {
    FIRST_BUCKET_SECS * BUCKET_GROWTH.powi(index as i32) * 1e3
}

/// The upper bound of the bucket holding quantile `q`, 0 when empty.
fn quantile(latency: &[u64; BUCKETS], total: u64, q: f64) -> f64 {
    if total == 0 {
        return 0.0;
    }
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (index, count) in latency.iter().enumerate() {
        seen += count;
        if seen >= rank {
            return (bucket_upper_ms(index) * 1000.0).round() / 1000.0;
        }
    }
    bucket_upper_ms(BUCKETS - 1)
}

impl RequestWindow {
    fn slot(&self, second: u64) -> &Slot {
        &self.slots[(second % WINDOW_SECS) as usize]
    }

    /// Counts one finished request at unix second `now`.
    pub fn record(&self, now: u64, elapsed: Duration, error: bool) {
        let slot = self.slot(now);
        let held = slot.second.load(Ordering::Acquire);
        if held != now
            && slot
                .second
                .compare_exchange(held, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            // This request won the new second: the old counts go.
            slot.requests.store(0, Ordering::Relaxed);
            slot.errors.store(0, Ordering::Relaxed);
            for bucket in &slot.latency {
                bucket.store(0, Ordering::Relaxed);
            }
        }
        slot.requests.fetch_add(1, Ordering::Relaxed);
        slot.errors.fetch_add(u64::from(error), Ordering::Relaxed);
        slot.latency[bucket_of(elapsed)].fetch_add(1, Ordering::Relaxed);
    }

    /// The `seconds` whole seconds before `now` (the current one is still
    /// filling and would read low).
    pub fn summary(&self, now: u64, seconds: u64) -> WindowStats {
        let seconds = seconds.clamp(1, WINDOW_SECS - 1);
        let mut latency = [0u64; BUCKETS];
        let (mut requests, mut errors) = (0, 0);
        for second in now.saturating_sub(seconds)..now {
            let Some(counts) = self.slot(second).read(second) else {
                continue;
            };
            requests += counts.requests;
            errors += counts.errors;
            for (sum, count) in latency.iter_mut().zip(counts.latency) {
                *sum += count;
            }
        }
        WindowStats {
            seconds,
            requests,
            requests_per_second: requests as f64 / seconds as f64,
            error_rate: if requests == 0 {
                0.0
            } else {
                errors as f64 / requests as f64
            },
            p50_ms: quantile(&latency, requests, 0.50),
            p95_ms: quantile(&latency, requests, 0.95),
            p99_ms: quantile(&latency, requests, 0.99),
        }
    }

    /// Every whole second of the window before `now`, oldest first.
    pub fn series(&self, now: u64) -> Vec<SecondStats> {
        (now.saturating_sub(WINDOW_SECS - 1)..now)
            .map(|second| {
                let counts = self.slot(second).read(second).unwrap_or(Counts {
                    requests: 0,
                    errors: 0,
                    latency: [0; BUCKETS],
                });
                SecondStats {
                    t: second,
                    requests: counts.requests,
                    errors: counts.errors,
                    p50_ms: quantile(&counts.latency, counts.requests, 0.50),
                    p95_ms: quantile(&counts.latency, counts.requests, 0.95),
                    p99_ms: quantile(&counts.latency, counts.requests, 0.99),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn percentiles_are_within_a_bucket_of_the_truth() {
        let window = RequestWindow::default();
        // 1..=100 ms, one each: P50 is 50 ms, P95 95 ms, P99 99 ms.
        for n in 1..=100 {
            window.record(1000 + n % 3, ms(n), false);
        }
        let stats = window.summary(1003, 3);
        assert_eq!(stats.requests, 100);
        for (got, truth) in [
            (stats.p50_ms, 50.0),
            (stats.p95_ms, 95.0),
            (stats.p99_ms, 99.0),
        ] {
            assert!(
                got >= truth && got <= truth * BUCKET_GROWTH,
                "{got} vs {truth}"
            );
        }
        assert!((stats.requests_per_second - 100.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn errors_and_old_seconds() {
        let window = RequestWindow::default();
        window.record(500, ms(1), true);
        window.record(500, ms(1), false);
        let stats = window.summary(501, 10);
        assert_eq!(stats.requests, 2);
        assert!((stats.error_rate - 0.5).abs() < 1e-9);
        // A minute later the slot is reused, not added to.
        window.record(560, ms(1), false);
        assert_eq!(window.summary(561, 10).requests, 1);
        assert_eq!(window.summary(561, 59).requests, 1);
        // The current second is not counted until it is over.
        assert_eq!(window.summary(560, 10).requests, 0);
    }

    #[test]
    fn series_covers_the_window_oldest_first() {
        let window = RequestWindow::default();
        window.record(2000, ms(3), false);
        let series = window.series(2001);
        assert_eq!(series.len(), (WINDOW_SECS - 1) as usize);
        assert_eq!(series.last().map(|s| (s.t, s.requests)), Some((2000, 1)));
        assert!(series.windows(2).all(|w| w[0].t + 1 == w[1].t));
        assert_eq!(series[0].requests, 0);
    }

    #[test]
    fn concurrent_records_in_one_second_are_all_counted() {
        let window = std::sync::Arc::new(RequestWindow::default());
        // The second's first request resets the slot (a racing one may be lost then).
        window.record(7000, ms(2), false);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let window = std::sync::Arc::clone(&window);
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        window.record(7000, ms(2), false);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap_or_default();
        }
        assert_eq!(window.summary(7001, 5).requests, 40_001);
    }

    #[test]
    fn extreme_latencies_land_in_the_end_buckets() {
        assert_eq!(bucket_of(Duration::ZERO), 0);
        assert_eq!(bucket_of(Duration::from_secs(3600)), BUCKETS - 1);
    }
}
