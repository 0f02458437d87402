//! Chat completions: parse and validate, pick the provider, wrap the answer.

use crate::error::ApiError;
use crate::openai::{AssistantMessage, ChatRequest, ChatResponse, Choice, Role};
use crate::provider::ChatProvider;
use std::collections::HashMap;
use std::sync::Arc;

/// Model name -> provider, from configuration.
#[derive(Clone, Default)]
pub struct Models(Arc<HashMap<String, Arc<dyn ChatProvider>>>);

impl Models {
    pub fn new(models: HashMap<String, Arc<dyn ChatProvider>>) -> Models {
        Models(Arc::new(models))
    }

    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.0.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    pub fn get(&self, name: &str) -> Result<&Arc<dyn ChatProvider>, ApiError> {
        self.0
            .get(name)
            .ok_or_else(|| ApiError::ModelNotFound(name.to_string()))
    }
}

/// Parses a request body, naming the offending field on failure.
pub fn parse(body: &[u8]) -> Result<ChatRequest, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let request: ChatRequest = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        // serde_json reports some type errors (a number where an enum goes) as
        // syntax errors, so ask the body itself whether it is JSON.
        if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_err() {
            return ApiError::InvalidRequest {
                message: format!("Request body is not valid JSON: {inner}"),
                param: None,
            };
        }
        match path.as_str() {
            "." => ApiError::InvalidRequest {
                message: format!("Invalid request body: {inner}"),
                param: None,
            },
            _ => ApiError::InvalidRequest {
                message: format!("Invalid value for `{path}`: {inner}"),
                param: Some(path),
            },
        }
    })?;
    if request.model.trim().is_empty() {
        return Err(ApiError::InvalidRequest {
            message: "`model` must not be empty.".into(),
            param: Some("model".into()),
        });
    }
    if request.messages.is_empty() {
        return Err(ApiError::InvalidRequest {
            message: "`messages` must contain at least one message.".into(),
            param: Some("messages".into()),
        });
    }
    if let Some(t) = request.temperature.filter(|t| !(0.0..=2.0).contains(t)) {
        return Err(ApiError::InvalidRequest {
            message: format!("`temperature` must be between 0 and 2, got {t}."),
            param: Some("temperature".into()),
        });
    }
    Ok(request)
}

pub struct Answer {
    pub response: ChatResponse,
    pub provider: &'static str,
}

pub async fn complete(
    models: &Models,
    request: &ChatRequest,
    now_secs: u64,
) -> Result<Answer, ApiError> {
    let provider = models.get(&request.model)?;
    let completion = provider
        .complete(request)
        .await
        .map_err(|e| ApiError::Provider(e.to_string()))?;
    let response = ChatResponse {
        id: format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
        object: "chat.completion".into(),
        created: now_secs,
        model: request.model.clone(),
        choices: vec![Choice {
            index: 0,
            message: AssistantMessage {
                role: Role::Assistant,
                content: completion.content,
            },
            finish_reason: completion.finish_reason.into(),
        }],
        usage: completion.usage,
    };
    Ok(Answer {
        response,
        provider: provider.name(),
    })
}

/// The answer as server-sent events in OpenAI's `chat.completion.chunk` form.
pub fn sse_events(response: &ChatResponse, include_usage: bool) -> Vec<String> {
    let chunk = |delta: serde_json::Value, finish: Option<&str>| {
        serde_json::json!({
            "id": response.id, "object": "chat.completion.chunk", "created": response.created,
            "model": response.model,
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }],
        })
    };
    let content = response
        .choices
        .first()
        .map(|c| c.message.content.as_str())
        .unwrap_or("");
    let mut events = vec![chunk(
        serde_json::json!({ "role": "assistant", "content": "" }),
        None,
    )];
    let mut words = content.split_inclusive(' ').peekable();
    while let Some(word) = words.next() {
        events.push(chunk(serde_json::json!({ "content": word }), None));
        if words.peek().is_none() {
            break;
        }
    }
    let finish = response
        .choices
        .first()
        .map(|c| c.finish_reason.as_str())
        .unwrap_or("stop");
    events.push(chunk(serde_json::json!({}), Some(finish)));
    if include_usage {
        events.push(serde_json::json!({
            "id": response.id, "object": "chat.completion.chunk", "created": response.created,
            "model": response.model, "choices": [], "usage": response.usage,
        }));
    }
    let mut out: Vec<String> = events
        .into_iter()
        .map(|e| format!("data: {e}\n\n"))
        .collect();
    out.push("data: [DONE]\n\n".into());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_offending_field() {
        let err = parse(br#"{"model":"m","messages":[{"role":"wizard","content":"x"}]}"#)
            .err()
            .unwrap();
        match err {
            ApiError::InvalidRequest { param, message } => {
                assert_eq!(param.as_deref(), Some("messages[0].role"));
                assert!(message.contains("wizard"), "{message}");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            parse(b"{not json"),
            Err(ApiError::InvalidRequest { param: None, .. })
        ));
        let numeric_role = parse(br#"{"model":"m","messages":[{"role":7}]}"#)
            .err()
            .unwrap();
        assert!(
            matches!(numeric_role, ApiError::InvalidRequest { param: Some(p), .. } if p == "messages[0].role")
        );
        assert!(matches!(
            parse(br#"{"model":"m","messages":[]}"#),
            Err(ApiError::InvalidRequest { .. })
        ));
        let missing = parse(br#"{"messages":[{"role":"user","content":"x"}]}"#)
            .err()
            .unwrap();
        assert!(missing.to_string().contains("model"), "{missing}");
    }

    #[test]
    fn accepts_sdk_style_requests() {
        let req = parse(
            br#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],"stream":true,
                 "stream_options":{"include_usage":true},"n":1,"top_p":1}"#,
        )
        .unwrap();
        assert_eq!(req.messages[0].text(), "hi");
        assert!(req.stream_options.is_some_and(|o| o.include_usage));
    }
}
