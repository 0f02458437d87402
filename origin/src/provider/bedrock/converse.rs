//! Bedrock's Converse API in terms of Anthropic's Messages API, both ways.
//!
//! Sluice already speaks Messages to Anthropic and translates OpenAI's chat
//! format to and from it (thinking, tool loops, `cache_control`, structured
//! output). Converse is the same conversation in other names, so a chat
//! request reaches Converse through that translation, and a native Messages
//! request directly: [`converse_request`] maps blocks one to one
//! (`cache_control` becomes a `cachePoint` after its block), and
//! [`anthropic_message`] and [`ConverseEvents`] map the answer and the
//! stream's events back. What Converse has no place for is noted on the call
//! or, for a model that takes it, sent in `additionalModelRequestFields`.

use super::super::{Call, ProviderError, SseEvent};
use serde_json::{Map, Value, json};
use std::collections::HashSet;

/// Messages fields this translation places; for an Anthropic model any other
/// goes in `additionalModelRequestFields`, where Bedrock hands it to Claude.
const PLACED: &[&str] = &[
    "model",
    "messages",
    "system",
    "max_tokens",
    "temperature",
    "top_p",
    "stop_sequences",
    "tools",
    "tool_choice",
    "metadata",
    "stream",
    "bedrock",
];

fn rejected(message: impl Into<String>) -> ProviderError {
    ProviderError::Rejected {
        status: 400,
        message: message.into(),
    }
}

/// Where Bedrock caches the prompt up to (Anthropic's `cache_control`).
fn cache_point() -> Value {
    json!({ "cachePoint": { "type": "default" } })
}

/// Converse allows `[a-zA-Z0-9_-]{1,64}` as a tool use id; ids another
/// provider made (or a client invented) are mapped onto it, the same way
/// for a call and its result.
fn tool_use_id(id: &str) -> String {
    let clean: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if clean.is_empty() {
        "tool".into()
    } else {
        clean
    }
}

/// The Converse request for a Messages body (the model goes in the URL).
/// `anthropic` says the model is Claude, which takes thinking, `top_k` and
/// Anthropic's other fields through `additionalModelRequestFields`.
pub fn converse_request(
    call: Call<'_>,
    body: &Map<String, Value>,
    anthropic: bool,
) -> Result<Value, ProviderError> {
    let mut out = Map::new();
    let mut documents = 0usize;
    let mut used_tools: Vec<String> = Vec::new();
    let mut messages = Vec::new();
    for (i, message) in body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| rejected("`messages` is required"))?
        .iter()
        .enumerate()
    {
        let role = match message["role"].as_str() {
            Some(role @ ("user" | "assistant")) => role,
            other => {
                return Err(rejected(format!(
                    "messages[{i}].role must be user or assistant, not {}",
                    other.unwrap_or("(none)")
                )));
            }
        };
        let mut content = Vec::new();
        for block in blocks_of(&message["content"]) {
            converse_block(
                call,
                &block,
                anthropic,
                &mut documents,
                &mut used_tools,
                &mut content,
            )?;
        }
        if content.is_empty() {
            continue;
        }
        // Converse requires turns to alternate; Anthropic merges a run of
        // one role, so merging keeps the meaning.
        match messages.last_mut() {
            Some(Value::Object(last)) if last["role"] == role => {
                if let Some(Value::Array(blocks)) = last.get_mut("content") {
                    blocks.extend(content);
                }
            }
            _ => messages.push(json!({ "role": role, "content": content })),
        }
    }
    out.insert("messages".into(), Value::Array(messages));
    if let Some(system) = body.get("system") {
        let mut parts = Vec::new();
        for block in blocks_of(system) {
            if block["type"] != "text" {
                return Err(rejected("system blocks must be text"));
            }
            parts.push(json!({ "text": block["text"] }));
            if block.get("cache_control").is_some() {
                parts.push(cache_point());
            }
        }
        if !parts.is_empty() {
            out.insert("system".into(), Value::Array(parts));
        }
    }
    let mut inference = Map::new();
    for (from, to) in [
        ("max_tokens", "maxTokens"),
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("stop_sequences", "stopSequences"),
    ] {
        if let Some(value) = body.get(from).filter(|v| !v.is_null()) {
            inference.insert(to.into(), value.clone());
        }
    }
    if !inference.is_empty() {
        out.insert("inferenceConfig".into(), Value::Object(inference));
    }
    if let Some(config) = tool_config(call, body, &used_tools)? {
        out.insert("toolConfig".into(), config);
    }
    if let Some(user) = body
        .get("metadata")
        .and_then(|m| m.get("user_id"))
        .and_then(Value::as_str)
    {
        out.insert("requestMetadata".into(), json!({ "user_id": user }));
    }
    let mut additional = Map::new();
    for (field, value) in body {
        if PLACED.contains(&field.as_str()) || value.is_null() {
            continue;
        }
        if anthropic {
            additional.insert(field.clone(), value.clone());
        } else {
            call.adjust(format!("{field}:dropped"));
        }
    }
    if anthropic {
        let betas = super::betas(call);
        if !betas.is_empty() {
            additional.insert("anthropic_beta".into(), json!(betas));
        }
    }
    // Bedrock's own fields (`guardrailConfig`, `performanceConfig`,
    // `promptVariables`, more `additionalModelRequestFields`), as given.
    if let Some(Value::Object(native)) = body.get("bedrock") {
        for (field, value) in native {
            match (field.as_str(), value) {
                ("additionalModelRequestFields", Value::Object(extra)) => {
                    additional.extend(extra.clone());
                }
                _ => {
                    out.insert(field.clone(), value.clone());
                }
            }
        }
    }
    if !additional.is_empty() {
        out.insert(
            "additionalModelRequestFields".into(),
            Value::Object(additional),
        );
    }
    Ok(Value::Object(out))
}

/// A content value as blocks (a string is one text block).
fn blocks_of(content: &Value) -> Vec<Value> {
    match content {
        Value::String(text) if text.is_empty() => Vec::new(),
        Value::String(text) => vec![json!({ "type": "text", "text": text })],
        Value::Array(blocks) => blocks.clone(),
        _ => Vec::new(),
    }
}

/// Appends the Converse blocks for one Messages block to `out`.
fn converse_block(
    call: Call<'_>,
    block: &Value,
    anthropic: bool,
    documents: &mut usize,
    used_tools: &mut Vec<String>,
    out: &mut Vec<Value>,
) -> Result<(), ProviderError> {
    let converted = match block["type"].as_str() {
        Some("text") => match block["text"].as_str() {
            Some("") => None,
            Some(text) => Some(json!({ "text": text })),
            None => return Err(rejected("a text block has no text")),
        },
        Some("image") => Some(json!({ "image": media(&block["source"], true)? })),
        Some("document") => {
            *documents += 1;
            let mut document = media(&block["source"], false)?;
            let name = block["title"]
                .as_str()
                .map(document_name)
                .unwrap_or_else(|| format!("document-{documents}"));
            document["name"] = json!(name);
            Some(json!({ "document": document }))
        }
        Some("tool_use") => {
            let name = block["name"]
                .as_str()
                .ok_or_else(|| rejected("a tool_use block has no name"))?;
            if !used_tools.iter().any(|t| t == name) {
                used_tools.push(name.to_string());
            }
            Some(json!({ "toolUse": {
                "toolUseId": tool_use_id(block["id"].as_str().unwrap_or_default()),
                "name": name,
                "input": block.get("input").cloned().unwrap_or_else(|| json!({})),
            } }))
        }
        Some("tool_result") => {
            let mut content = Vec::new();
            for part in blocks_of(&block["content"]) {
                match part["type"].as_str() {
                    Some("text") => content.push(json!({ "text": part["text"] })),
                    Some("image") => {
                        content.push(json!({ "image": media(&part["source"], true)? }))
                    }
                    Some("document") => {
                        *documents += 1;
                        let mut document = media(&part["source"], false)?;
                        document["name"] = json!(format!("document-{documents}"));
                        content.push(json!({ "document": document }));
                    }
                    other => {
                        return Err(rejected(format!(
                            "a tool result's {} block has no Converse counterpart",
                            other.unwrap_or("(untyped)")
                        )));
                    }
                }
            }
            if content.is_empty() {
                content.push(json!({ "text": "" }));
            }
            let error = block["is_error"].as_bool() == Some(true);
            Some(json!({ "toolResult": {
                "toolUseId": tool_use_id(block["tool_use_id"].as_str().unwrap_or_default()),
                "content": content,
                "status": if error { "error" } else { "success" },
            } }))
        }
        Some("thinking") if anthropic => Some(json!({ "reasoningContent": { "reasoningText": {
            "text": block["thinking"], "signature": block["signature"],
        } } })),
        Some("redacted_thinking") if anthropic => {
            Some(json!({ "reasoningContent": { "redactedContent": block["data"] } }))
        }
        Some("thinking" | "redacted_thinking") => {
            call.adjust("thinking_blocks:dropped (the model does not take them back)");
            None
        }
        other => {
            return Err(rejected(format!(
                "content block type {} has no Bedrock Converse counterpart",
                other.unwrap_or("(none)")
            )));
        }
    };
    if let Some(converted) = converted {
        out.push(converted);
        if block.get("cache_control").is_some() {
            out.push(cache_point());
        }
    }
    Ok(())
}

/// Converse allows letters, digits, spaces, hyphens, parentheses and
/// square brackets in a document's name.
fn document_name(title: &str) -> String {
    let name: String = title
        .chars()
        .filter(|c| c.is_alphanumeric() || " -()[]".contains(*c))
        .take(200)
        .collect();
    if name.trim().is_empty() {
        "document".into()
    } else {
        name
    }
}

/// An image or document source: base64 as `bytes`, an `s3://` URL as an
/// S3 location. Converse fetches no web URL, and Sluice does not fetch for
/// it (a gateway that fetches what a caller names is a way into the network
/// it runs in).
fn media(source: &Value, image: bool) -> Result<Value, ProviderError> {
    let (format, source) = match source["type"].as_str() {
        Some("base64") => {
            let media_type = source["media_type"].as_str().unwrap_or_default();
            (
                format_of(media_type, image)?,
                json!({ "bytes": source["data"] }),
            )
        }
        Some("text") if !image => {
            use base64::Engine as _;
            let text = source["data"].as_str().unwrap_or_default();
            (
                "txt".to_string(),
                json!({ "bytes": base64::engine::general_purpose::STANDARD.encode(text) }),
            )
        }
        Some("url") => {
            let url = source["url"].as_str().unwrap_or_default();
            if !url.starts_with("s3://") {
                return Err(rejected(
                    "Bedrock takes images and documents as data (base64) or s3:// URLs, not web URLs",
                ));
            }
            let extension = url
                .rsplit('.')
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase();
            let format = match extension.as_str() {
                "jpg" => "jpeg".to_string(),
                other => other.to_string(),
            };
            (format, json!({ "s3Location": { "uri": url } }))
        }
        other => {
            return Err(rejected(format!(
                "a {} source has no Bedrock counterpart",
                other.unwrap_or("(untyped)")
            )));
        }
    };
    Ok(json!({ "format": format, "source": source }))
}

/// Converse's format name for a media type.
fn format_of(media_type: &str, image: bool) -> Result<String, ProviderError> {
    let subtype = media_type.rsplit('/').next().unwrap_or_default();
    let format = match (image, subtype) {
        (true, "png" | "jpeg" | "gif" | "webp") => subtype,
        (true, "jpg") => "jpeg",
        (false, "pdf" | "csv" | "html" | "md" | "txt") => subtype,
        (false, "plain") => "txt",
        (false, "markdown") => "md",
        (false, "vnd.openxmlformats-officedocument.wordprocessingml.document") => "docx",
        (false, "msword") => "doc",
        (false, "vnd.ms-excel") => "xls",
        (false, "vnd.openxmlformats-officedocument.spreadsheetml.sheet") => "xlsx",
        _ => {
            return Err(rejected(format!(
                "Bedrock does not take {media_type} {}",
                if image { "images" } else { "documents" }
            )));
        }
    };
    Ok(format.to_string())
}

/// Tools and the tool choice. Converse needs the tools declared whenever the
/// conversation holds tool use, even on a turn that offers none: those are
/// declared with an open schema (and noted).
fn tool_config(
    call: Call<'_>,
    body: &Map<String, Value>,
    used: &[String],
) -> Result<Option<Value>, ProviderError> {
    let mut tools = Vec::new();
    let mut declared = HashSet::new();
    for tool in body
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if tool.get("type").is_some_and(|t| t != "custom") {
            return Err(rejected(format!(
                "tool type {} is Anthropic's own and has no Bedrock Converse counterpart",
                tool["type"]
            )));
        }
        let name = tool["name"]
            .as_str()
            .ok_or_else(|| rejected("a tool has no name"))?;
        declared.insert(name.to_string());
        let mut spec = json!({
            "name": name,
            "inputSchema": { "json": tool.get("input_schema").cloned().unwrap_or_else(|| json!({ "type": "object" })) },
        });
        if let Some(description) = tool["description"].as_str() {
            spec["description"] = json!(description);
        }
        tools.push(json!({ "toolSpec": spec }));
        if tool.get("cache_control").is_some() {
            tools.push(cache_point());
        }
    }
    let choice = body.get("tool_choice");
    let none = choice.is_some_and(|c| c["type"] == "none");
    if none && used.is_empty() {
        return Ok(None);
    }
    for name in used.iter().filter(|n| !declared.contains(*n)) {
        call.adjust(format!("tools:{name} declared for the history"));
        tools.push(json!({ "toolSpec": {
            "name": name, "inputSchema": { "json": { "type": "object" } },
        } }));
    }
    if tools.is_empty() {
        return Ok(None);
    }
    let mut config = json!({ "tools": tools });
    match choice.and_then(|c| c["type"].as_str()) {
        Some("any") => config["toolChoice"] = json!({ "any": {} }),
        Some("tool") => {
            config["toolChoice"] = json!({ "tool": { "name": choice.map(|c| &c["name"]) } })
        }
        Some("auto") => config["toolChoice"] = json!({ "auto": {} }),
        Some("none") => call.adjust("tool_choice:none sent as auto (Converse has no none)"),
        _ => {}
    }
    if choice.is_some_and(|c| c["disable_parallel_tool_use"] == true) {
        call.adjust("tool_choice.disable_parallel_tool_use:dropped");
    }
    Ok(Some(config))
}

/// Anthropic's stop reason for Converse's.
fn stop_reason(reason: &str) -> &str {
    match reason {
        "guardrail_intervened" | "content_filtered" => "refusal",
        // end_turn, tool_use, max_tokens, stop_sequence,
        // model_context_window_exceeded: the same names.
        other => other,
    }
}

/// Converse's usage in Anthropic's names.
fn usage(converse: &Value) -> Value {
    let n = |field: &str| converse.get(field).and_then(Value::as_u64).unwrap_or(0);
    json!({
        "input_tokens": n("inputTokens"),
        "output_tokens": n("outputTokens"),
        "cache_read_input_tokens": n("cacheReadInputTokens"),
        "cache_creation_input_tokens": n("cacheWriteInputTokens"),
    })
}

/// What Converse answers beside the message (latency, guardrail traces, the
/// model's own fields), kept under `bedrock`.
fn bedrock_fields(answer: &Value) -> Option<Value> {
    let mut kept = Map::new();
    for field in [
        "metrics",
        "trace",
        "additionalModelResponseFields",
        "performanceConfig",
    ] {
        if let Some(value) = answer.get(field) {
            kept.insert(field.into(), value.clone());
        }
    }
    (!kept.is_empty()).then_some(Value::Object(kept))
}

fn message_id() -> String {
    format!("msg_bdrk_{}", uuid::Uuid::new_v4().simple())
}

/// A Converse block as a Messages block.
fn anthropic_block(block: &Value) -> Option<Value> {
    if let Some(text) = block.get("text") {
        return Some(json!({ "type": "text", "text": text }));
    }
    if let Some(tool) = block.get("toolUse") {
        return Some(
            json!({ "type": "tool_use", "id": tool["toolUseId"], "name": tool["name"],
            "input": tool.get("input").cloned().unwrap_or_else(|| json!({})) }),
        );
    }
    if let Some(reasoning) = block.get("reasoningContent") {
        if let Some(text) = reasoning.get("reasoningText") {
            return Some(json!({ "type": "thinking", "thinking": text["text"],
                "signature": text.get("signature").cloned().unwrap_or_else(|| json!("")) }));
        }
        if let Some(data) = reasoning.get("redactedContent") {
            return Some(json!({ "type": "redacted_thinking", "data": data }));
        }
    }
    if let Some(cited) = block.get("citationsContent") {
        let text: String = cited["content"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["text"].as_str())
            .collect();
        return Some(json!({ "type": "text", "text": text, "citations": cited["citations"] }));
    }
    None
}

/// A Converse answer as a Messages answer.
pub fn anthropic_message(answer: &Value, model: &str) -> Value {
    let content: Vec<Value> = answer
        .pointer("/output/message/content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(anthropic_block)
        .collect();
    let mut message = json!({
        "id": message_id(), "type": "message", "role": "assistant", "model": model,
        "content": content,
        "stop_reason": stop_reason(answer["stopReason"].as_str().unwrap_or("end_turn")),
        "stop_sequence": null,
        "usage": usage(&answer["usage"]),
    });
    if let Some(bedrock) = bedrock_fields(answer) {
        message["bedrock"] = bedrock;
    }
    message
}

/// Turns ConverseStream's events into Messages stream events as they come.
/// Converse opens only tool blocks with an event (text and reasoning begin
/// with their first delta), and counts usage after the stop, in `metadata`:
/// the Messages stream's `message_delta` carries the stop reason with the
/// whole usage.
pub struct ConverseEvents {
    model: String,
    /// The content blocks started and not yet stopped.
    open: HashSet<u64>,
    stop_reason: Option<String>,
}

fn event(kind: &str, data: Value) -> SseEvent {
    SseEvent {
        event: kind.to_string(),
        data,
    }
}

impl ConverseEvents {
    pub fn new(model: &str) -> ConverseEvents {
        ConverseEvents {
            model: model.to_string(),
            open: HashSet::new(),
            stop_reason: None,
        }
    }

    fn start(&mut self, index: u64, block: Value, out: &mut Vec<SseEvent>) {
        if !self.open.insert(index) {
            return;
        }
        out.push(event(
            "content_block_start",
            json!({ "type": "content_block_start", "index": index, "content_block": block }),
        ));
    }

    /// The Messages events for one Converse event.
    pub fn on_event(&mut self, kind: &str, data: &Value) -> Vec<SseEvent> {
        let mut out = Vec::new();
        let index = data["contentBlockIndex"].as_u64().unwrap_or(0);
        match kind {
            "messageStart" => out.push(event(
                "message_start",
                json!({ "type": "message_start", "message": {
                    "id": message_id(), "type": "message", "role": "assistant",
                    "model": self.model, "content": [], "stop_reason": null,
                    "stop_sequence": null, "usage": { "input_tokens": 0, "output_tokens": 0 },
                } }),
            )),
            "contentBlockStart" => {
                if let Some(tool) = data.pointer("/start/toolUse") {
                    self.start(
                        index,
                        json!({ "type": "tool_use", "id": tool["toolUseId"], "name": tool["name"], "input": {} }),
                        &mut out,
                    );
                }
            }
            "contentBlockDelta" => {
                let delta = &data["delta"];
                let (block, out_delta) = if let Some(text) = delta.get("text") {
                    (
                        json!({ "type": "text", "text": "" }),
                        json!({ "type": "text_delta", "text": text }),
                    )
                } else if let Some(input) = delta.pointer("/toolUse/input") {
                    (
                        json!({ "type": "tool_use", "id": "", "name": "", "input": {} }),
                        json!({ "type": "input_json_delta", "partial_json": input }),
                    )
                } else if let Some(reasoning) = delta.get("reasoningContent") {
                    if let Some(data) = reasoning.get("redactedContent") {
                        self.start(
                            index,
                            json!({ "type": "redacted_thinking", "data": data }),
                            &mut out,
                        );
                        return out;
                    }
                    let thinking = json!({ "type": "thinking", "thinking": "", "signature": "" });
                    if let Some(text) = reasoning.get("text") {
                        (
                            thinking,
                            json!({ "type": "thinking_delta", "thinking": text }),
                        )
                    } else if let Some(signature) = reasoning.get("signature") {
                        (
                            thinking,
                            json!({ "type": "signature_delta", "signature": signature }),
                        )
                    } else {
                        return out;
                    }
                } else {
                    return out;
                };
                self.start(index, block, &mut out);
                out.push(event(
                    "content_block_delta",
                    json!({ "type": "content_block_delta", "index": index, "delta": out_delta }),
                ));
            }
            "contentBlockStop" if self.open.remove(&index) => {
                out.push(event(
                    "content_block_stop",
                    json!({ "type": "content_block_stop", "index": index }),
                ));
            }
            "messageStop" => {
                let reason = data["stopReason"].as_str().unwrap_or("end_turn");
                self.stop_reason = Some(stop_reason(reason).to_string());
            }
            "metadata" => {
                let mut delta = json!({
                    "type": "message_delta",
                    "delta": { "stop_reason": self.stop_reason.take().unwrap_or_else(|| "end_turn".into()), "stop_sequence": null },
                    "usage": usage(&data["usage"]),
                });
                if let Some(bedrock) = bedrock_fields(data) {
                    delta["bedrock"] = bedrock;
                }
                out.push(event("message_delta", delta));
                out.push(event("message_stop", json!({ "type": "message_stop" })));
            }
            _ => {}
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::Adjustments;

    fn call<'a>(adjusted: &'a Adjustments, beta: Option<&'a str>) -> Call<'a> {
        Call {
            model: "anthropic.claude-sonnet-4-5-20250929-v1:0",
            key: None,
            beta,
            limits: None,
            adjusted: Some(adjusted),
        }
    }

    fn body(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_claude_tool_loop_with_thinking_images_and_cache_control() {
        let adjusted = Adjustments::default();
        let request = body(json!({
            "model": "m", "max_tokens": 2000, "temperature": 1, "stop_sequences": ["END"],
            "thinking": {"type": "enabled", "budget_tokens": 1024}, "top_k": 5,
            "metadata": {"user_id": "u-1"},
            "system": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
            "tools": [{"name": "lookup", "description": "d", "input_schema": {"type": "object"},
                       "cache_control": {"type": "ephemeral"}}],
            "tool_choice": {"type": "auto"},
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "what is this?", "cache_control": {"type": "ephemeral"}},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}}]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "hm", "signature": "sig"},
                    {"type": "tool_use", "id": "call:a/1", "name": "lookup", "input": {"q": "a"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call:a/1", "content": "found", "is_error": true}]},
                {"role": "user", "content": "and?"}
            ]
        }));
        let out = converse_request(
            call(&adjusted, Some("context-1m-2025-08-07")),
            &request,
            true,
        )
        .unwrap();
        assert_eq!(
            out["system"],
            json!([{"text": "be brief"}, {"cachePoint": {"type": "default"}}])
        );
        let messages = out["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 3, "the two user turns merged: {out}");
        assert_eq!(
            messages[0]["content"][1],
            json!({"cachePoint": {"type": "default"}})
        );
        assert_eq!(
            messages[0]["content"][2],
            json!({"image": {"format": "png", "source": {"bytes": "iVBO"}}})
        );
        assert_eq!(
            messages[1]["content"][0],
            json!({"reasoningContent": {"reasoningText": {"text": "hm", "signature": "sig"}}})
        );
        assert_eq!(
            messages[1]["content"][1]["toolUse"]["toolUseId"],
            "call_a_1"
        );
        let result = &messages[2]["content"][0]["toolResult"];
        assert_eq!(result["toolUseId"], "call_a_1");
        assert_eq!(result["status"], "error");
        assert_eq!(messages[2]["content"][1], json!({"text": "and?"}));
        assert_eq!(
            out["inferenceConfig"],
            json!({"maxTokens": 2000, "temperature": 1, "stopSequences": ["END"]})
        );
        assert_eq!(
            out["toolConfig"]["tools"][1],
            json!({"cachePoint": {"type": "default"}})
        );
        assert_eq!(out["toolConfig"]["toolChoice"], json!({"auto": {}}));
        assert_eq!(out["requestMetadata"], json!({"user_id": "u-1"}));
        assert_eq!(
            out["additionalModelRequestFields"],
            json!({"thinking": {"type": "enabled", "budget_tokens": 1024}, "top_k": 5,
                   "anthropic_beta": ["context-1m-2025-08-07"]})
        );
        assert!(adjusted.take().is_empty());
    }

    #[test]
    fn another_model_drops_what_only_claude_takes_and_says_so() {
        let adjusted = Adjustments::default();
        let request = body(json!({
            "model": "m", "max_tokens": 10, "top_k": 3,
            "messages": [
                {"role": "user", "content": "go"},
                {"role": "assistant", "content": [{"type": "thinking", "thinking": "x", "signature": "s"},
                    {"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "r"}]}]}
            ],
            "bedrock": {"guardrailConfig": {"guardrailIdentifier": "g", "guardrailVersion": "1"}}
        }));
        let out = converse_request(call(&adjusted, None), &request, false).unwrap();
        assert!(out.get("additionalModelRequestFields").is_none(), "{out}");
        assert_eq!(out["guardrailConfig"]["guardrailIdentifier"], "g");
        assert_eq!(out["toolConfig"]["tools"][0]["toolSpec"]["name"], "f");
        assert_eq!(
            adjusted.take(),
            [
                "thinking_blocks:dropped (the model does not take them back)",
                "tools:f declared for the history",
                "top_k:dropped"
            ]
        );
    }

    #[test]
    fn refuses_what_converse_cannot_take() {
        let adjusted = Adjustments::default();
        for content in [
            json!([{"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}}]),
            json!([{"type": "image", "source": {"type": "base64", "media_type": "image/tiff", "data": "x"}}]),
            json!([{"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}}]),
        ] {
            let request = body(json!({"model": "m", "max_tokens": 5,
                "messages": [{"role": "user", "content": content}]}));
            let error = converse_request(call(&adjusted, None), &request, true).unwrap_err();
            assert!(
                matches!(error, ProviderError::Rejected { status: 400, .. }),
                "{error:?}"
            );
        }
        let s3 = body(
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "url", "url": "s3://bucket/a.JPG"}}]}]}),
        );
        let out = converse_request(call(&adjusted, None), &s3, true).unwrap();
        assert_eq!(
            out["messages"][0]["content"][0]["image"],
            json!({"format": "jpeg", "source": {"s3Location": {"uri": "s3://bucket/a.JPG"}}})
        );
    }

    #[test]
    fn an_answer_and_its_stream_become_messages() {
        let answer = json!({
            "output": {"message": {"role": "assistant", "content": [
                {"reasoningContent": {"reasoningText": {"text": "hm", "signature": "sig"}}},
                {"text": "Looking."},
                {"toolUse": {"toolUseId": "tu1", "name": "lookup", "input": {"q": "a"}}}]}},
            "stopReason": "tool_use",
            "usage": {"inputTokens": 10, "outputTokens": 5, "totalTokens": 115,
                      "cacheReadInputTokens": 100, "cacheWriteInputTokens": 0},
            "metrics": {"latencyMs": 42}
        });
        let message = anthropic_message(&answer, "m");
        assert_eq!(
            message["content"][0],
            json!({"type": "thinking", "thinking": "hm", "signature": "sig"})
        );
        assert_eq!(message["content"][2]["id"], "tu1");
        assert_eq!(message["stop_reason"], "tool_use");
        assert_eq!(message["usage"]["cache_read_input_tokens"], 100);
        assert_eq!(message["bedrock"]["metrics"]["latencyMs"], 42);
        let refused = anthropic_message(&json!({"stopReason": "guardrail_intervened"}), "m");
        assert_eq!(refused["stop_reason"], "refusal");

        let mut stream = ConverseEvents::new("m");
        let mut events = Vec::new();
        for (kind, data) in [
            ("messageStart", json!({"role": "assistant"})),
            (
                "contentBlockDelta",
                json!({"contentBlockIndex": 0, "delta": {"text": "Hi"}}),
            ),
            ("contentBlockStop", json!({"contentBlockIndex": 0})),
            (
                "contentBlockStart",
                json!({"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "tu", "name": "f"}}}),
            ),
            (
                "contentBlockDelta",
                json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "{\"q\":"}}}),
            ),
            ("contentBlockStop", json!({"contentBlockIndex": 1})),
            ("messageStop", json!({"stopReason": "tool_use"})),
            (
                "metadata",
                json!({"usage": {"inputTokens": 3, "outputTokens": 4}, "metrics": {"latencyMs": 1}}),
            ),
        ] {
            events.extend(stream.on_event(kind, &data));
        }
        let kinds: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(events[4].data["content_block"]["id"], "tu");
        assert_eq!(events[5].data["delta"]["partial_json"], "{\"q\":");
        assert_eq!(events[7].data["delta"]["stop_reason"], "tool_use");
        assert_eq!(events[7].data["usage"]["input_tokens"], 3);
    }
}
