//! From a client's model name to the best upstream call available: the
//! alias's deployments in order (a weighted pick for the first), each behind a
//! breaker, each with a key pool; retries with backoff for retryable failures;
//! fallback to the next deployment; identical concurrent requests coalesced.

mod attempt;
mod coalesce;
mod from_config;
pub mod keypool;
pub mod resilience;

pub use resilience::{BreakerState, backoff};

use crate::openai::{ChatRequest, Usage, estimate_tokens};
use crate::priority::Priority;
use crate::provider::{
    Call, Completion, Embeddings, EventStream, Provider, ProviderError, StreamEvent,
};
use futures::future::{BoxFuture, Shared, WeakShared};
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
