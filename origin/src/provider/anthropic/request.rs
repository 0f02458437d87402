//! An OpenAI chat request as a Messages API request.

use crate::openai::{ChatMessage, ChatRequest, Role};
use crate::provider::{Call, ProviderError};
use serde_json::{Map, Value, json};

/// Anthropic requires `max_tokens`; used when the client set none.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// The tool a JSON-schema `response_format` becomes: Anthropic answers it
/// with a `tool_use` whose input is the JSON, which Sluice returns as text.
pub const STRUCTURED_OUTPUT_TOOL: &str = "structured_output";

/// Thinking budgets for OpenAI's `reasoning_effort`.
fn thinking_budget(effort: &str) -> Option<u32> {
    match effort {
        "low" => Some(1024),
        "medium" => Some(4096),
        "high" => Some(16384),
        _ => None, // "minimal", "none"
    }
}

/// The thinking budget a chat request asks Anthropic for: its own `thinking`
/// (sent on the OpenAI route), else its `reasoning_effort`'s.
fn requested_budget(request: &ChatRequest) -> Option<u32> {
    let own = request
        .field("thinking")
        .filter(|t| t["type"] == "enabled")
        .and_then(|t| t["budget_tokens"].as_u64())
        .map(|b| u32::try_from(b).unwrap_or(u32::MAX));
    own.or_else(|| {
        request
            .field("reasoning_effort")
            .and_then(Value::as_str)
            .and_then(thinking_budget)
    })
}

/// The `max_tokens` a chat request capped at `cap` goes to Anthropic with:
/// the thinking budget must fit under it, so a cap at or under the budget is
/// raised by it. The most such a call can generate: budgets reserve it.
pub fn max_tokens_with_thinking(request: &ChatRequest, cap: u32) -> u32 {
    match requested_budget(request) {
        Some(budget) if cap <= budget => cap.saturating_add(budget),
        _ => cap,
    }
}

/// Fields of the Messages API a client may send on the OpenAI route; they
/// go to Anthropic unchanged.
const ANTHROPIC_FIELDS: [&str; 8] = [
    "top_k",
    "thinking",
    "metadata",
    "service_tier",
    "container",
    "mcp_servers",
    "context_management",
    "output_config",
];

/// OpenAI fields the translation reads; any other is dropped and noted.
const TRANSLATED: &[&str] = &[
    "n",
    "stream",
    "stream_options",
    "max_tokens",
    "max_completion_tokens",
    "reasoning_effort",
    "temperature",
    "top_p",
    "stop",
    "user",
    "tools",
    "tool_choice",
    "response_format",
    "parallel_tool_calls",
];

fn rejected(message: String) -> ProviderError {
    ProviderError::Rejected {
        status: 400,
        message,
    }
}

/// The Messages API body for an OpenAI chat request. What Anthropic has no
/// place for is dropped and noted on the call (`Call::adjust`); so is
/// thinking when Anthropic would refuse it (see [`fit_thinking`]).
pub fn translate_request(
    call: Call<'_>,
    request: &ChatRequest,
    stream: bool,
) -> Result<Value, ProviderError> {
    if request
        .field("n")
        .and_then(Value::as_u64)
        .is_some_and(|n| n > 1)
    {
        return Err(rejected(
            "Anthropic models return one choice; `n` must be 1.".into(),
        ));
    }
    let thinking = request
        .field("reasoning_effort")
        .and_then(Value::as_str)
        .and_then(thinking_budget);
    let mut system: Vec<Value> = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    for (i, message) in request.messages.iter().enumerate() {
        let (role, blocks) = match message.role {
            Role::System | Role::Developer => {
                system.extend(blocks(message, i)?);
                continue;
            }
            Role::User => ("user", blocks(message, i)?),
            Role::Assistant => ("assistant", assistant_blocks(message, i, &call)?),
            Role::Tool | Role::Function => ("user", vec![tool_result(message, i)?]),
        };
        // Parallel tool results go back in one user turn; Anthropic merges
        // consecutive turns of a role anyway, so merging keeps the meaning.
        match messages.last_mut() {
            Some(last) if last["role"] == role => {
                if let Some(content) = last["content"].as_array_mut() {
                    content.extend(blocks);
                }
            }
            _ => messages.push(json!({ "role": role, "content": blocks })),
        }
    }
    let mut body = json!({ "model": call.model, "messages": messages });
    if !system.is_empty() {
        body["system"] = system_value(system);
    }
    if stream {
        body["stream"] = json!(true);
    }
    if let Some(user) = request.field("user").and_then(Value::as_str) {
        body["metadata"] = json!({ "user_id": user });
    }
    for field in ANTHROPIC_FIELDS {
        if let Some(value) = request.field(field) {
            body[field] = value.clone();
        }
    }
    for (name, _) in request.extra.iter().filter(|(_, v)| !v.is_null()) {
        if !TRANSLATED.contains(&name.as_str()) && !ANTHROPIC_FIELDS.contains(&name.as_str()) {
            call.adjust(format!("{name}:dropped"));
        }
    }
    if let Some(top_p) = request.field("top_p") {
        body["top_p"] = top_p.clone();
    }
    match request.field("stop") {
        Some(Value::String(s)) => body["stop_sequences"] = json!([s]),
        Some(list @ Value::Array(_)) => body["stop_sequences"] = list.clone(),
        _ => {}
    }
    let mut tools: Vec<Value> = match request.field("tools") {
        Some(Value::Array(tools)) => tools.iter().map(tool).collect(),
        _ => Vec::new(),
    };
    let mut tool_choice = request.field("tool_choice").map(tool_choice).transpose()?;
    if let Some(budget) = thinking {
        body["thinking"] = json!({ "type": "enabled", "budget_tokens": budget });
    }
    let forced = |choice: &Option<Value>| {
        choice
            .as_ref()
            .is_some_and(|c| matches!(c["type"].as_str(), Some("any" | "tool")))
    };
    if body.get("thinking").is_some() && forced(&tool_choice) {
        // Anthropic refuses thinking with a forced tool choice; the client's
        // explicit tool choice wins over the reasoning it asked for.
        disable_thinking(&mut body, &call, "tool_choice forces a tool");
    }
    match request.field("response_format") {
        Some(format) if format["type"] == "json_schema" => {
            let schema = format
                .pointer("/json_schema/schema")
                .cloned()
                .unwrap_or_else(|| json!({ "type": "object" }));
            if body.get("thinking").is_some() {
                // With thinking, a forced tool is refused: Anthropic's own
                // structured outputs constrain the text answer instead.
                body["output_config"]["format"] =
                    json!({ "type": "json_schema", "schema": schema });
            } else {
                tools.push(json!({
                    "name": STRUCTURED_OUTPUT_TOOL,
                    "description": "Respond with JSON that matches this schema.",
                    "input_schema": schema,
                }));
                if tool_choice.is_none() && tools.len() == 1 {
                    tool_choice = Some(json!({ "type": "tool", "name": STRUCTURED_OUTPUT_TOOL }));
                }
            }
        }
        Some(format) if format["type"] == "json_object" => {
            let instruction = json!({ "type": "text", "text": "Respond with a single JSON object and nothing else." });
            let mut blocks = match body.get("system") {
                Some(Value::String(text)) => vec![json!({ "type": "text", "text": text })],
                Some(Value::Array(blocks)) => blocks.clone(),
                _ => Vec::new(),
            };
            blocks.push(instruction);
            body["system"] = system_value(blocks);
        }
        _ => {}
    }
    if request.field("parallel_tool_calls") == Some(&Value::Bool(false)) {
        let choice = tool_choice.get_or_insert_with(|| json!({ "type": "auto" }));
        if choice["type"] != "none" {
            choice["disable_parallel_tool_use"] = json!(true);
        }
    }
    if !tools.is_empty() {
        body["tools"] = Value::Array(tools);
    }
    if let Some(choice) = tool_choice {
        body["tool_choice"] = choice;
    }
    fit_thinking(&mut body, &call);
    let cap = request.max_output_tokens().unwrap_or(DEFAULT_MAX_TOKENS);
    match body.get("thinking") {
        Some(_) => {
            // The budget is part of max_tokens and must be below it.
            body["max_tokens"] = json!(max_tokens_with_thinking(request, cap));
            // Thinking takes no temperature.
            if request.temperature().is_some() {
                call.adjust("temperature:dropped (thinking)");
            }
        }
        None => {
            body["max_tokens"] = json!(cap);
            if let Some(t) = request.temperature() {
                // OpenAI's range is 0-2, Anthropic's 0-1.
                body["temperature"] = json!((t / 2.0).clamp(0.0, 1.0));
            }
            strip_thinking_blocks(&mut body, &call);
        }
    }
    Ok(body)
}

/// Without thinking, the thinking blocks Sluice kept for earlier turns
/// have no place in the request.
fn strip_thinking_blocks(body: &mut Value, call: &Call<'_>) {
    let mut stripped = false;
    for message in body["messages"].as_array_mut().into_iter().flatten() {
        if let Some(blocks) = message["content"].as_array_mut() {
            let before = blocks.len();
            blocks
                .retain(|b| !matches!(b["type"].as_str(), Some("thinking" | "redacted_thinking")));
            stripped |= blocks.len() < before;
        }
    }
    if stripped {
        call.adjust("thinking_blocks:dropped (thinking off)");
    }
}

/// Turns thinking off for this request, saying why.
fn disable_thinking(body: &mut Value, call: &Call<'_>, why: &str) {
    if let Some(object) = body.as_object_mut()
        && object.remove("thinking").is_some()
    {
        call.adjust(format!("thinking:disabled ({why})"));
    }
}

/// Makes a request with thinking on one Anthropic accepts. Anthropic's rules:
/// every thinking block carries the signature Anthropic gave it, and while a
/// tool loop is under way (the last user turn answers the last assistant
/// turn's `tool_use`) that assistant turn starts with its thinking. Unsigned
/// blocks (reasoning another provider produced, returned by Sluice as
/// thinking) are dropped; a tool loop whose thinking was not kept (the
/// client did not send it back and Sluice did not keep it, or another
/// provider served that step) gets no thinking for this request, as
/// Anthropic documents for a loop that did not start with thinking.
/// Used for native Messages bodies (after a fallback from another
/// provider) and translated chat requests alike.
pub fn fit_thinking(body: &mut Value, call: &Call<'_>) {
    let thinking_on = body
        .get("thinking")
        .is_some_and(|t| matches!(t["type"].as_str(), Some("enabled" | "adaptive")));
    let Some(messages) = body.get_mut("messages").and_then(Value::as_array_mut) else {
        return;
    };
    let mut unsigned = false;
    for message in messages.iter_mut().filter(|m| m["role"] == "assistant") {
        if let Some(blocks) = message["content"].as_array_mut() {
            blocks.retain(|b| {
                let keep = b["type"] != "thinking"
                    || b["signature"].as_str().is_some_and(|s| !s.is_empty());
                unsigned |= !keep;
                keep
            });
        }
    }
    if unsigned {
        call.adjust("messages.thinking:dropped (unsigned)");
    }
    if !thinking_on {
        return;
    }
    let last_assistant = messages.iter().rposition(|m| m["role"] == "assistant");
    let in_tool_loop = last_assistant.is_some_and(|i| {
        let uses_tools = messages[i]["content"]
            .as_array()
            .is_some_and(|blocks| blocks.iter().any(|b| b["type"] == "tool_use"));
        let answered = messages.get(i + 1).is_some_and(|next| {
            next["content"]
                .as_array()
                .is_some_and(|blocks| blocks.iter().any(|b| b["type"] == "tool_result"))
        });
        uses_tools && answered
    });
    let starts_with_thinking = last_assistant.is_some_and(|i| {
        matches!(
            messages[i]["content"][0]["type"].as_str(),
            Some("thinking" | "redacted_thinking")
        )
    });
    if in_tool_loop && !starts_with_thinking {
        disable_thinking(
            body,
            call,
            "the tool loop's last assistant turn has no thinking block",
        );
    }
}

/// `system` as a string when it is plain text, else as blocks (which keeps
/// `cache_control`).
fn system_value(blocks: Vec<Value>) -> Value {
    let plain = blocks
        .iter()
        .all(|b| b["type"] == "text" && b.as_object().is_some_and(|o| o.len() == 2));
    if plain {
        let texts: Vec<&str> = blocks.iter().filter_map(|b| b["text"].as_str()).collect();
        json!(texts.join("\n\n"))
    } else {
        Value::Array(blocks)
    }
}

/// A message's content as Anthropic blocks. A message-level
/// `cache_control` goes on its last block.
fn blocks(message: &ChatMessage, index: usize) -> Result<Vec<Value>, ProviderError> {
    let mut blocks = match message.content() {
        None => Vec::new(),
        Some(Value::String(text)) if text.is_empty() => Vec::new(),
        Some(Value::String(text)) => vec![json!({ "type": "text", "text": text })],
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, part)| content_block(part, index, j))
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(rejected(format!(
                "`messages[{index}].content` must be a string or a list of parts, got {other}."
            )));
        }
    };
    if let (Some(cache), Some(last)) = (message.extra.get("cache_control"), blocks.last_mut()) {
        last["cache_control"] = cache.clone();
    }
    Ok(blocks)
}

/// One OpenAI content part as an Anthropic block. Parts Anthropic names
/// itself (`image` with a `source`, `document`, ...) pass unchanged.
fn content_block(part: &Value, index: usize, j: usize) -> Result<Value, ProviderError> {
    let mut block = match part["type"].as_str() {
        Some("text") => json!({ "type": "text", "text": part["text"] }),
        Some("image_url") => {
            let url = part
                .pointer("/image_url/url")
                .or_else(|| part.get("image_url"))
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    rejected(format!(
                        "`messages[{index}].content[{j}].image_url.url` is missing."
                    ))
                })?;
            json!({ "type": "image", "source": media_source(url, index, j)? })
        }
        Some("file") => {
            let data = part
                .pointer("/file/file_data")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    rejected(format!(
                        "`messages[{index}].content[{j}].file.file_data` is required for Anthropic models."
                    ))
                })?;
            json!({ "type": "document", "source": media_source(data, index, j)? })
        }
        _ => return Ok(part.clone()),
    };
    if let Some(cache) = part.get("cache_control") {
        block["cache_control"] = cache.clone();
    }
    Ok(block)
}

/// A data URL as a base64 source, any other URL as a url source.
fn media_source(url: &str, index: usize, j: usize) -> Result<Value, ProviderError> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (media_type, data) = rest
            .split_once(";base64,")
            .ok_or_else(|| {
                rejected(format!(
                    "`messages[{index}].content[{j}]`: a data URL must be base64 (`data:<type>;base64,...`)."
                ))
            })?;
        return Ok(json!({ "type": "base64", "media_type": media_type, "data": data }));
    }
    Ok(json!({ "type": "url", "url": url }))
}

/// An assistant turn: its thinking blocks (as Sluice returned them), text,
/// then one `tool_use` per tool call.
fn assistant_blocks(
    message: &ChatMessage,
    index: usize,
    upstream: &Call<'_>,
) -> Result<Vec<Value>, ProviderError> {
    let mut out: Vec<Value> = match message.extra.get("thinking_blocks") {
        Some(Value::Array(thinking)) => thinking.clone(),
        _ => Vec::new(),
    };
    if out.is_empty()
        && message
            .extra
            .get("reasoning_content")
            .and_then(Value::as_str)
            .is_some_and(|r| !r.is_empty())
    {
        // Reasoning text without Anthropic's signed blocks cannot be sent back.
        upstream.adjust("messages.reasoning_content:dropped");
    }
    out.extend(blocks(message, index)?);
    for (j, call) in message.tool_calls().iter().enumerate() {
        let arguments = call
            .pointer("/function/arguments")
            .and_then(Value::as_str)
            .unwrap_or("{}");
        let input: Value = if arguments.trim().is_empty() {
            json!({})
        } else {
            serde_json::from_str(arguments).map_err(|e| {
                rejected(format!(
                    "`messages[{index}].tool_calls[{j}].function.arguments` is not JSON: {e}"
                ))
            })?
        };
        let mut block = json!({
            "type": "tool_use", "id": call["id"], "name": call.pointer("/function/name"), "input": input,
        });
        if let Some(cache) = call.get("cache_control") {
            block["cache_control"] = cache.clone();
        }
        out.push(block);
    }
    Ok(out)
}

/// A `tool` message as a `tool_result` block. OpenAI has no error flag;
/// Sluice reads `is_error` on the tool message when a client sends it.
fn tool_result(message: &ChatMessage, index: usize) -> Result<Value, ProviderError> {
    let id = message
        .extra
        .get("tool_call_id")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            rejected(format!(
                "`messages[{index}].tool_call_id` is required for a tool result."
            ))
        })?;
    let content = match message.content() {
        Some(Value::Array(_)) => Value::Array(blocks(message, index)?),
        other => json!(crate::openai::content_text(other)),
    };
    let mut block = json!({ "type": "tool_result", "tool_use_id": id, "content": content });
    if let Some(is_error) = message.extra.get("is_error") {
        block["is_error"] = is_error.clone();
    }
    if let Some(cache) = message.extra.get("cache_control") {
        block["cache_control"] = cache.clone();
    }
    Ok(block)
}

/// An OpenAI function tool as an Anthropic tool; Anthropic's own tool types
/// (a `type` other than `function`, e.g. `web_search_20250305`) pass unchanged.
fn tool(tool: &Value) -> Value {
    if tool["type"] != "function" {
        return tool.clone();
    }
    let function = &tool["function"];
    let mut out = Map::new();
    out.insert("name".into(), function["name"].clone());
    if let Some(description) = function.get("description") {
        out.insert("description".into(), description.clone());
    }
    out.insert(
        "input_schema".into(),
        function
            .get("parameters")
            .cloned()
            .unwrap_or_else(|| json!({ "type": "object", "properties": {} })),
    );
    if let Some(cache) = tool.get("cache_control") {
        out.insert("cache_control".into(), cache.clone());
    }
    Value::Object(out)
}

/// Every OpenAI `tool_choice` form as Anthropic's.
fn tool_choice(choice: &Value) -> Result<Value, ProviderError> {
    Ok(match choice {
        Value::String(s) if s == "auto" => json!({ "type": "auto" }),
        Value::String(s) if s == "none" => json!({ "type": "none" }),
        Value::String(s) if s == "required" => json!({ "type": "any" }),
        Value::Object(o) if o.get("type") == Some(&json!("function")) => {
            let name = choice
                .pointer("/function/name")
                .or_else(|| o.get("name"))
                .cloned()
                .ok_or_else(|| rejected("`tool_choice.function.name` is required.".into()))?;
            json!({ "type": "tool", "name": name })
        }
        // Anthropic's own forms (`{"type": "any"}`, ...) pass unchanged.
        Value::Object(_) => choice.clone(),
        other => return Err(rejected(format!("`tool_choice` {other} is not supported."))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translate(request: Value) -> Value {
        translate_noting(request).0
    }

    /// The body and what the translation noted.
    fn translate_noting(request: Value) -> (Value, Vec<String>) {
        let request: ChatRequest = serde_json::from_value(request).unwrap();
        let adjusted = crate::provider::Adjustments::default();
        let call = Call {
            model: "claude-x",
            key: None,
            beta: None,
            limits: None,
            adjusted: Some(&adjusted),
        };
        let body = translate_request(call, &request, false).unwrap();
        (body, adjusted.take())
    }

    #[test]
    fn translates_roles_and_limits() {
        let body = translate(json!({
            "model": "claude", "temperature": 1.0, "stop": "END",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": [{"type": "text", "text": "again"}]}
            ]
        }));
        assert_eq!(body["system"], "be brief");
        assert_eq!(body["model"], "claude-x");
        assert_eq!(body["max_tokens"], DEFAULT_MAX_TOKENS);
        assert_eq!(body["temperature"], 0.5);
        assert_eq!(body["stop_sequences"], json!(["END"]));
        assert_eq!(body["messages"].as_array().unwrap().len(), 3);
        assert_eq!(body["messages"][2]["content"][0]["text"], "again");
    }

    #[test]
    fn translates_a_tool_round_trip_with_images_and_cache_control() {
        let body = translate(json!({
            "model": "claude", "tool_choice": "required", "parallel_tool_calls": false,
            "tools": [{"type": "function", "function": {"name": "weather", "description": "d",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
                "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "system", "content": [{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}]},
                {"role": "user", "content": [
                    {"type": "text", "text": "what is this"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "c2", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Rome\"}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
                {"role": "tool", "tool_call_id": "c2", "content": "failed", "is_error": true}
            ]
        }));
        assert_eq!(body["system"][0]["cache_control"]["type"], "ephemeral");
        assert_eq!(
            body["tools"][0]["input_schema"]["properties"]["city"]["type"],
            "string"
        );
        assert_eq!(body["tools"][0]["cache_control"]["type"], "ephemeral");
        assert_eq!(
            body["tool_choice"],
            json!({"type": "any", "disable_parallel_tool_use": true})
        );
        let user = &body["messages"][0]["content"];
        assert_eq!(
            user[1]["source"],
            json!({"type": "base64", "media_type": "image/png", "data": "AAAA"})
        );
        assert_eq!(
            user[2]["source"],
            json!({"type": "url", "url": "https://example.com/a.png"})
        );
        let assistant = &body["messages"][1]["content"];
        assert_eq!(assistant[0]["type"], "tool_use");
        assert_eq!(assistant[1]["input"]["city"], "Rome");
        let results = &body["messages"][2];
        assert_eq!(results["role"], "user");
        assert_eq!(results["content"][0]["tool_use_id"], "c1");
        assert_eq!(results["content"][1]["is_error"], true);
        assert_eq!(body["messages"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn structured_output_with_reasoning_uses_anthropics_structured_outputs() {
        let (body, adjusted) = translate_noting(json!({
            "model": "claude", "reasoning_effort": "low", "max_tokens": 500, "temperature": 1.0,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
            "messages": [{"role": "user", "content": "hi"}]
        }));
        assert!(body.get("tools").is_none() && body.get("tool_choice").is_none());
        assert_eq!(
            body["output_config"]["format"],
            json!({"type": "json_schema", "schema": {"type": "object"}})
        );
        assert_eq!(body["thinking"]["budget_tokens"], 1024);
        assert_eq!(body["max_tokens"], 1524);
        assert!(body.get("temperature").is_none());
        assert_eq!(adjusted, ["temperature:dropped (thinking)"]);
        // Without reasoning, the structured output tool is forced.
        let body = translate(json!({
            "model": "claude", "max_tokens": 500,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
            "messages": [{"role": "user", "content": "hi"}]
        }));
        assert_eq!(body["tools"][0]["name"], STRUCTURED_OUTPUT_TOOL);
        assert_eq!(body["tool_choice"]["name"], STRUCTURED_OUTPUT_TOOL);
        assert!(body.get("thinking").is_none());
        for (choice, expected) in [
            (json!("auto"), json!({"type": "auto"})),
            (json!("none"), json!({"type": "none"})),
            (
                json!({"type": "function", "function": {"name": "f"}}),
                json!({"type": "tool", "name": "f"}),
            ),
        ] {
            assert_eq!(tool_choice(&choice).unwrap(), expected);
        }
    }

    #[test]
    fn a_forced_tool_choice_turns_thinking_off() {
        let (body, adjusted) = translate_noting(json!({
            "model": "claude", "reasoning_effort": "high", "tool_choice": "required", "max_tokens": 100,
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            "messages": [{"role": "user", "content": "hi"}]
        }));
        assert!(body.get("thinking").is_none());
        assert_eq!(body["tool_choice"]["type"], "any");
        assert_eq!(body["max_tokens"], 100);
        assert_eq!(adjusted, ["thinking:disabled (tool_choice forces a tool)"]);
    }

    fn tool_loop(assistant_extra: Value) -> Value {
        let mut assistant = json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "toolu_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]});
        if let (Some(a), Some(extra)) = (assistant.as_object_mut(), assistant_extra.as_object()) {
            a.extend(extra.clone());
        }
        json!({
            "model": "claude", "reasoning_effort": "medium", "max_tokens": 8000, "seed": 3,
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            "messages": [{"role": "user", "content": "go"}, assistant,
                {"role": "tool", "tool_call_id": "toolu_1", "content": "done"}]
        })
    }

    #[test]
    fn a_tool_loop_keeps_thinking_only_with_its_signed_blocks() {
        let signed = json!({"type": "thinking", "thinking": "plan", "signature": "sig"});
        let (body, adjusted) = translate_noting(tool_loop(json!({"thinking_blocks": [signed]})));
        assert_eq!(body["thinking"]["budget_tokens"], 4096);
        assert_eq!(body["messages"][1]["content"][0], signed);
        assert_eq!(body["messages"][1]["content"][1]["type"], "tool_use");
        assert_eq!(adjusted, ["seed:dropped"]);

        // Nothing kept: no thinking for this request, as Anthropic documents.
        let (body, adjusted) = translate_noting(tool_loop(json!({"reasoning_content": "plan"})));
        assert!(body.get("thinking").is_none());
        assert_eq!(body["max_tokens"], 8000);
        assert_eq!(
            adjusted,
            [
                "messages.reasoning_content:dropped",
                "seed:dropped",
                "thinking:disabled (the tool loop's last assistant turn has no thinking block)"
            ]
        );

        // Unsigned blocks (another provider's reasoning) are dropped first.
        let unsigned = json!({"type": "thinking", "thinking": "plan", "signature": ""});
        let (body, adjusted) = translate_noting(tool_loop(json!({"thinking_blocks": [unsigned]})));
        assert!(body.get("thinking").is_none());
        assert_eq!(body["messages"][1]["content"][0]["type"], "tool_use");
        assert!(adjusted.contains(&"messages.thinking:dropped (unsigned)".to_string()));
    }
}
