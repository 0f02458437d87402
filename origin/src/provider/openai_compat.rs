//! Any upstream that speaks OpenAI's HTTP API: OpenAI itself, vLLM, Ollama,
//! llama.cpp's server, another Sluice. The client's request is forwarded with
//! its extra fields intact; only `model` (and stream options) are ours.

use super::wire::{check_status, events, send_error};
use super::{Call, Completion, Embeddings, EventStream, Provider, ProviderError, StreamEvent};
use crate::openai::{ChatRequest, StreamOptions, Usage};
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use serde::Deserialize;
use serde_json::json;

pub struct OpenAiCompatible {
    client: reqwest::Client,
    /// Up to and including the version segment: `https://api.openai.com/v1`.
    base_url: String,
}

impl OpenAiCompatible {
    pub fn new(client: reqwest::Client, base_url: &str) -> OpenAiCompatible {
        OpenAiCompatible {
            client,
            base_url: base_url.trim_end_matches('/').to_string(),
        }
    }

    fn post(&self, path: &str, call: Call<'_>) -> reqwest::RequestBuilder {
        let builder = self.client.post(format!("{}{path}", self.base_url));
        match call.key {
            Some(key) => builder.bearer_auth(key),
            None => builder,
        }
    }

    fn upstream_body(call: Call<'_>, request: &ChatRequest, stream: bool) -> ChatRequest {
        let mut body = request.clone();
        body.model = call.model.to_string();
        body.stream = Some(stream);
        // Usage is how cost is counted, so always ask for it when streaming.
        body.stream_options = stream.then_some(StreamOptions {
            include_usage: true,
        });
        body
    }
}

#[derive(Deserialize)]
struct WireCompletion {
    choices: Vec<WireChoice>,
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct WireChoice {
    message: Option<WireMessage>,
    delta: Option<WireMessage>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireMessage {
    content: Option<String>,
}

#[derive(Deserialize)]
struct WireEmbeddings {
    data: Vec<WireEmbedding>,
    usage: Option<WireEmbeddingUsage>,
}

#[derive(Deserialize)]
struct WireEmbedding {
    index: usize,
    embedding: Vec<f32>,
}

#[derive(Deserialize)]
struct WireEmbeddingUsage {
    prompt_tokens: u32,
}

fn protocol(e: impl std::fmt::Display) -> ProviderError {
    ProviderError::Protocol(e.to_string())
}

impl Provider for OpenAiCompatible {
    fn kind(&self) -> &'static str {
        "openai"
    }

    fn complete<'a>(
        &'a self,
        call: Call<'a>,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<Completion, ProviderError>> {
        Box::pin(async move {
            let response = self
                .post("/chat/completions", call)
                .json(&Self::upstream_body(call, request, false))
                .send()
                .await
                .map_err(send_error)?;
            let wire: WireCompletion = check_status(response)
                .await?
                .json()
                .await
                .map_err(protocol)?;
            let choice = wire
                .choices
                .into_iter()
                .next()
                .ok_or_else(|| protocol("no choices in the completion"))?;
            Ok(Completion {
                content: choice.message.and_then(|m| m.content).unwrap_or_default(),
                finish_reason: choice.finish_reason.unwrap_or_else(|| "stop".into()),
                usage: wire.usage,
            })
        })
    }

    fn stream<'a>(
        &'a self,
        call: Call<'a>,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<EventStream, ProviderError>> {
        Box::pin(async move {
            let response = self
                .post("/chat/completions", call)
                .json(&Self::upstream_body(call, request, true))
                .send()
                .await
                .map_err(send_error)?;
            let response = check_status(response).await?;
            let stream = events(response)
                .try_take_while(|event| futures::future::ready(Ok(event.data != "[DONE]")))
                .map(|event| {
                    let event = event?;
                    let value: serde_json::Value =
                        serde_json::from_str(&event.data).map_err(protocol)?;
                    if let Some(error) = value.get("error") {
                        return Err(ProviderError::Unavailable {
                            status: 200,
                            message: error.to_string(),
                        });
                    }
                    let chunk: WireCompletion = serde_json::from_value(value).map_err(protocol)?;
                    let mut out = Vec::new();
                    if let Some(choice) = chunk.choices.into_iter().next() {
                        if let Some(text) = choice.delta.and_then(|d| d.content)
                            && !text.is_empty()
                        {
                            out.push(Ok(StreamEvent::Delta(text)));
                        }
                        if let Some(reason) = choice.finish_reason {
                            out.push(Ok(StreamEvent::Finish(reason)));
                        }
                    }
                    if let Some(usage) = chunk.usage {
                        out.push(Ok(StreamEvent::Usage(usage)));
                    }
                    Ok(futures::stream::iter(out))
                })
                .try_flatten();
            Ok(stream.boxed())
        })
    }

    fn embed<'a>(
        &'a self,
        call: Call<'a>,
        inputs: &'a [String],
    ) -> BoxFuture<'a, Result<Embeddings, ProviderError>> {
        Box::pin(async move {
            let response = self
                .post("/embeddings", call)
                .json(&json!({ "model": call.model, "input": inputs, "encoding_format": "float" }))
                .send()
                .await
                .map_err(send_error)?;
            let mut wire: WireEmbeddings = check_status(response)
                .await?
                .json()
                .await
                .map_err(protocol)?;
            wire.data.sort_by_key(|d| d.index);
            if wire.data.len() != inputs.len() {
                return Err(protocol(format!(
                    "{} embeddings for {} inputs",
                    wire.data.len(),
                    inputs.len()
                )));
            }
            Ok(Embeddings {
                vectors: wire.data.into_iter().map(|d| d.embedding).collect(),
                prompt_tokens: wire.usage.map(|u| u.prompt_tokens),
            })
        })
    }
}
