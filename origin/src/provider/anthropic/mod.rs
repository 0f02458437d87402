//! Anthropic's Messages API. Toward it, an OpenAI chat request is
//! translated ([`request`]) and the answer and stream translated back
//! ([`response`], [`stream`]); a client of Sluice's own `/v1/messages` is
//! passed through natively ([`MessagesApi`]), with only the model name mapped.
//! Served by Anthropic's API, or by Vertex AI for Claude on Google Cloud.

mod request;
mod response;
mod stream;

pub use request::{
    DEFAULT_MAX_TOKENS, STRUCTURED_OUTPUT_TOOL, fit_thinking, max_tokens_with_thinking,
    translate_request,
};
pub use response::{finish_reason, translate_response, usage};

use super::token::TokenSource;
use super::wire::{MODEL_IN_PATH, check_status, events, send_error};
use super::{
    Call, Embeddings, EventStream, MessagesApi, Provider, ProviderError, SseEvent, SseStream,
};
use crate::openai::{ChatRequest, ChatResponse};
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use secrecy::ExposeSecret;
use serde_json::{Map, Value};
use std::sync::Arc;
pub use stream::StreamState;

const API_VERSION: &str = "2023-06-01";
/// What Vertex AI expects in the body of a Claude call instead of the header.
const VERTEX_VERSION: &str = "vertex-2023-10-16";

/// Where the Messages API is served.
enum Host {
    /// Anthropic's own API (`https://api.anthropic.com`, without `/v1`),
    /// the key in `x-api-key`.
    Anthropic { base_url: String },
    /// Claude on Google Cloud's Vertex AI: `rawPredict` and
    /// `streamRawPredict` of the model under the `anthropic` publisher, a
    /// service account's token as the bearer, the model in the URL and the
    /// version in the body.
    Vertex {
        base_url: String,
        project: String,
        region: String,
        token: Arc<TokenSource>,
    },
}

pub struct Anthropic {
    client: reqwest::Client,
    host: Host,
}

impl Anthropic {
    pub fn new(client: reqwest::Client, base_url: &str) -> Anthropic {
        Anthropic {
            client,
            host: Host::Anthropic {
                base_url: base_url.trim_end_matches('/').to_string(),
            },
        }
    }

    /// Claude on Vertex AI (`base_url` as for Gemini on Vertex).
    pub fn vertex(
        client: reqwest::Client,
        base_url: &str,
        project: &str,
        region: &str,
        token: Arc<TokenSource>,
    ) -> Anthropic {
        Anthropic {
            client,
            host: Host::Vertex {
                base_url: base_url.trim_end_matches('/').to_string(),
                project: project.to_string(),
                region: region.to_string(),
                token,
            },
        }
    }

    /// Whether `model` on Vertex AI is Claude (`claude-sonnet-4-5@20250929`).
    pub fn is_vertex_model(model: &str) -> bool {
        model.starts_with("claude")
    }

    async fn send(
        &self,
        path: &str,
        call: Call<'_>,
        body: &Value,
    ) -> Result<reqwest::Response, ProviderError> {
        let builder = match &self.host {
            Host::Anthropic { base_url } => {
                let builder = self
                    .client
                    .post(format!("{base_url}{path}"))
                    .header("anthropic-version", API_VERSION)
                    .json(body);
                match call.key {
                    Some(key) => builder.header("x-api-key", key),
                    None => builder,
                }
            }
            Host::Vertex {
                base_url,
                project,
                region,
                token,
            } => {
                let prefix = format!(
                    "{base_url}/v1/projects/{project}/locations/{region}/publishers/anthropic/models"
                );
                let mut body = body.clone();
                let url = if path.ends_with("/count_tokens") {
                    // Counting is its own model; the body names the one counted for.
                    format!("{prefix}/count-tokens:rawPredict")
                } else {
                    let model = percent_encoding::utf8_percent_encode(call.model, MODEL_IN_PATH);
                    let method = if body["stream"] == true {
                        "streamRawPredict"
                    } else {
                        "rawPredict"
                    };
                    if let Some(fields) = body.as_object_mut() {
                        fields.remove("model");
                    }
                    format!("{prefix}/{model}:{method}")
                };
                if let Some(fields) = body.as_object_mut() {
                    fields
                        .entry("anthropic_version")
                        .or_insert_with(|| Value::String(VERTEX_VERSION.into()));
                }
                self.client
                    .post(url)
                    .bearer_auth(token.bearer().await?.expose_secret())
                    .json(&body)
            }
        };
        let builder = match call.beta {
            Some(beta) => builder.header("anthropic-beta", beta),
            None => builder,
        };
        let response = builder.send().await.map_err(send_error)?;
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

/// A Messages stream event relayed as Claude sent it; an `error` event (a
/// failure after the 200) ends the stream as the deployment's failure.
pub fn native_event(event: String, data: Value) -> Result<SseEvent, ProviderError> {
    if event == "error" {
        let message = data.pointer("/error/message").and_then(Value::as_str);
        return Err(ProviderError::Unavailable {
            status: 200,
            message: message.unwrap_or("stream error").to_string(),
        });
    }
    Ok(SseEvent { event, data })
}

impl Provider for Anthropic {
    fn kind(&self) -> &'static str {
        match self.host {
            Host::Anthropic { .. } => "anthropic",
            Host::Vertex { .. } => "vertex",
        }
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
                native_event(event.event, data)
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
