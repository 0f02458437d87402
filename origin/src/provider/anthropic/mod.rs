//! Anthropic's Messages API. Toward it, an OpenAI chat request is
//! translated ([`request`]) and the answer and stream translated back
//! ([`response`], [`stream`]); a client of Sluice's own `/v1/messages` is
//! passed through natively ([`MessagesApi`]), with only the model name mapped.

mod request;
mod response;
mod stream;

pub use request::{
    DEFAULT_MAX_TOKENS, STRUCTURED_OUTPUT_TOOL, fit_thinking, max_tokens_with_thinking,
    translate_request,
};
pub use response::{finish_reason, translate_response, usage};

use super::wire::{check_status, events, send_error};
use super::{
    Call, Embeddings, EventStream, MessagesApi, Provider, ProviderError, SseEvent, SseStream,
};
use crate::openai::{ChatRequest, ChatResponse};
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use serde_json::{Map, Value};
pub use stream::StreamState;

const API_VERSION: &str = "2023-06-01";

pub struct Anthropic {
    client: reqwest::Client,
    /// `https://api.anthropic.com` (without `/v1`).
    base_url: String,
}

impl Anthropic {
    pub fn new(client: reqwest::Client, base_url: &str) -> Anthropic {
        Anthropic {
            client,
            base_url: base_url.trim_end_matches('/').to_string(),
        }
    }

    fn post(&self, path: &str, call: Call<'_>, body: &Value) -> reqwest::RequestBuilder {
        let builder = self
            .client
            .post(format!("{}{path}", self.base_url))
            .header("anthropic-version", API_VERSION)
            .json(body);
        let builder = match call.beta {
            Some(beta) => builder.header("anthropic-beta", beta),
            None => builder,
        };
        match call.key {
            Some(key) => builder.header("x-api-key", key),
            None => builder,
        }
    }

    async fn send(
        &self,
        path: &str,
        call: Call<'_>,
        body: &Value,
    ) -> Result<reqwest::Response, ProviderError> {
        let response = self
            .post(path, call, body)
            .send()
            .await
            .map_err(send_error)?;
        check_status(response, call).await
    }
}

fn protocol(e: impl std::fmt::Display) -> ProviderError {
    ProviderError::Protocol(e.to_string())
}

/// The client's Messages body with the upstream's model name. A client's
/// own thinking blocks pass as sent; only what an earlier turn on another
/// provider left in the history that Anthropic would refuse is fitted
/// ([`fit_thinking`]): after a fallback mid-loop, the session goes on.
pub fn native_body(call: Call<'_>, body: &Map<String, Value>) -> Value {
    let mut body = body.clone();
    body.insert("model".into(), Value::String(call.model.to_string()));
    let mut body = Value::Object(body);
    fit_thinking(&mut body, &call);
    body
}

impl Provider for Anthropic {
    fn kind(&self) -> &'static str {
        "anthropic"
    }

    fn complete<'a>(
        &'a self,
        call: Call<'a>,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChatResponse, ProviderError>> {
        Box::pin(async move {
            let body = translate_request(call, request, false)?;
            let message: Value = self
                .send("/v1/messages", call, &body)
                .await?
                .json()
                .await
                .map_err(protocol)?;
            Ok(translate_response(&message))
        })
    }

    fn stream<'a>(
        &'a self,
        call: Call<'a>,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<EventStream, ProviderError>> {
        Box::pin(async move {
            let body = translate_request(call, request, true)?;
            let response = self.send("/v1/messages", call, &body).await?;
            let mut state = StreamState::default();
            let stream = events(response)
                .map(move |event| {
                    let event = event?;
                    state
                        .on_event(&event.event, &event.data)
                        .map(|events| futures::stream::iter(events.into_iter().map(Ok)))
                })
                .try_flatten();
            Ok(stream.boxed())
        })
    }

    fn messages_api(&self) -> Option<&dyn MessagesApi> {
        Some(self)
    }

    fn embed<'a>(
        &'a self,
        _call: Call<'a>,
        _inputs: &'a [String],
    ) -> BoxFuture<'a, Result<Embeddings, ProviderError>> {
        Box::pin(async {
            Err(ProviderError::Unsupported(
                "Anthropic has no embeddings API; route embeddings to another deployment.",
            ))
        })
    }
}

impl MessagesApi for Anthropic {
    fn create<'a>(
        &'a self,
        call: Call<'a>,
        body: &'a Map<String, Value>,
    ) -> BoxFuture<'a, Result<Value, ProviderError>> {
        Box::pin(async move {
            let body = native_body(call, body);
            self.send("/v1/messages", call, &body)
                .await?
                .json()
                .await
                .map_err(protocol)
        })
    }

    fn stream<'a>(
        &'a self,
        call: Call<'a>,
        body: &'a Map<String, Value>,
    ) -> BoxFuture<'a, Result<SseStream, ProviderError>> {
        Box::pin(async move {
            let body = native_body(call, body);
            let response = self.send("/v1/messages", call, &body).await?;
            let stream = events(response).and_then(|event| async move {
                let data: Value = serde_json::from_str(&event.data).map_err(protocol)?;
                if event.event == "error" {
                    let message = data.pointer("/error/message").and_then(Value::as_str);
                    return Err(ProviderError::Unavailable {
                        status: 200,
                        message: message.unwrap_or("stream error").to_string(),
                    });
                }
                Ok(SseEvent {
                    event: event.event,
                    data,
                })
            });
            Ok(stream.boxed())
        })
    }

    fn count_tokens<'a>(
        &'a self,
        call: Call<'a>,
        body: &'a Map<String, Value>,
    ) -> BoxFuture<'a, Result<Value, ProviderError>> {
        Box::pin(async move {
            let body = native_body(call, body);
            self.send("/v1/messages/count_tokens", call, &body)
                .await?
                .json()
                .await
                .map_err(protocol)
        })
    }
}
