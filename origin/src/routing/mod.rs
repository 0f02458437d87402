//! From a client's model name to the best upstream call available: the
//! alias's deployments in order (a weighted pick for the first), each behind a
//! breaker, each with a key pool; retries with backoff for retryable failures;
//! fallback to the next deployment; identical concurrent requests coalesced.

pub mod keypool;
pub mod resilience;

pub use resilience::{BreakerState, backoff};

use crate::config::{Config, ProviderKind};
use crate::openai::{ChatRequest, Usage, estimate_tokens};
use crate::priority::Priority;
use crate::provider::anthropic::Anthropic;
use crate::provider::openai_compat::OpenAiCompatible;
use crate::provider::simulated::Simulated;
use crate::provider::{
    Call, Completion, Embeddings, EventStream, Provider, ProviderError, StreamEvent,
};
use futures::future::{BoxFuture, FutureExt, Shared, WeakShared};
use futures::{Stream, StreamExt};
use keypool::{Exhausted, KeyBudgets, KeyHealth, KeyPool, Lease};
use resilience::Breaker;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Price of a deployment's tokens, in US dollars per million.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Pricing {
    pub input_per_million: f64,
    pub output_per_million: f64,
}

impl Pricing {
    pub fn cost_usd(&self, usage: Usage) -> f64 {
        (f64::from(usage.prompt_tokens) * self.input_per_million
            + f64::from(usage.completion_tokens) * self.output_per_million)
            / 1e6
    }
}

/// One place a model alias can be served from.
pub struct Deployment {
    /// Unique label, used in headers, logs and metrics.
    pub name: String,
    pub provider: Arc<dyn Provider>,
    /// The model name the upstream knows.
    pub upstream_model: String,
    /// Share of first attempts; 0 = fallback only.
    pub weight: u32,
    pub keys: KeyPool,
    pub breaker: Breaker,
    pub pricing: Pricing,
}

/// How hard to try.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Tries per deployment before falling back to the next.
    pub attempts: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Until the upstream's response starts (for a stream: its first event).
    pub first_byte_timeout: Duration,
    /// Longest silence inside a stream.
    pub stream_idle_timeout: Duration,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum RouteError {
    #[error("The model `{0}` does not exist or you do not have access to it.")]
    UnknownModel(String),
    /// The upstream refused the request itself; another try would fail the same way.
    #[error("{0}")]
    Rejected(ProviderError),
    /// Every deployment is rate-limited or out of key budget.
    #[error("Every upstream for this model is at its rate limit.")]
    RateLimited { retry_in: Option<Duration> },
    #[error("Every upstream for this model failed; last error: {0}")]
    Unavailable(ProviderError),
    #[error("Every upstream for this model is unhealthy (circuit open).")]
    NoHealthyDeployment,
}

/// A successful call and where it went.
#[derive(Clone)]
pub struct Served<T> {
    pub value: T,
    pub deployment: Arc<Deployment>,
    /// Upstream calls made, this one included.
    pub attempts: u32,
}

/// A chat completion with usage filled in (estimated when the provider gave none).
#[derive(Debug, Clone)]
pub struct Answer {
    pub completion: Completion,
    pub usage: Usage,
    pub usage_estimated: bool,
}

impl Deployment {
    /// What the provider needs for one call with `key`.
    fn call<'a>(&'a self, key: Option<&'a SecretString>) -> Call<'a> {
        Call {
            model: &self.upstream_model,
            key: key.map(ExposeSecret::expose_secret),
        }
    }
}

/// What a chat request is charged against a key's token budget before the
/// provider reports usage: the prompt estimate plus its output cap (256
/// when it sets none).
fn budget_estimate(request: &ChatRequest) -> u32 {
    request.estimated_prompt_tokens() + request.max_output_tokens().unwrap_or(256)
}

/// A deployment's condition for `/ready` and the stats endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct DeploymentHealth {
    pub model: String,
    pub deployment: String,
    pub provider: &'static str,
    pub breaker: BreakerState,
    pub keys: Vec<KeyHealth>,
}

type AnswerFuture = BoxFuture<'static, Result<Served<Answer>, RouteError>>;
type SharedAnswer = Shared<AnswerFuture>;

pub struct Engine {
    models: HashMap<String, Vec<Arc<Deployment>>>,
    policy: RetryPolicy,
    inflight: Mutex<HashMap<[u8; 32], WeakShared<AnswerFuture>>>,
}

/// Dead coalescing entries (every waiter went away) are swept past this size.
const INFLIGHT_SWEEP_AT: usize = 1024;

impl Engine {
    pub fn new(models: HashMap<String, Vec<Arc<Deployment>>>, policy: RetryPolicy) -> Engine {
        Engine {
            models,
            policy,
            inflight: Mutex::new(HashMap::new()),
        }
    }

    pub fn model_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.models.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    pub fn has_model(&self, name: &str) -> bool {
        self.models.contains_key(name)
    }

    pub fn health(&self) -> Vec<DeploymentHealth> {
        let mut out: Vec<DeploymentHealth> = self
            .models
            .iter()
            .flat_map(|(model, deployments)| {
                deployments.iter().map(move |d| DeploymentHealth {
                    model: model.clone(),
                    deployment: d.name.clone(),
                    provider: d.provider.kind(),
                    breaker: d.breaker.state(),
                    keys: d.keys.health(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.deployment.cmp(&b.deployment));
        out
    }

    /// The alias's deployments in the order this request tries them: one
    /// picked by weight among the healthy ones first, then the rest in order.
    fn order(&self, model: &str) -> Result<Vec<Arc<Deployment>>, RouteError> {
        let deployments = self
            .models
            .get(model)
            .ok_or_else(|| RouteError::UnknownModel(model.to_string()))?;
        let weighted: Vec<&Arc<Deployment>> = deployments
            .iter()
            .filter(|d| d.weight > 0 && d.breaker.is_available())
            .collect();
        let total: u32 = weighted.iter().map(|d| d.weight).sum();
        let mut order = deployments.clone();
        if total > 0 {
            let mut pick = fastrand::u32(0..total);
            let first = weighted
                .iter()
                .find(|d| {
                    if pick < d.weight {
                        true
                    } else {
                        pick -= d.weight;
                        false
                    }
                })
                .map(|d| Arc::clone(d));
            if let Some(first) = first {
                order.retain(|d| !Arc::ptr_eq(d, &first));
                order.insert(0, first);
            }
        }
        Ok(order)
    }

    /// Runs `call` against the alias's deployments until one succeeds or
    /// nothing is left to try. `used_tokens` reads how much a success cost, to
    /// correct the key's token budget.
    async fn attempt<T, F, Fut>(
        &self,
        model: &str,
        priority: Priority,
        estimated_tokens: u32,
        call: F,
        used_tokens: impl Fn(&T) -> u32,
    ) -> Result<Served<T>, RouteError>
    where
        F: Fn(Arc<Deployment>, Option<SecretString>) -> Fut,
        Fut: Future<Output = Result<T, ProviderError>>,
    {
        let policy = self.policy;
        let mut attempts = 0;
        let mut last_error: Option<ProviderError> = None;
        let mut rate_limited_for: Option<Option<Duration>> = None;
        for deployment in self.order(model)? {
            let mut tries = 0;
            while tries < policy.attempts {
                if !deployment.breaker.is_available() {
                    break;
                }
                let lease = match deployment.keys.acquire(priority, estimated_tokens) {
                    Ok(lease) => lease,
                    Err(Exhausted::Unhealthy) => break,
                    Err(Exhausted::Busy { retry_in }) => {
                        match retry_in {
                            // A key comes back soon enough to wait for within this try.
                            Some(wait)
                                if wait <= policy.backoff_max && tries + 1 < policy.attempts =>
                            {
                                tries += 1;
                                tokio::time::sleep(wait).await;
                                continue;
                            }
                            _ => {
                                let soonest = match (rate_limited_for.flatten(), retry_in) {
                                    (Some(a), Some(b)) => Some(a.min(b)),
                                    (a, b) => a.or(b),
                                };
                                rate_limited_for = Some(soonest);
                                break;
                            }
                        }
                    }
                };
                // In half-open, only one caller gets to probe the deployment.
                if !deployment.breaker.try_acquire() {
                    lease.unused();
                    break;
                }
                tries += 1;
                attempts += 1;
                let secret = lease.secret().cloned();
                let started = Instant::now();
                let outcome = tokio::time::timeout(
                    policy.first_byte_timeout,
                    call(Arc::clone(&deployment), secret),
                )
                .await
                .unwrap_or(Err(ProviderError::Timeout("before the first byte")));
                // Whole answers, or the head of a stream (time to first byte).
                metrics::histogram!("sluice_upstream_request_duration_seconds",
                    "deployment" => deployment.name.clone(),
                    "outcome" => outcome.as_ref().map_or_else(failure_kind, |_| "ok"))
                .record(started.elapsed().as_secs_f64());
                let error = match outcome {
                    Ok(value) => {
                        lease.succeeded(used_tokens(&value));
                        deployment.breaker.record_success();
                        return Ok(Served {
                            value,
                            deployment,
                            attempts,
                        });
                    }
                    Err(error) => error,
                };
                settle_failure(&deployment, lease, &error, attempts);
                if !error.retryable() {
                    return Err(RouteError::Rejected(error));
                }
                // A rate-limited key is resting; the next try takes another key
                // at once. Anything else waits out a jittered backoff.
                let rate_limited = matches!(error, ProviderError::RateLimited { .. });
                last_error = Some(error);
                if !rate_limited && tries < policy.attempts {
                    tokio::time::sleep(backoff(tries - 1, policy.backoff_base, policy.backoff_max))
                        .await;
                }
            }
        }
        Err(exhausted(last_error, rate_limited_for))
    }

    /// A non-streamed chat completion. With `coalesce_key`, identical requests
    /// in flight at once share one upstream call (the key should cover the
    /// caller and the whole request).
    pub async fn complete(
        self: &Arc<Self>,
        request: Arc<ChatRequest>,
        priority: Priority,
        coalesce_key: Option<[u8; 32]>,
    ) -> Result<(Served<Answer>, bool), RouteError> {
        let Some(key) = coalesce_key else {
            return self
                .complete_once(request, priority)
                .await
                .map(|a| (a, false));
        };
        let (shared, joined) = {
            let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            match inflight.get(&key).and_then(WeakShared::upgrade) {
                Some(shared) => (shared, true),
                None => {
                    if inflight.len() >= INFLIGHT_SWEEP_AT {
                        inflight.retain(|_, weak| weak.upgrade().is_some());
                    }
                    let engine = Arc::clone(self);
                    let shared: SharedAnswer =
                        async move { engine.complete_once(request, priority).await }
                            .boxed()
                            .shared();
                    if let Some(weak) = shared.downgrade() {
                        inflight.insert(key, weak);
                    }
                    (shared, false)
                }
            }
        };
        let result = shared.clone().await;
        // The first waiter to finish retires the entry: later requests are new calls.
        let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        if inflight
            .get(&key)
            .and_then(WeakShared::upgrade)
            .is_none_or(|current| current.ptr_eq(&shared))
        {
            inflight.remove(&key);
        }
        result.map(|answer| (answer, joined))
    }

    async fn complete_once(
        &self,
        request: Arc<ChatRequest>,
        priority: Priority,
    ) -> Result<Served<Answer>, RouteError> {
        let estimate = budget_estimate(&request);
        let served = self
            .attempt(
                &request.model,
                priority,
                estimate,
                |deployment, key| {
                    let request = Arc::clone(&request);
                    async move {
                        let call = deployment.call(key.as_ref());
                        deployment.provider.complete(call, &request).await
                    }
                },
                |completion| completion.usage.map_or(estimate, |u| u.total_tokens),
            )
            .await?;
        let completion = served.value;
        let (usage, usage_estimated) = match completion.usage {
            Some(usage) => (usage, false),
            None => (
                Usage::new(
                    request.estimated_prompt_tokens(),
                    estimate_tokens(&completion.content),
                ),
                true,
            ),
        };
        Ok(Served {
            value: Answer {
                completion,
                usage,
                usage_estimated,
            },
            deployment: served.deployment,
            attempts: served.attempts,
        })
    }

    /// A streamed chat completion. Retries and fallback happen only until the
    /// upstream's first event: after that the client has begun to see the
    /// answer, and a failure ends the stream with an error event.
    pub async fn stream(
        &self,
        request: Arc<ChatRequest>,
        priority: Priority,
    ) -> Result<Served<EventStream>, RouteError> {
        let estimate = budget_estimate(&request);
        let idle = self.policy.stream_idle_timeout;
        self.attempt(
            &request.model,
            priority,
            estimate,
            |deployment, key| {
                let request = Arc::clone(&request);
                async move {
                    let call = deployment.call(key.as_ref());
                    let mut stream = deployment.provider.stream(call, &request).await?;
                    let first = match stream.next().await {
                        Some(Ok(event)) => Some(event),
                        Some(Err(e)) => return Err(e),
                        None => None,
                    };
                    let rest = futures::stream::iter(first.map(Ok)).chain(stream);
                    Ok(with_idle_timeout(rest, idle).boxed())
                }
            },
            |_| estimate,
        )
        .await
    }

    pub async fn embed(
        &self,
        model: &str,
        inputs: Arc<Vec<String>>,
        priority: Priority,
    ) -> Result<Served<Embeddings>, RouteError> {
        let estimate: u32 = inputs.iter().map(|t| estimate_tokens(t)).sum();
        self.attempt(
            model,
            priority,
            estimate,
            |deployment, key| {
                let inputs = Arc::clone(&inputs);
                async move {
                    let call = deployment.call(key.as_ref());
                    deployment.provider.embed(call, &inputs).await
                }
            },
            |e| e.prompt_tokens.unwrap_or(estimate),
        )
        .await
    }
}

impl Engine {
    /// The engine `config` describes, sharing one HTTP client (connection pool)
    /// across every upstream.
    pub fn from_config(config: &Config) -> Result<Engine, reqwest::Error> {
        let routing = &config.routing;
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(routing.connect_timeout_ms))
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .build()?;
        let simulated: Arc<dyn Provider> = Arc::new(Simulated::new(config.simulated.clone()));
        let breaker = || {
            Breaker::new(
                routing.breaker_failures,
                Duration::from_millis(routing.breaker_open_ms),
            )
        };
        let mut models = HashMap::new();
        for model in &config.models {
            let deployments = model
                .deployments
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    let name = d
                        .name
                        .clone()
                        .unwrap_or_else(|| format!("{}/{}", model.name, i + 1));
                    let provider: Arc<dyn Provider> = match d.provider {
                        ProviderKind::Simulated => Arc::clone(&simulated),
                        ProviderKind::Openai => Arc::new(OpenAiCompatible::new(
                            client.clone(),
                            d.base_url.as_deref().unwrap_or_default(),
                        )),
                        ProviderKind::Anthropic => Arc::new(Anthropic::new(
                            client.clone(),
                            d.base_url.as_deref().unwrap_or(ANTHROPIC_BASE_URL),
                        )),
                    };
                    let keys = d.keys.clone();
                    let budgets = KeyBudgets {
                        requests_per_minute: d.requests_per_minute,
                        tokens_per_minute: d.tokens_per_minute,
                    };
                    Arc::new(Deployment {
                        keys: KeyPool::new(&name, keys, budgets, breaker, routing.critical_reserve),
                        name,
                        provider,
                        upstream_model: d.model.clone().unwrap_or_else(|| model.name.clone()),
                        weight: d.weight,
                        breaker: breaker(),
                        pricing: Pricing {
                            input_per_million: d.input_cost_per_million,
                            output_per_million: d.output_cost_per_million,
                        },
                    })
                })
                .collect();
            models.insert(model.name.clone(), deployments);
        }
        let policy = RetryPolicy {
            attempts: routing.attempts,
            backoff_base: Duration::from_millis(routing.backoff_base_ms),
            backoff_max: Duration::from_millis(routing.backoff_max_ms),
            first_byte_timeout: Duration::from_millis(routing.first_byte_timeout_ms),
            stream_idle_timeout: Duration::from_millis(routing.stream_idle_timeout_ms),
        };
        Ok(Engine::new(models, policy))
    }
}

/// A failed call's consequences: logged and counted, the key rested or
/// released, the deployment's breaker told whether it was an outage.
fn settle_failure(deployment: &Deployment, lease: Lease<'_>, error: &ProviderError, attempt: u32) {
    tracing::info!(event = "upstream_attempt_failed", deployment = %deployment.name,
        key = %lease.label(), attempt, error = %error, "upstream call failed");
    metrics::counter!("sluice_upstream_failures_total",
        "deployment" => deployment.name.clone(), "kind" => failure_kind(error))
    .increment(1);
    match error {
        ProviderError::RateLimited { retry_after, .. } => lease.rate_limited(*retry_after),
        ProviderError::Unauthorized { .. } => lease.failed(),
        e if e.is_outage() => lease.failed(),
        _ => lease.released(),
    }
    if error.is_outage() {
        if deployment.breaker.record_failure() {
            tracing::warn!(event = "deployment_breaker_opened", deployment = %deployment.name,
                "deployment circuit opened");
        }
    } else {
        deployment.breaker.record_success();
    }
}

/// Why nothing answered, once every deployment has been tried.
fn exhausted(
    last_error: Option<ProviderError>,
    rate_limited_for: Option<Option<Duration>>,
) -> RouteError {
    match (last_error, rate_limited_for) {
        (Some(ProviderError::RateLimited { retry_after, .. }), _) => RouteError::RateLimited {
            retry_in: rate_limited_for.flatten().or(retry_after),
        },
        (None, Some(retry_in)) => RouteError::RateLimited { retry_in },
        (Some(error), _) => RouteError::Unavailable(error),
        (None, None) => RouteError::NoHealthyDeployment,
    }
}

const ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";

fn failure_kind(error: &ProviderError) -> &'static str {
    match error {
        ProviderError::RateLimited { .. } => "rate_limited",
        ProviderError::Unauthorized { .. } => "unauthorized",
        ProviderError::Rejected { .. } => "rejected",
        ProviderError::Unavailable { .. } => "unavailable",
        ProviderError::Timeout(_) => "timeout",
        ProviderError::Connect(_) => "connect",
        ProviderError::Protocol(_) => "protocol",
        ProviderError::Unsupported(_) => "unsupported",
    }
}

/// Ends the stream with a timeout error when the upstream goes quiet for `idle`.
fn with_idle_timeout(
    stream: impl Stream<Item = Result<StreamEvent, ProviderError>> + Send + 'static,
    idle: Duration,
) -> impl Stream<Item = Result<StreamEvent, ProviderError>> + Send + 'static {
    futures::stream::unfold(Some(stream.boxed()), move |state| async move {
        let mut stream = state?;
        match tokio::time::timeout(idle, stream.next()).await {
            Ok(Some(item)) => Some((item, Some(stream))),
            Ok(None) => None,
            Err(_) => Some((Err(ProviderError::Timeout("while streaming")), None)),
        }
    })
}
