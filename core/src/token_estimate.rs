//! What a request's body says about the tokens it may use, read before it is
//! sent: the edge admits a request against its token limits with
//! [`TokenRequest::estimate`] and settles to the usage the answer reports.
//!
//! The prompt is estimated at four bytes of text a token (the figure OpenAI's
//! own rate limiter and tokenizer guides use), not counting inline file data
//! (base64 images, documents), which count `image_tokens` per part instead.
//! The output is the request's own cap (`max_tokens`, `max_completion_tokens`,
//! `max_output_tokens`), else a configured default, times its `n` choices.
//!
//! The body is read by [`TokenScanner`], a byte-at-a-time JSON scanner that
//! keeps only the few bytes it is looking at, so a body the edge streams to
//! the origin (a session of screenshots, tens of MB) is measured as it
//! passes without being held whole. (No JSON crate parses incrementally in
//! this little state, and this needs no values, only string lengths, object
//! keys and four top-level numbers.)

/// Part types whose tokens their bytes do not tell (OpenAI's and Anthropic's).
const FILE_PARTS: &[&str] = &[
    "image_url",
    "input_image",
    "image",
    "document",
    "file",
    "input_file",
];

/// Keys whose long string values are inline file data (as is a `data:` URL anywhere).
const DATA_KEYS: &[&str] = &["data", "file_data", "image_url", "url"];

/// Shorter strings under [`DATA_KEYS`] are not file data (a URL, an id).
const INLINE_DATA_MIN_BYTES: u64 = 256;

/// The top-level fields read as numbers.
const OUTPUT_CAPS: [&str; 3] = ["max_completion_tokens", "max_tokens", "max_output_tokens"];

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
    /// Reads a whole request body; a body that is not JSON counts as text.
    pub fn read(body: &[u8]) -> TokenRequest {
        let mut scanner = TokenScanner::default();
        scanner.feed(body);
        scanner.finish()
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

/// Bytes of a string kept to recognise it: a key, a `type` value, `data:`.
const KEEP: usize = 24;

#[derive(Debug)]
enum Frame {
    /// An object; its current key (the first [`KEEP`] bytes), and whether a
    /// key comes next.
    Object {
        key: Vec<u8>,
        awaiting_key: bool,
    },
    Array,
}

#[derive(Debug, Default)]
enum Token {
    #[default]
    Between,
    Str {
        is_key: bool,
        escaped: bool,
        len: u64,
        head: Vec<u8>,
    },
    /// A number; its text when it is a top-level field Sluice reads.
    Number(Option<Vec<u8>>),
}

/// Reads a JSON request body in pieces of any size (see the module's
/// documentation); [`TokenScanner::finish`] gives what [`TokenRequest::read`]
/// would of the whole.
#[derive(Debug, Default)]
pub struct TokenScanner {
    total: u64,
    data_bytes: u64,
    files: u32,
    stack: Vec<Frame>,
    token: Token,
    caps: [Option<u64>; 3],
    choices: Option<u64>,
}

impl TokenScanner {
    pub fn feed(&mut self, bytes: &[u8]) {
        self.total += bytes.len() as u64;
        for &byte in bytes {
            self.byte(byte);
        }
    }

    pub fn finish(mut self) -> TokenRequest {
        if let Token::Number(_) = self.token {
            self.end_number();
        }
        TokenRequest {
            text_bytes: self.total.saturating_sub(self.data_bytes),
            files: self.files,
            output_tokens: self.caps.iter().flatten().next().copied(),
            choices: self
                .choices
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(1)
                .max(1),
        }
    }

    /// The key a value at this point belongs to: its object's current key
    /// (none inside an array).
    fn key(&self) -> Option<&[u8]> {
        match self.stack.last() {
            Some(Frame::Object { key, .. }) => Some(key),
            _ => None,
        }
    }

    fn byte(&mut self, byte: u8) {
        match &mut self.token {
            Token::Str {
                escaped, len, head, ..
            } => {
                if *escaped {
                    *escaped = false;
                } else if byte == b'\\' {
                    *escaped = true;
                } else if byte == b'"' {
                    return self.end_string();
                }
                *len += 1;
                if head.len() < KEEP {
                    head.push(byte);
                }
            }
            Token::Number(text) => {
                if byte.is_ascii_digit() || matches!(byte, b'.' | b'e' | b'E' | b'+' | b'-') {
                    if let Some(text) = text.as_mut().filter(|t| t.len() < 24) {
                        text.push(byte);
                    }
                } else {
                    self.end_number();
                    self.between(byte);
                }
            }
            Token::Between => self.between(byte),
        }
    }

    fn between(&mut self, byte: u8) {
        match byte {
            b'"' => {
                let is_key = matches!(
                    self.stack.last(),
                    Some(Frame::Object {
                        awaiting_key: true,
                        ..
                    })
                );
                self.token = Token::Str {
                    is_key,
                    escaped: false,
                    len: 0,
                    head: Vec::new(),
                };
            }
            b'{' => self.stack.push(Frame::Object {
                key: Vec::new(),
                awaiting_key: true,
            }),
            b'[' => self.stack.push(Frame::Array),
            b'}' | b']' => {
                self.stack.pop();
            }
            b':' => {
                if let Some(Frame::Object { awaiting_key, .. }) = self.stack.last_mut() {
                    *awaiting_key = false;
                }
            }
            b',' => {
                if let Some(Frame::Object { key, awaiting_key }) = self.stack.last_mut() {
                    key.clear();
                    *awaiting_key = true;
                }
            }
            b'-' | b'0'..=b'9' => {
                let top_level = self.stack.len() == 1;
                let read = top_level
                    && self.key().is_some_and(|k| {
                        k == b"n" || OUTPUT_CAPS.iter().any(|cap| k == cap.as_bytes())
                    });
                self.token = Token::Number(read.then(|| vec![byte]));
            }
            _ => {}
        }
    }

    fn end_string(&mut self) {
        let Token::Str {
            is_key, len, head, ..
        } = std::mem::take(&mut self.token)
        else {
            return;
        };
        if is_key {
            if let Some(Frame::Object { key, .. }) = self.stack.last_mut() {
                *key = head;
            }
            return;
        }
        let key = self.key().unwrap_or_default();
        let data_key = DATA_KEYS.iter().any(|k| key == k.as_bytes());
        let inline = head.starts_with(b"data:") || (data_key && len > INLINE_DATA_MIN_BYTES);
        let file_part = key == b"type" && FILE_PARTS.iter().any(|p| head == p.as_bytes());
        if inline {
            self.data_bytes += len;
        }
        if file_part {
            self.files += 1;
        }
    }

    fn end_number(&mut self) {
        let Token::Number(Some(text)) = std::mem::take(&mut self.token) else {
            self.token = Token::Between;
            return;
        };
        let Some(value) = std::str::from_utf8(&text)
            .ok()
            .and_then(|t| t.parse::<u64>().ok())
        else {
            return;
        };
        let key = self.key().unwrap_or_default();
        if key == b"n" {
            self.choices = Some(value);
        } else if let Some(i) = OUTPUT_CAPS.iter().position(|cap| key == cap.as_bytes()) {
            self.caps[i] = Some(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

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

    proptest::proptest! {
        /// However a body arrives in pieces, it is measured the same.
        #[test]
        fn any_chunking_reads_the_same(cuts in proptest::collection::vec(0usize..2000, 0..12),
                                       text in "[a-z \"\\\\]{0,300}") {
            let body = json!({"model": "m", "max_tokens": 77, "n": 2, "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": text},
                    {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{}", "Q".repeat(900))}},
                    {"type": "image", "source": {"type": "base64", "data": "Z".repeat(700)}}]}]})
            .to_string();
            let bytes = body.as_bytes();
            let whole = TokenRequest::read(bytes);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            cuts.sort_unstable();
            let mut scanner = TokenScanner::default();
            let mut at = 0;
            for cut in cuts.into_iter().chain([bytes.len()]) {
                scanner.feed(&bytes[at..cut]);
                at = cut;
            }
            proptest::prop_assert_eq!(scanner.finish(), whole);
            proptest::prop_assert_eq!(whole.files, 2);
            proptest::prop_assert_eq!(whole.output_tokens, Some(77));
            proptest::prop_assert_eq!(whole.choices, 2);
            proptest::prop_assert!(whole.text_bytes < 1000, "{:?}", whole);
        }
    }

    #[test]
    fn a_body_that_is_not_json_is_all_text() {
        let request = TokenRequest::read(b"not json at all");
        assert_eq!(request.text_bytes, 15);
        assert_eq!(request.estimate(0, 0), 4);
        assert_eq!(TokenRequest::read(b"").estimate(0, 0), 1);
    }
}
