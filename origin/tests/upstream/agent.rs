//! A scripted model, so real agent clients (Claude Code, the OpenAI Agents
//! SDK, the Vercel AI SDK, LangChain) can run whole tool loops against the
//! test upstream in either wire format.
//!
//! The script is in the conversation: each line of the instruction (the
//! last user message that is not tool results) of the form
//! `CALL <tool> <json arguments>` is one step, several calls on one line
//! joined by ` && ` run in parallel. Step k is answered on the request
//! after k tool rounds; once every step is done the model answers in text,
//! saying what the last tool results held (their text, and each image or
//! document with its media type and size, so a test sees what reached the
//! model). With thinking on (Anthropic) every answer starts with a signed
//! thinking block; a reasoning model (OpenAI) reports reasoning tokens. A
//! forced tool choice calls that tool; a JSON-schema output format answers
//! with JSON built from the schema.

use super::rules::signature;
use serde_json::{Map, Value, json};
use std::sync::atomic::{AtomicU64, Ordering};

/// One call the model makes.
#[derive(Debug, Clone)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub input: Value,
}

/// What the model answers.
#[derive(Debug, Clone, Default)]
pub struct Turn {
    pub thinking: Option<String>,
    pub text: Option<String>,
    pub calls: Vec<ToolCall>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

fn next_id(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!(
        "{prefix}{:x}{:04}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The text of a message's content (a string, or its text parts/blocks).
fn text_of(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// The steps of an instruction: each `CALL` line's calls.
fn steps(instruction: &str) -> Vec<Vec<(String, Value)>> {
    instruction
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            line.strip_prefix("CALL ")?;
            let calls: Vec<(String, Value)> = line
                .split(" && ")
                .filter_map(|call| {
                    let call = call.trim().strip_prefix("CALL ")?;
                    let (name, args) = call.split_once(' ').unwrap_or((call, "{}"));
                    Some((
                        name.to_string(),
                        serde_json::from_str(args).unwrap_or(json!({})),
                    ))
                })
                .collect();
            (!calls.is_empty()).then_some(calls)
        })
        .collect()
}

/// A JSON value that satisfies `schema` (enough of JSON Schema for tests).
pub fn sample(schema: &Value) -> Value {
    if let Some(first) = schema["enum"].as_array().and_then(|e| e.first()) {
        return first.clone();
    }
    if let Some(options) = schema["anyOf"].as_array().or(schema["oneOf"].as_array())
        && let Some(first) = options.first()
    {
        return sample(first);
    }
    let kind = match &schema["type"] {
        Value::Array(kinds) => kinds
            .iter()
            .find(|k| *k != "null")
            .cloned()
            .unwrap_or_default(),
        other => other.clone(),
    };
    match kind.as_str() {
        Some("string") => json!("sample"),
        Some("integer") => json!(1),
        Some("number") => json!(1.5),
        Some("boolean") => json!(true),
        Some("null") => Value::Null,
        Some("array") => json!([sample(&schema["items"])]),
        _ => {
            let mut out = Map::new();
            for (name, property) in schema["properties"].as_object().into_iter().flatten() {
                out.insert(name.clone(), sample(property));
            }
            Value::Object(out)
        }
    }
}

/// How an image or document part reads in the final answer:
/// `[media/type N bytes]` (the size of its base64 data or URL).
fn media(part: &Value) -> Option<String> {
    let (media, bytes) = match part["type"].as_str()? {
        "image_url" => {
            let url = part["image_url"]["url"].as_str().unwrap_or_default();
            let media = url
                .strip_prefix("data:")
                .and_then(|u| u.split(';').next())
                .unwrap_or("url");
            (media.to_string(), url.len())
        }
        "image" | "document" => (
            part["source"]["media_type"]
                .as_str()
                .unwrap_or("url")
                .to_string(),
            part["source"]["data"].as_str().map_or(0, str::len),
        ),
        "file" => (
            "file".to_string(),
            part["file"]["file_data"].as_str().map_or(0, str::len),
        ),
        _ => return None,
    };
    Some(format!("[{media} {bytes} bytes]"))
}

/// What the last tool results held, for the final answer: texts and media.
/// Each is an OpenAI message or an Anthropic `tool_result`: both hold `content`.
fn describe(results: &[Value]) -> String {
    let mut seen = Vec::new();
    for result in results {
        let content = &result["content"];
        let text = text_of(content);
        if !text.is_empty() {
            let short: String = text.chars().take(160).collect();
            seen.push(short.replace('\n', " "));
        }
        seen.extend(content.as_array().into_iter().flatten().filter_map(media));
    }
    seen.join(" | ")
}

fn tokens(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(4).max(1)
}

/// The turn for an OpenAI chat request.
pub fn openai_turn(request: &Value) -> Turn {
    let messages = request["messages"].as_array().cloned().unwrap_or_default();
    // A user message right after tool results belongs to them (the images
    // a gateway moved out of a tool message, a client's reminders).
    let instruction_at = (0..messages.len())
        .rev()
        .find(|&i| messages[i]["role"] == "user" && (i == 0 || messages[i - 1]["role"] != "tool"));
    let instruction = instruction_at.map_or(String::new(), |i| text_of(&messages[i]["content"]));
    let after = instruction_at.map_or(&messages[..], |i| &messages[i + 1..]);
    let done = after
        .iter()
        .filter(|m| m["role"] == "assistant" && m["tool_calls"].is_array())
        .count();
    let last_assistant = messages.iter().rposition(|m| m["role"] == "assistant");
    let results: Vec<Value> = last_assistant.map_or(Vec::new(), |i| messages[i + 1..].to_vec());
    let forced = request["tool_choice"]["function"]["name"]
        .as_str()
        .map(str::to_string)
        .or_else(|| {
            (request["tool_choice"] == "required")
                .then(|| {
                    request["tools"][0]["function"]["name"]
                        .as_str()
                        .map(str::to_string)
                })
                .flatten()
        });
    let schema_of = |name: &str| {
        request["tools"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["function"]["name"] == name)
            .map(|t| t["function"]["parameters"].clone())
            .unwrap_or(json!({}))
    };
    let mut turn = turn_for(&instruction, done, forced, &schema_of, &results, "call_");
    if turn.text.is_some() && request["response_format"]["type"] == "json_schema" {
        turn.text = Some(sample(&request["response_format"]["json_schema"]["schema"]).to_string());
    }
    turn.prompt_tokens = tokens(request["messages"].to_string().len());
    if super::rules::is_openai_reasoning_model(request["model"].as_str().unwrap_or_default()) {
        turn.thinking = Some(format!("Reasoning about step {done}."));
    }
    turn
}

/// The turn for an Anthropic Messages request.
pub fn anthropic_turn(request: &Value) -> Turn {
    let messages = request["messages"].as_array().cloned().unwrap_or_default();
    let is_results = |m: &Value| {
        m["content"]
            .as_array()
            .is_some_and(|b| b.iter().any(|b| b["type"] == "tool_result"))
    };
    let instruction_at = messages
        .iter()
        .rposition(|m| m["role"] == "user" && !is_results(m));
    let instruction = instruction_at.map_or(String::new(), |i| text_of(&messages[i]["content"]));
    let after = instruction_at.map_or(&messages[..], |i| &messages[i + 1..]);
    let done = after
        .iter()
        .filter(|m| {
            m["role"] == "assistant"
                && m["content"]
                    .as_array()
                    .is_some_and(|b| b.iter().any(|b| b["type"] == "tool_use"))
        })
        .count();
    let results: Vec<Value> = messages
        .last()
        .filter(|m| is_results(m))
        .and_then(|m| m["content"].as_array())
        .map(|b| {
            b.iter()
                .filter(|b| b["type"] == "tool_result")
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let forced = match request["tool_choice"]["type"].as_str() {
        Some("tool") => request["tool_choice"]["name"].as_str().map(str::to_string),
        Some("any") => request["tools"][0]["name"].as_str().map(str::to_string),
        _ => None,
    };
    let schema_of = |name: &str| {
        request["tools"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["name"] == name)
            .map(|t| t["input_schema"].clone())
            .unwrap_or(json!({}))
    };
    let mut turn = turn_for(&instruction, done, forced, &schema_of, &results, "toolu_");
    let format = request["output_config"]["format"]
        .as_object()
        .or(request["output_format"].as_object());
    if let (Some(format), true) = (format, turn.text.is_some()) {
        turn.text = Some(sample(&format["schema"]).to_string());
    }
    if matches!(
        request["thinking"]["type"].as_str(),
        Some("enabled" | "adaptive")
    ) {
        turn.thinking = Some(format!("Step {done}: deciding what to do next."));
    }
    turn.prompt_tokens =
        tokens(request["messages"].to_string().len() + request["system"].to_string().len());
    turn
}

fn turn_for(
    instruction: &str,
    done: usize,
    forced: Option<String>,
    schema_of: &dyn Fn(&str) -> Value,
    results: &[Value],
    id_prefix: &str,
) -> Turn {
    let steps = steps(instruction);
    let mut turn = Turn::default();
    if let Some(name) = forced {
        turn.calls.push(ToolCall {
            id: next_id(id_prefix),
            input: sample(&schema_of(&name)),
            name,
        });
    } else if let Some(step) = steps.get(done) {
        for (name, input) in step {
            turn.calls.push(ToolCall {
                id: next_id(id_prefix),
                name: name.clone(),
                input: input.clone(),
            });
        }
    } else if steps.is_empty() {
        turn.text = Some(super::REPLY.to_string());
    } else {
        turn.text = Some(format!(
            "Done after {done} tool rounds. Last results: {}",
            describe(results)
        ));
    }
    let generated = turn.text.as_deref().map_or(0, str::len)
        + turn
            .calls
            .iter()
            .map(|c| c.input.to_string().len() + c.name.len())
            .sum::<usize>();
    turn.completion_tokens = tokens(generated);
    turn
}

/// Splits text into stream deltas of a few words each.
fn pieces(text: &str) -> Vec<String> {
    let words: Vec<&str> = text.split_inclusive(' ').collect();
    words.chunks(3).map(|c| c.concat()).collect()
}

/// An OpenAI chat completion, whole or as chunks (SSE frames).
pub fn openai_answer(
    model: &str,
    turn: &Turn,
    stream: bool,
    include_usage: bool,
) -> Result<Value, Vec<String>> {
    let reasoning = turn.thinking.as_deref().map_or(0, |t| tokens(t.len()));
    let usage = json!({
        "prompt_tokens": turn.prompt_tokens,
        "completion_tokens": turn.completion_tokens + reasoning,
        "total_tokens": turn.prompt_tokens + turn.completion_tokens + reasoning,
        "completion_tokens_details": { "reasoning_tokens": reasoning },
    });
    let finish = if turn.calls.is_empty() {
        "stop"
    } else {
        "tool_calls"
    };
    let id = next_id("chatcmpl-agent");
    if !stream {
        let mut message = json!({ "role": "assistant", "content": turn.text, "refusal": null });
        if !turn.calls.is_empty() {
            message["tool_calls"] = turn
                .calls
                .iter()
                .map(|c| {
                    json!({ "id": c.id, "type": "function",
                    "function": { "name": c.name, "arguments": c.input.to_string() } })
                })
                .collect();
        }
        return Ok(json!({
            "id": id, "object": "chat.completion", "created": 1, "model": model,
            "choices": [{ "index": 0, "message": message, "logprobs": null, "finish_reason": finish }],
            "usage": usage,
        }));
    }
    let chunk = |delta: Value, finish: Option<&str>| {
        format!(
            "data: {}\n\n",
            json!({ "id": id, "object": "chat.completion.chunk", "created": 1, "model": model,
                    "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }] })
        )
    };
    let mut frames = vec![chunk(json!({ "role": "assistant", "content": "" }), None)];
    for piece in turn.text.as_deref().map(pieces).unwrap_or_default() {
        frames.push(chunk(json!({ "content": piece }), None));
    }
    for (index, call) in turn.calls.iter().enumerate() {
        frames.push(chunk(
            json!({ "tool_calls": [{ "index": index, "id": call.id, "type": "function",
                "function": { "name": call.name, "arguments": "" } }] }),
            None,
        ));
        let arguments = call.input.to_string();
        let (a, b) = arguments.split_at(arguments.len() / 2);
        for part in [a, b] {
            frames.push(chunk(
                json!({ "tool_calls": [{ "index": index, "function": { "arguments": part } }] }),
                None,
            ));
        }
    }
    frames.push(chunk(json!({}), Some(finish)));
    if include_usage {
        frames.push(format!(
            "data: {}\n\n",
            json!({ "id": id, "object": "chat.completion.chunk", "created": 1, "model": model,
                    "choices": [], "usage": usage })
        ));
    }
    frames.push("data: [DONE]\n\n".into());
    Err(frames)
}

/// An Anthropic message, whole or as events (SSE frames).
pub fn anthropic_answer(model: &Value, turn: &Turn, stream: bool) -> Result<Value, Vec<String>> {
    let mut content = Vec::new();
    if let Some(thinking) = &turn.thinking {
        content.push(
            json!({ "type": "thinking", "thinking": thinking, "signature": signature(thinking) }),
        );
    }
    if let Some(text) = &turn.text {
        content.push(json!({ "type": "text", "text": text }));
    }
    for call in &turn.calls {
        content.push(
            json!({ "type": "tool_use", "id": call.id, "name": call.name, "input": call.input }),
        );
    }
    let thinking_tokens = turn.thinking.as_deref().map_or(0, |t| tokens(t.len()));
    let output = turn.completion_tokens + thinking_tokens;
    let stop = if turn.calls.is_empty() {
        "end_turn"
    } else {
        "tool_use"
    };
    let id = next_id("msg_agent");
    if !stream {
        return Ok(json!({
            "id": id, "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": stop, "stop_sequence": null,
            "usage": { "input_tokens": turn.prompt_tokens, "output_tokens": output },
        }));
    }
    let event = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
    let mut frames = vec![
        event(
            "message_start",
            json!({ "type": "message_start", "message": {
            "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": null, "stop_sequence": null,
            "usage": { "input_tokens": turn.prompt_tokens, "output_tokens": 1 } } }),
        ),
        event("ping", json!({ "type": "ping" })),
    ];
    for (index, block) in content.iter().enumerate() {
        let delta = |delta: Value| {
            event(
                "content_block_delta",
                json!({ "type": "content_block_delta", "index": index, "delta": delta }),
            )
        };
        let mut deltas = Vec::new();
        let start = match block["type"].as_str() {
            Some("thinking") => {
                let text = block["thinking"].as_str().unwrap_or_default();
                deltas.extend(
                    pieces(text)
                        .into_iter()
                        .map(|p| delta(json!({ "type": "thinking_delta", "thinking": p }))),
                );
                deltas.push(delta(
                    json!({ "type": "signature_delta", "signature": block["signature"] }),
                ));
                json!({ "type": "thinking", "thinking": "", "signature": "" })
            }
            Some("text") => {
                let text = block["text"].as_str().unwrap_or_default();
                deltas.extend(
                    pieces(text)
                        .into_iter()
                        .map(|p| delta(json!({ "type": "text_delta", "text": p }))),
                );
                json!({ "type": "text", "text": "" })
            }
            _ => {
                let input = block["input"].to_string();
                let (a, b) = input.split_at(input.len() / 2);
                for part in [a, b] {
                    deltas.push(delta(
                        json!({ "type": "input_json_delta", "partial_json": part }),
                    ));
                }
                json!({ "type": "tool_use", "id": block["id"], "name": block["name"], "input": {} })
            }
        };
        frames.push(event(
            "content_block_start",
            json!({ "type": "content_block_start", "index": index, "content_block": start }),
        ));
        frames.extend(deltas);
        frames.push(event(
            "content_block_stop",
            json!({ "type": "content_block_stop", "index": index }),
        ));
    }
    frames.push(event("message_delta", json!({ "type": "message_delta",
        "delta": { "stop_reason": stop, "stop_sequence": null }, "usage": { "output_tokens": output } })));
    frames.push(event("message_stop", json!({ "type": "message_stop" })));
    Err(frames)
}

/// Whether a request is the scripted model's to answer: it carries a
/// script, thinking, a forced tool, a JSON-schema output or a reasoning model.
pub fn openai_applies(request: &Value) -> bool {
    scripted(&request["messages"])
        || super::rules::is_openai_reasoning_model(request["model"].as_str().unwrap_or_default())
        || request["response_format"]["type"] == "json_schema"
        || request["tool_choice"]["type"] == "function"
}

pub fn anthropic_applies(request: &Value) -> bool {
    scripted(&request["messages"])
        || request["thinking"]["type"] == "enabled"
        || request["thinking"]["type"] == "adaptive"
        || request["output_config"]["format"].is_object()
        || request["output_format"].is_object()
        || request["tool_choice"]["type"] == "tool"
}

fn scripted(messages: &Value) -> bool {
    messages.as_array().into_iter().flatten().any(|m| {
        m["role"] == "user"
            && text_of(&m["content"])
                .lines()
                .any(|l| l.trim().starts_with("CALL "))
    })
}
