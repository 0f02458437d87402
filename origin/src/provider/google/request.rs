//! An OpenAI chat request as a Gemini `GenerateContentRequest`.
//!
//! System and developer messages become `systemInstruction`; user turns
//! `user` contents; assistant turns `model` contents whose tool calls are
//! `functionCall` parts; a run of `tool` messages one `user` content of
//! `functionResponse` parts, named and ordered by the calls they answer
//! (Gemini matches responses to calls by name and position, the client by
//! id). Tools are declared with their JSON Schema as given
//! (`parametersJsonSchema`), structured output with `responseJsonSchema`,
//! and `reasoning_effort` becomes a thinking budget. What Gemini has no
//! place for is noted on the call, never dropped silently.

use super::super::{Call, ProviderError};
use crate::openai::{ChatMessage, ChatRequest, Role};
use serde_json::{Map, Value, json};

/// Gemini 3 needs the signature its answer gave a function call back with
/// it; a call that comes back without one (a client that dropped it, a call
/// another provider made) carries the value Google documents for that case.
pub const SIGNATURE_PLACEHOLDER: &str = "skip_thought_signature_validator";

/// Chat fields with a Gemini counterpart, or that only steer the gateway.
const HANDLED: &[&str] = &[
    "model",
    "messages",
    "stream",
    "stream_options",
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "n",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "response_format",
    "tools",
    "tool_choice",
    "reasoning_effort",
    "logprobs",
    "top_logprobs",
    "google",
];

/// The Gemini request for `request` (the model is in the URL, not the body).
pub fn translate_request(call: Call<'_>, request: &ChatRequest) -> Result<Value, ProviderError> {
    let mut body = Map::new();
    let (system, contents) = contents(call, &request.messages)?;
    if !system.is_empty() {
        body.insert("systemInstruction".into(), json!({ "parts": system }));
    }
    body.insert("contents".into(), Value::Array(contents));
    if let Some(tools) = tools(request)? {
        body.insert("tools".into(), tools);
    }
    if let Some(choice) = request.field("tool_choice").and_then(tool_config) {
        body.insert("toolConfig".into(), choice);
    }
    let mut config = generation_config(call, request)?;
    // Gemini's own fields, for what OpenAI's format has no place for
    // (`safetySettings`, `cachedContent`, `labels`, `generationConfig.topK`,
    // ...): sent as given, over what the translation made.
    if let Some(Value::Object(native)) = request.field("google") {
        for (field, value) in native {
            match (field.as_str(), value) {
                ("generationConfig", Value::Object(extra)) => config.extend(extra.clone()),
                _ => {
                    body.insert(field.clone(), value.clone());
                }
            }
        }
    }
    if !config.is_empty() {
        body.insert("generationConfig".into(), Value::Object(config));
    }
    for field in request.extra.keys() {
        if !HANDLED.contains(&field.as_str()) {
            call.adjust(format!("{field}:dropped"));
        }
    }
    if request.field("parallel_tool_calls") == Some(&Value::Bool(false)) {
        call.adjust("parallel_tool_calls:dropped");
    }
    Ok(Value::Object(body))
}

fn rejected(message: impl Into<String>) -> ProviderError {
    ProviderError::Rejected {
        status: 400,
        message: message.into(),
    }
}

/// The system parts and the conversation's contents.
fn contents(
    call: Call<'_>,
    messages: &[ChatMessage],
) -> Result<(Vec<Value>, Vec<Value>), ProviderError> {
    let mut system = Vec::new();
    let mut contents: Vec<Value> = Vec::new();
    // Tool call id -> (function name, position in its assistant turn).
    let mut calls: std::collections::HashMap<String, (String, usize)> = Default::default();
    let mut responses: Vec<(usize, Value)> = Vec::new();
    let flush = |responses: &mut Vec<(usize, Value)>, contents: &mut Vec<Value>| {
        if !responses.is_empty() {
            responses.sort_by_key(|(position, _)| *position);
            let parts: Vec<Value> = responses.drain(..).map(|(_, part)| part).collect();
            contents.push(json!({ "role": "user", "parts": parts }));
        }
    };
    for message in messages {
        if message.role != Role::Tool {
            flush(&mut responses, &mut contents);
        }
        match message.role {
            Role::System | Role::Developer => {
                system.extend(parts(call, message.content())?);
            }
            Role::User => {
                let parts = parts(call, message.content())?;
                if !parts.is_empty() {
                    contents.push(json!({ "role": "user", "parts": parts }));
                }
            }
            Role::Assistant => {
                let mut parts = parts(call, message.content())?;
                for (position, tool_call) in message.tool_calls().iter().enumerate() {
                    let id = tool_call["id"].as_str().unwrap_or_default();
                    let name = tool_call
                        .pointer("/function/name")
                        .and_then(Value::as_str)
                        .ok_or_else(|| rejected("an assistant tool call has no function name"))?;
                    calls.insert(id.to_string(), (name.to_string(), position));
                    let arguments = tool_call
                        .pointer("/function/arguments")
                        .and_then(Value::as_str)
                        .unwrap_or("{}");
                    let args: Value = if arguments.trim().is_empty() {
                        json!({})
                    } else {
                        serde_json::from_str(arguments).map_err(|e| {
                            rejected(format!("tool call `{id}`: arguments are not JSON: {e}"))
                        })?
                    };
                    let signature = tool_call
                        .pointer("/extra_content/google/thought_signature")
                        .and_then(Value::as_str);
                    // Only the first call of a turn carries a signature.
                    let signature = match (signature, position) {
                        (Some(signature), _) => Some(signature),
                        (None, 0) => {
                            call.adjust("tool_calls.thought_signature:placeholder");
                            Some(SIGNATURE_PLACEHOLDER)
                        }
                        (None, _) => None,
                    };
                    let mut part = json!({ "functionCall": { "name": name, "args": args } });
                    if let Some(signature) = signature {
                        part["thoughtSignature"] = json!(signature);
                    }
                    parts.push(part);
                }
                if message.extra.contains_key("thinking_blocks") {
                    call.adjust("messages.thinking_blocks:dropped");
                }
                if !parts.is_empty() {
                    contents.push(json!({ "role": "model", "parts": parts }));
                }
            }
            Role::Tool => {
                let id = message
                    .extra
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let (name, position) = calls.get(id).cloned().ok_or_else(|| {
                    rejected(format!(
                        "tool message for `{id}`, which no earlier assistant message called"
                    ))
                })?;
                let mut part = json!({ "functionResponse": {
                    "name": name, "response": tool_response(message.content()),
                } });
                let media = media_parts(call, message.content())?;
                if !media.is_empty() {
                    part["functionResponse"]["parts"] = Value::Array(media);
                }
                responses.push((position, part));
            }
            Role::Function => {
                let name = message
                    .extra
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        rejected("a function message needs the name of the function it answers")
                    })?;
                let part = json!({ "functionResponse": {
                    "name": name, "response": tool_response(message.content()),
                } });
                responses.push((usize::MAX, part));
            }
        }
    }
    flush(&mut responses, &mut contents);
    Ok((system, contents))
}

/// A tool's result as the object Gemini takes: a JSON object as it is,
/// anything else under `result`.
fn tool_response(content: Option<&Value>) -> Value {
    let text = crate::openai::content_text(content);
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(object)) => Value::Object(object),
        _ => json!({ "result": text }),
    }
}

/// The non-text parts of a tool's result (a screenshot), which Gemini
/// takes inside the function response.
fn media_parts(call: Call<'_>, content: Option<&Value>) -> Result<Vec<Value>, ProviderError> {
    let Some(Value::Array(items)) = content else {
        return Ok(Vec::new());
    };
    let media: Vec<Value> = items
        .iter()
        .filter(|p| p["type"] != "text")
        .cloned()
        .collect();
    parts(call, Some(&Value::Array(media)))
}

/// A message's content as Gemini parts.
fn parts(call: Call<'_>, content: Option<&Value>) -> Result<Vec<Value>, ProviderError> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(text)) if text.is_empty() => Ok(Vec::new()),
        Some(Value::String(text)) => Ok(vec![json!({ "text": text })]),
        Some(Value::Array(items)) => {
            let mut parts = Vec::with_capacity(items.len());
            for item in items {
                if item.get("cache_control").is_some() {
                    call.adjust("cache_control:dropped");
                }
                match item["type"].as_str() {
                    Some("text") => {
                        let text = item["text"].as_str().unwrap_or_default();
                        if !text.is_empty() {
                            parts.push(json!({ "text": text }));
                        }
                    }
                    Some("image_url") => {
                        let url = item
                            .pointer("/image_url/url")
                            .and_then(Value::as_str)
                            .ok_or_else(|| rejected("an image_url part has no url"))?;
                        parts.push(media(url, None)?);
                    }
                    Some("input_audio") => {
                        let data = item.pointer("/input_audio/data").and_then(Value::as_str);
                        let format = item.pointer("/input_audio/format").and_then(Value::as_str);
                        let (Some(data), Some(format)) = (data, format) else {
                            return Err(rejected("an input_audio part needs data and format"));
                        };
                        parts.push(json!({ "inlineData": {
                            "mimeType": format!("audio/{format}"), "data": data } }));
                    }
                    Some("file") => match item.pointer("/file/file_data").and_then(Value::as_str) {
                        Some(data) => parts.push(media(data, Some("application/pdf"))?),
                        None => {
                            return Err(rejected(
                                "a file part needs file_data: Gemini cannot read OpenAI file ids",
                            ));
                        }
                    },
                    other => {
                        return Err(rejected(format!(
                            "content part type {} has no Gemini counterpart",
                            other.unwrap_or("(none)")
                        )));
                    }
                }
            }
            Ok(parts)
        }
        Some(other) => Err(rejected(format!(
            "content must be text or parts, not {other}"
        ))),
    }
}

/// A data URL as `inlineData`, any other URL as `fileData` (Gemini fetches
/// `gs://` and `https://` itself).
fn media(url: &str, default_type: Option<&str>) -> Result<Value, ProviderError> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest
            .split_once(',')
            .ok_or_else(|| rejected("a data URL has no comma"))?;
        let mime = meta
            .strip_suffix(";base64")
            .ok_or_else(|| rejected("a data URL must be base64 (data:<type>;base64,<data>)"))?;
        return Ok(json!({ "inlineData": { "mimeType": mime, "data": data } }));
    }
    // Base64 without a data URL (OpenAI's `file_data` also comes so).
    if !url.contains("://") {
        return Ok(json!({ "inlineData": {
            "mimeType": default_type.unwrap_or("application/octet-stream"), "data": url } }));
    }
    let lower = url.to_ascii_lowercase();
    let path = lower.split(['?', '#']).next().unwrap_or_default();
    let mime = [
        (".png", "image/png"),
        (".jpg", "image/jpeg"),
        (".jpeg", "image/jpeg"),
        (".webp", "image/webp"),
        (".gif", "image/gif"),
        (".heic", "image/heic"),
        (".pdf", "application/pdf"),
    ]
    .iter()
    .find(|(ext, _)| path.ends_with(ext))
    .map_or("image/jpeg", |(_, mime)| mime);
    Ok(json!({ "fileData": { "mimeType": mime, "fileUri": url } }))
}

/// Function declarations; their JSON Schema goes as written.
fn tools(request: &ChatRequest) -> Result<Option<Value>, ProviderError> {
    let Some(Value::Array(tools)) = request.field("tools") else {
        return Ok(None);
    };
    if tools.is_empty() {
        return Ok(None);
    }
    let mut declarations = Vec::with_capacity(tools.len());
    for tool in tools {
        if tool["type"] != "function" {
            return Err(rejected(format!(
                "tool type {} has no Gemini counterpart",
                tool["type"]
            )));
        }
        let function = &tool["function"];
        let name = function["name"]
            .as_str()
            .ok_or_else(|| rejected("a function tool has no name"))?;
        let mut declaration = json!({ "name": name });
        if let Some(description) = function.get("description").filter(|d| !d.is_null()) {
            declaration["description"] = description.clone();
        }
        if let Some(parameters) = function.get("parameters").filter(|p| !p.is_null()) {
            declaration["parametersJsonSchema"] = parameters.clone();
        }
        declarations.push(declaration);
    }
    Ok(Some(json!([{ "functionDeclarations": declarations }])))
}

/// OpenAI's `tool_choice` as Gemini's function-calling mode.
fn tool_config(choice: &Value) -> Option<Value> {
    let config = match choice {
        Value::String(mode) => match mode.as_str() {
            "none" => json!({ "mode": "NONE" }),
            "required" => json!({ "mode": "ANY" }),
            _ => json!({ "mode": "AUTO" }),
        },
        Value::Object(_) => {
            let name = choice.pointer("/function/name")?.as_str()?;
            json!({ "mode": "ANY", "allowedFunctionNames": [name] })
        }
        _ => return None,
    };
    Some(json!({ "functionCallingConfig": config }))
}

/// Sampling, limits, structured output and thinking.
fn generation_config(
    call: Call<'_>,
    request: &ChatRequest,
) -> Result<Map<String, Value>, ProviderError> {
    let mut config = Map::new();
    let mut copy = |from: &str, to: &str| {
        if let Some(value) = request.field(from).filter(|v| !v.is_null()) {
            config.insert(to.into(), value.clone());
        }
    };
    copy("temperature", "temperature");
    copy("top_p", "topP");
    copy("seed", "seed");
    copy("presence_penalty", "presencePenalty");
    copy("frequency_penalty", "frequencyPenalty");
    copy("n", "candidateCount");
    copy("top_logprobs", "logprobs");
    if request.field("logprobs") == Some(&Value::Bool(true)) {
        config.insert("responseLogprobs".into(), Value::Bool(true));
    }
    if let Some(cap) = request
        .field("max_completion_tokens")
        .or_else(|| request.field("max_tokens"))
        .filter(|v| !v.is_null())
    {
        config.insert("maxOutputTokens".into(), cap.clone());
    }
    match request.field("stop") {
        Some(Value::String(stop)) => {
            config.insert("stopSequences".into(), json!([stop]));
        }
        Some(Value::Array(stops)) => {
            config.insert("stopSequences".into(), Value::Array(stops.clone()));
        }
        _ => {}
    }
    if let Some(format) = request.field("response_format") {
        match format["type"].as_str() {
            Some("json_object") => {
                config.insert("responseMimeType".into(), json!("application/json"));
            }
            Some("json_schema") => {
                config.insert("responseMimeType".into(), json!("application/json"));
                let schema = format
                    .pointer("/json_schema/schema")
                    .ok_or_else(|| rejected("response_format.json_schema has no schema"))?;
                config.insert("responseJsonSchema".into(), schema.clone());
            }
            _ => {}
        }
    }
    if let Some(effort) = request.field("reasoning_effort").and_then(Value::as_str) {
        let budget = match effort {
            "none" | "minimal" => 0,
            "low" => 1024,
            "medium" => 8192,
            "high" | "xhigh" => 24576,
            other => {
                return Err(rejected(format!(
                    "reasoning_effort `{other}` is not one of none, minimal, low, medium, high"
                )));
            }
        };
        let mut thinking = json!({ "thinkingBudget": budget });
        if budget > 0 {
            thinking["includeThoughts"] = Value::Bool(true);
        }
        config.insert("thinkingConfig".into(), thinking);
        if effort == "xhigh" {
            call.adjust("reasoning_effort:xhigh_as_high");
        }
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::Adjustments;

    fn call(adjusted: &Adjustments) -> Call<'_> {
        Call {
            model: "gemini-2.5-flash",
            key: None,
            beta: None,
            limits: None,
            adjusted: Some(adjusted),
        }
    }

    #[test]
    fn a_tool_loop_with_an_image_becomes_gemini_contents() {
        let request: ChatRequest = serde_json::from_value(json!({
            "model": "alias", "max_tokens": 300, "temperature": 0.2, "stop": "END",
            "reasoning_effort": "low", "user": "u-1",
            "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}},
            "tools": [{"type": "function", "function": {"name": "lookup", "description": "d",
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "additionalProperties": false}}}],
            "tool_choice": {"type": "function", "function": {"name": "lookup"}},
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}}]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_a", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"a\"}"},
                     "extra_content": {"google": {"thought_signature": "sig-a"}}},
                    {"id": "call_b", "type": "function", "function": {"name": "other", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "call_b", "content": "plain text"},
                {"role": "tool", "tool_call_id": "call_a", "content": "{\"found\": 1}"},
                {"role": "user", "content": "and?"}
            ]
        }))
        .unwrap();
        let adjusted = Adjustments::default();
        let body = translate_request(call(&adjusted), &request).unwrap();
        assert_eq!(
            body["systemInstruction"],
            json!({"parts": [{"text": "be brief"}]})
        );
        let contents = body["contents"].as_array().unwrap();
        assert_eq!(contents.len(), 4);
        assert_eq!(
            contents[0]["parts"][1],
            json!({"inlineData": {"mimeType": "image/png", "data": "iVBO"}})
        );
        assert_eq!(contents[1]["role"], "model");
        assert_eq!(
            contents[1]["parts"][0],
            json!({"functionCall": {"name": "lookup", "args": {"q": "a"}}, "thoughtSignature": "sig-a"})
        );
        assert!(contents[1]["parts"][1].get("thoughtSignature").is_none());
        // Responses in the calls' order, whatever order the client sent them in.
        assert_eq!(contents[2]["role"], "user");
        assert_eq!(
            contents[2]["parts"][0]["functionResponse"],
            json!({"name": "lookup", "response": {"found": 1}})
        );
        assert_eq!(
            contents[2]["parts"][1]["functionResponse"],
            json!({"name": "other", "response": {"result": "plain text"}})
        );
        let tools = &body["tools"][0]["functionDeclarations"][0];
        assert_eq!(tools["parametersJsonSchema"]["additionalProperties"], false);
        assert_eq!(
            body["toolConfig"],
            json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["lookup"]}})
        );
        let config = &body["generationConfig"];
        assert_eq!(config["maxOutputTokens"], 300);
        assert_eq!(config["stopSequences"], json!(["END"]));
        assert_eq!(config["responseMimeType"], "application/json");
        assert_eq!(config["responseJsonSchema"], json!({"type": "object"}));
        assert_eq!(
            config["thinkingConfig"],
            json!({"thinkingBudget": 1024, "includeThoughts": true})
        );
        assert_eq!(adjusted.take(), ["user:dropped"]);
    }

    #[test]
    fn gemini_fields_under_google_pass_as_given() {
        let request: ChatRequest = serde_json::from_value(json!({
            "model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}],
            "google": {"safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
                       "cachedContent": "cachedContents/abc", "generationConfig": {"topK": 3}}
        }))
        .unwrap();
        let adjusted = Adjustments::default();
        let body = translate_request(call(&adjusted), &request).unwrap();
        assert_eq!(body["safetySettings"][0]["threshold"], "BLOCK_NONE");
        assert_eq!(body["cachedContent"], "cachedContents/abc");
        assert_eq!(
            body["generationConfig"],
            json!({"maxOutputTokens": 5, "topK": 3})
        );
        assert!(adjusted.take().is_empty());
    }

    #[test]
    fn refuses_what_gemini_cannot_take_with_a_400() {
        let adjusted = Adjustments::default();
        for messages in [
            json!([{"role": "tool", "tool_call_id": "nobody", "content": "x"}]),
            json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png,raw"}}]}]),
            json!([{"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
                "function": {"name": "f", "arguments": "{not json"}}]}]),
        ] {
            let request: ChatRequest =
                serde_json::from_value(json!({"model": "m", "messages": messages})).unwrap();
            let error = translate_request(call(&adjusted), &request).unwrap_err();
            assert!(
                matches!(error, ProviderError::Rejected { status: 400, .. }),
                "{error:?}"
            );
        }
    }

    #[test]
    fn a_call_without_its_signature_gets_the_documented_placeholder() {
        let request: ChatRequest = serde_json::from_value(json!({"model": "m", "messages": [
            {"role": "user", "content": "go"},
            {"role": "assistant", "tool_calls": [{"id": "toolu_1", "type": "function",
                "function": {"name": "f", "arguments": ""}}]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": [{"type": "text", "text": "shot"},
                {"type": "image_url", "image_url": {"url": "https://x.test/a.PNG?s=1"}}]}
        ]}))
        .unwrap();
        let adjusted = Adjustments::default();
        let body = translate_request(call(&adjusted), &request).unwrap();
        assert_eq!(
            body["contents"][1]["parts"][0]["thoughtSignature"],
            SIGNATURE_PLACEHOLDER
        );
        let response = &body["contents"][2]["parts"][0]["functionResponse"];
        assert_eq!(response["response"], json!({"result": "shot"}));
        assert_eq!(
            response["parts"][0],
            json!({"fileData": {"mimeType": "image/png", "fileUri": "https://x.test/a.PNG?s=1"}})
        );
        assert_eq!(
            adjusted.take(),
            ["tool_calls.thought_signature:placeholder"]
        );
    }
}
