//! A chat stream as the Responses API's semantic events: `response.created`
//! and `response.in_progress` first; then, per output item in order,
//! `response.output_item.added`, its parts and deltas
//! (`response.output_text.delta`, `response.refusal.delta`,
//! `response.function_call_arguments.delta`,
//! `response.reasoning_summary_text.delta`) and their `.done` events, and
//! `response.output_item.done`; last `response.completed` (or
//! `response.incomplete`, or `response.failed`) with the whole response.
//! Every event carries a `sequence_number`.

use super::request::item_id;
use super::response::{answer_extras, finished, function_call_item, reasoning_item};
use crate::openai::{ChatChunk, Usage};
use serde_json::{Map, Value, json};

/// Delta fields that are items or parts; any other goes onto the message item.
const TRANSLATED_DELTA_FIELDS: &[&str] = &[
    "role",
    "content",
    "refusal",
    "tool_calls",
    "reasoning_content",
    "thinking_blocks",
];

enum Kind {
    Reasoning {
        text: String,
        blocks: Vec<Value>,
        signature: String,
    },
    Message {
        /// `(content_index, is_refusal, text, logprobs)` per part, in order.
        parts: Vec<(usize, bool, String, Vec<Value>)>,
        extras: Map<String, Value>,
    },
    Call {
        call: Value,
        arguments: String,
    },
}

struct Item {
    id: String,
    kind: Kind,
}

/// The translation's state across a stream.
pub struct ResponseEvents {
    response: Map<String, Value>,
    sequence: u64,
    items: Vec<Item>,
    /// The item receiving deltas, an index into `items`.
    open: Option<usize>,
    /// Chat tool-call index to item index.
    calls: Vec<(u64, usize)>,
    finish_reason: Option<String>,
    extras: Map<String, Value>,
    out: Vec<Value>,
}

impl ResponseEvents {
    /// Starts from the skeleton response (`super::response::skeleton`).
    pub fn new(response: Map<String, Value>) -> ResponseEvents {
        ResponseEvents {
            response,
            sequence: 0,
            items: Vec::new(),
            open: None,
            calls: Vec::new(),
            finish_reason: None,
            extras: Map::new(),
            out: Vec::new(),
        }
    }

    fn emit(&mut self, kind: &str, mut event: Value) {
        event["type"] = kind.into();
        event["sequence_number"] = self.sequence.into();
        self.sequence += 1;
        self.out.push(event);
    }

    fn drain(&mut self) -> Vec<Value> {
        std::mem::take(&mut self.out)
    }

    /// `response.created` and `response.in_progress`.
    pub fn start(&mut self) -> Vec<Value> {
        let response = Value::Object(self.response.clone());
        self.emit("response.created", json!({ "response": response }));
        self.emit("response.in_progress", json!({ "response": response }));
        self.drain()
    }

    pub fn on_chunk(&mut self, chunk: &ChatChunk) -> Vec<Value> {
        for (name, value) in answer_extras(&chunk.0) {
            self.extras.insert(name, value);
        }
        let Some(choice) = chunk.choices().first() else {
            return self.drain();
        };
        let delta = &choice["delta"];
        if let Some(text) = delta["reasoning_content"]
            .as_str()
            .filter(|t| !t.is_empty())
        {
            let index = self.open_reasoning();
            let id = self.items[index].id.clone();
            if let Kind::Reasoning { text: all, .. } = &mut self.items[index].kind {
                all.push_str(text);
            }
            self.emit(
                "response.reasoning_summary_text.delta",
                json!({ "item_id": id, "output_index": index, "summary_index": 0, "delta": text }),
            );
        }
        if let Some(blocks) = delta["thinking_blocks"].as_array() {
            let index = self.open_reasoning();
            if let Kind::Reasoning {
                blocks: kept,
                signature,
                ..
            } = &mut self.items[index].kind
            {
                for block in blocks {
                    match block["type"].as_str() {
                        Some("thinking") => {
                            signature.push_str(block["signature"].as_str().unwrap_or_default());
                        }
                        _ => kept.push(block.clone()),
                    }
                }
            }
        }
        let logprobs = choice["logprobs"]["content"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if let Some(text) = delta["content"].as_str().filter(|t| !t.is_empty()) {
            self.message_delta(false, text, logprobs);
        }
        if let Some(text) = delta["refusal"].as_str().filter(|t| !t.is_empty()) {
            self.message_delta(true, text, Vec::new());
        }
        if let Some(delta) = delta.as_object() {
            let extras: Vec<_> = delta
                .iter()
                .filter(|(k, v)| !TRANSLATED_DELTA_FIELDS.contains(&k.as_str()) && !v.is_null())
                .collect();
            if !extras.is_empty() {
                let index = self.open_message();
                if let Kind::Message { extras: kept, .. } = &mut self.items[index].kind {
                    for (name, value) in extras {
                        kept.insert(name.clone(), value.clone());
                    }
                }
            }
        }
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            self.call_delta(call);
        }
        if let Some(finish) = choice["finish_reason"].as_str() {
            self.finish_reason = Some(finish.to_string());
        }
        self.drain()
    }

    /// Closes what is open; the events that end the stream, and the finished
    /// response (the one to store).
    pub fn finish(&mut self, usage: Usage) -> (Vec<Value>, Value) {
        self.close();
        let output = self.output("completed");
        let response = finished(
            self.response.clone(),
            output,
            self.finish_reason.as_deref(),
            usage,
            std::mem::take(&mut self.extras),
        );
        let kind = if response["status"] == "incomplete" {
            "response.incomplete"
        } else {
            "response.completed"
        };
        self.emit(kind, json!({ "response": response }));
        (self.drain(), response)
    }

    /// `response.failed`, with what had been generated.
    pub fn failed(&mut self, message: &str) -> Vec<Value> {
        let mut response = self.response.clone();
        response.insert("status".into(), "failed".into());
        response.insert(
            "error".into(),
            json!({ "code": "server_error", "message": message }),
        );
        response.insert("output".into(), Value::Array(self.output("incomplete")));
        self.emit("response.failed", json!({ "response": response }));
        self.drain()
    }

    /// A finished item's status: `status`, or `incomplete` when the answer was cut off.
    fn item_status<'a>(&self, status: &'a str) -> &'a str {
        match self.finish_reason.as_deref() {
            Some("length" | "content_filter") => "incomplete",
            _ => status,
        }
    }

    fn output(&self, status: &str) -> Vec<Value> {
        let status = self.item_status(status);
        self.items
            .iter()
            .map(|item| item_json(item, status))
            .collect()
    }

    fn add(&mut self, item: Item) -> usize {
        self.close();
        let index = self.items.len();
        let added = item_json(&item, "in_progress");
        self.items.push(item);
        self.open = Some(index);
        self.emit(
            "response.output_item.added",
            json!({ "output_index": index, "item": added }),
        );
        index
    }

    fn open_reasoning(&mut self) -> usize {
        match self.open {
            Some(i) if matches!(self.items[i].kind, Kind::Reasoning { .. }) => i,
            _ => {
                let index = self.add(Item {
                    id: item_id("rs"),
                    kind: Kind::Reasoning {
                        text: String::new(),
                        blocks: Vec::new(),
                        signature: String::new(),
                    },
                });
                self.emit(
                    "response.reasoning_summary_part.added",
                    json!({ "item_id": self.items[index].id, "output_index": index, "summary_index": 0,
                        "part": { "type": "summary_text", "text": "" } }),
                );
                index
            }
        }
    }

    fn open_message(&mut self) -> usize {
        match self.open {
            Some(i) if matches!(self.items[i].kind, Kind::Message { .. }) => i,
            _ => self.add(Item {
                id: item_id("msg"),
                kind: Kind::Message {
                    parts: Vec::new(),
                    extras: Map::new(),
                },
            }),
        }
    }

    fn message_delta(&mut self, refusal: bool, text: &str, logprobs: Vec<Value>) {
        let index = self.open_message();
        let id = self.items[index].id.clone();
        let Kind::Message { parts, .. } = &mut self.items[index].kind else {
            return;
        };
        let content_index = match parts.iter().position(|p| p.1 == refusal) {
            Some(position) => position,
            None => {
                parts.push((parts.len(), refusal, String::new(), Vec::new()));
                let part = if refusal {
                    json!({ "type": "refusal", "refusal": "" })
                } else {
                    json!({ "type": "output_text", "text": "", "annotations": [], "logprobs": [] })
                };
                let content_index = parts.len() - 1;
                self.emit(
                    "response.content_part.added",
                    json!({ "item_id": id, "output_index": index, "content_index": content_index, "part": part }),
                );
                content_index
            }
        };
        if let Kind::Message { parts, .. } = &mut self.items[index].kind {
            parts[content_index].2.push_str(text);
            parts[content_index].3.extend(logprobs.iter().cloned());
        }
        let mut event = json!({ "item_id": id, "output_index": index,
            "content_index": content_index, "delta": text });
        if refusal {
            self.emit("response.refusal.delta", event);
        } else {
            event["logprobs"] = Value::Array(logprobs);
            self.emit("response.output_text.delta", event);
        }
    }

    fn call_delta(&mut self, delta: &Value) {
        let chat_index = delta["index"].as_u64().unwrap_or(0);
        let arguments = delta["function"]["arguments"].as_str().unwrap_or_default();
        let known = self
            .calls
            .iter()
            .find(|(i, _)| *i == chat_index)
            .map(|c| c.1);
        let index = match known {
            Some(index) => index,
            None => {
                let call =
                    json!({ "id": delta["id"], "function": { "name": delta["function"]["name"] } });
                let index = self.add(Item {
                    id: item_id("fc"),
                    kind: Kind::Call {
                        call,
                        arguments: String::new(),
                    },
                });
                self.calls.push((chat_index, index));
                index
            }
        };
        if let Kind::Call { arguments: all, .. } = &mut self.items[index].kind {
            all.push_str(arguments);
        }
        // A late delta for an item already done is kept in the final response only.
        if !arguments.is_empty() && self.open == Some(index) {
            let id = self.items[index].id.clone();
            self.emit(
                "response.function_call_arguments.delta",
                json!({ "item_id": id, "output_index": index, "delta": arguments }),
            );
        }
    }

    /// The `.done` events of the open item.
    fn close(&mut self) {
        let Some(index) = self.open.take() else {
            return;
        };
        let id = self.items[index].id.clone();
        let mut events = Vec::new();
        match &self.items[index].kind {
            Kind::Reasoning { text, .. } => {
                let base = json!({ "item_id": id, "output_index": index, "summary_index": 0 });
                let mut done = base.clone();
                done["text"] = text.clone().into();
                events.push(("response.reasoning_summary_text.done", done));
                let mut part = base;
                part["part"] = json!({ "type": "summary_text", "text": text });
                events.push(("response.reasoning_summary_part.done", part));
            }
            Kind::Message { parts, .. } => {
                for (content_index, refusal, text, logprobs) in parts {
                    let base = json!({ "item_id": id, "output_index": index, "content_index": content_index });
                    let mut done = base.clone();
                    let mut part = base;
                    if *refusal {
                        done["refusal"] = text.clone().into();
                        events.push(("response.refusal.done", done));
                        part["part"] = json!({ "type": "refusal", "refusal": text });
                    } else {
                        done["text"] = text.clone().into();
                        done["logprobs"] = Value::Array(logprobs.clone());
                        events.push(("response.output_text.done", done));
                        part["part"] = json!({ "type": "output_text", "text": text,
                            "annotations": [], "logprobs": logprobs });
                    }
                    events.push(("response.content_part.done", part));
                }
            }
            Kind::Call { call, arguments } => {
                events.push((
                    "response.function_call_arguments.done",
                    json!({ "item_id": id, "output_index": index, "arguments": arguments,
                        "name": call["function"]["name"] }),
                ));
            }
        }
        let item = item_json(&self.items[index], self.item_status("completed"));
        for (kind, event) in events {
            self.emit(kind, event);
        }
        self.emit(
            "response.output_item.done",
            json!({ "output_index": index, "item": item }),
        );
    }
}

fn item_json(item: &Item, status: &str) -> Value {
    match &item.kind {
        Kind::Reasoning {
            text,
            blocks,
            signature,
        } => {
            let mut all = Vec::new();
            if !signature.is_empty() {
                all.push(json!({ "type": "thinking", "thinking": text, "signature": signature }));
            }
            all.extend(blocks.iter().cloned());
            let mut item_value = reasoning_item(&item.id, text, Some(&Value::Array(all)), status);
            if status == "in_progress" {
                item_value["summary"] = json!([]);
            }
            item_value
        }
        Kind::Message { parts, extras } => {
            let content: Vec<Value> = if status == "in_progress" {
                Vec::new()
            } else {
                parts
                    .iter()
                    .map(|(_, refusal, text, logprobs)| {
                        if *refusal {
                            json!({ "type": "refusal", "refusal": text })
                        } else {
                            json!({ "type": "output_text", "text": text, "annotations": [], "logprobs": logprobs })
                        }
                    })
                    .collect()
            };
            let mut value = json!({ "id": item.id, "type": "message", "status": status,
                "role": "assistant", "content": content });
            if let Some(value) = value.as_object_mut() {
                value.extend(extras.clone());
            }
            value
        }
        Kind::Call { call, arguments } => {
            let mut call = call.clone();
            call["function"]["arguments"] = arguments.clone().into();
            function_call_item(&item.id, &call, status)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::responses::request::ResponsesRequest;
    use crate::responses::response::skeleton;

    fn chunk(delta: Value, finish: Option<&str>) -> ChatChunk {
        ChatChunk::delta("c", 1, "m", delta, finish)
    }

    #[test]
    fn text_then_a_tool_call_make_two_items_in_order() {
        let request =
            ResponsesRequest::parse(br#"{"model":"m","input":"x","stream":true}"#).unwrap();
        let mut events = ResponseEvents::new(skeleton("resp_1", &request, 1));
        let mut all = events.start();
        all.extend(events.on_chunk(&chunk(
            json!({"role": "assistant", "content": "Let "}),
            None,
        )));
        all.extend(events.on_chunk(&chunk(json!({"content": "me"}), None)));
        all.extend(events.on_chunk(&chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                "function": {"name": "w", "arguments": "{\"a\""}}]}),
            None,
        )));
        all.extend(events.on_chunk(&chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}),
            Some("tool_calls"),
        )));
        let (end, response) = events.finish(Usage::new(2, 3));
        all.extend(end);
        let kinds: Vec<&str> = all.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        let sequence: Vec<u64> = all
            .iter()
            .map(|e| e["sequence_number"].as_u64().unwrap())
            .collect();
        assert_eq!(sequence, (0..all.len() as u64).collect::<Vec<_>>());
        assert_eq!(all[6]["text"], "Let me");
        assert_eq!(all[12]["arguments"], "{\"a\":1}");
        assert_eq!(all[9]["output_index"], 1);
        assert_eq!(response["output"][1]["call_id"], "call_1");
        assert_eq!(response["output"][0]["content"][0]["text"], "Let me");
        assert_eq!(response["usage"]["output_tokens"], 3);
        assert_eq!(response["status"], "completed");
    }

    #[test]
    fn thinking_keeps_its_signature_and_a_failure_reports_the_output_so_far() {
        let request = ResponsesRequest::parse(br#"{"model":"m","input":"x"}"#).unwrap();
        let mut events = ResponseEvents::new(skeleton("resp_1", &request, 1));
        events.start();
        let first = events.on_chunk(&chunk(json!({"reasoning_content": "hm"}), None));
        assert_eq!(first[0]["type"], "response.output_item.added");
        assert_eq!(first[1]["type"], "response.reasoning_summary_part.added");
        assert_eq!(first[2]["delta"], "hm");
        events.on_chunk(&chunk(
            json!({"thinking_blocks": [{"type": "thinking", "thinking": "", "signature": "sig"}]}),
            None,
        ));
        events.on_chunk(&chunk(json!({"content": "ok"}), None));
        let failed = events.failed("boom");
        let response = &failed[0]["response"];
        assert_eq!(response["status"], "failed");
        let blocks: Value =
            serde_json::from_str(response["output"][0]["encrypted_content"].as_str().unwrap())
                .unwrap();
        assert_eq!(blocks[0]["signature"], "sig");
        assert_eq!(blocks[0]["thinking"], "hm");
        assert_eq!(response["output"][1]["content"][0]["text"], "ok");
    }
}
