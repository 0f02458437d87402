//! The most a call can use, in tokens, before it is made: what a budget
//! reserves, so no request shape spends past a limit.
//!
//! The prompt is bounded by what is actually sent upstream (the stored
//! context of a `previous_response_id`, a conversation's history, thinking
//! put back for a tool loop: everything the origin adds), at one token per
//! byte of text (a tokenizer never makes more tokens than bytes), plus
//! `image_tokens` per image (its base64 bytes do not tell its tokens; the
//! providers bound an image's tokens by resizing it) and a fixed allowance
//! when tools are offered (Anthropic renders them with a tool-use system
//! prompt of some hundreds of tokens). Documents and audio count their bytes.
//! The output is the cap times the answers asked for (`n`), or, where an
//! Anthropic deployment raises the cap to fit a thinking budget, that.

use crate::openai::ChatRequest;
use serde_json::{Map, Value};

/// Prompt tokens allowed for the tool-use instructions a provider adds when
/// tools are offered (Anthropic documents 313-346 for current models).
pub const TOOL_PROMPT_TOKENS: u64 = 1000;

/// Part types that are images, whichever API named them.
const IMAGE_PARTS: &[&str] = &["image_url", "input_image", "image"];

/// Upper bound of a JSON value's prompt tokens (see the module's doc).
pub fn value_tokens(value: &Value, image_tokens: u64) -> u64 {
    match value {
        Value::String(text) => text.len() as u64,
        Value::Array(items) => items
            .iter()
            .map(|item| value_tokens(item, image_tokens).saturating_add(1))
            .fold(2, u64::saturating_add),
        Value::Object(fields) => object_tokens(fields, image_tokens),
        _ => 8,
    }
}

fn object_tokens(fields: &Map<String, Value>, image_tokens: u64) -> u64 {
    let image = fields
        .get("type")
        .and_then(Value::as_str)
        .is_some_and(|kind| IMAGE_PARTS.contains(&kind));
    if image {
        return image_tokens;
    }
    fields
        .iter()
        .map(|(name, field)| {
            (name.len() as u64 + 4).saturating_add(value_tokens(field, image_tokens))
        })
        .fold(2, u64::saturating_add)
}

/// Whether the request offers tools (OpenAI's and Anthropic's field alike).
fn offers_tools(fields: &Map<String, Value>) -> bool {
    ["tools", "functions"].iter().any(|f| {
        fields
            .get(*f)
            .and_then(Value::as_array)
            .is_some_and(|t| !t.is_empty())
    })
}

/// The prompt bound of a chat request as it goes upstream.
pub fn chat_prompt_tokens(request: &ChatRequest, image_tokens: u64) -> u64 {
    let messages = request
        .messages
        .iter()
        .map(|m| object_tokens(&m.extra, image_tokens).saturating_add(16))
        .fold(0, u64::saturating_add);
    let tools = if offers_tools(&request.extra) {
        TOOL_PROMPT_TOKENS
    } else {
        0
    };
    messages
        .saturating_add(object_tokens(&request.extra, image_tokens))
        .saturating_add(tools)
}

/// The prompt bound of a Messages body as the client sent it.
pub fn messages_prompt_tokens(body: &Map<String, Value>, image_tokens: u64) -> u64 {
    let tools = if offers_tools(body) {
        TOOL_PROMPT_TOKENS
    } else {
        0
    };
    object_tokens(body, image_tokens).saturating_add(tools)
}

/// The output bound of a chat request capped at `cap` (its own cap, or the
/// one Sluice sets): `cap` per answer asked for, or what an Anthropic
/// deployment lets a thinking answer reach (`anthropic_max_tokens`), when
/// the model has one.
pub fn chat_output_tokens(request: &ChatRequest, cap: u32, anthropic: bool) -> u64 {
    let choices = request
        .field("n")
        .and_then(Value::as_u64)
        .unwrap_or(1)
        .max(1);
    let plain = u64::from(cap).saturating_mul(choices);
    if anthropic {
        plain.max(u64::from(
            crate::provider::anthropic::max_tokens_with_thinking(request, cap),
        ))
    } else {
        plain
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chat(value: Value) -> ChatRequest {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn text_counts_its_bytes_and_images_their_allowance() {
        let image = format!("data:image/png;base64,{}", "A".repeat(200_000));
        let request = chat(
            json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "x".repeat(1000)},
            {"type": "image_url", "image_url": {"url": image}}]}]}),
        );
        let tokens = chat_prompt_tokens(&request, 2500);
        assert!((3500..4000).contains(&tokens), "{tokens}");
        // A document counts its bytes: its pages are not bounded by an allowance.
        let document = json!({"messages": [{"role": "user", "content": [{"type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "P".repeat(50_000)}}]}]});
        let tokens = messages_prompt_tokens(document.as_object().unwrap(), 2500);
        assert!(tokens > 50_000, "{tokens}");
        // Tools get the provider's tool prompt on top of their definitions.
        let with_tools = chat(
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "f"}}]}),
        );
        let without = chat(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}));
        assert!(
            chat_prompt_tokens(&with_tools, 0)
                > chat_prompt_tokens(&without, 0) + TOOL_PROMPT_TOKENS
        );
    }

    #[test]
    fn the_output_is_the_cap_per_answer_or_what_thinking_raises_it_to() {
        let n4 = chat(json!({"model": "m", "messages": [], "n": 4}));
        assert_eq!(chat_output_tokens(&n4, 32, false), 128);
        let thinking = chat(json!({"model": "m", "messages": [], "reasoning_effort": "low"}));
        assert_eq!(chat_output_tokens(&thinking, 500, false), 500);
        assert_eq!(chat_output_tokens(&thinking, 500, true), 500 + 1024);
        assert_eq!(chat_output_tokens(&thinking, 2000, true), 2000);
    }
}
