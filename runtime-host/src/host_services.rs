//! The host services a component imports beside WASI and HTTP, in the versions
//! Spin serves: `wasi:keyvalue` (store + atomics, 0.2.0-draft2), backed by the
//! stores of `crate::kv`, and `wasi:config` for variables.

use crate::kv::{KvError, KvStore, Swap};
use crate::state::HostState;
use bytes::Bytes;
use std::sync::Arc;
use wasmtime::component::Resource;

/// Public so tests (and embedders) can generate bindings for worlds that
/// import these interfaces and map them here with bindgen's `with`.
pub mod bindings {
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

pub struct Bucket {
    store: Arc<KvStore>,
}

/// A compare-and-swap handle: the value the guest read, to compare at swap time.
pub struct Cas {
    store: Arc<KvStore>,
    key: String,
    seen: Option<Bytes>,
}

type Res<T> = wasmtime::Result<Result<T, store::Error>>;

fn store_error(e: KvError) -> store::Error {
    store::Error::Other(e.to_string())
}

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
        let store = self.table.get(&bucket)?.store.clone();
        Ok(store
            .get(&key)
            .await
            .map(|v| v.map(Vec::from))
            .map_err(store_error))
    }

    async fn set(&mut self, bucket: Resource<Bucket>, key: String, value: Vec<u8>) -> Res<()> {
        let store = self.table.get(&bucket)?.store.clone();
        Ok(store
            .set(key, Bytes::from(value))
            .await
            .map_err(store_error))
    }

    async fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> Res<()> {
        let store = self.table.get(&bucket)?.store.clone();
        Ok(store.delete(&key).await.map_err(store_error))
    }

    async fn exists(&mut self, bucket: Resource<Bucket>, key: String) -> Res<bool> {
        let store = self.table.get(&bucket)?.store.clone();
        Ok(store
            .get(&key)
            .await
            .map(|v| v.is_some())
            .map_err(store_error))
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<String>,
    ) -> Res<store::KeyResponse> {
        let store = self.table.get(&bucket)?.store.clone();
        Ok(store
            .list_keys(cursor)
            .await
            .map(|(keys, cursor)| store::KeyResponse { keys, cursor })
            .map_err(store_error))
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for HostState {
    async fn increment(&mut self, bucket: Resource<Bucket>, key: String, delta: i64) -> Res<i64> {
        let store = self.table.get(&bucket)?.store.clone();
        Ok(store.increment(key, delta).await.map_err(store_error))
    }

    async fn swap(
        &mut self,
        cas: Resource<Cas>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), atomics::CasError>> {
        let Cas { store, key, seen } = self.table.delete(cas)?;
        match store
            .compare_and_swap(key.clone(), seen, Bytes::from(value))
            .await
        {
            Ok(Swap::Done) => Ok(Ok(())),
            // Hand back a fresh handle holding what is stored now, so the guest can retry.
            Ok(Swap::Conflict(seen)) => {
                let retry = self.table.push(Cas { store, key, seen })?;
                Ok(Err(atomics::CasError::CasFailed(retry)))
            }
            Err(e) => Ok(Err(atomics::CasError::StoreError(store_error(e)))),
        }
    }
}

impl atomics::HostCas for HostState {
    async fn new(&mut self, bucket: Resource<Bucket>, key: String) -> Res<Resource<Cas>> {
        let store = self.table.get(&bucket)?.store.clone();
        let seen = match store.get(&key).await {
            Ok(seen) => seen,
            Err(e) => return Ok(Err(store_error(e))),
        };
        Ok(Ok(self.table.push(Cas { store, key, seen })?))
    }

    async fn current(&mut self, cas: Resource<Cas>) -> Res<Option<Vec<u8>>> {
        Ok(Ok(self.table.get(&cas)?.seen.as_ref().map(|s| s.to_vec())))
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
