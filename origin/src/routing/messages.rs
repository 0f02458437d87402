//! The Messages surface's calls: a deployment whose provider speaks the
//! Messages API gets the client's body natively; any other gets its chat
//! translation. Retries, fallback, breakers and key pools are the same as
//! for chat (`Engine::attempt`), so a fallback may cross wire formats.

use super::{Deployment, Engine, RouteError, Served, first_event_then};
use crate::anthropic::MessagesRequest;
use crate::openai::ChatResponse;
use crate::priority::Priority;
use crate::provider::{Adjustments, Call, EventStream, ProviderError, SseStream};
use serde_json::Value;
use std::sync::Arc;

/// A non-streamed Messages answer, as the deployment gave it.
pub enum MessagesReply {
    Native(Value),
    Translated(ChatResponse),
}

/// A streamed Messages answer, as the deployment gives it.
pub enum MessagesStream {
    Native(SseStream),
    Translated(EventStream),
}

/// The chat translation, or why this deployment cannot take the request;
/// what the translation dropped or changed is noted on the call.
fn translated<'a>(
    request: &'a MessagesRequest,
    call: &Call<'_>,
) -> Result<&'a crate::openai::ChatRequest, ProviderError> {
    let chat = request
        .chat
        .as_ref()
        .map_err(|why| ProviderError::Rejected {
            status: 400,
            message: why.clone(),
        })?;
    for note in &request.chat_adjusted {
        call.adjust(note.as_str());
    }
    Ok(chat)
}

fn native_call<'a>(
    deployment: &'a Deployment,
    key: Option<&'a secrecy::SecretString>,
    request: &'a MessagesRequest,
    adjusted: &'a Adjustments,
) -> Call<'a> {
    let mut call = deployment.call(key, adjusted);
    call.beta = request.beta.as_deref();
    call
}

impl Engine {
    pub async fn messages(
        &self,
        request: Arc<MessagesRequest>,
        priority: Priority,
    ) -> Result<Served<MessagesReply>, RouteError> {
        let estimate = request.estimated_tokens();
        self.attempt(
            &request.model,
            priority,
            estimate,
            |deployment, key, adjusted| {
                let request = Arc::clone(&request);
                async move {
                    let call = native_call(&deployment, key.as_ref(), &request, &adjusted);
                    match deployment.provider.messages_api() {
                        Some(api) => api
                            .create(call, &request.body)
                            .await
                            .map(MessagesReply::Native),
                        None => {
                            let chat = translated(&request, &call)?;
                            deployment
                                .provider
                                .complete(call, chat)
                                .await
                                .map(MessagesReply::Translated)
                        }
                    }
                }
            },
            |_| estimate,
        )
        .await
    }

    /// Like [`Engine::stream`]: retries and fallback only until the first event.
    pub async fn messages_stream(
        &self,
        request: Arc<MessagesRequest>,
        priority: Priority,
    ) -> Result<Served<MessagesStream>, RouteError> {
        let estimate = request.estimated_tokens();
        let idle = self.policy.stream_idle_timeout;
        self.attempt(
            &request.model,
            priority,
            estimate,
            |deployment, key, adjusted| {
                let request = Arc::clone(&request);
                async move {
                    let call = native_call(&deployment, key.as_ref(), &request, &adjusted);
                    match deployment.provider.messages_api() {
                        Some(api) => {
                            let stream = api.stream(call, &request.body).await?;
                            first_event_then(stream, idle)
                                .await
                                .map(MessagesStream::Native)
                        }
                        None => {
                            let chat = translated(&request, &call)?;
                            let stream = deployment.provider.stream(call, chat).await?;
                            first_event_then(stream, idle)
                                .await
                                .map(MessagesStream::Translated)
                        }
                    }
                }
            },
            |_| estimate,
        )
        .await
    }

    /// `count_tokens`: asked of the first Anthropic deployment that answers;
    /// estimated (about four characters a token) when the alias has none.
    pub async fn count_tokens(
        &self,
        request: Arc<MessagesRequest>,
        priority: Priority,
    ) -> Result<Served<Option<Value>>, RouteError> {
        self.attempt(
            &request.model,
            priority,
            0,
            |deployment, key, adjusted| {
                let request = Arc::clone(&request);
                async move {
                    let call = native_call(&deployment, key.as_ref(), &request, &adjusted);
                    match deployment.provider.messages_api() {
                        Some(api) => api.count_tokens(call, &request.body).await.map(Some),
                        None => Ok(None),
                    }
                }
            },
            |_| 0,
        )
        .await
    }
}
