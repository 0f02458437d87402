//! Generic cell rate algorithm: one number (the theoretical arrival time) per
//! subject and policy, so state stays bounded and updates are a single
//! compare-and-swap in a shared key-value store.

/// `limit` requests per `period_ms`, with up to `burst` admitted back to back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u32,
    pub period_ms: u64,
    pub burst: u32,
}

impl Quota {
    pub fn emission_interval_ms(&self) -> u64 {
        (self.period_ms / u64::from(self.limit.max(1))).max(1)
    }

    /// How far ahead of `now` the arrival time may run.
    fn tolerance_ms(&self) -> u64 {
        self.emission_interval_ms() * u64::from(self.burst.max(1))
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
    /// Until the subject is back to a full burst.
    pub reset_after_ms: u64,
    /// The arrival time to store; unchanged on denial.
    pub new_tat_ms: u64,
}

/// Decides one request given the stored arrival time (`None` for a new subject).
pub fn decide(quota: &Quota, stored_tat_ms: Option<u64>, now_ms: u64) -> Decision {
    let interval = quota.emission_interval_ms();
    let tolerance = quota.tolerance_ms();
    let tat = stored_tat_ms.unwrap_or(now_ms).max(now_ms);
    let new_tat = tat + interval;
    let ahead = new_tat - now_ms;
    if ahead > tolerance {
        let retry_after_ms = ahead - tolerance;
        return Decision {
            allowed: false,
            remaining: 0,
            retry_after_ms,
            reset_after_ms: tat - now_ms,
            new_tat_ms: tat,
        };
    }
    let remaining = ((tolerance - ahead) / interval).min(u64::from(u32::MAX)) as u32;
    Decision {
        allowed: true,
        remaining,
        retry_after_ms: 0,
        reset_after_ms: ahead,
        new_tat_ms: new_tat,
    }
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
    fn admits_burst_then_refuses_with_retry_after() {
        let q = Quota {
            limit: 3,
            period_ms: 3_000,
            burst: 3,
        };
        let mut tat = None;
        for expected_remaining in [2, 1, 0] {
            let d = decide(&q, tat, 0);
            assert!(d.allowed);
            assert_eq!(d.remaining, expected_remaining);
            tat = Some(d.new_tat_ms);
        }
        let d = decide(&q, tat, 0);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_ms, 1_000);
        assert!(decide(&q, tat, 1_000).allowed);
    }

    proptest! {
        /// Over any run of requests, admissions never exceed burst + elapsed/interval.
        #[test]
        fn never_admits_more_than_the_rate(limit in 1u32..100, period_s in 1u64..120,
                                           gaps in proptest::collection::vec(0u64..2_000, 1..400)) {
            let q = Quota { limit, period_ms: period_s * 1000, burst: limit };
            let interval = q.emission_interval_ms();
            let (mut now, mut tat, mut admitted) = (0u64, None, 0u64);
            for gap in gaps {
                now += gap;
                let d = decide(&q, tat, now);
                if d.allowed { admitted += 1; tat = Some(d.new_tat_ms); }
                prop_assert!(admitted <= u64::from(limit) + now / interval);
            }
        }
    }
}
