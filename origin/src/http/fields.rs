//! Types and ranges of an API's documented fields, checked at the door in
//! one table per API (chat, Messages, Responses), so a request the real API
//! refuses is refused here too, in the API's own shape, before it reaches a
//! store or an upstream. Fields not in a table pass unchecked: a gateway is
//! lossless, and a parameter Sluice does not know may be one the upstream
//! does. `null` counts as absent (OpenAI documents most fields nullable).

use serde_json::{Map, Value};

/// What a field must be.
#[derive(Debug, Clone, Copy)]
pub enum Rule {
    Bool,
    Str,
    Object,
    Array,
    /// An integer in the range (inclusive).
    Int(i64, i64),
    /// A number in the range (inclusive).
    Num(f64, f64),
    OneOf(&'static [&'static str]),
    /// A string or an array of at most this many strings (`stop`).
    StrOrStrs(usize),
    /// An array of strings (`stop_sequences`).
    Strs,
    /// A string or an array (`instructions`, `system`, content).
    StrOrArray,
    /// A string or an object (`tool_choice`).
    StrOrObject,
    /// A string of at most this many bytes.
    StrMax(usize),
}

impl Rule {
    fn accepts(self, value: &Value) -> bool {
        match self {
            Rule::Bool => value.is_boolean(),
            Rule::Str => value.is_string(),
            Rule::Object => value.is_object(),
            Rule::Array => value.is_array(),
            Rule::Int(min, max) => value.as_i64().is_some_and(|n| (min..=max).contains(&n)),
            Rule::Num(min, max) => value.as_f64().is_some_and(|n| (min..=max).contains(&n)),
            Rule::OneOf(allowed) => value.as_str().is_some_and(|s| allowed.contains(&s)),
            Rule::StrOrStrs(max) => {
                value.is_string()
                    || value
                        .as_array()
                        .is_some_and(|a| a.len() <= max && a.iter().all(Value::is_string))
            }
            Rule::Strs => value
                .as_array()
                .is_some_and(|a| a.iter().all(Value::is_string)),
            Rule::StrOrArray => value.is_string() || value.is_array(),
            Rule::StrOrObject => value.is_string() || value.is_object(),
            Rule::StrMax(max) => value.as_str().is_some_and(|s| s.len() <= max),
        }
    }

    fn describe(self) -> String {
        match self {
            Rule::Bool => "a boolean".into(),
            Rule::Str => "a string".into(),
            Rule::Object => "an object".into(),
            Rule::Array => "an array".into(),
            Rule::Int(min, max) if max == i64::MAX => format!("an integer of at least {min}"),
            Rule::Int(min, max) => format!("an integer from {min} to {max}"),
            Rule::Num(min, max) => format!("a number from {min} to {max}"),
            Rule::OneOf(allowed) => format!("one of {}", allowed.join(", ")),
            Rule::StrOrStrs(max) => format!("a string or an array of at most {max} strings"),
            Rule::Strs => "an array of strings".into(),
            Rule::StrOrArray => "a string or an array".into(),
            Rule::StrOrObject => "a string or an object".into(),
            Rule::StrMax(max) => format!("a string of at most {max} bytes"),
        }
    }
}

/// The first field of `object` (under `prefix`) its rule refuses: the
/// field's name and the message saying what it must be.
pub fn refused(
    object: &Map<String, Value>,
    prefix: &str,
    rules: &[(&str, Rule)],
) -> Option<(String, String)> {
    rules.iter().find_map(|(name, rule)| {
        let value = object.get(*name).filter(|v| !v.is_null())?;
        (!rule.accepts(value)).then(|| {
            let field = format!("{prefix}{name}");
            let message = format!("`{field}` must be {}, got {value}.", rule.describe());
            (field, message)
        })
    })
}

/// OpenAI's reasoning efforts.
pub const EFFORTS: &[&str] = &["none", "minimal", "low", "medium", "high", "xhigh", "max"];

/// OpenAI's service tiers.
const TIERS: &[&str] = &[
    "auto",
    "default",
    "flex",
    "scale",
    "priority",
    "fast",
    "ultrafast",
];

/// `POST /v1/chat/completions`.
pub const CHAT: &[(&str, Rule)] = &[
    ("stream", Rule::Bool),
    ("stream_options", Rule::Object),
    ("temperature", Rule::Num(0.0, 2.0)),
    ("top_p", Rule::Num(0.0, 1.0)),
    ("n", Rule::Int(1, 128)),
    ("max_tokens", Rule::Int(1, i64::MAX)),
    ("max_completion_tokens", Rule::Int(1, i64::MAX)),
    ("presence_penalty", Rule::Num(-2.0, 2.0)),
    ("frequency_penalty", Rule::Num(-2.0, 2.0)),
    ("logprobs", Rule::Bool),
    ("top_logprobs", Rule::Int(0, 20)),
    ("stop", Rule::StrOrStrs(4)),
    ("seed", Rule::Int(i64::MIN, i64::MAX)),
    ("user", Rule::Str),
    ("tools", Rule::Array),
    ("tool_choice", Rule::StrOrObject),
    ("parallel_tool_calls", Rule::Bool),
    ("response_format", Rule::Object),
    ("reasoning_effort", Rule::OneOf(EFFORTS)),
    ("verbosity", Rule::OneOf(&["low", "medium", "high"])),
    ("modalities", Rule::Array),
    ("metadata", Rule::Object),
    ("logit_bias", Rule::Object),
    ("store", Rule::Bool),
    ("service_tier", Rule::OneOf(TIERS)),
    ("prediction", Rule::Object),
    ("audio", Rule::Object),
    ("safety_identifier", Rule::StrMax(64)),
    ("prompt_cache_key", Rule::Str),
    ("prompt_cache_options", Rule::Object),
    ("prompt_cache_retention", Rule::OneOf(&["in_memory", "24h"])),
    ("function_call", Rule::StrOrObject),
    ("functions", Rule::Array),
    ("moderation", Rule::Object),
    ("web_search_options", Rule::Object),
];

/// `POST /v1/responses`.
pub const RESPONSES: &[(&str, Rule)] = &[
    ("stream", Rule::Bool),
    ("stream_options", Rule::Object),
    ("store", Rule::Bool),
    ("background", Rule::Bool),
    ("temperature", Rule::Num(0.0, 2.0)),
    ("top_p", Rule::Num(0.0, 1.0)),
    // OpenAI's smallest output cap for a response.
    ("max_output_tokens", Rule::Int(16, i64::MAX)),
    ("max_tool_calls", Rule::Int(0, i64::MAX)),
    ("top_logprobs", Rule::Int(0, 20)),
    ("text", Rule::Object),
    ("reasoning", Rule::Object),
    ("metadata", Rule::Object),
    ("parallel_tool_calls", Rule::Bool),
    ("tools", Rule::Array),
    ("tool_choice", Rule::StrOrObject),
    ("truncation", Rule::OneOf(&["auto", "disabled"])),
    ("include", Rule::Array),
    ("user", Rule::Str),
    ("service_tier", Rule::OneOf(TIERS)),
    ("instructions", Rule::Str),
    ("previous_response_id", Rule::Str),
    ("prompt_cache_key", Rule::Str),
    ("prompt_cache_options", Rule::Object),
    ("prompt_cache_retention", Rule::OneOf(&["in_memory", "24h"])),
    ("safety_identifier", Rule::StrMax(64)),
    ("moderation", Rule::Object),
    ("context_management", Rule::Array),
];

/// `POST /v1/embeddings`.
pub const EMBEDDINGS: &[(&str, Rule)] = &[
    ("dimensions", Rule::Int(1, i64::MAX)),
    ("encoding_format", Rule::OneOf(&["float", "base64"])),
    ("user", Rule::Str),
];

/// `reasoning` of a Responses request.
pub const RESPONSES_REASONING: &[(&str, Rule)] = &[
    ("effort", Rule::OneOf(EFFORTS)),
    ("summary", Rule::OneOf(&["auto", "concise", "detailed"])),
];

/// `text` of a Responses request.
pub const RESPONSES_TEXT: &[(&str, Rule)] = &[
    ("format", Rule::Object),
    ("verbosity", Rule::OneOf(&["low", "medium", "high"])),
];

/// `POST /v1/messages` (and `count_tokens`), as Anthropic's reference has it.
pub const MESSAGES: &[(&str, Rule)] = &[
    ("messages", Rule::Array),
    ("max_tokens", Rule::Int(1, i64::MAX)),
    ("stream", Rule::Bool),
    ("system", Rule::StrOrArray),
    ("temperature", Rule::Num(0.0, 1.0)),
    ("top_p", Rule::Num(0.0, 1.0)),
    ("top_k", Rule::Int(0, i64::MAX)),
    ("stop_sequences", Rule::Strs),
    ("tools", Rule::Array),
    ("tool_choice", Rule::Object),
    ("thinking", Rule::Object),
    ("metadata", Rule::Object),
    ("service_tier", Rule::OneOf(&["auto", "standard_only"])),
    ("output_config", Rule::Object),
];

/// `thinking` of a Messages request.
pub const MESSAGES_THINKING: &[(&str, Rule)] = &[
    ("type", Rule::OneOf(&["enabled", "disabled", "adaptive"])),
    // Anthropic's smallest budget.
    ("budget_tokens", Rule::Int(1024, i64::MAX)),
];

/// `tool_choice` of a Messages request.
pub const MESSAGES_TOOL_CHOICE: &[(&str, Rule)] = &[
    ("type", Rule::OneOf(&["auto", "any", "tool", "none"])),
    ("name", Rule::Str),
    ("disable_parallel_tool_use", Rule::Bool),
];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_the_first_field_its_rule_refuses() {
        let body = json!({"temperature": "hot", "n": 2, "stop": ["a", "b"], "user": null});
        let (field, message) = refused(body.as_object().unwrap(), "", CHAT).unwrap();
        assert_eq!(field, "temperature");
        assert!(message.contains("a number from 0 to 2"), "{message}");
        let ok = json!({"temperature": 1, "n": 2, "stop": "x", "x_vendor": {"kept": true}});
        assert_eq!(refused(ok.as_object().unwrap(), "", CHAT), None);
        let thinking = json!({"type": "enabled", "budget_tokens": -100});
        let (field, _) = refused(
            thinking.as_object().unwrap(),
            "thinking.",
            MESSAGES_THINKING,
        )
        .unwrap();
        assert_eq!(field, "thinking.budget_tokens");
    }
}
