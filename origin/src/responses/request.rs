//! A Responses request read and turned into a chat request. Fields of the
//! Responses API with a chat equivalent are translated (`input` and
//! `instructions` to `messages`, function `tools`, `tool_choice`, `text.format`
//! to `response_format`, `reasoning.effort`, `max_output_tokens`); fields
//! Sluice itself acts on (`store`, `previous_response_id`, `include`,
//! `truncation`, `metadata`, ...) are consumed and echoed in the response; any
//! other field goes to the upstream as sent, so a parameter Sluice does not
//! know still reaches a provider that does.

use crate::generation::parse::validate;
use crate::http::{ApiError, fields};
use crate::openai::{ChatMessage, ChatRequest, Role};
use serde_json::{Map, Value, json};

/// Fields Sluice reads or keeps for itself; never forwarded as they are.
const CONSUMED: &[&str] = &[
    "model",
    "input",
    "instructions",
    "previous_response_id",
    "store",
    "stream",
    "stream_options",
    "include",
    "truncation",
    "metadata",
    "max_tool_calls",
    "background",
    "conversation",
    "prompt",
    "text",
    "reasoning",
    "tools",
    "tool_choice",
    "max_output_tokens",
    "top_logprobs",
];

/// A `POST /v1/responses` body, checked.
#[derive(Debug, Clone)]
pub struct ResponsesRequest {
    /// The body as the client sent it (echoed into the response object).
    pub body: Map<String, Value>,
    pub model: String,
    /// `input` as a list of items, each with a `type` and an `id`.
    pub input: Vec<Value>,
    pub store: bool,
    pub stream: bool,
    pub previous_response_id: Option<String>,
}

fn invalid(param: &str, message: String) -> ApiError {
    ApiError::InvalidRequest {
        message,
        param: Some(param.into()),
    }
}

fn unsupported(param: &str, what: &str) -> ApiError {
    invalid(
        param,
        format!("{what} is not supported by this gateway's Responses API."),
    )
}

/// An id for an item Sluice creates or stores without one.
pub fn item_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

impl ResponsesRequest {
    pub fn parse(body: &[u8]) -> Result<ResponsesRequest, ApiError> {
        let body: Map<String, Value> =
            serde_json::from_slice(body).map_err(|e| ApiError::InvalidRequest {
                message: format!("Request body is not a valid JSON object: {e}"),
                param: None,
            })?;
        let model = match body.get("model") {
            Some(Value::String(m)) if !m.trim().is_empty() => m.clone(),
            _ => {
                return Err(invalid(
                    "model",
                    "`model` is required (a non-empty string).".into(),
                ));
            }
        };
        let nested = |name: &str, rules| {
            body.get(name)
                .and_then(Value::as_object)
                .and_then(|object| fields::refused(object, &format!("{name}."), rules))
        };
        if let Some((field, message)) = fields::refused(&body, "", fields::RESPONSES)
            .or_else(|| nested("reasoning", fields::RESPONSES_REASONING))
            .or_else(|| nested("text", fields::RESPONSES_TEXT))
        {
            return Err(invalid(&field, message));
        }
        let flag = |name: &str, default: bool| match body.get(name) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(invalid(
                name,
                format!("`{name}` must be a boolean, got {other}."),
            )),
        };
        let store = flag("store", true)?;
        let stream = flag("stream", false)?;
        if flag("background", false)? {
            return Err(unsupported("background", "`background: true`"));
        }
        for name in ["conversation", "prompt"] {
            if body.get(name).is_some_and(|v| !v.is_null()) {
                return Err(unsupported(name, &format!("`{name}`")));
            }
        }
        let previous_response_id = match body.get("previous_response_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(id)) => {
                crate::http::check_identifier("previous_response_id", id)?;
                Some(id.clone())
            }
            Some(other) => {
                return Err(invalid(
                    "previous_response_id",
                    format!("`previous_response_id` must be a string, got {other}."),
                ));
            }
        };
        let input = match body.get("input") {
            Some(Value::String(text)) => vec![json!({
                "type": "message", "role": "user",
                "content": [{ "type": "input_text", "text": text }],
            })],
            Some(Value::Array(items)) => items.clone(),
            None | Some(Value::Null) if previous_response_id.is_some() => Vec::new(),
            _ => {
                return Err(invalid(
                    "input",
                    "`input` must be a string or a list of input items.".into(),
                ));
            }
        };
        let input = input
            .into_iter()
            .enumerate()
            .map(|(i, item)| normalize_item(item, &format!("input[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ResponsesRequest {
            body,
            model,
            input,
            store,
            stream,
            previous_response_id,
        })
    }

    pub fn field(&self, name: &str) -> Option<&Value> {
        self.body.get(name).filter(|v| !v.is_null())
    }

    /// Ids of the stored items this input needs: its `item_reference`s, and
    /// its reasoning items sent back without their `encrypted_content`
    /// (clients that do not ask for it, as OpenAI's store makes needless).
    pub fn referenced_ids(&self) -> Vec<String> {
        self.input
            .iter()
            .filter(|item| {
                item["type"] == "item_reference"
                    || (item["type"] == "reasoning" && !item["encrypted_content"].is_string())
            })
            .filter_map(|item| item["id"].as_str().map(str::to_string))
            .collect()
    }

    /// Replaces each `item_reference` by the stored item it names (a 400
    /// naming it when the caller has none of that id) and completes
    /// reasoning items with the `encrypted_content` stored for them.
    pub fn resolve(
        &mut self,
        stored: &std::collections::HashMap<String, Value>,
    ) -> Result<(), ApiError> {
        for (i, item) in self.input.iter_mut().enumerate() {
            let Some(id) = item["id"].as_str().map(str::to_string) else {
                continue;
            };
            if item["type"] == "item_reference" {
                *item = stored.get(&id).cloned().ok_or_else(|| {
                    invalid(
                        &format!("input[{i}].id"),
                        format!("Item with id '{id}' not found."),
                    )
                })?;
            } else if item["type"] == "reasoning"
                && !item["encrypted_content"].is_string()
                && let Some(content) = stored.get(&id).and_then(|s| s.get("encrypted_content"))
            {
                item["encrypted_content"] = content.clone();
            }
        }
        Ok(())
    }

    /// The chat request for this call, `context` (earlier turns' items)
    /// before this call's input; `instructions` come first and, as OpenAI
    /// does, are not carried over from earlier turns.
    pub fn to_chat(&self, context: &[Value]) -> Result<ChatRequest, ApiError> {
        let mut messages = Vec::new();
        // A string, as OpenAI's contract has it (checked in `parse`).
        if let Some(text) = self.field("instructions").and_then(Value::as_str) {
            messages.push(ChatMessage::text_message(Role::System, text));
        }
        messages.extend(to_messages(context));
        messages.extend(to_messages(&self.input));
        let mut chat = ChatRequest::new(self.model.clone(), messages);
        for (name, value) in &self.body {
            if !CONSUMED.contains(&name.as_str()) {
                chat.set(name, value.clone());
            }
        }
        if let Some(tools) = self.field("tools") {
            chat.set("tools", chat_tools(tools)?);
        }
        if let Some(choice) = self.field("tool_choice") {
            chat.set("tool_choice", chat_tool_choice(choice)?);
        }
        if let Some(text) = self.field("text") {
            if let Some(format) = text.get("format").filter(|f| !f.is_null())
                && let Some(format) = response_format(format)?
            {
                chat.set("response_format", format);
            }
            if let Some(verbosity) = text.get("verbosity").filter(|v| !v.is_null()) {
                chat.set("verbosity", verbosity.clone());
            }
        }
        if let Some(effort) = self
            .field("reasoning")
            .and_then(|r| r.get("effort"))
            .filter(|e| !e.is_null())
        {
            chat.set("reasoning_effort", effort.clone());
        }
        if let Some(max) = self.field("max_output_tokens") {
            chat.set("max_completion_tokens", max.clone());
        }
        if let Some(top) = self.field("top_logprobs") {
            chat.set("logprobs", Value::Bool(true));
            chat.set("top_logprobs", top.clone());
        }
        if self.stream {
            chat.set("stream", Value::Bool(true));
            chat.set("stream_options", json!({ "include_usage": true }));
        }
        if chat.messages.is_empty() {
            return Err(invalid(
                "input",
                "`input` must hold at least one item.".into(),
            ));
        }
        validate(&chat).map_err(|e| match e {
            // The chat names of these fields are not the client's.
            ApiError::InvalidRequest { message, param } => ApiError::InvalidRequest {
                message,
                param: param.map(|p| match p.as_str() {
                    "max_completion_tokens" => "max_output_tokens".into(),
                    "response_format" => "text.format".into(),
                    _ => p,
                }),
            },
            other => other,
        })?;
        Ok(chat)
    }
}

/// An input item with its `type` (a bare `{role, content}` is a message)
/// and an `id`, after checking what its translation relies on.
fn normalize_item(item: Value, at: &str) -> Result<Value, ApiError> {
    let Value::Object(mut item) = item else {
        return Err(invalid(at, format!("`{at}` must be an object.")));
    };
    let kind = match item.get("type") {
        None | Some(Value::Null) if item.contains_key("role") => "message".to_string(),
        Some(Value::String(kind)) => kind.clone(),
        _ => return Err(invalid(at, format!("`{at}.type` is required."))),
    };
    let string = |item: &Map<String, Value>, field: &str| -> Result<(), ApiError> {
        match item.get(field) {
            Some(Value::String(_)) => Ok(()),
            _ => Err(invalid(
                &format!("{at}.{field}"),
                format!("`{at}.{field}` must be a string."),
            )),
        }
    };
    let prefix = match kind.as_str() {
        "message" => {
            match item.get("role").and_then(Value::as_str) {
                Some("user" | "system" | "developer" | "assistant") => {}
                _ => {
                    return Err(invalid(
                        &format!("{at}.role"),
                        format!("`{at}.role` must be one of user, system, developer or assistant."),
                    ));
                }
            }
            check_content(&item, "content", at)?;
            "msg"
        }
        "function_call" => {
            for field in ["call_id", "name", "arguments"] {
                string(&item, field)?;
            }
            "fc"
        }
        "function_call_output" => {
            string(&item, "call_id")?;
            check_content(&item, "output", at)?;
            "fco"
        }
        "reasoning" => "rs",
        // An earlier item by its id, resolved from the caller's stored
        // responses before translation (`ResponsesRequest::resolve`).
        "item_reference" => {
            string(&item, "id")?;
            let id = item["id"].as_str().unwrap_or_default();
            crate::http::check_identifier(&format!("{at}.id"), id)?;
            return Ok(Value::Object(item));
        }
        other => {
            return Err(unsupported(
                &format!("{at}.type"),
                &format!(
                    "An input item of type `{other}` (only messages, function calls, their outputs, reasoning and item references are)"
                ),
            ));
        }
    };
    item.insert("type".into(), Value::String(kind));
    if !item.get("id").is_some_and(Value::is_string) {
        item.insert("id".into(), Value::String(item_id(prefix)));
    }
    Ok(Value::Object(item))
}

/// `item[field]` is a string or a list of content parts Sluice can translate.
fn check_content(item: &Map<String, Value>, field: &str, at: &str) -> Result<(), ApiError> {
    match item.get(field) {
        Some(Value::String(_)) => Ok(()),
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .try_for_each(|(j, part)| check_part(part, &format!("{at}.{field}[{j}]"))),
        _ => Err(invalid(
            &format!("{at}.{field}"),
            format!("`{at}.{field}` must be a string or a list of content parts."),
        )),
    }
}

fn check_part(part: &Value, at: &str) -> Result<(), ApiError> {
    let text = || part.get("text").is_some_and(Value::is_string);
    match part.get("type").and_then(Value::as_str) {
        Some("input_text" | "output_text") if text() => Ok(()),
        Some("refusal") if part.get("refusal").is_some_and(Value::is_string) => Ok(()),
        Some("input_image") if part.get("image_url").is_some_and(Value::is_string) => Ok(()),
        Some("input_image") => Err(unsupported(
            at,
            "An image by `file_id` (send `image_url`, an http or data URL)",
        )),
        Some("input_file") => Ok(()),
        Some(kind @ ("input_text" | "output_text" | "refusal")) => Err(invalid(
            at,
            format!("`{at}` of type {kind} needs its text."),
        )),
        Some(other) => Err(unsupported(
            at,
            &format!("A content part of type `{other}`"),
        )),
        None => Err(invalid(at, format!("`{at}.type` is required."))),
    }
}

/// A Responses content part as a chat one; fields Sluice does not translate
/// (`cache_control`, ...) stay on the part.
fn chat_part(part: &Value) -> Value {
    let mut rest = part.as_object().cloned().unwrap_or_default();
    let kind = rest.remove("type");
    let mut out = match kind.as_ref().and_then(Value::as_str) {
        Some("input_image") => {
            let mut image = Map::new();
            image.insert("url".into(), rest.remove("image_url").unwrap_or_default());
            if let Some(detail) = rest.remove("detail").filter(|d| !d.is_null()) {
                image.insert("detail".into(), detail);
            }
            json!({ "type": "image_url", "image_url": image })
        }
        Some("input_file") => {
            let mut file = Map::new();
            for field in ["file_data", "file_id", "filename", "file_url"] {
                if let Some(value) = rest.remove(field) {
                    file.insert(field.into(), value);
                }
            }
            json!({ "type": "file", "file": file })
        }
        Some("refusal") => json!({ "type": "text", "text": rest.remove("refusal") }),
        _ => json!({ "type": "text", "text": rest.remove("text") }),
    };
    // Output annotations and logprobs have no place in a chat request.
    rest.remove("annotations");
    rest.remove("logprobs");
    if let Value::Object(out) = &mut out {
        out.extend(rest);
    }
    out
}

fn chat_content(content: &Value) -> Value {
    match content {
        Value::Array(parts) => Value::Array(parts.iter().map(chat_part).collect()),
        other => other.clone(),
    }
}

/// The items as chat messages: consecutive assistant messages and function
/// calls make one assistant message (text and `tool_calls`); a reasoning
/// item's `thinking_blocks` (kept in `encrypted_content`), which an
/// Anthropic upstream needs back, go onto the assistant message after it.
/// Its summary text is not sent: no chat API takes reasoning text back
/// (DeepSeek refuses it, OpenAI's reasoning models never return it).
pub fn to_messages(items: &[Value]) -> Vec<ChatMessage> {
    let mut out: Vec<ChatMessage> = Vec::new();
    let mut reasoning: Option<Value> = None;
    // The assistant message being built, if the last message is one.
    let mut open_assistant = false;
    for item in items {
        match item["type"].as_str() {
            Some("message") if item["role"] == "assistant" => {
                let mut message = assistant(&mut reasoning);
                let text = match &item["content"] {
                    Value::String(text) => text.clone(),
                    Value::Array(parts) => parts
                        .iter()
                        .filter_map(|p| p["text"].as_str())
                        .collect::<Vec<_>>()
                        .join(""),
                    _ => String::new(),
                };
                let refusal: Vec<&str> = item["content"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p["refusal"].as_str())
                    .collect();
                message.extra.insert("content".into(), Value::String(text));
                if !refusal.is_empty() {
                    message
                        .extra
                        .insert("refusal".into(), Value::String(refusal.join("")));
                }
                out.push(message);
                open_assistant = true;
            }
            Some("message") => {
                let role = match item["role"].as_str() {
                    Some("system") => Role::System,
                    Some("developer") => Role::Developer,
                    _ => Role::User,
                };
                let mut extra = Map::new();
                extra.insert("content".into(), chat_content(&item["content"]));
                out.push(ChatMessage { role, extra });
                open_assistant = false;
            }
            Some("function_call") => {
                if !open_assistant {
                    let mut message = assistant(&mut reasoning);
                    message.extra.insert("content".into(), Value::Null);
                    out.push(message);
                    open_assistant = true;
                }
                let call = json!({
                    "id": item["call_id"], "type": "function",
                    "function": { "name": item["name"], "arguments": item["arguments"] },
                });
                if let Some(last) = out.last_mut() {
                    let calls = last
                        .extra
                        .entry("tool_calls")
                        .or_insert_with(|| Value::Array(Vec::new()));
                    if let Value::Array(calls) = calls {
                        calls.push(call);
                    }
                }
            }
            Some("function_call_output") => {
                let mut extra = Map::new();
                extra.insert("tool_call_id".into(), item["call_id"].clone());
                extra.insert("content".into(), chat_content(&item["output"]));
                out.push(ChatMessage {
                    role: Role::Tool,
                    extra,
                });
                open_assistant = false;
            }
            Some("reasoning") => {
                reasoning = item["encrypted_content"]
                    .as_str()
                    .and_then(|s| serde_json::from_str::<Value>(s).ok())
                    .filter(Value::is_array);
                open_assistant = false;
            }
            _ => {}
        }
    }
    out
}

/// A new assistant message carrying the thinking blocks before it, if any.
fn assistant(reasoning: &mut Option<Value>) -> ChatMessage {
    let mut extra = Map::new();
    if let Some(blocks) = reasoning.take() {
        extra.insert("thinking_blocks".into(), blocks);
    }
    ChatMessage {
        role: Role::Assistant,
        extra,
    }
}

/// Function tools in chat's shape; Sluice runs no hosted tools.
fn chat_tools(tools: &Value) -> Result<Value, ApiError> {
    let Value::Array(tools) = tools else {
        return Err(invalid("tools", "`tools` must be a list.".into()));
    };
    tools
        .iter()
        .enumerate()
        .map(|(i, tool)| {
            let kind = tool["type"].as_str().unwrap_or_default();
            if kind != "function" {
                return Err(unsupported(
                    &format!("tools[{i}].type"),
                    &format!("A tool of type `{kind}` (only function tools are)"),
                ));
            }
            if !tool["name"].is_string() {
                return Err(invalid(
                    &format!("tools[{i}].name"),
                    format!("`tools[{i}].name` must be a string."),
                ));
            }
            let mut function = tool.as_object().cloned().unwrap_or_default();
            function.remove("type");
            Ok(json!({ "type": "function", "function": function }))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

fn chat_tool_choice(choice: &Value) -> Result<Value, ApiError> {
    match choice {
        Value::String(mode) if matches!(mode.as_str(), "auto" | "none" | "required") => {
            Ok(choice.clone())
        }
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
            Ok(json!({ "type": "function", "function": { "name": o.get("name") } }))
        }
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("allowed_tools") => {
            let tools: Vec<Value> = o
                .get("tools")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|t| json!({ "type": "function", "function": { "name": t["name"] } }))
                .collect();
            Ok(json!({
                "type": "allowed_tools",
                "allowed_tools": { "mode": o.get("mode").cloned().unwrap_or("auto".into()), "tools": tools },
            }))
        }
        other => Err(unsupported(
            "tool_choice",
            &format!("`tool_choice` {other}"),
        )),
    }
}

/// `text.format` as chat's `response_format` (`None` for plain text).
fn response_format(format: &Value) -> Result<Option<Value>, ApiError> {
    match format["type"].as_str() {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({ "type": "json_object" }))),
        Some("json_schema") => {
            if !format["schema"].is_object() {
                return Err(invalid(
                    "text.format.schema",
                    "`text.format.schema` must be a JSON schema object.".into(),
                ));
            }
            let mut schema = format.as_object().cloned().unwrap_or_default();
            schema.remove("type");
            schema
                .entry("name")
                .or_insert_with(|| Value::String("response".into()));
            Ok(Some(
                json!({ "type": "json_schema", "json_schema": schema }),
            ))
        }
        _ => Err(invalid(
            "text.format.type",
            "`text.format.type` must be text, json_object or json_schema.".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: Value) -> Result<ResponsesRequest, ApiError> {
        ResponsesRequest::parse(body.to_string().as_bytes())
    }

    #[test]
    fn a_string_input_with_instructions_is_a_system_and_a_user_message() {
        let request = parse(
            json!({"model": "m", "input": "hi", "instructions": "be brief",
            "temperature": 0.5, "seed": 7, "store": false}),
        )
        .unwrap();
        assert!(!request.store);
        let chat = request.to_chat(&[]).unwrap();
        let body = serde_json::to_value(&chat).unwrap();
        assert_eq!(
            body["messages"][0],
            json!({"role": "system", "content": "be brief"})
        );
        assert_eq!(
            body["messages"][1],
            json!({"role": "user", "content": [{"type": "text", "text": "hi"}]})
        );
        assert_eq!(body["temperature"], 0.5);
        assert_eq!(body["seed"], 7, "unknown fields go to the upstream");
        assert!(body.get("store").is_none() && body.get("instructions").is_none());
    }

    #[test]
    fn function_calls_and_outputs_become_tool_calls_and_tool_messages() {
        let request = parse(json!({"model": "m", "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "weather?"},
                {"type": "input_image", "image_url": "data:image/png;base64,AA", "detail": "low", "cache_control": {"type": "ephemeral"}}]},
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "think"}],
             "encrypted_content": "[{\"type\":\"thinking\",\"thinking\":\"think\",\"signature\":\"sig\"}]"},
            {"type": "function_call", "call_id": "call_1", "name": "w", "arguments": "{\"c\":1}"},
            {"type": "function_call", "call_id": "call_2", "name": "w", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
            {"type": "function_call_output", "call_id": "call_2", "output": "rain"},
        ], "tools": [{"type": "function", "name": "w", "parameters": {"type": "object"}, "strict": true}],
           "tool_choice": {"type": "function", "name": "w"},
           "text": {"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}}},
           "reasoning": {"effort": "low"}, "max_output_tokens": 50}))
        .unwrap();
        assert!(request.input.iter().all(|i| i["id"].is_string()));
        let body = serde_json::to_value(request.to_chat(&[]).unwrap()).unwrap();
        let messages = body["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 4);
        assert_eq!(
            messages[0]["content"][1],
            json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,AA", "detail": "low"}, "cache_control": {"type": "ephemeral"}})
        );
        assert_eq!(messages[1]["role"], "assistant");
        assert!(messages[1].get("reasoning_content").is_none());
        assert_eq!(messages[1]["thinking_blocks"][0]["signature"], "sig");
        assert_eq!(messages[1]["tool_calls"][1]["id"], "call_2");
        assert_eq!(
            messages[1]["tool_calls"][0]["function"]["arguments"],
            "{\"c\":1}"
        );
        assert_eq!(
            messages[2],
            json!({"role": "tool", "tool_call_id": "call_1", "content": "sunny"})
        );
        assert_eq!(
            body["tools"][0],
            json!({"type": "function", "function": {"name": "w", "parameters": {"type": "object"}, "strict": true}})
        );
        assert_eq!(
            body["tool_choice"],
            json!({"type": "function", "function": {"name": "w"}})
        );
        assert_eq!(body["response_format"]["json_schema"]["name"], "out");
        assert_eq!(body["reasoning_effort"], "low");
        assert_eq!(body["max_completion_tokens"], 50);
    }

    #[test]
    fn what_cannot_be_translated_is_refused_with_its_parameter() {
        let param = |body: Value| match parse(body).and_then(|r| r.to_chat(&[])) {
            Err(ApiError::InvalidRequest { param, .. }) => param.unwrap_or_default(),
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert_eq!(param(json!({"input": "x"})), "model");
        assert_eq!(param(json!({"model": "m", "input": 3})), "input");
        assert_eq!(
            param(json!({"model": "m", "input": "x", "tools": [{"type": "web_search"}]})),
            "tools[0].type"
        );
        assert_eq!(
            param(json!({"model": "m", "input": [{"type": "computer_call_output"}]})),
            "input[0].type"
        );
        assert_eq!(
            param(json!({"model": "m", "input": [{"role": "wizard", "content": "x"}]})),
            "input[0].role"
        );
        assert_eq!(
            param(json!({"model": "m", "input": "x", "background": true})),
            "background"
        );
        assert_eq!(
            param(json!({"model": "m", "input": "x", "max_output_tokens": 0})),
            "max_output_tokens"
        );
        assert_eq!(param(json!({"model": "m", "input": []})), "input");
        assert_eq!(
            param(json!({"model": "m", "input": "x", "store": "yes"})),
            "store"
        );
    }
}
