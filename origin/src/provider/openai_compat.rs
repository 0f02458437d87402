//! Any upstream that speaks OpenAI's HTTP API: OpenAI itself, vLLM, Ollama,
//! llama.cpp's server, another Sluice. The client's request is forwarded
//! whole with the upstream's model name (and, when streamed, a request for
//! usage); the answer and every chunk come back as the upstream sent them.

use super::wire::{check_status, events, send_error};
use super::{Call, Embeddings, EventStream, Provider, ProviderError};
use crate::openai::{ChatChunk, ChatRequest, ChatResponse};
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use serde::Deserialize;
use serde_json::{Map, Value, json};

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

    /// The client's request with the upstream's model name; a stream also
    /// asks for usage (how cost is counted), keeping any other stream option.
    fn upstream_body(call: Call<'_>, request: &ChatRequest, stream: bool) -> ChatRequest {
        let mut body = request.clone();
        body.model = call.model.to_string();
        if stream {
            body.set("stream", Value::Bool(true));
            let mut options = match body.field("stream_options") {
                Some(Value::Object(options)) => options.clone(),
                _ => Map::new(),
            };
            options.insert("include_usage".into(), Value::Bool(true));
            body.set("stream_options", Value::Object(options));
        } else if request.field("stream").is_some() {
            body.set("stream", Value::Bool(false));
        }
        body
    }
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
    ) -> BoxFuture<'a, Result<ChatResponse, ProviderError>> {
        Box::pin(async move {
            let response = self
                .post("/chat/completions", call)
                .json(&Self::upstream_body(call, request, false))
                .send()
                .await
                .map_err(send_error)?;
            let body: ChatResponse = check_status(response, call)
                .await?
                .json()
                .await
                .map_err(protocol)?;
            if body.0.get("choices").and_then(Value::as_array).is_none() {
                return Err(protocol("the completion has no `choices`"));
            }
            Ok(body)
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
            let response = check_status(response, call).await?;
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
                    match value {
                        Value::Object(chunk) => Ok(ChatChunk(chunk)),
                        other => Err(protocol(format!("a chunk that is not an object: {other}"))),
                    }
                });
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
            let mut wire: WireEmbeddings = check_status(response, call)
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
