//! AWS Bedrock. Chat completions go to the Converse API (`converse`,
//! `converse-stream`), which serves every Bedrock text model, through the
//! Messages translation Sluice already has ([`converse`]). A Messages client
//! (Claude Code, the anthropic SDK) of a Claude model reaches `InvokeModel`
//! with Anthropic's own body, so thinking, `cache_control`, betas and every
//! field Anthropic adds keep working; of another model, Converse.
//! Embeddings: Titan and Cohere through `InvokeModel`.
//!
//! Calls are signed with SigV4 ([`auth`]), or carry a Bedrock API key as the
//! bearer when the deployment has `keys`. Streams are AWS event-stream
//! frames ([`frames`]); an exception inside one is the deployment's failure.

mod auth;
mod converse;
mod frames;

pub use auth::{AwsCredentialsError, CredentialSource};
pub use converse::{ConverseEvents, anthropic_message, converse_request};

use super::anthropic::{self, StreamState};
use super::wire::{check_status, send_error};
use super::{
    Call, Embeddings, EventStream, MessagesApi, Provider, ProviderError, SseEvent, SseStream,
};
use crate::openai::{ChatRequest, ChatResponse};
use base64::Engine as _;
use frames::{Frame, frames};
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// What `InvokeModel` expects in a Claude body instead of the header.
const ANTHROPIC_VERSION: &str = "bedrock-2023-05-31";

/// The `anthropic-beta` flags Bedrock takes for Claude (AWS's documentation
/// of the Messages API on Bedrock, and `claude-code-20250219`, which Claude
/// Code sends and Bedrock accepts). Bedrock refuses a whole request that
/// names any other ("invalid beta flag"), so the others are dropped, and said.
const BEDROCK_BETAS: &[&str] = &[
    "claude-code-20250219",
    "computer-use-2024-10-22",
    "computer-use-2025-01-24",
    "token-efficient-tools-2025-02-19",
    "interleaved-thinking-2025-05-14",
    "output-128k-2025-02-19",
    "dev-full-thinking-2025-05-14",
    "context-1m-2025-08-07",
    "context-management-2025-06-27",
    "effort-2025-11-24",
    "tool-search-tool-2025-10-19",
    "tool-examples-2025-10-29",
];

/// What Bedrock says of a beta flag a model does not take (some models take
/// fewer than the list above).
const INVALID_BETA: &str = "invalid beta flag";

/// The client's beta flags that Bedrock takes; the others noted as dropped.
fn betas(call: Call<'_>) -> Vec<String> {
    let mut kept = Vec::new();
    for flag in call
        .beta
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|b| !b.is_empty())
    {
        if BEDROCK_BETAS.contains(&flag) {
            kept.push(flag.to_string());
        } else {
            call.adjust(format!(
                "anthropic_beta:{flag} dropped (Bedrock does not take it)"
            ));
        }
    }
    kept
}

/// Takes the beta flags out of a body (`InvokeModel`'s, or Converse's
/// additional fields) and the tool fields that only mean something with
/// one (`defer_loading`, tool search's); whether there were any.
fn strip_betas(body: &mut Value) -> bool {
    let Some(fields) = body.as_object_mut() else {
        return false;
    };
    let mut found = fields.remove("anthropic_beta").is_some();
    if let Some(Value::Object(additional)) = fields.get_mut("additionalModelRequestFields") {
        found |= additional.remove("anthropic_beta").is_some();
    }
    drop_deferred_tools(fields);
    found
}

/// Takes `defer_loading` off every tool (tool search's, which Bedrock
/// refuses without that beta); whether any had it.
fn drop_deferred_tools(fields: &mut Map<String, Value>) -> bool {
    let mut dropped = false;
    if let Some(Value::Array(tools)) = fields.get_mut("tools") {
        for tool in tools.iter_mut().filter_map(Value::as_object_mut) {
            dropped |= tool.remove("defer_loading").is_some();
        }
    }
    dropped
}

/// What a model id may not hold unescaped in the URL path (an inference
/// profile's ARN has `:` and `/`).
const MODEL_ID: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

pub struct Bedrock {
    client: reqwest::Client,
    /// `https://bedrock-runtime.<region>.amazonaws.com` unless configured.
    base_url: String,
    region: String,
    /// SigV4 credentials; `None` when the deployment's keys are Bedrock API
    /// keys, sent as the bearer.
    credentials: Option<Arc<CredentialSource>>,
}

/// Anthropic's models on Bedrock (`anthropic.claude-...`, a cross-region
/// profile `us.anthropic.claude-...`, or its ARN), which take Anthropic's
/// own request body.
pub fn is_claude(model: &str) -> bool {
    model.contains("anthropic.") || model.contains("claude")
}

fn protocol(e: impl std::fmt::Display) -> ProviderError {
    ProviderError::Protocol(e.to_string())
}

fn object(value: &Value) -> Result<&Map<String, Value>, ProviderError> {
    value
        .as_object()
        .ok_or_else(|| protocol("a request body that is not an object"))
}

impl Bedrock {
    pub fn base_url(region: &str) -> String {
        format!("https://bedrock-runtime.{region}.amazonaws.com")
    }

    pub fn new(
        client: reqwest::Client,
        base_url: Option<&str>,
        region: &str,
        credentials: Option<Arc<CredentialSource>>,
    ) -> Bedrock {
        Bedrock {
            client,
            base_url: base_url
                .map(|b| b.trim_end_matches('/').to_string())
                .unwrap_or_else(|| Bedrock::base_url(region)),
            region: region.to_string(),
            credentials,
        }
    }

    /// POSTs `body` to `/model/{model}/{action}`, signed. A model that
    /// refuses a beta flag Bedrock otherwise takes gets the request again
    /// without any, once, and the client is told.
    async fn send(
        &self,
        call: Call<'_>,
        action: &str,
        body: &Value,
        stream: bool,
    ) -> Result<reqwest::Response, ProviderError> {
        match self.send_once(call, action, body, stream).await {
            Err(ProviderError::Rejected {
                status: 400,
                message,
            }) if message.contains(INVALID_BETA) => {
                let mut plain = body.clone();
                if !strip_betas(&mut plain) {
                    return Err(ProviderError::Rejected {
                        status: 400,
                        message,
                    });
                }
                call.adjust("anthropic_beta:dropped (the model refused them)");
                self.send_once(call, action, &plain, stream).await
            }
            other => other,
        }
    }

    async fn send_once(
        &self,
        call: Call<'_>,
        action: &str,
        body: &Value,
        stream: bool,
    ) -> Result<reqwest::Response, ProviderError> {
        let model = percent_encoding::utf8_percent_encode(call.model, MODEL_ID);
        let url = format!("{}/model/{model}/{action}", self.base_url);
        let body = serde_json::to_vec(body).map_err(protocol)?;
        let accept = if stream {
            "application/vnd.amazon.eventstream"
        } else {
            "application/json"
        };
        let headers = [("content-type", "application/json"), ("accept", accept)];
        let mut builder = self.client.post(&url);
        for (name, value) in headers {
            builder = builder.header(name, value);
        }
        builder = match (&self.credentials, call.key) {
            (_, Some(key)) => builder.bearer_auth(key),
            (Some(credentials), None) => {
                for (name, value) in credentials
                    .sign(&self.region, &url, &headers, &body)
                    .await?
                {
                    builder = builder.header(name, value);
                }
                builder
            }
            (None, None) => builder,
        };
        let response = builder.body(body).send().await.map_err(send_error)?;
        check_status(response, call).await.map_err(|e| match e {
            // A model that failed or is not ready yet: the deployment's
            // trouble, worth another deployment.
            ProviderError::Rejected {
                status: 424,
                message,
            } => ProviderError::Unavailable {
                status: 424,
                message,
            },
            other => other,
        })
    }

    async fn json(
        &self,
        call: Call<'_>,
        action: &str,
        body: &Value,
    ) -> Result<Value, ProviderError> {
        self.send(call, action, body, false)
            .await?
            .json()
            .await
            .map_err(protocol)
    }

    /// A chat request as a Messages body, with Bedrock's own fields (a
    /// request's `bedrock` object) carried over for Converse.
    fn messages_body(
        call: Call<'_>,
        request: &ChatRequest,
        stream: bool,
    ) -> Result<Value, ProviderError> {
        let Some(native) = request.field("bedrock") else {
            return anthropic::translate_request(call, request, stream);
        };
        let mut plain = request.clone();
        plain.extra.remove("bedrock");
        let mut body = anthropic::translate_request(call, &plain, stream)?;
        body["bedrock"] = native.clone();
        Ok(body)
    }

    /// A converse stream as Messages events.
    async fn converse_stream(
        &self,
        call: Call<'_>,
        body: &Map<String, Value>,
    ) -> Result<SseStream, ProviderError> {
        let converse = converse_request(call, body, is_claude(call.model))?;
        let response = self.send(call, "converse-stream", &converse, true).await?;
        let mut events = ConverseEvents::new(call.model);
        Ok(frames(response)
            .map_ok(move |Frame { event, payload }| {
                futures::stream::iter(events.on_event(&event, &payload).into_iter().map(Ok))
            })
            .try_flatten()
            .boxed())
    }

    /// Anthropic's body for `InvokeModel`: the client's, with the version
    /// Bedrock wants and the betas in the body; the model is in the URL.
    fn invoke_body(call: Call<'_>, body: &Map<String, Value>) -> Value {
        let mut native = anthropic::native_body(call, body);
        if let Some(fields) = native.as_object_mut() {
            fields.remove("model");
            fields.remove("stream");
            if fields.remove("bedrock").is_some() {
                call.adjust("bedrock:dropped (InvokeModel takes Anthropic's body)");
            }
            fields
                .entry("anthropic_version")
                .or_insert_with(|| json!(ANTHROPIC_VERSION));
            let betas = betas(call);
            if !betas.is_empty() {
                fields.insert("anthropic_beta".into(), json!(betas));
            }
            if !betas.iter().any(|b| b == "tool-search-tool-2025-10-19")
                && drop_deferred_tools(fields)
            {
                call.adjust("tools.defer_loading:dropped (no tool search beta)");
            }
        }
        native
    }
}

/// A chunk of `InvokeModelWithResponseStream`: an Anthropic stream event,
/// base64 in `bytes`.
fn invoke_event(frame: Frame) -> Result<Option<SseEvent>, ProviderError> {
    if frame.event != "chunk" {
        return Ok(None);
    }
    let bytes = frame.payload["bytes"]
        .as_str()
        .ok_or_else(|| protocol("a chunk without bytes"))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(bytes)
        .map_err(protocol)?;
    let data: Value = serde_json::from_slice(&decoded).map_err(protocol)?;
    let event = data["type"].as_str().unwrap_or_default().to_string();
    anthropic::native_event(event, data).map(Some)
}

impl Provider for Bedrock {
    fn kind(&self) -> &'static str {
        "bedrock"
    }

    fn complete<'a>(
        &'a self,
        call: Call<'a>,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChatResponse, ProviderError>> {
        Box::pin(async move {
            let body = Bedrock::messages_body(call, request, false)?;
            let converse = converse_request(call, object(&body)?, is_claude(call.model))?;
            let answer = self.json(call, "converse", &converse).await?;
            let message = anthropic_message(&answer, call.model);
            let mut response = anthropic::translate_response(&message);
            if let Some(bedrock) = message.get("bedrock") {
                response.set("bedrock", bedrock.clone());
            }
            Ok(response)
        })
    }

    fn stream<'a>(
        &'a self,
        call: Call<'a>,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<EventStream, ProviderError>> {
        Box::pin(async move {
            let body = Bedrock::messages_body(call, request, true)?;
            let events = self.converse_stream(call, object(&body)?).await?;
            let mut state = StreamState::default();
            Ok(events
                .map(move |event| {
                    let event = event?;
                    state
                        .on_value(&event.event, &event.data)
                        .map(|chunks| futures::stream::iter(chunks.into_iter().map(Ok)))
                })
                .try_flatten()
                .boxed())
        })
    }

    fn embed<'a>(
        &'a self,
        call: Call<'a>,
        inputs: &'a [String],
    ) -> BoxFuture<'a, Result<Embeddings, ProviderError>> {
        Box::pin(async move {
            if call.model.contains("cohere.embed") {
                // Cohere takes the batch in one call.
                let body = json!({ "texts": inputs, "input_type": "search_document" });
                let answer = self.json(call, "invoke", &body).await?;
                let vectors = match &answer["embeddings"] {
                    // `embedding_types` asked for: `{"float": [...]}`.
                    Value::Object(by_type) => vectors(&by_type["float"])?,
                    other => vectors(other)?,
                };
                return Embeddings::for_inputs(inputs, vectors, None);
            }
            // Titan embeds one text per call.
            let answers = futures::future::try_join_all(inputs.iter().map(|input| async move {
                self.json(call, "invoke", &json!({ "inputText": input }))
                    .await
            }))
            .await?;
            let mut all = Vec::with_capacity(answers.len());
            let mut tokens = 0u64;
            for answer in &answers {
                all.push(Embeddings::vector(&answer["embedding"])?);
                tokens += answer["inputTextTokenCount"].as_u64().unwrap_or(0);
            }
            Embeddings::for_inputs(inputs, all, Some(tokens as u32))
        })
    }

    fn messages_api(&self) -> Option<&dyn MessagesApi> {
        Some(self)
    }
}

fn vectors(values: &Value) -> Result<Vec<Vec<f32>>, ProviderError> {
    values
        .as_array()
        .ok_or_else(|| protocol("embeddings that are not an array"))?
        .iter()
        .map(Embeddings::vector)
        .collect()
}

impl MessagesApi for Bedrock {
    fn create<'a>(
        &'a self,
        call: Call<'a>,
        body: &'a Map<String, Value>,
    ) -> BoxFuture<'a, Result<Value, ProviderError>> {
        Box::pin(async move {
            if is_claude(call.model) {
                return self
                    .json(call, "invoke", &Bedrock::invoke_body(call, body))
                    .await;
            }
            let converse = converse_request(call, body, false)?;
            let answer = self.json(call, "converse", &converse).await?;
            Ok(anthropic_message(&answer, call.model))
        })
    }

    fn stream<'a>(
        &'a self,
        call: Call<'a>,
        body: &'a Map<String, Value>,
    ) -> BoxFuture<'a, Result<SseStream, ProviderError>> {
        Box::pin(async move {
            if !is_claude(call.model) {
                return self.converse_stream(call, body).await;
            }
            let response = self
                .send(
                    call,
                    "invoke-with-response-stream",
                    &Bedrock::invoke_body(call, body),
                    true,
                )
                .await?;
            Ok(frames(response)
                .map(|frame| frame.and_then(invoke_event))
                .try_filter_map(|event| async move { Ok(event) })
                .boxed())
        })
    }

    fn count_tokens<'a>(
        &'a self,
        call: Call<'a>,
        body: &'a Map<String, Value>,
    ) -> BoxFuture<'a, Result<Value, ProviderError>> {
        Box::pin(async move {
            let input = if is_claude(call.model) {
                let mut invoke = Bedrock::invoke_body(call, body);
                // Counting takes no output settings.
                if let Some(fields) = invoke.as_object_mut() {
                    fields.remove("max_tokens");
                }
                let encoded = base64::engine::general_purpose::STANDARD
                    .encode(serde_json::to_vec(&invoke).map_err(protocol)?);
                json!({ "invokeModel": { "body": encoded } })
            } else {
                let converse = converse_request(call, body, false)?;
                json!({ "converse": { "messages": converse["messages"], "system": converse.get("system") } })
            };
            let answer = self
                .json(call, "count-tokens", &json!({ "input": input }))
                .await?;
            let tokens = answer["inputTokens"]
                .as_u64()
                .ok_or_else(|| protocol("a count without inputTokens"))?;
            Ok(json!({ "input_tokens": tokens }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::Adjustments;

    #[test]
    fn a_claude_invoke_body_has_bedrock_s_version_and_the_betas() {
        let adjusted = Adjustments::default();
        let call = Call {
            model: "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
            key: None,
            beta: Some("interleaved-thinking-2025-05-14, oauth-2025-04-20, context-1m-2025-08-07"),
            limits: None,
            adjusted: Some(&adjusted),
        };
        let body = json!({"model": "alias", "stream": true, "max_tokens": 10,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi",
                "cache_control": {"type": "ephemeral"}}]}]});
        let invoke = Bedrock::invoke_body(call, body.as_object().unwrap());
        assert!(invoke.get("model").is_none() && invoke.get("stream").is_none());
        assert_eq!(invoke["anthropic_version"], ANTHROPIC_VERSION);
        assert_eq!(
            invoke["anthropic_beta"],
            json!(["interleaved-thinking-2025-05-14", "context-1m-2025-08-07"])
        );
        assert_eq!(
            invoke["messages"][0]["content"][0]["cache_control"]["type"],
            "ephemeral"
        );
        assert_eq!(
            adjusted.take(),
            ["anthropic_beta:oauth-2025-04-20 dropped (Bedrock does not take it)"]
        );
        let mut retried = invoke.clone();
        assert!(strip_betas(&mut retried));
        assert!(retried.get("anthropic_beta").is_none());
        assert!(!strip_betas(&mut retried));
        assert!(is_claude(call.model));
        assert!(!is_claude("amazon.nova-pro-v1:0"));
    }

    #[test]
    fn an_inference_profile_arn_is_escaped_in_the_path() {
        let arn =
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-v1:0";
        assert_eq!(
            percent_encoding::utf8_percent_encode(arn, MODEL_ID).to_string(),
            "arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.anthropic.claude-v1%3A0"
        );
    }

    #[test]
    fn an_invoke_chunk_is_the_anthropic_event_it_carries() {
        let data = json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": "Hi"}});
        let encoded = base64::engine::general_purpose::STANDARD.encode(data.to_string());
        let event = invoke_event(Frame {
            event: "chunk".into(),
            payload: json!({ "bytes": encoded }),
        })
        .unwrap()
        .unwrap();
        assert_eq!(event.event, "content_block_delta");
        assert_eq!(event.data, data);
        let error = base64::engine::general_purpose::STANDARD
            .encode(r#"{"type":"error","error":{"type":"overloaded_error","message":"busy"}}"#);
        assert!(matches!(
            invoke_event(Frame {
                event: "chunk".into(),
                payload: json!({ "bytes": error })
            }),
            Err(ProviderError::Unavailable { status: 200, .. })
        ));
    }
}
