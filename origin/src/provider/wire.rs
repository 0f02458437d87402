//! What the HTTP providers share: turning upstream failures into
//! `ProviderError`s and reading the upstream's server-sent events.

use super::{Call, ProviderError, UpstreamLimits};
use eventsource_stream::{Event, Eventsource};
use futures::{Stream, StreamExt};
use reqwest::header::HeaderMap;
use std::time::Duration;

/// What a model name may not hold unescaped in a URL path segment (Google's
/// `gemini-2.5-flash`, Vertex's `claude-sonnet-4-5@20250929`).
pub const MODEL_IN_PATH: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'@');

/// Longest upstream error text kept (it ends up in logs and client errors).
const MAX_ERROR_TEXT: usize = 500;

/// Maps a failed send (no response) to an error.
pub fn send_error(e: reqwest::Error) -> ProviderError {
    if e.is_timeout() {
        ProviderError::Timeout("before the first byte")
    } else {
        ProviderError::Connect(e.to_string())
    }
}

/// Passes a 2xx response through, telling `call`'s observer what its
/// rate-limit headers say is left; reads any other into the matching error.
pub async fn check_status(
    response: reqwest::Response,
    call: Call<'_>,
) -> Result<reqwest::Response, ProviderError> {
    let status = response.status().as_u16();
    if (200..300).contains(&status) {
        if let Some(observer) = call.limits {
            let limits = upstream_limits(response.headers());
            if limits != UpstreamLimits::default() {
                observer.observe(call.key, &limits);
            }
        }
        return Ok(response);
    }
    let retry_after = retry_after(response.headers());
    // AWS names the error in a header (`ThrottlingException:http://...`).
    let aws_error = response
        .headers()
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(':').next().unwrap_or(v).to_string());
    let text = response.text().await.unwrap_or_default();
    let retry_after = retry_after.or_else(|| retry_info(&text));
    let message = match aws_error {
        Some(kind) => format!("{kind}: {}", error_message(&text)),
        None => error_message(&text),
    };
    Err(match status {
        429 => ProviderError::RateLimited {
            retry_after,
            message,
        },
        401 | 403 => ProviderError::Unauthorized { status, message },
        // 408 and 409 are the upstream's own transient conditions; 529 is
        // Anthropic's "overloaded".
        408 | 409 => ProviderError::Unavailable { status, message },
        400..=499 => ProviderError::Rejected { status, message },
        _ => ProviderError::Unavailable { status, message },
    })
}

/// Google's hint in a 429's body: a `google.rpc.RetryInfo` detail's
/// `retryDelay` (`"30s"`, `"1.5s"`).
fn retry_info(text: &str) -> Option<Duration> {
    let parsed: serde_json::Value = serde_json::from_str(text).ok()?;
    parsed
        .pointer("/error/details")?
        .as_array()?
        .iter()
        .find_map(|d| {
            d.get("retryDelay")?
                .as_str()?
                .strip_suffix('s')?
                .parse::<f64>()
                .ok()
        })
        .map(|secs| Duration::from_secs_f64(secs.max(0.0)))
}

/// Reads an identity service's failed answer (OAuth 2.0's `error` and
/// `error_description`): refused credentials are the key's fault, a busy or
/// broken token endpoint the deployment's.
pub async fn check_token_status(
    response: reqwest::Response,
) -> Result<reqwest::Response, ProviderError> {
    let status = response.status().as_u16();
    if (200..300).contains(&status) {
        return Ok(response);
    }
    let retry_after = retry_after(response.headers());
    let text = response.text().await.unwrap_or_default();
    let parsed = serde_json::from_str::<serde_json::Value>(&text).ok();
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let reason = match (field("error"), field("error_description")) {
        (Some(error), Some(description)) => format!("{error}: {description}"),
        (Some(error), None) => error,
        _ => text,
    };
    let message = format!("the token endpoint refused: {reason}")
        .chars()
        .take(MAX_ERROR_TEXT)
        .collect();
    Err(match status {
        429 => ProviderError::RateLimited {
            retry_after,
            message,
        },
        400..=499 => ProviderError::Unauthorized { status, message },
        _ => ProviderError::Unavailable { status, message },
    })
}

/// The upstream's `error.message` when it sent one, else its (bounded) text.
/// Azure's content filter says why in `error.code`, which leads the message
/// so that a client can tell a filtered prompt from a malformed one.
fn error_message(text: &str) -> String {
    let parsed = serde_json::from_str::<serde_json::Value>(text).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| v.pointer("/error/message").or_else(|| v.get("message")))
        .and_then(|m| m.as_str())
        .unwrap_or(text);
    let message = match parsed.as_ref().and_then(|v| v.pointer("/error/code")) {
        Some(serde_json::Value::String(code)) if code == "content_filter" => {
            format!("content_filter: {message}")
        }
        _ => message.to_string(),
    };
    message.chars().take(MAX_ERROR_TEXT).collect()
}

/// How long the upstream asked us to wait: `retry-after-ms`, `retry-after`
/// (seconds), else the longest `x-ratelimit-reset-*` (OpenAI's `1m30s` form).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(ms) = header("retry-after-ms").and_then(|v| v.trim().parse::<f64>().ok()) {
        return Some(Duration::from_secs_f64(ms.max(0.0) / 1000.0));
    }
    if let Some(secs) = header("retry-after").and_then(|v| v.trim().parse::<f64>().ok()) {
        return Some(Duration::from_secs_f64(secs.max(0.0)));
    }
    ["x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"]
        .into_iter()
        .filter_map(|name| header(name).and_then(parse_reset))
        .max()
}

/// The rate-limit headers of a response: OpenAI's `x-ratelimit-remaining-*`
/// and `x-ratelimit-reset-*` (`6m0s`), or Anthropic's
/// `anthropic-ratelimit-{requests,tokens}-{remaining,reset}` (RFC 3339).
pub fn upstream_limits(headers: &HeaderMap) -> UpstreamLimits {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let number = |names: [&str; 2]| {
        names
            .into_iter()
            .find_map(|n| header(n).and_then(|v| v.trim().parse::<u64>().ok()))
    };
    let reset = |openai: &str, anthropic: &str| {
        header(openai).and_then(parse_reset).or_else(|| {
            let at = header(anthropic)?;
            let at = time::OffsetDateTime::parse(
                at.trim(),
                &time::format_description::well_known::Rfc3339,
            )
            .ok()?;
            let left = at - time::OffsetDateTime::now_utc();
            Some(Duration::from_secs_f64(left.as_seconds_f64().max(0.0)))
        })
    };
    UpstreamLimits {
        remaining_requests: number([
            "x-ratelimit-remaining-requests",
            "anthropic-ratelimit-requests-remaining",
        ]),
        remaining_tokens: number([
            "x-ratelimit-remaining-tokens",
            "anthropic-ratelimit-tokens-remaining",
        ]),
        requests_reset: reset(
            "x-ratelimit-reset-requests",
            "anthropic-ratelimit-requests-reset",
        ),
        tokens_reset: reset(
            "x-ratelimit-reset-tokens",
            "anthropic-ratelimit-tokens-reset",
        ),
    }
}

/// Parses OpenAI's reset durations: `20ms`, `1.5s`, `6m0s`, `1h2m3s`.
fn parse_reset(text: &str) -> Option<Duration> {
    let mut total = 0.0_f64;
    let mut number = String::new();
    let mut chars = text.trim().chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            number.push(c);
            continue;
        }
        let value: f64 = number.parse().ok()?;
        number.clear();
        let unit = match c {
            'h' => 3600.0,
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                0.001
            }
            'm' => 60.0,
            's' => 1.0,
            _ => return None,
        };
        total += value * unit;
        any = true;
    }
    if !number.is_empty() {
        total += number.parse::<f64>().ok()?;
        any = true;
    }
    any.then(|| Duration::from_secs_f64(total))
}

/// The response body as server-sent events.
pub fn events(
    response: reqwest::Response,
) -> impl Stream<Item = Result<Event, ProviderError>> + Send + 'static {
    response
        .bytes_stream()
        .eventsource()
        .map(|event| event.map_err(|e| ProviderError::Protocol(format!("event stream: {e}"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_openai_and_anthropic_limit_headers() {
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-remaining-requests", "0".parse().unwrap());
        h.insert("x-ratelimit-reset-requests", "6m0s".parse().unwrap());
        h.insert("x-ratelimit-remaining-tokens", "1500".parse().unwrap());
        let limits = upstream_limits(&h);
        assert_eq!(limits.remaining_requests, Some(0));
        assert_eq!(limits.requests_reset, Some(Duration::from_secs(360)));
        assert_eq!(limits.remaining_tokens, Some(1500));
        assert_eq!(limits.tokens_reset, None);

        let mut h = HeaderMap::new();
        let later = time::OffsetDateTime::now_utc() + time::Duration::seconds(20);
        let later = later
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        h.insert("anthropic-ratelimit-tokens-remaining", "0".parse().unwrap());
        h.insert("anthropic-ratelimit-tokens-reset", later.parse().unwrap());
        let limits = upstream_limits(&h);
        assert_eq!(limits.remaining_tokens, Some(0));
        let reset = limits.tokens_reset.unwrap();
        assert!(
            reset > Duration::from_secs(18) && reset <= Duration::from_secs(20),
            "{reset:?}"
        );
        assert_eq!(
            upstream_limits(&HeaderMap::new()),
            UpstreamLimits::default()
        );
    }

    #[test]
    fn reads_every_retry_hint() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("x-ratelimit-reset-requests", "1m30s".parse().unwrap());
        h.insert("x-ratelimit-reset-tokens", "250ms".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(90)));
        h.insert("retry-after", "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert("retry-after-ms", "1500".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(1500)));
        assert_eq!(parse_reset("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_reset("soon"), None);
    }

    #[test]
    fn reads_google_retry_info_and_azure_content_filter() {
        let body = r#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","message":"quota","details":[
            {"@type":"type.googleapis.com/google.rpc.QuotaFailure"},
            {"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"1.5s"}]}}"#;
        assert_eq!(retry_info(body), Some(Duration::from_millis(1500)));
        assert_eq!(retry_info(r#"{"error":{"message":"x"}}"#), None);
        assert_eq!(
            error_message(r#"{"error":{"code":"content_filter","message":"filtered"}}"#),
            "content_filter: filtered"
        );
    }

    #[test]
    fn prefers_the_upstream_error_message() {
        assert_eq!(
            error_message(r#"{"error":{"message":"quota"}}"#),
            "quota".to_string()
        );
        assert_eq!(error_message("plain"), "plain".to_string());
    }
}
