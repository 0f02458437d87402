//! The one store-state struct: a context per capability plus resource limits.

use crate::kv::Stores;
use crate::outbound::OutboundPolicy;
use crate::outbound_http::OutboundClient;
use std::collections::BTreeMap;
use std::sync::Arc;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

/// What one component may see and do, resolved once at startup.
pub struct ComponentConfig {
    pub id: String,
    pub key_value_stores: Vec<String>,
    pub variables: BTreeMap<String, String>,
    pub environment: Vec<(String, String)>,
    pub outbound: OutboundPolicy,
}

pub struct HostState {
    pub wasi: WasiCtx,
    pub http: WasiHttpCtx,
    pub table: ResourceTable,
    pub limits: Limiter,
    pub component: Arc<ComponentConfig>,
    pub stores: Stores,
    hooks: OutboundHooks,
}

impl HostState {
    pub fn new(
        component: Arc<ComponentConfig>,
        stores: Stores,
        outbound: OutboundClient,
        max_memory_bytes: usize,
        max_resources: usize,
    ) -> HostState {
        let mut wasi = WasiCtx::builder();
        wasi.inherit_stdout()
            .inherit_stderr()
            .envs(&component.environment);
        HostState {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            table: {
                let mut table = ResourceTable::new();
                table.set_max_capacity(max_resources);
                table
            },
            limits: Limiter {
                limits: StoreLimitsBuilder::new()
                    .memory_size(max_memory_bytes)
                    .instances(64)
                    .build(),
                refused: false,
            },
            hooks: OutboundHooks {
                component: component.clone(),
                client: outbound,
            },
            component,
            stores,
        }
    }
}

impl HostState {
    /// Makes the host state a new request's on an instance that served
    /// others: a new HTTP context, no limit hit yet. (The resource table
    /// holds at most the instance's stdio: an instance that left anything
    /// else in it was not kept, see `holds_request_resources`.)
    pub fn begin_request(&mut self) {
        self.http = WasiHttpCtx::new();
        self.limits.refused = false;
    }

    /// Whether a request left anything of its own in the resource table
    /// (then its instance is not reused). What may stay is the instance's
    /// stdio: the wasip1 adapter opens stdin, stdout and stderr together on
    /// the first print and keeps them for the instance's life. Any other
    /// stream (an HTTP body's) is the child of a body that would still be
    /// here too.
    pub fn holds_request_resources(&mut self) -> bool {
        self.drop_leaked_request_options();
        let (mut inputs, mut outputs) = (0, 0);
        for entry in self.table.iter_mut() {
            if entry.is::<wasmtime_wasi::p2::DynOutputStream>() {
                outputs += 1;
            } else if entry.is::<wasmtime_wasi::p2::DynInputStream>() {
                inputs += 1;
            } else {
                return true;
            }
        }
        inputs > 1 || outputs > 2
    }

    /// wasmtime-wasi-http 48's `outgoing-handler.handle` reads the request
    /// options it is given and never deletes them from the table (three
    /// timeouts, nothing of the request): deleted here, or every outbound
    /// call with options (the auth component's key lookups and JWKS fetches)
    /// would cost its instance.
    fn drop_leaked_request_options(&mut self) {
        let mut live = self.table.iter_mut().count();
        let mut leaked = Vec::new();
        let mut key = 0u32;
        while live > 0 && (key as usize) < self.table.max_capacity() {
            if let Ok(entry) = self.table.get_any_mut(key) {
                live -= 1;
                if entry.is::<wasmtime_wasi_http::RequestOptions>() {
                    leaked.push(key);
                }
            }
            key += 1;
        }
        for key in leaked {
            let options = Resource::<wasmtime_wasi_http::RequestOptions>::new_own(key);
            let _ = self.table.delete(options);
        }
    }
}

/// The store's limits, remembering whether a grow was refused in this
/// request (an instance that hit its limit is not reused).
pub struct Limiter {
    limits: StoreLimits,
    pub refused: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        self.refused |= !allowed;
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.table_growing(current, desired, maximum)?;
        self.refused |= !allowed;
        Ok(allowed)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// Refuses outbound requests to hosts the manifest does not allow and
/// sends the others through the shared pooled client.
struct OutboundHooks {
    component: Arc<ComponentConfig>,
    client: OutboundClient,
}

type SendFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<wasmtime_wasi_http::WasiBody>,
                    Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                ),
                wasmtime_wasi_http::Error,
            >,
        > + Send,
>;

impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> SendFuture {
        if !self.component.outbound.allows(request.uri()) {
            tracing::warn!(component = %self.component.id, uri = %request.uri(), "outbound request denied by allowed_outbound_hosts");
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        let client = self.client.clone();
        Box::new(async move {
            let response = client.send(request, options).await?;
            // The pool drives the connection; nothing is left for the caller to await.
            let io = async { Ok(()) };
            Ok((response, Box::new(io) as Box<dyn Future<Output = _> + Send>))
        })
    }
}
