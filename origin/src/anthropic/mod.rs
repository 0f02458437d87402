//! Anthropic's Messages API as Sluice's clients speak it (`/v1/messages`).
//! A request is kept whole for Anthropic upstreams, which get it natively,
//! and translated to an OpenAI chat request for every other provider
//! ([`to_chat`]); their answers and streams come back translated
//! ([`from_chat`]). The other direction, Sluice calling an Anthropic
//! upstream for an OpenAI client, is `crate::provider::anthropic`.

pub mod from_chat;
pub mod to_chat;

use crate::openai::ChatRequest;
use serde_json::{Map, Value};

/// One server-sent event of Anthropic's stream, its data parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub event: String,
    pub data: Value,
}

/// A `/v1/messages` request: the client's body and its chat translation.
#[derive(Debug, Clone)]
pub struct MessagesRequest {
    pub model: String,
    pub body: Map<String, Value>,
    /// `Err` when the request uses what only Anthropic models have (a
    /// server tool, say): it can then be served by Anthropic deployments only.
    pub chat: Result<ChatRequest, String>,
    /// What the chat translation dropped or changed (`to_chat::Translated`),
    /// reported when a non-Anthropic deployment serves the request.
    pub chat_adjusted: Vec<String>,
    /// The client's `anthropic-beta` header, passed to Anthropic upstreams.
    pub beta: Option<String>,
}

impl MessagesRequest {
    pub fn is_stream(&self) -> bool {
        self.body
            .get("stream")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    /// What the request is charged against a key's token budget up front.
    pub fn estimated_tokens(&self) -> u32 {
        match &self.chat {
            Ok(chat) => chat
                .estimated_prompt_tokens()
                .saturating_add(chat.max_output_tokens().unwrap_or(256)),
            Err(_) => crate::openai::estimate_tokens(&Value::Object(self.body.clone()).to_string()),
        }
    }
}
