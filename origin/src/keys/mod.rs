//! API keys: the store (hashes only; the key itself is shown once), the
//! admin routes that issue, list and revoke keys, and the edge's lookup.

mod handlers;
mod store;

pub use handlers::router;
pub use store::{CreatedKey, KeyError, KeyInfo, KeyStore, NewKey};
