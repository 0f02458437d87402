//! Any upstream that speaks OpenAI's HTTP API: OpenAI itself, Azure OpenAI
//! (its own URLs and sign-in, [`Dialect::Azure`]), vLLM, Ollama, llama.cpp's
//! server, another Sluice. The client's request is forwarded
//! whole with the upstream's model name (and, when streamed, a request for
//! usage); the answer and every chunk come back as the upstream sent them.

use super::token::TokenSource;
use super::wire::{check_status, events, send_error};
use super::{Call, Embeddings, EventStream, Provider, ProviderError};
use crate::openai::{ChatChunk, ChatMessage, ChatRequest, ChatResponse, Role};
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// What a deployment name may not hold unescaped in a path segment.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.');

pub struct OpenAiCompatible {
    client: reqwest::Client,
    /// Up to and including the version segment: `https://api.openai.com/v1`;
    /// for Azure, the resource endpoint: `https://NAME.openai.azure.com`.
    base_url: String,
    dialect: Dialect,
}

/// Where the OpenAI-format API sits and how it is signed in to.
pub enum Dialect {
    /// `{base_url}/chat/completions`, the key as a bearer token.
    OpenAi,
    /// Azure OpenAI: with an `api_version`, the deployment-based endpoint
    /// (`/openai/deployments/{model}/chat/completions?api-version=...`, the
    /// model being the deployment's name), else the v1 endpoint
    /// (`/openai/v1/chat/completions`). The key goes in `api-key`, or an
    /// Entra ID token as a bearer token.
    Azure {
        api_version: Option<String>,
        entra: Option<Arc<TokenSource>>,
    },
}

impl OpenAiCompatible {
    pub fn new(client: reqwest::Client, base_url: &str, dialect: Dialect) -> OpenAiCompatible {
        OpenAiCompatible {
            client,
            base_url: base_url.trim_end_matches('/').to_string(),
            dialect,
        }
    }

    async fn post(
        &self,
        path: &str,
        call: Call<'_>,
    ) -> Result<reqwest::RequestBuilder, ProviderError> {
        Ok(match &self.dialect {
            Dialect::OpenAi => {
                let builder = self.client.post(format!("{}{path}", self.base_url));
                match call.key {
                    Some(key) => builder.bearer_auth(key),
                    None => builder,
                }
            }
            Dialect::Azure { api_version, entra } => {
                let builder = match api_version {
                    Some(version) => self
                        .client
                        .post(format!(
                            "{}/openai/deployments/{}{path}",
                            self.base_url,
                            percent_encoding::utf8_percent_encode(call.model, SEGMENT)
                        ))
                        .query(&[("api-version", version)]),
                    None => self
                        .client
                        .post(format!("{}/openai/v1{path}", self.base_url)),
                };
                match (entra, call.key) {
                    (Some(entra), _) => builder.bearer_auth(entra.bearer().await?.expose_secret()),
                    (None, Some(key)) => builder.header("api-key", key),
                    (None, None) => builder,
                }
            }
        })
    }

    /// The client's request with the upstream's model name; a stream also
    /// asks for usage (how cost is counted), keeping any other stream option.
    /// Three things change, noted on the call: the `thinking_blocks` Sluice
    /// returns from Anthropic models (its own field, which OpenAI's API would
    /// refuse) are left out; images and files in a `tool` message (whose parts
    /// OpenAI takes as text only) follow the tool messages in a user message
    /// (`move_tool_media`); and a reasoning request (`reasoning_effort`)
    /// capped with `max_tokens` goes as `max_completion_tokens`, the only cap
    /// OpenAI's reasoning models take.
    fn upstream_body(call: Call<'_>, request: &ChatRequest, stream: bool) -> ChatRequest {
        let mut body = request.clone();
        body.model = call.model.to_string();
        let mut stripped = false;
        let mut signatures = false;
        for message in &mut body.messages {
            stripped |= message.extra.remove("thinking_blocks").is_some();
            // Gemini's thought signatures, which OpenAI's API would refuse.
            if let Some(Value::Array(calls)) = message.extra.get_mut("tool_calls") {
                for tool_call in calls.iter_mut().filter_map(Value::as_object_mut) {
                    signatures |= tool_call.remove("extra_content").is_some();
                }
            }
        }
        if stripped {
            call.adjust("messages.thinking_blocks:dropped");
        }
        if signatures {
            call.adjust("tool_calls.extra_content:dropped");
        }
        move_tool_media(&mut body, &call);
        if body.field("reasoning_effort").is_some()
            && body.field("max_completion_tokens").is_none()
            && let Some(cap) = body.extra.remove("max_tokens").filter(|v| !v.is_null())
        {
            body.set("max_completion_tokens", cap);
            call.adjust("max_tokens:sent_as_max_completion_tokens");
        }
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

/// Moves the non-text parts of `tool` messages (an image a tool returned:
/// a screenshot, a file read) into one user message after that run of tool
/// messages, each introduced by the call it came from; OpenAI refuses them in
/// a tool message and the model would otherwise never see them.
fn move_tool_media(body: &mut ChatRequest, call: &Call<'_>) {
    let has_media = |m: &ChatMessage| {
        m.role == Role::Tool
            && m.content()
                .and_then(Value::as_array)
                .is_some_and(|parts| parts.iter().any(|p| p["type"] != "text"))
    };
    if !body.messages.iter().any(has_media) {
        return;
    }
    let mut out: Vec<ChatMessage> = Vec::with_capacity(body.messages.len() + 1);
    let mut moved: Vec<Value> = Vec::new();
    for mut message in std::mem::take(&mut body.messages) {
        if message.role != Role::Tool && !moved.is_empty() {
            out.push(user_message(std::mem::take(&mut moved)));
        }
        if has_media(&message) {
            let id = message
                .extra
                .get("tool_call_id")
                .cloned()
                .unwrap_or_default();
            let parts = match message.extra.remove("content") {
                Some(Value::Array(parts)) => parts,
                _ => Vec::new(),
            };
            let (text, media): (Vec<Value>, Vec<Value>) =
                parts.into_iter().partition(|p| p["type"] == "text");
            moved.push(json!({ "type": "text", "text": format!(
                "[the result of tool call {} continues here]",
                id.as_str().unwrap_or_default()
            ) }));
            moved.extend(media);
            let text = if text.is_empty() {
                json!("[attachments follow in the next user message]")
            } else {
                Value::Array(text)
            };
            message.extra.insert("content".into(), text);
            call.adjust("tool.content.image:user_message");
        }
        out.push(message);
    }
    if !moved.is_empty() {
        out.push(user_message(moved));
    }
    body.messages = out;
}

fn user_message(parts: Vec<Value>) -> ChatMessage {
    let mut extra = Map::new();
    extra.insert("content".into(), Value::Array(parts));
    ChatMessage {
        role: Role::User,
        extra,
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
        match self.dialect {
            Dialect::OpenAi => "openai",
            Dialect::Azure { .. } => "azure",
        }
    }

    fn complete<'a>(
        &'a self,
        call: Call<'a>,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChatResponse, ProviderError>> {
        Box::pin(async move {
            let response = self
                .post("/chat/completions", call)
                .await?
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
                .await?
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
                .await?
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
            Embeddings::for_inputs(
                inputs,
                wire.data.into_iter().map(|d| d.embedding).collect(),
                wire.usage.map(|u| u.prompt_tokens),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::Adjustments;

    #[test]
    fn the_upstream_gets_what_openai_takes_and_the_changes_are_noted() {
        let request: ChatRequest = serde_json::from_value(json!({
            "model": "alias", "reasoning_effort": "high", "max_tokens": 900,
            "messages": [
                {"role": "user", "content": "look"},
                {"role": "assistant", "content": null, "thinking_blocks": [{"type": "thinking"}],
                 "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "shot", "arguments": "{}"}},
                                {"id": "c2", "type": "function", "function": {"name": "read", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": [
                    {"type": "text", "text": "the screen"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
                {"role": "tool", "tool_call_id": "c2", "content": "text only"},
                {"role": "user", "content": "what do you see?"}
            ]
        }))
        .unwrap();
        let adjusted = Adjustments::default();
        let call = Call {
            model: "upstream-model",
            key: None,
            beta: None,
            limits: None,
            adjusted: Some(&adjusted),
        };
        let body =
            serde_json::to_value(OpenAiCompatible::upstream_body(call, &request, false)).unwrap();
        assert_eq!(body["model"], "upstream-model");
        assert_eq!(body["max_completion_tokens"], 900);
        assert!(body.get("max_tokens").is_none());
        let messages = body["messages"].as_array().unwrap();
        assert!(messages[1].get("thinking_blocks").is_none());
        assert_eq!(
            messages[2]["content"],
            json!([{"type": "text", "text": "the screen"}])
        );
        assert_eq!(messages[3]["content"], "text only");
        assert_eq!(messages[4]["role"], "user");
        assert_eq!(
            messages[4]["content"][1]["image_url"]["url"],
            "data:image/png;base64,AAAA"
        );
        assert_eq!(messages[5]["content"], "what do you see?");
        assert_eq!(
            adjusted.take(),
            [
                "messages.thinking_blocks:dropped",
                "tool.content.image:user_message",
                "max_tokens:sent_as_max_completion_tokens"
            ]
        );
    }
}
