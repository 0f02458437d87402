//! The engine the config describes.

use super::keypool::{KeyBudgets, KeyPool};
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
