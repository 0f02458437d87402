//! Conversations over HTTP. Posting a message stores the user's turn,
//! generates the reply with the conversation as context (streamed or not) and
//! stores the reply. The edge raises the caller's cache generation after every
//! successful write here (`cache_invalidate_on` in spin.toml), so cached lists
//! and messages go stale at once.

use crate::conversations::store::{
    ConversationError, ConversationStore, DEFAULT_PAGE_LIMIT, Message, NewConversation,
};
use crate::generation::{Generate, GenerationService, Surface, parse, render, stream};
use crate::http::{ApiError, BodyLimit, GenerationBody, LimitedBody};
use crate::http::{ApiPath, ApiQuery};
use crate::openai::{ChatMessage, ChatRequest, Role, Usage};
use crate::priority::Priority;
use axum::extract::{Extension, FromRef, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sluice_core::identity::Identity;
use std::sync::Arc;

/// What the conversation routes need.
#[derive(Clone)]
pub struct ConversationsState {
    pub store: ConversationStore,
    pub generation: GenerationService,
    pub settings: TurnSettings,
}

/// How a turn is built (`[conversations]`).
#[derive(Debug, Clone)]
pub struct TurnSettings {
    /// For conversations that name no model.
    pub default_model: Arc<str>,
    pub context_messages: u32,
}

pub fn router<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    ConversationsState: FromRef<S>,
    BodyLimit: FromRef<S>,
{
    Router::new()
        .route("/v1/conversations", axum::routing::post(create).get(list))
        .route("/v1/conversations/{id}", get(get_one).delete(delete))
        .route(
            "/v1/conversations/{id}/messages",
            get(messages).post(post_message),
        )
}

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
    State(state): State<ConversationsState>,
    Extension(who): Extension<Identity>,
    LimitedBody(body): LimitedBody,
) -> Result<Response, ApiError> {
    let new: CreateConversation = if body.is_empty() {
        CreateConversation::default()
    } else {
        parse::parse_json(&body)?
    };
    if new.title.len() > MAX_TITLE_BYTES {
        return Err(ApiError::InvalidRequest {
            message: format!("`title` must be at most {MAX_TITLE_BYTES} bytes."),
            param: Some("title".into()),
        });
    }
    if let Some(model) = &new.model
        && !state.generation.has_model(model)
    {
        return Err(ApiError::ModelNotFound(model.clone()));
    }
    let conversation = state
        .store
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
    State(state): State<ConversationsState>,
    Extension(who): Extension<Identity>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Response, ApiError> {
    let page = state
        .store
        .list(&who.sub, query.limit(), query.after.as_deref())
        .await?;
    Ok(Json(page).into_response())
}

/// `GET /v1/conversations/{id}`.
pub async fn get_one(
    State(state): State<ConversationsState>,
    Extension(who): Extension<Identity>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    Ok(Json(state.store.get(&who.sub, &id).await?).into_response())
}

/// `DELETE /v1/conversations/{id}`.
pub async fn delete(
    State(state): State<ConversationsState>,
    Extension(who): Extension<Identity>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    state.store.delete(&who.sub, &id).await?;
    Ok(
        Json(json!({ "id": id, "object": "conversation.deleted", "deleted": true }))
            .into_response(),
    )
}

/// `GET /v1/conversations/{id}/messages?limit=&after=`: oldest first.
pub async fn messages(
    State(state): State<ConversationsState>,
    Extension(who): Extension<Identity>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Response, ApiError> {
    let page = state
        .store
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
    stream_options: Option<serde_json::Value>,
    max_tokens: Option<u32>,
    temperature: Option<f64>,
}

/// The answer to a non-streamed message: both stored turns.
#[derive(Serialize)]
struct Turn {
    object: &'static str,
    user_message: Message,
    message: Message,
    usage: Usage,
}

impl ConversationsState {
    /// The model a message goes to: its own, the conversation's, or the default.
    fn model_for(
        &self,
        asked: Option<&str>,
        conversation: Option<&str>,
    ) -> Result<String, ApiError> {
        let model = asked
            .or(conversation)
            .unwrap_or(&self.settings.default_model)
            .to_string();
        if self.generation.has_model(&model) {
            Ok(model)
        } else {
            Err(ApiError::ModelNotFound(model))
        }
    }

    /// The chat request for a new message: the system prompt, the last
    /// `context_messages` of history, and the message.
    async fn turn_request(
        &self,
        id: &str,
        system_prompt: Option<&str>,
        model: String,
        post: &PostMessage,
    ) -> Result<ChatRequest, ApiError> {
        let history = self
            .store
            .history(id, self.settings.context_messages)
            .await?;
        let mut messages = Vec::with_capacity(history.len() + 2);
        messages
            .extend(system_prompt.map(|system| ChatMessage::text_message(Role::System, system)));
        for earlier in &history {
            let role = match earlier.role.as_str() {
                "assistant" => Role::Assistant,
                "system" => Role::System,
                _ => Role::User,
            };
            messages.push(ChatMessage::text_message(role, &earlier.content));
        }
        messages.push(ChatMessage::text_message(Role::User, &post.content));
        let mut request = ChatRequest::new(model, messages);
        request.set("stream", post.stream.into());
        if let Some(max_tokens) = post.max_tokens {
            request.set("max_tokens", max_tokens.into());
        }
        if let Some(temperature) = post.temperature {
            request.set("temperature", temperature.into());
        }
        if let Some(options) = &post.stream_options {
            request.set("stream_options", options.clone());
        }
        parse::validate(&request)?;
        Ok(request)
    }
}

/// `POST /v1/conversations/{id}/messages`.
pub async fn post_message(
    State(state): State<ConversationsState>,
    Extension(who): Extension<Identity>,
    ApiPath(id): ApiPath<String>,
    priority: Priority,
    GenerationBody(body): GenerationBody,
) -> Result<Response, ApiError> {
    let post: PostMessage = parse::parse_json(&body)?;
    if post.content.trim().is_empty() {
        return Err(ApiError::InvalidRequest {
            message: "`content` must not be empty.".into(),
            param: Some("content".into()),
        });
    }
    let conversation = state.store.get(&who.sub, &id).await?;
    let model = state.model_for(post.model.as_deref(), conversation.model.as_deref())?;
    let request = state
        .turn_request(&id, conversation.system_prompt.as_deref(), model, &post)
        .await?;
    let user_message = state
        .store
        .append(&who.sub, &id, "user", &post.content)
        .await?;
    let request = Arc::new(request);
    let generate = Generate {
        surface: Surface::ConversationTurn,
        fingerprint: serde_json::to_vec(&*request).unwrap_or_default().into(),
        request: Arc::clone(&request),
        payer: crate::budgets::Payer::of(&who),
        priority,
        refuses_cache: false,
    };
    if request.is_stream() {
        let streamed = state.generation.stream(generate).await?;
        let store = state.store.clone();
        let subject = who.sub.clone();
        // Stored before the last chunk goes out; the edge reads write
        // responses whole and invalidates after, so no stale list outlives it.
        let on_end: stream::OnStreamEnd = Box::new(move |text| {
            Box::pin(async move {
                if let Err(e) = store.append(&subject, &id, "assistant", &text).await {
                    tracing::error!(event = "reply_not_stored", conversation = %id,
                        error = %e, "streamed reply lost");
                }
            })
        });
        let relay = stream::Relay {
            include_usage: request.include_usage(),
            model: request.model.clone(),
            on_end: Some(on_end),
        };
        return Ok(stream::sse_response(streamed, relay));
    }
    let completion = state.generation.complete(generate).await?;
    let reply = completion.body.text();
    let message = state
        .store
        .append(&who.sub, &id, "assistant", &reply)
        .await?;
    let mut response = (
        StatusCode::CREATED,
        Json(Turn {
            object: "conversation.turn",
            user_message,
            message,
            usage: completion.body.usage().unwrap_or_default(),
        }),
    )
        .into_response();
    render::completion_headers(response.headers_mut(), &completion);
    Ok(response)
}
