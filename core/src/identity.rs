//! The principal as it travels from the edge to the origin.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

/// Service tier; decides rate limits and admin access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Free,
    Premium,
    Admin,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Free => "free",
            Tier::Premium => "premium",
            Tier::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Tier> {
        match s {
            "free" => Some(Tier::Free),
            "premium" => Some(Tier::Premium),
            "admin" => Some(Tier::Admin),
            _ => None,
        }
    }
}

/// The scope the auth policy gives a caller without credentials on a route
/// open to anonymous use; their subject is `anonymous:<client ip>`.
pub const ANONYMOUS_SCOPE: &str = "anonymous";

/// The scope of the edge's own calls to the origin (key lookups). The auth
/// policy never grants it to a client, and the gateway never forwards
/// `/internal/` paths.
pub const EDGE_INTERNAL_SCOPE: &str = "edge:internal";

/// Who is calling, as established at the edge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    pub sub: String,
    pub tier: Tier,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("identity header is not base64url")]
    Encoding,
    #[error("identity header is not a valid identity: {0}")]
    Shape(String),
}

impl Identity {
    /// Header-safe encoding: base64url (no padding) of compact JSON.
    pub fn encode(&self) -> String {
        // Serializing a struct of strings and enums to JSON cannot fail.
        let json = serde_json::to_vec(self).unwrap_or_default();
        URL_SAFE_NO_PAD.encode(json)
    }

    pub fn decode(header: &str) -> Result<Identity, IdentityError> {
        let json = URL_SAFE_NO_PAD
            .decode(header.trim())
            .map_err(|_| IdentityError::Encoding)?;
        serde_json::from_slice(&json).map_err(|e| IdentityError::Shape(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn encode_decode_roundtrip(sub in "\\PC{0,40}", kid in proptest::option::of("[a-z0-9]{1,12}"),
                                   scopes in proptest::collection::vec("[a-z:]{1,10}", 0..4), t in 0..3u8) {
            let tier = [Tier::Free, Tier::Premium, Tier::Admin][t as usize];
            let id = Identity { sub, tier, kid, scopes };
            let header = id.encode();
            prop_assert!(header.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            prop_assert_eq!(Identity::decode(&header).unwrap(), id);
        }
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(Identity::decode("%%%"), Err(IdentityError::Encoding));
        assert!(matches!(
            Identity::decode("e30"),
            Err(IdentityError::Shape(_))
        ));
    }
}
