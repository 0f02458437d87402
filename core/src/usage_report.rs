//! How the origin tells the edge what a streamed answer used, once it ends.
//!
//! A non-streamed answer carries its usage in `x-sluice-total-tokens`; a
//! stream's usage is known only after its last event, when headers are long
//! gone (and HTTP trailers do not survive Spin's outbound client). So when the
//! edge asks ([`REQUEST_HEADER`]), the origin ends the event stream with one
//! SSE comment line, which SSE clients ignore by definition, and the edge
//! takes it out again ([`Stripper`]) before the client sees the stream: the
//! client gets the origin's bytes unchanged.

/// Set by the edge on a request whose tokens it will settle.
pub const REQUEST_HEADER: &str = "x-sluice-usage-report";

/// The comment's start; it begins a line (after the stream's last blank line).
/// Inside an event it cannot: event data is JSON, whose strings escape newlines.
const MARKER: &[u8] = b": x-sluice-usage ";

/// The comment the origin appends: `: x-sluice-usage total_tokens=N\n\n`.
pub fn comment(total_tokens: u64) -> Vec<u8> {
    let mut out = MARKER.to_vec();
    out.extend_from_slice(format!("total_tokens={total_tokens}\n\n").as_bytes());
    out
}

/// Takes the usage comment out of a relayed event stream, whatever its
/// chunking: bytes pass on as they come, except a line start that could be
/// the comment's, held until the next chunk shows what it is (never a
/// newline, so an event is never held back from the client).
#[derive(Debug)]
pub struct Stripper {
    held: Vec<u8>,
    /// The last byte sent on ended a line.
    at_line_start: bool,
    /// The comment has begun; everything from it is held until the end.
    in_comment: bool,
}

impl Default for Stripper {
    fn default() -> Stripper {
        Stripper {
            held: Vec::new(),
            at_line_start: true,
            in_comment: false,
        }
    }
}

impl Stripper {
    /// The bytes of `chunk` (and what was held) to send on now.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<u8> {
        self.held.extend_from_slice(chunk);
        if self.in_comment {
            return Vec::new();
        }
        let line_start = |i: usize| {
            if i == 0 {
                self.at_line_start
            } else {
                self.held[i - 1] == b'\n'
            }
        };
        let found =
            (0..self.held.len()).find(|i| line_start(*i) && self.held[*i..].starts_with(MARKER));
        let send = match found {
            Some(at) => {
                self.in_comment = true;
                at
            }
            // Hold a line's start that is a start of the marker.
            None => (0..self.held.len())
                .find(|i| line_start(*i) && MARKER.starts_with(&self.held[*i..]))
                .unwrap_or(self.held.len()),
        };
        let sent: Vec<u8> = self.held.drain(..send).collect();
        if let Some(last) = sent.last() {
            self.at_line_start = *last == b'\n';
        }
        sent
    }

    /// At the stream's end: what is left to send, and the tokens the comment
    /// reported (`None` when there was none, or it was cut short).
    pub fn finish(self) -> (Vec<u8>, Option<u64>) {
        if !self.in_comment {
            return (self.held, None);
        }
        let Some(line_end) = self.held.iter().position(|b| *b == b'\n') else {
            return (Vec::new(), None);
        };
        let line = String::from_utf8_lossy(&self.held[MARKER.len()..line_end]);
        let tokens = line
            .split_whitespace()
            .find_map(|field| field.strip_prefix("total_tokens="))
            .and_then(|n| n.parse().ok());
        // The comment's blank line goes too; anything after it (there should
        // be nothing) is the origin's and passes on.
        let mut rest = &self.held[line_end + 1..];
        if rest.first() == Some(&b'\n') {
            rest = &rest[1..];
        }
        (rest.to_vec(), tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn strip(chunks: &[&[u8]]) -> (Vec<u8>, Option<u64>) {
        let mut stripper = Stripper::default();
        let mut out = Vec::new();
        for chunk in chunks {
            out.extend(stripper.feed(chunk));
        }
        let (rest, tokens) = stripper.finish();
        out.extend(rest);
        (out, tokens)
    }

    #[test]
    fn a_stream_without_the_comment_passes_unchanged() {
        let events = b"data: {\"a\":1}\n\n: keep-alive\n\ndata: [DONE]\n\n";
        assert_eq!(strip(&[events]), (events.to_vec(), None));
        // A tail that looks like the start of the marker is sent at the end.
        assert_eq!(
            strip(&[b"data: x\n\n: x-sluice"]).0,
            b"data: x\n\n: x-sluice"
        );
        // An event's closing newline is never held.
        let mut stripper = Stripper::default();
        assert_eq!(stripper.feed(b"data: x\n\n"), b"data: x\n\n");
        assert_eq!(stripper.feed(b": x-sl"), b"");
        assert_eq!(stripper.feed(b"ow\n\n"), b": x-slow\n\n");
    }

    proptest! {
        /// However the stream is cut into chunks, the client gets the events
        /// byte for byte and the edge gets the count.
        #[test]
        fn the_comment_comes_out_at_any_chunking(cuts in proptest::collection::vec(0usize..200, 0..12),
                tokens in 0u64..1_000_000) {
            let events = b"event: message_delta\ndata: {\"usage\":{\"output_tokens\":3}}\n\n\
                           data: {\"x\":\"\\n: x-sluice-usage total_tokens=1\"}\n\ndata: [DONE]\n\n".to_vec();
            let mut stream = events.clone();
            stream.extend(comment(tokens));
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (stream.len() + 1)).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut start = 0;
            for cut in cuts.into_iter().chain([stream.len()]) {
                chunks.push(&stream[start..cut]);
                start = cut;
            }
            prop_assert_eq!(strip(&chunks), (events, Some(tokens)));
        }
    }
}
