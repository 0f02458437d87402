//! How workers learn which job to claim next: by polling the jobs table, or
//! from Redis Streams. The table is the record either way (status, lease,
//! result); a backend only says which row to try, so the queue's rules
//! (leases, retries, the dead-letter queue) are written once, in `store`.

use crate::priority::Priority;
use crate::queue::store::JobError;
use crate::queue::streams::{JobStreams, Receipt};
use futures::future::BoxFuture;

/// What to claim next.
pub enum Next {
    /// The most urgent visible row of the table.
    MostUrgent,
    /// This job, delivered with `receipt` (acknowledged once it is done with).
    Job { id: String, receipt: Receipt },
    /// Nothing to run now.
    Nothing,
}

/// One way of delivering jobs to workers.
pub trait Delivery: Send + Sync {
    /// Whether the backend answers, for `/ready`; `None` when there is nothing to ask.
    fn ping(&self) -> BoxFuture<'_, Option<bool>>;
    fn next(&self, now_ms: i64) -> BoxFuture<'_, Result<Next, JobError>>;
    /// A job became claimable now (submitted, released, redriven, swept).
    fn offer<'a>(&'a self, id: &'a str, priority: Priority) -> BoxFuture<'a, Result<(), JobError>>;
    /// A job becomes claimable at `visible_at_ms` (a retry after its backoff).
    fn offer_at<'a>(
        &'a self,
        id: &'a str,
        priority: Priority,
        visible_at_ms: i64,
    ) -> BoxFuture<'a, Result<(), JobError>>;
    /// A delivery the job needs no more.
    fn done<'a>(&'a self, receipt: &'a Receipt) -> BoxFuture<'a, Result<(), JobError>>;
    /// Whether offers can be lost (with Redis), so the table must be swept
    /// for jobs that should have run long ago.
    fn can_lose_offers(&self) -> bool;
}

/// Workers poll the table itself: nothing to offer or acknowledge.
pub struct TablePolling;

impl Delivery for TablePolling {
    fn ping(&self) -> BoxFuture<'_, Option<bool>> {
        Box::pin(async { None })
    }

    fn next(&self, _now_ms: i64) -> BoxFuture<'_, Result<Next, JobError>> {
        Box::pin(async { Ok(Next::MostUrgent) })
    }

    fn offer<'a>(&'a self, _: &'a str, _: Priority) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async { Ok(()) })
    }

    fn offer_at<'a>(
        &'a self,
        _: &'a str,
        _: Priority,
        _: i64,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async { Ok(()) })
    }

    fn done<'a>(&'a self, _: &'a Receipt) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async { Ok(()) })
    }

    fn can_lose_offers(&self) -> bool {
        false
    }
}

impl Delivery for JobStreams {
    fn ping(&self) -> BoxFuture<'_, Option<bool>> {
        Box::pin(async { Some(JobStreams::ping(self).await) })
    }

    fn next(&self, now_ms: i64) -> BoxFuture<'_, Result<Next, JobError>> {
        Box::pin(async move {
            Ok(match JobStreams::next(self, now_ms).await? {
                Some((id, receipt)) => Next::Job { id, receipt },
                None => Next::Nothing,
            })
        })
    }

    fn offer<'a>(&'a self, id: &'a str, priority: Priority) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move { Ok(self.push(id, priority).await?) })
    }

    fn offer_at<'a>(
        &'a self,
        id: &'a str,
        priority: Priority,
        visible_at_ms: i64,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move { Ok(self.push_later(id, priority, visible_at_ms).await?) })
    }

    fn done<'a>(&'a self, receipt: &'a Receipt) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move { Ok(JobStreams::done(self, receipt).await?) })
    }

    fn can_lose_offers(&self) -> bool {
        true
    }
}
