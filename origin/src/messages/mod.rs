//! `POST /v1/messages` and `POST /v1/messages/count_tokens`: Anthropic's
//! Messages API for any configured model, with errors in Anthropic's shape.

mod handlers;

pub use handlers::router;
