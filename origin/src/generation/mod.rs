//! Generation: one service turns a chat request into an answer or a stream
//! for every surface that asks for one (`/v1/chat/completions`, conversation
//! turns, queued jobs). The semantic cache, coalescing, routing, usage
//! records and pricing happen inside it, once; the surfaces only parse their
//! input and render the result in their own shape.

pub mod bound;
pub mod handlers;
pub mod messages;
pub mod parse;
pub mod render;
pub mod semantic;
pub mod stream;
pub mod usage;
pub mod usage_report;

use crate::budgets::{BudgetError, Budgets, Hold, Payer, Remaining};
use crate::config::Config;
use crate::openai::{
    ChatChunk, ChatRequest, ChatResponse, EmbeddingsRequest, Usage, estimate_tokens,
};
use crate::priority::Priority;
use crate::provider::{Embeddings, ProviderError};
use crate::reasoning::{ReasoningStore, ReasoningTrace};
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
    /// The principal: usage is recorded and budgets charged to it, and
    /// answers are reused per subject.
    pub payer: Payer,
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
    pub budget: BudgetNote,
}

/// What a budgeted call tells the client: the tightest budget's remainder,
/// and the output cap Sluice set because the request had none.
#[derive(Debug, Clone, Default)]
pub struct BudgetNote {
    pub remaining: Option<Remaining>,
    pub output_cap: Option<u32>,
}

/// A chat call's reservation and the request as it goes upstream.
struct Reserved {
    hold: Hold,
    /// With the output cap set when the budget needed one.
    request: Arc<ChatRequest>,
    /// That cap (`x-sluice-output-cap`).
    output_cap: Option<u32>,
    /// Output tokens the reservation covers, when a budget applies.
    output_bound: Option<u32>,
}

/// Why a call was not made or not finished.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error(transparent)]
    Budget(#[from] BudgetError),
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
    /// Sluice ended the stream: it reached what its budget reservation
    /// covers. Usage (estimated) has been recorded; nothing follows.
    BudgetReached(String),
}

/// A streamed answer and where it goes.
pub struct Streamed<T = ChatChunk> {
    pub events: Pin<Box<dyn Stream<Item = GenerationEvent<T>> + Send>>,
    pub deployment: Arc<Deployment>,
    pub attempts: u32,
    /// What the serving provider changed of the request (`x-sluice-adjusted`).
    pub adjusted: Vec<String>,
    /// For a stream, `remaining` is as it stood before the call.
    pub budget: BudgetNote,
    /// The usage recorded when the stream ended, for the edge's token limits.
    pub usage: UsageCell,
}

/// Filled once, with the usage recorded when a stream ends (reported, or
/// estimated when it ended early); read after its last event.
#[derive(Debug, Clone, Default)]
pub struct UsageCell(Arc<std::sync::OnceLock<Usage>>);

impl UsageCell {
    pub fn get(&self) -> Option<Usage> {
        self.0.get().copied()
    }

    fn set(&self, usage: Usage) {
        let _ = self.0.set(usage);
    }
}

/// Embeddings with their usage recorded.
pub struct Embedded {
    pub served: Served<Embeddings>,
    pub usage: Usage,
    pub estimated: bool,
    pub cost_usd: f64,
    pub budget: BudgetNote,
}

#[derive(Clone)]
pub struct GenerationService {
    engine: Arc<Engine>,
    /// `None` unless `[cache.semantic] embeddings_model` is set.
    semantic: Option<Arc<SemanticCache>>,
    usage: UsageLog,
    reuse: ReusePolicy,
    budgets: Budgets,
    /// Thinking kept for tool loops (`crate::reasoning`); `None` keeps none.
    reasoning: Option<ReasoningStore>,
}

impl GenerationService {
    pub fn new(
        engine: Arc<Engine>,
        semantic: Option<Arc<SemanticCache>>,
        usage: UsageLog,
        reuse: ReusePolicy,
        budgets: Budgets,
        reasoning: Option<ReasoningStore>,
    ) -> GenerationService {
        GenerationService {
            engine,
            semantic,
            usage,
            reuse,
            budgets,
            reasoning,
        }
    }

    /// Puts back the thinking kept for the request's tool loop when a
    /// deployment of its model is Anthropic's, which refuses the loop's next
    /// step without it (`crate::reasoning`).
    async fn restore_thinking(&self, payer: &Payer, request: Arc<ChatRequest>) -> Arc<ChatRequest> {
        let Some(store) = &self.reasoning else {
            return request;
        };
        if !self.has_anthropic(&request.model) {
            return request;
        }
        store.restore(&payer.subject, request).await
    }

    pub fn budgets(&self) -> &Budgets {
        &self.budgets
    }

    pub fn reasoning(&self) -> Option<&ReasoningStore> {
        self.reasoning.as_ref()
    }

    /// Reserves a chat call's worst case (`bound`): the prompt that goes
    /// upstream, stored context and restored thinking included, the output
    /// cap per answer asked for (or what thinking raises it to), both at the
    /// dearest price among the model's deployments. Under a budget, a
    /// request without a cap gets the default one set (returned), so the
    /// worst case holds. Also returns the output bound, past which a stream
    /// is cut (when a budget applies).
    async fn reserve_chat(
        &self,
        payer: &Payer,
        request: &Arc<ChatRequest>,
    ) -> Result<Reserved, GenerateError> {
        let settings = self.budgets.settings();
        let cap = request
            .max_output_tokens()
            .unwrap_or(settings.default_output_tokens);
        let anthropic = self.has_anthropic(&request.model);
        let output = bound::chat_output_tokens(request, cap, anthropic);
        let worst = || {
            let prompt = bound::chat_prompt_tokens(request, u64::from(settings.image_tokens));
            self.worst_case_usd(&request.model, prompt, output)
        };
        let hold = self.budgets.reserve(payer.clone(), worst).await?;
        let (request, output_cap) = if hold.is_open() && request.max_output_tokens().is_none() {
            let mut capped = (**request).clone();
            capped.set("max_tokens", cap.into());
            (Arc::new(capped), Some(cap))
        } else {
            (Arc::clone(request), None)
        };
        let output_bound = hold
            .is_open()
            .then(|| u32::try_from(output).unwrap_or(u32::MAX));
        Ok(Reserved {
            hold,
            request,
            output_cap,
            output_bound,
        })
    }

    /// Whether a deployment of the model speaks Anthropic's API.
    fn has_anthropic(&self, model: &str) -> bool {
        self.engine
            .deployments(model)
            .iter()
            .any(|d| d.provider.messages_api().is_some())
    }

    /// The dearest the model's deployments charge for `prompt` and `output` tokens.
    fn worst_case_usd(&self, model: &str, prompt: u64, output: u64) -> f64 {
        self.engine
            .deployments(model)
            .iter()
            .map(|d| {
                let p = &d.pricing;
                let input = p
                    .input_per_million
                    .max(p.cached_input_per_million.unwrap_or(0.0))
                    .max(p.cache_write_per_million.unwrap_or(0.0));
                let out = p
                    .output_per_million
                    .max(p.reasoning_per_million.unwrap_or(0.0));
                (prompt as f64 * input + output as f64 * out) / 1e6
            })
            .fold(0.0, f64::max)
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
    pub async fn complete(&self, generate: Generate) -> Result<Completion, GenerateError> {
        let reuse = self.reuse.of(generate.surface);
        let request = &generate.request;
        let mut semantic_cache = None;
        let mut pending = None;
        if let (Some(cache), true) = (&self.semantic, reuse.semantic_cache) {
            semantic_cache = Some("bypass");
            if SemanticCache::eligible(request) && !generate.refuses_cache {
                match cache
                    .lookup(&generate.payer.subject, request, generate.priority)
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
                            budget: BudgetNote::default(),
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
            hash.update(generate.payer.subject.as_bytes());
            hash.update([0]);
            hash.update(&generate.fingerprint);
            hash.finalize().into()
        });
        // Restored first: the thinking a tool loop gets back is prompt too.
        let restored = self
            .restore_thinking(&generate.payer, Arc::clone(request))
            .await;
        let Reserved {
            hold,
            request: upstream_request,
            output_cap,
            ..
        } = self.reserve_chat(&generate.payer, &restored).await?;
        let (served, coalesced) = self
            .engine
            .complete(upstream_request, generate.priority, coalesce_key)
            .await?;
        if let (Some(store), Some(message)) = (&self.reasoning, served.value.response.message()) {
            store
                .remember_logged(&generate.payer.subject, ReasoningTrace::of_message(message))
                .await;
        }
        // The one field of the answer Sluice rewrites: the client's model name.
        let mut body = served.value.response.clone();
        body.set("model", request.model.clone().into());
        // A coalesced follower did not cause a call: only the leader records
        // and pays for it (and has stored the answer in the semantic cache).
        let (cost_usd, remaining) = if coalesced {
            let remaining = hold.remaining_before();
            drop(hold);
            (
                served.deployment.pricing.cost_usd(served.value.usage),
                remaining,
            )
        } else {
            if let (Some(cache), Some(pending)) = (&self.semantic, pending) {
                cache.store(pending, &body);
            }
            let cost = record_usage(
                &self.usage,
                &hold,
                &request.model,
                &served.deployment,
                served.value.usage,
                served.value.usage_estimated,
            );
            (cost, hold.settle(cost).await)
        };
        Ok(Completion {
            body,
            source: Source::Upstream {
                served,
                cost_usd,
                coalesced,
            },
            semantic_cache,
            budget: BudgetNote {
                remaining,
                output_cap,
            },
        })
    }

    /// A streamed answer. Retries and fallback happen only until the
    /// upstream's first event; usage is recorded when the stream ends
    /// normally (estimated when the upstream sent none).
    pub async fn stream(&self, generate: Generate) -> Result<Streamed, GenerateError> {
        let request = generate.request;
        let restored = self
            .restore_thinking(&generate.payer, Arc::clone(&request))
            .await;
        let Reserved {
            hold,
            request: upstream_request,
            output_cap,
            output_bound,
        } = self.reserve_chat(&generate.payer, &restored).await?;
        let served = self
            .engine
            .stream(upstream_request, generate.priority)
            .await?;
        let keep = self
            .reasoning
            .clone()
            .map(|store| (store, generate.payer.subject.clone()));
        Ok(self.metered(
            served,
            hold,
            output_bound,
            output_cap,
            request.model.clone(),
            request.estimated_prompt_tokens(),
            keep,
        ))
    }

    /// A stream whose usage is recorded when it ends (estimated when the
    /// upstream reported none).
    /// `cap`: the output tokens the budget reservation covers, past which
    /// the stream is ended (`None` when no budget applies). `keep`: where
    /// (and for whom) the stream's tool-loop thinking is kept.
    #[expect(
        clippy::too_many_arguments,
        reason = "one call site per surface, each naming all"
    )]
    fn metered<T: Metered>(
        &self,
        served: Served<BoxStream<'static, Result<T, ProviderError>>>,
        hold: Hold,
        cap: Option<u32>,
        output_cap: Option<u32>,
        model: String,
        prompt_estimate: u32,
        keep: Option<(ReasoningStore, String)>,
    ) -> Streamed<T> {
        let budget = BudgetNote {
            remaining: hold.remaining_before(),
            output_cap,
        };
        let meter = Meter {
            events: Some(served.value),
            deployment: Arc::clone(&served.deployment),
            hold: Some(hold),
            cap,
            model,
            prompt_estimate,
            completion_estimate: 0,
            content_chunks: 0,
            usage: None,
            recorded: UsageCell::default(),
            log: self.usage.clone(),
            trace: keep.map(|keep| (ReasoningTrace::default(), keep)),
        };
        let usage = meter.recorded.clone();
        Streamed {
            events: Box::pin(futures::stream::unfold(meter, Meter::next)),
            deployment: served.deployment,
            attempts: served.attempts,
            adjusted: served.adjusted,
            budget,
            usage,
        }
    }

    pub async fn embed(
        &self,
        payer: &Payer,
        request: &EmbeddingsRequest,
        priority: Priority,
    ) -> Result<Embedded, GenerateError> {
        let inputs = Arc::new(request.input.clone().into_vec());
        let worst = || {
            let bytes: usize = inputs.iter().map(|i| i.len() + 8).sum();
            self.worst_case_usd(&request.model, bytes as u64, 0)
        };
        let hold = self.budgets.reserve(payer.clone(), worst).await?;
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
            &hold,
            &request.model,
            &served.deployment,
            usage,
            estimated,
        );
        let remaining = hold.settle(cost_usd).await;
        Ok(Embedded {
            served,
            usage,
            estimated,
            cost_usd,
            budget: BudgetNote {
                remaining,
                output_cap: None,
            },
        })
    }
}

/// What a metered stream's items tell about usage.
pub trait Metered: Send + 'static {
    /// Folds the usage this item reports into `usage`.
    fn note_usage(&self, usage: &mut Option<Usage>);
    /// Generated tokens in this item, estimated.
    fn estimated_tokens(&self) -> u32;
    /// Folds what this item says of the answer's reasoning into `trace`.
    fn trace_reasoning(&self, _trace: &mut ReasoningTrace) {}
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

    fn trace_reasoning(&self, trace: &mut ReasoningTrace) {
        trace.on_chunk(self);
    }
}

/// Follows a stream's usage; dropping it unfinished means the client left.
struct Meter<T> {
    events: Option<BoxStream<'static, Result<T, ProviderError>>>,
    deployment: Arc<Deployment>,
    /// Taken when the stream ends, however it ends.
    hold: Option<Hold>,
    /// Output tokens the reservation covers (see [`GenerationService::metered`]).
    cap: Option<u32>,
    model: String,
    prompt_estimate: u32,
    completion_estimate: u32,
    /// Chunks that carried generated text.
    content_chunks: u32,
    usage: Option<Usage>,
    recorded: UsageCell,
    log: UsageLog,
    /// The stream's reasoning, kept when it ends normally, for its caller.
    trace: Option<(ReasoningTrace, (ReasoningStore, String))>,
}

impl<T: Metered> Meter<T> {
    async fn next(mut self) -> Option<(GenerationEvent<T>, Meter<T>)> {
        let events = self.events.as_mut()?;
        let event = match events.next().await {
            Some(Ok(item)) => {
                let tokens = item.estimated_tokens();
                self.completion_estimate += tokens;
                self.content_chunks += u32::from(tokens > 0);
                item.note_usage(&mut self.usage);
                if let Some((trace, _)) = &mut self.trace {
                    item.trace_reasoning(trace);
                }
                GenerationEvent::Chunk(item)
            }
            Some(Err(error)) => {
                tracing::warn!(event = "stream_failed", deployment = %self.deployment.name,
                    error = %error, "upstream failed mid-stream");
                self.deployment.stream_failed(&error);
                self.events = None;
                // What was generated before the failure is paid for.
                self.finish(true).await;
                GenerationEvent::Failed(error)
            }
            None => {
                self.events = None;
                let usage = self.finish(false).await;
                if let Some((trace, (store, subject))) = self.trace.take() {
                    store.remember_logged(&subject, trace.finish()).await;
                }
                GenerationEvent::Done { usage }
            }
        };
        if let (GenerationEvent::Chunk(_), Some(cap)) = (&event, self.cap)
            && self.content_chunks > cap
            && self.events.is_some()
        {
            // Each content chunk holds at least one token: past `cap` of
            // them, the upstream ignores the cap it was given. End the call
            // before it costs more than was reserved (by one chunk at most).
            self.events = None;
            self.finish(true).await;
            tracing::warn!(event = "stream_budget_reached", deployment = %self.deployment.name,
                cap, "stream ended at its budget reservation");
            metrics::counter!("sluice_budget_streams_cut_total").increment(1);
            let message = format!(
                "The stream was ended past {cap} output tokens, all that its budget \
                 reservation covers: the model did not stop at `max_tokens`."
            );
            return Some((GenerationEvent::BudgetReached(message), self));
        }
        Some((event, self))
    }

    /// The usage so far: reported, or estimated (always estimated when the
    /// stream did not end normally); recorded and settled.
    fn usage_so_far(&self, ended_early: bool) -> (Usage, bool) {
        match self.usage {
            Some(usage) if !ended_early => (usage, false),
            _ => (
                Usage::new(self.prompt_estimate, self.completion_estimate),
                true,
            ),
        }
    }

    async fn finish(&mut self, ended_early: bool) -> Usage {
        let (usage, estimated) = self.usage_so_far(ended_early);
        self.recorded.set(usage);
        let Some(hold) = self.hold.take() else {
            return usage;
        };
        let cost = record_usage(
            &self.log,
            &hold,
            &self.model,
            &self.deployment,
            usage,
            estimated,
        );
        hold.settle(cost).await;
        usage
    }
}

impl<T> Drop for Meter<T> {
    fn drop(&mut self) {
        if self.events.is_none() {
            return;
        }
        let Some(hold) = self.hold.take() else { return };
        tracing::info!(event = "stream_cancelled", deployment = %self.deployment.name,
            subject = %hold.payer.subject, "client went away; upstream call dropped");
        metrics::counter!("sluice_streams_cancelled_total").increment(1);
        // What was generated until the client left is paid for.
        let usage = Usage::new(self.prompt_estimate, self.completion_estimate);
        let cost = record_usage(&self.log, &hold, &self.model, &self.deployment, usage, true);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(hold.settle(cost));
        }
    }
}
