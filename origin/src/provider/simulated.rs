//! The simulated provider: answers without any model, with a configurable
//! time to first token and generation speed. For local runs and benchmarks;
//! every response says it is simulated.

use super::{ChatProvider, Completion, ProviderError};
use crate::config::SimulatedConfig;
use crate::openai::{ChatRequest, Role, Usage, estimate_tokens};
use futures::future::BoxFuture;
use std::time::Duration;

pub struct Simulated {
    config: SimulatedConfig,
}

impl Simulated {
    pub fn new(config: SimulatedConfig) -> Simulated {
        Simulated { config }
    }

    /// A deterministic reply that echoes (a bounded part of) the last user turn.
    fn reply(request: &ChatRequest) -> String {
        let last_user = request
            .messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(|m| m.text())
            .unwrap_or_default();
        let echoed: String = last_user.chars().take(200).collect();
        let mut reply = format!("[simulated {}] You said: {echoed}", request.model);
        if let Some(limit) = request.max_completion_tokens.or(request.max_tokens) {
            let words: Vec<&str> = reply
                .split_whitespace()
                .take(limit.max(1) as usize)
                .collect();
            reply = words.join(" ");
        }
        reply
    }
}

impl ChatProvider for Simulated {
    fn name(&self) -> &'static str {
        "simulated"
    }

    fn complete<'a>(
        &'a self,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<Completion, ProviderError>> {
        Box::pin(async move {
            let content = Simulated::reply(request);
            let completion_tokens = content.split_whitespace().count() as u32;
            let mut delay = Duration::from_millis(self.config.time_to_first_token_ms);
            if self.config.tokens_per_second > 0 {
                delay += Duration::from_secs_f64(
                    f64::from(completion_tokens) / self.config.tokens_per_second as f64,
                );
            }
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let prompt_tokens = request
                .messages
                .iter()
                .map(|m| estimate_tokens(&m.text()) + 4)
                .sum();
            Ok(Completion {
                content,
                finish_reason: "stop",
                usage: Usage {
                    prompt_tokens,
                    completion_tokens,
                    total_tokens: prompt_tokens + completion_tokens,
                },
            })
        })
    }
}
