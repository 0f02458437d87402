//! The Sluice origin: generation behind the edge.

pub mod app;
pub mod chat;
pub mod config;
pub mod edge_auth;
pub mod error;
pub mod openai;
pub mod provider;
