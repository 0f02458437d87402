//! Bedrock's streamed answers: AWS event-stream binary frames (a prelude
//! with lengths and a CRC, typed headers, a JSON payload, a message CRC),
//! decoded with AWS's own `aws-smithy-eventstream`. An `exception` frame
//! (throttling, a model's error mid-answer) ends the stream as an error, so
//! the client is told and the deployment charged with the failure.

use super::super::ProviderError;
use super::super::wire::send_error;
use aws_smithy_eventstream::frame::{DecodedFrame, MessageFrameDecoder};
use aws_smithy_types::event_stream::Message;
use bytes::BytesMut;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use serde_json::Value;

/// One event: its `:event-type` and its JSON payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub event: String,
    pub payload: Value,
}

fn header<'a>(message: &'a Message, name: &str) -> Option<&'a str> {
    message
        .headers()
        .iter()
        .find(|h| h.name().as_str() == name)
        .and_then(|h| h.value().as_string().ok())
        .map(|s| s.as_str())
}

fn protocol(reason: impl std::fmt::Display) -> ProviderError {
    ProviderError::Protocol(format!("Bedrock's event stream: {reason}"))
}

/// An event, or the error an exception frame carries.
fn frame(message: &Message) -> Result<Frame, ProviderError> {
    let payload = || serde_json::from_slice::<Value>(message.payload()).map_err(protocol);
    match header(message, ":message-type") {
        Some("event") => Ok(Frame {
            event: header(message, ":event-type")
                .ok_or_else(|| protocol("an event without :event-type"))?
                .to_string(),
            payload: payload()?,
        }),
        Some("exception") => {
            let kind = header(message, ":exception-type").unwrap_or("exception");
            let text = payload()
                .ok()
                .and_then(|p| p.get("message").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_default();
            let message = format!("{kind}: {text}");
            Err(match kind {
                "throttlingException" => ProviderError::RateLimited {
                    retry_after: None,
                    message,
                },
                "validationException" => ProviderError::Rejected {
                    status: 400,
                    message,
                },
                _ => ProviderError::Unavailable {
                    status: 200,
                    message,
                },
            })
        }
        Some("error") => Err(ProviderError::Unavailable {
            status: 200,
            message: format!(
                "{}: {}",
                header(message, ":error-code").unwrap_or("error"),
                header(message, ":error-message").unwrap_or_default()
            ),
        }),
        other => Err(protocol(format!(
            "a frame of message type {}",
            other.unwrap_or("(none)")
        ))),
    }
}

/// The events of a streamed answer as they arrive.
pub fn frames(response: reqwest::Response) -> BoxStream<'static, Result<Frame, ProviderError>> {
    decode(
        response
            .bytes_stream()
            .map(|chunk| chunk.map_err(send_error)),
    )
    .boxed()
}

fn decode<S>(bytes: S) -> impl Stream<Item = Result<Frame, ProviderError>>
where
    S: Stream<Item = Result<bytes::Bytes, ProviderError>> + Unpin,
{
    let state = (bytes, BytesMut::new(), MessageFrameDecoder::new(), false);
    futures::stream::unfold(
        state,
        |(mut bytes, mut buffer, mut decoder, done)| async move {
            if done {
                return None;
            }
            loop {
                match decoder.decode_frame(&mut buffer) {
                    Ok(DecodedFrame::Complete(message)) => {
                        let frame = frame(&message);
                        let failed = frame.is_err();
                        return Some((frame, (bytes, buffer, decoder, failed)));
                    }
                    Ok(DecodedFrame::Incomplete) => {}
                    Err(e) => return Some((Err(protocol(e)), (bytes, buffer, decoder, true))),
                }
                match bytes.next().await {
                    Some(Ok(chunk)) => buffer.extend_from_slice(&chunk),
                    Some(Err(e)) => return Some((Err(e), (bytes, buffer, decoder, true))),
                    None if buffer.is_empty() => return None,
                    None => {
                        return Some((
                            Err(protocol("the stream ended inside a frame")),
                            (bytes, buffer, decoder, true),
                        ));
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_eventstream::frame::write_message_to;
    use aws_smithy_types::event_stream::{Header, HeaderValue};

    fn encoded(kind: &str, name_header: &'static str, name: &str, payload: &str) -> Vec<u8> {
        let message = Message::new(payload.as_bytes().to_vec())
            .add_header(Header::new(
                ":message-type",
                HeaderValue::String(kind.to_string().into()),
            ))
            .add_header(Header::new(
                name_header,
                HeaderValue::String(name.to_string().into()),
            ))
            .add_header(Header::new(
                ":content-type",
                HeaderValue::String("application/json".into()),
            ));
        let mut out = Vec::new();
        write_message_to(&message, &mut out).unwrap();
        out
    }

    #[tokio::test]
    async fn frames_split_anywhere_decode_and_an_exception_ends_the_stream() {
        let mut wire = encoded(
            "event",
            ":event-type",
            "messageStart",
            r#"{"role":"assistant"}"#,
        );
        wire.extend(encoded(
            "event",
            ":event-type",
            "contentBlockDelta",
            r#"{"contentBlockIndex":0,"delta":{"text":"Hi"}}"#,
        ));
        wire.extend(encoded(
            "exception",
            ":exception-type",
            "modelStreamErrorException",
            r#"{"message":"the model stopped","originalStatusCode":500}"#,
        ));
        wire.extend(encoded("event", ":event-type", "messageStop", "{}"));
        // Three bytes at a time: frames cross chunk boundaries.
        let chunks: Vec<Result<bytes::Bytes, ProviderError>> = wire
            .chunks(3)
            .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
            .collect();
        let out: Vec<_> = decode(futures::stream::iter(chunks)).collect().await;
        assert_eq!(out.len(), 3, "nothing after the exception: {out:?}");
        assert_eq!(out[0].as_ref().unwrap().event, "messageStart");
        assert_eq!(out[1].as_ref().unwrap().payload["delta"]["text"], "Hi");
        match &out[2] {
            Err(ProviderError::Unavailable {
                status: 200,
                message,
            }) => {
                assert_eq!(message, "modelStreamErrorException: the model stopped");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_corrupt_or_cut_frame_is_a_protocol_error() {
        let mut wire = encoded("event", ":event-type", "messageStart", "{}");
        let last = wire.len() - 1;
        wire[last] ^= 0xff;
        let out: Vec<_> = decode(futures::stream::iter([Ok(bytes::Bytes::from(wire))]))
            .collect()
            .await;
        assert!(
            matches!(out[..], [Err(ProviderError::Protocol(_))]),
            "{out:?}"
        );

        let cut = encoded("event", ":event-type", "messageStart", "{}");
        let out: Vec<_> = decode(futures::stream::iter([Ok(bytes::Bytes::copy_from_slice(
            &cut[..cut.len() - 2],
        ))]))
        .collect()
        .await;
        assert!(
            matches!(out[..], [Err(ProviderError::Protocol(_))]),
            "{out:?}"
        );
    }
}
