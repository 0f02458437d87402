//! Conversations over HTTP. Posting a message stores the user's turn,
//! generates the reply with the conversation as context (streamed or not) and
//! stores the reply. The edge raises the caller's cache generation after every
//! successful write here (`cache_invalidate_on` in spin.toml), so cached lists
//! and messages go stale at once.

use crate::app::{AppState, priority, read_body, unix_now};
use crate::chat::{self, completion_body, record_usage, served_headers};
use crate::conversations::{ConversationError, DEFAULT_PAGE_LIMIT, Message, NewConversation};
use crate::error::ApiError;
use crate::openai::Usage;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sluice_core::identity::Identity;
use std::sync::Arc;

impl From<ConversationError> for ApiError {
    fn from(e: ConversationError) -> ApiError {
        match e {
            ConversationError::NotFound => ApiError::NotFound,
            ConversationError::BadCursor => ApiError::InvalidRequest {
                message: "`after` is not a cursor this listing returned.".into(),
                param: Some("after".into()),
            },
            ConversationError::Sql(e) => ApiError::Database(Box::new(e)),
        }
    }
}

/// Longest title and message accepted, in bytes.
const MAX_TITLE_BYTES: usize = 500;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    limit: Option<u32>,
    after: Option<String>,
}

impl PageQuery {
    fn limit(&self) -> u32 {
        self.limit.unwrap_or(DEFAULT_PAGE_LIMIT).clamp(1, 100)
    }
}

fn page_query(query: Result<Query<PageQuery>, QueryRejection>) -> Result<PageQuery, ApiError> {
    Ok(query?.0)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CreateConversation {
    #[serde(default)]
    title: String,
    model: Option<String>,
    system_prompt: Option<String>,
}

/// `POST /v1/conversations`: 201 with the conversation.
pub async fn create(
    State(state): State<AppState>,
    Extension(who): Extension<Identity>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = read_body(&state, body)?;
    let new: CreateConversation = if body.is_empty() {
        CreateConversation::default()
    } else {
        chat::parse_json(&body)?
    };
    if new.title.len() > MAX_TITLE_BYTES {
        return Err(ApiError::InvalidRequest {
            message: format!("`title` must be at most {MAX_TITLE_BYTES} bytes."),
            param: Some("title".into()),
        });
    }
    if let Some(model) = &new.model
        && !state.engine.has_model(model)
    {
        return Err(ApiError::ModelNotFound(model.clone()));
    }
    let conversation = state
        .conversations
        .create(
            &who.sub,
            NewConversation {
                title: &new.title,
                model: new.model.as_deref(),
                system_prompt: new.system_prompt.as_deref(),
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(conversation)).into_response())
}

/// `GET /v1/conversations?limit=&after=`: newest first.
pub async fn list(
    State(state): State<AppState>,
    Extension(who): Extension<Identity>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let query = page_query(query)?;
    let page = state
        .conversations
        .list(&who.sub, query.limit(), query.after.as_deref())
        .await?;
    Ok(Json(page).into_response())
}

/// `GET /v1/conversations/{id}`.
pub async fn get(
    State(state): State<AppState>,
    Extension(who): Extension<Identity>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(state.conversations.get(&who.sub, &id).await?).into_response())
}

/// `DELETE /v1/conversations/{id}`.
pub async fn delete(
    State(state): State<AppState>,
    Extension(who): Extension<Identity>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    state.conversations.delete(&who.sub, &id).await?;
    Ok(
        Json(json!({ "id": id, "object": "conversation.deleted", "deleted": true }))
            .into_response(),
    )
}

/// `GET /v1/conversations/{id}/messages?limit=&after=`: oldest first.
pub async fn messages(
    State(state): State<AppState>,
    Extension(who): Extension<Identity>,
    Path(id): Path<String>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let query = page_query(query)?;
    let page = state
        .conversations
        .messages(&who.sub, &id, query.limit(), query.after.as_deref())
        .await?;
    Ok(Json(page).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PostMessage {
    content: String,
    model: Option<String>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<Value>,
    max_tokens: Option<u32>,
    temperature: Option<f32>,
}

/// The answer to a non-streamed message: both stored turns.
#[derive(Serialize)]
struct Turn {
    object: &'static str,
    user_message: Message,
    message: Message,
    usage: Usage,
}

/// `POST /v1/conversations/{id}/messages`.
pub async fn post_message(
    State(state): State<AppState>,
    Extension(who): Extension<Identity>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = read_body(&state, body)?;
    let post: PostMessage = chat::parse_json(&body)?;
    if post.content.trim().is_empty() {
        return Err(ApiError::InvalidRequest {
            message: "`content` must not be empty.".into(),
            param: Some("content".into()),
        });
    }
    let priority = priority(&headers)?;
    let conversation = state.conversations.get(&who.sub, &id).await?;
    let model = post
        .model
        .clone()
        .or(conversation.model.clone())
        .unwrap_or_else(|| state.default_model.to_string());
    if !state.engine.has_model(&model) {
        return Err(ApiError::ModelNotFound(model));
    }
    let history = state
        .conversations
        .history(&id, state.context_messages)
        .await?;
    let user_message = state
        .conversations
        .append(&who.sub, &id, "user", &post.content)
        .await?;

    let mut messages: Vec<Value> = Vec::with_capacity(history.len() + 2);
    if let Some(system) = &conversation.system_prompt {
        messages.push(json!({ "role": "system", "content": system }));
    }
    messages.extend(
        history
            .iter()
            .map(|m| json!({ "role": m.role, "content": m.content })),
    );
    messages.push(json!({ "role": "user", "content": post.content }));
    let mut request = json!({ "model": model, "messages": messages, "stream": post.stream });
    for (field, value) in [
        ("stream_options", post.stream_options.clone()),
        ("max_tokens", post.max_tokens.map(Value::from)),
        ("temperature", post.temperature.map(Value::from)),
    ] {
        if let Some(value) = value {
            request[field] = value;
        }
    }
    let request = Arc::new(chat::parse(request.to_string().as_bytes())?);

    if request.is_stream() {
        let served = state.engine.stream(Arc::clone(&request), priority).await?;
        let store = state.conversations.clone();
        let conversation_id = id.clone();
        let subject = who.sub.clone();
        // Stored before the last chunk goes out; the edge reads write
        // responses whole and invalidates after, so no stale list outlives it.
        let on_end: chat::OnStreamEnd = Box::new(move |text| {
            Box::pin(async move {
                if let Err(e) = store
                    .append(&subject, &conversation_id, "assistant", &text)
                    .await
                {
                    tracing::error!(event = "reply_not_stored", conversation = %conversation_id,
                        error = %e, "streamed reply lost");
                }
            })
        });
        return Ok(chat::stream_response(
            served,
            &request,
            &who.sub,
            unix_now(),
            &state.usage,
            Some(on_end),
        ));
    }

    let (served, _) = state
        .engine
        .complete(Arc::clone(&request), priority, None)
        .await?;
    let answer = &served.value;
    let cost = record_usage(
        &state.usage,
        &who.sub,
        &request.model,
        &served.deployment,
        answer.usage,
        answer.usage_estimated,
    );
    let body = completion_body(answer, &request.model, unix_now());
    let reply = body
        .choices
        .first()
        .map(|c| c.message.content.clone())
        .unwrap_or_default();
    let message = state
        .conversations
        .append(&who.sub, &id, "assistant", &reply)
        .await?;
    let mut response = (
        StatusCode::CREATED,
        Json(Turn {
            object: "conversation.turn",
            user_message,
            message,
            usage: answer.usage,
        }),
    )
        .into_response();
    served_headers(response.headers_mut(), &served, cost);
    Ok(response)
}
