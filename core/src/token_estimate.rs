//! What a request's body says about the tokens it may use, read before it is
//! sent: the edge admits a request against its token limits with
//! [`TokenRequest::estimate`] and settles to the usage the answer reports.
//!
//! The prompt is estimated at four bytes of text a token (the figure OpenAI's
//! own rate limiter and tokenizer guides use), not counting inline file data
//! (base64 images, documents), which count `image_tokens` per part instead.
//! The output is the request's own cap (`max_tokens`, `max_completion_tokens`,
//! `max_output_tokens`), else a configured default, times its `n` choices.

use serde_json::Value;

/// Part types whose tokens their bytes do not tell (OpenAI's and Anthropic's).
const FILE_PARTS: &[&str] = &[
    "image_url",
    "input_image",
    "image",
    "document",
    "file",
    "input_file",
];

/// Keys whose string values are inline file data (or a `data:` URL anywhere).
const DATA_KEYS: &[&str] = &["data", "file_data", "image_url", "url"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TokenRequest {
    /// Body bytes that are text (inline file data left out).
    pub text_bytes: u64,
    /// Image and document parts.
    pub files: u32,
    /// The request's own output cap, if it gave one.
    pub output_tokens: Option<u64>,
    /// Answers asked for (`n`), at least 1.
    pub choices: u32,
}

impl TokenRequest {
    /// Reads a JSON request body; a body that is not JSON counts as text.
    pub fn read(body: &[u8]) -> TokenRequest {
        let Ok(value) = serde_json::from_slice::<Value>(body) else {
            return TokenRequest {
                text_bytes: body.len() as u64,
                choices: 1,
                ..TokenRequest::default()
            };
        };
        let mut walk = Walk::default();
        walk.value(&value, None);
        let top = |name: &str| value.get(name).and_then(Value::as_u64);
        TokenRequest {
            text_bytes: (body.len() as u64).saturating_sub(walk.data_bytes),
            files: walk.files,
            output_tokens: top("max_completion_tokens")
                .or_else(|| top("max_tokens"))
                .or_else(|| top("max_output_tokens")),
            choices: top("n")
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(1)
                .max(1),
        }
    }

    /// Tokens to admit the request for: its prompt estimate plus its output
    /// cap (`default_output` when it set none; 0 for a route that generates
    /// nothing, such as embeddings).
    pub fn estimate(&self, default_output: u64, image_tokens: u64) -> u64 {
        let prompt = self
            .text_bytes
            .div_ceil(4)
            .saturating_add(u64::from(self.files).saturating_mul(image_tokens));
        let output = self
            .output_tokens
            .unwrap_or(default_output)
            .saturating_mul(u64::from(self.choices));
        prompt.saturating_add(output).max(1)
    }
}

#[derive(Default)]
struct Walk {
    data_bytes: u64,
    files: u32,
}

impl Walk {
    fn value(&mut self, value: &Value, key: Option<&str>) {
        match value {
            Value::String(s) => {
                let inline = s.starts_with("data:")
                    || (key.is_some_and(|k| DATA_KEYS.contains(&k)) && s.len() > 256);
                if inline {
                    self.data_bytes += s.len() as u64;
                }
            }
            Value::Array(items) => items.iter().for_each(|item| self.value(item, None)),
            Value::Object(fields) => {
                if fields
                    .get("type")
                    .and_then(Value::as_str)
                    .is_some_and(|t| FILE_PARTS.contains(&t))
                {
                    self.files += 1;
                }
                for (name, field) in fields {
                    self.value(field, Some(name));
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(value: Value) -> TokenRequest {
        TokenRequest::read(value.to_string().as_bytes())
    }

    #[test]
    fn text_at_four_bytes_a_token_plus_the_output_cap() {
        let body = json!({"model": "m", "messages": [{"role": "user", "content": "x".repeat(400)}],
            "max_tokens": 100});
        let request = read(body.clone());
        assert_eq!(request.output_tokens, Some(100));
        let bytes = body.to_string().len() as u64;
        assert_eq!(request.estimate(4096, 2500), bytes.div_ceil(4) + 100);
        // Without a cap the default counts, once per choice.
        let request = read(json!({"messages": [], "n": 3}));
        assert_eq!(request.output_tokens, None);
        assert_eq!(
            request.estimate(1000, 0),
            request.text_bytes.div_ceil(4) + 3000
        );
        assert_eq!(
            read(json!({"input": "hi", "max_output_tokens": 7})).output_tokens,
            Some(7)
        );
        assert_eq!(
            read(json!({"max_completion_tokens": 9, "max_tokens": 5})).output_tokens,
            Some(9)
        );
    }

    #[test]
    fn inline_files_count_per_part_not_per_byte() {
        let image = format!("data:image/png;base64,{}", "A".repeat(100_000));
        let openai = read(json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this"},
            {"type": "image_url", "image_url": {"url": image}}]}], "max_tokens": 10}));
        assert_eq!(openai.files, 1);
        assert!(openai.text_bytes < 300, "{openai:?}");
        assert!(openai.estimate(0, 2500) < 2500 + 100);
        let anthropic = read(json!({"messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
             "data": "B".repeat(50_000)}}]}], "max_tokens": 10}));
        assert_eq!(anthropic.files, 1);
        assert!(anthropic.text_bytes < 300, "{anthropic:?}");
    }

    #[test]
    fn a_body_that_is_not_json_is_all_text() {
        let request = TokenRequest::read(b"not json at all");
        assert_eq!(request.text_bytes, 15);
        assert_eq!(request.estimate(0, 0), 4);
        assert_eq!(TokenRequest::read(b"").estimate(0, 0), 1);
    }
}
