//! Error bodies in OpenAI's shape, so SDKs raise their usual exception classes.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limited_has_seed_and_openai_fields() {
        let v = rate_limited(30);
        assert_eq!(v["detail"], "Rate limit exceeded. Try again in 30 seconds.");
        assert_eq!(v["status_code"], 429);
        assert_eq!(v["error"]["type"], "rate_limit_error");
    }
}
