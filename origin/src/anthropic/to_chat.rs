//! A Messages API request as an OpenAI chat request, for providers that
//! speak OpenAI's format (and the simulated one).
//!
//! What has no OpenAI counterpart is dropped or reshaped, and every such
//! choice is noted (`field:what-happened`), so the answer's
//! `x-sluice-adjusted` header says what the upstream never saw:
//! - `thinking` becomes `reasoning_effort` (by its budget), and the output cap
//!   goes as `max_completion_tokens`, which OpenAI's reasoning models require
//!   (they refuse `max_tokens`); thinking blocks in the history are Anthropic's
//!   own and dropped (`messages.thinking:dropped`);
//! - a tool result's images and documents cannot ride in an OpenAI `tool`
//!   message (its parts are text only), so they follow the tool messages in
//!   one user message, each introduced by the tool call it came from
//!   (`tool_result.image:user_message`); its `is_error` becomes an `[error]`
//!   prefix on its text; its `cache_control` stays on its text part;
//! - `output_config.format` / `output_format` (structured outputs) becomes
//!   `response_format`, `output_config.effort` a `reasoning_effort`;
//! - any other top-level field (`top_k`, `context_management`,
//!   `service_tier`, ...) is dropped and noted;
//! - Anthropic's server tools refuse translation: such a request needs an
//!   Anthropic deployment.

use crate::openai::{ChatMessage, ChatRequest, Role};
use serde_json::{Map, Value, json};

/// `thinking.budget_tokens` as OpenAI's `reasoning_effort`.
fn effort(budget: u64) -> &'static str {
    match budget {
        0..2048 => "low",
        2048..8192 => "medium",
        _ => "high",
    }
}

/// Top-level fields the translation reads; every other one is dropped and noted.
const TRANSLATED: &[&str] = &[
    "model",
    "messages",
    "system",
    "max_tokens",
    "temperature",
    "top_p",
    "stop_sequences",
    "metadata",
    "stream",
    "thinking",
    "tools",
    "tool_choice",
    "output_config",
    "output_format",
];

/// A Messages request in OpenAI's terms, and what had to change on the way.
#[derive(Debug, Clone)]
pub struct Translated {
    pub chat: ChatRequest,
    /// `field:what-happened` notes (see the module's documentation).
    pub adjusted: Vec<String>,
}

/// Collects the notes of one translation, each once.
#[derive(Default)]
struct Notes(Vec<String>);

impl Notes {
    fn add(&mut self, note: impl Into<String>) {
        let note = note.into();
        if !self.0.contains(&note) {
            self.0.push(note);
        }
    }
}

pub fn to_chat(body: &Map<String, Value>) -> Result<Translated, String> {
    let mut notes = Notes::default();
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let mut messages = Vec::new();
    match body.get("system") {
        Some(Value::String(text)) => messages.push(ChatMessage::text_message(Role::System, text)),
        Some(Value::Array(blocks)) => {
            let parts: Vec<Value> = blocks.iter().map(text_part).collect();
            messages.push(message(Role::System, json!(parts)));
        }
        _ => {}
    }
    let turns = body.get("messages").and_then(Value::as_array);
    for (i, turn) in turns.into_iter().flatten().enumerate() {
        match turn["role"].as_str() {
            Some("user") => user_turn(turn, i, &mut messages, &mut notes)?,
            Some("assistant") => messages.push(assistant_turn(turn, i, &mut notes)?),
            // Instructions in the middle of the conversation (Claude Code sends them).
            Some("system") => messages.push(system_turn(turn, i)?),
            other => {
                return Err(format!(
                    "`messages[{i}].role` must be user, assistant or system, got {other:?}."
                ));
            }
        }
    }
    let mut chat = ChatRequest::new(model, messages);
    let thinking_budget = body
        .get("thinking")
        .filter(|t| t["type"] == "enabled")
        .and_then(|t| t["budget_tokens"].as_u64());
    let adaptive = body
        .get("thinking")
        .is_some_and(|t| t["type"] == "adaptive");
    let effort_setting = body
        .get("output_config")
        .and_then(|c| c.get("effort"))
        .and_then(Value::as_str)
        .map(|e| if e == "max" { "high" } else { e });
    let reasoning = match (thinking_budget, effort_setting) {
        (_, Some(effort)) if thinking_budget.is_some() || adaptive => Some(effort.to_string()),
        (Some(budget), None) => Some(effort(budget).to_string()),
        (None, None) if adaptive => Some("medium".to_string()),
        _ => None,
    };
    if let Some(n) = body.get("max_tokens") {
        // A reasoning model's cap includes its reasoning, like Anthropic's
        // `max_tokens` includes the thinking budget; those models refuse `max_tokens`.
        let field = if reasoning.is_some() {
            "max_completion_tokens"
        } else {
            "max_tokens"
        };
        chat.set(field, n.clone());
    }
    if let Some(effort) = reasoning {
        chat.set("reasoning_effort", json!(effort));
    }
    if let Some(t) = body.get("temperature").and_then(Value::as_f64) {
        // Anthropic's range is 0-1, OpenAI's 0-2.
        chat.set("temperature", json!(t * 2.0));
    }
    if let Some(top_p) = body.get("top_p") {
        chat.set("top_p", top_p.clone());
    }
    if let Some(stop) = body.get("stop_sequences") {
        chat.set("stop", stop.clone());
    }
    if let Some(metadata) = body.get("metadata").and_then(Value::as_object) {
        for (name, value) in metadata {
            if name == "user_id" {
                chat.set("user", value.clone());
            } else {
                notes.add(format!("metadata.{name}:dropped"));
            }
        }
    }
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        chat.set("stream", json!(true));
        chat.set("stream_options", json!({ "include_usage": true }));
    }
    if let Some(Value::Array(tools)) = body.get("tools") {
        let tools = tools
            .iter()
            .enumerate()
            .map(|(i, t)| tool(t, i))
            .collect::<Result<Vec<_>, _>>()?;
        chat.set("tools", Value::Array(tools));
    }
    if let Some(choice) = body.get("tool_choice") {
        let (choice, parallel) = tool_choice(choice)?;
        chat.set("tool_choice", choice);
        if !parallel {
            chat.set("parallel_tool_calls", json!(false));
        }
    }
    let format = body
        .get("output_config")
        .and_then(|c| c.get("format"))
        .or_else(|| body.get("output_format"))
        .filter(|f| !f.is_null());
    if let Some(format) = format {
        match format["type"].as_str() {
            Some("json_schema") => chat.set(
                "response_format",
                json!({ "type": "json_schema", "json_schema": {
                    "name": "response", "schema": format["schema"], "strict": true,
                } }),
            ),
            other => {
                return Err(format!(
                    "`output_config.format.type` {other:?} is not json_schema."
                ));
            }
        }
    }
    if let Some(config) = body.get("output_config").and_then(Value::as_object) {
        for name in config
            .keys()
            .filter(|k| !matches!(k.as_str(), "format" | "effort"))
        {
            notes.add(format!("output_config.{name}:dropped"));
        }
    }
    for name in body.keys().filter(|k| !TRANSLATED.contains(&k.as_str())) {
        notes.add(format!("{name}:dropped"));
    }
    Ok(Translated {
        chat,
        adjusted: notes.0,
    })
}

/// A `system` message among the turns as an OpenAI system message.
fn system_turn(turn: &Value, i: usize) -> Result<ChatMessage, String> {
    match &turn["content"] {
        Value::String(text) => Ok(ChatMessage::text_message(Role::System, text)),
        Value::Array(blocks) => Ok(message(
            Role::System,
            Value::Array(blocks.iter().map(text_part).collect()),
        )),
        other => Err(format!(
            "`messages[{i}].content` must be a string or blocks, got {other}."
        )),
    }
}

fn message(role: Role, content: Value) -> ChatMessage {
    let mut extra = Map::new();
    extra.insert("content".into(), content);
    ChatMessage { role, extra }
}

/// A text block as a text part (its `cache_control` kept).
fn text_part(block: &Value) -> Value {
    let mut part = json!({ "type": "text", "text": block["text"] });
    if let Some(cache) = block.get("cache_control") {
        part["cache_control"] = cache.clone();
    }
    part
}

/// A user turn: its tool results first, as `tool` messages (OpenAI wants
/// them right after the assistant's calls), then one user message with what
/// the tool results returned that a `tool` message cannot hold (images,
/// documents) and the turn's own blocks.
fn user_turn(
    turn: &Value,
    i: usize,
    out: &mut Vec<ChatMessage>,
    notes: &mut Notes,
) -> Result<(), String> {
    let blocks = match &turn["content"] {
        Value::String(text) => {
            out.push(ChatMessage::text_message(Role::User, text));
            return Ok(());
        }
        Value::Array(blocks) => blocks,
        other => {
            return Err(format!(
                "`messages[{i}].content` must be a string or blocks, got {other}."
            ));
        }
    };
    let mut parts = Vec::new();
    let mut from_tools = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        match block["type"].as_str() {
            Some("tool_result") => {
                out.push(tool_message(block, i, j, &mut from_tools, notes)?);
            }
            Some("text") => parts.push(text_part(block)),
            Some("image") | Some("document") => parts.push(media_part(block, i, j)?),
            other => {
                return Err(format!(
                    "`messages[{i}].content[{j}]`: block type {other:?} has no OpenAI counterpart; use an Anthropic model."
                ));
            }
        }
    }
    from_tools.extend(parts);
    if !from_tools.is_empty() {
        out.push(message(Role::User, Value::Array(from_tools)));
    }
    Ok(())
}

/// A `tool_result` block as a `tool` message of text parts; its images and
/// documents go to `media`, after a text part naming the call they answer.
fn tool_message(
    block: &Value,
    i: usize,
    j: usize,
    media: &mut Vec<Value>,
    notes: &mut Notes,
) -> Result<ChatMessage, String> {
    let id = &block["tool_use_id"];
    let mut texts = Vec::new();
    let mut moved = 0;
    match &block["content"] {
        Value::String(text) => texts.push(text.clone()),
        Value::Array(inner) => {
            for (k, part) in inner.iter().enumerate() {
                match part["type"].as_str() {
                    Some("text") => texts.push(part["text"].as_str().unwrap_or("").to_string()),
                    Some("image") | Some("document") => {
                        if moved == 0 {
                            media.push(json!({ "type": "text", "text": format!(
                                "[the result of tool call {} continues here]",
                                id.as_str().unwrap_or("")
                            ) }));
                        }
                        media.push(media_part(part, i, j).map_err(|e| {
                            e.replace(
                                &format!("`messages[{i}].content[{j}]"),
                                &format!("`messages[{i}].content[{j}].content[{k}]"),
                            )
                        })?);
                        moved += 1;
                        notes.add(format!(
                            "tool_result.{}:user_message",
                            part["type"].as_str().unwrap_or("image")
                        ));
                    }
                    other => {
                        notes.add(format!(
                            "tool_result.{}:dropped",
                            other.unwrap_or("untyped")
                        ));
                    }
                }
            }
        }
        _ => {}
    }
    let mut text = texts.join("\n");
    if moved > 0 && text.is_empty() {
        text = format!("[{moved} attachment(s) follow in the next user message]");
    }
    if block["is_error"] == true {
        text = format!("[error] {text}");
        notes.add("tool_result.is_error:text_prefix");
    }
    let content = match block.get("cache_control") {
        Some(cache) => json!([{ "type": "text", "text": text, "cache_control": cache }]),
        None => json!(text),
    };
    let mut result = message(Role::Tool, content);
    result.extra.insert("tool_call_id".into(), id.clone());
    Ok(result)
}

/// An image or document block as an `image_url` or `file` part.
fn media_part(block: &Value, i: usize, j: usize) -> Result<Value, String> {
    let source = &block["source"];
    let url = match source["type"].as_str() {
        Some("base64") => format!(
            "data:{};base64,{}",
            source["media_type"]
                .as_str()
                .unwrap_or("application/octet-stream"),
            source["data"].as_str().unwrap_or("")
        ),
        Some("url") => source["url"].as_str().unwrap_or("").to_string(),
        other => {
            return Err(format!(
                "`messages[{i}].content[{j}].source.type` {other:?} has no OpenAI counterpart."
            ));
        }
    };
    let mut part = if block["type"] == "image" {
        json!({ "type": "image_url", "image_url": { "url": url } })
    } else {
        json!({ "type": "file", "file": { "file_data": url } })
    };
    if let Some(cache) = block.get("cache_control") {
        part["cache_control"] = cache.clone();
    }
    Ok(part)
}

/// An assistant turn: text as `content`, `tool_use` blocks as `tool_calls`;
/// thinking blocks are Anthropic's own and dropped.
fn assistant_turn(turn: &Value, i: usize, notes: &mut Notes) -> Result<ChatMessage, String> {
    let mut text = String::new();
    let mut calls = Vec::new();
    match &turn["content"] {
        Value::String(s) => text.push_str(s),
        Value::Array(blocks) => {
            for block in blocks {
                match block["type"].as_str() {
                    Some("text") => text.push_str(block["text"].as_str().unwrap_or("")),
                    Some("tool_use") => calls.push(json!({
                        "id": block["id"], "type": "function",
                        "function": { "name": block["name"], "arguments": block["input"].to_string() },
                    })),
                    Some("thinking" | "redacted_thinking") => {
                        notes.add("messages.thinking:dropped");
                    }
                    other => notes.add(format!(
                        "messages.{}:dropped",
                        other.unwrap_or("untyped")
                    )),
                }
            }
        }
        other => {
            return Err(format!(
                "`messages[{i}].content` must be a string or blocks, got {other}."
            ));
        }
    }
    let content = if text.is_empty() && !calls.is_empty() {
        Value::Null
    } else {
        json!(text)
    };
    let mut out = message(Role::Assistant, content);
    if !calls.is_empty() {
        out.extra.insert("tool_calls".into(), Value::Array(calls));
    }
    Ok(out)
}

fn tool(tool: &Value, i: usize) -> Result<Value, String> {
    match tool.get("type").and_then(Value::as_str) {
        None | Some("custom") => {}
        Some(kind) => {
            return Err(format!(
                "`tools[{i}]` is Anthropic's server tool `{kind}`; use an Anthropic model."
            ));
        }
    }
    let mut function = json!({
        "name": tool["name"],
        "parameters": tool.get("input_schema").cloned().unwrap_or_else(|| json!({ "type": "object" })),
    });
    if let Some(description) = tool.get("description") {
        function["description"] = description.clone();
    }
    if let Some(strict) = tool.get("strict") {
        function["strict"] = strict.clone();
    }
    Ok(json!({ "type": "function", "function": function }))
}

/// Anthropic's `tool_choice` as OpenAI's, and whether parallel calls are allowed.
fn tool_choice(choice: &Value) -> Result<(Value, bool), String> {
    let parallel = choice["disable_parallel_tool_use"] != true;
    let openai = match choice["type"].as_str() {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => json!({ "type": "function", "function": { "name": choice["name"] } }),
        other => {
            return Err(format!(
                "`tool_choice.type` {other:?} is not one of auto, any, tool, none."
            ));
        }
    };
    Ok((openai, parallel))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translate(body: Value) -> Translated {
        to_chat(body.as_object().unwrap()).unwrap()
    }

    #[test]
    fn translates_a_tool_loop_with_images() {
        let body = json!({
            "model": "m", "max_tokens": 100, "system": "be brief", "stop_sequences": ["X"],
            "tools": [{"name": "weather", "description": "d", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "look", "cache_control": {"type": "ephemeral"}},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "t", "signature": "s"},
                    {"type": "tool_use", "id": "tu_1", "name": "weather", "input": {"city": "Paris"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "tu_1", "content": "sunny"},
                    {"type": "text", "text": "thanks"}]}
            ]
        });
        let translated = translate(body);
        let wire = serde_json::to_value(&translated.chat).unwrap();
        assert_eq!(
            wire["messages"][0],
            json!({"role": "system", "content": "be brief"})
        );
        assert_eq!(
            wire["messages"][1]["content"][0]["cache_control"]["type"],
            "ephemeral"
        );
        assert_eq!(
            wire["messages"][1]["content"][1]["image_url"]["url"],
            "data:image/png;base64,AAAA"
        );
        assert_eq!(wire["messages"][2]["content"], Value::Null);
        assert_eq!(
            wire["messages"][2]["tool_calls"][0]["function"]["arguments"],
            r#"{"city":"Paris"}"#
        );
        assert_eq!(
            wire["messages"][3],
            json!({"role": "tool", "content": "sunny", "tool_call_id": "tu_1"})
        );
        assert_eq!(wire["messages"][4]["content"][0]["text"], "thanks");
        assert_eq!(wire["tool_choice"], "required");
        assert_eq!(wire["parallel_tool_calls"], false);
        assert_eq!(wire["tools"][0]["function"]["name"], "weather");
        assert_eq!(wire["stop"], json!(["X"]));
        assert_eq!(wire["max_tokens"], 100);
        assert_eq!(translated.adjusted, ["messages.thinking:dropped"]);
        let server_tool = json!({"model": "m", "max_tokens": 1, "messages": [],
            "tools": [{"type": "web_search_20250305", "name": "web_search"}]});
        assert!(to_chat(server_tool.as_object().unwrap()).is_err());
    }

    #[test]
    fn a_tool_results_image_follows_the_tool_messages_in_a_user_message() {
        let translated = translate(json!({
            "model": "m", "max_tokens": 100,
            "messages": [
                {"role": "user", "content": "read both"},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "tu_1", "name": "Read", "input": {"file_path": "a.png"}},
                    {"type": "tool_use", "id": "tu_2", "name": "Read", "input": {"file_path": "b.txt"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "tu_1", "content": [
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}}]},
                    {"type": "tool_result", "tool_use_id": "tu_2", "is_error": true,
                     "cache_control": {"type": "ephemeral"}, "content": [{"type": "text", "text": "no such file"}]}]}
            ]
        }));
        let wire = serde_json::to_value(&translated.chat).unwrap();
        let messages = wire["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 5, "{messages:?}");
        assert_eq!(messages[2]["role"], "tool");
        assert_eq!(messages[2]["tool_call_id"], "tu_1");
        assert!(
            messages[2]["content"]
                .as_str()
                .unwrap()
                .contains("attachment")
        );
        assert_eq!(
            messages[3],
            json!({"role": "tool", "tool_call_id": "tu_2", "content": [
                {"type": "text", "text": "[error] no such file", "cache_control": {"type": "ephemeral"}}]})
        );
        assert_eq!(messages[4]["role"], "user");
        assert!(
            messages[4]["content"][0]["text"]
                .as_str()
                .unwrap()
                .contains("tu_1")
        );
        assert_eq!(
            messages[4]["content"][1],
            json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}})
        );
        assert_eq!(
            translated.adjusted,
            [
                "tool_result.image:user_message",
                "tool_result.is_error:text_prefix"
            ]
        );
    }

    #[test]
    fn thinking_becomes_reasoning_with_a_completion_cap_and_the_rest_is_noted() {
        let translated = translate(json!({
            "model": "m", "max_tokens": 32000, "top_k": 5,
            "thinking": {"type": "enabled", "budget_tokens": 31999},
            "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]},
            "metadata": {"user_id": "u1", "session": "s"},
            "output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}},
            "messages": [{"role": "user", "content": "hi"}]
        }));
        let wire = serde_json::to_value(&translated.chat).unwrap();
        assert_eq!(wire["reasoning_effort"], "high");
        assert_eq!(wire["max_completion_tokens"], 32000);
        assert!(wire.get("max_tokens").is_none());
        assert_eq!(wire["user"], "u1");
        assert_eq!(
            wire["response_format"]["json_schema"]["schema"]["type"],
            "object"
        );
        assert_eq!(
            translated.adjusted,
            [
                "metadata.session:dropped",
                "top_k:dropped",
                "context_management:dropped"
            ]
        );
    }
}
