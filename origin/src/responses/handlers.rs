//! The Responses routes. Creating reads the earlier turns when the request
//! names a `previous_response_id`, generates through the same service as
//! chat (so any provider, fallbacks included, serves any turn), answers in
//! the Responses shape and stores the response unless `store` is false.

use super::events::ResponseEvents;
use super::request::ResponsesRequest;
use super::response::{answer_extras, finished, output_items, response_id, skeleton};
use super::store::{ResponseStore, StoreError};
use crate::budgets::Payer;
use crate::generation::render::{budget_headers, completion_headers};
use crate::generation::stream::event_stream_response;
use crate::generation::{Generate, GenerationEvent, GenerationService, Source, Streamed, Surface};
use crate::http::{ApiError, BodyLimit, GenerationBody};
use crate::http::{ApiPath, ApiQuery};
use crate::priority::Priority;
use axum::body::Bytes;
use axum::extract::{FromRef, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use sluice_core::identity::Identity;
use std::sync::Arc;

pub fn router<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    GenerationService: FromRef<S>,
    ResponseStore: FromRef<S>,
    BodyLimit: FromRef<S>,
{
    Router::new()
        .route("/v1/responses", post(create))
        .route("/v1/responses/{id}", get(retrieve).delete(delete))
        .route("/v1/responses/{id}/input_items", get(input_items))
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        ApiError::Database(Box::new(e))
    }
}

/// A stored response is the caller's alone and a record of its own: no
/// cache may keep it (a stateless answer is cacheable like a chat completion).
fn private(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    response
}

async fn create(
    State(generation): State<GenerationService>,
    State(store): State<ResponseStore>,
    Extension(who): Extension<Identity>,
    priority: Priority,
    GenerationBody(body): GenerationBody,
) -> Result<Response, ApiError> {
    let mut request = ResponsesRequest::parse(&body)?;
    let referenced = request.referenced_ids();
    if !referenced.is_empty() {
        let stored = store.items(&who.sub, &referenced).await?;
        request.resolve(&stored)?;
    }
    // The items this response is generated from: the earlier turns' inputs
    // and outputs, then this call's input.
    let mut context = Vec::new();
    if let Some(previous) = &request.previous_response_id {
        let stored = store
            .get(&who.sub, previous)
            .await?
            .ok_or_else(|| ApiError::PreviousResponseNotFound(previous.clone()))?;
        context = stored.context;
        context.extend(
            stored.response["output"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        );
    }
    let chat = request.to_chat(&context)?;
    context.extend(request.input.iter().cloned());
    let id = response_id();
    let skeleton = skeleton(&id, &request, crate::clock::unix_now());
    let generate = Generate {
        surface: Surface::Responses,
        request: Arc::new(chat),
        payer: Payer::of(&who),
        priority,
        fingerprint: body,
        refuses_cache: true,
    };
    let keep = request.store.then(|| Keep {
        store,
        subject: who.sub.clone(),
        context,
        input: request.input.clone(),
    });
    if request.stream {
        let streamed = generation.stream(generate).await?;
        return Ok(private(sse_response(
            streamed,
            ResponseEvents::new(skeleton),
            keep,
        )));
    }
    let completion = generation.complete(generate).await?;
    let usage = match &completion.source {
        Source::Upstream { served, .. } => served.value.usage,
        Source::SemanticCache { .. } => completion.body.usage().unwrap_or_default(),
    };
    let response = finished(
        skeleton,
        output_items(&completion.body),
        completion.body.finish_reason(),
        usage,
        answer_extras(&completion.body.0),
    );
    if let Some(keep) = keep {
        keep.save(&response).await?;
    }
    let mut http = Json(&response).into_response();
    completion_headers(http.headers_mut(), &completion);
    Ok(if request.store { private(http) } else { http })
}

fn sse_event(event: &Value) -> Bytes {
    let kind = event["type"].as_str().unwrap_or("message");
    Bytes::from(format!("event: {kind}\ndata: {event}\n\n"))
}

/// Where a response is stored once finished (`store: true`), the items it
/// was generated from, and this call's own input items.
struct Keep {
    store: ResponseStore,
    subject: String,
    context: Vec<Value>,
    input: Vec<Value>,
}

impl Keep {
    async fn save(&self, response: &Value) -> Result<(), StoreError> {
        let mut new_items = self.input.clone();
        new_items.extend(response["output"].as_array().cloned().unwrap_or_default());
        self.store
            .save(&self.subject, response, &self.context, &new_items)
            .await
    }
}

/// Where the relay is between chunks.
struct Relaying {
    events: ResponseEvents,
    streamed: Option<Streamed>,
    keep: Option<Keep>,
    pending: std::collections::VecDeque<Value>,
}

impl Relaying {
    async fn next(mut self) -> Option<(Bytes, Relaying)> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some((sse_event(&event), self));
            }
            let next = self.streamed.as_mut()?.events.next().await;
            let events = match next {
                Some(GenerationEvent::Chunk(chunk)) => self.events.on_chunk(&chunk),
                Some(GenerationEvent::Failed(error)) => {
                    self.streamed = None;
                    self.events
                        .failed(&format!("The model provider failed mid-stream: {error}"))
                }
                Some(GenerationEvent::BudgetReached(message)) => {
                    self.streamed = None;
                    self.events.failed(&message)
                }
                Some(GenerationEvent::Done { usage }) => {
                    self.streamed = None;
                    let (events, response) = self.events.finish(usage);
                    // Stored before `response.completed` is sent, so a client
                    // that saw it can continue from it at once.
                    if let Some(keep) = self.keep.take()
                        && let Err(error) = keep.save(&response).await
                    {
                        tracing::error!(event = "response_store_failed", error = %error,
                            "a streamed response could not be stored");
                    }
                    events
                }
                None => {
                    self.streamed = None;
                    Vec::new()
                }
            };
            self.pending.extend(events);
        }
    }
}

fn sse_response(streamed: Streamed, mut events: ResponseEvents, keep: Option<Keep>) -> Response {
    let (deployment, attempts) = (Arc::clone(&streamed.deployment), streamed.attempts);
    let (budget, usage) = (streamed.budget.clone(), streamed.usage.clone());
    let adjusted = streamed.adjusted.clone();
    let relaying = Relaying {
        pending: events.start().into(),
        events,
        streamed: Some(streamed),
        keep,
    };
    let body = futures::stream::unfold(relaying, Relaying::next);
    let mut response = event_stream_response(body, &deployment, attempts, &adjusted, usage);
    budget_headers(response.headers_mut(), &budget);
    response
}

async fn retrieve(
    State(store): State<ResponseStore>,
    Extension(who): Extension<Identity>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let stored = store
        .get(&who.sub, &id)
        .await?
        .ok_or_else(|| ApiError::ResponseNotFound(id.clone()))?;
    Ok(private(Json(stored.response).into_response()))
}

async fn delete(
    State(store): State<ResponseStore>,
    Extension(who): Extension<Identity>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    if !store.delete(&who.sub, &id).await? {
        return Err(ApiError::ResponseNotFound(id));
    }
    Ok(Json(json!({ "id": id, "object": "response", "deleted": true })).into_response())
}

/// `include` is accepted and has nothing to add: items are stored whole.
#[derive(Deserialize)]
struct ItemsQuery {
    #[serde(default)]
    limit: Option<u32>,
    #[serde(default)]
    order: Option<String>,
    #[serde(default)]
    after: Option<String>,
}

/// The items a response was generated from, earlier turns' included;
/// newest first unless `order=asc`, as OpenAI lists them.
async fn input_items(
    State(store): State<ResponseStore>,
    Extension(who): Extension<Identity>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<ItemsQuery>,
) -> Result<Response, ApiError> {
    let limit = query.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::InvalidRequest {
            message: format!("`limit` must be between 1 and 100, got {limit}."),
            param: Some("limit".into()),
        });
    }
    let mut items = store
        .get(&who.sub, &id)
        .await?
        .ok_or_else(|| ApiError::ResponseNotFound(id.clone()))?
        .context;
    match query.order.as_deref() {
        None | Some("desc") => items.reverse(),
        Some("asc") => {}
        Some(other) => {
            return Err(ApiError::InvalidRequest {
                message: format!("`order` must be asc or desc, got {other}."),
                param: Some("order".into()),
            });
        }
    }
    if let Some(after) = &query.after {
        let position = items
            .iter()
            .position(|i| i["id"] == after.as_str())
            .ok_or_else(|| ApiError::InvalidRequest {
                message: format!("`after` names no item of this response: {after}."),
                param: Some("after".into()),
            })?;
        items.drain(..=position);
    }
    let has_more = items.len() > limit as usize;
    items.truncate(limit as usize);
    Ok(private(
        Json(json!({
            "object": "list",
            "first_id": items.first().map(|i| i["id"].clone()),
            "last_id": items.last().map(|i| i["id"].clone()),
            "has_more": has_more,
            "data": items,
        }))
        .into_response(),
    ))
}
