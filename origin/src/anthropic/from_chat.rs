//! An OpenAI chat answer as a Messages API answer, and an OpenAI chunk
//! stream as Anthropic's events: `message_start`, `ping`, then for each
//! content block `content_block_start`, its deltas and `content_block_stop`,
//! then `message_delta` (stop reason and usage) and `message_stop`.

use super::SseEvent;
use crate::openai::{ChatChunk, ChatResponse, Usage};
use serde_json::{Value, json};
use std::collections::HashMap;

/// Anthropic's name for an OpenAI finish reason.
pub fn stop_reason(finish: Option<&str>) -> &'static str {
    match finish {
        Some("length") => "max_tokens",
        Some("tool_calls") | Some("function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

/// Usage in Anthropic's terms: `input_tokens` excludes cache reads and writes.
pub fn usage_json(usage: Usage) -> Value {
    json!({
        "input_tokens": usage.prompt_tokens.saturating_sub(usage.cached_tokens + usage.cache_write_tokens),
        "output_tokens": usage.completion_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
    })
}

fn tool_input(arguments: &Value) -> Value {
    let text = arguments.as_str().unwrap_or("");
    if text.trim().is_empty() {
        return json!({});
    }
    serde_json::from_str(text).unwrap_or_else(|_| json!({ "arguments": text }))
}

/// The Messages API answer for a chat completion, named `model`.
pub fn message(response: &ChatResponse, model: &str, usage: Usage) -> Value {
    let mut content = Vec::new();
    if let Some(message) = response.message() {
        if let Some(reasoning) = message["reasoning_content"]
            .as_str()
            .filter(|r| !r.is_empty())
        {
            content.push(json!({ "type": "thinking", "thinking": reasoning, "signature": "" }));
        }
        let text = response.text();
        if !text.is_empty() {
            content.push(json!({ "type": "text", "text": text }));
        }
        for call in message["tool_calls"].as_array().into_iter().flatten() {
            content.push(json!({
                "type": "tool_use", "id": call["id"], "name": call["function"]["name"],
                "input": tool_input(&call["function"]["arguments"]),
            }));
        }
    }
    json!({
        "id": format!("msg_{}", uuid::Uuid::new_v4().simple()),
        "type": "message", "role": "assistant", "model": model, "content": content,
        "stop_reason": stop_reason(response.finish_reason()), "stop_sequence": null,
        "usage": usage_json(usage),
    })
}

#[derive(PartialEq)]
enum Open {
    Text,
    Thinking,
    Tool(u64),
}

/// Turns chunks into events, one chunk at a time.
pub struct EventsFromChunks {
    model: String,
    started: bool,
    /// The open block and its Anthropic index.
    open: Option<(Open, usize)>,
    next_block: usize,
    /// OpenAI tool-call index -> Anthropic block index.
    tools: HashMap<u64, usize>,
    finish: Option<String>,
    usage: Option<Usage>,
}

fn event(name: &str, data: Value) -> SseEvent {
    SseEvent {
        event: name.to_string(),
        data,
    }
}

impl EventsFromChunks {
    pub fn new(model: &str) -> EventsFromChunks {
        EventsFromChunks {
            model: model.to_string(),
            started: false,
            open: None,
            next_block: 0,
            tools: HashMap::new(),
            finish: None,
            usage: None,
        }
    }

    fn start(&mut self, out: &mut Vec<SseEvent>) {
        if self.started {
            return;
        }
        self.started = true;
        out.push(event(
            "message_start",
            json!({
                "type": "message_start",
                "message": {
                    "id": format!("msg_{}", uuid::Uuid::new_v4().simple()),
                    "type": "message", "role": "assistant", "model": self.model, "content": [],
                    "stop_reason": null, "stop_sequence": null,
                    "usage": { "input_tokens": 0, "output_tokens": 0 },
                },
            }),
        ));
        out.push(event("ping", json!({ "type": "ping" })));
    }

    fn close(&mut self, out: &mut Vec<SseEvent>) {
        if let Some((_, index)) = self.open.take() {
            out.push(event(
                "content_block_stop",
                json!({ "type": "content_block_stop", "index": index }),
            ));
        }
    }

    /// Opens a block of `kind` unless it is the open one; its index.
    fn open(&mut self, kind: Open, block: Value, out: &mut Vec<SseEvent>) -> usize {
        if let Some((open, index)) = &self.open
            && *open == kind
        {
            return *index;
        }
        self.close(out);
        let index = self.next_block;
        self.next_block += 1;
        out.push(event(
            "content_block_start",
            json!({
                "type": "content_block_start", "index": index, "content_block": block,
            }),
        ));
        self.open = Some((kind, index));
        index
    }

    fn delta(index: usize, delta: Value) -> SseEvent {
        event(
            "content_block_delta",
            json!({ "type": "content_block_delta", "index": index, "delta": delta }),
        )
    }

    pub fn on_chunk(&mut self, chunk: &ChatChunk) -> Vec<SseEvent> {
        let mut out = Vec::new();
        self.start(&mut out);
        if let Some(usage) = chunk.usage() {
            self.usage = Some(usage);
        }
        let Some(choice) = chunk.choices().first() else {
            return out;
        };
        let delta = &choice["delta"];
        if let Some(thinking) = delta["reasoning_content"]
            .as_str()
            .filter(|t| !t.is_empty())
        {
            let index = self.open(
                Open::Thinking,
                json!({ "type": "thinking", "thinking": "", "signature": "" }),
                &mut out,
            );
            out.push(Self::delta(
                index,
                json!({ "type": "thinking_delta", "thinking": thinking }),
            ));
        }
        if let Some(text) = delta["content"].as_str().filter(|t| !t.is_empty()) {
            let index = self.open(Open::Text, json!({ "type": "text", "text": "" }), &mut out);
            out.push(Self::delta(
                index,
                json!({ "type": "text_delta", "text": text }),
            ));
        }
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            let tool = call["index"].as_u64().unwrap_or(0);
            let index = match self.tools.get(&tool) {
                Some(index) => *index,
                None => {
                    let block = json!({
                        "type": "tool_use", "id": call["id"], "name": call["function"]["name"], "input": {},
                    });
                    let index = self.open(Open::Tool(tool), block, &mut out);
                    self.tools.insert(tool, index);
                    index
                }
            };
            if let Some(arguments) = call["function"]["arguments"]
                .as_str()
                .filter(|a| !a.is_empty())
            {
                out.push(Self::delta(
                    index,
                    json!({ "type": "input_json_delta", "partial_json": arguments }),
                ));
            }
        }
        if let Some(finish) = choice["finish_reason"].as_str() {
            self.finish = Some(finish.to_string());
        }
        out
    }

    /// The events that end the message, with the usage Sluice metered.
    pub fn finish(&mut self, usage: Usage) -> Vec<SseEvent> {
        let mut out = Vec::new();
        self.start(&mut out);
        self.close(&mut out);
        let usage = self.usage.unwrap_or(usage);
        out.push(event("message_delta", json!({
            "type": "message_delta",
            "delta": { "stop_reason": stop_reason(self.finish.as_deref()), "stop_sequence": null },
            "usage": usage_json(usage),
        })));
        out.push(event("message_stop", json!({ "type": "message_stop" })));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_tool_calls_become_tool_use_blocks() {
        let mut events = EventsFromChunks::new("alias");
        let mut all = Vec::new();
        for delta in [
            json!({"role": "assistant", "content": ""}),
            json!({"content": "Let me check."}),
            json!({"tool_calls": [{"index": 0, "id": "c1", "type": "function", "function": {"name": "weather", "arguments": ""}}]}),
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}),
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}),
            json!({"tool_calls": [{"index": 1, "id": "c2", "type": "function", "function": {"name": "time", "arguments": "{}"}}]}),
        ] {
            all.extend(events.on_chunk(&ChatChunk::delta("id", 0, "m", delta, None)));
        }
        all.extend(events.on_chunk(&ChatChunk::delta(
            "id",
            0,
            "m",
            json!({}),
            Some("tool_calls"),
        )));
        all.extend(events.finish(Usage::new(10, 5)));
        let names: Vec<&str> = all.iter().map(|e| e.event.as_str()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "ping",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop",
            ]
        );
        assert_eq!(all[5].data["content_block"]["id"], "c1");
        assert_eq!(all[5].data["index"], 1);
        assert_eq!(all[7].data["delta"]["partial_json"], "\"Paris\"}");
        assert_eq!(all[9].data["index"], 2);
        assert_eq!(all[12].data["delta"]["stop_reason"], "tool_use");
        assert_eq!(all[12].data["usage"]["output_tokens"], 5);
    }
}
