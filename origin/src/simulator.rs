//! `sluice-origin simulate`: the simulated provider as a stand-alone
//! OpenAI-compatible upstream (any model name, no keys), for benchmarks and
//! for trying fallbacks and key rotation against a real HTTP upstream. It
//! also answers Azure OpenAI's deployment paths, the Gemini API's
//! non-streamed `generateContent` and Bedrock's non-streamed `converse`
//! (text; the SigV4 signature is not checked), so that what translating to
//! each provider's format costs can be measured against the same upstream. Its
//! failures are the configured ones (`[simulated]`): 429 with `Retry-After`,
//! and 5xx. Each request is one provider call: no retries, no coalescing.

use crate::budgets::{BudgetSettings, Budgets, Payer};
use crate::config::BudgetsConfig;
use crate::config::SimulatedConfig;
use crate::generation::usage::UsageLog;
use crate::generation::{Generate, GenerationService, ReusePolicy, Surface, parse, render, stream};
use crate::http::ApiError;
use crate::priority::Priority;
use crate::provider::simulated::Simulated;
use crate::routing::keypool::{KeyBudgets, KeyPool};
use crate::routing::resilience::Breaker;
use crate::routing::{Deployment, Engine, Pricing, RetryPolicy};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

const ALIAS: &str = "simulated";

fn engine(config: SimulatedConfig) -> Engine {
    // A breaker that never opens and a pool without budgets: the simulator
    // answers every request with the configured behaviour.
    let never_opens = || Breaker::new(u32::MAX, Duration::ZERO);
    let deployment = Arc::new(Deployment {
        name: ALIAS.into(),
        provider: Arc::new(Simulated::new(config)),
        upstream_model: ALIAS.into(),
        weight: 0,
        quota: None,
        keys: KeyPool::new(ALIAS, Vec::new(), KeyBudgets::default(), never_opens, 0.0),
        breaker: never_opens(),
        pricing: Pricing::default(),
    });
    let policy = RetryPolicy {
        attempts: 1,
        backoff_base: Duration::ZERO,
        backoff_max: Duration::ZERO,
        first_byte_timeout: Duration::from_secs(3600),
        stream_idle_timeout: Duration::from_secs(3600),
    };
    Engine::new(
        HashMap::from([(ALIAS.to_string(), vec![deployment])]),
        policy,
    )
}

/// The one caller of the stand-alone simulator.
fn payer() -> Payer {
    Payer {
        subject: "simulator".into(),
        key_id: None,
    }
}

/// Nothing reused and nothing recorded: each request is one call.
fn service(config: SimulatedConfig) -> GenerationService {
    GenerationService::new(
        Arc::new(engine(config)),
        None,
        UsageLog::discard(),
        ReusePolicy::default(),
        Budgets::none(BudgetSettings::from_config(&BudgetsConfig::default())),
        None,
    )
}

pub fn app(config: SimulatedConfig) -> Router {
    Router::new()
        .route(
            "/health",
            get(|| async { Json(serde_json::json!({ "status": "ok" })) }),
        )
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/embeddings", post(embeddings))
        .route(
            "/openai/deployments/{deployment}/chat/completions",
            post(azure_chat_completions),
        )
        .route("/openai/v1/chat/completions", post(chat_completions))
        .route("/v1beta/models/{call}", post(gemini_generate))
        .route("/model/{model}/converse", post(bedrock_converse))
        .with_state(service(config))
}

/// Any model name is served by the one simulated deployment; answers name
/// the model the client asked for.
async fn chat_completions(
    State(generation): State<GenerationService>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let asked = parse::parse(&body)?;
    let mut routed = asked.clone();
    routed.model = ALIAS.into();
    let generate = Generate {
        surface: Surface::ChatCompletions,
        request: Arc::new(routed),
        payer: payer(),
        priority: Priority::Normal,
        fingerprint: body,
        refuses_cache: false,
    };
    if asked.is_stream() {
        let streamed = generation.stream(generate).await?;
        let relay = stream::Relay {
            include_usage: asked.include_usage(),
            model: asked.model.clone(),
            on_end: None,
        };
        return Ok(stream::sse_response(streamed, relay));
    }
    let mut completion = generation.complete(generate).await?;
    completion.body.set("model", asked.model.into());
    Ok(render::completion_response(completion))
}

async fn embeddings(
    State(generation): State<GenerationService>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut request = parse::parse_embeddings(&body)?;
    let asked = std::mem::replace(&mut request.model, ALIAS.into());
    let embedded = generation
        .embed(&payer(), &request, Priority::Normal)
        .await?;
    request.model = asked;
    Ok(render::embeddings_response(&embedded, &request))
}

async fn azure_chat_completions(
    state: State<GenerationService>,
    Path(_deployment): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    chat_completions(state, body).await
}

/// The simulated model's answer to one user text, and its usage.
async fn answer_text(
    generation: &GenerationService,
    text: &str,
    body: Bytes,
) -> Result<(String, crate::openai::Usage), ApiError> {
    let request = crate::openai::ChatRequest::new(
        ALIAS.into(),
        vec![crate::openai::ChatMessage::text_message(
            crate::openai::Role::User,
            text,
        )],
    );
    let generate = Generate {
        surface: Surface::ChatCompletions,
        request: Arc::new(request),
        payer: payer(),
        priority: Priority::Normal,
        fingerprint: body,
        refuses_cache: false,
    };
    let completion = generation.complete(generate).await?;
    Ok((
        completion.body.text(),
        completion.body.usage().unwrap_or_default(),
    ))
}

fn json_body(body: &Bytes) -> Result<serde_json::Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::InvalidRequest {
        message: format!("the body is not JSON: {e}"),
        param: None,
    })
}

/// The text of the last message not written by `not_role`.
fn last_text(messages: &serde_json::Value, not_role: &str, parts: &str) -> String {
    messages
        .as_array()
        .and_then(|c| c.iter().rev().find(|c| c["role"] != not_role))
        .and_then(|c| c[parts].as_array())
        .map(|parts| {
            parts
                .iter()
                .filter_map(|p| p["text"].as_str())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// Bedrock's `converse`, text only, in Converse's shape.
async fn bedrock_converse(
    State(generation): State<GenerationService>,
    Path(_model): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let asked = json_body(&body)?;
    let text = last_text(&asked["messages"], "assistant", "content");
    let (answer, usage) = answer_text(&generation, &text, body).await?;
    Ok(Json(serde_json::json!({
        "output": { "message": { "role": "assistant", "content": [{ "text": answer }] } },
        "stopReason": "end_turn",
        "usage": { "inputTokens": usage.prompt_tokens, "outputTokens": usage.completion_tokens,
            "totalTokens": usage.total_tokens },
        "metrics": { "latencyMs": 1 },
    }))
    .into_response())
}

/// Gemini's `generateContent`, text only: the last user text is answered
/// by the simulated model, and the answer sent in Gemini's shape.
async fn gemini_generate(
    State(generation): State<GenerationService>,
    Path(call): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (model, method) = call.split_once(':').unwrap_or((call.as_str(), ""));
    if method != "generateContent" {
        return Err(ApiError::NotFound);
    }
    let asked = json_body(&body)?;
    let text = last_text(&asked["contents"], "model", "parts");
    let (answer, usage) = answer_text(&generation, &text, body).await?;
    Ok(Json(serde_json::json!({
        "candidates": [{ "index": 0, "finishReason": "STOP",
            "content": { "role": "model", "parts": [{ "text": answer }] } }],
        "usageMetadata": { "promptTokenCount": usage.prompt_tokens,
            "candidatesTokenCount": usage.completion_tokens, "totalTokenCount": usage.total_tokens },
        "modelVersion": model,
    }))
    .into_response())
}
