//! OpenAI's chat wire format, kept whole. A request or an answer is the JSON
//! object the client or the upstream sent; Sluice types only the fields it
//! reads (`model`, `messages[].role`) and reads the others through accessors,
//! so everything it does not understand goes on as it came, key order
//! included (serde_json's `preserve_order`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    /// Every other field, as the client sent it (`stream`, `tools`, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatRequest {
    /// A request Sluice builds itself (a conversation turn, a Responses call).
    pub fn new(model: String, messages: Vec<ChatMessage>) -> ChatRequest {
        ChatRequest {
            model,
            messages,
            extra: Map::new(),
        }
    }

    /// Sets a top-level field, replacing what was there.
    pub fn set(&mut self, field: &str, value: Value) {
        self.extra.insert(field.to_string(), value);
    }

    pub fn field(&self, name: &str) -> Option<&Value> {
        self.extra.get(name).filter(|v| !v.is_null())
    }

    pub fn is_stream(&self) -> bool {
        self.field("stream")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    pub fn include_usage(&self) -> bool {
        self.field("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    /// The completion budget the client asked for, if any.
    pub fn max_output_tokens(&self) -> Option<u32> {
        self.field("max_completion_tokens")
            .or_else(|| self.field("max_tokens"))
            .and_then(Value::as_u64)
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
    }

    pub fn temperature(&self) -> Option<f64> {
        self.field("temperature").and_then(Value::as_f64)
    }

    /// Offers tools (or the older `functions`): the answer may be a call.
    pub fn offers_tools(&self) -> bool {
        ["tools", "functions"].iter().any(|f| {
            self.field(f)
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty())
        })
    }

    /// Estimated prompt size, for key budgets before the provider reports usage.
    pub fn estimated_prompt_tokens(&self) -> u32 {
        let messages: u32 = self
            .messages
            .iter()
            .map(|m| estimate_tokens(&m.text()) + m.tool_call_tokens() + 4)
            .sum();
        let tools = self
            .field("tools")
            .map_or(0, |t| estimate_tokens(&t.to_string()));
        messages + tools
    }
}

/// One message: its role typed (an unknown role is refused with its path
/// named), the rest as sent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
    /// The pre-tools form of a tool result.
    Function,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::Developer => "developer",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
            Role::Function => "function",
        }
    }
}

impl ChatMessage {
    /// A plain text message.
    pub fn text_message(role: Role, text: &str) -> ChatMessage {
        let mut extra = Map::new();
        extra.insert("content".into(), Value::String(text.to_string()));
        ChatMessage { role, extra }
    }

    pub fn content(&self) -> Option<&Value> {
        self.extra.get("content").filter(|v| !v.is_null())
    }

    /// The text of the message: the string, or its text parts joined by spaces.
    pub fn text(&self) -> String {
        content_text(self.content())
    }

    /// `tool_calls` of an assistant message (empty when there are none).
    pub fn tool_calls(&self) -> &[Value] {
        self.extra
            .get("tool_calls")
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice)
    }

    fn tool_call_tokens(&self) -> u32 {
        self.tool_calls()
            .iter()
            .map(|c| estimate_tokens(&c.to_string()))
            .sum()
    }
}

/// The text of a `content` value: a string, or the `text` of its parts.
pub fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// A fresh `chatcmpl-...` id, for answers Sluice makes itself.
pub fn completion_id() -> String {
    format!("chatcmpl-{}", uuid::Uuid::new_v4().simple())
}

/// A non-streamed chat completion as the upstream sent it (or as Sluice
/// built it for a translated or simulated answer).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct ChatResponse(pub Map<String, Value>);

impl ChatResponse {
    /// A one-choice completion.
    pub fn new(
        id: String,
        model: &str,
        message: Value,
        finish_reason: &str,
        usage: Option<Usage>,
    ) -> ChatResponse {
        let mut message = message;
        // Required (nullable) in OpenAI's answer schema.
        if let Some(fields) = message.as_object_mut() {
            fields.entry("refusal").or_insert(Value::Null);
        }
        let mut body = json!({
            "id": id, "object": "chat.completion", "created": crate::clock::unix_now(),
            "model": model,
            "choices": [{
                "index": 0, "message": message, "logprobs": null, "finish_reason": finish_reason,
            }],
        });
        if let Some(usage) = usage {
            body["usage"] = json!(usage);
        }
        match body {
            Value::Object(map) => ChatResponse(map),
            _ => unreachable!("built as an object"),
        }
    }

    pub fn usage(&self) -> Option<Usage> {
        self.0.get("usage").and_then(Usage::from_value)
    }

    /// The first choice's message.
    pub fn message(&self) -> Option<&Value> {
        self.0.get("choices")?.get(0)?.get("message")
    }

    /// The first choice's text (empty for a tool call).
    pub fn text(&self) -> String {
        content_text(self.message().and_then(|m| m.get("content")))
    }

    pub fn finish_reason(&self) -> Option<&str> {
        self.0
            .get("choices")?
            .get(0)?
            .get("finish_reason")?
            .as_str()
    }

    /// Generated tokens, estimated from every choice's text and tool calls.
    pub fn estimated_completion_tokens(&self) -> u32 {
        let choices = self.0.get("choices").and_then(Value::as_array);
        choices.map_or(0, |choices| {
            choices
                .iter()
                .filter_map(|c| c.get("message"))
                .map(|m| {
                    estimate_tokens(&content_text(m.get("content")))
                        + m.get("tool_calls")
                            .map_or(0, |t| estimate_tokens(&t.to_string()))
                })
                .sum()
        })
    }

    pub fn set(&mut self, field: &str, value: Value) {
        self.0.insert(field.to_string(), value);
    }
}

/// One streamed chunk (`chat.completion.chunk`), as the upstream sent it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct ChatChunk(pub Map<String, Value>);

impl ChatChunk {
    /// A chunk of one choice's `delta`, in the stream `id` of `model`.
    pub fn delta(id: &str, created: u64, model: &str, delta: Value, finish: Option<&str>) -> Self {
        ChatChunk::from_value(json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }],
        }))
    }

    /// The usage-only chunk that ends a stream (`choices` empty).
    pub fn usage_only(id: &str, created: u64, model: &str, usage: Usage) -> Self {
        ChatChunk::from_value(json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [], "usage": usage,
        }))
    }

    pub fn from_value(value: Value) -> ChatChunk {
        match value {
            Value::Object(map) => ChatChunk(map),
            _ => ChatChunk::default(),
        }
    }

    pub fn usage(&self) -> Option<Usage> {
        self.0.get("usage").and_then(Usage::from_value)
    }

    pub fn set(&mut self, field: &str, value: Value) {
        self.0.insert(field.to_string(), value);
    }

    pub fn choices(&self) -> &[Value] {
        self.0
            .get("choices")
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice)
    }

    /// The text this chunk adds to the first choice.
    pub fn text(&self) -> Option<&str> {
        self.choices().first()?.pointer("/delta/content")?.as_str()
    }

    /// Generated tokens in this chunk, estimated (text, reasoning and tool-call arguments).
    pub fn estimated_tokens(&self) -> u32 {
        self.choices()
            .iter()
            .filter_map(|c| c.get("delta"))
            .map(|d| {
                let text = |p: &str| {
                    d.pointer(p)
                        .and_then(Value::as_str)
                        .map_or(0, estimate_tokens)
                };
                let calls = d
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .map_or(0, |calls| {
                        calls
                            .iter()
                            .map(|c| {
                                c.pointer("/function/arguments")
                                    .and_then(Value::as_str)
                                    .map_or(0, estimate_tokens)
                            })
                            .sum()
                    });
                text("/content") + text("/reasoning_content") + calls
            })
            .sum()
    }
}

/// Token counts of one call. On the wire it is OpenAI's `usage` object
/// (with `prompt_tokens_details.cached_tokens` and
/// `completion_tokens_details.reasoning_tokens`); cache writes, which only
/// Anthropic reports, travel as Anthropic names them,
/// `cache_creation_input_tokens`. `prompt_tokens` includes the cached and
/// cache-written tokens, as OpenAI counts them.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(from = "WireUsage", into = "WireUsage")]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
    /// Prompt tokens read from the provider's prompt cache.
    pub cached_tokens: u32,
    /// Prompt tokens written to the provider's prompt cache.
    pub cache_write_tokens: u32,
    /// Completion tokens spent on reasoning (included in `completion_tokens`).
    pub reasoning_tokens: u32,
}

impl Usage {
    pub fn new(prompt_tokens: u32, completion_tokens: u32) -> Usage {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            ..Usage::default()
        }
    }

    /// Reads a `usage` object (`null` or an unreadable one is `None`).
    pub fn from_value(value: &Value) -> Option<Usage> {
        if !value.is_object() {
            return None;
        }
        WireUsage::deserialize(value).ok().map(Usage::from)
    }
}

#[derive(Serialize, Deserialize, Default)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
    #[serde(default)]
    total_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prompt_tokens_details: Option<PromptDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    completion_tokens_details: Option<CompletionDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cache_creation_input_tokens: Option<u32>,
}

#[derive(Serialize, Deserialize, Default)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<u32>,
}

#[derive(Serialize, Deserialize, Default)]
struct CompletionDetails {
    #[serde(default)]
    reasoning_tokens: Option<u32>,
}

impl From<WireUsage> for Usage {
    fn from(wire: WireUsage) -> Usage {
        Usage {
            prompt_tokens: wire.prompt_tokens,
            completion_tokens: wire.completion_tokens,
            total_tokens: wire
                .total_tokens
                .unwrap_or(wire.prompt_tokens + wire.completion_tokens),
            cached_tokens: wire
                .prompt_tokens_details
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0),
            cache_write_tokens: wire.cache_creation_input_tokens.unwrap_or(0),
            reasoning_tokens: wire
                .completion_tokens_details
                .and_then(|d| d.reasoning_tokens)
                .unwrap_or(0),
        }
    }
}

impl From<Usage> for WireUsage {
    fn from(usage: Usage) -> WireUsage {
        WireUsage {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            total_tokens: Some(usage.total_tokens),
            prompt_tokens_details: (usage.cached_tokens > 0).then_some(PromptDetails {
                cached_tokens: Some(usage.cached_tokens),
            }),
            completion_tokens_details: (usage.reasoning_tokens > 0).then_some(CompletionDetails {
                reasoning_tokens: Some(usage.reasoning_tokens),
            }),
            cache_creation_input_tokens: (usage.cache_write_tokens > 0)
                .then_some(usage.cache_write_tokens),
        }
    }
}

/// `POST /v1/embeddings`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EmbeddingsRequest {
    pub model: String,
    pub input: EmbeddingInput,
    /// `float` (default) or `base64` (little-endian f32s; the OpenAI SDKs ask for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding_format: Option<EncodingFormat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingInput {
    One(String),
    Many(Vec<String>),
}

impl EmbeddingInput {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            EmbeddingInput::One(s) => vec![s],
            EmbeddingInput::Many(v) => v,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncodingFormat {
    Float,
    Base64,
}

/// Rough token count when a provider gives none: about four characters a token.
pub fn estimate_tokens(text: &str) -> u32 {
    (text.chars().count() as u32).div_ceil(4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_details_round_trip() {
        let wire = json!({
            "prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120,
            "prompt_tokens_details": {"cached_tokens": 60},
            "completion_tokens_details": {"reasoning_tokens": 12},
        });
        let usage = Usage::from_value(&wire).unwrap();
        assert_eq!(usage.cached_tokens, 60);
        assert_eq!(usage.reasoning_tokens, 12);
        assert_eq!(serde_json::to_value(usage).unwrap(), wire);
        assert_eq!(Usage::from_value(&Value::Null), None);
    }

    #[test]
    fn requests_keep_what_sluice_does_not_read() {
        let sent = json!({
            "model": "m", "temperature": 0.7, "max_tokens": null, "x_vendor": {"a": [1]},
            "messages": [{"role": "assistant", "content": null, "tool_calls": [{"id": "c1"}]}],
        });
        let request: ChatRequest = serde_json::from_value(sent.clone()).unwrap();
        assert_eq!(request.max_output_tokens(), None);
        assert_eq!(request.temperature(), Some(0.7));
        assert_eq!(request.messages[0].tool_calls().len(), 1);
        assert_eq!(serde_json::to_value(&request).unwrap(), sent);
    }
}
