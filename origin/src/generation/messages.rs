//! The Messages surface (`/v1/messages`): the same routing, usage records
//! and pricing as chat, answered in Anthropic's format. Anthropic
//! deployments get the client's body and answer natively (only `model` is
//! rewritten, to the name the client asked for); other deployments get the
//! chat translation and their answers are translated back. Nothing here is
//! reused across requests (no semantic cache, no coalescing).

use super::usage::record_usage;
use super::{
    BudgetNote, GenerateError, GenerationEvent, GenerationService, Metered, Streamed, bound,
};
use crate::anthropic::MessagesRequest;
use crate::anthropic::from_chat::{self, EventsFromChunks};
use crate::budgets::{Hold, Payer};
use crate::openai::Usage;
use crate::priority::Priority;
use crate::provider::SseEvent;
use crate::provider::anthropic::usage as anthropic_usage;
use crate::routing::messages::{MessagesReply, MessagesStream};
use crate::routing::{Deployment, RouteError, Served};
use futures::StreamExt;
use serde_json::{Value, json};
use std::sync::Arc;

/// A non-streamed Messages answer and what it used.
pub struct MessagesAnswer {
    pub body: Value,
    pub deployment: Arc<Deployment>,
    pub attempts: u32,
    pub adjusted: Vec<String>,
    pub usage: Usage,
    pub estimated: bool,
    pub cost_usd: f64,
    pub budget: BudgetNote,
}

impl Metered for SseEvent {
    /// Anthropic reports input at `message_start` and output (with, lately,
    /// the input again) at `message_delta`.
    fn note_usage(&self, usage: &mut Option<Usage>) {
        let reported = match self.event.as_str() {
            "message_start" => &self.data["message"]["usage"],
            "message_delta" => &self.data["usage"],
            _ => return,
        };
        if !reported.is_object() {
            return;
        }
        let mut next = anthropic_usage(reported);
        if let Some(before) = usage
            && reported.get("input_tokens").is_none()
        {
            next.prompt_tokens = before.prompt_tokens;
            next.cached_tokens = before.cached_tokens;
            next.cache_write_tokens = before.cache_write_tokens;
            next.total_tokens = next.prompt_tokens + next.completion_tokens;
        }
        *usage = Some(next);
    }

    fn estimated_tokens(&self) -> u32 {
        let delta = &self.data["delta"];
        ["text", "partial_json", "thinking"]
            .iter()
            .filter_map(|f| delta[*f].as_str())
            .map(crate::openai::estimate_tokens)
            .sum()
    }
}

impl GenerationService {
    /// Reserves a Messages call's worst case (see `bound`); its output cap is
    /// the request's `max_tokens`, which Anthropic's API requires and which
    /// includes any thinking (and goes to OpenAI-compatible deployments as
    /// `max_completion_tokens`).
    async fn reserve_messages(
        &self,
        payer: &Payer,
        request: &MessagesRequest,
    ) -> Result<(Hold, u32), GenerateError> {
        let settings = self.budgets.settings();
        let output = request
            .body
            .get("max_tokens")
            .and_then(Value::as_u64)
            .map_or(settings.default_output_tokens, |n| {
                u32::try_from(n).unwrap_or(u32::MAX)
            });
        let worst = || {
            let prompt =
                bound::messages_prompt_tokens(&request.body, u64::from(settings.image_tokens));
            self.worst_case_usd(&request.model, prompt, u64::from(output))
        };
        let hold = self.budgets.reserve(payer.clone(), worst).await?;
        Ok((hold, output))
    }

    pub async fn messages(
        &self,
        payer: &Payer,
        priority: Priority,
        request: Arc<MessagesRequest>,
    ) -> Result<MessagesAnswer, GenerateError> {
        let (hold, _) = self.reserve_messages(payer, &request).await?;
        let served = self.engine.messages(Arc::clone(&request), priority).await?;
        let (body, usage, estimated) = match served.value {
            MessagesReply::Native(mut body) => {
                let usage = body
                    .get("usage")
                    .filter(|u| u.is_object())
                    .map(anthropic_usage);
                body["model"] = json!(request.model);
                let estimated = usage.is_none();
                let usage = usage.unwrap_or_else(|| Usage::new(request.estimated_tokens(), 0));
                (body, usage, estimated)
            }
            MessagesReply::Translated(response) => {
                let (usage, estimated) = match response.usage() {
                    Some(usage) => (usage, false),
                    None => {
                        let prompt = request
                            .chat
                            .as_ref()
                            .map_or(0, |c| c.estimated_prompt_tokens());
                        (
                            Usage::new(prompt, response.estimated_completion_tokens()),
                            true,
                        )
                    }
                };
                (
                    from_chat::message(&response, &request.model, usage),
                    usage,
                    estimated,
                )
            }
        };
        let cost_usd = record_usage(
            &self.usage,
            &hold,
            &request.model,
            &served.deployment,
            usage,
            estimated,
        );
        let remaining = hold.settle(cost_usd).await;
        Ok(MessagesAnswer {
            body,
            deployment: served.deployment,
            attempts: served.attempts,
            adjusted: served.adjusted,
            usage,
            estimated,
            cost_usd,
            budget: BudgetNote {
                remaining,
                output_cap: None,
            },
        })
    }

    /// A streamed Messages answer as Anthropic's events.
    pub async fn messages_stream(
        &self,
        payer: &Payer,
        priority: Priority,
        request: Arc<MessagesRequest>,
    ) -> Result<Streamed<SseEvent>, GenerateError> {
        let (hold, output) = self.reserve_messages(payer, &request).await?;
        let cap = hold.is_open().then_some(output);
        let served = self
            .engine
            .messages_stream(Arc::clone(&request), priority)
            .await?;
        let model = request.model.clone();
        let prompt_estimate = request
            .chat
            .as_ref()
            .map_or(0, |c| c.estimated_prompt_tokens());
        let (deployment, attempts, adjusted) =
            (served.deployment, served.attempts, served.adjusted);
        match served.value {
            MessagesStream::Native(stream) => {
                let alias = model.clone();
                let renamed = stream
                    .map(move |event| {
                        event.map(|mut event| {
                            if event.event == "message_start" {
                                event.data["message"]["model"] = json!(alias);
                            }
                            event
                        })
                    })
                    .boxed();
                Ok(self.metered(
                    Served {
                        value: renamed,
                        deployment,
                        attempts,
                        adjusted,
                    },
                    hold,
                    cap,
                    None,
                    model,
                    prompt_estimate,
                    None,
                ))
            }
            MessagesStream::Translated(chunks) => {
                let metered = self.metered(
                    Served {
                        value: chunks,
                        deployment,
                        attempts,
                        adjusted,
                    },
                    hold,
                    cap,
                    None,
                    model.clone(),
                    prompt_estimate,
                    None,
                );
                let mut events = EventsFromChunks::new(&model);
                let translated = metered.events.flat_map(move |event| {
                    let out: Vec<GenerationEvent<SseEvent>> = match event {
                        GenerationEvent::Chunk(chunk) => events
                            .on_chunk(&chunk)
                            .into_iter()
                            .map(GenerationEvent::Chunk)
                            .collect(),
                        GenerationEvent::Failed(error) => vec![GenerationEvent::Failed(error)],
                        GenerationEvent::BudgetReached(message) => {
                            vec![GenerationEvent::BudgetReached(message)]
                        }
                        GenerationEvent::Done { usage } => {
                            let mut out: Vec<_> = events
                                .finish(usage)
                                .into_iter()
                                .map(GenerationEvent::Chunk)
                                .collect();
                            out.push(GenerationEvent::Done { usage });
                            out
                        }
                    };
                    futures::stream::iter(out)
                });
                Ok(Streamed {
                    events: Box::pin(translated),
                    deployment: metered.deployment,
                    attempts: metered.attempts,
                    adjusted: metered.adjusted,
                    budget: metered.budget,
                    usage: metered.usage,
                })
            }
        }
    }

    /// `/v1/messages/count_tokens`: Anthropic's count when the alias has an
    /// Anthropic deployment, else Sluice's estimate.
    pub async fn count_tokens(
        &self,
        priority: Priority,
        request: Arc<MessagesRequest>,
    ) -> Result<(Value, Arc<Deployment>), RouteError> {
        let served = self
            .engine
            .count_tokens(Arc::clone(&request), priority)
            .await?;
        let body = served.value.unwrap_or_else(|| {
            let tokens = request.chat.as_ref().map_or_else(
                |_| request.estimated_tokens(),
                |chat| chat.estimated_prompt_tokens(),
            );
            json!({ "input_tokens": tokens })
        });
        Ok((body, served.deployment))
    }
}
