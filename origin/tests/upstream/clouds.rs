//! The clouds' APIs, as their public references describe them, on the same
//! test upstream: Azure OpenAI (deployment-based and v1 endpoints, `api-key`
//! or an Entra ID token, `api-version`, content filtering), the Gemini API
//! and Vertex AI (`generateContent`, `streamGenerateContent?alt=sse`,
//! embeddings, Google's error shape), and the two identity services (Entra
//! ID's client credentials; Google's JWT bearer grant, whose assertion is
//! verified with the service account's public key). Each refuses what the
//! real service refuses, in its own shape, and records what it received.

use super::{Behaviour, Script, Seen, before_answer, sse};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// The `api-version`s the test Azure resource accepts (a sample of Azure's).
pub const AZURE_API_VERSIONS: &[&str] = &["2024-10-21", "2025-04-01-preview"];
pub const ENTRA_TENANT: &str = "test-tenant";
pub const ENTRA_CLIENT: &str = "test-client";
pub const ENTRA_SECRET: &str = "test-client-secret";
pub const SERVICE_ACCOUNT_EMAIL: &str = "sluice-test@test-project.iam.gserviceaccount.com";
/// The one Gemini answer that breaks off mid-stream with an error event.
pub const GEMINI_BREAKS: &str = "gemini-breaks-mid-stream";

pub fn routes(router: Router<Arc<Script>>) -> Router<Arc<Script>> {
    router
        .route(
            "/openai/deployments/{deployment}/chat/completions",
            post(azure_deployment_chat),
        )
        .route(
            "/openai/deployments/{deployment}/embeddings",
            post(azure_deployment_embeddings),
        )
        .route("/openai/v1/chat/completions", post(azure_v1_chat))
        .route("/openai/v1/embeddings", post(azure_v1_embeddings))
        .route("/{tenant}/oauth2/v2.0/token", post(entra_token))
        .route("/v1beta/models/{call}", post(gemini))
        .route(
            "/v1/projects/{project}/locations/{region}/publishers/google/models/{call}",
            post(vertex),
        )
        .route(
            "/v1/projects/{project}/locations/{region}/publishers/anthropic/models/{call}",
            post(vertex_claude),
        )
        .route("/token", post(google_token))
}

/// Claude on Vertex AI: `rawPredict` / `streamRawPredict` (and the
/// `count-tokens` model's `rawPredict`) with Anthropic's body, the model in
/// the URL and `anthropic_version: vertex-2023-10-16` in the body, as
/// Google's reference for Claude on Vertex describes; answered by the
/// Anthropic upstream (which records the call under `/v1/messages`, the
/// bearer token as its key).
async fn vertex_claude(
    State(script): State<Arc<Script>>,
    Path((project, region, call)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let token = match vertex_token(&script, &headers, &project, &region) {
        Ok(token) => token,
        Err(refused) => return *refused,
    };
    let refuse = |message: &str| {
        (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({ "type": "error",
                "error": { "type": "invalid_request_error", "message": message } })),
        )
            .into_response()
    };
    let Ok(Value::Object(mut request)) = serde_json::from_slice::<Value>(&body) else {
        return refuse("The request body is not valid JSON.");
    };
    if request.remove("anthropic_version") != Some(json!("vertex-2023-10-16")) {
        return refuse("anthropic_version: Input should be 'vertex-2023-10-16'");
    }
    let (model, method) = call.split_once(':').unwrap_or((call.as_str(), ""));
    let streamed = request.get("stream") == Some(&json!(true));
    match (model, method) {
        ("count-tokens", "rawPredict") => {}
        (_, "rawPredict") if !streamed => {}
        (_, "streamRawPredict") if streamed => {}
        _ => return refuse("stream must be true with streamRawPredict and absent with rawPredict"),
    }
    let mut forwarded = headers.clone();
    forwarded.insert("anthropic-version", "2023-06-01".parse().unwrap());
    forwarded.insert("x-api-key", token.parse().unwrap());
    if model == "count-tokens" {
        return super::anthropic_count_tokens(
            forwarded,
            Bytes::from(Value::Object(request).to_string()),
        )
        .await;
    }
    if request.contains_key("model") {
        return refuse("model: Extra inputs are not permitted (the model is in the URL)");
    }
    request.insert("model".into(), json!(model));
    super::anthropic_messages(
        State(script),
        forwarded,
        Bytes::from(Value::Object(request).to_string()),
    )
    .await
}

/// The bearer token a Vertex call carries, if this upstream's token
/// endpoint issued it, for the test project.
fn vertex_token(
    script: &Script,
    headers: &HeaderMap,
    project: &str,
    region: &str,
) -> Result<String, Box<Response>> {
    let token = header(headers, "authorization").and_then(|v| v.strip_prefix("Bearer "));
    let Some(token) = token.filter(|t| {
        script
            .issued_tokens
            .lock()
            .unwrap()
            .contains(&t.to_string())
    }) else {
        return Err(Box::new(google_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
        )));
    };
    if project != "test-project" || region.is_empty() {
        return Err(Box::new(google_error(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            "Permission denied on resource project.",
        )));
    }
    Ok(token.to_string())
}

/// The service account key file a Vertex deployment is configured with,
/// naming this upstream's token endpoint.
pub fn service_account_json(token_uri: &str) -> String {
    json!({
        "type": "service_account", "project_id": "test-project",
        "private_key_id": "test-key-1",
        "private_key": include_str!("testdata/service-account.key.pem"),
        "client_email": SERVICE_ACCOUNT_EMAIL, "client_id": "1",
        "token_uri": token_uri,
    })
    .to_string()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

// --- Azure OpenAI ----------------------------------------------------------

fn azure_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "error": { "code": code, "message": message } })),
    )
        .into_response()
}

/// Azure takes the key in `api-key`, or a bearer token its tenant issued.
fn azure_auth(script: &Script, headers: &HeaderMap) -> Result<String, Box<Response>> {
    if let Some(key) = header(headers, "api-key") {
        return Ok(key.to_string());
    }
    if let Some(token) = header(headers, "authorization").and_then(|v| v.strip_prefix("Bearer ")) {
        if script
            .issued_tokens
            .lock()
            .unwrap()
            .contains(&token.to_string())
        {
            return Ok(token.to_string());
        }
        return Err(Box::new(azure_error(
            StatusCode::UNAUTHORIZED,
            "401",
            "Unauthorized. Access token is missing, invalid, audience is incorrect, or have expired.",
        )));
    }
    Err(Box::new(azure_error(
        StatusCode::UNAUTHORIZED,
        "401",
        "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.",
    )))
}

/// The deployment-based endpoint without an `api-version` is not found;
/// with one Azure does not serve, a 400.
fn api_version(query: &HashMap<String, String>) -> Result<(), Box<Response>> {
    match query.get("api-version") {
        None => Err(Box::new(azure_error(
            StatusCode::NOT_FOUND,
            "404",
            "Resource not found",
        ))),
        Some(v) if !AZURE_API_VERSIONS.contains(&v.as_str()) => Err(Box::new(azure_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "API version not supported",
        ))),
        Some(_) => Ok(()),
    }
}

async fn azure_deployment_chat(
    State(script): State<Arc<Script>>,
    Path(deployment): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(refused) = api_version(&query) {
        return *refused;
    }
    azure_chat(script, &headers, body, Some(deployment)).await
}

async fn azure_v1_chat(
    State(script): State<Arc<Script>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if query.is_some_and(|q| q.contains("api-version")) {
        return azure_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "The v1 API does not take an api-version",
        );
    }
    azure_chat(script, &headers, body, None).await
}

/// Azure's chat completions: OpenAI's, plus the content filter's verdicts
/// (`prompt_filter_results`, `content_filter_results`; a first stream chunk
/// with no choices), and a 400 `content_filter` for a filtered prompt.
async fn azure_chat(
    script: Arc<Script>,
    headers: &HeaderMap,
    body: Bytes,
    deployment: Option<String>,
) -> Response {
    let route = match &deployment {
        Some(_) => "/azure/deployments/chat/completions",
        None => "/azure/v1/chat/completions",
    };
    let key = match azure_auth(&script, headers) {
        Ok(key) => key,
        Err(refused) => return *refused,
    };
    let mut request: Value = serde_json::from_slice(&body).unwrap();
    if let Some(deployment) = deployment {
        request["model"] = json!(deployment);
    }
    if request.to_string().contains("FILTER_ME") {
        script.behaviour(seen("/azure/chat", Some(key), &request));
        return (StatusCode::BAD_REQUEST, axum::Json(json!({ "error": {
            "message": "The response was filtered due to the prompt triggering Azure OpenAI's content management policy.",
            "type": null, "param": "prompt", "code": "content_filter", "status": 400,
            "innererror": { "code": "ResponsibleAIPolicyViolation", "content_filter_result": {
                "hate": { "filtered": true, "severity": "high" } } } } })))
            .into_response();
    }
    let mut forwarded = HeaderMap::new();
    forwarded.insert("authorization", format!("Bearer {key}").parse().unwrap());
    forwarded.insert("x-test-path", route.parse().unwrap());
    let stream = request["stream"].as_bool() == Some(true);
    let answer =
        super::openai_chat(State(script), forwarded, Bytes::from(request.to_string())).await;
    if answer.status() != StatusCode::OK {
        return answer;
    }
    let filters = json!([{ "prompt_index": 0, "content_filter_results": {
        "hate": { "filtered": false, "severity": "safe" }, "violence": { "filtered": false, "severity": "safe" } } }]);
    if stream {
        let first = format!(
            "data: {}\n\n",
            json!({ "id": "", "object": "", "created": 0, "model": "", "choices": [], "prompt_filter_results": filters })
        );
        let rest = answer.into_body().into_data_stream();
        let body = futures::StreamExt::chain(
            futures::stream::once(async move { Ok::<_, axum::Error>(Bytes::from(first)) }),
            rest,
        );
        let mut response = Body::from_stream(body).into_response();
        response
            .headers_mut()
            .insert("content-type", "text/event-stream".parse().unwrap());
        return response;
    }
    let bytes = axum::body::to_bytes(answer.into_body(), usize::MAX)
        .await
        .unwrap();
    let mut completion: Value = serde_json::from_slice(&bytes).unwrap();
    completion["prompt_filter_results"] = filters;
    for choice in completion["choices"].as_array_mut().into_iter().flatten() {
        choice["content_filter_results"] =
            json!({ "hate": { "filtered": false, "severity": "safe" } });
    }
    axum::Json(completion).into_response()
}

async fn azure_deployment_embeddings(
    State(script): State<Arc<Script>>,
    Path(deployment): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(refused) = api_version(&query) {
        return *refused;
    }
    let mut request: Value = serde_json::from_slice(&body).unwrap();
    request["model"] = json!(deployment);
    azure_embeddings(script, &headers, request).await
}

async fn azure_v1_embeddings(
    State(script): State<Arc<Script>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap();
    azure_embeddings(script, &headers, request).await
}

async fn azure_embeddings(script: Arc<Script>, headers: &HeaderMap, request: Value) -> Response {
    let key = match azure_auth(&script, headers) {
        Ok(key) => key,
        Err(refused) => return *refused,
    };
    let mut forwarded = HeaderMap::new();
    forwarded.insert("authorization", format!("Bearer {key}").parse().unwrap());
    super::openai_embeddings(State(script), forwarded, Bytes::from(request.to_string())).await
}

#[derive(serde::Deserialize)]
struct ClientCredentials {
    grant_type: String,
    client_id: String,
    client_secret: String,
    scope: String,
}

/// Entra ID's token endpoint (v2.0, client credentials), as it refuses.
async fn entra_token(
    State(script): State<Arc<Script>>,
    Path(tenant): Path<String>,
    axum::Form(form): axum::Form<ClientCredentials>,
) -> Response {
    let refuse = |error: &str, description: &str| {
        (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({ "error": error, "error_description": description })),
        )
            .into_response()
    };
    if tenant != ENTRA_TENANT {
        return refuse("invalid_tenant", "AADSTS90002: Tenant not found.");
    }
    if form.grant_type != "client_credentials" {
        return refuse("unsupported_grant_type", "AADSTS70003");
    }
    if form.client_id != ENTRA_CLIENT || form.client_secret != ENTRA_SECRET {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({ "error": "invalid_client",
            "error_description": "AADSTS7000215: Invalid client secret provided." })),
        )
            .into_response();
    }
    if form.scope != "https://cognitiveservices.azure.com/.default" {
        return refuse(
            "invalid_scope",
            "AADSTS70011: The provided value for scope is not valid.",
        );
    }
    let token = format!(
        "entra-{}",
        script.tokens_issued.fetch_add(1, Ordering::SeqCst) + 1
    );
    script.issued_tokens.lock().unwrap().push(token.clone());
    axum::Json(json!({ "token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token }))
        .into_response()
}

// --- Google: Gemini API and Vertex AI --------------------------------------

fn google_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "error": {
        "code": status.as_u16(), "message": message, "status": code } })),
    )
        .into_response()
}

/// A scripted failure in Google's shape (429s with a `RetryInfo` detail).
fn google_failure(status: u16, retry_after: Option<u64>) -> Response {
    let (code, detail) = match status {
        429 => (
            "RESOURCE_EXHAUSTED",
            retry_after.map(|s| {
                json!([{
            "@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": format!("{s}s") }])
            }),
        ),
        500 => ("INTERNAL", None),
        503 => ("UNAVAILABLE", None),
        _ => ("FAILED_PRECONDITION", None),
    };
    let mut error =
        json!({ "code": status, "message": format!("scripted {status}"), "status": code });
    if let Some(detail) = detail {
        error["details"] = detail;
    }
    (
        StatusCode::from_u16(status).unwrap(),
        axum::Json(json!({ "error": error })),
    )
        .into_response()
}

async fn gemini(
    State(script): State<Arc<Script>>,
    Path(call): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(key) = header(&headers, "x-goog-api-key").map(str::to_string) else {
        return google_error(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
        );
    };
    google_call(script, &call, query.as_deref(), Some(key), body, false).await
}

async fn vertex(
    State(script): State<Arc<Script>>,
    Path((project, region, call)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match vertex_token(&script, &headers, &project, &region) {
        Ok(token) => google_call(script, &call, query.as_deref(), Some(token), body, true).await,
        Err(refused) => *refused,
    }
}

async fn google_call(
    script: Arc<Script>,
    call: &str,
    query: Option<&str>,
    key: Option<String>,
    body: Bytes,
    vertex: bool,
) -> Response {
    let Some((model, method)) = call.split_once(':') else {
        return google_error(StatusCode::NOT_FOUND, "NOT_FOUND", "Method not found.");
    };
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return google_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "Invalid JSON payload received.",
        );
    };
    let stream = method == "streamGenerateContent";
    let mut record = seen(&format!("/google/{method}"), key, &request);
    record.model = model.to_string();
    record.stream = stream;
    let behaviour = script.behaviour(record);
    if let Behaviour::Status(status, retry_after) = behaviour {
        return google_failure(status, retry_after);
    }
    if let Some(response) = before_answer(&behaviour).await {
        return response;
    }
    match method {
        "generateContent" | "streamGenerateContent" => {
            if stream && query != Some("alt=sse") {
                return google_error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_ARGUMENT",
                    "the test upstream streams only as SSE (alt=sse)",
                );
            }
            if let Err(message) = super::rules::gemini_generate(model, &request) {
                return google_error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", &message);
            }
            let parts = gemini_answer(model, &request);
            if stream {
                gemini_stream(model, parts, &behaviour, script)
            } else {
                axum::Json(json!({
                    "candidates": [{ "index": 0, "content": { "role": "model", "parts": parts.0 },
                        "finishReason": "STOP",
                        "safetyRatings": [{ "category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE" }] }],
                    "usageMetadata": usage_metadata(),
                    "modelVersion": model, "responseId": "gemini-test-response",
                }))
                .into_response()
            }
        }
        "batchEmbedContents" if !vertex => {
            let requests = request["requests"].as_array().cloned().unwrap_or_default();
            if requests
                .iter()
                .any(|r| r["model"] != json!(format!("models/{model}")))
            {
                return google_error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_ARGUMENT",
                    "Each request's model must be the model in the URL.",
                );
            }
            let embeddings: Vec<Value> = requests
                .iter()
                .enumerate()
                .map(|(i, _)| json!({ "values": [i as f32, 0.5, -0.25] }))
                .collect();
            axum::Json(json!({ "embeddings": embeddings })).into_response()
        }
        "predict" if vertex => {
            let instances = request["instances"].as_array().cloned().unwrap_or_default();
            let predictions: Vec<Value> = instances
                .iter()
                .enumerate()
                .map(|(i, _)| {
                    json!({ "embeddings": { "values": [i as f32, 0.5, -0.25],
                    "statistics": { "token_count": 3, "truncated": false } } })
                })
                .collect();
            axum::Json(json!({ "predictions": predictions })).into_response()
        }
        _ => google_error(StatusCode::NOT_FOUND, "NOT_FOUND", "Method not found."),
    }
}

fn usage_metadata() -> Value {
    json!({ "promptTokenCount": 12, "candidatesTokenCount": 6, "thoughtsTokenCount": 4,
            "totalTokenCount": 22, "cachedContentTokenCount": 2 })
}

/// What the model answers: a call to each offered function while none has
/// been answered; after function responses, what they said; an image
/// described by its type; an object that fits a requested schema; else text.
fn gemini_answer(model: &str, request: &Value) -> (Vec<Value>, bool) {
    let contents = request["contents"].as_array().cloned().unwrap_or_default();
    let last = contents.last().cloned().unwrap_or_default();
    let last_parts = last["parts"].as_array().cloned().unwrap_or_default();
    let responses: Vec<&Value> = last_parts
        .iter()
        .filter_map(|p| p.get("functionResponse"))
        .collect();
    let declared = request
        .pointer("/tools/0/functionDeclarations/0/name")
        .and_then(Value::as_str);
    let thinking =
        request.pointer("/generationConfig/thinkingConfig/includeThoughts") == Some(&json!(true));
    let mut parts = Vec::new();
    if thinking {
        parts.push(json!({ "text": "Thinking it over.", "thought": true }));
    }
    if let (Some(name), true) = (declared, responses.is_empty()) {
        parts.push(
            json!({ "functionCall": { "name": name, "args": { "q": "a" } },
                           "thoughtSignature": format!("sig-{model}") }),
        );
        parts.push(json!({ "functionCall": { "name": name, "args": { "q": "b" } } }));
        return (parts, true);
    }
    let text = if !responses.is_empty() {
        let said: Vec<String> = responses
            .iter()
            .map(|r| r["response"].to_string())
            .collect();
        format!("the tools said {}", said.join(" and "))
    } else if let Some(schema) = request.pointer("/generationConfig/responseJsonSchema") {
        fits(schema).to_string()
    } else if let Some(mime) = last_parts.iter().find_map(|p| {
        p.pointer("/inlineData/mimeType")
            .or_else(|| p.pointer("/fileData/mimeType"))
    }) {
        format!("I see an {}", mime.as_str().unwrap_or_default())
    } else {
        super::REPLY.to_string()
    };
    parts.push(json!({ "text": text }));
    (parts, false)
}

/// A value of the schema's shape.
pub fn fits(schema: &Value) -> Value {
    match schema["type"].as_str() {
        Some("object") => {
            let properties = schema["properties"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            Value::Object(
                properties
                    .iter()
                    .map(|(k, v)| (k.clone(), fits(v)))
                    .collect(),
            )
        }
        Some("array") => json!([fits(&schema["items"])]),
        Some("integer") | Some("number") => json!(1),
        Some("boolean") => json!(true),
        _ => json!("x"),
    }
}

fn gemini_stream(
    model: &str,
    (parts, _calls): (Vec<Value>, bool),
    behaviour: &Behaviour,
    script: Arc<Script>,
) -> Response {
    let frame = |v: Value| format!("data: {v}\r\n\r\n");
    let mut frames = Vec::new();
    let mut pieces: Vec<Value> = Vec::new();
    for part in parts {
        match part["text"].as_str() {
            // Text comes in pieces, as Gemini streams it.
            Some(text) if part.get("thought").is_none() && text.len() > 4 => {
                let (a, b) = text.split_at(text.len() / 2);
                pieces.push(json!({ "text": a }));
                pieces.push(json!({ "text": b }));
            }
            _ => pieces.push(part),
        }
    }
    let last = pieces.len().saturating_sub(1);
    for (i, part) in pieces.into_iter().enumerate() {
        let mut answer = json!({ "candidates": [{ "index": 0, "content": { "role": "model", "parts": [part] } }],
            "modelVersion": model, "responseId": "gemini-test-stream" });
        if i == last {
            answer["candidates"][0]["finishReason"] = json!("STOP");
            answer["usageMetadata"] = usage_metadata();
        }
        frames.push(frame(answer));
    }
    if model == GEMINI_BREAKS {
        // An error after the 200, as Google reports a failure mid-stream.
        frames.truncate(1);
        frames.push(frame(json!({ "error": { "code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE" } })));
    }
    sse(frames, behaviour, script)
}

#[derive(serde::Deserialize)]
struct JwtBearer {
    grant_type: String,
    assertion: String,
}

/// Google's OAuth 2.0 token endpoint for service accounts: the assertion
/// must be an RS256 JWT the service account's key signed, for this endpoint,
/// asking for a scope, valid for at most an hour.
async fn google_token(
    State(script): State<Arc<Script>>,
    axum::Form(form): axum::Form<JwtBearer>,
) -> Response {
    let refuse = |description: &str| {
        (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({ "error": "invalid_grant", "error_description": description })),
        )
            .into_response()
    };
    if form.grant_type != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({ "error": "unsupported_grant_type",
            "error_description": "Invalid grant_type" })),
        )
            .into_response();
    }
    let key =
        jsonwebtoken::DecodingKey::from_rsa_pem(include_bytes!("testdata/service-account.pub.pem"))
            .unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[script.google_token_uri.lock().unwrap().clone()]);
    validation.set_issuer(&[SERVICE_ACCOUNT_EMAIL]);
    validation.set_required_spec_claims(&["exp", "iat", "aud", "iss"]);
    let claims = match jsonwebtoken::decode::<Value>(&form.assertion, &key, &validation) {
        Ok(data) => data.claims,
        Err(e) => return refuse(&format!("Invalid JWT Signature or claims: {e}")),
    };
    if claims["exp"].as_u64().unwrap_or(0) > claims["iat"].as_u64().unwrap_or(0) + 3600 {
        return refuse("Invalid JWT: Token must be a short-lived token (60 minutes)");
    }
    if !claims["scope"].as_str().is_some_and(|s| {
        s.split(' ')
            .any(|s| s == "https://www.googleapis.com/auth/cloud-platform")
    }) {
        return refuse("Invalid OAuth scope or ID token audience provided.");
    }
    let token = format!(
        "ya29.test-{}",
        script.tokens_issued.fetch_add(1, Ordering::SeqCst) + 1
    );
    script.issued_tokens.lock().unwrap().push(token.clone());
    axum::Json(json!({ "access_token": token, "expires_in": 3599, "token_type": "Bearer" }))
        .into_response()
}

fn seen(path: &str, key: Option<String>, request: &Value) -> Seen {
    Seen {
        path: path.into(),
        key,
        model: request["model"].as_str().unwrap_or_default().to_string(),
        stream: request["stream"].as_bool().unwrap_or(false),
        messages: super::request_messages(request),
        body: request.clone(),
        beta: None,
    }
}
