//! The origin's read cache, in two levels: L1 in this process (moka: bounded,
//! with a TTL, and one load per key at a time so a burst of misses on one key
//! makes one database query), and L2 in Redis, shared by every origin
//! instance (optional; without it each instance keeps its own L1 only).
//!
//! Invalidation is by version: every key carries its scope's version number
//! (one scope per subject), and a write raises that number, so every entry
//! stored under the old one becomes unreachable at once, in every instance.
//! Versions come from the clock (`max(current + 1, now_ms)`), so a version
//! that was evicted never comes back lower than one already used.
//!
//! When L2 cannot be reached, L1 keeps serving, bounded and with its TTL,
//! under the last version this instance saw (or one of its own), and this
//! instance's writes raise that local version, so it never serves its own
//! stale entries; other instances' writes in the meantime are seen once their
//! entries here expire (at most `ttl_secs`). When L2 answers again, L1 starts
//! over, since it may hold entries L2's versions no longer vouch for.

use crate::clock::now_ms;
use crate::config::CacheConfig;
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Raises a version to `max(current + 1, now_ms)` atomically; returns it.
const RAISE_VERSION: &str = r"
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local next = math.max(current + 1, tonumber(ARGV[1]))
redis.call('SET', KEYS[1], next, 'PX', ARGV[2])
return next
";

/// Bound on Redis calls: past it the cache is skipped, not waited for.
const REDIS_TIMEOUT: Duration = Duration::from_millis(250);

/// A Redis health probe bounded like every cache call.
pub(crate) async fn ping(connection: &redis::aio::ConnectionManager) -> bool {
    let mut connection = connection.clone();
    let reply = tokio::time::timeout(
        REDIS_TIMEOUT,
        redis::cmd("PING").query_async::<String>(&mut connection),
    )
    .await;
    matches!(reply, Ok(Ok(_)))
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct CacheStats {
    pub l1_hits: u64,
    pub l2_hits: u64,
    pub misses: u64,
    pub l2_errors: u64,
    pub l1_entries: u64,
}

#[derive(Default)]
struct Counters {
    l1_hits: AtomicU64,
    l2_hits: AtomicU64,
    misses: AtomicU64,
    l2_errors: AtomicU64,
}

struct L2 {
    connection: redis::aio::ConnectionManager,
    raise: redis::Script,
    healthy: AtomicBool,
}

struct Inner {
    enabled: bool,
    l1: moka::future::Cache<String, Bytes>,
    /// Scope versions without L2; with L2 (which holds them), the last seen
    /// and any raised while it was unreachable.
    versions: moka::sync::Cache<String, u64>,
    l2: Option<L2>,
    ttl: Duration,
    prefix: String,
    counters: Counters,
}

#[derive(Clone)]
pub struct OriginCache {
    inner: Arc<Inner>,
}

impl OriginCache {
    /// Connects to Redis lazily, so the origin starts (and serves from the
    /// database) while Redis is down. Needs a Tokio runtime when L2 is set.
    pub fn new(config: &CacheConfig) -> Result<OriginCache, redis::RedisError> {
        let ttl = Duration::from_secs(config.ttl_secs);
        let l2 = match &config.redis_url {
            None => None,
            Some(url) => {
                let client = redis::Client::open(url.as_str())?;
                let settings = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(REDIS_TIMEOUT))
                    .set_response_timeout(Some(REDIS_TIMEOUT))
                    .set_number_of_retries(1);
                Some(L2 {
                    connection: client.get_connection_manager_lazy(settings)?,
                    raise: redis::Script::new(RAISE_VERSION),
                    healthy: AtomicBool::new(true),
                })
            }
        };
        Ok(OriginCache {
            inner: Arc::new(Inner {
                enabled: config.enabled,
                l1: moka::future::Cache::builder()
                    .max_capacity(config.l1_max_entries)
                    .time_to_live(ttl)
                    .eviction_listener(|_, _, cause| {
                        let cause = match cause {
                            moka::notification::RemovalCause::Size => "size",
                            moka::notification::RemovalCause::Expired => "expired",
                            _ => return,
                        };
                        metrics::counter!("sluice_origin_cache_evictions_total", "cause" => cause)
                            .increment(1);
                    })
                    .build(),
                versions: moka::sync::Cache::builder()
                    .max_capacity(config.l1_max_entries)
                    .build(),
                l2,
                ttl,
                prefix: config.key_prefix.clone(),
                counters: Counters::default(),
            }),
        })
    }

    pub fn stats(&self) -> CacheStats {
        let c = &self.inner.counters;
        CacheStats {
            l1_hits: c.l1_hits.load(Ordering::Relaxed),
            l2_hits: c.l2_hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            l2_errors: c.l2_errors.load(Ordering::Relaxed),
            l1_entries: self.inner.l1.entry_count(),
        }
    }

    /// L1's entries, its pending inserts and evictions applied first.
    pub async fn entries(&self) -> u64 {
        self.inner.l1.run_pending_tasks().await;
        self.inner.l1.entry_count()
    }

    /// Whether the shared L2 answers a `PING` in time; `None` without L2.
    pub async fn ping(&self) -> Option<bool> {
        let l2 = self.inner.l2.as_ref()?;
        Some(ping(&l2.connection).await)
    }

    fn version_key(&self, scope: &str) -> String {
        format!("{}version:{scope}", self.inner.prefix)
    }

    /// Counts an L2 failure, logging only when L2 goes down or comes back.
    fn observe<T>(&self, result: Result<T, redis::RedisError>) -> Option<T> {
        let l2 = self.inner.l2.as_ref()?;
        match result {
            Ok(value) => {
                if !l2.healthy.swap(true, Ordering::Relaxed) {
                    self.inner.l1.invalidate_all();
                    self.inner.versions.invalidate_all();
                    tracing::info!(
                        event = "origin_cache_l2_up",
                        "redis cache reachable again; L1 starts over"
                    );
                }
                Some(value)
            }
            Err(e) => {
                self.inner
                    .counters
                    .l2_errors
                    .fetch_add(1, Ordering::Relaxed);
                metrics::counter!("sluice_origin_cache_l2_errors_total").increment(1);
                if l2.healthy.swap(false, Ordering::Relaxed) {
                    tracing::warn!(event = "origin_cache_l2_down", error = %e,
                        "redis cache unreachable; serving from L1 and the database");
                }
                None
            }
        }
    }

    /// The scope's current version: L2's, else (without L2, or while it is
    /// unreachable) this instance's own.
    async fn version(&self, scope: &str) -> Option<u64> {
        let now = u64::try_from(now_ms()).unwrap_or(0);
        let local = || Some(self.inner.versions.get_with(scope.to_string(), || now));
        let Some(l2) = &self.inner.l2 else {
            return local();
        };
        let key = self.version_key(scope);
        let mut connection = l2.connection.clone();
        let current: Result<Option<u64>, _> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut connection)
            .await;
        let Some(current) = self.observe(current) else {
            return local();
        };
        let version = match current {
            Some(version) => Some(version),
            None => self.raise(scope).await,
        };
        if let Some(version) = version
            && self.inner.versions.get(scope) != Some(version)
        {
            // What L1 goes on with should L2 become unreachable.
            self.inner.versions.insert(scope.to_string(), version);
        }
        version
    }

    /// Raises this instance's own version of `scope`.
    fn raise_local(&self, scope: &str) -> u64 {
        let now = u64::try_from(now_ms()).unwrap_or(0);
        let next = self
            .inner
            .versions
            .get(scope)
            .map_or(now, |current| (current + 1).max(now));
        self.inner.versions.insert(scope.to_string(), next);
        next
    }

    /// Raises the scope's version in L2 (`None` when unreachable: then only
    /// this instance's own version is raised).
    async fn raise(&self, scope: &str) -> Option<u64> {
        let now = u64::try_from(now_ms()).unwrap_or(0);
        let Some(l2) = &self.inner.l2 else {
            return Some(self.raise_local(scope));
        };
        // Versions outlive the entries they guard by far, so none is
        // forgotten while an entry stored under it can still be read.
        let keep_ms = self.inner.ttl.as_millis().saturating_mul(4).max(60_000);
        let raised = l2
            .raise
            .key(self.version_key(scope))
            .arg(now)
            .arg(u64::try_from(keep_ms).unwrap_or(u64::MAX))
            .invoke_async(&mut l2.connection.clone())
            .await;
        let raised = self.observe(raised);
        if raised.is_none() {
            self.raise_local(scope);
        }
        raised
    }

    /// Makes every entry of `scope` stale, here and in every other instance.
    pub async fn invalidate(&self, scope: &str) {
        if self.inner.enabled && self.raise(scope).await.is_none() {
            tracing::warn!(
                event = "origin_cache_invalidation_failed",
                scope,
                "redis unreachable: other instances may serve this scope's entries until they expire"
            );
        }
    }

    /// The cached value of `key` in `scope`, or `load`'s (stored on the way).
    /// Errors are not cached. Concurrent callers for one key share one load.
    pub async fn get_or_load<T, E, F>(
        &self,
        scope: &str,
        key: &str,
        load: impl Fn() -> F,
    ) -> Result<T, Arc<E>>
    where
        T: Serialize + DeserializeOwned,
        E: Send + Sync + 'static,
        F: Future<Output = Result<T, E>>,
    {
        let version = if self.inner.enabled {
            self.version(scope).await
        } else {
            None
        };
        let Some(version) = version else {
            self.inner.counters.misses.fetch_add(1, Ordering::Relaxed);
            return load().await.map_err(Arc::new);
        };
        // The type's name keeps two types from ever sharing a key.
        let full_key = format!(
            "{}{scope}:{version}:{}:{key}",
            self.inner.prefix,
            std::any::type_name::<T>()
        );
        let loaded = AtomicBool::new(false);
        let bytes = self
            .inner
            .l1
            .try_get_with(full_key.clone(), async {
                loaded.store(true, Ordering::Relaxed);
                self.load_through_l2(&full_key, load()).await
            })
            .await?;
        if !loaded.load(Ordering::Relaxed) {
            self.inner.counters.l1_hits.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("sluice_origin_cache_requests_total", "result" => "l1_hit")
                .increment(1);
        }
        match serde_json::from_slice(&bytes) {
            Ok(value) => Ok(value),
            // Written by another build of the origin sharing L2, say: drop it.
            Err(e) => {
                tracing::warn!(event = "origin_cache_unreadable", error = %e, key = full_key,
                    "entry dropped");
                self.inner.l1.invalidate(&full_key).await;
                load().await.map_err(Arc::new)
            }
        }
    }

    async fn load_through_l2<T, E, F>(&self, full_key: &str, load: F) -> Result<Bytes, E>
    where
        T: Serialize,
        F: Future<Output = Result<T, E>>,
    {
        if let Some(l2) = &self.inner.l2 {
            let found: Result<Option<Vec<u8>>, _> = redis::cmd("GET")
                .arg(full_key)
                .query_async(&mut l2.connection.clone())
                .await;
            if let Some(Some(bytes)) = self.observe(found) {
                self.inner.counters.l2_hits.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("sluice_origin_cache_requests_total", "result" => "l2_hit")
                    .increment(1);
                return Ok(Bytes::from(bytes));
            }
        }
        self.inner.counters.misses.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("sluice_origin_cache_requests_total", "result" => "miss").increment(1);
        let value = load.await?;
        let bytes = Bytes::from(serde_json::to_vec(&value).unwrap_or_default());
        if let Some(l2) = &self.inner.l2 {
            let stored: Result<(), _> = redis::cmd("SET")
                .arg(full_key)
                .arg(bytes.as_ref())
                .arg("EX")
                .arg(self.inner.ttl.as_secs().max(1))
                .query_async(&mut l2.connection.clone())
                .await;
            self.observe(stored);
        }
        Ok(bytes)
    }
}
