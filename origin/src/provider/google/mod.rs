//! Google's Gemini models in their native API (`generateContent`,
//! `streamGenerateContent` as server-sent events, and embeddings), on the
//! Gemini API with an API key or on Vertex AI with a service account.
//! Native rather than Google's OpenAI-compatible endpoint, which lacks
//! thinking budgets, thought signatures and safety detail. The request is
//! translated in [`request`], the answer and stream in [`response`].

mod request;
mod response;

pub use request::translate_request;
pub use response::{StreamState, translate_response};

use super::token::TokenSource;
use super::wire::{MODEL_IN_PATH, check_status, events, send_error};
use super::{Call, Embeddings, EventStream, Provider, ProviderError};
use crate::openai::{ChatRequest, ChatResponse};
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use std::sync::Arc;

pub const GEMINI_BASE_URL: &str = "https://generativelanguage.googleapis.com";

/// Where the models are and how calls are signed.
pub enum Endpoint {
    /// `{base}/v1beta/models/{model}:{method}`, the key in `x-goog-api-key`.
    Gemini { base_url: String },
    /// `{base}/v1/projects/{project}/locations/{region}/publishers/google/models/{model}:{method}`,
    /// a service account's access token as the bearer.
    Vertex {
        base_url: String,
        project: String,
        region: String,
        token: Arc<TokenSource>,
    },
}

impl Endpoint {
    /// Vertex AI's regional endpoint (`global` has no region prefix).
    pub fn vertex_base_url(region: &str) -> String {
        if region == "global" {
            "https://aiplatform.googleapis.com".into()
        } else {
            format!("https://{region}-aiplatform.googleapis.com")
        }
    }
}

pub struct Google {
    client: reqwest::Client,
    endpoint: Endpoint,
}

fn protocol(e: impl std::fmt::Display) -> ProviderError {
    ProviderError::Protocol(e.to_string())
}

impl Google {
    pub fn new(client: reqwest::Client, endpoint: Endpoint) -> Google {
        Google { client, endpoint }
    }

    async fn send(
        &self,
        call: Call<'_>,
        method: &str,
        body: &Value,
    ) -> Result<reqwest::Response, ProviderError> {
        let model = percent_encoding::utf8_percent_encode(call.model, MODEL_IN_PATH);
        let builder = match &self.endpoint {
            Endpoint::Gemini { base_url } => {
                let builder = self
                    .client
                    .post(format!("{}/v1beta/models/{model}:{method}", base_url.trim_end_matches('/')));
                match call.key {
                    Some(key) => builder.header("x-goog-api-key", key),
                    None => builder,
                }
            }
            Endpoint::Vertex {
                base_url,
                project,
                region,
                token,
            } => self
                .client
                .post(format!(
                    "{}/v1/projects/{project}/locations/{region}/publishers/google/models/{model}:{method}",
                    base_url.trim_end_matches('/')
                ))
                .bearer_auth(token.bearer().await?.expose_secret()),
        };
        let response = builder.json(body).send().await.map_err(send_error)?;
        check_status(response, call).await
    }

    fn is_vertex(&self) -> bool {
        matches!(self.endpoint, Endpoint::Vertex { .. })
    }
}

impl Provider for Google {
    fn kind(&self) -> &'static str {
        if self.is_vertex() { "vertex" } else { "gemini" }
    }

    fn complete<'a>(
        &'a self,
        call: Call<'a>,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChatResponse, ProviderError>> {
        Box::pin(async move {
            let body = translate_request(call, request)?;
            let answer: Value = self
                .send(call, "generateContent", &body)
                .await?
                .json()
                .await
                .map_err(protocol)?;
            Ok(translate_response(&answer, call.model))
        })
    }

    fn stream<'a>(
        &'a self,
        call: Call<'a>,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<EventStream, ProviderError>> {
        Box::pin(async move {
            let body = translate_request(call, request)?;
            let response = self
                .send(call, "streamGenerateContent?alt=sse", &body)
                .await?;
            let mut state = StreamState::new(call.model);
            let stream = events(response)
                .map(move |event| {
                    let event = event?;
                    let answer: Value = serde_json::from_str(&event.data).map_err(protocol)?;
                    // A failure after the 200: Google sends the error object as an event.
                    if let Some(error) = answer.get("error") {
                        let message = error["message"].as_str().unwrap_or("stream error");
                        return Err(ProviderError::Unavailable {
                            status: 200,
                            message: message.to_string(),
                        });
                    }
                    let chunks = state.on_answer(&answer);
                    Ok(futures::stream::iter(chunks.into_iter().map(Ok)))
                })
                .try_flatten();
            Ok(stream.boxed())
        })
    }

    fn embed<'a>(
        &'a self,
        call: Call<'a>,
        inputs: &'a [String],
    ) -> BoxFuture<'a, Result<Embeddings, ProviderError>> {
        Box::pin(async move {
            if self.is_vertex() {
                // Vertex AI's text-embedding models answer `predict`.
                let instances: Vec<Value> =
                    inputs.iter().map(|i| json!({ "content": i })).collect();
                let answer: Value = self
                    .send(call, "predict", &json!({ "instances": instances }))
                    .await?
                    .json()
                    .await
                    .map_err(protocol)?;
                let predictions = answer["predictions"]
                    .as_array()
                    .map_or(&[][..], Vec::as_slice);
                let vectors = predictions
                    .iter()
                    .map(|p| Embeddings::vector(&p["embeddings"]["values"]))
                    .collect::<Result<Vec<_>, _>>()?;
                let tokens: u64 = predictions
                    .iter()
                    .filter_map(|p| p.pointer("/embeddings/statistics/token_count"))
                    .filter_map(Value::as_f64)
                    .map(|t| t as u64)
                    .sum();
                return Embeddings::for_inputs(inputs, vectors, Some(tokens as u32));
            }
            let model = format!("models/{}", call.model);
            let requests: Vec<Value> = inputs
                .iter()
                .map(|i| json!({ "model": model, "content": { "parts": [{ "text": i }] } }))
                .collect();
            let answer: Value = self
                .send(call, "batchEmbedContents", &json!({ "requests": requests }))
                .await?
                .json()
                .await
                .map_err(protocol)?;
            let vectors = answer["embeddings"]
                .as_array()
                .map_or(&[][..], Vec::as_slice)
                .iter()
                .map(|e| Embeddings::vector(&e["values"]))
                .collect::<Result<Vec<_>, _>>()?;
            Embeddings::for_inputs(inputs, vectors, None)
        })
    }
}
