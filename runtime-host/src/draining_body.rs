//! A request body that, when the component lets go of it unread (a 413 for
//! a body over its limit, say), is read to its end and discarded in the
//! background, within a bound. Without this the connection would be closed
//! with the client's bytes still unread, and the kernel answers that with a
//! reset that can destroy the response before the client reads it: the
//! client would see a broken connection instead of the 413.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// At most this much is discarded; past it the connection is closed.
pub const DRAIN_MAX_BYTES: u64 = 64 << 20;
/// Nor longer than this.
pub const DRAIN_MAX_TIME: Duration = Duration::from_secs(10);

pub struct DrainingBody {
    inner: Option<Incoming>,
}

impl DrainingBody {
    pub fn new(inner: Incoming) -> DrainingBody {
        DrainingBody { inner: Some(inner) }
    }
}

impl Body for DrainingBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.inner.as_mut() {
            Some(inner) => Pin::new(inner).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl Drop for DrainingBody {
    fn drop(&mut self) {
        let Some(mut inner) = self.inner.take() else {
            return;
        };
        if inner.is_end_stream() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            use http_body_util::BodyExt;
            let drain = async {
                let mut discarded = 0u64;
                while let Some(Ok(frame)) = inner.frame().await {
                    discarded += frame.data_ref().map_or(0, |d| d.len() as u64);
                    if discarded > DRAIN_MAX_BYTES {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(DRAIN_MAX_TIME, drain).await;
        });
    }
}
