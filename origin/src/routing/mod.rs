//! From a client's model name to the best upstream call available: the
//! alias's deployments in order (a weighted pick for the first), each behind a
//! breaker, each with a key pool; retries with backoff for retryable failures;
//! fallback to the next deployment; identical concurrent requests coalesced.

mod attempt;
mod coalesce;
mod from_config;
pub use from_config::{EngineError, price_report};
pub mod keypool;
pub mod messages;
pub mod quota;
pub mod resilience;

pub use resilience::{BreakerState, backoff};

use crate::openai::ChatResponse;
use crate::openai::{ChatRequest, Usage, estimate_tokens};
use crate::priority::Priority;
use crate::provider::{Adjustments, Call, Embeddings, EventStream, Provider, ProviderError};
use futures::future::{BoxFuture, Shared, WeakShared};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use keypool::{KeyHealth, KeyPool};
use resilience::Breaker;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Price of a deployment's tokens, in US dollars per million.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Pricing {
    pub input_per_million: f64,
    pub output_per_million: f64,
    /// Cache reads, cache writes and reasoning at their own prices when the
    /// deployment sets them; otherwise at the input or output price.
    pub cached_input_per_million: Option<f64>,
    pub cache_write_per_million: Option<f64>,
    pub reasoning_per_million: Option<f64>,
}

impl Pricing {
    pub fn cost_usd(&self, usage: Usage) -> f64 {
        let cached = usage.cached_tokens.min(usage.prompt_tokens);
        let written = usage.cache_write_tokens.min(usage.prompt_tokens - cached);
        let fresh = usage.prompt_tokens - cached - written;
        let reasoning = usage.reasoning_tokens.min(usage.completion_tokens);
        let answer = usage.completion_tokens - reasoning;
        let input = self.input_per_million;
        let output = self.output_per_million;
        (f64::from(fresh) * input
            + f64::from(cached) * self.cached_input_per_million.unwrap_or(input)
            + f64::from(written) * self.cache_write_per_million.unwrap_or(input)
            + f64::from(answer) * output
            + f64::from(reasoning) * self.reasoning_per_million.unwrap_or(output))
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
    /// Per-key quotas in fixed windows, shared across replicas when
    /// configured (`None`: no such quota).
    pub quota: Option<quota::KeyQuota>,
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
    /// What the serving provider changed of the request (`Adjustments`).
    pub adjusted: Vec<String>,
}

/// A chat completion with usage filled in (estimated when the provider gave none).
#[derive(Debug, Clone)]
pub struct Answer {
    pub response: ChatResponse,
    pub usage: Usage,
    pub usage_estimated: bool,
}

impl Deployment {
    /// A stream that failed after its first event: too late to retry or
    /// fall back, but the deployment's failure all the same, counted and
    /// told to its breaker so that the next calls go elsewhere.
    pub fn stream_failed(&self, error: &ProviderError) {
        metrics::counter!("sluice_upstream_failures_total",
            "deployment" => self.name.clone(), "kind" => attempt::failure_kind(error))
        .increment(1);
        if error.is_outage() && self.breaker.record_failure() {
            tracing::warn!(event = "deployment_breaker_opened", deployment = %self.name,
                "deployment circuit opened");
        }
    }

    /// What the provider needs for one call with `key`.
    fn call<'a>(&'a self, key: Option<&'a SecretString>, adjusted: &'a Adjustments) -> Call<'a> {
        Call {
            model: &self.upstream_model,
            key: key.map(ExposeSecret::expose_secret),
            beta: None,
            limits: Some(&self.keys),
            adjusted: Some(adjusted),
        }
    }
}

/// What a chat request is charged against a key's token budget before the
/// provider reports usage: the prompt estimate plus its output cap (256
/// when it sets none).
fn budget_estimate(request: &ChatRequest) -> u32 {
    request
        .estimated_prompt_tokens()
        .saturating_add(request.max_output_tokens().unwrap_or(256))
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

    /// The deployments that may serve `name` (none for an unknown model).
    pub fn deployments(&self, name: &str) -> &[Arc<Deployment>] {
        self.models.get(name).map_or(&[], Vec::as_slice)
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

    pub(super) async fn complete_once(
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
                |deployment, key, adjusted| {
                    let request = Arc::clone(&request);
                    async move {
                        let call = deployment.call(key.as_ref(), &adjusted);
                        deployment.provider.complete(call, &request).await
                    }
                },
                |response| response.usage().map_or(estimate, |u| u.total_tokens),
            )
            .await?;
        let response = served.value;
        let (usage, usage_estimated) = match response.usage() {
            Some(usage) => (usage, false),
            None => (
                Usage::new(
                    request.estimated_prompt_tokens(),
                    response.estimated_completion_tokens(),
                ),
                true,
            ),
        };
        Ok(Served {
            value: Answer {
                response,
                usage,
                usage_estimated,
            },
            deployment: served.deployment,
            attempts: served.attempts,
            adjusted: served.adjusted,
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
            |deployment, key, adjusted| {
                let request = Arc::clone(&request);
                async move {
                    let call = deployment.call(key.as_ref(), &adjusted);
                    let stream = deployment.provider.stream(call, &request).await?;
                    first_event_then(stream, idle).await
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
            |deployment, key, adjusted| {
                let inputs = Arc::clone(&inputs);
                async move {
                    let call = deployment.call(key.as_ref(), &adjusted);
                    deployment.provider.embed(call, &inputs).await
                }
            },
            |e| e.prompt_tokens.unwrap_or(estimate),
        )
        .await
    }
}

/// Waits for the stream's first event (a failure before it is the call's
/// failure, so it can be retried), then yields it and the rest, each within
/// `idle` of the one before.
async fn first_event_then<T: Send + 'static>(
    mut stream: BoxStream<'static, Result<T, ProviderError>>,
    idle: Duration,
) -> Result<BoxStream<'static, Result<T, ProviderError>>, ProviderError> {
    let first = match stream.next().await {
        Some(Ok(event)) => Some(event),
        Some(Err(e)) => return Err(e),
        None => None,
    };
    let rest = futures::stream::iter(first.map(Ok)).chain(stream);
    Ok(with_idle_timeout(rest, idle).boxed())
}

/// Ends the stream with a timeout error when the upstream goes quiet for `idle`.
fn with_idle_timeout<T: Send + 'static>(
    stream: impl Stream<Item = Result<T, ProviderError>> + Send + 'static,
    idle: Duration,
) -> impl Stream<Item = Result<T, ProviderError>> + Send + 'static {
    futures::stream::unfold(Some(stream.boxed()), move |state| async move {
        let mut stream = state?;
        match tokio::time::timeout(idle, stream.next()).await {
            Ok(Some(item)) => Some((item, Some(stream))),
            Ok(None) => None,
            Err(_) => Some((Err(ProviderError::Timeout("while streaming")), None)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_and_reasoning_tokens_have_their_own_prices() {
        let pricing = Pricing {
            input_per_million: 3.0,
            output_per_million: 15.0,
            cached_input_per_million: Some(0.3),
            cache_write_per_million: Some(3.75),
            reasoning_per_million: None,
        };
        let mut usage = Usage::new(1_000_000 + 2_000_000 + 4_000_000, 1_000_000);
        usage.cached_tokens = 2_000_000;
        usage.cache_write_tokens = 4_000_000;
        usage.reasoning_tokens = 500_000;
        let expected = 3.0 + 2.0 * 0.3 + 4.0 * 3.75 + 15.0;
        assert!((pricing.cost_usd(usage) - expected).abs() < 1e-9);
        let flat = Pricing {
            cached_input_per_million: None,
            cache_write_per_million: None,
            ..pricing
        };
        assert!((flat.cost_usd(usage) - (7.0 * 3.0 + 15.0)).abs() < 1e-9);
    }
}
