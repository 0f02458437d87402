//! HTTP front: each request runs on an instance the component's pool kept
//! (`crate::reuse`) or on a new one from the pre-instantiated component.

use crate::app::{App, EPOCH_TICK, ServedComponent};
use crate::reuse::{Retired, Warm};
use crate::state::HostState;
use anyhow::Result;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use wasmtime::Store;
use wasmtime::component::Resource;
use wasmtime_wasi_http::WasiHttpView as _;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::{Proxy, ProxyPre};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::p2::types::{HostIncomingRequest, HostResponseOutparam};

pub type Response = hyper::Response<HyperOutgoingBody>;

/// How often idle instances are looked over (the idle timeout's unit).
const IDLE_SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

struct Server {
    app: App,
    slots: Semaphore,
}

/// Serves until `shutdown` resolves, then drains in-flight connections.
pub async fn serve(
    app: App,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    spawn_epoch_ticker(&app.engine);
    let slots = Semaphore::new(app.limits.max_concurrent_requests as usize);
    let server = Arc::new(Server { app, slots });
    let sweeper = spawn_idle_sweeper(&server);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => { tracing::warn!(error = %e, "accept failed"); continue; }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let server = server.clone();
        let service = hyper::service::service_fn(move |req| {
            let server = server.clone();
            async move { Ok::<_, std::convert::Infallible>(server.handle(req, client).await) }
        });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        metrics::gauge!("sluice_host_connections_active").increment(1.0);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            metrics::gauge!("sluice_host_connections_active").decrement(1.0);
        });
    }
    tracing::info!("draining connections");
    graceful.shutdown().await;
    sweeper.abort();
    Ok(())
}

/// Drops instances idle past the policy's timeout even when no request comes
/// to take one, so a burst's instances do not outlive it.
fn spawn_idle_sweeper(server: &Arc<Server>) -> tokio::task::JoinHandle<()> {
    let server = Arc::downgrade(server);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(IDLE_SWEEP_INTERVAL);
        loop {
            tick.tick().await;
            let Some(server) = server.upgrade() else {
                return;
            };
            for component in &server.app.components {
                component.instances.sweep();
            }
        }
    })
}

/// One ticker for the whole engine: deadlines are counted in ticks.
fn spawn_epoch_ticker(engine: &wasmtime::Engine) {
    let weak = engine.weak();
    std::thread::spawn(move || {
        while let Some(engine) = weak.upgrade() {
            engine.increment_epoch();
            drop(engine);
            std::thread::sleep(EPOCH_TICK);
        }
    });
}

impl Server {
    async fn handle(
        self: Arc<Self>,
        req: hyper::Request<Incoming>,
        client: SocketAddr,
    ) -> Response {
        let started = Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let Some((route, component)) = self.app.route(&path) else {
            return plain(404, "no route matches");
        };
        let Ok(slot) = self.slots.acquire().await else {
            return plain(503, "host is shutting down");
        };
        // An instance that served earlier requests cleanly, else a new store.
        let warm = component.instances.take();
        let (mut store, reused) = match warm {
            Some(warm) => (warm.store, Some((warm.proxy, warm.served))),
            None => (self.new_store(component), None),
        };
        store.data_mut().begin_request();
        store.set_epoch_deadline(self.deadline_ticks());
        let req = with_spin_headers(req, client, &route.path, route.prefix)
            .map(crate::draining_body::DrainingBody::new);
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let prepared = (|| -> wasmtime::Result<_> {
            let incoming = store
                .data_mut()
                .http()
                .new_incoming_request(Scheme::Http, req)?;
            let out = store.data_mut().http().new_response_outparam(sender)?;
            Ok((incoming, out))
        })();
        let (incoming, out) = match prepared {
            Ok(handles) => handles,
            Err(e) => {
                tracing::warn!(error = %e, "request rejected before reaching the component");
                return plain(400, "malformed request");
            }
        };
        let id = component.config.id.clone();
        let (delivered_tx, delivered) = tokio::sync::oneshot::channel();
        let guest = tokio::spawn(run_guest(Guest {
            store,
            reused,
            pre: component.pre.clone(),
            incoming,
            out,
            timeout: self.app.limits.request_timeout,
            delivered,
            server: Arc::clone(&self),
            component: route.component,
        }));
        drop(slot);
        let response = match receiver.await {
            Ok(Ok(response)) => response.map(|body| {
                DeliveredBody {
                    inner: body,
                    delivered: Some(delivered_tx),
                }
                .boxed_unsync()
            }),
            Ok(Err(code)) => {
                tracing::warn!(component = %id, error = ?code, "component answered with an error");
                plain(500, "component error")
            }
            Err(_) => {
                let error = match guest.await {
                    Ok(Ok(())) => "component never set a response".to_string(),
                    Ok(Err(e)) => format!("{e:?}"),
                    Err(e) => e.to_string(),
                };
                tracing::error!(component = %id, %method, path = %path, error = %error, "component failed");
                plain(500, "component failed")
            }
        };
        record_response(&id, &response, started.elapsed());
        tracing::debug!(component = %id, %method, path = %path, status = response.status().as_u16(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3, "request");
        response
    }

    fn deadline_ticks(&self) -> u64 {
        let timeout = self.app.limits.request_timeout;
        (timeout.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
    }

    /// A fresh store for one request, with the host's limits applied.
    fn new_store(&self, component: &ServedComponent) -> Store<HostState> {
        let limits = &self.app.limits;
        let mut store = Store::new(
            &self.app.engine,
            HostState::new(
                component.config.clone(),
                self.app.stores.clone(),
                self.app.outbound.clone(),
                limits.max_memory_bytes,
                limits.max_resources,
            ),
        );
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        store
    }
}

/// How a response's body ended: read to its end by the client, or not.
type Delivered = tokio::sync::oneshot::Receiver<bool>;

/// The response body as the client gets it, saying when it ends whether the
/// client read it all (an instance is reused only then).
struct DeliveredBody {
    inner: HyperOutgoingBody,
    delivered: Option<tokio::sync::oneshot::Sender<bool>>,
}

/// One request's run of a component: its store (and the instance it reuses),
/// what it answers, and where the instance goes afterwards.
struct Guest {
    store: Store<HostState>,
    /// The reused instance and the requests it has served.
    reused: Option<(Proxy, u32)>,
    pre: ProxyPre<HostState>,
    incoming: Resource<HostIncomingRequest>,
    out: Resource<HostResponseOutparam>,
    timeout: std::time::Duration,
    delivered: Delivered,
    server: Arc<Server>,
    /// Its index in the app's components.
    component: usize,
}

impl http_body::Body for DeliveredBody {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            std::task::Poll::Ready(None) => self.settle(true),
            std::task::Poll::Ready(Some(Err(_))) => self.settle(false),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl DeliveredBody {
    fn settle(&mut self, whole: bool) {
        if let Some(delivered) = self.delivered.take() {
            let _ = delivered.send(whole);
        }
    }
}

impl Drop for DeliveredBody {
    fn drop(&mut self) {
        // Dropped before its end: the client went away.
        self.settle(false);
    }
}

/// Runs the component's handler on the request, on a reused instance or a
/// new one. It runs in its own task so it can keep streaming the body after
/// the response head is sent; the timeout bounds the whole run. Afterwards
/// the instance is kept for the next request if everything went cleanly
/// (`crate::reuse`), else retired with the cause.
async fn run_guest(guest: Guest) -> wasmtime::Result<()> {
    let Guest {
        mut store,
        reused,
        pre,
        incoming,
        out,
        timeout,
        delivered,
        server,
        component,
    } = guest;
    let served = &server.app.components[component];
    let id = served.config.id.clone();
    let deadline = Instant::now() + timeout;
    let run = async {
        let (proxy, uses) = match reused {
            Some(reused) => reused,
            None => {
                let instantiating = Instant::now();
                let proxy = pre.instantiate_async(&mut store).await?;
                metrics::histogram!("sluice_host_instantiation_duration_seconds", "component" => id.clone())
                    .record(instantiating.elapsed().as_secs_f64());
                metrics::counter!("sluice_host_instantiations_total", "component" => id.clone())
                    .increment(1);
                (proxy, 0)
            }
        };
        let executing = Instant::now();
        let handled = proxy
            .wasi_http_incoming_handler()
            .call_handle(&mut store, incoming, out)
            .await;
        metrics::histogram!("sluice_host_execution_duration_seconds", "component" => id.clone())
            .record(executing.elapsed().as_secs_f64());
        handled.map(|()| (proxy, uses + 1))
    };
    let outcome = match tokio::time::timeout(timeout, run).await {
        Ok(outcome) => outcome,
        Err(_) => {
            metrics::counter!("sluice_host_timeouts_total", "component" => id.clone()).increment(1);
            crate::reuse::retire(&id, Retired::Timeout);
            return Err(wasmtime::format_err!("request exceeded {timeout:?}"));
        }
    };
    let (proxy, uses) = match outcome {
        Ok(done) => done,
        Err(e) => {
            // The epoch deadline traps with `Interrupt`: a timeout too.
            let (counter, why) = match e.downcast_ref::<wasmtime::Trap>() {
                Some(wasmtime::Trap::Interrupt) => ("sluice_host_timeouts_total", Retired::Timeout),
                _ => ("sluice_host_traps_total", Retired::Trap),
            };
            metrics::counter!(counter, "component" => id.clone()).increment(1);
            crate::reuse::retire(&id, why);
            return Err(e);
        }
    };
    // Kept only once the client has the whole answer, within the deadline.
    let whole = tokio::time::timeout_at(deadline.into(), delivered)
        .await
        .is_ok_and(|d| d.unwrap_or(false));
    let why = if !whole {
        Some(Retired::Abandoned)
    } else if store.data().limits.refused {
        Some(Retired::LimitHit)
    } else if store.data_mut().holds_request_resources() {
        Some(Retired::Leaked)
    } else {
        None
    };
    match why {
        Some(why) => crate::reuse::retire(&id, why),
        None => served.instances.give_back(Warm::new(store, proxy, uses)),
    }
    Ok(())
}

/// Request metrics, and the edge policies' decisions as the gateway reports
/// them in response headers (`X-Cache`, the rate-limit headers): the host
/// counts them without any import of its own into the components.
fn record_response(component: &str, response: &Response, elapsed: std::time::Duration) {
    let status = response.status();
    metrics::counter!("sluice_host_requests_total",
        "component" => component.to_owned(), "status" => status.as_u16().to_string())
    .increment(1);
    metrics::histogram!("sluice_host_request_duration_seconds", "component" => component.to_owned())
        .record(elapsed.as_secs_f64());
    let headers = response.headers();
    if let Some(result) = headers.get("x-cache").and_then(|v| v.to_str().ok()) {
        let result = match result {
            "HIT" => "hit",
            "MISS" => "miss",
            "BYPASS" => "bypass",
            _ => "other",
        };
        metrics::counter!("sluice_edge_cache_requests_total", "result" => result).increment(1);
    }
    if headers.contains_key("x-ratelimit-limit") {
        let decision = if status == http::StatusCode::TOO_MANY_REQUESTS {
            "limited"
        } else {
            "allowed"
        };
        metrics::counter!("sluice_edge_rate_limit_decisions_total", "decision" => decision)
            .increment(1);
    }
}

/// The request headers Spin adds, so components behave the same on both hosts.
fn with_spin_headers(
    mut req: hyper::Request<Incoming>,
    client: SocketAddr,
    route: &str,
    prefix: bool,
) -> hyper::Request<Incoming> {
    let path = req.uri().path().to_string();
    let path_info = if prefix {
        path.strip_prefix(route.trim_end_matches('/'))
            .unwrap_or("")
            .to_string()
    } else {
        String::new()
    };
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost")
        .to_string();
    let full_url = format!(
        "http://{host}{}",
        req.uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    let matched = if prefix {
        format!("{}/...", route.trim_end_matches('/'))
    } else {
        route.to_string()
    };
    let headers = req.headers_mut();
    for (name, value) in [
        ("spin-client-addr", client.to_string()),
        ("spin-full-url", full_url),
        ("spin-path-info", path_info),
        ("spin-matched-route", matched.clone()),
        ("spin-raw-component-route", matched),
        ("spin-base-path", "/".to_string()),
    ] {
        if let Ok(value) = http::HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    req
}

fn plain(status: u16, message: &'static str) -> Response {
    let body = Full::new(Bytes::from_static(message.as_bytes()))
        .map_err(|never: std::convert::Infallible| match never {})
        .boxed_unsync();
    let mut response = hyper::Response::new(body);
    *response.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    response
}
