//! HMAC-SHA256 signature that proves a request passed through the edge.
//!
//! The edge signs `v1 \n METHOD \n path?query \n unix-seconds \n identity-header`.
//! The origin recomputes it, compares in constant time and refuses timestamps
//! outside a short skew window, so a captured request cannot be replayed later
//! or re-targeted to another path or principal.

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const IDENTITY_HEADER: &str = "x-sluice-identity";
pub const TIMESTAMP_HEADER: &str = "x-sluice-timestamp";
pub const SIGNATURE_HEADER: &str = "x-sluice-signature";

const VERSION: &str = "v1";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("request is missing the edge signature")]
    Missing,
    #[error("edge timestamp is not a unix time")]
    MalformedTimestamp,
    #[error("edge timestamp is {skew_seconds}s away from now")]
    Stale { skew_seconds: u64 },
    #[error("edge signature does not match")]
    Mismatch,
}

fn mac(
    secret: &[u8],
    method: &str,
    path_and_query: &str,
    timestamp: u64,
    identity: &str,
) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    for part in [
        VERSION,
        method,
        path_and_query,
        &timestamp.to_string(),
        identity,
    ] {
        mac.update(part.as_bytes());
        mac.update(b"\n");
    }
    mac
}

/// The value of the signature header for one request.
pub fn sign(
    secret: &[u8],
    method: &str,
    path_and_query: &str,
    timestamp: u64,
    identity: &str,
) -> String {
    let tag = mac(secret, method, path_and_query, timestamp, identity)
        .finalize()
        .into_bytes();
    format!("{VERSION}={}", hex::encode(tag))
}

/// The three headers that carry an identity (`Identity::encode`'s header
/// value) to the origin, signed for this method and path at `timestamp`: what
/// the gateway, the auth policy's own calls, the load generator and the
/// tests all send.
pub fn signed_headers(
    secret: &[u8],
    method: &str,
    path_and_query: &str,
    timestamp: u64,
    identity: &str,
) -> [(&'static str, String); 3] {
    let signature = sign(secret, method, path_and_query, timestamp, identity);
    [
        (IDENTITY_HEADER, identity.to_string()),
        (TIMESTAMP_HEADER, timestamp.to_string()),
        (SIGNATURE_HEADER, signature),
    ]
}

/// What the origin received, borrowed from the request.
pub struct Signed<'a> {
    pub method: &'a str,
    pub path_and_query: &'a str,
    pub timestamp: Option<&'a str>,
    pub identity: Option<&'a str>,
    pub signature: Option<&'a str>,
}

/// Checks a request's signature; `now` is unix seconds.
pub fn verify(
    secret: &[u8],
    signed: &Signed<'_>,
    now: u64,
    max_skew_seconds: u64,
) -> Result<(), SignatureError> {
    let (Some(timestamp), Some(identity), Some(signature)) =
        (signed.timestamp, signed.identity, signed.signature)
    else {
        return Err(SignatureError::Missing);
    };
    let timestamp: u64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::MalformedTimestamp)?;
    let skew_seconds = now.abs_diff(timestamp);
    if skew_seconds > max_skew_seconds {
        return Err(SignatureError::Stale { skew_seconds });
    }
    let tag = signature
        .strip_prefix("v1=")
        .and_then(|h| hex::decode(h).ok())
        .ok_or(SignatureError::Mismatch)?;
    mac(
        secret,
        signed.method,
        signed.path_and_query,
        timestamp,
        identity,
    )
    .verify_slice(&tag)
    .map_err(|_| SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"test-secret";

    fn signed<'a>(sig: &'a str, ts: &'a str) -> Signed<'a> {
        Signed {
            method: "POST",
            path_and_query: "/v1/chat/completions",
            timestamp: Some(ts),
            identity: Some("abc"),
            signature: Some(sig),
        }
    }

    #[test]
    fn accepts_own_signature_within_skew() {
        let sig = sign(SECRET, "POST", "/v1/chat/completions", 1000, "abc");
        assert_eq!(verify(SECRET, &signed(&sig, "1000"), 1010, 30), Ok(()));
        assert_eq!(verify(SECRET, &signed(&sig, "1000"), 990, 30), Ok(()));
    }

    #[test]
    fn refuses_stale_tampered_or_missing() {
        let sig = sign(SECRET, "POST", "/v1/chat/completions", 1000, "abc");
        assert_eq!(
            verify(SECRET, &signed(&sig, "1000"), 1031, 30),
            Err(SignatureError::Stale { skew_seconds: 31 })
        );
        assert_eq!(
            verify(b"other", &signed(&sig, "1000"), 1000, 30),
            Err(SignatureError::Mismatch)
        );
        let mut other_path = signed(&sig, "1000");
        other_path.path_and_query = "/v1/embeddings";
        assert_eq!(
            verify(SECRET, &other_path, 1000, 30),
            Err(SignatureError::Mismatch)
        );
        let mut other_identity = signed(&sig, "1000");
        other_identity.identity = Some("abd");
        assert_eq!(
            verify(SECRET, &other_identity, 1000, 30),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(SECRET, &signed("v1=zz", "1000"), 1000, 30),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(SECRET, &signed(&sig, "soon"), 1000, 30),
            Err(SignatureError::MalformedTimestamp)
        );
        let mut missing = signed(&sig, "1000");
        missing.signature = None;
        assert_eq!(
            verify(SECRET, &missing, 1000, 30),
            Err(SignatureError::Missing)
        );
    }
}
