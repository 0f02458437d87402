//! The Sluice runtime-host: serves a Spin manifest (`spin.toml`) with wasmtime,
//! the way `spin up` does, so the edge runs locally without Spin installed.

pub mod admin;
pub mod app;
pub mod compile_cache;
pub mod compose;
pub mod draining_body;
pub mod host_services;
pub mod kv;
pub mod manifest;
pub mod outbound;
pub mod outbound_http;
pub mod reuse;
pub mod runtime_config;
pub mod server;
pub mod state;
