//! Refuses any request that did not pass through the edge: the origin trusts
//! only identities the edge signed (see `sluice_core::edge_signature`).

use crate::clock::unix_now;
use crate::http::ApiError;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use secrecy::{ExposeSecret, SecretString};
use sluice_core::edge_signature::{
    self, IDENTITY_HEADER, SIGNATURE_HEADER, Signed, TIMESTAMP_HEADER,
};
use sluice_core::identity::Identity;
use std::sync::Arc;

/// The shared secret and the clock skew the check allows.
#[derive(Clone)]
pub struct EdgeVerifier {
    secret: Arc<SecretString>,
    max_skew_secs: u64,
}

impl EdgeVerifier {
    pub fn new(secret: SecretString, max_skew_secs: u64) -> EdgeVerifier {
        EdgeVerifier {
            secret: Arc::new(secret),
            max_skew_secs,
        }
    }

    fn verified_identity(&self, req: &Request) -> Result<Identity, ApiError> {
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        let identity_header = header(IDENTITY_HEADER);
        let signed = Signed {
            method: req.method().as_str(),
            path_and_query: req
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/"),
            timestamp: header(TIMESTAMP_HEADER),
            identity: identity_header,
            signature: header(SIGNATURE_HEADER),
        };
        if let Err(e) = edge_signature::verify(
            self.secret.expose_secret().as_bytes(),
            &signed,
            unix_now(),
            self.max_skew_secs,
        ) {
            tracing::warn!(reason = %e, method = %req.method(), path = %req.uri().path(), "refused request without a valid edge signature");
            return Err(ApiError::EdgeSignature(e.to_string()));
        }
        Identity::decode(identity_header.unwrap_or_default())
            .map_err(|e| ApiError::EdgeSignature(e.to_string()))
    }
}

/// Middleware: puts the signed [`Identity`] in the request's extensions.
pub async fn require_edge_signature(
    State(verifier): State<EdgeVerifier>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let identity = verifier.verified_identity(&req)?;
    req.extensions_mut().insert(identity);
    Ok(next.run(req).await)
}
