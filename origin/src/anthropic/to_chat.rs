//! A Messages API request as an OpenAI chat request, for providers that
//! speak OpenAI's format (and the simulated one). What has no OpenAI
//! counterpart: `top_k` and thinking signatures are dropped, a tool
//! result's `is_error` becomes an `[error]` prefix on its text, and
//! Anthropic's server tools refuse translation (such a request needs an
//! Anthropic deployment).

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

pub fn to_chat(body: &Map<String, Value>) -> Result<ChatRequest, String> {
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
            Some("user") => user_turn(turn, i, &mut messages)?,
            Some("assistant") => messages.push(assistant_turn(turn, i)?),
            other => {
                return Err(format!(
                    "`messages[{i}].role` must be user or assistant, got {other:?}."
                ));
            }
        }
    }
    let mut chat = ChatRequest::new(model, messages);
    if let Some(n) = body.get("max_tokens") {
        chat.set("max_tokens", n.clone());
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
    if let Some(user) = body.get("metadata").and_then(|m| m.get("user_id")) {
        chat.set("user", user.clone());
    }
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        chat.set("stream", json!(true));
        chat.set("stream_options", json!({ "include_usage": true }));
    }
    if let Some(budget) = body
        .get("thinking")
        .filter(|t| t["type"] == "enabled")
        .and_then(|t| t["budget_tokens"].as_u64())
    {
        chat.set("reasoning_effort", json!(effort(budget)));
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
    Ok(chat)
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
/// them right after the assistant's calls), then the rest as one user message.
fn user_turn(turn: &Value, i: usize, out: &mut Vec<ChatMessage>) -> Result<(), String> {
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
    for (j, block) in blocks.iter().enumerate() {
        match block["type"].as_str() {
            Some("tool_result") => {
                let mut text = match &block["content"] {
                    Value::String(text) => text.clone(),
                    Value::Array(inner) => inner
                        .iter()
                        .filter_map(|b| b["text"].as_str())
                        .collect::<Vec<_>>()
                        .join("\n"),
                    _ => String::new(),
                };
                if block["is_error"] == true {
                    text = format!("[error] {text}");
                }
                let mut result = ChatMessage::text_message(Role::Tool, &text);
                result
                    .extra
                    .insert("tool_call_id".into(), block["tool_use_id"].clone());
                out.push(result);
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
    if !parts.is_empty() {
        out.push(message(Role::User, Value::Array(parts)));
    }
    Ok(())
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

/// An assistant turn: text as `content`, `tool_use` blocks as `tool_calls`
/// (thinking blocks are Anthropic's own and dropped).
fn assistant_turn(turn: &Value, i: usize) -> Result<ChatMessage, String> {
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
                    _ => {}
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
        let chat = to_chat(body.as_object().unwrap()).unwrap();
        let wire = serde_json::to_value(&chat).unwrap();
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
        let server_tool = json!({"model": "m", "max_tokens": 1, "messages": [],
            "tools": [{"type": "web_search_20250305", "name": "web_search"}]});
        assert!(to_chat(server_tool.as_object().unwrap()).is_err());
    }
}
