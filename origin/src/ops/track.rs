//! Per-request metrics: every response the client gets, counted by matched
//! route, method and status, and timed. `crate::app` puts this layer outside
//! the timeout and panic layers so a 504 or a 500 made there is counted too.

use crate::clock::unix_now;
use crate::ops::window::RequestWindow;
use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use std::sync::Arc;
use std::time::Instant;

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Middleware: counts and times every request by matched route, method and
/// status. Streams are timed to their response head (time to first byte);
/// their length is the stream metrics' business.
pub async fn track(State(window): State<Arc<RequestWindow>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = method_label(req.method());
    let started = Instant::now();
    let response = next.run(req).await;
    let elapsed = started.elapsed();
    let status = response.status();
    metrics::counter!("sluice_http_requests_total",
        "route" => route.clone(), "method" => method, "status" => status.as_u16().to_string())
    .increment(1);
    metrics::histogram!("sluice_http_request_duration_seconds", "route" => route, "method" => method)
        .record(elapsed.as_secs_f64());
    window.record(unix_now(), elapsed, status.is_server_error());
    response
}
