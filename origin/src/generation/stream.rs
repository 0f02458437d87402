//! A generated stream as OpenAI's server-sent events: every chunk as the
//! upstream sent it, then `[DONE]`. Sluice changes two things and only
//! these: `model` is the name the client asked for (an alias hides which
//! deployment answered); and it always asks the upstream for usage (cost is
//! counted from it), so when the client did not ask, the usage-only chunk is
//! dropped and the other chunks' `usage` field removed.
//! A failure after the start ends the stream with an error event (OpenAI's
//! SDKs raise it); it is never retried.

use crate::generation::render::{budget_headers, route_headers};
use crate::generation::{GenerationEvent, Streamed, UsageCell};
use crate::openai::ChatChunk;
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::Value;
use std::convert::Infallible;
use std::sync::Arc;

/// Awaited with the whole text when a stream ends normally (not when the
/// client leaves or the upstream fails), before the last chunk is sent:
/// conversations store the reply, so a client that saw `[DONE]` can read it.
pub type OnStreamEnd = Box<dyn FnOnce(String) -> futures::future::BoxFuture<'static, ()> + Send>;

/// How a stream is relayed.
pub struct Relay {
    /// The client asked for usage (`stream_options.include_usage`).
    pub include_usage: bool,
    /// The model name every chunk carries: the name the client asked for.
    pub model: String,
    pub on_end: Option<OnStreamEnd>,
}

fn sse_data(value: &impl serde::Serialize) -> Bytes {
    let mut out = b"data: ".to_vec();
    // A chunk is a JSON object; serialising it cannot fail.
    serde_json::to_writer(&mut out, value).unwrap_or_default();
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// Where the relay is between chunks.
struct Relaying {
    relay: Relay,
    streamed: Option<Streamed>,
    /// The text so far, kept only when someone waits for it.
    text: Option<String>,
}

impl Relaying {
    /// The chunk as the client gets it; `None` when it is dropped.
    fn client_chunk(&self, mut chunk: ChatChunk) -> Option<ChatChunk> {
        if !self.relay.include_usage
            && chunk.0.remove("usage").is_some_and(|u| !u.is_null())
            && chunk.choices().is_empty()
        {
            return None;
        }
        chunk.set("model", Value::String(self.relay.model.clone()));
        Some(chunk)
    }

    async fn next(mut self) -> Option<(Bytes, Relaying)> {
        loop {
            let event = self.streamed.as_mut()?.events.next().await;
            let bytes = match event {
                Some(GenerationEvent::Chunk(chunk)) => {
                    let Some(chunk) = self.client_chunk(chunk) else {
                        continue;
                    };
                    if let (Some(all), Some(text)) = (&mut self.text, chunk.text()) {
                        all.push_str(text);
                    }
                    sse_data(&chunk)
                }
                Some(GenerationEvent::Failed(error)) => {
                    self.streamed = None;
                    sse_data(&sluice_core::errors::openai_error(
                        &format!("The model provider failed mid-stream: {error}"),
                        "server_error",
                        Some("provider_error"),
                        None,
                    ))
                }
                Some(GenerationEvent::BudgetReached(message)) => {
                    self.streamed = None;
                    sse_data(&sluice_core::errors::openai_error(
                        &message,
                        "insufficient_quota",
                        Some("budget_reservation_reached"),
                        None,
                    ))
                }
                Some(GenerationEvent::Done { .. }) => {
                    self.streamed = None;
                    if let (Some(on_end), Some(text)) = (self.relay.on_end.take(), self.text.take())
                    {
                        on_end(text).await;
                    }
                    Bytes::from_static(b"data: [DONE]\n\n")
                }
                None => return None,
            };
            return Some((bytes, self));
        }
    }
}

/// The SSE response for `streamed`.
pub fn sse_response(streamed: Streamed, relay: Relay) -> Response {
    let (deployment, attempts) = (Arc::clone(&streamed.deployment), streamed.attempts);
    let (budget, usage) = (streamed.budget.clone(), streamed.usage.clone());
    let adjusted = streamed.adjusted.clone();
    let relaying = Relaying {
        text: relay.on_end.as_ref().map(|_| String::new()),
        relay,
        streamed: Some(streamed),
    };
    let body = futures::stream::unfold(relaying, Relaying::next);
    let mut response = event_stream_response(body, &deployment, attempts, &adjusted, usage);
    budget_headers(response.headers_mut(), &budget);
    response
}

/// A server-sent-event response of `body`, unbuffered, with the route's
/// headers: every streamed surface (chat, Messages, Responses) answers
/// through it. `usage` rides along as a response extension for
/// [`crate::generation::usage_report`].
pub fn event_stream_response(
    body: impl futures::Stream<Item = Bytes> + Send + 'static,
    deployment: &crate::routing::Deployment,
    attempts: u32,
    adjusted: &[String],
    usage: UsageCell,
) -> Response {
    let mut response = Body::from_stream(body.map(Ok::<_, Infallible>)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Tells nginx-style proxies in front not to buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    route_headers(headers, deployment, attempts, adjusted);
    response.extensions_mut().insert(usage);
    response
}
