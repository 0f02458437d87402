//! `POST /v1/responses`, `GET` and `DELETE /v1/responses/{id}` and
//! `GET /v1/responses/{id}/input_items`: OpenAI's Responses API for any
//! configured model, translated to and from chat (so every provider and
//! fallback serves it), with responses stored per caller for
//! `previous_response_id`.

pub mod events;
mod handlers;
pub mod request;
pub mod response;
pub mod store;

pub use handlers::router;
pub use store::ResponseStore;
