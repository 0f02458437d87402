//! Anthropic's Messages API, translated to and from OpenAI's chat format:
//! system and developer turns become `system`, tool results become user text,
//! stop reasons and usage are mapped back, and the event stream is re-chunked.

use super::wire::{check_status, events, send_error};
use super::{Call, Completion, Embeddings, EventStream, Provider, ProviderError, StreamEvent};
use crate::openai::{ChatRequest, Role, Usage};
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use serde::Deserialize;
use serde_json::{Value, json};

const API_VERSION: &str = "2023-06-01";
/// Anthropic requires `max_tokens`; used when the client set none.
const DEFAULT_MAX_TOKENS: u32 = 4096;

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

    fn post(&self, call: Call<'_>, body: &Value) -> reqwest::RequestBuilder {
        let builder = self
            .client
            .post(format!("{}/v1/messages", self.base_url))
            .header("anthropic-version", API_VERSION)
            .json(body);
        match call.key {
            Some(key) => builder.header("x-api-key", key),
            None => builder,
        }
    }
}

/// The Messages API body for an OpenAI chat request.
pub fn translate_request(call: Call<'_>, request: &ChatRequest, stream: bool) -> Value {
    let mut system = Vec::new();
    let mut messages = Vec::new();
    for message in &request.messages {
        let text = message.text();
        let role = match message.role {
            Role::System | Role::Developer => {
                system.push(text);
                continue;
            }
            Role::Assistant => "assistant",
            Role::User | Role::Tool => "user",
        };
        messages.push(json!({ "role": role, "content": text }));
    }
    let mut body = json!({
        "model": call.model,
        "max_tokens": request.max_output_tokens().unwrap_or(DEFAULT_MAX_TOKENS),
        "messages": messages,
        "stream": stream,
    });
    if !system.is_empty() {
        body["system"] = json!(system.join("\n\n"));
    }
    if let Some(t) = request.temperature {
        // OpenAI's range is 0-2, Anthropic's 0-1.
        body["temperature"] = json!((t / 2.0).clamp(0.0, 1.0));
    }
    if let Some(top_p) = request.extra.get("top_p") {
        body["top_p"] = top_p.clone();
    }
    match request.extra.get("stop") {
        Some(Value::String(s)) => body["stop_sequences"] = json!([s]),
        Some(list @ Value::Array(_)) => body["stop_sequences"] = list.clone(),
        _ => {}
    }
    body
}

/// OpenAI's name for an Anthropic stop reason.
pub fn finish_reason(stop_reason: Option<&str>) -> String {
    match stop_reason {
        Some("max_tokens") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        _ => "stop",
    }
    .to_string()
}

#[derive(Deserialize)]
struct WireMessage {
    content: Vec<WireBlock>,
    stop_reason: Option<String>,
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireBlock {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize, Default, Clone, Copy)]
struct WireUsage {
    #[serde(default)]
    input_tokens: u32,
    #[serde(default)]
    output_tokens: u32,
}

fn protocol(e: impl std::fmt::Display) -> ProviderError {
    ProviderError::Protocol(e.to_string())
}

/// Folds Anthropic's stream events into ours; usage arrives in two halves
/// (input at `message_start`, output at `message_delta`).
struct StreamState {
    input_tokens: u32,
    output_tokens: u32,
}

impl StreamState {
    fn on_event(&mut self, kind: &str, data: &str) -> Result<Vec<StreamEvent>, ProviderError> {
        let value: Value = serde_json::from_str(data).map_err(protocol)?;
        let mut out = Vec::new();
        match kind {
            "message_start" => {
                if let Some(n) = value
                    .pointer("/message/usage/input_tokens")
                    .and_then(Value::as_u64)
                {
                    self.input_tokens = n as u32;
                }
            }
            "content_block_delta" => {
                if let Some(text) = value.pointer("/delta/text").and_then(Value::as_str)
                    && !text.is_empty()
                {
                    out.push(StreamEvent::Delta(text.to_string()));
                }
            }
            "message_delta" => {
                if let Some(n) = value
                    .pointer("/usage/output_tokens")
                    .and_then(Value::as_u64)
                {
                    self.output_tokens = n as u32;
                }
                if let Some(reason) = value.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    out.push(StreamEvent::Finish(finish_reason(Some(reason))));
                }
            }
            "message_stop" => out.push(StreamEvent::Usage(Usage::new(
                self.input_tokens,
                self.output_tokens,
            ))),
            "error" => {
                let message = value
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("stream error");
                return Err(ProviderError::Unavailable {
                    status: 200,
                    message: message.to_string(),
                });
            }
            _ => {} // ping, content_block_start/stop
        }
        Ok(out)
    }
}

impl Provider for Anthropic {
    fn kind(&self) -> &'static str {
        "anthropic"
    }

    fn complete<'a>(
        &'a self,
        call: Call<'a>,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<Completion, ProviderError>> {
        Box::pin(async move {
            let body = translate_request(call, request, false);
            let response = self.post(call, &body).send().await.map_err(send_error)?;
            let wire: WireMessage = check_status(response)
                .await?
                .json()
                .await
                .map_err(protocol)?;
            let content = wire
                .content
                .iter()
                .filter(|b| b.kind == "text")
                .filter_map(|b| b.text.as_deref())
                .collect::<String>();
            Ok(Completion {
                content,
                finish_reason: finish_reason(wire.stop_reason.as_deref()),
                usage: wire
                    .usage
                    .map(|u| Usage::new(u.input_tokens, u.output_tokens)),
            })
        })
    }

    fn stream<'a>(
        &'a self,
        call: Call<'a>,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<EventStream, ProviderError>> {
        Box::pin(async move {
            let body = translate_request(call, request, true);
            let response = self.post(call, &body).send().await.map_err(send_error)?;
            let response = check_status(response).await?;
            let mut state = StreamState {
                input_tokens: 0,
                output_tokens: 0,
            };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translates_roles_and_limits() {
        let request: ChatRequest = serde_json::from_value(json!({
            "model": "claude", "temperature": 1.0, "stop": "END",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": [{"type": "text", "text": "again"}]}
            ]
        }))
        .unwrap();
        let body = translate_request(
            Call {
                model: "claude-3-5",
                key: None,
            },
            &request,
            true,
        );
        assert_eq!(body["system"], "be brief");
        assert_eq!(body["model"], "claude-3-5");
        assert_eq!(body["max_tokens"], DEFAULT_MAX_TOKENS);
        assert_eq!(body["temperature"], 0.5);
        assert_eq!(body["stop_sequences"], json!(["END"]));
        assert_eq!(body["messages"].as_array().unwrap().len(), 3);
        assert_eq!(body["messages"][2]["content"], "again");
    }

    #[test]
    fn folds_the_event_stream() {
        let mut state = StreamState {
            input_tokens: 0,
            output_tokens: 0,
        };
        let mut all = Vec::new();
        for (kind, data) in [
            (
                "message_start",
                r#"{"message":{"usage":{"input_tokens":12}}}"#,
            ),
            (
                "content_block_delta",
                r#"{"delta":{"type":"text_delta","text":"Hi"}}"#,
            ),
            ("ping", "{}"),
            (
                "message_delta",
                r#"{"delta":{"stop_reason":"max_tokens"},"usage":{"output_tokens":3}}"#,
            ),
            ("message_stop", "{}"),
        ] {
            all.extend(state.on_event(kind, data).unwrap());
        }
        assert_eq!(
            all,
            vec![
                StreamEvent::Delta("Hi".into()),
                StreamEvent::Finish("length".into()),
                StreamEvent::Usage(Usage::new(12, 3)),
            ]
        );
        assert!(
            state
                .on_event("error", r#"{"error":{"message":"overloaded"}}"#)
                .is_err()
        );
    }
}
