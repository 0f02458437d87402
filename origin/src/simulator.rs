//! `sluice-origin simulate`: the simulated provider as a stand-alone
//! OpenAI-compatible upstream (any model name, no keys), for benchmarks and
//! for trying fallbacks and key rotation against a real HTTP upstream. Its
//! failures are the configured ones (`[simulated]`): 429 with `Retry-After`,
//! and 5xx. Each request is one provider call: no retries, no coalescing.

use crate::chat;
use crate::config::SimulatedConfig;
use crate::error::ApiError;
use crate::keypool::{KeyBudgets, KeyPool};
use crate::priority::Priority;
use crate::provider::simulated::Simulated;
use crate::resilience::Breaker;
use crate::routing::{Deployment, Engine, Pricing, RetryPolicy};
use crate::usage::UsageLog;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
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

pub fn app(config: SimulatedConfig) -> Router {
    Router::new()
        .route(
            "/health",
            get(|| async { Json(serde_json::json!({ "status": "ok" })) }),
        )
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/embeddings", post(embeddings))
        .with_state(Arc::new(engine(config)))
}

async fn chat_completions(
    State(engine): State<Arc<Engine>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let asked = chat::parse(&body)?;
    let mut routed = asked.clone();
    routed.model = ALIAS.into();
    let routed = Arc::new(routed);
    let now = crate::app::unix_now();
    if asked.is_stream() {
        let served = engine.stream(routed, Priority::Normal).await?;
        return Ok(chat::stream_response(
            served,
            &asked,
            "simulator",
            now,
            &UsageLog::discard(),
            None,
        ));
    }
    let (served, _) = engine.complete(routed, Priority::Normal, None).await?;
    let body = chat::completion_body(&served.value, &asked.model, now);
    Ok(chat::completion_response(
        &served,
        body,
        "simulator",
        false,
        &UsageLog::discard(),
    ))
}

async fn embeddings(State(engine): State<Arc<Engine>>, body: Bytes) -> Result<Response, ApiError> {
    let request = chat::parse_embeddings(&body)?;
    let inputs = Arc::new(request.input.clone().into_vec());
    let served = engine
        .embed(ALIAS, Arc::clone(&inputs), Priority::Normal)
        .await?;
    Ok(chat::embeddings_response(
        &served,
        &request,
        &inputs,
        "simulator",
        &UsageLog::discard(),
    ))
}
