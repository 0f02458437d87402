//! Anthropic's stream events as OpenAI chunks. Each `tool_use` block becomes
//! a tool call numbered in order of appearance (`index`), its
//! `input_json_delta`s that call's argument deltas; thinking deltas become
//! `reasoning_content` deltas (a block's signature and a redacted block, a
//! `thinking_blocks` delta); usage arrives in halves (input at
//! `message_start`, output at `message_delta`) and goes out in a last
//! usage-only chunk at `message_stop`.

use super::request::STRUCTURED_OUTPUT_TOOL;
use super::response::{finish_reason, usage};
use crate::openai::{ChatChunk, Usage};
use crate::provider::ProviderError;
use serde_json::{Value, json};
use std::collections::HashMap;

enum Block {
    Text,
    Thinking,
    /// A tool call, by its OpenAI index.
    Tool(usize),
    /// The tool a JSON-schema `response_format` became: its input is text.
    Structured,
    Other,
}

#[derive(Default)]
pub struct StreamState {
    id: String,
    model: String,
    created: u64,
    usage: Usage,
    blocks: HashMap<u64, Block>,
    tools: usize,
    structured: bool,
}

fn protocol(e: impl std::fmt::Display) -> ProviderError {
    ProviderError::Protocol(e.to_string())
}

impl StreamState {
    fn chunk(&self, delta: Value, finish: Option<&str>) -> ChatChunk {
        ChatChunk::delta(&self.id, self.created, &self.model, delta, finish)
    }

    pub fn on_event(&mut self, kind: &str, data: &str) -> Result<Vec<ChatChunk>, ProviderError> {
        let event: Value = serde_json::from_str(data).map_err(protocol)?;
        self.on_value(kind, &event)
    }

    /// [`StreamState::on_event`] for an event already parsed (Bedrock's).
    pub fn on_value(&mut self, kind: &str, event: &Value) -> Result<Vec<ChatChunk>, ProviderError> {
        let mut out = Vec::new();
        match kind {
            "message_start" => {
                let message = &event["message"];
                self.id = message["id"].as_str().unwrap_or("msg").to_string();
                self.model = message["model"].as_str().unwrap_or("").to_string();
                self.created = crate::clock::unix_now();
                self.usage = usage(&message["usage"]);
                out.push(self.chunk(json!({ "role": "assistant", "content": "" }), None));
            }
            "content_block_start" => {
                let index = event["index"].as_u64().unwrap_or(0);
                let block = &event["content_block"];
                let kind = match block["type"].as_str() {
                    Some("text") => {
                        if let Some(text) = block["text"].as_str().filter(|t| !t.is_empty()) {
                            out.push(self.chunk(json!({ "content": text }), None));
                        }
                        Block::Text
                    }
                    Some("thinking") => Block::Thinking,
                    Some("redacted_thinking") => {
                        // Opaque: it goes back to Anthropic whole on the next turn.
                        out.push(self.chunk(json!({ "thinking_blocks": [block] }), None));
                        Block::Other
                    }
                    Some("tool_use") if block["name"] == STRUCTURED_OUTPUT_TOOL => {
                        self.structured = true;
                        Block::Structured
                    }
                    Some("tool_use") => {
                        let call = self.tools;
                        self.tools += 1;
                        out.push(self.chunk(
                            json!({ "tool_calls": [{
                                "index": call, "id": block["id"], "type": "function",
                                "function": { "name": block["name"], "arguments": "" },
                            }] }),
                            None,
                        ));
                        Block::Tool(call)
                    }
                    _ => Block::Other,
                };
                self.blocks.insert(index, kind);
            }
            "content_block_delta" => {
                let index = event["index"].as_u64().unwrap_or(0);
                let delta = &event["delta"];
                let piece = |field: &str| delta[field].as_str().unwrap_or("").to_string();
                let out_delta = match (self.blocks.get(&index), delta["type"].as_str()) {
                    (Some(Block::Tool(call)), Some("input_json_delta")) => Some(json!({
                        "tool_calls": [{ "index": call, "function": { "arguments": piece("partial_json") } }],
                    })),
                    (Some(Block::Structured), Some("input_json_delta")) => {
                        Some(json!({ "content": piece("partial_json") }))
                    }
                    (_, Some("text_delta")) => Some(json!({ "content": piece("text") })),
                    (_, Some("thinking_delta")) => {
                        Some(json!({ "reasoning_content": piece("thinking") }))
                    }
                    (_, Some("signature_delta")) => Some(json!({
                        "thinking_blocks": [{ "type": "thinking", "thinking": "", "signature": piece("signature") }],
                    })),
                    _ => None,
                };
                if let Some(delta) = out_delta {
                    out.push(self.chunk(delta, None));
                }
            }
            "message_delta" => {
                if event.pointer("/usage/input_tokens").is_some() {
                    // The whole usage again (Anthropic lately; always from
                    // Bedrock's Converse, which counts input only at the end).
                    self.usage = usage(&event["usage"]);
                } else if let Some(n) = event
                    .pointer("/usage/output_tokens")
                    .and_then(Value::as_u64)
                {
                    self.usage.completion_tokens = n as u32;
                    self.usage.total_tokens = self.usage.prompt_tokens + n as u32;
                }
                if let Some(reason) = event.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    let finish = if reason == "tool_use" && self.structured && self.tools == 0 {
                        "stop"
                    } else {
                        finish_reason(Some(reason))
                    };
                    out.push(self.chunk(json!({}), Some(finish)));
                }
            }
            "message_stop" => out.push(ChatChunk::usage_only(
                &self.id,
                self.created,
                &self.model,
                self.usage,
            )),
            "error" => {
                let message = event
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("stream error");
                return Err(ProviderError::Unavailable {
                    status: 200,
                    message: message.to_string(),
                });
            }
            _ => {} // ping, content_block_stop
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_call_deltas_keep_their_index() {
        let mut state = StreamState::default();
        let mut chunks = Vec::new();
        for (kind, data) in [
            (
                "message_start",
                r#"{"message":{"id":"msg_1","model":"claude-x","usage":{"input_tokens":12,"cache_read_input_tokens":3}}}"#,
            ),
            (
                "content_block_start",
                r#"{"index":0,"content_block":{"type":"text","text":""}}"#,
            ),
            (
                "content_block_delta",
                r#"{"index":0,"delta":{"type":"text_delta","text":"Checking."}}"#,
            ),
            (
                "content_block_start",
                r#"{"index":1,"content_block":{"type":"tool_use","id":"tu_1","name":"weather","input":{}}}"#,
            ),
            (
                "content_block_delta",
                r#"{"index":1,"delta":{"type":"input_json_delta","partial_json":"{\"city\":"}}"#,
            ),
            (
                "content_block_start",
                r#"{"index":2,"content_block":{"type":"tool_use","id":"tu_2","name":"time","input":{}}}"#,
            ),
            (
                "content_block_delta",
                r#"{"index":2,"delta":{"type":"input_json_delta","partial_json":"{}"}}"#,
            ),
            (
                "content_block_delta",
                r#"{"index":1,"delta":{"type":"input_json_delta","partial_json":"\"Paris\"}"}}"#,
            ),
            ("ping", "{}"),
            (
                "message_delta",
                r#"{"delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":30}}"#,
            ),
            ("message_stop", "{}"),
        ] {
            chunks.extend(state.on_event(kind, data).unwrap());
        }
        let deltas: Vec<&Value> = chunks
            .iter()
            .filter_map(|c| c.choices().first())
            .map(|c| &c["delta"])
            .collect();
        assert_eq!(deltas[0]["role"], "assistant");
        assert_eq!(deltas[1]["content"], "Checking.");
        assert_eq!(deltas[2]["tool_calls"][0]["id"], "tu_1");
        assert_eq!(deltas[3]["tool_calls"][0]["index"], 0);
        assert_eq!(deltas[4]["tool_calls"][0]["index"], 1);
        assert_eq!(deltas[6]["tool_calls"][0]["index"], 0);
        assert_eq!(
            deltas[6]["tool_calls"][0]["function"]["arguments"],
            "\"Paris\"}"
        );
        assert_eq!(chunks[7].choices()[0]["finish_reason"], "tool_calls");
        let usage = chunks.last().unwrap().usage().unwrap();
        assert_eq!(
            (
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.cached_tokens
            ),
            (15, 30, 3)
        );
        assert!(
            state
                .on_event("error", r#"{"error":{"message":"overloaded"}}"#)
                .is_err()
        );
    }
}
