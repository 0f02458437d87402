//! The host services a component imports beside WASI and HTTP, in the versions
//! Spin serves: `wasi:keyvalue` (store + atomics, 0.2.0-draft2), backed by an
//! in-process map shared by every request, and `wasi:config` for variables.

use crate::state::HostState;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use wasmtime::component::Resource;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "sluice:edge/host-services",
        imports: { default: async | trappable },
        with: {
            "wasi:keyvalue/store.bucket": super::Bucket,
            "wasi:keyvalue/atomics.cas": super::Cas,
        },
    });
}

pub use bindings::HostServices;
use bindings::wasi::keyvalue::{atomics, store};

/// A value and a version that changes on every write, for compare-and-swap.
#[derive(Clone)]
struct Slot {
    value: Vec<u8>,
    version: u64,
}

/// One named store (a `key_value_stores` label).
#[derive(Default)]
pub struct MemoryStore {
    entries: Mutex<HashMap<String, Slot>>,
}

impl MemoryStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        // A poisoned map still holds consistent slots: each write is one insert.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Every store the host serves, by label.
#[derive(Default, Clone)]
pub struct Stores(Arc<HashMap<String, Arc<MemoryStore>>>);

impl Stores {
    pub fn new(labels: impl IntoIterator<Item = String>) -> Stores {
        Stores(Arc::new(
            labels.into_iter().map(|l| (l, Arc::default())).collect(),
        ))
    }

    fn get(&self, label: &str) -> Option<Arc<MemoryStore>> {
        self.0.get(label).cloned()
    }
}

pub struct Bucket {
    store: Arc<MemoryStore>,
}

pub struct Cas {
    store: Arc<MemoryStore>,
    key: String,
    seen: Option<Slot>,
}

static VERSION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn next_version() -> u64 {
    VERSION.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

type Res<T> = wasmtime::Result<Result<T, store::Error>>;

impl store::Host for HostState {
    async fn open(&mut self, identifier: String) -> Res<Resource<Bucket>> {
        if !self.component.key_value_stores.contains(&identifier) {
            return Ok(Err(store::Error::AccessDenied));
        }
        let Some(store) = self.stores.get(&identifier) else {
            return Ok(Err(store::Error::NoSuchStore));
        };
        Ok(Ok(self.table.push(Bucket { store })?))
    }
}

impl store::HostBucket for HostState {
    async fn get(&mut self, bucket: Resource<Bucket>, key: String) -> Res<Option<Vec<u8>>> {
        let store = &self.table.get(&bucket)?.store;
        Ok(Ok(store.lock().get(&key).map(|s| s.value.clone())))
    }

    async fn set(&mut self, bucket: Resource<Bucket>, key: String, value: Vec<u8>) -> Res<()> {
        let store = &self.table.get(&bucket)?.store;
        store.lock().insert(
            key,
            Slot {
                value,
                version: next_version(),
            },
        );
        Ok(Ok(()))
    }

    async fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> Res<()> {
        self.table.get(&bucket)?.store.lock().remove(&key);
        Ok(Ok(()))
    }

    async fn exists(&mut self, bucket: Resource<Bucket>, key: String) -> Res<bool> {
        Ok(Ok(self.table.get(&bucket)?.store.lock().contains_key(&key)))
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        _cursor: Option<String>,
    ) -> Res<store::KeyResponse> {
        let keys = self
            .table
            .get(&bucket)?
            .store
            .lock()
            .keys()
            .cloned()
            .collect();
        Ok(Ok(store::KeyResponse { keys, cursor: None }))
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for HostState {
    async fn increment(&mut self, bucket: Resource<Bucket>, key: String, delta: i64) -> Res<i64> {
        let store = &self.table.get(&bucket)?.store;
        let mut map = store.lock();
        let current = match map.get(&key) {
            None => 0,
            Some(slot) => match std::str::from_utf8(&slot.value)
                .ok()
                .and_then(|v| v.parse::<i64>().ok())
            {
                Some(n) => n,
                None => {
                    return Ok(Err(store::Error::Other(format!(
                        "value of `{key}` is not an integer"
                    ))));
                }
            },
        };
        let next = current.saturating_add(delta);
        map.insert(
            key,
            Slot {
                value: next.to_string().into_bytes(),
                version: next_version(),
            },
        );
        Ok(Ok(next))
    }

    async fn swap(
        &mut self,
        cas: Resource<Cas>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), atomics::CasError>> {
        let cas_entry = self.table.delete(cas)?;
        let mut map = cas_entry.store.lock();
        let unchanged = map.get(&cas_entry.key).map(|s| s.version)
            == cas_entry.seen.as_ref().map(|s| s.version);
        if !unchanged {
            // Hand back a fresh handle holding what is stored now, so the guest can retry.
            let seen = map.get(&cas_entry.key).cloned();
            drop(map);
            let retry = self.table.push(Cas {
                store: cas_entry.store.clone(),
                key: cas_entry.key.clone(),
                seen,
            })?;
            return Ok(Err(atomics::CasError::CasFailed(retry)));
        }
        map.insert(
            cas_entry.key.clone(),
            Slot {
                value,
                version: next_version(),
            },
        );
        Ok(Ok(()))
    }
}

impl atomics::HostCas for HostState {
    async fn new(&mut self, bucket: Resource<Bucket>, key: String) -> Res<Resource<Cas>> {
        let store = self.table.get(&bucket)?.store.clone();
        let seen = store.lock().get(&key).cloned();
        Ok(Ok(self.table.push(Cas { store, key, seen })?))
    }

    async fn current(&mut self, cas: Resource<Cas>) -> Res<Option<Vec<u8>>> {
        Ok(Ok(self
            .table
            .get(&cas)?
            .seen
            .as_ref()
            .map(|s| s.value.clone())))
    }

    async fn drop(&mut self, cas: Resource<Cas>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}

impl bindings::wasi::config::store::Host for HostState {
    async fn get(
        &mut self,
        key: String,
    ) -> wasmtime::Result<Result<Option<String>, bindings::wasi::config::store::Error>> {
        Ok(Ok(self.component.variables.get(&key).cloned()))
    }

    async fn get_all(
        &mut self,
    ) -> wasmtime::Result<Result<Vec<(String, String)>, bindings::wasi::config::store::Error>> {
        Ok(Ok(self
            .component
            .variables
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()))
    }
}

/// Adds key-value and variables to a linker.
pub fn add_to_linker(linker: &mut wasmtime::component::Linker<HostState>) -> wasmtime::Result<()> {
    HostServices::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(linker, |s| s)
}
