//! Sliding-window counters: per subject and policy, one counter per fixed
//! window, and a request is admitted while the current window's count plus
//! the previous window's, weighted by how much of it still overlaps the
//! sliding window, stays within the limit.
//!
//! Chosen because its state changes only by atomic `increment` (one counter
//! per window, never a value written by `set` or swap), which every
//! `wasi:keyvalue` store does atomically whatever it keeps the number as:
//! several edge instances on one store never admit more than the limit
//! together, and no store's compare-and-swap quirks can touch it.

/// `limit` requests per `period_ms`, with up to `burst` admitted back to back:
/// counted as `burst` requests per window of `period_ms * burst / limit`
/// (the same rate; the whole period when `burst` is the limit, the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u32,
    pub period_ms: u64,
    pub burst: u32,
}

impl Quota {
    /// The length of one counting window.
    pub fn window_ms(&self) -> u64 {
        let window = u128::from(self.period_ms) * u128::from(self.burst.max(1))
            / u128::from(self.limit.max(1));
        u64::try_from(window).unwrap_or(u64::MAX).max(1)
    }

    /// Requests admitted per window.
    pub fn window_limit(&self) -> u32 {
        self.burst.max(1)
    }

    /// The window `now_ms` falls in.
    pub fn window_index(&self, now_ms: u64) -> u64 {
        now_ms / self.window_ms()
    }

    /// Parses `"60/60s"`, `"1000/15m"`, `"300/1m"`, `"5/s"`; the burst is the
    /// limit (set it with `with_burst`).
    pub fn parse(rate: &str) -> Option<Quota> {
        let (limit, window) = rate.trim().split_once('/')?;
        let limit: u32 = limit.trim().parse().ok().filter(|l| *l > 0)?;
        let window = window.trim();
        let split = window
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(window.len());
        let (count, unit) = window.split_at(split);
        let count: u64 = if count.is_empty() {
            1
        } else {
            count.parse().ok()?
        };
        let unit_ms = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return None,
        };
        let period_ms = count.checked_mul(unit_ms).filter(|p| *p > 0)?;
        Some(Quota {
            limit,
            period_ms,
            burst: limit,
        })
    }

    /// The same rate with up to `burst` requests admitted back to back.
    pub fn with_burst(self, burst: u32) -> Quota {
        Quota {
            burst: burst.max(1),
            ..self
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Requests still admissible right now after this one.
    pub remaining: u32,
    /// Until the next request would be admitted (0 when allowed).
    pub retry_after_ms: u64,
    /// Until the current window ends and its count starts to fade.
    pub reset_after_ms: u64,
}

/// Decides one request at `now_ms`, given the previous window's count and the
/// current window's count with this request already added (the value the
/// atomic increment returned). A refused request's increment is to be undone.
pub fn decide(quota: &Quota, now_ms: u64, previous: u64, current: u64) -> Decision {
    decide_cost(quota, now_ms, previous, current, 1)
}

/// [`decide`] for a request that counts `cost` units (a token estimate, say),
/// already added into `current`.
pub fn decide_cost(quota: &Quota, now_ms: u64, previous: u64, current: u64, cost: u64) -> Decision {
    let window = u128::from(quota.window_ms());
    let elapsed = u128::from(now_ms) % window;
    let limit = u128::from(quota.window_limit());
    let (previous, current, cost) = (u128::from(previous), u128::from(current), u128::from(cost));
    // Everything scaled by `window` so the weighting stays exact in integers.
    let used = previous * (window - elapsed) + current * window;
    let capacity = limit * window;
    let reset_after_ms = to_u64(window - elapsed);
    if used <= capacity {
        return Decision {
            allowed: true,
            remaining: u32::try_from((capacity - used) / window).unwrap_or(u32::MAX),
            retry_after_ms: 0,
            reset_after_ms,
        };
    }
    // When would this request fit, if nobody else came meanwhile?
    let others = current.saturating_sub(cost);
    let retry_after = if others + cost <= limit && previous > 0 {
        // Later in this window, once enough of the previous one has faded.
        let needed = window - ((limit - others - cost) * window / previous).min(window);
        needed.saturating_sub(elapsed).max(1)
    } else if cost <= limit {
        // In the next window, with this window's count as the previous one.
        let faded = ((limit - cost) * window)
            .checked_div(others)
            .map_or(0, |room| window - room.min(window));
        window - elapsed + faded
    } else {
        // Never within one window: once everything before it has faded.
        window - elapsed + window
    };
    Decision {
        allowed: false,
        remaining: 0,
        retry_after_ms: to_u64(retry_after),
        reset_after_ms,
    }
}

fn to_u64(n: u128) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_specs() {
        assert_eq!(
            Quota::parse("60/1m"),
            Some(Quota {
                limit: 60,
                period_ms: 60_000,
                burst: 60
            })
        );
        assert_eq!(
            Quota::parse("1000/15m"),
            Some(Quota {
                limit: 1000,
                period_ms: 900_000,
                burst: 1000
            })
        );
        assert_eq!(
            Quota::parse("5/s").map(|q| q.with_burst(2)),
            Some(Quota {
                limit: 5,
                period_ms: 1000,
                burst: 2
            })
        );
        assert_eq!(Quota::parse("0/1m"), None);
        assert_eq!(Quota::parse("10/1y"), None);
        assert_eq!(Quota::parse("ten/1m"), None);
    }

    #[test]
    fn a_burst_is_a_shorter_window_at_the_same_rate() {
        let q = Quota::parse("1000/15m").unwrap().with_burst(100);
        assert_eq!(q.window_ms(), 90_000);
        assert_eq!(q.window_limit(), 100);
        assert_eq!(Quota::parse("60/1m").unwrap().window_ms(), 60_000);
    }

    #[test]
    fn admits_the_limit_then_refuses_until_the_previous_window_fades() {
        let q = Quota::parse("3/3s").unwrap();
        for (n, expected_remaining) in [(1, 2), (2, 1), (3, 0)] {
            let d = decide(&q, 0, 0, n);
            assert!(d.allowed);
            assert_eq!(d.remaining, expected_remaining);
            assert_eq!(d.reset_after_ms, 3_000);
        }
        let d = decide(&q, 0, 0, 4);
        assert!(!d.allowed);
        // Next window starts at 3 s with 3 behind it; one fits once a third faded.
        assert_eq!(d.retry_after_ms, 4_000);
        assert!(!decide(&q, 3_999, 3, 1).allowed);
        assert!(decide(&q, 4_000, 3, 1).allowed);
        // Half-way through a window after a full one, half the limit is back.
        assert_eq!(decide(&q, 4_500, 3, 1).remaining, 0);
        assert!(decide(&q, 4_500, 2, 1).allowed);
    }

    #[test]
    fn a_refusal_in_a_fading_window_waits_for_enough_fade() {
        let q = Quota::parse("10/10s").unwrap();
        // 1 s into a window that follows 10 requests, with 1 here already: est 9+1.
        let d = decide(&q, 11_000, 10, 2);
        assert!(!d.allowed);
        // Room for the 2nd at elapsed e where 10 * (10 - e)/10 + 2 <= 10: e >= 2 s.
        assert_eq!(d.retry_after_ms, 1_000);
        assert!(decide(&q, 12_000, 10, 2).allowed);
    }

    #[test]
    fn a_costly_request_waits_until_its_whole_cost_fits() {
        let q = Quota::parse("1000/10s").unwrap();
        // 600 charged before, 500 more asked for at 0 s: 1100 > 1000.
        let d = decide_cost(&q, 0, 0, 1100, 500);
        assert!(!d.allowed);
        // Next window: 600 * (10 - e)/10 + 500 <= 1000 once e >= 10/6 s.
        assert_eq!(d.retry_after_ms, 10_000 + 1_667);
        assert!(!decide_cost(&q, 11_666, 600, 500, 500).allowed);
        assert!(decide_cost(&q, 11_667, 600, 500, 500).allowed);
        // More than a window holds never fits in one: wait out two windows.
        let d = decide_cost(&q, 2_000, 0, 1500, 1500);
        assert_eq!(d.retry_after_ms, 18_000);
    }

    proptest! {
        /// However requests arrive, no fixed window admits more than the limit,
        /// and a fresh subject gets exactly the limit back to back.
        #[test]
        fn never_admits_more_than_the_limit_per_window(limit in 1u32..50, period_s in 1u64..120,
                gaps in proptest::collection::vec(0u64..3_000, 1..400)) {
            let q = Quota::parse(&format!("{limit}/{period_s}s")).unwrap();
            let mut counts = std::collections::HashMap::<u64, u64>::new();
            let mut admitted = std::collections::HashMap::<u64, u64>::new();
            let mut now = 0u64;
            for gap in gaps {
                now += gap;
                let w = q.window_index(now);
                let previous = w.checked_sub(1).and_then(|p| counts.get(&p)).copied().unwrap_or(0);
                let current = counts.entry(w).or_default();
                *current += 1;
                let d = decide(&q, now, previous, *current);
                if d.allowed {
                    *admitted.entry(w).or_default() += 1;
                } else {
                    *current -= 1;
                    prop_assert!(d.retry_after_ms > 0);
                }
                prop_assert!(admitted.get(&w).copied().unwrap_or(0) <= u64::from(limit));
            }
        }

        #[test]
        fn a_fresh_subject_gets_exactly_its_limit(limit in 1u32..200) {
            let q = Quota::parse(&format!("{limit}/1m")).unwrap();
            let admitted = (1..=u64::from(limit) + 5)
                .filter(|n| decide(&q, 0, 0, (*n).min(u64::from(limit) + 1)).allowed)
                .count();
            prop_assert_eq!(admitted, limit as usize);
        }
    }
}
