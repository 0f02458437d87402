//! The engine the config describes.

use super::keypool::{KeyBudgets, KeyPool};
use super::quota::{KeyQuota, QuotaLimits};
use super::resilience::Breaker;
use super::{Deployment, Engine, Pricing, RetryPolicy};
use crate::catalog::{self, PriceSource};
use crate::config::{Config, DeploymentConfig, ProviderKind};
use crate::provider::Provider;
use crate::provider::anthropic::Anthropic;
use crate::provider::bedrock::{AwsCredentialsError, Bedrock, CredentialSource};
use crate::provider::google::{self, Google};
use crate::provider::openai_compat::{Dialect, OpenAiCompatible};
use crate::provider::simulated::Simulated;
use crate::provider::token::{CredentialsError, TokenSource};
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
    #[error("deployment `{deployment}`: {source}")]
    Credentials {
        deployment: String,
        source: CredentialsError,
    },
    #[error("deployment `{deployment}`: {source}")]
    AwsCredentials {
        deployment: String,
        source: AwsCredentialsError,
    },
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
        // Deployments with the same service account, or the same Entra ID
        // application and scope, share one token.
        let mut google_tokens: HashMap<Option<std::path::PathBuf>, Arc<TokenSource>> =
            HashMap::new();
        let mut entra_tokens: HashMap<[String; 4], Arc<TokenSource>> = HashMap::new();
        // Bedrock deployments with the same AWS credentials (an assumed
        // role's are renewed) share them.
        let mut aws_credentials: HashMap<String, Arc<CredentialSource>> = HashMap::new();
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
                    let credentials = |source| EngineError::Credentials {
                        deployment: name.clone(),
                        source,
                    };
                    let base_url = d.base_url.as_deref();
                    let provider: Arc<dyn Provider> = match d.provider {
                        ProviderKind::Simulated => Arc::clone(&simulated),
                        ProviderKind::Openai => Arc::new(OpenAiCompatible::new(
                            client.clone(),
                            base_url.unwrap_or_default(),
                            Dialect::OpenAi,
                        )),
                        ProviderKind::Azure => {
                            let entra = match &d.entra {
                                Some(entra) => {
                                    let app = [
                                        entra.authority.clone(),
                                        entra.tenant_id.clone(),
                                        entra.client_id.clone(),
                                        entra.scope.clone(),
                                    ];
                                    Some(match entra_tokens.get(&app) {
                                        Some(token) => Arc::clone(token),
                                        None => {
                                            let token = Arc::new(
                                                TokenSource::entra(client.clone(), entra)
                                                    .map_err(credentials)?,
                                            );
                                            entra_tokens.insert(app, Arc::clone(&token));
                                            token
                                        }
                                    })
                                }
                                None => None,
                            };
                            Arc::new(OpenAiCompatible::new(
                                client.clone(),
                                base_url.unwrap_or_default(),
                                Dialect::Azure {
                                    api_version: d.api_version.clone(),
                                    entra,
                                },
                            ))
                        }
                        ProviderKind::Anthropic => Arc::new(Anthropic::new(
                            client.clone(),
                            base_url.unwrap_or(ANTHROPIC_BASE_URL),
                        )),
                        ProviderKind::Gemini => Arc::new(Google::new(
                            client.clone(),
                            google::Endpoint::Gemini {
                                base_url: base_url.unwrap_or(google::GEMINI_BASE_URL).into(),
                            },
                        )),
                        ProviderKind::Vertex => {
                            let region = d.region.clone().unwrap_or_default();
                            let token = match google_tokens.get(&d.credentials_file) {
                                Some(token) => Arc::clone(token),
                                None => {
                                    let token = Arc::new(
                                        TokenSource::google(
                                            client.clone(),
                                            d.credentials_file.as_deref(),
                                        )
                                        .map_err(credentials)?,
                                    );
                                    google_tokens
                                        .insert(d.credentials_file.clone(), Arc::clone(&token));
                                    token
                                }
                            };
                            let base_url = base_url
                                .map(str::to_string)
                                .unwrap_or_else(|| google::Endpoint::vertex_base_url(&region));
                            let project = d.project.clone().unwrap_or_default();
                            let served = d.model.as_deref().unwrap_or(&model.name);
                            if Anthropic::is_vertex_model(served) {
                                Arc::new(Anthropic::vertex(
                                    client.clone(),
                                    &base_url,
                                    &project,
                                    &region,
                                    token,
                                ))
                            } else {
                                Arc::new(Google::new(
                                    client.clone(),
                                    google::Endpoint::Vertex {
                                        base_url,
                                        project,
                                        region,
                                        token,
                                    },
                                ))
                            }
                        }
                        ProviderKind::Bedrock => {
                            let region = d.region.clone().unwrap_or_default();
                            // Bedrock API keys (the deployment's `keys`) need no AWS credentials.
                            let signing =
                                if d.keys.is_empty() {
                                    let source = CredentialSource::resolve(
                                        client.clone(),
                                        d.aws.as_ref(),
                                        &region,
                                    )
                                    .map_err(|source| EngineError::AwsCredentials {
                                        deployment: name.clone(),
                                        source,
                                    })?;
                                    Some(Arc::clone(
                                        aws_credentials
                                            .entry(source.identity())
                                            .or_insert_with(|| Arc::new(source)),
                                    ))
                                } else {
                                    None
                                };
                            Arc::new(Bedrock::new(client.clone(), base_url, &region, signing))
                        }
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
                    let upstream_model = d.model.clone().unwrap_or_else(|| model.name.clone());
                    let (pricing, _) = pricing(d, &upstream_model);
                    Ok(Arc::new(Deployment {
                        keys: KeyPool::new(&name, keys, budgets, breaker, routing.critical_reserve),
                        quota: KeyQuota::new(&name, limits, shared, shared.is_some()),
                        name,
                        provider,
                        upstream_model,
                        weight: d.weight,
                        breaker: breaker(),
                        pricing,
                    }))
                })
                .collect::<Result<_, EngineError>>()?;
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

/// The prices a deployment's calls are charged at, and where they come from.
pub fn pricing(deployment: &DeploymentConfig, upstream_model: &str) -> (Pricing, PriceSource) {
    let configured = Pricing {
        input_per_million: deployment.input_cost_per_million.unwrap_or(0.0),
        output_per_million: deployment.output_cost_per_million.unwrap_or(0.0),
        cached_input_per_million: deployment.cached_input_cost_per_million,
        cache_write_per_million: deployment.cache_write_cost_per_million,
        reasoning_per_million: deployment.reasoning_cost_per_million,
    };
    let any_set = deployment.input_cost_per_million.is_some()
        || deployment.output_cost_per_million.is_some()
        || deployment.cached_input_cost_per_million.is_some()
        || deployment.cache_write_cost_per_million.is_some()
        || deployment.reasoning_cost_per_million.is_some();
    if any_set {
        return (configured, PriceSource::Configured);
    }
    if deployment.provider == ProviderKind::Simulated {
        return (configured, PriceSource::Free);
    }
    let name = deployment
        .catalog_model
        .as_deref()
        .unwrap_or(upstream_model);
    match catalog::catalog().lookup(deployment.provider, name) {
        Some(entry) => {
            let p = &entry.price_per_million;
            let pricing = Pricing {
                input_per_million: p.input,
                output_per_million: p.output,
                cached_input_per_million: p.cached_input,
                cache_write_per_million: p.cache_write,
                reasoning_per_million: p.reasoning,
            };
            (pricing, PriceSource::Catalog)
        }
        None => (configured, PriceSource::Unpriced),
    }
}

/// One line per deployment (model, deployment, provider, upstream model,
/// where its price comes from, input/output per million, context window),
/// then a summary; and how many deployments have no price.
pub fn price_report(config: &crate::config::Config) -> (String, usize) {
    use std::fmt::Write;
    let mut out = String::new();
    let mut unpriced = 0;
    let _ = writeln!(
        out,
        "{:<20} {:<24} {:<10} {:<32} {:<10} {:>10} {:>10} {:>9}",
        "model",
        "deployment",
        "provider",
        "upstream model",
        "price",
        "in $/M",
        "out $/M",
        "context"
    );
    for model in &config.models {
        for (i, d) in model.deployments.iter().enumerate() {
            let upstream = d.model.clone().unwrap_or_else(|| model.name.clone());
            let (pricing, source) = pricing(d, &upstream);
            unpriced += usize::from(source == PriceSource::Unpriced);
            let name = d
                .name
                .clone()
                .unwrap_or_else(|| format!("{}/{}", model.name, i + 1));
            let lookup = d.catalog_model.as_deref().unwrap_or(&upstream);
            let context = catalog::catalog()
                .lookup(d.provider, lookup)
                .and_then(|m| m.max_input_tokens)
                .map_or("-".to_string(), |t| t.to_string());
            let _ = writeln!(
                out,
                "{:<20} {:<24} {:<10} {:<32} {:<10} {:>10} {:>10} {:>9}",
                model.name,
                name,
                format!("{:?}", d.provider).to_lowercase(),
                upstream,
                source.as_str(),
                pricing.input_per_million,
                pricing.output_per_million,
                context
            );
        }
    }
    let catalog = catalog::catalog();
    let _ = writeln!(
        out,
        "{unpriced} deployment(s) without a price; catalog: {} models from {} ({}), {}, generated {}",
        catalog.len(),
        catalog.source_version,
        catalog.source,
        catalog.licence,
        catalog.generated_on
    );
    (out, unpriced)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(toml: &str) -> DeploymentConfig {
        use figment::providers::Format;
        figment::Figment::from(figment::providers::Toml::string(toml))
            .extract()
            .unwrap()
    }

    #[test]
    fn a_deployment_is_priced_by_itself_then_the_catalog_then_not_at_all() {
        let own = deployment(
            "provider = \"openai\"\nbase_url = \"http://x\"\ninput_cost_per_million = 1.0",
        );
        let (own, source) = pricing(&own, "gpt-4o");
        assert_eq!(
            (own.input_per_million, own.output_per_million, source),
            (1.0, 0.0, PriceSource::Configured)
        );

        let listed = deployment("provider = \"openai\"\nbase_url = \"http://x\"");
        let (listed, source) = pricing(&listed, "gpt-4o");
        assert_eq!(source, PriceSource::Catalog);
        assert!(listed.input_per_million > 0.0 && listed.cached_input_per_million.is_some());

        let azure = deployment(
            "provider = \"azure\"\nbase_url = \"http://x\"\ncatalog_model = \"gpt-4o-mini\"",
        );
        let (mini, source) = pricing(&azure, "our-deployment-name");
        assert_eq!(source, PriceSource::Catalog);
        assert!(mini.input_per_million < listed.input_per_million);

        let unknown = deployment("provider = \"openai\"\nbase_url = \"http://x\"");
        assert_eq!(pricing(&unknown, "my-finetune").1, PriceSource::Unpriced);
        assert_eq!(
            pricing(&deployment("provider = \"simulated\""), "x").1,
            PriceSource::Free
        );
    }
}
