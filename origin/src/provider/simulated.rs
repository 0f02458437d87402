//! The simulated provider: answers without any model, with a configurable time
//! to first token, generation speed and failure rates. For local runs and
//! benchmarks; every answer says it is simulated. `sluice-origin simulate`
//! serves it over HTTP as a stand-alone upstream.

use super::{Call, Completion, Embeddings, EventStream, Provider, ProviderError, StreamEvent};
use crate::config::SimulatedConfig;
use crate::openai::{ChatRequest, Role, Usage, estimate_tokens};
use futures::StreamExt;
use futures::future::BoxFuture;
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
    fn reply(call: Call<'_>, request: &ChatRequest) -> String {
        let last_user = request
            .messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(|m| m.text())
            .unwrap_or_default();
        let echoed: String = last_user.chars().take(200).collect();
        let mut reply = format!("[simulated {}] You said: {echoed}", call.model);
        if let Some(limit) = request.max_output_tokens() {
            let words: Vec<&str> = reply
                .split_whitespace()
                .take(limit.max(1) as usize)
                .collect();
            reply = words.join(" ");
        }
        reply
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

/// Words of `text` with their trailing space, the simulated tokens.
fn tokens(text: &str) -> Vec<String> {
    text.split_inclusive(' ').map(str::to_string).collect()
}

impl Provider for Simulated {
    fn kind(&self) -> &'static str {
        "simulated"
    }

    fn complete<'a>(
        &'a self,
        call: Call<'a>,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<Completion, ProviderError>> {
        Box::pin(async move {
            self.injected_failure()?;
            let content = Simulated::reply(call, request);
            let completion_tokens = tokens(&content).len() as u32;
            self.first_token_delay().await;
            let rest = self.token_interval() * completion_tokens.saturating_sub(1);
            if !rest.is_zero() {
                tokio::time::sleep(rest).await;
            }
            Ok(Completion {
                content,
                finish_reason: "stop".into(),
                usage: Some(Usage::new(
                    request.estimated_prompt_tokens(),
                    completion_tokens,
                )),
            })
        })
    }

    fn stream<'a>(
        &'a self,
        call: Call<'a>,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<EventStream, ProviderError>> {
        Box::pin(async move {
            self.injected_failure()?;
            let words = tokens(&Simulated::reply(call, request));
            let usage = Usage::new(request.estimated_prompt_tokens(), words.len() as u32);
            let ttft = Duration::from_millis(self.config.time_to_first_token_ms);
            let interval = self.token_interval();
            let deltas = futures::stream::iter(words.into_iter().enumerate()).then(
                move |(i, word)| async move {
                    let wait = if i == 0 { ttft } else { interval };
                    if !wait.is_zero() {
                        tokio::time::sleep(wait).await;
                    }
                    Ok(StreamEvent::Delta(word))
                },
            );
            let tail = futures::stream::iter([
                Ok(StreamEvent::Finish("stop".into())),
                Ok(StreamEvent::Usage(usage)),
            ]);
            Ok(deltas.chain(tail).boxed())
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
