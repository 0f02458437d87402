//! Error bodies in OpenAI's shape (and Anthropic's, on its API's routes),
//! so SDKs raise their usual exception classes.

use serde_json::{Value, json};

/// `{"error":{"message","type","code"[,"param"]}}`.
pub fn openai_error(message: &str, kind: &str, code: Option<&str>, param: Option<&str>) -> Value {
    json!({ "error": { "message": message, "type": kind, "code": code, "param": param } })
}

/// A 429 body: the OpenAI error plus the seed's `detail` and `status_code` fields.
pub fn rate_limited(retry_after_seconds: u64) -> Value {
    let detail = format!("Rate limit exceeded. Try again in {retry_after_seconds} seconds.");
    json!({
        "error": { "message": detail, "type": "rate_limit_error", "code": "rate_limit_exceeded", "param": null },
        "detail": detail,
        "status_code": 429,
    })
}

/// A token limit's 429 (OpenAI's `type: tokens`): `message` says which limit
/// and by how much.
pub fn tokens_limited(message: &str, retry_after_seconds: u64) -> Value {
    let detail = format!("{message} Try again in {retry_after_seconds} seconds.");
    json!({
        "error": { "message": detail, "type": "tokens", "code": "rate_limit_exceeded", "param": null },
        "detail": detail,
        "status_code": 429,
    })
}

/// Anthropic's error type for an HTTP status.
pub fn anthropic_kind(status: u16) -> &'static str {
    match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

/// Anthropic's error body: `{"type":"error","error":{"type","message"}}`.
pub fn anthropic_error(status: u16, message: &str) -> Value {
    json!({ "type": "error", "error": { "type": anthropic_kind(status), "message": message } })
}

/// An OpenAI-shaped error body in Anthropic's shape, for the routes of
/// Anthropic's API (`None` when the body is not an OpenAI error).
pub fn openai_to_anthropic(status: u16, body: &[u8]) -> Option<Vec<u8>> {
    let value: Value = serde_json::from_slice(body).ok()?;
    if value.get("type").is_some() {
        return None;
    }
    let message = value.pointer("/error/message")?.as_str()?;
    Some(anthropic_error(status, message).to_string().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_errors_convert_to_anthropics_once() {
        let openai = rate_limited(3).to_string();
        let converted = openai_to_anthropic(429, openai.as_bytes()).unwrap();
        let value: Value = serde_json::from_slice(&converted).unwrap();
        assert_eq!(value["type"], "error");
        assert_eq!(value["error"]["type"], "rate_limit_error");
        assert!(
            value["error"]["message"]
                .as_str()
                .unwrap()
                .contains("3 seconds")
        );
        assert_eq!(openai_to_anthropic(429, &converted), None);
        assert_eq!(openai_to_anthropic(200, b"not json"), None);
    }

    #[test]
    fn rate_limited_has_seed_and_openai_fields() {
        let v = rate_limited(30);
        assert_eq!(v["detail"], "Rate limit exceeded. Try again in 30 seconds.");
        assert_eq!(v["status_code"], 429);
        assert_eq!(v["error"]["type"], "rate_limit_error");
    }
}
