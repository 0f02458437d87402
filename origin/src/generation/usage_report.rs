//! Ends an event stream with its usage for the edge's token limits (see
//! `sluice_core::usage_report`): only on the edge's request for it, only for
//! a stream that carries a [`UsageCell`], after its last byte.

use crate::generation::UsageCell;
use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use futures::StreamExt;
use sluice_core::usage_report;

pub async fn report_stream_usage(request: Request, next: Next) -> Response {
    let asked = request.headers().contains_key(usage_report::REQUEST_HEADER);
    let response = next.run(request).await;
    if !asked {
        return response;
    }
    let Some(cell) = response.extensions().get::<UsageCell>().cloned() else {
        return response;
    };
    let (parts, body) = response.into_parts();
    // Polled only once the stream's own body has ended, when the usage is in.
    let comment = futures::stream::once(async move {
        let tokens = cell.get().map(|usage| u64::from(usage.total_tokens));
        Ok(tokens.map(usage_report::comment).unwrap_or_default().into())
    });
    let body = body.into_data_stream().chain(comment.filter(
        |chunk: &Result<axum::body::Bytes, axum::Error>| {
            futures::future::ready(chunk.as_ref().is_ok_and(|c| !c.is_empty()))
        },
    ));
    Response::from_parts(parts, Body::from_stream(body))
}
