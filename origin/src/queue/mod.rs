//! Durable jobs: the queue kept in the database (`store`), delivered to
//! workers by table polling or Redis Streams (`delivery`, `streams`), the workers that run jobs
//! through the generation service (`worker`), and the `/v1/jobs`, `/generate`
//! and dead-letter admin routes (`handlers`).

pub mod delivery;
mod handlers;
mod store;
pub mod streams;
pub mod worker;

pub use handlers::router;
pub use store::{Claimed, FailOutcome, Job, JobError, JobQueue, JobStatus, NewJob, QueueStats};
