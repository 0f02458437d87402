//! What the real APIs refuse, as their documentation says, so a gateway
//! that sends something they would refuse fails here too instead of only in
//! production. Each check returns the refusal's message (a 400 in the API's
//! own error shape, see `refusal`).

use serde_json::Value;

/// The signature this upstream gives a thinking block (Anthropic's are
/// opaque; what matters is that a changed or made-up one is refused).
pub fn signature(thinking: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    "sluice-test-upstream".hash(&mut hasher);
    thinking.hash(&mut hasher);
    format!("sig-{:016x}", hasher.finish())
}

/// OpenAI's reasoning models (o-series, gpt-5 and, here, any `*reasoner*`).
pub fn is_openai_reasoning_model(model: &str) -> bool {
    model.contains("reasoner")
        || model.starts_with("gpt-5")
        || ["o1", "o3", "o4"].iter().any(|p| model.starts_with(p))
}

/// Properties OpenAI's chat API takes on each message role (an assistant
/// message also as its answers carry it: the SDKs' documented way to
/// continue is to send the answer's message back).
fn openai_message_fields(role: &str) -> &'static [&'static str] {
    match role {
        "assistant" => &[
            "role",
            "content",
            "refusal",
            "name",
            "audio",
            "tool_calls",
            "function_call",
            "annotations",
        ],
        "tool" => &["role", "content", "tool_call_id"],
        "function" => &["role", "content", "name"],
        _ => &["role", "content", "name"],
    }
}

/// `POST /v1/chat/completions`, as OpenAI validates it.
pub fn openai_chat(request: &Value) -> Result<(), String> {
    let model = request["model"].as_str().unwrap_or_default();
    if is_openai_reasoning_model(model) && request.get("max_tokens").is_some_and(|v| !v.is_null()) {
        return Err(
            "Unsupported parameter: 'max_tokens' is not supported with this model. \
                    Use 'max_completion_tokens' instead."
                .into(),
        );
    }
    let messages = request["messages"]
        .as_array()
        .ok_or("'messages' is a required property")?;
    let mut open_calls: Vec<String> = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let role = message["role"].as_str().unwrap_or_default();
        if let Some(object) = message.as_object() {
            let allowed = openai_message_fields(role);
            if let Some(extra) = object.keys().find(|k| !allowed.contains(&k.as_str())) {
                return Err(format!(
                    "Additional properties are not allowed ('{extra}' was unexpected) - 'messages.{i}'"
                ));
            }
        }
        if role == "tool" {
            let id = message["tool_call_id"].as_str().unwrap_or_default();
            if !open_calls.iter().any(|c| c == id) {
                return Err(format!(
                    "Invalid parameter: messages with role 'tool' must be a response to a \
                     preceeding message with 'tool_calls' (messages[{i}], tool_call_id {id})."
                ));
            }
            open_calls.retain(|c| c != id);
            if let Some(parts) = message["content"].as_array()
                && let Some(j) = parts.iter().position(|p| p["type"] != "text")
            {
                return Err(format!(
                    "Invalid 'messages[{i}].content[{j}].type': a tool message's content parts \
                     must be text; image parts are only allowed for messages with role 'user'."
                ));
            }
            continue;
        }
        if !open_calls.is_empty() {
            return Err(format!(
                "An assistant message with 'tool_calls' must be followed by tool messages \
                 responding to each 'tool_call_id'. The following tool_call_ids did not have \
                 response messages: {}",
                open_calls.join(", ")
            ));
        }
        if role == "assistant" {
            open_calls = message["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["id"].as_str().map(str::to_string))
                .collect();
        }
    }
    Ok(())
}

fn blocks(message: &Value) -> &[Value] {
    message["content"].as_array().map_or(&[], Vec::as_slice)
}

/// `POST /v1/messages`, as Anthropic validates it.
pub fn anthropic_messages(request: &Value) -> Result<(), String> {
    let max_tokens = request["max_tokens"]
        .as_u64()
        .ok_or("max_tokens: Field required")?;
    let messages = request["messages"]
        .as_array()
        .ok_or("messages: Field required")?;
    let thinking =
        request["thinking"]["type"] == "enabled" || request["thinking"]["type"] == "adaptive";
    if thinking {
        if let Some(budget) = request["thinking"]["budget_tokens"].as_u64() {
            if budget < 1024 {
                return Err(
                    "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
                        .into(),
                );
            }
            if budget >= max_tokens {
                return Err("`max_tokens` must be greater than `thinking.budget_tokens`.".into());
            }
        }
        if matches!(
            request["tool_choice"]["type"].as_str(),
            Some("any" | "tool")
        ) {
            return Err("Thinking may not be enabled when tool_choice forces tool use.".into());
        }
        if request["temperature"].as_f64().is_some_and(|t| t != 1.0) {
            return Err("`temperature` may only be set to 1 when thinking is enabled.".into());
        }
        if request.get("top_k").is_some_and(|v| !v.is_null()) {
            return Err("`top_k` is not supported when thinking is enabled.".into());
        }
    }
    for (i, message) in messages.iter().enumerate() {
        for (j, block) in blocks(message).iter().enumerate() {
            if block["type"] == "thinking" {
                let text = block["thinking"].as_str().unwrap_or_default();
                if block["signature"].as_str() != Some(signature(text).as_str()) {
                    return Err(format!(
                        "messages.{i}.content.{j}: Invalid `signature` in `thinking` block"
                    ));
                }
            }
        }
        // Every tool_use is answered by the next message's tool_results, and
        // every tool_result answers one.
        if message["role"] == "assistant" {
            let uses: Vec<&str> = blocks(message)
                .iter()
                .filter(|b| b["type"] == "tool_use")
                .filter_map(|b| b["id"].as_str())
                .collect();
            let results: Vec<&str> = messages
                .get(i + 1)
                .map(blocks)
                .unwrap_or_default()
                .iter()
                .filter(|b| b["type"] == "tool_result")
                .filter_map(|b| b["tool_use_id"].as_str())
                .collect();
            if let Some(missing) = uses.iter().find(|u| !results.contains(u))
                && i + 1 < messages.len()
            {
                {
                    return Err(format!(
                        "messages.{}: `tool_use` ids were found without `tool_result` blocks \
                         immediately after: {missing}. Each `tool_use` block must have a \
                         corresponding `tool_result` block in the next message.",
                        i + 1
                    ));
                }
            }
            if let Some(extra) = results.iter().find(|r| !uses.contains(r)) {
                return Err(format!(
                    "messages.{}.content: unexpected `tool_use_id` found in `tool_result` \
                     blocks: {extra}. Each `tool_result` block must have a corresponding \
                     `tool_use` block in the previous message.",
                    i + 1
                ));
            }
        }
    }
    if thinking {
        // The tool loop under way must start with the thinking that began it.
        if let Some(last) = messages.iter().rposition(|m| m["role"] == "assistant") {
            let in_loop = blocks(&messages[last])
                .iter()
                .any(|b| b["type"] == "tool_use")
                && messages
                    .get(last + 1)
                    .is_some_and(|next| blocks(next).iter().any(|b| b["type"] == "tool_result"));
            let first = blocks(&messages[last])
                .first()
                .map(|b| b["type"].as_str().unwrap_or(""));
            if in_loop && !matches!(first, Some("thinking" | "redacted_thinking")) {
                return Err(format!(
                    "messages.{last}.content.0.type: Expected `thinking` or `redacted_thinking`, \
                     but found `{}`. When `thinking` is enabled, a final `assistant` message \
                     must start with a thinking block (preceeding the lastmost set of \
                     `tool_use` and `tool_result` blocks). We recommend you include thinking \
                     blocks from previous turns. To avoid this requirement, disable `thinking`.",
                    first.unwrap_or("nothing")
                ));
            }
        }
    }
    Ok(())
}

/// What the Gemini API refuses in a `generateContent` request, by its API
/// reference: unknown fields (it takes the documented camelCase names and
/// answers "Invalid JSON payload received. Unknown name"), contents that are
/// empty or not `user`/`model`, parts that are empty or hold more or less
/// than one kind of data, function responses that do not answer the calls
/// of the model turn before them (one response per call), a function call
/// of a Gemini 3 model without its thought signature, and structured output
/// without the JSON MIME type.
pub fn gemini_generate(model: &str, request: &Value) -> Result<(), String> {
    const TOP: &[&str] = &[
        "contents",
        "systemInstruction",
        "tools",
        "toolConfig",
        "generationConfig",
        "safetySettings",
        "cachedContent",
        "labels",
    ];
    const CONFIG: &[&str] = &[
        "stopSequences",
        "responseMimeType",
        "responseSchema",
        "responseJsonSchema",
        "candidateCount",
        "maxOutputTokens",
        "temperature",
        "topP",
        "topK",
        "seed",
        "presencePenalty",
        "frequencyPenalty",
        "responseLogprobs",
        "logprobs",
        "thinkingConfig",
        "responseModalities",
        "mediaResolution",
        "speechConfig",
    ];
    const DATA: &[&str] = &[
        "text",
        "inlineData",
        "fileData",
        "functionCall",
        "functionResponse",
        "executableCode",
        "codeExecutionResult",
    ];
    let object = request
        .as_object()
        .ok_or("Invalid JSON payload received.")?;
    let unknown = |keys: &serde_json::Map<String, Value>, known: &[&str], at: &str| {
        keys.keys()
            .find(|k| !known.contains(&k.as_str()))
            .map_or(Ok(()), |k| {
                Err(format!(
                    "Invalid JSON payload received. Unknown name \"{k}\"{at}: Cannot find field."
                ))
            })
    };
    unknown(object, TOP, "")?;
    if let Some(config) = request.get("generationConfig").and_then(Value::as_object) {
        unknown(config, CONFIG, " at 'generation_config'")?;
        if (config.contains_key("responseJsonSchema") || config.contains_key("responseSchema"))
            && config.get("responseMimeType").and_then(Value::as_str) != Some("application/json")
        {
            return Err(
                "responseMimeType must be application/json when a response schema is set".into(),
            );
        }
        if let Some(budget) = config
            .get("thinkingConfig")
            .and_then(|t| t.get("thinkingBudget"))
            && !budget.is_i64()
        {
            return Err("thinking_budget must be an integer".into());
        }
    }
    let contents = request["contents"]
        .as_array()
        .filter(|c| !c.is_empty())
        .ok_or("* GenerateContentRequest.contents: contents is not specified")?;
    let part_ok = |part: &Value| -> Result<(), String> {
        let object = part.as_object().ok_or("a part must be an object")?;
        let data = object.keys().filter(|k| DATA.contains(&k.as_str())).count();
        if data != 1 {
            return Err(format!(
                "* GenerateContentRequest.contents.parts: a part must hold one kind of data, this one holds {data}: {part}"
            ));
        }
        unknown(
            object,
            &[DATA, &["thought", "thoughtSignature", "videoMetadata"]].concat(),
            " at 'contents.parts'",
        )
    };
    if let Some(system) = request.get("systemInstruction") {
        for part in system["parts"]
            .as_array()
            .ok_or("systemInstruction needs parts")?
        {
            part_ok(part)?;
        }
    }
    let mut pending_calls: Option<usize> = None;
    for (i, content) in contents.iter().enumerate() {
        let role = content["role"].as_str().unwrap_or("user");
        if role != "user" && role != "model" {
            return Err(format!(
                "Please use a valid role: user, model. (contents[{i}].role: {role})"
            ));
        }
        let parts = content["parts"].as_array().filter(|p| !p.is_empty())
            .ok_or_else(|| format!("* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty."))?;
        for part in parts {
            part_ok(part)?;
        }
        let calls = parts
            .iter()
            .filter(|p| p.get("functionCall").is_some())
            .count();
        let responses = parts
            .iter()
            .filter(|p| p.get("functionResponse").is_some())
            .count();
        if responses > 0 {
            if pending_calls != Some(responses) {
                return Err("Please ensure that the number of function response parts is equal to the number of function call parts of the function call turn.".into());
            }
            pending_calls = None;
        } else if role == "user" && pending_calls.is_some() {
            return Err("Please ensure that function call turn comes immediately after a user turn or after a function response turn.".into());
        }
        if calls > 0 {
            if role != "model" {
                return Err("function calls can only come from the model".into());
            }
            if model.starts_with("gemini-3")
                && parts
                    .iter()
                    .find(|p| p.get("functionCall").is_some())
                    .is_some_and(|p| p.get("thoughtSignature").is_none())
            {
                return Err(format!(
                    "Function call is missing a thought_signature in functionCall parts. (contents[{i}])"
                ));
            }
            pending_calls = Some(calls);
        }
    }
    for tool in request["tools"].as_array().into_iter().flatten() {
        for declaration in tool["functionDeclarations"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let name = declaration["name"].as_str().unwrap_or_default();
            let valid = !name.is_empty()
                && name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-:".contains(c));
            if !valid {
                return Err(format!(
                    "* GenerateContentRequest.tools[0].function_declarations: invalid name {name:?}"
                ));
            }
            if declaration.get("parameters").is_some()
                && declaration.get("parametersJsonSchema").is_some()
            {
                return Err("parameters and parametersJsonSchema cannot both be set".into());
            }
        }
    }
    Ok(())
}
