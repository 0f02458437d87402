//! A Gemini `GenerateContentResponse` as an OpenAI chat completion, whole
//! ([`translate_response`]) or chunk by chunk ([`StreamState`]).
//!
//! Thought parts become `reasoning_content`; `functionCall` parts tool calls
//! with ids Sluice makes (Gemini's own when it sends one), the first carrying
//! Gemini's thought signature in `extra_content.google.thought_signature`
//! (where Google's own OpenAI-compatible endpoint puts it) for the next
//! turn. Safety stops and blocked prompts are `content_filter` with the
//! reason as the refusal; safety ratings, citations and grounding, which
//! OpenAI's answer has no place for, travel in each choice's `google`.

use crate::openai::{ChatChunk, ChatResponse, Usage};
use serde_json::{Map, Value, json};

/// OpenAI's name for a Gemini finish reason.
pub fn finish_reason(reason: &str, called_tools: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY"
        | "LANGUAGE" => "content_filter",
        _ if called_tools => "tool_calls",
        _ => "stop",
    }
}

/// Gemini's `usageMetadata` in OpenAI's terms: thinking tokens count as
/// completion (reasoning) tokens, cached content as cached prompt tokens,
/// and tool-use prompts as prompt tokens.
pub fn usage(metadata: &Value) -> Usage {
    let n = |field: &str| metadata.get(field).and_then(Value::as_u64).unwrap_or(0) as u32;
    let thoughts = n("thoughtsTokenCount");
    let mut usage = Usage::new(
        n("promptTokenCount") + n("toolUsePromptTokenCount"),
        n("candidatesTokenCount") + thoughts,
    );
    usage.cached_tokens = n("cachedContentTokenCount");
    usage.reasoning_tokens = thoughts;
    usage
}

/// Why nothing was generated for a blocked prompt, as a refusal.
fn blocked(answer: &Value) -> Option<String> {
    let feedback = answer.get("promptFeedback")?;
    let reason = feedback.get("blockReason")?.as_str()?;
    let detail = feedback
        .get("blockReasonMessage")
        .and_then(Value::as_str)
        .map(|m| format!(": {m}"))
        .unwrap_or_default();
    Some(format!("Gemini blocked the prompt ({reason}){detail}"))
}

/// What a candidate carries that OpenAI's choice has no field for.
fn google_fields(candidate: &Value) -> Option<Value> {
    let mut kept = Map::new();
    for field in [
        "safetyRatings",
        "citationMetadata",
        "groundingMetadata",
        "finishMessage",
        "avgLogprobs",
        "logprobsResult",
        "urlContextMetadata",
    ] {
        if let Some(value) = candidate.get(field) {
            kept.insert(field.into(), value.clone());
        }
    }
    (!kept.is_empty()).then_some(Value::Object(kept))
}

/// A tool call id for a Gemini function call (which seldom has one).
fn call_id(part: &Value) -> String {
    part.pointer("/functionCall/id")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("call_{}", &uuid::Uuid::new_v4().simple().to_string()[..24]))
}

fn tool_call(part: &Value, id: String) -> Value {
    let function = &part["functionCall"];
    let mut call = json!({
        "id": id, "type": "function",
        "function": {
            "name": function["name"],
            "arguments": function.get("args").unwrap_or(&json!({})).to_string(),
        },
    });
    if let Some(signature) = part.get("thoughtSignature").and_then(Value::as_str) {
        call["extra_content"] = json!({ "google": { "thought_signature": signature } });
    }
    call
}

fn is_thought(part: &Value) -> bool {
    part.get("thought").and_then(Value::as_bool) == Some(true)
}

/// The OpenAI completion for a whole Gemini answer.
pub fn translate_response(answer: &Value, model: &str) -> ChatResponse {
    let id = response_id(answer);
    let usage = answer.get("usageMetadata").map(usage);
    let model = answer
        .get("modelVersion")
        .and_then(Value::as_str)
        .unwrap_or(model);
    let candidates = answer["candidates"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    if candidates.is_empty() {
        let refusal = blocked(answer).unwrap_or_else(|| "Gemini returned no candidate".into());
        let message = json!({ "role": "assistant", "content": null, "refusal": refusal });
        return ChatResponse::new(id, model, message, "content_filter", usage);
    }
    let mut choices = Vec::with_capacity(candidates.len());
    for (position, candidate) in candidates.iter().enumerate() {
        let mut text = String::new();
        let mut reasoning = String::new();
        let mut tool_calls = Vec::new();
        for part in candidate
            .pointer("/content/parts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if part.get("functionCall").is_some() {
                tool_calls.push(tool_call(part, call_id(part)));
            } else if let Some(t) = part.get("text").and_then(Value::as_str) {
                if is_thought(part) {
                    reasoning.push_str(t);
                } else {
                    text.push_str(t);
                }
            }
        }
        let reason = candidate["finishReason"].as_str().unwrap_or("STOP");
        let finish = finish_reason(reason, !tool_calls.is_empty());
        let mut message = json!({
            "role": "assistant",
            "content": if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { json!(text) },
            "refusal": null,
        });
        if finish == "content_filter" && text.is_empty() {
            message["content"] = Value::Null;
            message["refusal"] = json!(format!("Gemini stopped the answer ({reason})"));
        }
        if !reasoning.is_empty() {
            message["reasoning_content"] = json!(reasoning);
        }
        if !tool_calls.is_empty() {
            message["tool_calls"] = Value::Array(tool_calls);
        }
        let mut choice = json!({
            "index": candidate.get("index").and_then(Value::as_u64).unwrap_or(position as u64),
            "message": message, "logprobs": null, "finish_reason": finish,
        });
        if let Some(google) = google_fields(candidate) {
            choice["google"] = google;
        }
        choices.push(choice);
    }
    let mut response = ChatResponse::new(id, model, json!({}), "stop", usage);
    response.set("choices", Value::Array(choices));
    if let Some(feedback) = answer.get("promptFeedback") {
        response.set("google", json!({ "promptFeedback": feedback }));
    }
    response
}

fn response_id(answer: &Value) -> String {
    answer
        .get("responseId")
        .and_then(Value::as_str)
        .map(|id| format!("chatcmpl-{id}"))
        .unwrap_or_else(crate::openai::completion_id)
}

/// Turns each streamed `GenerateContentResponse` into chunks as it comes.
/// Gemini sends whole parts per event (a function call arrives complete);
/// the last event carries the finish reason and the usage, after which a
/// usage-only chunk ends the stream, as OpenAI's does.
pub struct StreamState {
    model: String,
    id: Option<String>,
    created: u64,
    role_sent: Vec<bool>,
    calls: Vec<u32>,
}

impl StreamState {
    pub fn new(model: &str) -> StreamState {
        StreamState {
            model: model.to_string(),
            id: None,
            created: crate::clock::unix_now(),
            role_sent: Vec::new(),
            calls: Vec::new(),
        }
    }

    fn chunk(&self, index: usize, delta: Value, finish: Option<&str>) -> ChatChunk {
        let mut chunk = ChatChunk::delta(
            self.id.as_deref().unwrap_or_default(),
            self.created,
            &self.model,
            delta,
            finish,
        );
        if index > 0 {
            chunk.0["choices"][0]["index"] = json!(index);
        }
        chunk
    }

    /// The chunks for one event's answer.
    pub fn on_answer(&mut self, answer: &Value) -> Vec<ChatChunk> {
        if self.id.is_none() {
            self.id = Some(response_id(answer));
        }
        if let Some(version) = answer.get("modelVersion").and_then(Value::as_str) {
            self.model = version.to_string();
        }
        let mut out = Vec::new();
        let candidates = answer["candidates"]
            .as_array()
            .map_or(&[][..], Vec::as_slice);
        let usage = answer.get("usageMetadata").map(usage);
        if candidates.is_empty() {
            if let Some(refusal) = blocked(answer) {
                out.push(self.chunk(
                    0,
                    json!({ "role": "assistant", "content": null, "refusal": refusal }),
                    None,
                ));
                out.push(self.chunk(0, json!({}), Some("content_filter")));
                if let Some(usage) = usage {
                    out.push(self.usage_chunk(usage));
                }
            }
            return out;
        }
        let mut finished = false;
        for (position, candidate) in candidates.iter().enumerate() {
            let index = candidate
                .get("index")
                .and_then(Value::as_u64)
                .map_or(position, |i| i as usize);
            if self.role_sent.len() <= index {
                self.role_sent.resize(index + 1, false);
                self.calls.resize(index + 1, 0);
            }
            for part in candidate
                .pointer("/content/parts")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let mut delta = if part.get("functionCall").is_some() {
                    let mut call = tool_call(part, call_id(part));
                    call["index"] = json!(self.calls[index]);
                    self.calls[index] += 1;
                    json!({ "tool_calls": [call] })
                } else if let Some(text) = part.get("text").and_then(Value::as_str) {
                    if is_thought(part) {
                        json!({ "reasoning_content": text })
                    } else {
                        json!({ "content": text })
                    }
                } else {
                    continue;
                };
                if !self.role_sent[index] {
                    self.role_sent[index] = true;
                    delta["role"] = json!("assistant");
                }
                out.push(self.chunk(index, delta, None));
            }
            if let Some(reason) = candidate["finishReason"].as_str() {
                let finish = finish_reason(reason, self.calls[index] > 0);
                let mut delta = json!({});
                if finish == "content_filter" {
                    delta["refusal"] = json!(format!("Gemini stopped the answer ({reason})"));
                }
                let mut chunk = self.chunk(index, delta, Some(finish));
                if let Some(google) = google_fields(candidate) {
                    chunk.0["choices"][0]["google"] = google;
                }
                out.push(chunk);
                finished = true;
            }
        }
        if finished && let Some(usage) = usage {
            out.push(self.usage_chunk(usage));
        }
        out
    }

    fn usage_chunk(&self, usage: Usage) -> ChatChunk {
        ChatChunk::usage_only(
            self.id.as_deref().unwrap_or_default(),
            self.created,
            &self.model,
            usage,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thoughts_calls_and_usage_become_openai_fields() {
        let answer = json!({
            "responseId": "r1", "modelVersion": "gemini-2.5-flash",
            "candidates": [{"index": 0, "finishReason": "STOP", "content": {"role": "model", "parts": [
                {"text": "Let me look.", "thought": true},
                {"text": "Looking up."},
                {"functionCall": {"name": "lookup", "args": {"q": "a"}}, "thoughtSignature": "sig"},
                {"functionCall": {"name": "lookup", "args": {"q": "b"}}}
            ]}, "safetyRatings": [{"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"}]}],
            "usageMetadata": {"promptTokenCount": 100, "candidatesTokenCount": 20, "thoughtsTokenCount": 30,
                "cachedContentTokenCount": 60, "totalTokenCount": 150}
        });
        let response = translate_response(&answer, "alias");
        let body = Value::Object(response.0.clone());
        assert_eq!(body["id"], "chatcmpl-r1");
        assert_eq!(body["model"], "gemini-2.5-flash");
        let choice = &body["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], "Looking up.");
        assert_eq!(choice["message"]["reasoning_content"], "Let me look.");
        let calls = choice["message"]["tool_calls"].as_array().unwrap();
        assert_eq!(calls[0]["function"]["arguments"], "{\"q\":\"a\"}");
        assert_eq!(
            calls[0]["extra_content"]["google"]["thought_signature"],
            "sig"
        );
        assert_ne!(calls[0]["id"], calls[1]["id"]);
        assert_eq!(
            choice["google"]["safetyRatings"][0]["probability"],
            "NEGLIGIBLE"
        );
        let usage = response.usage().unwrap();
        assert_eq!(
            (
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.cached_tokens,
                usage.reasoning_tokens
            ),
            (100, 50, 60, 30)
        );
    }

    #[test]
    fn blocked_prompts_and_safety_stops_are_content_filter_with_the_reason() {
        let blocked = translate_response(
            &json!({"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 4}}),
            "m",
        );
        assert_eq!(blocked.finish_reason(), Some("content_filter"));
        assert!(
            blocked.message().unwrap()["refusal"]
                .as_str()
                .unwrap()
                .contains("SAFETY")
        );
        let stopped = translate_response(
            &json!({"candidates": [{"finishReason": "PROHIBITED_CONTENT", "content": {"parts": []}}]}),
            "m",
        );
        assert_eq!(stopped.finish_reason(), Some("content_filter"));
        assert!(
            stopped.message().unwrap()["refusal"]
                .as_str()
                .unwrap()
                .contains("PROHIBITED_CONTENT")
        );
    }

    #[test]
    fn a_stream_numbers_its_calls_and_ends_with_usage() {
        let mut state = StreamState::new("m");
        let first = state.on_answer(
            &json!({"responseId": "r", "candidates": [{"content": {"parts": [{"text": "Hel"}]}}]}),
        );
        assert_eq!(
            first[0].choices()[0]["delta"],
            json!({"role": "assistant", "content": "Hel"})
        );
        let last = state.on_answer(&json!({"candidates": [{"finishReason": "STOP", "content": {"parts": [
            {"functionCall": {"name": "f", "args": {}}}, {"functionCall": {"name": "g", "args": {"x": 1}}}]}}],
            "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 7}}));
        assert_eq!(last.len(), 4);
        assert_eq!(last[0].choices()[0]["delta"]["tool_calls"][0]["index"], 0);
        assert_eq!(last[1].choices()[0]["delta"]["tool_calls"][0]["index"], 1);
        assert_eq!(
            last[1].choices()[0]["delta"]["tool_calls"][0]["function"]["arguments"],
            "{\"x\":1}"
        );
        assert_eq!(last[2].choices()[0]["finish_reason"], "tool_calls");
        assert_eq!(last[3].usage().unwrap().completion_tokens, 7);
        assert!(last.iter().all(|c| c.0["id"] == "chatcmpl-r"));
    }
}
