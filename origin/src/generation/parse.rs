//! Reading requests: JSON with the offending field named, and the checks
//! OpenAI makes before a request goes anywhere.

use crate::http::ApiError;
pub use crate::http::parse_json;
use crate::openai::{ChatRequest, EmbeddingInput, EmbeddingsRequest};
use serde_json::Value;

fn invalid(param: &str, message: String) -> ApiError {
    ApiError::InvalidRequest {
        message,
        param: Some(param.into()),
    }
}

pub fn parse(body: &[u8]) -> Result<ChatRequest, ApiError> {
    let request: ChatRequest = parse_json(body)?;
    validate(&request)?;
    Ok(request)
}

/// The checks a request passes whether a client sent it or Sluice built it
/// (a conversation turn).
pub fn validate(request: &ChatRequest) -> Result<(), ApiError> {
    if request.model.trim().is_empty() {
        return Err(invalid("model", "`model` must not be empty.".into()));
    }
    if request.messages.is_empty() {
        return Err(invalid(
            "messages",
            "`messages` must contain at least one message.".into(),
        ));
    }
    if let Some((field, message)) =
        crate::http::fields::refused(&request.extra, "", crate::http::fields::CHAT)
    {
        return Err(invalid(&field, message));
    }
    let tools = request.field("tools").and_then(Value::as_array);
    for (i, tool) in tools.into_iter().flatten().enumerate() {
        let named = tool.pointer("/function/name").is_some_and(Value::is_string);
        if tool["type"] == "function" && !named {
            return Err(invalid(
                &format!("tools[{i}].function.name"),
                format!("`tools[{i}].function.name` must be a string."),
            ));
        }
    }
    Ok(())
}

/// Longest embeddings batch accepted (OpenAI's own limit).
const MAX_EMBEDDING_INPUTS: usize = 2048;

pub fn parse_embeddings(body: &[u8]) -> Result<EmbeddingsRequest, ApiError> {
    let fields: serde_json::Map<String, Value> = parse_json(body)?;
    if let Some((field, message)) =
        crate::http::fields::refused(&fields, "", crate::http::fields::EMBEDDINGS)
    {
        return Err(invalid(&field, message));
    }
    let request: EmbeddingsRequest = parse_json(body)?;
    if request.model.trim().is_empty() {
        return Err(invalid("model", "`model` must not be empty.".into()));
    }
    let count = match &request.input {
        EmbeddingInput::One(_) => 1,
        EmbeddingInput::Many(v) => v.len(),
    };
    if count == 0 || count > MAX_EMBEDDING_INPUTS {
        return Err(invalid(
            "input",
            format!("`input` must hold 1 to {MAX_EMBEDDING_INPUTS} strings."),
        ));
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        let wrong_input = parse_embeddings(br#"{"model":"e","input":[1,2]}"#)
            .err()
            .unwrap();
        assert!(wrong_input.to_string().contains("input"), "{wrong_input}");
    }

    #[test]
    fn accepts_sdk_style_requests_and_keeps_extra_fields() {
        let req = parse(
            br#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],"stream":true,
                 "stream_options":{"include_usage":true},"n":1,"top_p":1,"tools":[]}"#,
        )
        .unwrap();
        assert_eq!(req.messages[0].text(), "hi");
        assert!(req.include_usage());
        assert_eq!(req.extra["top_p"], 1);
        assert!(
            parse(br#"{"model":"m","messages":[{"role":"user"}],"temperature":"hot"}"#).is_err()
        );
        assert!(parse(br#"{"model":"m","messages":[{"role":"user"}],"max_tokens":0}"#).is_err());
        assert!(parse(br#"{"model":"m","messages":[{"role":"user"}],"stream":"yes"}"#).is_err());
        assert!(
            parse(br#"{"model":"m","messages":[{"role":"user"}],"tools":[{"type":"function"}]}"#)
                .is_err()
        );
        let forwarded = serde_json::to_value(&req).unwrap();
        assert_eq!(forwarded["tools"], json!([]));
        assert_eq!(forwarded["messages"][0]["content"][0]["text"], "hi");
    }
}
