//! The response object: the request's settings echoed (as OpenAI echoes
//! them), the chat answer's message as output items, usage in the Responses
//! names. Chat answer fields with no Responses name (`system_fingerprint`,
//! a message's `audio`, ...) are kept on the response and on the message
//! item, so nothing the upstream sent is lost.

use super::request::{ResponsesRequest, item_id};
use crate::openai::{ChatResponse, Usage};
use serde_json::{Map, Value, json};

/// Chat answer fields that the response carries under its own names.
const TRANSLATED_ANSWER_FIELDS: &[&str] = &["id", "object", "created", "model", "choices", "usage"];
/// Message fields that become output items or parts.
const TRANSLATED_MESSAGE_FIELDS: &[&str] = &[
    "role",
    "content",
    "tool_calls",
    "refusal",
    "reasoning_content",
    "thinking_blocks",
    "annotations",
];

/// A fresh `resp_...` id.
pub fn response_id() -> String {
    item_id("resp")
}

/// The response as it is before any output: what `response.created` carries.
pub fn skeleton(id: &str, request: &ResponsesRequest, created_at: u64) -> Map<String, Value> {
    let echo = |name: &str, default: Value| request.field(name).cloned().unwrap_or(default);
    let reasoning = request.field("reasoning").cloned().unwrap_or_default();
    let object = json!({
        "id": id,
        "object": "response",
        "created_at": created_at,
        "status": "in_progress",
        "background": false,
        "completed_at": null,
        "error": null,
        "incomplete_details": null,
        "instructions": echo("instructions", Value::Null),
        "max_output_tokens": echo("max_output_tokens", Value::Null),
        "max_tool_calls": echo("max_tool_calls", Value::Null),
        "model": request.model,
        "output": [],
        "parallel_tool_calls": echo("parallel_tool_calls", Value::Bool(true)),
        "previous_response_id": request.previous_response_id,
        "prompt_cache_key": echo("prompt_cache_key", Value::Null),
        "reasoning": {
            "effort": reasoning.get("effort").cloned().unwrap_or_default(),
            "summary": reasoning.get("summary").cloned().unwrap_or_default(),
        },
        "safety_identifier": echo("safety_identifier", Value::Null),
        "service_tier": echo("service_tier", Value::Null),
        "store": request.store,
        "temperature": echo("temperature", json!(1.0)),
        "text": echo("text", json!({ "format": { "type": "text" } })),
        "tool_choice": echo("tool_choice", json!("auto")),
        "tools": echoed_tools(request),
        "top_logprobs": echo("top_logprobs", json!(0)),
        "top_p": echo("top_p", json!(1.0)),
        "truncation": echo("truncation", json!("disabled")),
        "metadata": echo("metadata", json!({})),
    });
    let mut object = match object {
        Value::Object(map) => map,
        _ => unreachable!("built as an object"),
    };
    // Optional and not nullable in OpenAI's schema: only when the client set it.
    if let Some(user) = request.field("user") {
        object.insert("user".into(), user.clone());
    }
    object
}

/// The request's tools as the response echoes them: a function tool with
/// the fields OpenAI's schema requires there (`strict` and `parameters`,
/// `null` when the client did not say).
fn echoed_tools(request: &ResponsesRequest) -> Value {
    let tools = request.field("tools").and_then(Value::as_array);
    let echoed: Vec<Value> = tools
        .into_iter()
        .flatten()
        .map(|tool| {
            let mut tool = tool.clone();
            if let Some(fields) = tool.as_object_mut()
                && fields.get("type").and_then(Value::as_str) == Some("function")
            {
                fields.entry("strict").or_insert(Value::Null);
                fields.entry("parameters").or_insert(Value::Null);
            }
            tool
        })
        .collect();
    Value::Array(echoed)
}

/// Usage in the Responses API's names.
pub fn usage_json(usage: Usage) -> Value {
    json!({
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {
            "cached_tokens": usage.cached_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
        },
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": { "reasoning_tokens": usage.reasoning_tokens },
        "total_tokens": usage.total_tokens,
    })
}

/// `status` and `incomplete_details` for a chat `finish_reason`.
fn status(finish_reason: Option<&str>) -> (&'static str, Value) {
    match finish_reason {
        Some("length") => ("incomplete", json!({ "reason": "max_output_tokens" })),
        Some("content_filter") => ("incomplete", json!({ "reason": "content_filter" })),
        _ => ("completed", Value::Null),
    }
}

/// The finished response: `skeleton` with its output, status and usage,
/// and the answer's untranslated top-level fields.
pub fn finished(
    mut response: Map<String, Value>,
    output: Vec<Value>,
    finish_reason: Option<&str>,
    usage: Usage,
    answer_extras: Map<String, Value>,
) -> Value {
    let (status, incomplete) = status(finish_reason);
    for (name, value) in answer_extras {
        // The upstream's `service_tier` is the one that was used.
        if name == "service_tier" || !response.contains_key(&name) {
            response.insert(name, value);
        }
    }
    response.insert("status".into(), status.into());
    response.insert("incomplete_details".into(), incomplete);
    response.insert(
        "completed_at".into(),
        (status == "completed").then(crate::clock::unix_now).into(),
    );
    response.insert("output".into(), Value::Array(output));
    response.insert("usage".into(), usage_json(usage));
    Value::Object(response)
}

/// Chat annotations (`{type, url_citation: {...}}`) in the Responses shape
/// (`{type, ...}` flat).
pub fn annotations(message: &Value) -> Vec<Value> {
    message["annotations"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            let kind = a["type"].as_str().unwrap_or_default();
            let mut flat = a[kind].as_object().cloned().unwrap_or_default();
            flat.insert("type".into(), kind.into());
            Value::Object(flat)
        })
        .collect()
}

/// A reasoning item: the summary text, and Anthropic's thinking blocks (which
/// an Anthropic upstream needs back on the next turn) in `encrypted_content`.
pub fn reasoning_item(id: &str, text: &str, blocks: Option<&Value>, status: &str) -> Value {
    let mut item = json!({
        "id": id, "type": "reasoning", "status": status,
        "summary": [{ "type": "summary_text", "text": text }],
    });
    if let Some(blocks) = blocks.filter(|b| b.as_array().is_some_and(|a| !a.is_empty())) {
        item["encrypted_content"] = Value::String(blocks.to_string());
    }
    item
}

pub fn function_call_item(id: &str, call: &Value, status: &str) -> Value {
    json!({
        "id": id, "type": "function_call", "status": status,
        "call_id": call["id"], "name": call["function"]["name"],
        "arguments": call["function"]["arguments"].as_str().unwrap_or_default(),
    })
}

/// The output items of a chat answer's first choice: reasoning, the message
/// (text and refusal), then one function call per tool call.
pub fn output_items(answer: &ChatResponse) -> Vec<Value> {
    let message = answer.message().cloned().unwrap_or_default();
    let choice = answer
        .0
        .get("choices")
        .and_then(|c| c.get(0))
        .cloned()
        .unwrap_or_default();
    let (status, _) = status(answer.finish_reason());
    let item_status = if status == "completed" {
        "completed"
    } else {
        "incomplete"
    };
    let mut output = Vec::new();
    if let Some(text) = message["reasoning_content"].as_str() {
        output.push(reasoning_item(
            &item_id("rs"),
            text,
            message.get("thinking_blocks"),
            item_status,
        ));
    }
    let calls = message["tool_calls"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let text = crate::openai::content_text(message.get("content"));
    let mut content = Vec::new();
    if !text.is_empty() || (calls.is_empty() && message["refusal"].is_null()) {
        let logprobs = choice["logprobs"]["content"].clone();
        content.push(json!({
            "type": "output_text", "text": text, "annotations": annotations(&message),
            "logprobs": if logprobs.is_array() { logprobs } else { json!([]) },
        }));
    }
    if let Some(refusal) = message["refusal"].as_str() {
        content.push(json!({ "type": "refusal", "refusal": refusal }));
    }
    if !content.is_empty() {
        let mut item = json!({
            "id": item_id("msg"), "type": "message", "status": item_status,
            "role": "assistant", "content": content,
        });
        if let (Some(item), Some(message)) = (item.as_object_mut(), message.as_object()) {
            for (name, value) in message {
                if !TRANSLATED_MESSAGE_FIELDS.contains(&name.as_str()) {
                    item.insert(name.clone(), value.clone());
                }
            }
        }
        output.push(item);
    }
    for call in &calls {
        output.push(function_call_item(&item_id("fc"), call, item_status));
    }
    output
}

/// A chat answer's top-level fields the response has no name for.
pub fn answer_extras(answer: &Map<String, Value>) -> Map<String, Value> {
    answer
        .iter()
        .filter(|(name, _)| !TRANSLATED_ANSWER_FIELDS.contains(&name.as_str()))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_call_answer_is_a_message_free_list_of_function_calls() {
        let answer = ChatResponse(
            json!({"id": "c", "object": "chat.completion", "created": 1, "model": "u",
                "system_fingerprint": "fp_1",
                "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                    "role": "assistant", "content": null, "reasoning_content": "hmm",
                    "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "w", "arguments": "{}"}}]}}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2}})
            .as_object()
            .unwrap()
            .clone(),
        );
        let output = output_items(&answer);
        assert_eq!(output.len(), 2, "{output:?}");
        assert_eq!(output[0]["type"], "reasoning");
        assert_eq!(output[0]["summary"][0]["text"], "hmm");
        assert_eq!(output[1]["type"], "function_call");
        assert_eq!(output[1]["call_id"], "call_1");
        let request = ResponsesRequest::parse(br#"{"model":"alias","input":"x"}"#).unwrap();
        let done = finished(
            skeleton("resp_1", &request, 5),
            output,
            answer.finish_reason(),
            answer.usage().unwrap(),
            answer_extras(&answer.0),
        );
        assert_eq!(done["status"], "completed");
        assert_eq!(done["model"], "alias");
        assert_eq!(done["system_fingerprint"], "fp_1");
        assert_eq!(done["usage"]["input_tokens"], 3);
        assert_eq!(done["usage"]["total_tokens"], 5);
    }

    #[test]
    fn a_cut_off_answer_is_incomplete_and_message_fields_are_kept() {
        let answer = ChatResponse(
            json!({"choices": [{"finish_reason": "length", "logprobs": {"content": [{"token": "a", "logprob": -0.1}]},
                "message": {"role": "assistant", "content": "par", "audio": {"id": "a1"},
                "annotations": [{"type": "url_citation", "url_citation": {"url": "https://x", "title": "X", "start_index": 0, "end_index": 1}}]}}]})
            .as_object()
            .unwrap()
            .clone(),
        );
        let output = output_items(&answer);
        assert_eq!(output[0]["status"], "incomplete");
        assert_eq!(output[0]["audio"]["id"], "a1");
        assert_eq!(output[0]["content"][0]["logprobs"][0]["token"], "a");
        assert_eq!(
            output[0]["content"][0]["annotations"][0]["url"],
            "https://x"
        );
        let (status, details) = status(answer.finish_reason());
        assert_eq!(
            (status, details["reason"].as_str()),
            ("incomplete", Some("max_output_tokens"))
        );
    }
}
