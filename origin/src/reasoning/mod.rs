//! Reasoning that must survive clients which do not send it back.
//!
//! An Anthropic model that thinks and then calls tools needs that thinking
//! (its blocks, with the signatures Anthropic gave them) on the next request
//! of the tool loop, or the request is refused. Sluice returns the blocks to
//! chat clients (`thinking_blocks` on the message), but the standard clients
//! (the OpenAI SDKs and Agents SDK, the Vercel AI SDK, LangChain) never send
//! that field back. So the gateway keeps them itself: the blocks of an answer
//! that called tools, by its caller and its first tool call id, for
//! `[reasoning] keep_secs`; a later request of that caller whose last
//! assistant message carries that tool call and no blocks gets them back
//! before it is routed ([`ReasoningStore::restore`]). When nothing was kept
//! (expired, too large, made by another provider), the Anthropic provider
//! turns thinking off for that one request, as Anthropic documents for a tool
//! loop that did not start with thinking.
//!
//! Responses clients get the same from the item store: a reasoning item
//! carries the blocks in `encrypted_content`, and a stored one is found by
//! its id (`crate::responses`).

mod store;

pub use store::{ReasoningStore, StoreError};

use crate::openai::{ChatChunk, ChatRequest};
use serde_json::Value;

/// The thinking of one answer and the tool call it led to, gathered from
/// a non-streamed message or from stream chunks as they pass.
#[derive(Debug, Default)]
pub struct ReasoningTrace {
    /// Thinking text since the last signed block.
    text: String,
    blocks: Vec<Value>,
    first_call: Option<String>,
}

impl ReasoningTrace {
    /// A non-streamed answer's message: its first tool call id and its
    /// thinking blocks, when it has both.
    pub fn of_message(message: &Value) -> Option<(String, Value)> {
        let call = message
            .pointer("/tool_calls/0/id")
            .and_then(Value::as_str)?;
        let blocks = message
            .get("thinking_blocks")
            .filter(|b| b.as_array().is_some_and(|b| !b.is_empty()))?;
        Some((call.to_string(), blocks.clone()))
    }

    /// Folds one streamed chunk in: reasoning text, a block's signature (the
    /// block is then complete), a redacted block, a tool call's id.
    pub fn on_chunk(&mut self, chunk: &ChatChunk) {
        let Some(delta) = chunk.choices().first().map(|c| &c["delta"]) else {
            return;
        };
        if let Some(text) = delta["reasoning_content"].as_str() {
            self.text.push_str(text);
        }
        for block in delta["thinking_blocks"].as_array().into_iter().flatten() {
            match block["type"].as_str() {
                Some("thinking") => {
                    let mut block = block.clone();
                    block["thinking"] = Value::String(std::mem::take(&mut self.text));
                    self.blocks.push(block);
                }
                _ => self.blocks.push(block.clone()),
            }
        }
        if self.first_call.is_none()
            && let Some(id) = delta.pointer("/tool_calls/0/id").and_then(Value::as_str)
        {
            self.first_call = Some(id.to_string());
        }
    }

    /// What to keep once the stream has ended: the first tool call id and
    /// the blocks, when there are both.
    pub fn finish(self) -> Option<(String, Value)> {
        let call = self.first_call?;
        (!self.blocks.is_empty()).then(|| (call, Value::Array(self.blocks)))
    }
}

/// Whether the request asks for reasoning that Anthropic serves as thinking.
fn wants_thinking(request: &ChatRequest) -> bool {
    let effort = request
        .field("reasoning_effort")
        .and_then(Value::as_str)
        .is_some_and(|e| matches!(e, "low" | "medium" | "high"));
    let thinking = request
        .field("thinking")
        .is_some_and(|t| matches!(t["type"].as_str(), Some("enabled" | "adaptive")));
    effort || thinking
}

/// The first tool call id of the request's last assistant message, when
/// that message calls tools and carries no thinking blocks of its own.
pub fn missing_thinking(request: &ChatRequest) -> Option<&str> {
    if !wants_thinking(request) {
        return None;
    }
    let last = request
        .messages
        .iter()
        .rev()
        .find(|m| m.role == crate::openai::Role::Assistant)?;
    if last
        .extra
        .get("thinking_blocks")
        .is_some_and(|b| !b.is_null())
    {
        return None;
    }
    last.tool_calls().first()?.get("id")?.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chunk(delta: Value) -> ChatChunk {
        ChatChunk::delta("id", 0, "m", delta, None)
    }

    #[test]
    fn a_stream_yields_its_signed_blocks_and_first_call() {
        let mut trace = ReasoningTrace::default();
        for delta in [
            json!({"role": "assistant", "content": ""}),
            json!({"reasoning_content": "I should "}),
            json!({"reasoning_content": "look it up."}),
            json!({"thinking_blocks": [{"type": "thinking", "thinking": "", "signature": "sig"}]}),
            json!({"thinking_blocks": [{"type": "redacted_thinking", "data": "opaque"}]}),
            json!({"tool_calls": [{"index": 0, "id": "toolu_1", "type": "function", "function": {"name": "f", "arguments": ""}}]}),
            json!({"tool_calls": [{"index": 1, "id": "toolu_2", "type": "function", "function": {"name": "f", "arguments": ""}}]}),
        ] {
            trace.on_chunk(&chunk(delta));
        }
        let (call, blocks) = trace.finish().unwrap();
        assert_eq!(call, "toolu_1");
        assert_eq!(
            blocks,
            json!([
                {"type": "thinking", "thinking": "I should look it up.", "signature": "sig"},
                {"type": "redacted_thinking", "data": "opaque"}
            ])
        );
        // Thinking without a tool call, or a call without thinking: nothing to keep.
        let mut trace = ReasoningTrace::default();
        trace.on_chunk(&chunk(json!({"tool_calls": [{"index": 0, "id": "c"}]})));
        assert!(trace.finish().is_none());
    }

    #[test]
    fn only_a_reasoning_tool_loop_without_its_blocks_is_missing_them() {
        let request = |extra: Value| -> ChatRequest {
            let mut body = json!({"model": "m", "messages": [
                {"role": "user", "content": "go"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "toolu_9", "type": "function",
                    "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "toolu_9", "content": "ok"}]});
            if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
                b.extend(e.clone());
            }
            serde_json::from_value(body).unwrap()
        };
        assert_eq!(
            missing_thinking(&request(json!({"reasoning_effort": "high"}))),
            Some("toolu_9")
        );
        assert_eq!(missing_thinking(&request(json!({}))), None);
        assert_eq!(
            missing_thinking(&request(json!({"reasoning_effort": "minimal"}))),
            None
        );
    }
}
