//! One TOML file plus `SLUICE_*` environment overrides (`SLUICE_EDGE__SECRET`
//! sets `[edge] secret`), strictly parsed and validated before any port is bound.

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub edge: EdgeConfig,
    pub database: DatabaseConfig,
    pub simulated: SimulatedConfig,
    pub routing: RoutingConfig,
    pub queue: QueueConfig,
    pub conversations: ConversationsConfig,
    pub cache: CacheConfig,
    pub budgets: BudgetsConfig,
    pub reasoning: ReasoningConfig,
    pub models: Vec<ModelConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Metrics, probes, stats and the status page (no authentication: keep
    /// it on loopback or a private network).
    pub admin_listen: SocketAddr,
    /// Largest request body accepted, in bytes; larger ones get 413.
    pub body_limit_bytes: usize,
    /// The same for the routes that generate (chat, Messages, Responses,
    /// embeddings, jobs, conversation turns), whose bodies carry images and
    /// long sessions: Anthropic accepts 32 MB on Messages.
    pub ai_body_limit_bytes: usize,
    /// Deadline for one request end to end, in seconds.
    pub request_timeout_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeConfig {
    /// HMAC key shared with the edge (`edge_secret` there). Required.
    /// Never serialised or shown in `Debug`.
    #[serde(default, skip_serializing)]
    pub secret: Option<SecretString>,
    /// How far an edge timestamp may be from the origin's clock, in seconds.
    pub max_skew_secs: u64,
}

/// The database pool. Defaults are the seeds': at most 100 connections, 10
/// kept open, idle ones closed after 10 s, statements bounded to 10 s.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://path?mode=rwc` (a file, created when missing) or `postgres://...`.
    pub url: String,
    pub max_connections: u32,
    pub min_connections: u32,
    pub idle_timeout_secs: u64,
    /// Postgres cancels a longer statement; SQLite waits this long for a lock.
    pub statement_timeout_secs: u64,
    /// How long a request waits for a free connection.
    pub acquire_timeout_secs: u64,
    /// Statements slower than this are logged (`slow statement`, with their
    /// SQL) and counted in `sluice_db_slow_queries_total`.
    pub slow_statement_ms: u64,
}

/// The simulated provider: a stand-in for a model, for local runs and benchmarks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimulatedConfig {
    /// Delay before the first token, in milliseconds.
    pub time_to_first_token_ms: u64,
    /// Generation speed after the first token; 0 means all at once.
    pub tokens_per_second: u64,
    /// Share of calls (0-1) that fail with 503.
    pub error_rate: f64,
    /// Share of calls (0-1) that get 429 with `Retry-After: retry_after_secs`.
    pub rate_limit_rate: f64,
    pub retry_after_secs: u64,
    /// Fault injection: a non-streamed call whose last user message
    /// contains this text panics (supervision tests). Off when unset.
    pub panic_on: Option<String>,
}

impl Default for SimulatedConfig {
    fn default() -> SimulatedConfig {
        SimulatedConfig {
            time_to_first_token_ms: 0,
            tokens_per_second: 0,
            error_rate: 0.0,
            rate_limit_rate: 0.0,
            retry_after_secs: 1,
            panic_on: None,
        }
    }
}

/// Retries, timeouts, breakers and key reserve for every upstream call.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// Tries per deployment (retryable failures only) before the next deployment.
    pub attempts: u32,
    /// Backoff before retry n is uniform in [0, min(max, base * 2^n)] (full jitter).
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// Until the upstream's response (or a stream's first event) arrives.
    pub first_byte_timeout_ms: u64,
    /// Longest silence inside a stream before it is ended.
    pub stream_idle_timeout_ms: u64,
    pub connect_timeout_ms: u64,
    /// Failures in a row that open a key's or a deployment's breaker.
    pub breaker_failures: u32,
    /// How long an open breaker refuses calls before one probe.
    pub breaker_open_ms: u64,
    /// Share of every key budget that only `critical` requests may use.
    pub critical_reserve: f64,
    /// Identical concurrent non-streamed requests from one caller share one call.
    pub coalesce: bool,
    /// Redis (`redis://` or `rediss://`) where every replica counts provider
    /// key quotas, so N replicas share one key's budget; unset counts them
    /// in this process.
    pub quota_redis_url: Option<String>,
    pub quota_prefix: String,
}

impl Default for RoutingConfig {
    fn default() -> RoutingConfig {
        RoutingConfig {
            attempts: 3,
            backoff_base_ms: 100,
            backoff_max_ms: 5_000,
            first_byte_timeout_ms: 10_000,
            stream_idle_timeout_ms: 30_000,
            connect_timeout_ms: 5_000,
            breaker_failures: 5,
            breaker_open_ms: 30_000,
            critical_reserve: 0.1,
            coalesce: true,
            quota_redis_url: None,
            quota_prefix: "sluice:quota:".into(),
        }
    }
}

/// The job queue and its workers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// How workers find jobs: polling the database, or Redis Streams.
    pub backend: QueueBackend,
    /// For `redis_streams`.
    pub redis_url: String,
    /// Prefix of the streams' keys, so several deployments can share one Redis.
    pub stream_prefix: String,
    /// Jobs run at once by this process (`serve` and `worker`); 0 in `serve`
    /// leaves running them to separate `worker` processes.
    pub workers: usize,
    /// A claimed job not finished in this time is delivered again.
    pub visibility_timeout_secs: u64,
    pub max_attempts: u32,
    /// Backoff before retry n is uniform in [0, min(max, base * 2^n)].
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// How long completed and cancelled jobs are kept.
    pub retention_secs: u64,
    /// How long dead-lettered jobs are kept for inspection and redrive.
    pub dead_retention_secs: u64,
    /// How often idle workers look for jobs submitted by other processes.
    pub poll_interval_ms: u64,
    /// On SIGTERM, how long running jobs may take before they are released.
    pub drain_timeout_secs: u64,
    pub cleanup_interval_secs: u64,
    /// Whether a job may be answered from the semantic cache (when it is
    /// configured) and stores its answer there.
    pub semantic_cache: bool,
    /// Whether identical jobs running at once share one upstream call.
    pub coalesce: bool,
}

impl Default for QueueConfig {
    fn default() -> QueueConfig {
        QueueConfig {
            backend: QueueBackend::Database,
            redis_url: "redis://127.0.0.1:6379".into(),
            stream_prefix: "sluice:jobs:".into(),
            workers: 4,
            visibility_timeout_secs: 300,
            max_attempts: 3,
            backoff_base_ms: 1_000,
            backoff_max_ms: 60_000,
            retention_secs: 24 * 3600,
            dead_retention_secs: 7 * 24 * 3600,
            poll_interval_ms: 250,
            drain_timeout_secs: 30,
            cleanup_interval_secs: 60,
            semantic_cache: false,
            coalesce: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueBackend {
    /// The jobs table, polled (durable with SQLite; shared with Postgres).
    Database,
    /// Redis Streams with a consumer group; the table stays the record.
    RedisStreams,
}

/// The queue's timings, resolved from `[queue]`.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    pub visibility_timeout: Duration,
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// How long completed and cancelled jobs are kept.
    pub retention: Duration,
    /// How long dead-lettered jobs are kept for inspection and redrive.
    pub dead_retention: Duration,
}

impl QueueConfig {
    pub fn settings(&self) -> QueueSettings {
        QueueSettings {
            visibility_timeout: Duration::from_secs(self.visibility_timeout_secs),
            max_attempts: self.max_attempts,
            backoff_base: Duration::from_millis(self.backoff_base_ms),
            backoff_max: Duration::from_millis(self.backoff_max_ms),
            retention: Duration::from_secs(self.retention_secs),
            dead_retention: Duration::from_secs(self.dead_retention_secs),
        }
    }
}

/// Spend control (`crate::budgets`): how reservations are sized, soft
/// thresholds and their webhook, and how long usage records are kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetsConfig {
    /// Output tokens reserved for a call that sets no `max_tokens` (or
    /// `max_completion_tokens`); under a budget it is also set as the call's cap.
    pub default_output_tokens: u32,
    /// Prompt tokens reserved per image part (its size is not known up front).
    pub image_tokens: u32,
    /// Shares of a hard limit at which a notice goes out, once per period.
    pub soft_thresholds: Vec<f64>,
    /// Where notices are POSTed as JSON; none sends only the log event and metric.
    pub webhook_url: Option<String>,
    /// How long a reservation may stay open before the sweeper releases it
    /// (its process died mid-call). At least the request timeout.
    pub hold_ttl_secs: u64,
    /// How long a process reuses budget definitions and team membership it
    /// read: how long a change made elsewhere takes to apply here.
    pub definitions_cache_ms: u64,
    /// Usage records older than this many days are deleted; 0 keeps them.
    pub usage_retention_days: u64,
}

impl Default for BudgetsConfig {
    fn default() -> BudgetsConfig {
        BudgetsConfig {
            default_output_tokens: 4096,
            image_tokens: 2500,
            soft_thresholds: vec![0.7, 0.85, 0.95],
            webhook_url: None,
            hold_ttl_secs: 900,
            definitions_cache_ms: 1000,
            usage_retention_days: 400,
        }
    }
}

/// The origin's read cache (conversations) and the semantic completion cache.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    pub enabled: bool,
    /// L2 shared by origin instances; L1 only when absent.
    pub redis_url: Option<String>,
    pub l1_max_entries: u64,
    pub ttl_secs: u64,
    /// Prefix of every Redis key, so several deployments can share one Redis.
    pub key_prefix: String,
    pub semantic: SemanticCacheConfig,
}

impl Default for CacheConfig {
    fn default() -> CacheConfig {
        CacheConfig {
            enabled: true,
            redis_url: None,
            l1_max_entries: 10_000,
            ttl_secs: 300,
            key_prefix: "sluice:origin:".into(),
            semantic: SemanticCacheConfig::default(),
        }
    }
}

/// Answers a completion from an earlier one whose prompt means nearly the
/// same (cosine similarity of embeddings). Off unless an embeddings model is
/// named: reusing answers is a product decision, not a default.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SemanticCacheConfig {
    /// A configured model that serves embeddings.
    pub embeddings_model: Option<String>,
    /// Least cosine similarity that counts as the same prompt.
    pub threshold: f32,
    /// Entries kept per principal and request shape (oldest go first).
    pub max_entries_per_scope: usize,
    /// Scopes (principal and request shape) kept at most.
    pub max_scopes: u64,
    pub ttl_secs: u64,
}

impl Default for SemanticCacheConfig {
    fn default() -> SemanticCacheConfig {
        SemanticCacheConfig {
            embeddings_model: None,
            threshold: 0.92,
            max_entries_per_scope: 256,
            max_scopes: 10_000,
            ttl_secs: 3600,
        }
    }
}

/// Reasoning state kept for clients that do not send it back: the thinking
/// blocks (with their signatures) of an answer that called tools, which an
/// Anthropic model needs on the next request of that tool loop
/// (`crate::reasoning`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReasoningConfig {
    /// How long a tool loop's thinking is kept after the answer that made it.
    pub keep_secs: u64,
    /// Larger thinking is not kept (its tool loop then goes on without thinking).
    pub max_entry_bytes: usize,
}

impl Default for ReasoningConfig {
    fn default() -> ReasoningConfig {
        ReasoningConfig {
            keep_secs: 3600,
            max_entry_bytes: 1 << 20,
        }
    }
}

/// Conversations: what a reply is generated from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConversationsConfig {
    /// Model for conversations that name none (default: the first configured).
    pub default_model: Option<String>,
    /// Earlier messages sent as context with each new one.
    pub context_messages: u32,
    /// Whether a turn may be answered from the semantic cache (when it is
    /// configured) and stores its answer there.
    pub semantic_cache: bool,
    /// Whether identical turns in flight at once share one upstream call.
    pub coalesce: bool,
}

impl Default for ConversationsConfig {
    fn default() -> ConversationsConfig {
        ConversationsConfig {
            default_model: None,
            context_messages: 50,
            semantic_cache: false,
            coalesce: false,
        }
    }
}

/// A model name clients send, and where it is served from, in fallback order.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub name: String,
    pub deployments: Vec<DeploymentConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentConfig {
    pub provider: ProviderKind,
    /// Label in headers, logs and metrics; defaults to `<model>/<n>`.
    #[serde(default)]
    pub name: Option<String>,
    /// `https://api.openai.com/v1` form for `openai`; `https://api.anthropic.com` for `anthropic`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// The upstream's model name; defaults to the alias.
    #[serde(default)]
    pub model: Option<String>,
    /// Provider keys. Prefer `keys_env`: keys in files end up in backups.
    /// After loading, also the keys `keys_env` named (resolved once).
    #[serde(default, skip_serializing)]
    pub keys: Vec<SecretString>,
    /// Environment variable holding comma-separated keys (`ANTHROPIC_API_KEYS=k1,k2`).
    #[serde(default)]
    pub keys_env: Option<String>,
    /// Per-key budgets per minute; unset is unlimited.
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
    #[serde(default)]
    pub tokens_per_minute: Option<u32>,
    /// Per-key quotas per hour and per UTC day (fixed windows; shared across
    /// replicas with `[routing] quota_redis_url`); unset is unlimited.
    #[serde(default)]
    pub requests_per_hour: Option<u32>,
    #[serde(default)]
    pub requests_per_day: Option<u32>,
    #[serde(default)]
    pub tokens_per_day: Option<u32>,
    /// Share of first attempts; 0 (default) receives only fallbacks, unless
    /// no deployment has a weight, when the first one listed is primary.
    #[serde(default)]
    pub weight: u32,
    /// US dollars per million tokens, for the cost reported per request.
    /// When no price is set here, the model catalog's prices are used
    /// (`sluice-origin prices` lists which deployments have none).
    #[serde(default)]
    pub input_cost_per_million: Option<f64>,
    #[serde(default)]
    pub output_cost_per_million: Option<f64>,
    /// Prompt tokens read from the provider's prompt cache; unset = input price.
    #[serde(default)]
    pub cached_input_cost_per_million: Option<f64>,
    /// Prompt tokens written to the prompt cache (Anthropic); unset = input price.
    #[serde(default)]
    pub cache_write_cost_per_million: Option<f64>,
    /// Reasoning tokens (part of the completion); unset = output price.
    #[serde(default)]
    pub reasoning_cost_per_million: Option<f64>,
    /// The model catalog's name for what this deployment serves, when its
    /// `model` is not one (an Azure deployment's own name).
    #[serde(default)]
    pub catalog_model: Option<String>,
    /// Azure OpenAI: the `api-version` of the deployment-based endpoint
    /// (`/openai/deployments/<model>/...`); unset uses Azure's v1 endpoint
    /// (`/openai/v1/...`), which takes none.
    #[serde(default)]
    pub api_version: Option<String>,
    /// Azure OpenAI: sign in with Microsoft Entra ID instead of an `api-key`.
    #[serde(default)]
    pub entra: Option<EntraConfig>,
    /// Vertex AI: the Google Cloud project; with AWS Bedrock too, the region
    /// (`us-central1`, `global`; `us-east-1`).
    #[serde(default)]
    pub project: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    /// Vertex AI: a service account's JSON key file; unset reads the file
    /// `GOOGLE_APPLICATION_CREDENTIALS` names, as Google's SDKs do.
    #[serde(default)]
    pub credentials_file: Option<std::path::PathBuf>,
    /// AWS Bedrock: where SigV4 credentials come from when the deployment has
    /// no Bedrock API `keys`; unset reads the environment as AWS's SDKs do.
    #[serde(default)]
    pub aws: Option<AwsConfig>,
}

/// AWS credentials for Bedrock: an access key (its secret in an environment
/// variable, never in the file), or a role assumed with a web-identity token
/// (EKS IRSA, GitHub OIDC). Fields left unset fall back to the variables AWS's
/// SDKs read: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
/// then `AWS_ROLE_ARN` with `AWS_WEB_IDENTITY_TOKEN_FILE`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsConfig {
    pub access_key_id: Option<String>,
    /// Environment variable holding the secret access key.
    pub secret_access_key_env: Option<String>,
    /// Environment variable holding a session token (temporary credentials).
    pub session_token_env: Option<String>,
    /// The role to assume with the token in `web_identity_token_file`.
    pub role_arn: Option<String>,
    pub web_identity_token_file: Option<std::path::PathBuf>,
    pub role_session_name: Option<String>,
    /// STS's endpoint; unset is `AWS_ENDPOINT_URL_STS`, else the region's
    /// (`https://sts.<region>.amazonaws.com`).
    pub sts_endpoint: Option<String>,
}

/// Microsoft Entra ID client credentials for Azure OpenAI: a token is asked
/// for with the application's secret, kept, and renewed before it expires.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntraConfig {
    pub tenant_id: String,
    pub client_id: String,
    /// Environment variable holding the client secret (never in the file).
    pub client_secret_env: String,
    /// `https://login.microsoftonline.com` unless a sovereign cloud's.
    #[serde(default = "default_entra_authority")]
    pub authority: String,
    #[serde(default = "default_entra_scope")]
    pub scope: String,
}

fn default_entra_authority() -> String {
    "https://login.microsoftonline.com".into()
}

fn default_entra_scope() -> String {
    "https://cognitiveservices.azure.com/.default".into()
}

impl DeploymentConfig {
    /// What each provider needs to be reached.
    fn validate(&self) -> Result<(), (&'static str, String)> {
        let needs = |field: &'static str, set: bool, what: &str| {
            if set {
                Ok(())
            } else {
                Err((
                    field,
                    format!(
                        "{what} needs `{}`",
                        field.rsplit('.').next().unwrap_or(field)
                    ),
                ))
            }
        };
        match self.provider {
            ProviderKind::Openai => needs(
                "models.deployments.base_url",
                self.base_url.is_some(),
                "an openai deployment",
            ),
            ProviderKind::Azure => {
                needs(
                    "models.deployments.base_url",
                    self.base_url.is_some(),
                    "an azure deployment (its resource endpoint, https://NAME.openai.azure.com)",
                )?;
                needs(
                    "models.deployments.keys",
                    !self.keys.is_empty() || self.entra.is_some(),
                    "an azure deployment without `entra`",
                )
            }
            ProviderKind::Gemini => needs(
                "models.deployments.keys",
                !self.keys.is_empty(),
                "a gemini deployment (an API key, in keys or keys_env)",
            ),
            ProviderKind::Vertex => {
                needs(
                    "models.deployments.project",
                    self.project.is_some(),
                    "a vertex deployment",
                )?;
                needs(
                    "models.deployments.region",
                    self.region.is_some(),
                    "a vertex deployment",
                )
            }
            ProviderKind::Bedrock => needs(
                "models.deployments.region",
                self.region.is_some(),
                "a bedrock deployment (its AWS region, us-east-1)",
            ),
            ProviderKind::Anthropic | ProviderKind::Simulated => Ok(()),
        }
    }

    /// Adds the keys in `keys_env` to `keys`, once, when the config is loaded.
    fn resolve_keys_env(&mut self) -> Result<(), String> {
        if let Some(var) = &self.keys_env {
            let value = std::env::var(var)
                .map_err(|_| format!("environment variable `{var}` is not set"))?;
            self.keys.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .map(|k| SecretString::from(k.to_string())),
            );
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// Any OpenAI-compatible HTTP API (OpenAI, vLLM, Ollama, llama.cpp, ...).
    Openai,
    Anthropic,
    /// Azure OpenAI: a resource's deployments (`base_url` is the resource endpoint).
    Azure,
    /// Google's Gemini API with an API key, in its native format.
    Gemini,
    /// Gemini models on Google Cloud's Vertex AI, with a service account.
    Vertex,
    /// AWS Bedrock's Converse API (and Anthropic's Messages format for
    /// Claude models), signed with SigV4 or a Bedrock API key.
    Bedrock,
    /// In-process stand-in with the `[simulated]` behaviour.
    Simulated,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            server: ServerConfig {
                listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
                admin_listen: SocketAddr::from(([127, 0, 0, 1], 8082)),
                body_limit_bytes: 1 << 20,
                ai_body_limit_bytes: 32 << 20,
                request_timeout_secs: 300,
            },
            edge: EdgeConfig {
                secret: None,
                max_skew_secs: 30,
            },
            database: DatabaseConfig {
                url: "sqlite://sluice.db?mode=rwc".into(),
                max_connections: 100,
                min_connections: 10,
                idle_timeout_secs: 10,
                statement_timeout_secs: 10,
                slow_statement_ms: 1000,
                acquire_timeout_secs: 10,
            },
            simulated: SimulatedConfig::default(),
            routing: RoutingConfig::default(),
            queue: QueueConfig::default(),
            conversations: ConversationsConfig::default(),
            cache: CacheConfig::default(),
            budgets: BudgetsConfig::default(),
            reasoning: ReasoningConfig::default(),
            models: vec![ModelConfig {
                name: "sluice-sim-1".into(),
                deployments: vec![DeploymentConfig {
                    provider: ProviderKind::Simulated,
                    name: None,
                    base_url: None,
                    model: None,
                    keys: Vec::new(),
                    keys_env: None,
                    requests_per_minute: None,
                    tokens_per_minute: None,
                    requests_per_hour: None,
                    requests_per_day: None,
                    tokens_per_day: None,
                    weight: 0,
                    input_cost_per_million: None,
                    output_cost_per_million: None,
                    catalog_model: None,
                    cached_input_cost_per_million: None,
                    cache_write_cost_per_million: None,
                    reasoning_cost_per_million: None,
                    api_version: None,
                    entra: None,
                    project: None,
                    region: None,
                    credentials_file: None,
                    aws: None,
                }],
            }],
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Parse(#[from] Box<figment::Error>),
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

/// `SLUICE_*` variables that are settings. `SLUICE_CONFIG` and
/// `SLUICE_LOG_JSON` are command-line options, and `SLUICE_HOST_*` belong to
/// the runtime-host, which may share the environment (compose files, scripts).
fn settings_env() -> Env {
    Env::prefixed("SLUICE_")
        .filter(|key| {
            let key = key.as_str().to_ascii_lowercase();
            key != "config" && key != "log_json" && !key.starts_with("host_")
        })
        .split("__")
}

/// Shortest edge secret accepted: 128 bits of hex.
const MIN_SECRET_LEN: usize = 32;

impl Config {
    /// Defaults, then the file (if any), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        Config::from_figment(figment.merge(settings_env()))
    }

    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Config::from_figment(
            Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(text)),
        )
    }

    fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        let mut config: Config = figment.extract().map_err(Box::new)?;
        for deployment in config.models.iter_mut().flat_map(|m| &mut m.deployments) {
            deployment
                .resolve_keys_env()
                .map_err(|message| ConfigError::Invalid {
                    field: "models.deployments.keys_env",
                    message,
                })?;
        }
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_edge()?;
        self.validate_models()?;
        self.validate_settings()?;
        self.validate_database()
    }

    fn validate_edge(&self) -> Result<(), ConfigError> {
        match &self.edge.secret {
            None => Err(ConfigError::Invalid {
                field: "edge.secret",
                message: "required: the HMAC key shared with the edge (env SLUICE_EDGE__SECRET)"
                    .into(),
            }),
            Some(s) if s.expose_secret().len() < MIN_SECRET_LEN => Err(ConfigError::Invalid {
                field: "edge.secret",
                message: format!("must be at least {MIN_SECRET_LEN} characters"),
            }),
            Some(_) => Ok(()),
        }
    }

    /// At least one model, each named once, each with a servable deployment.
    fn validate_models(&self) -> Result<(), ConfigError> {
        if self.models.is_empty() {
            return Err(ConfigError::Invalid {
                field: "models",
                message: "configure at least one model".into(),
            });
        }
        let mut names: Vec<&str> = self.models.iter().map(|m| m.name.as_str()).collect();
        names.sort_unstable();
        if let Some(pair) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(ConfigError::Invalid {
                field: "models",
                message: format!("`{}` is configured twice", pair[0]),
            });
        }
        for model in &self.models {
            if model.deployments.is_empty() {
                return Err(ConfigError::Invalid {
                    field: "models.deployments",
                    message: format!("`{}` has no deployment", model.name),
                });
            }
            for deployment in &model.deployments {
                deployment
                    .validate()
                    .map_err(|(field, message)| ConfigError::Invalid {
                        field,
                        message: format!("`{}`: {message}", model.name),
                    })?;
            }
        }
        let configured = |model: &str| self.models.iter().any(|m| m.name == model);
        for (field, model) in [
            (
                "cache.semantic.embeddings_model",
                &self.cache.semantic.embeddings_model,
            ),
            (
                "conversations.default_model",
                &self.conversations.default_model,
            ),
        ] {
            if let Some(model) = model
                && !configured(model)
            {
                return Err(ConfigError::Invalid {
                    field,
                    message: format!("`{model}` is not a configured model"),
                });
            }
        }
        Ok(())
    }

    /// Shares between 0 and 1, counts of at least 1.
    fn validate_settings(&self) -> Result<(), ConfigError> {
        for (field, share) in [
            ("simulated.error_rate", self.simulated.error_rate),
            ("simulated.rate_limit_rate", self.simulated.rate_limit_rate),
            ("routing.critical_reserve", self.routing.critical_reserve),
            (
                "cache.semantic.threshold",
                f64::from(self.cache.semantic.threshold),
            ),
        ] {
            if !(0.0..=1.0).contains(&share) {
                return Err(ConfigError::Invalid {
                    field,
                    message: "must be between 0 and 1".into(),
                });
            }
        }
        for (field, count) in [
            ("queue.max_attempts", self.queue.max_attempts),
            ("routing.attempts", self.routing.attempts),
        ] {
            if count == 0 {
                return Err(ConfigError::Invalid {
                    field,
                    message: "must be at least 1".into(),
                });
            }
        }
        let thresholds = &self.budgets.soft_thresholds;
        if thresholds.len() > 16 || thresholds.iter().any(|t| !(*t > 0.0 && *t <= 1.0)) {
            return Err(ConfigError::Invalid {
                field: "budgets.soft_thresholds",
                message: "at most 16 shares, each above 0 and at most 1".into(),
            });
        }
        if self.budgets.hold_ttl_secs < self.server.request_timeout_secs {
            return Err(ConfigError::Invalid {
                field: "budgets.hold_ttl_secs",
                message: "must be at least server.request_timeout_secs".into(),
            });
        }
        for (field, limit) in [
            ("server.body_limit_bytes", self.server.body_limit_bytes),
            (
                "server.ai_body_limit_bytes",
                self.server.ai_body_limit_bytes,
            ),
        ] {
            if limit == 0 {
                return Err(ConfigError::Invalid {
                    field,
                    message: "must be positive".into(),
                });
            }
        }
        Ok(())
    }

    fn validate_database(&self) -> Result<(), ConfigError> {
        let db = &self.database;
        if !(db.url.starts_with("sqlite:")
            || db.url.starts_with("postgres:")
            || db.url.starts_with("postgresql:"))
        {
            return Err(ConfigError::Invalid {
                field: "database.url",
                message: "must start with sqlite: or postgres:".into(),
            });
        }
        if db.max_connections == 0 || db.min_connections > db.max_connections {
            return Err(ConfigError::Invalid {
                field: "database.max_connections",
                message: "must be positive and at least min_connections".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "[edge]\nsecret = \"0123456789abcdef0123456789abcdef\"\n";

    #[test]
    fn defaults_plus_secret_are_valid() {
        let c = Config::from_toml(SECRET).unwrap();
        assert_eq!(c.server.listen.port(), 8081);
        assert_eq!(c.models[0].name, "sluice-sim-1");
    }

    #[test]
    fn unknown_keys_and_missing_secret_are_errors() {
        let err = Config::from_toml(&format!("{SECRET}[server]\nlisten_addr = \"x\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen_addr"), "{err}");
        let err = Config::from_toml("").unwrap_err().to_string();
        assert!(err.starts_with("edge.secret"), "{err}");
        let err = Config::from_toml("[edge]\nsecret = \"short\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("at least 32"), "{err}");
    }

    #[test]
    fn duplicate_models_are_errors() {
        let text = format!(
            "{SECRET}[[models]]\nname = \"a\"\ndeployments = [{{ provider = \"simulated\" }}]\n[[models]]\nname = \"a\"\ndeployments = [{{ provider = \"simulated\" }}]\n"
        );
        assert!(
            Config::from_toml(&text)
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
    }

    #[test]
    fn each_provider_says_what_it_lacks() {
        let one = |deployment: &str| {
            Config::from_toml(&format!(
                "{SECRET}[[models]]\nname = \"m\"\ndeployments = [{{ {deployment} }}]\n"
            ))
            .err()
            .map(|e| e.to_string())
        };
        for (deployment, lacking) in [
            ("provider = \"openai\"", "base_url"),
            ("provider = \"azure\", keys = [\"k\"]", "base_url"),
            (
                "provider = \"azure\", base_url = \"https://r.openai.azure.com\"",
                "keys",
            ),
            ("provider = \"gemini\"", "keys"),
            ("provider = \"vertex\", region = \"us-central1\"", "project"),
            ("provider = \"vertex\", project = \"p\"", "region"),
            ("provider = \"bedrock\"", "region"),
        ] {
            let error = one(deployment).unwrap_or_else(|| panic!("{deployment} was accepted"));
            assert!(
                error.contains(lacking) && error.contains("`m`"),
                "{deployment}: {error}"
            );
        }
        assert_eq!(one("provider = \"gemini\", keys = [\"k\"]"), None);
        assert_eq!(
            one(
                "provider = \"azure\", base_url = \"https://r\", entra = { tenant_id = \"t\", client_id = \"c\", client_secret_env = \"S\" }"
            ),
            None
        );
    }
}
