//! What every feature's handlers share on the wire: the one error type in
//! OpenAI's shape, the extractors (limited body, priority, admin caller), and
//! the edge-signature check. The router and its layer stack are assembled in
//! `crate::app`, above the features, so this module imports none of them.

pub mod connections;
pub mod edge_signature;
pub mod error;
pub mod extract;
pub mod fields;

pub use edge_signature::{EdgeVerifier, require_edge_signature};
pub use error::ApiError;
pub use extract::{
    ApiJson, ApiPath, ApiQuery, BodyLimit, GenerationBody, LimitedBody, check_identifier,
    check_name, parse_json, require_admin,
};
