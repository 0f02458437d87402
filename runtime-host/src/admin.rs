//! The host's admin listener: `/metrics`, `/health` and `/ready`, apart from
//! the application's routes (a component may serve `/health` of its own).

use crate::kv::Stores;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;

/// What the admin routes report on.
pub struct AdminState {
    pub stores: Stores,
    pub components: usize,
    pub started: Instant,
}

type AdminResponse = hyper::Response<Full<Bytes>>;

fn respond(status: u16, content_type: &'static str, body: String) -> AdminResponse {
    let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}

/// Registers the counters whose first event may be far off at zero, so
/// dashboards and `rate()` see them (and alerts can tell 0 from missing).
pub fn register_metrics(components: &[String]) {
    for component in components {
        metrics::counter!("sluice_host_traps_total", "component" => component.clone()).increment(0);
        metrics::counter!("sluice_host_timeouts_total", "component" => component.clone())
            .increment(0);
        metrics::counter!("sluice_host_instantiations_total", "component" => component.clone())
            .increment(0);
        metrics::counter!("sluice_host_instance_reuses_total", "component" => component.clone())
            .increment(0);
        for cause in crate::reuse::Retired::ALL {
            metrics::counter!("sluice_host_instances_retired_total",
                "component" => component.clone(), "cause" => cause.label())
            .increment(0);
        }
    }
    for result in ["hit", "miss", "bypass"] {
        metrics::counter!("sluice_edge_cache_requests_total", "result" => result).increment(0);
    }
    metrics::counter!("sluice_host_kv_evictions_total").increment(0);
    for decision in ["allowed", "limited"] {
        metrics::counter!("sluice_edge_rate_limit_decisions_total", "decision" => decision)
            .increment(0);
    }
}

/// Answers one admin request.
pub async fn handle(state: &AdminState, path: &str) -> AdminResponse {
    match path {
        "/metrics" => {
            sluice_telemetry::record_process(state.started);
            for (label, entries) in state.stores.entries() {
                metrics::gauge!("sluice_host_kv_entries", "store" => label).set(entries as f64);
            }
            for (label, up) in state.stores.ping().await {
                metrics::gauge!("sluice_host_kv_store_up", "store" => label).set(if up {
                    1.0
                } else {
                    0.0
                });
            }
            respond(
                200,
                sluice_telemetry::PROMETHEUS_CONTENT_TYPE,
                sluice_telemetry::prometheus().render(),
            )
        }
        "/health" => respond(200, "application/json", r#"{"status":"ok"}"#.into()),
        "/ready" => {
            // A Redis store that is down does not make the host unready: each
            // policy decides to fail open or closed, and that is its answer.
            let stores: serde_json::Map<String, serde_json::Value> = state
                .stores
                .ping()
                .await
                .into_iter()
                .map(|(label, up)| (label, up.into()))
                .collect();
            let body = serde_json::json!({
                "status": "ready",
                "components": state.components,
                "uptime_seconds": state.started.elapsed().as_secs(),
                "memory": { "resident_bytes": sluice_telemetry::resident_memory_bytes() },
                "key_value_stores": stores,
            });
            respond(200, "application/json", body.to_string())
        }
        _ => respond(404, "text/plain", "not found".into()),
    }
}

/// Serves the admin routes until `shutdown` resolves; folds histograms as it goes.
pub async fn serve(
    state: Arc<AdminState>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) {
    let upkeep = tokio::spawn(async {
        let mut tick = tokio::time::interval(sluice_telemetry::UPKEEP_INTERVAL);
        loop {
            tick.tick().await;
            sluice_telemetry::prometheus().run_upkeep();
        }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => { tracing::warn!(error = %e, "admin accept failed"); continue; }
            },
            () = &mut shutdown => break,
        };
        let state = Arc::clone(&state);
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let state = Arc::clone(&state);
            async move { Ok::<_, std::convert::Infallible>(handle(&state, req.uri().path()).await) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    upkeep.abort();
}
