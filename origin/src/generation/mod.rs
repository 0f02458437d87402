//! Generation: one service turns a chat request into an answer or a stream
//! for every surface that asks for one (`/v1/chat/completions`, conversation
//! turns, queued jobs). The semantic cache, coalescing, routing, usage
//! records and pricing happen inside it, once; the surfaces only parse their
//! input and render the result in their own shape.

pub mod handlers;
pub mod messages;
pub mod parse;
pub mod render;
pub mod semantic;
pub mod stream;
pub mod usage;

use crate::config::Config;
use crate::openai::{
    ChatChunk, ChatRequest, ChatResponse, EmbeddingsRequest, Usage, estimate_tokens,
};
use crate::priority::Priority;
use crate::provider::{Embeddings, ProviderError};
use crate::routing::{Answer, Deployment, Engine, RouteError, Served};
use axum::body::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use semantic::{Lookup, SemanticCache};
use sha2::{Digest, Sha256};
use std::pin::Pin;
use std::sync::Arc;
use usage::{UsageLog, record_usage};

/// Who is asking: each surface has its own [`Reuse`] setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    ChatCompletions,
    ConversationTurn,
    Job,
    /// `/v1/responses`: stored per caller, so never answered from others' answers.
    Responses,
}

/// Whether a surface's requests may be answered from other requests' answers:
/// the semantic cache (similar prompts, same caller) and coalescing
/// (identical requests in flight at once, same caller).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reuse {
    pub semantic_cache: bool,
    pub coalesce: bool,
}

/// The reuse settings of every surface, from the config: chat completions
/// follow `[routing] coalesce` and use the semantic cache whenever it is
/// configured; turns and jobs follow `[conversations]` and `[queue]`
/// (`semantic_cache`, `coalesce`; both off by default, since a turn's or a
/// job's answer is stored and a shared one would be stored twice).
#[derive(Debug, Clone, Copy, Default)]
pub struct ReusePolicy {
    pub chat: Reuse,
    pub turns: Reuse,
    pub jobs: Reuse,
}

impl ReusePolicy {
    pub fn from_config(config: &Config) -> ReusePolicy {
        ReusePolicy {
            chat: Reuse {
                semantic_cache: true,
                coalesce: config.routing.coalesce,
            },
            turns: Reuse {
                semantic_cache: config.conversations.semantic_cache,
                coalesce: config.conversations.coalesce,
            },
            jobs: Reuse {
                semantic_cache: config.queue.semantic_cache,
                coalesce: config.queue.coalesce,
            },
        }
    }

    fn of(&self, surface: Surface) -> Reuse {
        match surface {
            Surface::ChatCompletions => self.chat,
            Surface::ConversationTurn => self.turns,
            Surface::Job => self.jobs,
            Surface::Responses => Reuse::default(),
        }
    }
}

/// One request to generate.
pub struct Generate {
    pub surface: Surface,
    pub request: Arc<ChatRequest>,
    /// The principal: usage is recorded and answers are reused per subject.
    pub subject: String,
    pub priority: Priority,
    /// What identifies the request for coalescing: the client's bytes, or
    /// the serialised request when Sluice built it.
    pub fingerprint: Bytes,
    /// The client sent `Cache-Control: no-cache` or `no-store`.
    pub refuses_cache: bool,
}

/// A non-streamed answer: OpenAI's body and where it came from.
pub struct Completion {
    pub body: ChatResponse,
    pub source: Source,
    /// `hit`, `miss` or `bypass` when the semantic cache applies to the surface.
    pub semantic_cache: Option<&'static str>,
}

pub enum Source {
    Upstream {
        served: Served<Answer>,
        cost_usd: f64,
        /// Another identical request's call answered this one (no usage recorded).
        coalesced: bool,
    },
    SemanticCache {
        similarity: f32,
    },
}

/// What a generated stream yields: the upstream's chunks (or, on the
/// Messages surface, events) as they come, then how it ended.
#[derive(Debug)]
pub enum GenerationEvent<T = ChatChunk> {
    Chunk(T),
    /// The upstream failed after the stream began; nothing follows.
    Failed(ProviderError),
    /// The upstream ended normally; usage has been recorded.
    Done {
        usage: Usage,
    },
}

/// A streamed answer and where it goes.
pub struct Streamed<T = ChatChunk> {
    pub events: Pin<Box<dyn Stream<Item = GenerationEvent<T>> + Send>>,
    pub deployment: Arc<Deployment>,
    pub attempts: u32,
}

/// Embeddings with their usage recorded.
pub struct Embedded {
    pub served: Served<Embeddings>,
    pub usage: Usage,
    pub estimated: bool,
    pub cost_usd: f64,
}

#[derive(Clone)]
pub struct GenerationService {
    engine: Arc<Engine>,
    /// `None` unless `[cache.semantic] embeddings_model` is set.
    semantic: Option<Arc<SemanticCache>>,
    usage: UsageLog,
    reuse: ReusePolicy,
}

impl GenerationService {
    pub fn new(
        engine: Arc<Engine>,
        semantic: Option<Arc<SemanticCache>>,
        usage: UsageLog,
        reuse: ReusePolicy,
    ) -> GenerationService {
        GenerationService {
            engine,
            semantic,
            usage,
            reuse,
        }
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    pub fn semantic(&self) -> Option<&SemanticCache> {
        self.semantic.as_deref()
    }

    pub fn has_model(&self, model: &str) -> bool {
        self.engine.has_model(model)
    }

    /// A non-streamed answer (the request's `stream` is not looked at).
    pub async fn complete(&self, generate: Generate) -> Result<Completion, RouteError> {
        let reuse = self.reuse.of(generate.surface);
        let request = &generate.request;
        let mut semantic_cache = None;
        let mut pending = None;
        if let (Some(cache), true) = (&self.semantic, reuse.semantic_cache) {
            semantic_cache = Some("bypass");
            if SemanticCache::eligible(request) && !generate.refuses_cache {
                match cache
                    .lookup(&generate.subject, request, generate.priority)
                    .await
                {
                    Some(Lookup::Hit { body, similarity }) => {
                        let mut body = (*body).clone();
                        body.set("id", crate::openai::completion_id().into());
                        body.set("created", crate::clock::unix_now().into());
                        return Ok(Completion {
                            body,
                            source: Source::SemanticCache { similarity },
                            semantic_cache: Some("hit"),
                        });
                    }
                    Some(Lookup::Miss(miss)) => {
                        semantic_cache = Some("miss");
                        pending = Some(miss);
                    }
                    None => {}
                }
            }
        }
        // Same caller, same bytes: one upstream call for all of them.
        let coalesce_key = reuse.coalesce.then(|| {
            let mut hash = Sha256::new();
            hash.update(generate.subject.as_bytes());
            hash.update([0]);
            hash.update(&generate.fingerprint);
            hash.finalize().into()
        });
        let (served, coalesced) = self
            .engine
            .complete(Arc::clone(request), generate.priority, coalesce_key)
            .await?;
        // The one field of the answer Sluice rewrites: the client's model name.
        let mut body = served.value.response.clone();
        body.set("model", request.model.clone().into());
        // A coalesced follower did not cause a call: only the leader records it
        // (and has stored the answer in the semantic cache).
        let cost_usd = if coalesced {
            served.deployment.pricing.cost_usd(served.value.usage)
        } else {
            if let (Some(cache), Some(pending)) = (&self.semantic, pending) {
                cache.store(pending, &body);
            }
            record_usage(
                &self.usage,
                &generate.subject,
                &request.model,
                &served.deployment,
                served.value.usage,
                served.value.usage_estimated,
            )
        };
        Ok(Completion {
            body,
            source: Source::Upstream {
                served,
                cost_usd,
                coalesced,
            },
            semantic_cache,
        })
    }

    /// A streamed answer. Retries and fallback happen only until the
    /// upstream's first event; usage is recorded when the stream ends
    /// normally (estimated when the upstream sent none).
    pub async fn stream(&self, generate: Generate) -> Result<Streamed, RouteError> {
        let request = generate.request;
        let served = self
            .engine
            .stream(Arc::clone(&request), generate.priority)
            .await?;
        Ok(self.metered(
            served,
            generate.subject,
            request.model.clone(),
            request.estimated_prompt_tokens(),
        ))
    }

    /// A stream whose usage is recorded when it ends (estimated when the
    /// upstream reported none).
    fn metered<T: Metered>(
        &self,
        served: Served<BoxStream<'static, Result<T, ProviderError>>>,
        subject: String,
        model: String,
        prompt_estimate: u32,
    ) -> Streamed<T> {
        let meter = Meter {
            events: Some(served.value),
            deployment: Arc::clone(&served.deployment),
            subject,
            model,
            prompt_estimate,
            completion_estimate: 0,
            usage: None,
            log: self.usage.clone(),
        };
        Streamed {
            events: Box::pin(futures::stream::unfold(meter, Meter::next)),
            deployment: served.deployment,
            attempts: served.attempts,
        }
    }

    pub async fn embed(
        &self,
        subject: &str,
        request: &EmbeddingsRequest,
        priority: Priority,
    ) -> Result<Embedded, RouteError> {
        let inputs = Arc::new(request.input.clone().into_vec());
        let served = self
            .engine
            .embed(&request.model, Arc::clone(&inputs), priority)
            .await?;
        let prompt_tokens = served
            .value
            .prompt_tokens
            .unwrap_or_else(|| inputs.iter().map(|t| estimate_tokens(t)).sum());
        let usage = Usage::new(prompt_tokens, 0);
        let estimated = served.value.prompt_tokens.is_none();
        let cost_usd = record_usage(
            &self.usage,
            subject,
            &request.model,
            &served.deployment,
            usage,
            estimated,
        );
        Ok(Embedded {
            served,
            usage,
            estimated,
            cost_usd,
        })
    }
}

/// What a metered stream's items tell about usage.
pub trait Metered: Send + 'static {
    /// Folds the usage this item reports into `usage`.
    fn note_usage(&self, usage: &mut Option<Usage>);
    /// Generated tokens in this item, estimated.
    fn estimated_tokens(&self) -> u32;
}

impl Metered for ChatChunk {
    fn note_usage(&self, usage: &mut Option<Usage>) {
        if let Some(reported) = self.usage() {
            *usage = Some(reported);
        }
    }

    fn estimated_tokens(&self) -> u32 {
        ChatChunk::estimated_tokens(self)
    }
}

/// Follows a stream's usage; dropping it unfinished means the client left.
struct Meter<T> {
    events: Option<BoxStream<'static, Result<T, ProviderError>>>,
    deployment: Arc<Deployment>,
    subject: String,
    model: String,
    prompt_estimate: u32,
    completion_estimate: u32,
    usage: Option<Usage>,
    log: UsageLog,
}

impl<T: Metered> Meter<T> {
    async fn next(mut self) -> Option<(GenerationEvent<T>, Meter<T>)> {
        let events = self.events.as_mut()?;
        let event = match events.next().await {
            Some(Ok(item)) => {
                self.completion_estimate += item.estimated_tokens();
                item.note_usage(&mut self.usage);
                GenerationEvent::Chunk(item)
            }
            Some(Err(error)) => {
                tracing::warn!(event = "stream_failed", deployment = %self.deployment.name,
                    error = %error, "upstream failed mid-stream");
                self.events = None;
                GenerationEvent::Failed(error)
            }
            None => {
                self.events = None;
                let (usage, estimated) = match self.usage {
                    Some(usage) => (usage, false),
                    None => (
                        Usage::new(self.prompt_estimate, self.completion_estimate),
                        true,
                    ),
                };
                record_usage(
                    &self.log,
                    &self.subject,
                    &self.model,
                    &self.deployment,
                    usage,
                    estimated,
                );
                GenerationEvent::Done { usage }
            }
        };
        Some((event, self))
    }
}

impl<T> Drop for Meter<T> {
    fn drop(&mut self) {
        if self.events.is_some() {
            tracing::info!(event = "stream_cancelled", deployment = %self.deployment.name,
                subject = %self.subject, "client went away; upstream call dropped");
            metrics::counter!("sluice_streams_cancelled_total").increment(1);
        }
    }
}
