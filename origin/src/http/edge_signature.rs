//! Refuses any request that did not pass through the edge: the origin trusts
//! only identities the edge signed (see `sluice_core::edge_signature`).

use crate::app::AppState;
use crate::error::ApiError;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use sluice_core::edge_signature::{
    self, IDENTITY_HEADER, SIGNATURE_HEADER, Signed, TIMESTAMP_HEADER,
};
use sluice_core::identity::Identity;

pub async fn require_edge_signature(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let identity = verified_identity(&state, &req)?;
    req.extensions_mut().insert(identity);
    Ok(next.run(req).await)
}

fn verified_identity(state: &AppState, req: &Request) -> Result<Identity, ApiError> {
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
        state.edge_secret.as_bytes(),
        &signed,
        crate::app::unix_now(),
        state.max_skew_secs,
    ) {
        tracing::warn!(reason = %e, method = %req.method(), path = %req.uri().path(), "refused request without a valid edge signature");
        return Err(ApiError::EdgeSignature(e.to_string()));
    }
    Identity::decode(identity_header.unwrap_or_default())
        .map_err(|e| ApiError::EdgeSignature(e.to_string()))
}
