//! Provider key quotas in fixed windows (per minute, hour and day), counted
//! in Redis when `[routing] quota_redis_url` is set so that every origin
//! replica draws from one budget per key, or in this process otherwise.
//!
//! The in-process token buckets of [`super::keypool`] still pick the key with
//! the most headroom; this is the check that holds across processes. A key
//! whose window is spent rests until that window ends.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;

/// A deployment's per-key quotas; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaLimits {
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u32>,
    pub requests_per_hour: Option<u32>,
    pub requests_per_day: Option<u32>,
    pub tokens_per_day: Option<u32>,
}

/// One counter: what it counts, over how long, up to what.
struct Window {
    name: &'static str,
    length_ms: i64,
    limit: u32,
    tokens: bool,
}

/// Checks every window of a key and, only when all fit, adds to each.
/// Returns 0, or the milliseconds until the first full window ends.
/// KEYS: one counter per window. ARGV: now, then (limit, amount, length) per key.
const TAKE: &str = r"
local now = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[i * 3 - 1])
  local amount = tonumber(ARGV[i * 3])
  local length = tonumber(ARGV[i * 3 + 1])
  local used = tonumber(redis.call('GET', key) or '0')
  if amount > 0 and used + amount > limit then
    return length - (now % length)
  end
end
for i, key in ipairs(KEYS) do
  local amount = tonumber(ARGV[i * 3])
  local length = tonumber(ARGV[i * 3 + 1])
  if amount ~= 0 then
    redis.call('INCRBY', key, amount)
    redis.call('PEXPIRE', key, length - (now % length) + 1000)
  end
end
return 0
";

enum Backend {
    Redis {
        connection: redis::aio::ConnectionManager,
        script: redis::Script,
    },
    /// Counter name -> (window index, used).
    Local(Mutex<HashMap<String, (i64, u64)>>),
}

pub struct KeyQuota {
    /// `<prefix>{<deployment>}:`: one key's counters share a Redis Cluster slot.
    prefix: String,
    windows: Vec<Window>,
    backend: Backend,
}

#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    #[error("quota store: {0}")]
    Redis(#[from] redis::RedisError),
}

impl KeyQuota {
    /// `None` when no quota applies. With `redis`, counters are shared there.
    pub fn new(
        deployment: &str,
        limits: QuotaLimits,
        redis: Option<(&redis::aio::ConnectionManager, &str)>,
        use_shared_minute: bool,
    ) -> Option<KeyQuota> {
        let mut windows = Vec::new();
        let mut add = |name, length_ms, limit: Option<u32>, tokens| {
            if let Some(limit) = limit {
                windows.push(Window {
                    name,
                    length_ms,
                    limit,
                    tokens,
                });
            }
        };
        // Per-minute quotas are the key pool's buckets in one process; they
        // are counted here too only when shared.
        if use_shared_minute {
            add("rpm", MINUTE_MS, limits.requests_per_minute, false);
            add("tpm", MINUTE_MS, limits.tokens_per_minute, true);
        }
        add("rph", HOUR_MS, limits.requests_per_hour, false);
        add("rpd", DAY_MS, limits.requests_per_day, false);
        add("tpd", DAY_MS, limits.tokens_per_day, true);
        if windows.is_empty() {
            return None;
        }
        let (prefix, backend) = match redis {
            Some((connection, prefix)) => (
                format!("{prefix}{{{deployment}}}:"),
                Backend::Redis {
                    connection: connection.clone(),
                    script: redis::Script::new(TAKE),
                },
            ),
            None => (
                format!("{{{deployment}}}:"),
                Backend::Local(Mutex::default()),
            ),
        };
        Some(KeyQuota {
            prefix,
            windows,
            backend,
        })
    }

    /// A window's counter name (without the window's index) and the index
    /// of the window holding `now_ms`.
    fn counter(&self, key: &str, window: &Window, now_ms: i64) -> (String, i64) {
        (
            format!("{}{key}:{}", self.prefix, window.name),
            now_ms.div_euclid(window.length_ms),
        )
    }

    /// Takes one request and `tokens` from every window of `key`, all or
    /// none; `Err(rest)`: a window is spent and ends in `rest`.
    pub async fn take(
        &self,
        key: &str,
        tokens: u32,
        now_ms: i64,
    ) -> Result<Result<(), Duration>, QuotaError> {
        let amounts: Vec<i64> = self
            .windows
            .iter()
            .map(|w| if w.tokens { i64::from(tokens) } else { 1 })
            .collect();
        self.apply(key, &amounts, now_ms, true).await
    }

    /// Corrects the token windows of `key` by `delta` (actual use minus the
    /// estimate taken), without a limit check.
    pub async fn settle_tokens(
        &self,
        key: &str,
        delta: i64,
        now_ms: i64,
    ) -> Result<(), QuotaError> {
        if delta == 0 {
            return Ok(());
        }
        let amounts: Vec<i64> = self
            .windows
            .iter()
            .map(|w| if w.tokens { delta } else { 0 })
            .collect();
        self.apply(key, &amounts, now_ms, false).await.map(|_| ())
    }

    async fn apply(
        &self,
        key: &str,
        amounts: &[i64],
        now_ms: i64,
        checked: bool,
    ) -> Result<Result<(), Duration>, QuotaError> {
        match &self.backend {
            Backend::Redis { connection, script } => {
                let mut invocation = script.prepare_invoke();
                invocation.arg(now_ms);
                for (window, amount) in self.windows.iter().zip(amounts) {
                    let (name, index) = self.counter(key, window, now_ms);
                    invocation.key(format!("{name}:{index}"));
                    let limit = if checked {
                        i64::from(window.limit)
                    } else {
                        i64::MAX
                    };
                    invocation.arg(limit).arg(*amount).arg(window.length_ms);
                }
                let rest: i64 = invocation.invoke_async(&mut connection.clone()).await?;
                Ok(if rest > 0 {
                    Err(Duration::from_millis(rest as u64))
                } else {
                    Ok(())
                })
            }
            Backend::Local(counters) => {
                let mut counters = counters.lock().unwrap_or_else(|e| e.into_inner());
                let current = |counters: &HashMap<String, (i64, u64)>, name: &str, index: i64| {
                    counters
                        .get(name)
                        .filter(|(at, _)| *at == index)
                        .map_or(0, |(_, used)| *used)
                };
                if checked {
                    for (window, amount) in self.windows.iter().zip(amounts) {
                        let (name, index) = self.counter(key, window, now_ms);
                        let used = current(&counters, &name, index);
                        if *amount > 0 && used + *amount as u64 > u64::from(window.limit) {
                            let rest = window.length_ms - now_ms.rem_euclid(window.length_ms);
                            return Ok(Err(Duration::from_millis(rest as u64)));
                        }
                    }
                }
                for (window, amount) in self.windows.iter().zip(amounts) {
                    let (name, index) = self.counter(key, window, now_ms);
                    let used = current(&counters, &name, index);
                    let next = (used as i64 + amount).max(0) as u64;
                    // One entry per counter: a new window replaces the old.
                    counters.insert(name, (index, next));
                }
                Ok(Ok(()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> QuotaLimits {
        QuotaLimits {
            requests_per_hour: Some(3),
            tokens_per_day: Some(100),
            ..QuotaLimits::default()
        }
    }

    #[tokio::test]
    async fn windows_refuse_when_spent_and_reset_when_they_end() {
        let quota = KeyQuota::new("d", limits(), None, false).unwrap();
        let noon = 12 * HOUR_MS;
        for _ in 0..3 {
            assert_eq!(quota.take("key-1", 10, noon).await.unwrap(), Ok(()));
        }
        // The hour is spent; another key is not.
        assert_eq!(
            quota.take("key-1", 10, noon + 60_000).await.unwrap(),
            Err(Duration::from_millis((HOUR_MS - 60_000) as u64))
        );
        assert_eq!(quota.take("key-2", 10, noon).await.unwrap(), Ok(()));
        // The next hour admits again, until the day's tokens run out.
        assert_eq!(
            quota.take("key-1", 60, noon + HOUR_MS).await.unwrap(),
            Ok(())
        );
        assert!(
            quota
                .take("key-1", 20, noon + HOUR_MS)
                .await
                .unwrap()
                .is_err()
        );
        // Settling what a call really used gives tokens back.
        quota
            .settle_tokens("key-1", -50, noon + HOUR_MS)
            .await
            .unwrap();
        assert_eq!(
            quota.take("key-1", 20, noon + HOUR_MS).await.unwrap(),
            Ok(())
        );
    }

    #[test]
    fn no_limits_no_quota() {
        assert!(KeyQuota::new("d", QuotaLimits::default(), None, false).is_none());
        let minute_only = QuotaLimits {
            requests_per_minute: Some(5),
            ..QuotaLimits::default()
        };
        assert!(KeyQuota::new("d", minute_only, None, false).is_none());
        assert!(KeyQuota::new("d", minute_only, None, true).is_some());
    }
}
