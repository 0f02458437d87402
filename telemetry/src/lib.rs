//! Telemetry that the origin and the runtime-host set up the same way: logs
//! (text or JSON lines), one process-wide Prometheus recorder behind the
//! `metrics` facade, and the process figures that `/ready` and the status
//! page report.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;

/// Histogram buckets for every `*_seconds` metric: sub-millisecond steps for
/// the gateway's own overhead, 0.3 s for the P95 alert, up to a minute for
/// generations.
pub const LATENCY_BUCKETS_SECONDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// How often histograms are folded and idle series trimmed.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Sets up a binary's telemetry before anything else runs: logs, and the
/// Prometheus recorder (metrics recorded before it exists are lost).
pub fn init(json: bool, default_filter: &str) {
    init_logs(json, default_filter);
    prometheus();
}

/// Logs to stderr, filtered by `RUST_LOG` (else `default_filter`); one JSON
/// object per line when `json` is set, for log shippers.
fn init_logs(json: bool, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| default_filter.into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init();
    } else {
        builder.init();
    }
}

/// The process's Prometheus recorder, installed as the global `metrics`
/// recorder on first use. Every caller (the binaries, tests in one process)
/// gets the same one, so nothing recorded before a listener starts is lost.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new();
        // Only fails for an empty bucket list; the constant is not empty.
        let builder = builder
            .set_buckets(LATENCY_BUCKETS_SECONDS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (a test harness's); then
        // this handle renders an empty page rather than failing the process.
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!(
                event = "metrics_recorder_exists",
                "a metrics recorder was already installed; /metrics stays empty"
            );
        }
        handle
    })
}

/// Text exposition format for a `/metrics` response.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Resident memory of this process in bytes (Linux `/proc`), for `/ready`
/// and `process_resident_memory_bytes`.
pub fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Sets the process gauges every exporter is expected to have.
pub fn record_process(started: std::time::Instant) {
    if let Some(bytes) = resident_memory_bytes() {
        metrics::gauge!("process_resident_memory_bytes").set(bytes as f64);
    }
    metrics::gauge!("process_uptime_seconds").set(started.elapsed().as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_render_with_the_shared_buckets() {
        let handle = prometheus();
        metrics::histogram!("sluice_test_duration_seconds", "route" => "/x").record(0.25);
        metrics::counter!("sluice_test_requests_total").increment(2);
        let text = handle.render();
        assert!(
            text.contains("sluice_test_duration_seconds_bucket{route=\"/x\",le=\"0.3\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("sluice_test_duration_seconds_bucket{route=\"/x\",le=\"0.2\"} 0"),
            "{text}"
        );
        assert!(text.contains("sluice_test_requests_total 2"), "{text}");
    }

    #[test]
    fn memory_is_read_on_linux() {
        let bytes = resident_memory_bytes().unwrap_or(0);
        assert!(bytes > 1 << 20, "{bytes}");
    }
}
