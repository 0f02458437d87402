//! Key-value backends behind `wasi:keyvalue`: a bounded in-process store (the
//! local default) and Redis (shared by several hosts), chosen per store label by
//! `runtime-config.toml`.
//!
//! Compare-and-swap compares values, not versions, on both backends: a swap
//! succeeds when the key still holds exactly what the guest read. Redis has no
//! version to compare without WATCH (one connection per transaction), and for
//! what the edge swaps (cache generations, which only rise) an A-B-A change is harmless.

use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error("value of `{0}` is not an integer")]
    NotInteger(String),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// Outcome of a compare-and-swap.
#[derive(Debug, PartialEq, Eq)]
pub enum Swap {
    Done,
    /// The key changed since it was read; carries what it holds now.
    Conflict(Option<Bytes>),
}

/// One store label's backend.
pub enum KvStore {
    Memory(MemoryStore),
    Redis(RedisStore),
    /// Another store as Spin 4.0.2's Redis store behaves: every swap is
    /// reported as failed, also the ones it wrote (Spin ends each swap with
    /// `UNWATCH <key>`, which Redis refuses). Only for the conformance tests,
    /// which must show the policies correct on it; no runtime config selects it.
    SwapReportsFailure(Box<KvStore>),
}

impl KvStore {
    fn backend(&self) -> &'static str {
        match self {
            KvStore::Memory(_) => "memory",
            KvStore::Redis(_) => "redis",
            KvStore::SwapReportsFailure(inner) => inner.backend(),
        }
    }

    /// Times one operation into `sluice_host_kv_operation_duration_seconds`
    /// and counts its failures.
    async fn timed<T>(
        &self,
        op: &'static str,
        operation: impl Future<Output = Result<T, KvError>>,
    ) -> Result<T, KvError> {
        let started = std::time::Instant::now();
        let result = operation.await;
        let backend = self.backend();
        metrics::histogram!("sluice_host_kv_operation_duration_seconds", "backend" => backend, "op" => op)
            .record(started.elapsed().as_secs_f64());
        if result.is_err() {
            metrics::counter!("sluice_host_kv_errors_total", "backend" => backend, "op" => op)
                .increment(1);
        }
        result
    }

    /// Entries held, for the in-memory store (a Redis store's are Redis's).
    pub fn entries(&self) -> Option<u64> {
        match self {
            KvStore::Memory(m) => {
                m.entries.run_pending_tasks();
                Some(m.entries.entry_count())
            }
            KvStore::Redis(_) => None,
            KvStore::SwapReportsFailure(inner) => inner.entries(),
        }
    }

    /// Whether the backend answers; `None` for memory, which always does.
    pub async fn ping(&self) -> Option<bool> {
        match self {
            KvStore::Memory(_) => None,
            KvStore::Redis(r) => {
                let reply: Result<String, _> =
                    redis::cmd("PING").query_async(&mut r.connection()).await;
                Some(r.observe(reply.map_err(KvError::from)).is_ok())
            }
            KvStore::SwapReportsFailure(inner) => Box::pin(inner.ping()).await,
        }
    }

    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, KvError> {
        self.timed("get", async move {
            match self {
                KvStore::Memory(m) => Ok(m.entries.get(key)),
                KvStore::Redis(r) => r.observe(r.get(key).await),
                KvStore::SwapReportsFailure(inner) => Box::pin(inner.get(key)).await,
            }
        })
        .await
    }

    pub async fn set(&self, key: String, value: Bytes) -> Result<(), KvError> {
        self.timed("set", async move {
            match self {
                KvStore::Memory(m) => {
                    m.entries.insert(key, value);
                    Ok(())
                }
                KvStore::Redis(r) => r.observe(r.set(&key, &value).await),
                KvStore::SwapReportsFailure(inner) => Box::pin(inner.set(key, value)).await,
            }
        })
        .await
    }

    pub async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.timed("delete", async move {
            match self {
                KvStore::Memory(m) => {
                    m.entries.invalidate(key);
                    Ok(())
                }
                KvStore::Redis(r) => r.observe(r.delete(key).await),
                KvStore::SwapReportsFailure(inner) => Box::pin(inner.delete(key)).await,
            }
        })
        .await
    }

    /// One page of keys and the cursor for the next page (`None` at the end).
    pub async fn list_keys(
        &self,
        cursor: Option<String>,
    ) -> Result<(Vec<String>, Option<String>), KvError> {
        self.timed("list_keys", async move {
            match self {
                KvStore::Memory(m) => {
                    Ok((m.entries.iter().map(|(k, _)| (*k).clone()).collect(), None))
                }
                KvStore::Redis(r) => r.observe(r.scan(cursor).await),
                KvStore::SwapReportsFailure(inner) => Box::pin(inner.list_keys(cursor)).await,
            }
        })
        .await
    }

    pub async fn increment(&self, key: String, delta: i64) -> Result<i64, KvError> {
        self.timed("increment", async move {
            match self {
                KvStore::Memory(m) => m.increment(key, delta),
                KvStore::Redis(r) => r.observe(r.increment(&key, delta).await),
                KvStore::SwapReportsFailure(inner) => Box::pin(inner.increment(key, delta)).await,
            }
        })
        .await
    }

    /// Writes `value` only if the key still holds `expected` (`None`: absent).
    pub async fn compare_and_swap(
        &self,
        key: String,
        expected: Option<Bytes>,
        value: Bytes,
    ) -> Result<Swap, KvError> {
        self.timed("compare_and_swap", async move {
            match self {
                KvStore::Memory(m) => Ok(m.compare_and_swap(key, expected, value)),
                KvStore::Redis(r) => r.observe(r.compare_and_swap(&key, expected, &value).await),
                KvStore::SwapReportsFailure(inner) => {
                    match Box::pin(inner.compare_and_swap(key.clone(), expected, value)).await? {
                        // Written, yet reported as a conflict with what is stored now.
                        Swap::Done => Ok(Swap::Conflict(Box::pin(inner.get(&key)).await?)),
                        conflict => Ok(conflict),
                    }
                }
            }
        })
        .await
    }
}

/// In-process store bounded by the bytes of its keys and values; the least
/// recently used entries go first when it is full. State lives as long as the
/// process, like Spin's local store without a file.
///
/// Counters are kept as Spin's default (SQLite) store keeps them: 8-byte
/// little-endian integers. `increment` on any other value is an error (Spin
/// panics there), so a component that mixes `set` and `increment` on one key
/// fails here as it would on Spin, instead of working by accident.
pub struct MemoryStore {
    entries: moka::sync::Cache<String, Bytes>,
}

impl MemoryStore {
    pub fn new(max_bytes: u64) -> MemoryStore {
        MemoryStore {
            entries: moka::sync::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|k: &String, v: &Bytes| {
                    u32::try_from(k.len() + v.len() + 64).unwrap_or(u32::MAX)
                })
                // Plain LRU: TinyLFU's admission filter could refuse a new
                // rate-limit record, which would let that subject start over.
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                // Only evictions for space: replaced and deleted entries are not.
                .eviction_listener(|_, _, cause| {
                    if cause == moka::notification::RemovalCause::Size {
                        metrics::counter!("sluice_host_kv_evictions_total").increment(1);
                    }
                })
                .build(),
        }
    }

    fn increment(&self, key: String, delta: i64) -> Result<i64, KvError> {
        let mut outcome = Ok(0);
        self.entries.entry(key.clone()).and_compute_with(|current| {
            let current = match current {
                None => 0,
                Some(entry) => match <[u8; 8]>::try_from(entry.value().as_ref()) {
                    Ok(bytes) => i64::from_le_bytes(bytes),
                    Err(_) => {
                        outcome = Err(KvError::NotInteger(key));
                        return moka::ops::compute::Op::Nop;
                    }
                },
            };
            let next = current.wrapping_add(delta);
            outcome = Ok(next);
            moka::ops::compute::Op::Put(Bytes::copy_from_slice(&next.to_le_bytes()))
        });
        outcome
    }

    fn compare_and_swap(&self, key: String, expected: Option<Bytes>, value: Bytes) -> Swap {
        let mut outcome = Swap::Done;
        self.entries.entry(key).and_compute_with(|current| {
            let current = current.map(|e| e.into_value());
            if current == expected {
                moka::ops::compute::Op::Put(value)
            } else {
                outcome = Swap::Conflict(current);
                moka::ops::compute::Op::Nop
            }
        });
        outcome
    }
}

/// Connections per Redis store. Each is multiplexed (many requests in flight on
/// one socket); a few spread the load over Redis's socket handling.
const REDIS_CONNECTIONS: usize = 4;
/// How long one Redis operation may take before the policy's fail mode decides.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

/// Swaps only if the key holds ARGV[2] (ARGV[1] = '1') or is absent (ARGV[1] = '0').
/// Returns {1} on success, {0, current} (or {0} when absent) on conflict.
const CAS_SCRIPT: &str = r"
local current = redis.call('GET', KEYS[1])
local matches
if ARGV[1] == '0' then matches = (current == false) else matches = (current == ARGV[2]) end
if matches then
  redis.call('SET', KEYS[1], ARGV[3])
  return {1}
end
if current then return {0, current} end
return {0}
";

/// A Redis store: keys are used as the guest names them, as Spin does, so a
/// Spin deployment and the runtime-host on the same Redis see the same data.
pub struct RedisStore {
    url: String,
    connections: Vec<redis::aio::ConnectionManager>,
    next: AtomicU64,
    cas: redis::Script,
    healthy: AtomicBool,
}

impl RedisStore {
    /// Connects lazily, so the host starts while Redis is down and recovers by
    /// itself when it returns. Needs a Tokio runtime.
    pub fn new(url: &str) -> Result<RedisStore, KvError> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(2));
        let connections = (0..REDIS_CONNECTIONS)
            .map(|_| client.get_connection_manager_lazy(config.clone()))
            .collect::<Result<_, _>>()?;
        Ok(RedisStore {
            url: redact(url),
            connections,
            next: AtomicU64::new(0),
            cas: redis::Script::new(CAS_SCRIPT),
            healthy: AtomicBool::new(true),
        })
    }

    fn connection(&self) -> redis::aio::ConnectionManager {
        let i = self.next.fetch_add(1, Ordering::Relaxed) as usize % self.connections.len();
        self.connections[i].clone()
    }

    /// Counts failures and logs only when the store goes down or comes back.
    fn observe<T>(&self, result: Result<T, KvError>) -> Result<T, KvError> {
        match &result {
            Ok(_) => {
                if !self.healthy.swap(true, Ordering::Relaxed) {
                    tracing::info!(url = %self.url, "redis key-value store reachable again");
                }
            }
            Err(e) => {
                if self.healthy.swap(false, Ordering::Relaxed) {
                    tracing::warn!(url = %self.url, error = %e, "redis key-value store unreachable");
                }
            }
        }
        result
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, KvError> {
        let value: Option<Vec<u8>> = redis::cmd("GET")
            .arg(key)
            .query_async(&mut self.connection())
            .await?;
        Ok(value.map(Bytes::from))
    }

    async fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        let () = redis::cmd("SET")
            .arg(key)
            .arg(value)
            .query_async(&mut self.connection())
            .await?;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), KvError> {
        let _: i64 = redis::cmd("DEL")
            .arg(key)
            .query_async(&mut self.connection())
            .await?;
        Ok(())
    }

    async fn scan(&self, cursor: Option<String>) -> Result<(Vec<String>, Option<String>), KvError> {
        let (next, keys): (String, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor.as_deref().unwrap_or("0"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut self.connection())
            .await?;
        Ok((keys, (next != "0").then_some(next)))
    }

    async fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        redis::cmd("INCRBY")
            .arg(key)
            .arg(delta)
            .query_async(&mut self.connection())
            .await
            .map_err(|e| match e.kind() {
                redis::ErrorKind::Server(_) => KvError::NotInteger(key.to_string()),
                _ => KvError::Redis(e),
            })
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<Bytes>,
        value: &[u8],
    ) -> Result<Swap, KvError> {
        let mut invocation = self.cas.key(key);
        match &expected {
            Some(bytes) => invocation.arg("1").arg(bytes.as_ref()),
            None => invocation.arg("0").arg(""),
        };
        let reply: Vec<redis::Value> = invocation
            .arg(value)
            .invoke_async(&mut self.connection())
            .await?;
        match reply.as_slice() {
            [redis::Value::Int(1)] => Ok(Swap::Done),
            [redis::Value::Int(0)] => Ok(Swap::Conflict(None)),
            [redis::Value::Int(0), redis::Value::BulkString(current)] => {
                Ok(Swap::Conflict(Some(Bytes::from(current.clone()))))
            }
            other => Err(KvError::Redis(redis::RedisError::from((
                redis::ErrorKind::Client,
                "unexpected compare-and-swap reply",
                format!("{other:?}"),
            )))),
        }
    }
}

/// The URL without its password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***{}", &url[..scheme], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// Every store the host serves, by label.
#[derive(Default, Clone)]
pub struct Stores(Arc<std::collections::HashMap<String, Arc<KvStore>>>);

impl Stores {
    pub fn new(stores: impl IntoIterator<Item = (String, KvStore)>) -> Stores {
        Stores(Arc::new(
            stores.into_iter().map(|(l, s)| (l, Arc::new(s))).collect(),
        ))
    }

    pub fn get(&self, label: &str) -> Option<Arc<KvStore>> {
        self.0.get(label).cloned()
    }

    /// Each in-memory store, by label, and how many entries it holds.
    pub fn entries(&self) -> Vec<(String, u64)> {
        self.0
            .iter()
            .filter_map(|(label, store)| Some((label.clone(), store.entries()?)))
            .collect()
    }

    /// Each store that has a remote backend, by label, and whether it answers.
    pub async fn ping(&self) -> Vec<(String, bool)> {
        let mut out = Vec::new();
        for (label, store) in self.0.iter() {
            if let Some(up) = store.ping().await {
                out.push((label.clone(), up));
            }
        }
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_compare_and_swap_and_increment() {
        let store = KvStore::Memory(MemoryStore::new(1 << 20));
        let k = || "k".to_string();
        assert_eq!(
            store
                .compare_and_swap(k(), None, Bytes::from("1"))
                .await
                .unwrap(),
            Swap::Done
        );
        assert_eq!(
            store
                .compare_and_swap(k(), None, Bytes::from("2"))
                .await
                .unwrap(),
            Swap::Conflict(Some(Bytes::from("1")))
        );
        assert_eq!(
            store
                .compare_and_swap(k(), Some(Bytes::from("1")), Bytes::from("2"))
                .await
                .unwrap(),
            Swap::Done
        );
        // Counters are 8-byte little-endian, as in Spin's default store, and
        // `increment` refuses anything else (a decimal swap value included).
        assert!(matches!(
            store.increment(k(), 5).await,
            Err(KvError::NotInteger(_))
        ));
        assert_eq!(store.increment("n".into(), 5).await.unwrap(), 5);
        assert_eq!(store.increment("n".into(), -7).await.unwrap(), -2);
        assert_eq!(
            store.get("n").await.unwrap(),
            Some(Bytes::copy_from_slice(&(-2i64).to_le_bytes()))
        );
        store
            .set("t".into(), Bytes::from("12345678"))
            .await
            .unwrap();
        assert_eq!(
            store.increment("t".into(), 0).await.unwrap(),
            i64::from_le_bytes(*b"12345678")
        );
    }

    #[test]
    fn memory_store_stays_within_its_bound() {
        let store = MemoryStore::new(64 * 1024);
        for i in 0..10_000 {
            store
                .entries
                .insert(format!("key-{i}"), Bytes::from(vec![0u8; 100]));
        }
        store.entries.run_pending_tasks();
        assert!(
            store.entries.weighted_size() <= 64 * 1024,
            "{}",
            store.entries.weighted_size()
        );
        assert!(store.entries.entry_count() > 100);
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("redis://:pw@host:6379/0"), "redis://***@host:6379/0");
        assert_eq!(redact("redis://host:6379"), "redis://host:6379");
    }
}
