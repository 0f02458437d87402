//! Pure logic shared by the edge components (compiled to wasm32) and the origin.
//!
//! Nothing here does I/O or reads a clock: callers pass `now` in, so every rule
//! is unit- and property-testable natively and behaves the same on both tiers.

pub mod api_key;
pub mod cache_entry;
pub mod client_ip;
pub mod cors;
pub mod edge_signature;
pub mod errors;
pub mod identity;
pub mod rate_policy;
pub mod rate_window;
pub mod route;
pub mod settings;
pub mod token_estimate;
pub mod usage_report;
