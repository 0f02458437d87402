//! Model providers behind one trait, chosen per model by configuration.

pub mod simulated;

use crate::openai::{ChatRequest, Usage};
use futures::future::BoxFuture;

/// A provider's answer before it is wrapped in the OpenAI envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub content: String,
    pub finish_reason: &'static str,
    pub usage: Usage,
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("upstream failed: {0}")]
    Upstream(String),
}

pub trait ChatProvider: Send + Sync {
    /// Name reported in `x-sluice-provider`.
    fn name(&self) -> &'static str;
    fn complete<'a>(
        &'a self,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<Completion, ProviderError>>;
}
