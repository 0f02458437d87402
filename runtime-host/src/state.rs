//! The one store-state struct: a context per capability plus resource limits.

use crate::kv::Stores;
use crate::outbound::OutboundPolicy;
use crate::outbound_http::OutboundClient;
use std::collections::BTreeMap;
use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
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
    pub limits: StoreLimits,
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
            limits: StoreLimitsBuilder::new()
                .memory_size(max_memory_bytes)
                .instances(64)
                .build(),
            hooks: OutboundHooks {
                component: component.clone(),
                client: outbound,
            },
            component,
            stores,
        }
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
