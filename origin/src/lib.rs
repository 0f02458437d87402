//! The Sluice origin: generation behind the edge.

pub mod admin;
pub mod app;
pub mod chat;
pub mod config;
pub mod db;
pub mod edge_auth;
pub mod error;
pub mod keys;
pub mod openai;
pub mod provider;
