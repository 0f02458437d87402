//! A Messages API answer as an OpenAI chat completion. Text blocks become
//! `content`, `tool_use` blocks `tool_calls`, thinking becomes
//! `reasoning_content` (its text) plus `thinking_blocks` (the blocks with their
//! signatures, which a client sends back on the next turn), and the usage
//! counts Anthropic's cache reads and writes in OpenAI's terms.

use super::request::STRUCTURED_OUTPUT_TOOL;
use crate::openai::{ChatResponse, Usage};
use serde_json::{Value, json};

/// OpenAI's name for an Anthropic stop reason.
pub fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens") | Some("model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        _ => "stop", // end_turn, stop_sequence, pause_turn
    }
}

/// Anthropic's usage in OpenAI's terms: the prompt counts every input token,
/// cached or not (Anthropic's `input_tokens` excludes cache reads and writes).
pub fn usage(wire: &Value) -> Usage {
    let n = |field: &str| wire.get(field).and_then(Value::as_u64).unwrap_or(0) as u32;
    let cached = n("cache_read_input_tokens");
    let written = n("cache_creation_input_tokens");
    let mut usage = Usage::new(n("input_tokens") + cached + written, n("output_tokens"));
    usage.cached_tokens = cached;
    usage.cache_write_tokens = written;
    usage
}

/// The OpenAI completion for a Messages API answer.
pub fn translate_response(message: &Value) -> ChatResponse {
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut thinking_blocks = Vec::new();
    let mut tool_calls = Vec::new();
    let mut structured = false;
    let blocks = message["content"].as_array().map_or(&[][..], Vec::as_slice);
    for block in blocks {
        match block["type"].as_str() {
            Some("text") => text.push_str(block["text"].as_str().unwrap_or("")),
            Some("thinking") => {
                reasoning.push_str(block["thinking"].as_str().unwrap_or(""));
                thinking_blocks.push(block.clone());
            }
            Some("redacted_thinking") => thinking_blocks.push(block.clone()),
            Some("tool_use") if block["name"] == STRUCTURED_OUTPUT_TOOL => {
                structured = true;
                text.push_str(&block["input"].to_string());
            }
            Some("tool_use") => tool_calls.push(json!({
                "id": block["id"], "type": "function",
                "function": { "name": block["name"], "arguments": block["input"].to_string() },
            })),
            _ => {}
        }
    }
    let mut assistant = json!({
        "role": "assistant",
        "content": if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { json!(text) },
    });
    if !tool_calls.is_empty() {
        assistant["tool_calls"] = Value::Array(tool_calls);
    }
    if !thinking_blocks.is_empty() {
        assistant["reasoning_content"] = json!(reasoning);
        assistant["thinking_blocks"] = Value::Array(thinking_blocks);
    }
    let finish = match message["stop_reason"].as_str() {
        Some("tool_use") if structured => "stop",
        other => finish_reason(other),
    };
    ChatResponse::new(
        message["id"].as_str().unwrap_or("msg").to_string(),
        message["model"].as_str().unwrap_or(""),
        assistant,
        finish,
        message.get("usage").map(usage),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_use_thinking_and_cache_usage() {
        let completion = translate_response(&json!({
            "id": "msg_1", "model": "claude-x", "stop_reason": "tool_use",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "tu_1", "name": "weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "tu_2", "name": "weather", "input": {"city": "Rome"}}
            ],
            "usage": {"input_tokens": 10, "output_tokens": 7, "cache_read_input_tokens": 100,
                      "cache_creation_input_tokens": 20}
        }));
        let message = completion.message().unwrap();
        assert_eq!(completion.finish_reason(), Some("tool_calls"));
        assert_eq!(message["tool_calls"][1]["id"], "tu_2");
        assert_eq!(
            message["tool_calls"][0]["function"]["arguments"],
            r#"{"city":"Paris"}"#
        );
        assert_eq!(message["reasoning_content"], "hmm");
        assert_eq!(message["thinking_blocks"][0]["signature"], "sig");
        let usage = completion.usage().unwrap();
        assert_eq!(
            (
                usage.prompt_tokens,
                usage.cached_tokens,
                usage.cache_write_tokens
            ),
            (130, 100, 20)
        );
    }

    #[test]
    fn structured_output_is_text() {
        let completion = translate_response(&json!({
            "id": "msg_2", "model": "m", "stop_reason": "tool_use",
            "content": [{"type": "tool_use", "id": "t", "name": STRUCTURED_OUTPUT_TOOL, "input": {"a": 1}}],
        }));
        assert_eq!(completion.text(), r#"{"a":1}"#);
        assert_eq!(completion.finish_reason(), Some("stop"));
    }
}
