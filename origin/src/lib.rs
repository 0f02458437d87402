//! The Sluice origin: generation behind the edge.
//!
//! Modules by layer, each depending only on those below it:
//! - `app`: the state, the routers merged and the layer stack;
//! - features, each with its routes: `generation` (chat completions,
//!   embeddings, models), `messages` (Anthropic's Messages API), `conversations`, `queue` (jobs and workers),
//!   `keys`, `ops` (metrics, probes, stats, status page), and `simulator`
//!   (the simulated provider served on its own);
//! - `http`: what every handler shares (errors, extractors, edge signature);
//! - the domain: `routing` (deployments, retries, breakers, key pools,
//!   coalescing), `provider`, `cache`, `openai` and `anthropic` (the wire
//!   formats clients speak), `reasoning` (thinking kept for tool loops),
//!   `priority`;
//! - `config`, `clock`, `db`.

pub mod anthropic;
pub mod app;
pub mod budgets;
pub mod cache;
pub mod catalog;
pub mod clock;
pub mod config;
pub mod conversations;
pub mod db;
pub mod generation;
pub mod http;
pub mod keys;
pub mod messages;
pub mod openai;
pub mod ops;
pub mod priority;
pub mod provider;
pub mod queue;
pub mod reasoning;
pub mod responses;
pub mod routing;
pub mod simulator;
