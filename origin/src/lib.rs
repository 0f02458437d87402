//! The Sluice origin: generation behind the edge.

pub mod admin;
pub mod app;
pub mod cache;
pub mod chat;
pub mod config;
pub mod conversations;
pub mod conversations_api;
pub mod db;
pub mod edge_auth;
pub mod error;
pub mod job_streams;
pub mod jobs;
pub mod jobs_api;
pub mod keypool;
pub mod keys;
pub mod openai;
pub mod ops;
pub mod priority;
pub mod provider;
pub mod resilience;
pub mod routing;
pub mod semantic;
pub mod simulator;
pub mod usage;
pub mod window;
pub mod worker;
