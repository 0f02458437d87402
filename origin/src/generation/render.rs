//! Non-streamed answers in OpenAI's JSON shapes, with Sluice's `x-sluice-*`
//! headers saying where the answer came from and what it used.

use crate::generation::{BudgetNote, Completion, Embedded, Source};
use crate::openai::{EmbeddingsRequest, EncodingFormat, Usage};
use crate::routing::Deployment;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};

/// `/v1/chat/completions`' JSON response.
pub fn completion_response(completion: Completion) -> Response {
    let mut response = axum::Json(&completion.body).into_response();
    completion_headers(response.headers_mut(), &completion);
    response
}

/// Where a completion came from and what it used; the same on every surface.
pub fn completion_headers(headers: &mut HeaderMap, completion: &Completion) {
    match &completion.source {
        Source::Upstream {
            served,
            cost_usd,
            coalesced,
        } => {
            route_headers(
                headers,
                &served.deployment,
                served.attempts,
                &served.adjusted,
            );
            usage_headers(
                headers,
                served.value.usage,
                served.value.usage_estimated,
                *cost_usd,
            );
            if *coalesced {
                headers.insert("x-sluice-coalesced", HeaderValue::from_static("true"));
            }
        }
        // No upstream call, no cost; the body's usage is the original answer's.
        Source::SemanticCache { similarity } => {
            if let Ok(value) = HeaderValue::from_str(&format!("{similarity:.4}")) {
                headers.insert("x-sluice-semantic-similarity", value);
            }
            headers.insert("x-sluice-cost-usd", HeaderValue::from_static("0.000000"));
        }
    }
    if let Some(label) = completion.semantic_cache {
        headers.insert("x-sluice-semantic-cache", HeaderValue::from_static(label));
    }
    budget_headers(headers, &completion.budget);
}

/// What a budgeted call's tightest budget has left (`scope:id` and USD),
/// and the output cap Sluice set on a request that had none.
pub fn budget_headers(headers: &mut HeaderMap, note: &BudgetNote) {
    if let Some(remaining) = &note.remaining {
        let usd = crate::budgets::usd(remaining.remaining_microdollars);
        if let Ok(value) = HeaderValue::from_str(&format!("{usd:.6}")) {
            headers.insert("x-sluice-budget-remaining-usd", value);
        }
        let scope = format!("{}:{}", remaining.scope.as_str(), remaining.id);
        if let Ok(value) = HeaderValue::from_str(&scope) {
            headers.insert("x-sluice-budget-scope", value);
        }
    }
    if let Some(cap) = note.output_cap {
        headers.insert("x-sluice-output-cap", HeaderValue::from(cap));
    }
}

/// Which deployment answered, after how many calls, and what its provider
/// changed of the request (`x-sluice-adjusted`, see `provider::Adjustments`).
pub(crate) fn route_headers(
    headers: &mut HeaderMap,
    deployment: &Deployment,
    attempts: u32,
    adjusted: &[String],
) {
    headers.insert(
        "x-sluice-provider",
        HeaderValue::from_static(deployment.provider.kind()),
    );
    if let Ok(name) = HeaderValue::from_str(&deployment.name) {
        headers.insert("x-sluice-deployment", name);
    }
    headers.insert("x-sluice-attempts", HeaderValue::from(attempts));
    if !adjusted.is_empty()
        && let Ok(value) = HeaderValue::from_str(&adjusted.join(", "))
    {
        headers.insert("x-sluice-adjusted", value);
    }
}

pub(crate) fn usage_headers(headers: &mut HeaderMap, usage: Usage, estimated: bool, cost: f64) {
    for (name, value) in [
        ("x-sluice-prompt-tokens", usage.prompt_tokens),
        ("x-sluice-completion-tokens", usage.completion_tokens),
        ("x-sluice-total-tokens", usage.total_tokens),
    ] {
        headers.insert(name, HeaderValue::from(value));
    }
    if let Ok(cost) = HeaderValue::from_str(&format!("{cost:.6}")) {
        headers.insert("x-sluice-cost-usd", cost);
    }
    if estimated {
        headers.insert("x-sluice-usage-estimated", HeaderValue::from_static("true"));
    }
}

/// OpenAI's embeddings list, floats or base64 as the client asked.
pub fn embeddings_response(embedded: &Embedded, request: &EmbeddingsRequest) -> Response {
    let base64 = request.encoding_format == Some(EncodingFormat::Base64);
    let data: Vec<Value> = embedded
        .served
        .value
        .vectors
        .iter()
        .enumerate()
        .map(|(index, vector)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(vector)
            };
            json!({ "object": "embedding", "index": index, "embedding": embedding })
        })
        .collect();
    let prompt_tokens = embedded.usage.prompt_tokens;
    let mut response = axum::Json(json!({
        "object": "list", "data": data, "model": request.model,
        "usage": { "prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens },
    }))
    .into_response();
    let headers = response.headers_mut();
    route_headers(
        headers,
        &embedded.served.deployment,
        embedded.served.attempts,
        &embedded.served.adjusted,
    );
    usage_headers(
        headers,
        embedded.usage,
        embedded.estimated,
        embedded.cost_usd,
    );
    budget_headers(headers, &embedded.budget);
    response
}
