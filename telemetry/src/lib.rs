//! Telemetry that the origin and the runtime-host set up the same way: logs
//! (text or JSON lines), one process-wide Prometheus recorder behind the
//! `metrics` facade, and the process figures that `/ready` and the status
//! page report.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once trace export is configured; request paths skip context
/// extraction without it.
static EXPORTING_TRACES: AtomicBool = AtomicBool::new(false);
use std::time::Duration;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Histogram buckets for every `*_seconds` metric: sub-millisecond steps for
/// the gateway's own overhead, 0.3 s for the P95 alert, up to a minute for
/// generations.
pub const LATENCY_BUCKETS_SECONDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// How often histograms are folded and idle series trimmed.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// What must outlive `main`'s work: the trace exporter, flushed on drop.
#[must_use = "dropping it at once stops trace export"]
pub struct Telemetry {
    tracer: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(tracer) = self.tracer.take()
            && let Err(e) = tracer.shutdown()
        {
            eprintln!("trace export did not flush: {e}");
        }
    }
}

/// Sets up a binary's telemetry before anything else runs: logs, the
/// Prometheus recorder (metrics recorded before it exists are lost), and
/// trace export when the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or
/// `..._TRACES_ENDPOINT`) is set; `OTEL_EXPORTER_OTLP_PROTOCOL` picks
/// `http/protobuf` (default) or `http/json`, `OTEL_SERVICE_NAME` the name.
pub fn init(json: bool, default_filter: &str, service: &'static str) -> Telemetry {
    let tracer = trace_export(service);
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| default_filter.into());
    let logs = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer().boxed()
    };
    let spans = tracer
        .as_ref()
        .map(|provider| tracing_opentelemetry::layer().with_tracer(provider.tracer(service)));
    // Filters per layer: the query metrics see every sqlx statement (the
    // origin logs them at TRACE for it), whatever the log filter keeps.
    let span_filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| default_filter.into());
    let statements =
        tracing_subscriber::filter::Targets::new().with_target(QUERY_TARGET, tracing::Level::TRACE);
    tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(spans.with_filter(span_filter))
        .with(QueryMetrics.with_filter(statements))
        .init();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    EXPORTING_TRACES.store(tracer.is_some(), Ordering::Relaxed);
    prometheus();
    Telemetry { tracer }
}

/// Where sqlx reports each statement it ran, with its time (`elapsed_secs`).
pub const QUERY_TARGET: &str = "sqlx::query";

/// Counts sqlx's statement events into `sluice_db_query_duration_seconds`
/// and, for those over the slow threshold (sqlx's "slow statement" events,
/// which the log keeps with their SQL), `sluice_db_slow_queries_total`.
/// sqlx offers no other per-statement hook, so its events are the source.
struct QueryMetrics;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for QueryMetrics {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        #[derive(Default)]
        struct Statement {
            elapsed_secs: Option<f64>,
            slow: bool,
        }
        impl tracing::field::Visit for Statement {
            fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
                if field.name() == "elapsed_secs" {
                    self.elapsed_secs = Some(value);
                }
            }
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "slow_threshold" {
                    self.slow = true;
                }
                let _ = value;
            }
        }
        let mut statement = Statement::default();
        event.record(&mut statement);
        if let Some(seconds) = statement.elapsed_secs {
            metrics::histogram!("sluice_db_query_duration_seconds").record(seconds);
            if statement.slow {
                metrics::counter!("sluice_db_slow_queries_total").increment(1);
            }
        }
    }
}

fn trace_export(service: &'static str) -> Option<SdkTracerProvider> {
    let configured = [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|name| std::env::var(name).is_ok_and(|v| !v.is_empty()));
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v == "true");
    if !configured || disabled {
        return None;
    }
    let protocol = match std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL").as_deref() {
        Ok("http/json") => Protocol::HttpJson,
        _ => Protocol::HttpBinary,
    };
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(protocol)
        .build()
    {
        Ok(exporter) => exporter,
        Err(e) => {
            eprintln!("trace export disabled: {e}");
            return None;
        }
    };
    let mut resource = Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name(service);
    }
    Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build(),
    )
}

/// The W3C trace id of a `traceparent` header (the edge forwards the
/// client's), for log correlation even when no traces are exported.
pub fn trace_id(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get("traceparent")?.to_str().ok()?;
    let mut parts = value.split('-');
    let (version, trace, span) = (parts.next()?, parts.next()?, parts.next()?);
    let valid = version.len() == 2
        && trace.len() == 32
        && span.len() == 16
        && trace.bytes().all(|b| b.is_ascii_hexdigit())
        && trace.bytes().any(|b| b != b'0');
    valid.then_some(trace)
}

/// Makes `span` a child of the trace in `headers` (W3C `traceparent` and
/// `tracestate`), so exported spans join the caller's trace.
pub fn set_parent(span: &tracing::Span, headers: &http::HeaderMap) {
    if !EXPORTING_TRACES.load(Ordering::Relaxed) {
        return;
    }
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(headers))
    });
    let _ = span.set_parent(parent);
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
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

/// Resident memory of this process in bytes, for `/ready` and the stats.
pub fn resident_memory_bytes() -> Option<u64> {
    metrics_process::collector::collect().resident_memory_bytes
}

/// Sets the process metrics every exporter is expected to have (Prometheus'
/// `process_*` set: CPU seconds, resident and virtual memory, open and max
/// file descriptors, threads, start time), plus `process_uptime_seconds`.
pub fn record_process(started: std::time::Instant) {
    static COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();
    COLLECTOR
        .get_or_init(|| {
            let collector = metrics_process::Collector::default();
            collector.describe();
            collector
        })
        .collect();
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
    fn trace_ids_come_from_valid_traceparents_only() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(trace_id(&headers), None);
        headers.insert(
            "traceparent",
            http::HeaderValue::from_static(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        );
        assert_eq!(trace_id(&headers), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6-00f067aa0ba902b7-01",
            "garbage",
            "00-4bf92f3577b34da6a3ce929d0e0e473z-00f067aa0ba902b7-01",
        ] {
            headers.insert("traceparent", http::HeaderValue::from_static(bad));
            assert_eq!(trace_id(&headers), None, "{bad}");
        }
    }

    #[test]
    fn memory_is_read_on_linux() {
        let bytes = resident_memory_bytes().unwrap_or(0);
        assert!(bytes > 1 << 20, "{bytes}");
    }
}
