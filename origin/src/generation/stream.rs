//! A generated stream as OpenAI's server-sent events: a role chunk first,
//! each text delta as it arrives, the finish reason, the usage chunk when the
//! client asked for it, then `[DONE]`. A failure after the start ends the
//! stream with an error event (OpenAI's SDKs raise it); it is never retried.

use crate::generation::render::{completion_id, route_headers};
use crate::generation::{GenerationEvent, Streamed};
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::Arc;

/// Awaited with the whole text when a stream ends normally (not when the
/// client leaves or the upstream fails), before the last chunk is sent:
/// conversations store the reply, so a client that saw `[DONE]` can read it.
pub type OnStreamEnd = Box<dyn FnOnce(String) -> futures::future::BoxFuture<'static, ()> + Send>;

/// What every chunk of one stream carries besides its delta.
struct Chunks {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
}

impl Chunks {
    fn chunk(&self, delta: Value, finish: Option<&str>) -> Bytes {
        sse_data(&json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model,
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }],
        }))
    }
}

fn sse_data(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

/// Where the rendering is between chunks.
struct Rendering {
    chunks: Chunks,
    streamed: Option<Streamed>,
    sent_role: bool,
    sent_finish: bool,
    /// The text so far, kept only when someone waits for it.
    text: Option<String>,
    on_end: Option<OnStreamEnd>,
}

impl Rendering {
    async fn next(mut self) -> Option<(Bytes, Rendering)> {
        if !self.sent_role {
            self.sent_role = true;
            let chunk = self
                .chunks
                .chunk(json!({ "role": "assistant", "content": "" }), None);
            return Some((chunk, self));
        }
        let event = self.streamed.as_mut()?.events.next().await;
        let bytes = match event {
            Some(GenerationEvent::Delta(text)) => {
                if let Some(all) = &mut self.text {
                    all.push_str(&text);
                }
                self.chunks.chunk(json!({ "content": text }), None)
            }
            Some(GenerationEvent::Finish(reason)) => {
                self.sent_finish = true;
                self.chunks.chunk(json!({}), Some(&reason))
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
            Some(GenerationEvent::Done { usage }) => {
                self.streamed = None;
                if let (Some(on_end), Some(text)) = (self.on_end.take(), self.text.take()) {
                    on_end(text).await;
                }
                let mut out = Vec::new();
                if !self.sent_finish {
                    out.extend_from_slice(&self.chunks.chunk(json!({}), Some("stop")));
                }
                if self.chunks.include_usage {
                    out.extend_from_slice(&sse_data(&json!({
                        "id": self.chunks.id, "object": "chat.completion.chunk",
                        "created": self.chunks.created, "model": self.chunks.model,
                        "choices": [], "usage": usage,
                    })));
                }
                out.extend_from_slice(b"data: [DONE]\n\n");
                Bytes::from(out)
            }
            None => return None,
        };
        Some((bytes, self))
    }
}

/// The SSE response for `streamed`, its chunks naming `model`.
pub fn sse_response(
    streamed: Streamed,
    model: &str,
    include_usage: bool,
    on_end: Option<OnStreamEnd>,
) -> Response {
    let (deployment, attempts) = (Arc::clone(&streamed.deployment), streamed.attempts);
    let rendering = Rendering {
        chunks: Chunks {
            id: completion_id(),
            created: crate::clock::unix_now(),
            model: model.to_string(),
            include_usage,
        },
        streamed: Some(streamed),
        sent_role: false,
        sent_finish: false,
        text: on_end.as_ref().map(|_| String::new()),
        on_end,
    };
    let body = futures::stream::unfold(rendering, Rendering::next).map(Ok::<_, Infallible>);
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Tells nginx-style proxies in front not to buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    route_headers(headers, &deployment, attempts);
    response
}
