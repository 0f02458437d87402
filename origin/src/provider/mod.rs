//! Model providers behind one trait. A provider knows one wire format; which
//! deployment, key and retry a call gets is decided in `crate::routing`.
//! Every provider answers in OpenAI's chat format, whole: an OpenAI-compatible
//! upstream's answer as it came, another provider's translated.

pub mod anthropic;
pub mod bedrock;
pub mod google;
pub mod openai_compat;
pub mod simulated;
pub mod token;
mod wire;

pub use crate::anthropic::SseEvent;
use crate::openai::{ChatChunk, ChatRequest, ChatResponse};
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use std::time::Duration;

/// A streamed answer: OpenAI chunks in arrival order. An OpenAI-compatible
/// upstream's chunks are relayed as sent; other providers' streams are
/// translated into chunks (usage in a last chunk with no choices).
pub type EventStream = BoxStream<'static, Result<ChatChunk, ProviderError>>;

/// Vectors in input order, with the provider's token count when it gave one.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    pub vectors: Vec<Vec<f32>>,
    pub prompt_tokens: Option<u32>,
}

impl Embeddings {
    /// One vector of an upstream's JSON answer (an array of numbers).
    pub fn vector(values: &serde_json::Value) -> Result<Vec<f32>, ProviderError> {
        let unreadable = |what: &str| ProviderError::Protocol(format!("an embedding {what}"));
        values
            .as_array()
            .ok_or_else(|| unreadable("that is not an array of numbers"))?
            .iter()
            .map(|v| {
                v.as_f64()
                    .map(|v| v as f32)
                    .ok_or_else(|| unreadable("value that is not a number"))
            })
            .collect()
    }

    /// The vectors of an answer, which must hold one per input.
    pub fn for_inputs(
        inputs: &[String],
        vectors: Vec<Vec<f32>>,
        prompt_tokens: Option<u32>,
    ) -> Result<Embeddings, ProviderError> {
        if vectors.len() != inputs.len() {
            return Err(ProviderError::Protocol(format!(
                "{} embeddings for {} inputs",
                vectors.len(),
                inputs.len()
            )));
        }
        Ok(Embeddings {
            vectors,
            prompt_tokens,
        })
    }
}

/// What one upstream call is made with.
#[derive(Clone, Copy)]
pub struct Call<'a> {
    /// The model name the upstream knows (not the client's alias).
    pub model: &'a str,
    pub key: Option<&'a str>,
    /// The client's `anthropic-beta` header, for a native Messages call.
    pub beta: Option<&'a str>,
    /// Told what the upstream says is left of the key's limits, on every
    /// successful response (the key pool, which rests a key that has none).
    pub limits: Option<&'a dyn LimitObserver>,
    /// Where the provider notes what it changed or dropped of the request
    /// because its upstream's API has no place for it or refuses it.
    pub adjusted: Option<&'a Adjustments>,
}

impl Call<'_> {
    /// Notes one change the upstream's API forced on the request.
    pub fn adjust(&self, what: impl Into<String>) {
        if let Some(adjusted) = self.adjusted {
            adjusted.note(what);
        }
    }
}

/// What one call changed of the client's request on its way to its upstream:
/// a gateway is lossless, so whatever it must drop or change (a field with
/// no counterpart in the upstream's API, a setting the upstream refuses in
/// that combination) is said, in the `x-sluice-adjusted` response header and
/// a `request_adjusted` log event. Each note is `field:what-happened`.
#[derive(Debug, Default)]
pub struct Adjustments(std::sync::Mutex<Vec<String>>);

impl Adjustments {
    pub fn note(&self, what: impl Into<String>) {
        let what = what.into();
        if let Ok(mut notes) = self.0.lock()
            && !notes.contains(&what)
        {
            notes.push(what);
        }
    }

    pub fn take(&self) -> Vec<String> {
        self.0
            .lock()
            .map(|mut notes| std::mem::take(&mut *notes))
            .unwrap_or_default()
    }
}

/// What an upstream's rate-limit headers say is left of a key's limits
/// (OpenAI's `x-ratelimit-*`, Anthropic's `anthropic-ratelimit-*`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct UpstreamLimits {
    pub remaining_requests: Option<u64>,
    pub remaining_tokens: Option<u64>,
    pub requests_reset: Option<std::time::Duration>,
    pub tokens_reset: Option<std::time::Duration>,
}

pub trait LimitObserver: Send + Sync {
    fn observe(&self, key: Option<&str>, limits: &UpstreamLimits);
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    #[error("upstream rate limit (HTTP 429): {message}")]
    RateLimited {
        retry_after: Option<Duration>,
        message: String,
    },
    #[error("upstream refused the key (HTTP {status}): {message}")]
    Unauthorized { status: u16, message: String },
    #[error("upstream rejected the request (HTTP {status}): {message}")]
    Rejected { status: u16, message: String },
    #[error("upstream failed (HTTP {status}): {message}")]
    Unavailable { status: u16, message: String },
    #[error("upstream timed out {0}")]
    Timeout(&'static str),
    #[error("could not reach the upstream: {0}")]
    Connect(String),
    #[error("upstream answered something unreadable: {0}")]
    Protocol(String),
    #[error("{0}")]
    Unsupported(&'static str),
}

impl ProviderError {
    /// Worth another attempt (another key, later, or another deployment):
    /// rate limits, server errors, timeouts, broken connections, and a refused
    /// key (the next key may work). A rejected request would be rejected again.
    pub fn retryable(&self) -> bool {
        !matches!(
            self,
            ProviderError::Rejected { .. } | ProviderError::Unsupported(_)
        )
    }

    /// Counts against the deployment's health (not the caller's fault, not a quota).
    pub fn is_outage(&self) -> bool {
        matches!(
            self,
            ProviderError::Unavailable { .. }
                | ProviderError::Timeout(_)
                | ProviderError::Connect(_)
                | ProviderError::Protocol(_)
        )
    }
}

pub trait Provider: Send + Sync {
    /// Reported in `x-sluice-provider`.
    fn kind(&self) -> &'static str;

    fn complete<'a>(
        &'a self,
        call: Call<'a>,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChatResponse, ProviderError>>;

    /// Resolves once the upstream has accepted the request; the events follow
    /// as the upstream produces them.
    fn stream<'a>(
        &'a self,
        call: Call<'a>,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<EventStream, ProviderError>>;

    fn embed<'a>(
        &'a self,
        call: Call<'a>,
        inputs: &'a [String],
    ) -> BoxFuture<'a, Result<Embeddings, ProviderError>>;

    /// The provider speaks Anthropic's Messages API natively: `/v1/messages`
    /// passes through to it instead of being translated.
    fn messages_api(&self) -> Option<&dyn MessagesApi> {
        None
    }
}

pub type SseStream = BoxStream<'static, Result<SseEvent, ProviderError>>;

/// Anthropic's Messages API, body in and body out, as the client and the
/// upstream wrote them (only `model` is Sluice's).
pub trait MessagesApi: Send + Sync {
    fn create<'a>(
        &'a self,
        call: Call<'a>,
        body: &'a serde_json::Map<String, serde_json::Value>,
    ) -> BoxFuture<'a, Result<serde_json::Value, ProviderError>>;

    fn stream<'a>(
        &'a self,
        call: Call<'a>,
        body: &'a serde_json::Map<String, serde_json::Value>,
    ) -> BoxFuture<'a, Result<SseStream, ProviderError>>;

    fn count_tokens<'a>(
        &'a self,
        call: Call<'a>,
        body: &'a serde_json::Map<String, serde_json::Value>,
    ) -> BoxFuture<'a, Result<serde_json::Value, ProviderError>>;
}
