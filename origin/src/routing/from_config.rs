//! The engine the config describes.

use super::keypool::{KeyBudgets, KeyPool};
use super::quota::{KeyQuota, QuotaLimits};
use super::resilience::Breaker;
use super::{Deployment, Engine, Pricing, RetryPolicy};
use crate::config::{Config, ProviderKind};
use crate::provider::Provider;
use crate::provider::anthropic::Anthropic;
use crate::provider::openai_compat::OpenAiCompatible;
use crate::provider::simulated::Simulated;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

const ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("building the upstream HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("the provider key quotas' Redis (`routing.quota_redis_url`): {0}")]
    QuotaRedis(#[from] redis::RedisError),
}

impl Engine {
    /// The engine `config` describes, sharing one HTTP client (connection pool)
    /// across every upstream.
    pub fn from_config(config: &Config) -> Result<Engine, EngineError> {
        let routing = &config.routing;
        // One connection for every deployment's quota counters; it connects
        // (and reconnects) by itself, so a Redis that is down at start only
        // fails the calls that need it.
        let quota_redis = match &routing.quota_redis_url {
            Some(url) => Some(
                redis::Client::open(url.as_str())?.get_connection_manager_lazy(
                    redis::aio::ConnectionManagerConfig::new()
                        .set_connection_timeout(Some(Duration::from_secs(2)))
                        .set_response_timeout(Some(Duration::from_secs(2))),
                )?,
            ),
            None => None,
        };
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
                    let limits = QuotaLimits {
                        requests_per_minute: d.requests_per_minute,
                        tokens_per_minute: d.tokens_per_minute,
                        requests_per_hour: d.requests_per_hour,
                        requests_per_day: d.requests_per_day,
                        tokens_per_day: d.tokens_per_day,
                    };
                    let shared = quota_redis
                        .as_ref()
                        .map(|c| (c, routing.quota_prefix.as_str()));
                    Arc::new(Deployment {
                        keys: KeyPool::new(&name, keys, budgets, breaker, routing.critical_reserve),
                        quota: KeyQuota::new(&name, limits, shared, shared.is_some()),
                        name,
                        provider,
                        upstream_model: d.model.clone().unwrap_or_else(|| model.name.clone()),
                        weight: d.weight,
                        breaker: breaker(),
                        pricing: Pricing {
                            input_per_million: d.input_cost_per_million,
                            output_per_million: d.output_cost_per_million,
                            cached_input_per_million: d.cached_input_cost_per_million,
                            cache_write_per_million: d.cache_write_cost_per_million,
                            reasoning_per_million: d.reasoning_cost_per_million,
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
