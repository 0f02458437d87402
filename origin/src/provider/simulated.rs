//! The simulated provider: answers without any model, with a configurable time
//! to first token, generation speed and failure rates. For local runs and
//! benchmarks; every answer says it is simulated. `sluice-origin simulate`
//! serves it over HTTP as a stand-alone upstream.

use super::{Call, Embeddings, EventStream, Provider, ProviderError};
use crate::config::SimulatedConfig;
use crate::openai::{
    ChatChunk, ChatRequest, ChatResponse, Role, Usage, completion_id, estimate_tokens,
};
use futures::StreamExt;
use futures::future::BoxFuture;
use serde_json::{Map, Value, json};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

/// Length of simulated embedding vectors.
pub const EMBEDDING_DIMENSIONS: usize = 256;

pub struct Simulated {
    config: SimulatedConfig,
}

impl Simulated {
    pub fn new(config: SimulatedConfig) -> Simulated {
        Simulated { config }
    }

    /// A deterministic reply that echoes (a bounded part of) the last user turn.
    fn reply_text(call: Call<'_>, request: &ChatRequest) -> String {
        let last = request.messages.last();
        let mut reply = match last.filter(|m| matches!(m.role, Role::Tool | Role::Function)) {
            Some(result) => {
                let text: String = result.text().chars().take(200).collect();
                format!("[simulated {}] The tool returned: {text}", call.model)
            }
            None => {
                let echoed: String = last_user_text(request).chars().take(200).collect();
                format!("[simulated {}] You said: {echoed}", call.model)
            }
        };
        if let Some(limit) = request.max_output_tokens() {
            let words: Vec<&str> = reply
                .split_whitespace()
                .take(limit.max(1) as usize)
                .collect();
            reply = words.join(" ");
        }
        reply
    }

    /// What the simulated model answers, by a documented rule:
    /// - the request offers tools, `tool_choice` is not `"none"` and the last
    ///   message is not a tool result: it calls the tool `tool_choice` names,
    ///   else the first, with arguments filled from the tool's JSON schema
    ///   (strings are the last user text, numbers 1, booleans true);
    /// - `response_format` is `json_schema`: text that is a JSON value built
    ///   from the schema by the same rule (`json_object`: `{"echo": ...}`);
    /// - otherwise it echoes the last user turn (or the tool result).
    fn answer(call: Call<'_>, request: &ChatRequest) -> Answer {
        if let Some(tool) = tool_to_call(request) {
            let name = tool
                .pointer("/function/name")
                .cloned()
                .unwrap_or(json!("tool"));
            let schema = tool
                .pointer("/function/parameters")
                .cloned()
                .unwrap_or(json!({}));
            let arguments = fill_schema(&schema, &last_user_text(request)).to_string();
            let id = format!("call_{:016x}", hash_of(&(call.model, &arguments)));
            return Answer::ToolCall {
                id,
                name,
                arguments,
            };
        }
        match request.field("response_format").map(|f| &f["type"]) {
            Some(kind) if kind == "json_schema" => {
                let schema = request
                    .field("response_format")
                    .and_then(|f| f.pointer("/json_schema/schema"))
                    .cloned()
                    .unwrap_or(json!({}));
                Answer::Text(fill_schema(&schema, &last_user_text(request)).to_string())
            }
            Some(kind) if kind == "json_object" => {
                Answer::Text(json!({ "echo": last_user_text(request) }).to_string())
            }
            _ => Answer::Text(Simulated::reply_text(call, request)),
        }
    }

    /// The configured share of calls fails, as a real upstream would.
    fn injected_failure(&self) -> Result<(), ProviderError> {
        let roll = fastrand::f64();
        if roll < self.config.rate_limit_rate {
            return Err(ProviderError::RateLimited {
                retry_after: Some(Duration::from_secs(self.config.retry_after_secs)),
                message: "simulated rate limit".into(),
            });
        }
        if roll < self.config.rate_limit_rate + self.config.error_rate {
            return Err(ProviderError::Unavailable {
                status: 503,
                message: "simulated failure".into(),
            });
        }
        Ok(())
    }

    /// Fault injection (`[simulated] panic_on`): a bug below a handler or a
    /// worker, for the tests that show the origin survives one.
    #[expect(clippy::panic, reason = "fault injection: the panic is the feature")]
    fn injected_panic(&self, request: &ChatRequest) {
        if let Some(trigger) = self.config.panic_on.as_deref()
            && last_user_text(request).contains(trigger)
        {
            panic!("simulated panic: the prompt contains {trigger:?}");
        }
    }

    fn token_interval(&self) -> Duration {
        match self.config.tokens_per_second {
            0 => Duration::ZERO,
            tps => Duration::from_secs_f64(1.0 / tps as f64),
        }
    }

    async fn first_token_delay(&self) {
        let delay = Duration::from_millis(self.config.time_to_first_token_ms);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }
}

/// A simulated answer before it is put in OpenAI's shape.
enum Answer {
    Text(String),
    ToolCall {
        id: String,
        name: Value,
        arguments: String,
    },
}

impl Answer {
    /// The simulated tokens: words with their trailing space (a tool call's
    /// arguments in pieces of up to 8 characters).
    fn tokens(&self) -> Vec<String> {
        match self {
            Answer::Text(text) => text.split_inclusive(' ').map(str::to_string).collect(),
            Answer::ToolCall { arguments, .. } => {
                let chars: Vec<char> = arguments.chars().collect();
                chars.chunks(8).map(|c| c.iter().collect()).collect()
            }
        }
    }
}

/// The answers asked for (`n`).
fn choices(request: &ChatRequest) -> u32 {
    request
        .field("n")
        .and_then(Value::as_u64)
        .map_or(1, |n| u32::try_from(n).unwrap_or(1).max(1))
}

/// The chunk as one of choice `index`'s.
fn of_choice(mut chunk: ChatChunk, index: u32) -> ChatChunk {
    if let Some(Value::Array(choices)) = chunk.0.get_mut("choices")
        && let Some(choice) = choices.first_mut()
    {
        choice["index"] = json!(index);
    }
    chunk
}

fn last_user_text(request: &ChatRequest) -> String {
    request
        .messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(|m| m.text())
        .unwrap_or_default()
}

/// The tool the simulated model calls, if it calls one.
fn tool_to_call(request: &ChatRequest) -> Option<&Value> {
    let tools = request.field("tools")?.as_array()?;
    let last_is_result = request
        .messages
        .last()
        .is_some_and(|m| matches!(m.role, Role::Tool | Role::Function));
    if last_is_result {
        return None;
    }
    let functions = tools.iter().filter(|t| t["type"] == "function");
    match request.field("tool_choice") {
        Some(Value::String(choice)) if choice == "none" => None,
        Some(choice @ Value::Object(_)) => {
            let name = choice.pointer("/function/name")?;
            tools
                .iter()
                .find(|t| t.pointer("/function/name") == Some(name))
        }
        _ => functions.into_iter().next(),
    }
}

/// A value of the JSON schema's shape: strings are `text`, numbers 1,
/// booleans true, arrays one item, objects every property.
fn fill_schema(schema: &Value, text: &str) -> Value {
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        return values.first().cloned().unwrap_or(Value::Null);
    }
    if let Some(constant) = schema.get("const") {
        return constant.clone();
    }
    if let Some(first) = ["anyOf", "oneOf"]
        .iter()
        .find_map(|k| schema.get(*k)?.as_array()?.first())
    {
        return fill_schema(first, text);
    }
    let kind = match &schema["type"] {
        Value::Array(kinds) => kinds
            .iter()
            .find(|k| *k != "null")
            .cloned()
            .unwrap_or(Value::Null),
        kind => kind.clone(),
    };
    match kind.as_str() {
        Some("string") => json!(text.chars().take(100).collect::<String>()),
        Some("integer") | Some("number") => json!(1),
        Some("boolean") => json!(true),
        Some("null") => Value::Null,
        Some("array") => json!([fill_schema(&schema["items"], text)]),
        _ => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let object: Map<String, Value> = properties
                .into_iter()
                .flatten()
                .map(|(name, property)| (name.clone(), fill_schema(property, text)))
                .collect();
            Value::Object(object)
        }
    }
}

fn hash_of(value: &impl Hash) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

impl Provider for Simulated {
    fn kind(&self) -> &'static str {
        "simulated"
    }

    fn complete<'a>(
        &'a self,
        call: Call<'a>,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChatResponse, ProviderError>> {
        Box::pin(async move {
            self.injected_failure()?;
            self.injected_panic(request);
            let answer = Simulated::answer(call, request);
            let completion_tokens = answer.tokens().len() as u32;
            self.first_token_delay().await;
            let rest = self.token_interval() * completion_tokens.saturating_sub(1);
            if !rest.is_zero() {
                tokio::time::sleep(rest).await;
            }
            let choices = choices(request);
            let usage = Usage::new(
                request.estimated_prompt_tokens(),
                completion_tokens * choices,
            );
            let (message, finish) = match answer {
                Answer::Text(text) => (json!({ "role": "assistant", "content": text }), "stop"),
                Answer::ToolCall {
                    id,
                    name,
                    arguments,
                } => (
                    json!({ "role": "assistant", "content": null, "tool_calls": [{
                        "id": id, "type": "function", "function": { "name": name, "arguments": arguments },
                    }] }),
                    "tool_calls",
                ),
            };
            let mut response =
                ChatResponse::new(completion_id(), call.model, message, finish, Some(usage));
            // `n` answers, each billed: the same one, as a deterministic model gives.
            if let Some(Value::Array(all)) = response.0.get_mut("choices")
                && let Some(first) = all.first().cloned()
            {
                for index in 1..choices {
                    let mut choice = first.clone();
                    choice["index"] = json!(index);
                    all.push(choice);
                }
            }
            Ok(response)
        })
    }

    fn stream<'a>(
        &'a self,
        call: Call<'a>,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<EventStream, ProviderError>> {
        Box::pin(async move {
            self.injected_failure()?;
            let answer = Simulated::answer(call, request);
            let pieces = answer.tokens();
            let choices = choices(request);
            let usage = Usage::new(
                request.estimated_prompt_tokens(),
                pieces.len() as u32 * choices,
            );
            let (id, created, model) = (
                completion_id(),
                crate::clock::unix_now(),
                call.model.to_string(),
            );
            let chunk = {
                let (id, model) = (id.clone(), model.clone());
                move |delta: Value, finish: Option<&str>| {
                    ChatChunk::delta(&id, created, &model, delta, finish)
                }
            };
            let (deltas, finish): (Vec<Value>, &str) = match &answer {
                Answer::Text(_) => (
                    pieces
                        .into_iter()
                        .map(|p| json!({ "content": p }))
                        .collect(),
                    "stop",
                ),
                Answer::ToolCall { id, name, .. } => {
                    let mut deltas = vec![json!({ "tool_calls": [{
                        "index": 0, "id": id, "type": "function",
                        "function": { "name": name, "arguments": "" },
                    }] })];
                    deltas.extend(pieces.into_iter().map(|p| {
                        json!({
                            "tool_calls": [{ "index": 0, "function": { "arguments": p } }],
                        })
                    }));
                    (deltas, "tool_calls")
                }
            };
            // `n` answers, one after the other, each chunk naming its choice.
            let deltas: Vec<(u32, Value)> = (0..choices)
                .flat_map(|index| deltas.iter().map(move |d| (index, d.clone())))
                .collect();
            let ttft = Duration::from_millis(self.config.time_to_first_token_ms);
            let interval = self.token_interval();
            let role = futures::stream::iter([Ok(chunk(
                json!({ "role": "assistant", "content": "" }),
                None,
            ))]);
            let deltas = futures::stream::iter(deltas.into_iter().enumerate()).then({
                let chunk = chunk.clone();
                move |(i, (index, delta))| {
                    let chunk = chunk.clone();
                    async move {
                        let wait = if i == 0 { ttft } else { interval };
                        if !wait.is_zero() {
                            tokio::time::sleep(wait).await;
                        }
                        Ok(of_choice(chunk(delta, None), index))
                    }
                }
            });
            let finishes =
                (0..choices).map(|index| Ok(of_choice(chunk(json!({}), Some(finish)), index)));
            let tail = futures::stream::iter(
                finishes
                    .chain([Ok(ChatChunk::usage_only(&id, created, &model, usage))])
                    .collect::<Vec<_>>(),
            );
            Ok(role.chain(deltas).chain(tail).boxed())
        })
    }

    fn embed<'a>(
        &'a self,
        _call: Call<'a>,
        inputs: &'a [String],
    ) -> BoxFuture<'a, Result<Embeddings, ProviderError>> {
        Box::pin(async move {
            self.injected_failure()?;
            self.first_token_delay().await;
            Ok(Embeddings {
                vectors: inputs.iter().map(|text| embed_text(text)).collect(),
                prompt_tokens: Some(inputs.iter().map(|t| estimate_tokens(t)).sum()),
            })
        })
    }
}

/// A unit vector of hashed lower-cased words: texts sharing words point the
/// same way, so similarity behaves plausibly for tests of semantic features.
pub fn embed_text(text: &str) -> Vec<f32> {
    let mut vector = vec![0.0_f32; EMBEDDING_DIMENSIONS];
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let mut hasher = DefaultHasher::new();
        word.to_lowercase().hash(&mut hasher);
        let h = hasher.finish();
        let sign = if h & 1 == 0 { 1.0 } else { -1.0 };
        vector[(h >> 1) as usize % EMBEDDING_DIMENSIONS] += sign;
    }
    let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|v| *v /= norm);
    }
    vector
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(value: Value) -> ChatRequest {
        serde_json::from_value(value).unwrap()
    }

    const CALL: Call<'static> = Call {
        model: "sim",
        key: None,
        beta: None,
        limits: None,
        adjusted: None,
    };

    #[test]
    fn calls_the_offered_tool_until_it_has_a_result() {
        let tools = json!([{"type": "function", "function": {"name": "weather", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"]}}}]);
        let asked = request(json!({"model": "m", "tools": tools,
            "messages": [{"role": "user", "content": "Paris"}]}));
        match Simulated::answer(CALL, &asked) {
            Answer::ToolCall {
                name, arguments, ..
            } => {
                assert_eq!(name, "weather");
                assert_eq!(arguments, r#"{"city":"Paris","days":1}"#);
            }
            Answer::Text(text) => panic!("expected a tool call, got {text}"),
        }
        let answered = request(json!({"model": "m", "tools": tools, "messages": [
            {"role": "user", "content": "Paris"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function",
                "function": {"name": "weather", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c", "content": "sunny"}]}));
        match Simulated::answer(CALL, &answered) {
            Answer::Text(text) => assert_eq!(text, "[simulated sim] The tool returned: sunny"),
            Answer::ToolCall { .. } => panic!("expected text after the tool result"),
        }
        let declined = request(json!({"model": "m", "tools": tools, "tool_choice": "none",
            "messages": [{"role": "user", "content": "Paris"}]}));
        assert!(matches!(
            Simulated::answer(CALL, &declined),
            Answer::Text(_)
        ));
    }

    #[test]
    fn structured_output_follows_the_schema() {
        let asked = request(
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": {
                "type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"}},
                "mood": {"enum": ["happy", "sad"]}}}}}}),
        );
        match Simulated::answer(CALL, &asked) {
            Answer::Text(text) => assert_eq!(text, r#"{"tags":["hi"],"mood":"happy"}"#),
            Answer::ToolCall { .. } => panic!("no tools were offered"),
        }
    }

    #[test]
    fn similar_texts_have_similar_embeddings() {
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        let a = embed_text("What is the capital of France?");
        let b = embed_text("what is the capital of france");
        let c = embed_text("Bananas grow in warm climates.");
        assert!((dot(&a, &a) - 1.0).abs() < 1e-5);
        assert!(dot(&a, &b) > 0.99);
        assert!(dot(&a, &c) < 0.5);
    }
}
