//! Outbound HTTP from components through one pooled client: keep-alive
//! connections are reused across requests (and component instances), and
//! TLS is configured once. wasmtime-wasi-http's `default_send_request` opens
//! a new connection, and for https builds a new TLS configuration, on every
//! call; for a gateway whose every request calls the origin, that was a TCP
//! handshake per request. hyper-util's pooled client is the well-kept
//! implementation of exactly this, so it is used rather than a pool of our own.

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

/// How long an idle pooled connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// wasmtime-wasi-http's defaults when a component sets no timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// Cheap to clone: one pool shared by every store.
#[derive(Clone)]
pub struct OutboundClient {
    client: Client<Connector, WasiBody>,
}

impl Default for OutboundClient {
    fn default() -> OutboundClient {
        OutboundClient::new()
    }
}

impl OutboundClient {
    pub fn new() -> OutboundClient {
        let mut http = HttpConnector::new();
        // `https_or_http` below decides the scheme; the inner connector must allow both.
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(DEFAULT_TIMEOUT));
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map(|builder| {
            builder
                .with_root_certificates(rustls::RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.into(),
                })
                .with_no_client_auth()
        })
        .unwrap_or_else(|e| unreachable!("ring supports rustls's default versions: {e}"));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(connector);
        OutboundClient { client }
    }

    /// Sends `request` (an absolute URI, as wasi:http gives it) with the
    /// component's timeouts: to the response head, and between body frames.
    pub async fn send(
        &self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
    ) -> Result<http::Response<WasiBody>, Error> {
        let first_byte = options
            .and_then(|o| o.first_byte_timeout)
            .unwrap_or(DEFAULT_TIMEOUT);
        let between_bytes = options
            .and_then(|o| o.between_bytes_timeout)
            .unwrap_or(DEFAULT_TIMEOUT)
            // Tokio panics on a zero interval.
            .max(Duration::from_nanos(1));
        let response = tokio::time::timeout(first_byte, self.client.request(request))
            .await
            .map_err(|_| Error::ConnectionReadTimeout)?
            .map_err(connect_error)?;
        Ok(response.map(|incoming| {
            let mut timeout = tokio::time::interval(between_bytes);
            timeout.reset();
            TimedBody { incoming, timeout }.boxed_unsync()
        }))
    }
}

/// A legacy-client error as the wasi:http error a component sees.
fn connect_error(error: hyper_util::client::legacy::Error) -> Error {
    use std::error::Error as _;
    if error.is_connect() {
        let refused = error
            .source()
            .and_then(|s| s.source())
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused);
        return if refused {
            Error::ConnectionRefused
        } else {
            Error::Connect(std::io::Error::other(error.to_string()))
        };
    }
    match error
        .source()
        .and_then(|s| s.downcast_ref::<hyper::Error>())
    {
        Some(_) => Error::HttpProtocolError,
        None => Error::ConnectionTerminated,
    }
}

/// The response body, failing when no frame arrives within the interval.
struct TimedBody {
    incoming: hyper::body::Incoming,
    timeout: tokio::time::Interval,
}

impl http_body::Body for TimedBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Error>>> {
        match Pin::new(&mut self.incoming).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                self.timeout.reset();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(Error::from(error)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                ready!(self.timeout.poll_tick(cx));
                Poll::Ready(Some(Err(Error::ConnectionReadTimeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.incoming.size_hint()
    }
}
