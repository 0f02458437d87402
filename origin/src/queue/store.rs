//! The durable job queue, kept in the database (SQLite by default, so it
//! survives a restart; Postgres when several origins and workers share it).
//!
//! A worker claims a job by setting a fresh lease and pushing `visible_at_ms`
//! one visibility timeout ahead; a worker that dies simply stops renewing
//! nothing, and the job becomes claimable again when that time passes. Every
//! state change after the claim names the lease, so a worker that lost its
//! job (timed out, cancelled, reclaimed) cannot overwrite what another did:
//! a job's result is written exactly once. Failures are retried with
//! exponential backoff up to `max_attempts`, then the job is `failed`, which
//! is the dead-letter queue: admins list, inspect and redrive it.

use crate::clock::now_ms;
use crate::config::QueueSettings;
use crate::db::Db;
use crate::priority::Priority;
use crate::queue::delivery::{Delivery, Next, TablePolling};
use crate::queue::streams::{JobStreams, Receipt};
use crate::routing::backoff;
use serde::Serialize;
use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("no such job")]
    NotFound,
    #[error("job streams: {0}")]
    Streams(#[from] redis::RedisError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Processing,
    Completed,
    Failed,
    Cancelled,
}

impl JobStatus {
    fn parse(text: &str) -> JobStatus {
        match text {
            "processing" => JobStatus::Processing,
            "completed" => JobStatus::Completed,
            "failed" => JobStatus::Failed,
            "cancelled" => JobStatus::Cancelled,
            _ => JobStatus::Queued,
        }
    }
}

/// A job as its owner and admins see it.
#[derive(Debug, Clone, Serialize)]
pub struct Job {
    pub id: String,
    pub object: &'static str,
    pub subject: String,
    pub status: JobStatus,
    pub priority: Priority,
    pub attempts: i64,
    pub max_attempts: i64,
    /// The chat completion, once completed.
    pub result: Option<Value>,
    pub error: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub finished_at_ms: Option<i64>,
}

/// A job a worker holds: only the holder of `lease` may finish it.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: String,
    pub lease: String,
    pub subject: String,
    /// The key it was submitted with: its budget is charged.
    pub key_id: Option<String>,
    pub priority: Priority,
    pub request: String,
    pub attempts: i64,
    pub max_attempts: i64,
    /// The stream entry it came from (Redis Streams delivery only).
    pub delivery: Option<Receipt>,
}

pub struct NewJob<'a> {
    pub subject: &'a str,
    pub key_id: Option<&'a str>,
    pub priority: Priority,
    pub idempotency_key: Option<&'a str>,
    /// The validated chat completion request, as JSON.
    pub request: &'a str,
}

/// What a failure led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    /// Queued again, visible after the backoff.
    Retrying,
    /// Out of attempts or not retryable: in the dead-letter queue.
    DeadLettered,
    /// The lease was no longer ours (cancelled or reclaimed): nothing changed.
    LeaseLost,
}

/// Depth and age, for autoscaling and `/ready`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct QueueStats {
    pub queued: i64,
    pub processing: i64,
    pub dead: i64,
    /// Age of the oldest job still waiting to run, 0 when none waits.
    pub oldest_queued_age_ms: i64,
}

#[derive(Clone)]
pub struct JobQueue {
    db: Db,
    settings: Arc<QueueSettings>,
    /// Postgres claims with `SKIP LOCKED` so concurrent workers do not queue
    /// on one row; SQLite has one writer at a time and needs no such clause.
    postgres: bool,
    /// Wakes this process's idle workers on submission (others poll).
    submitted: Arc<Notify>,
    /// How workers learn which job to claim (table polling unless Redis Streams).
    delivery: Arc<dyn Delivery>,
    /// SQLite takes one writer at a time and makes the others retry in
    /// coarse sleeps; queueing this process's writes here instead keeps a
    /// busy queue's latency flat. `None` on Postgres.
    write_gate: Option<Arc<tokio::sync::Mutex<()>>>,
}

const JOB_COLUMNS: &str = "id, subject, status, priority, attempts, max_attempts, result, error, \
     created_at_ms, updated_at_ms, finished_at_ms";

fn job(row: &AnyRow) -> Result<Job, sqlx::Error> {
    let result: Option<String> = row.try_get("result")?;
    Ok(Job {
        id: row.try_get("id")?,
        object: "job",
        subject: row.try_get("subject")?,
        status: JobStatus::parse(&row.try_get::<String, _>("status")?),
        priority: Priority::from_rank(row.try_get("priority")?),
        attempts: row.try_get("attempts")?,
        max_attempts: row.try_get("max_attempts")?,
        result: result.and_then(|text| serde_json::from_str(&text).ok()),
        error: row.try_get("error")?,
        created_at_ms: row.try_get("created_at_ms")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
        finished_at_ms: row.try_get("finished_at_ms")?,
    })
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl JobQueue {
    pub fn new(db: Db, settings: QueueSettings, postgres: bool) -> JobQueue {
        JobQueue {
            db,
            settings: Arc::new(settings),
            postgres,
            submitted: Arc::new(Notify::new()),
            delivery: Arc::new(TablePolling),
            write_gate: (!postgres).then(|| Arc::new(tokio::sync::Mutex::new(()))),
        }
    }

    /// Runs one writing statement, through the write gate on SQLite.
    async fn write<T>(&self, statement: impl Future<Output = T>) -> T {
        let _turn = match &self.write_gate {
            Some(gate) => Some(gate.lock().await),
            None => None,
        };
        statement.await
    }

    /// Whether the Redis Streams delivery answers; `None` on the database queue.
    pub async fn ping_streams(&self) -> Option<bool> {
        self.delivery.ping().await
    }

    /// Delivers jobs through Redis Streams.
    pub fn with_streams(mut self, streams: JobStreams) -> JobQueue {
        self.delivery = Arc::new(streams);
        self
    }

    /// Resolves when a job is submitted in this process (workers also poll).
    pub async fn submitted(&self) {
        self.submitted.notified().await;
    }

    /// Queues a job. With an idempotency key already used by this subject, the
    /// first job is returned instead (`false`: nothing new was queued).
    pub async fn submit(&self, new: NewJob<'_>) -> Result<(Job, bool), JobError> {
        let now = now_ms();
        let id = format!("job_{}", uuid::Uuid::now_v7().simple());
        let inserted = self
            .write(
                sqlx::query(
                    "INSERT INTO jobs (id, subject, idempotency_key, priority, status, request, \
             max_attempts, visible_at_ms, created_at_ms, updated_at_ms, key_id) \
             VALUES ($1, $2, $3, $4, 'queued', $5, $6, $7, $7, $7, $8) \
             ON CONFLICT (subject, idempotency_key) DO NOTHING",
                )
                .bind(&id)
                .bind(new.subject)
                .bind(new.idempotency_key)
                .bind(new.priority.rank())
                .bind(new.request)
                .bind(i64::from(self.settings.max_attempts))
                .bind(now)
                .bind(new.key_id)
                .execute(&self.db),
            )
            .await?
            .rows_affected()
            == 1;
        if inserted {
            // Not offered, not queued: the caller hears the queue is down.
            if let Err(e) = self.delivery.offer(&id, new.priority).await {
                self.write(
                    sqlx::query("DELETE FROM jobs WHERE id = $1")
                        .bind(&id)
                        .execute(&self.db),
                )
                .await?;
                return Err(e);
            }
        }
        let row = if inserted {
            sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"))
                .bind(&id)
                .fetch_one(&self.db)
                .await?
        } else {
            sqlx::query(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE subject = $1 AND idempotency_key = $2"
            ))
            .bind(new.subject)
            .bind(new.idempotency_key)
            .fetch_one(&self.db)
            .await?
        };
        // Read before waking a worker here, so the answer shows the job as it
        // was queued rather than racing a claim (`processing` in a 202).
        if inserted {
            self.submitted.notify_one();
        }
        Ok((job(&row)?, inserted))
    }

    /// A job by id; with `subject`, only that subject's (others are not found).
    pub async fn get(&self, subject: Option<&str>, id: &str) -> Result<Job, JobError> {
        let row = match subject {
            Some(subject) => {
                sqlx::query(&format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1 AND subject = $2"
                ))
                .bind(id)
                .bind(subject)
                .fetch_optional(&self.db)
                .await?
            }
            None => {
                sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&self.db)
                    .await?
            }
        };
        Ok(job(&row.ok_or(JobError::NotFound)?)?)
    }

    /// Cancels a queued or running job (a running one's result is then
    /// discarded). A finished job is returned unchanged.
    pub async fn cancel(&self, subject: &str, id: &str) -> Result<Job, JobError> {
        let now = now_ms();
        self.write(
            sqlx::query(
                "UPDATE jobs SET status = 'cancelled', lease = NULL, updated_at_ms = $1, \
             finished_at_ms = $1 WHERE id = $2 AND subject = $3 \
             AND status IN ('queued', 'processing')",
            )
            .bind(now)
            .bind(id)
            .bind(subject)
            .execute(&self.db),
        )
        .await?;
        self.get(Some(subject), id).await
    }

    /// Takes the next visible job, highest priority first, oldest first within
    /// a priority. A job whose earlier holder's lease ran out is taken again;
    /// if that was its last attempt it goes to the dead-letter queue instead.
    pub async fn claim(&self) -> Result<Option<Claimed>, JobError> {
        loop {
            let claimed = match self.delivery.next(now_ms()).await? {
                Next::Nothing => return Ok(None),
                Next::MostUrgent => self.claim_next().await?,
                Next::Job { id, receipt } => match self.claim_by_id(&id, receipt.clone()).await? {
                    Some(claimed) => Some(claimed),
                    None => {
                        self.drop_stale_delivery(&id, &receipt).await?;
                        continue;
                    }
                },
            };
            let Some(claimed) = claimed else {
                return Ok(None);
            };
            if claimed.attempts <= claimed.max_attempts {
                return Ok(Some(claimed));
            }
            tracing::warn!(event = "job_dead_lettered", job = %claimed.id,
                attempts = claimed.max_attempts, "worker lost the job on its last attempt");
            self.fail(
                &claimed,
                "the worker running it stopped on the last attempt",
                false,
            )
            .await?;
        }
    }

    fn claimed(
        row: &AnyRow,
        lease: String,
        delivery: Option<Receipt>,
    ) -> Result<Claimed, sqlx::Error> {
        Ok(Claimed {
            id: row.try_get("id")?,
            lease,
            subject: row.try_get("subject")?,
            key_id: row.try_get("key_id")?,
            priority: Priority::from_rank(row.try_get("priority")?),
            request: row.try_get("request")?,
            attempts: row.try_get("attempts")?,
            max_attempts: row.try_get("max_attempts")?,
            delivery,
        })
    }

    /// Polling the table: a job whose holder's lease ran out (a dead
    /// worker's), else the most urgent queued one. Two statements, so each
    /// walks the claim index in order (`status` fixed) and stops at the first
    /// row, however long the queue.
    async fn claim_next(&self) -> Result<Option<Claimed>, JobError> {
        for status in ["processing", "queued"] {
            if let Some(claimed) = self.claim_first(status).await? {
                return Ok(Some(claimed));
            }
        }
        Ok(None)
    }

    async fn claim_first(&self, status: &str) -> Result<Option<Claimed>, JobError> {
        let skip_locked = if self.postgres {
            " FOR UPDATE SKIP LOCKED"
        } else {
            ""
        };
        // The outer condition repeats the inner one: under Postgres' read
        // committed, a row another worker claimed first is re-checked and skipped.
        let claim = format!(
            "UPDATE jobs SET status = 'processing', attempts = attempts + 1, lease = $1, \
             visible_at_ms = $2, updated_at_ms = $3 \
             WHERE id = (SELECT id FROM jobs WHERE status = $4 AND visible_at_ms <= $3 \
               ORDER BY priority, visible_at_ms LIMIT 1{skip_locked}) \
             AND status = $4 AND visible_at_ms <= $3 \
             RETURNING id, subject, key_id, priority, request, attempts, max_attempts"
        );
        let now = now_ms();
        let lease = uuid::Uuid::new_v4().simple().to_string();
        let row = self
            .write(
                sqlx::query(&claim)
                    .bind(&lease)
                    .bind(now.saturating_add(duration_ms(self.settings.visibility_timeout)))
                    .bind(now)
                    .bind(status)
                    .fetch_optional(&self.db),
            )
            .await?;
        Ok(row
            .map(|row| Self::claimed(&row, lease, None))
            .transpose()?)
    }

    /// A delivered job, if it is still there to run (not finished, cancelled,
    /// or held by a worker whose lease is still good).
    async fn claim_by_id(&self, id: &str, delivery: Receipt) -> Result<Option<Claimed>, JobError> {
        let now = now_ms();
        let lease = uuid::Uuid::new_v4().simple().to_string();
        let row = self
            .write(
                sqlx::query(
                    "UPDATE jobs SET status = 'processing', attempts = attempts + 1, lease = $1, \
             visible_at_ms = $2, updated_at_ms = $3 \
             WHERE id = $4 AND status IN ('queued', 'processing') AND visible_at_ms <= $3 \
             RETURNING id, subject, key_id, priority, request, attempts, max_attempts",
                )
                .bind(&lease)
                .bind(now.saturating_add(duration_ms(self.settings.visibility_timeout)))
                .bind(now)
                .bind(id)
                .fetch_optional(&self.db),
            )
            .await?;
        Ok(row
            .map(|row| Self::claimed(&row, lease, Some(delivery)))
            .transpose()?)
    }

    /// A delivery that could not be claimed: dropped when its job is over;
    /// left pending when the job is running or waiting (it comes back after
    /// the visibility timeout, and the sweep re-offers such jobs anyway).
    async fn drop_stale_delivery(&self, id: &str, receipt: &Receipt) -> Result<(), JobError> {
        let status: Option<String> = sqlx::query("SELECT status FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.db)
            .await?
            .map(|row| row.try_get("status"))
            .transpose()?;
        if !matches!(status.as_deref(), Some("queued" | "processing")) {
            self.delivery.done(receipt).await?;
        }
        Ok(())
    }

    /// Acknowledges the claimed job's delivery, if it was delivered.
    async fn acknowledge(&self, claimed: &Claimed) -> Result<(), JobError> {
        if let Some(receipt) = &claimed.delivery {
            self.delivery.done(receipt).await?;
        }
        Ok(())
    }

    /// Stores the result; `false` when the lease was lost (nothing stored).
    pub async fn complete(&self, claimed: &Claimed, result: &Value) -> Result<bool, JobError> {
        let now = now_ms();
        let done = self.write(sqlx::query(
            "UPDATE jobs SET status = 'completed', result = $1, error = NULL, lease = NULL, \
             updated_at_ms = $2, finished_at_ms = $2 \
             WHERE id = $3 AND lease = $4 AND status = 'processing'",
        )
        .bind(result.to_string())
        .bind(now)
        .bind(&claimed.id)
        .bind(&claimed.lease)
        .execute(&self.db))
        .await?
        .rows_affected();
        if done == 1 {
            self.acknowledge(claimed).await?;
        }
        Ok(done == 1)
    }

    /// Records a failed attempt: queued again after a backoff while attempts
    /// remain and the error is retryable, dead-lettered otherwise.
    pub async fn fail(
        &self,
        claimed: &Claimed,
        error: &str,
        retryable: bool,
    ) -> Result<FailOutcome, JobError> {
        let now = now_ms();
        let retry = retryable && claimed.attempts < claimed.max_attempts;
        let attempt = u32::try_from(claimed.attempts).unwrap_or(u32::MAX);
        let visible_at = now.saturating_add(duration_ms(backoff(
            attempt.saturating_sub(1),
            self.settings.backoff_base,
            self.settings.backoff_max,
        )));
        let changed = if retry {
            self.write(
                sqlx::query(
                    "UPDATE jobs SET status = 'queued', error = $1, lease = NULL, \
                 visible_at_ms = $2, updated_at_ms = $3 \
                 WHERE id = $4 AND lease = $5 AND status = 'processing'",
                )
                .bind(error)
                .bind(visible_at)
                .bind(now)
                .bind(&claimed.id)
                .bind(&claimed.lease)
                .execute(&self.db),
            )
            .await?
        } else {
            self.write(
                sqlx::query(
                    "UPDATE jobs SET status = 'failed', error = $1, lease = NULL, \
                 updated_at_ms = $2, finished_at_ms = $2 \
                 WHERE id = $3 AND lease = $4 AND status = 'processing'",
                )
                .bind(error)
                .bind(now)
                .bind(&claimed.id)
                .bind(&claimed.lease)
                .execute(&self.db),
            )
            .await?
        };
        if changed.rows_affected() == 0 {
            return Ok(FailOutcome::LeaseLost);
        }
        if retry {
            self.delivery
                .offer_at(&claimed.id, claimed.priority, visible_at)
                .await?;
        }
        self.acknowledge(claimed).await?;
        Ok(if retry {
            FailOutcome::Retrying
        } else {
            FailOutcome::DeadLettered
        })
    }

    /// Gives a job back unfinished (shutdown): visible at once, and the attempt
    /// it was on does not count.
    pub async fn release(&self, claimed: &Claimed) -> Result<bool, JobError> {
        let now = now_ms();
        let done = self
            .write(
                sqlx::query(
                    "UPDATE jobs SET status = 'queued', attempts = attempts - 1, lease = NULL, \
             visible_at_ms = $1, updated_at_ms = $1 \
             WHERE id = $2 AND lease = $3 AND status = 'processing'",
                )
                .bind(now)
                .bind(&claimed.id)
                .bind(&claimed.lease)
                .execute(&self.db),
            )
            .await?
            .rows_affected();
        if done == 1 {
            self.delivery.offer(&claimed.id, claimed.priority).await?;
            self.acknowledge(claimed).await?;
        }
        Ok(done == 1)
    }

    /// The dead-letter queue, most recently failed first.
    pub async fn dead(&self, limit: u32) -> Result<Vec<Job>, JobError> {
        let rows = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE status = 'failed' \
             ORDER BY finished_at_ms DESC, id LIMIT $1"
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.db)
        .await?;
        Ok(rows.iter().map(job).collect::<Result<_, _>>()?)
    }

    /// Puts a dead-lettered job back in the queue with its attempts reset.
    pub async fn redrive(&self, id: &str) -> Result<Job, JobError> {
        let now = now_ms();
        let changed = self
            .write(
                sqlx::query(
                    "UPDATE jobs SET status = 'queued', attempts = 0, error = NULL, \
             finished_at_ms = NULL, visible_at_ms = $1, updated_at_ms = $1 \
             WHERE id = $2 AND status = 'failed'",
                )
                .bind(now)
                .bind(id)
                .execute(&self.db),
            )
            .await?
            .rows_affected();
        let job = self.get(None, id).await?;
        if changed == 1 {
            self.delivery.offer(&job.id, job.priority).await?;
            self.submitted.notify_one();
        }
        Ok(job)
    }

    /// Deletes finished jobs past their retention; returns how many. With
    /// Redis Streams, also offers again jobs that should have run long ago
    /// (an entry lost with Redis, or a crash between insert and offer).
    pub async fn clean_up(&self) -> Result<u64, JobError> {
        let now = now_ms();
        if self.delivery.can_lose_offers() {
            let overdue = now.saturating_sub(duration_ms(self.settings.visibility_timeout));
            let rows = self.write(sqlx::query(
                "UPDATE jobs SET updated_at_ms = $1 WHERE status IN ('queued', 'processing') \
                 AND visible_at_ms <= $1 AND updated_at_ms < $2 RETURNING id, priority",
            )
            .bind(now)
            .bind(overdue)
            .fetch_all(&self.db))
            .await?;
            for row in &rows {
                let id: String = row.try_get("id")?;
                self.delivery
                    .offer(&id, Priority::from_rank(row.try_get("priority")?))
                    .await?;
            }
            if !rows.is_empty() {
                tracing::info!(event = "jobs_offered_again", jobs = rows.len(), "sweep");
            }
        }
        let finished = self.write(sqlx::query(
            "DELETE FROM jobs WHERE status IN ('completed', 'cancelled') AND finished_at_ms < $1",
        )
        .bind(now.saturating_sub(duration_ms(self.settings.retention)))
        .execute(&self.db))
        .await?
        .rows_affected();
        let dead = self
            .write(
                sqlx::query("DELETE FROM jobs WHERE status = 'failed' AND finished_at_ms < $1")
                    .bind(now.saturating_sub(duration_ms(self.settings.dead_retention)))
                    .execute(&self.db),
            )
            .await?
            .rows_affected();
        Ok(finished + dead)
    }

    pub async fn stats(&self) -> Result<QueueStats, JobError> {
        let rows = sqlx::query(
            "SELECT status, COUNT(*) AS jobs, MIN(created_at_ms) AS oldest FROM jobs \
             WHERE status IN ('queued', 'processing', 'failed') GROUP BY status",
        )
        .fetch_all(&self.db)
        .await?;
        let mut stats = QueueStats::default();
        for row in &rows {
            let count: i64 = row.try_get("jobs")?;
            match row.try_get::<String, _>("status")?.as_str() {
                "queued" => {
                    stats.queued = count;
                    let oldest: Option<i64> = row.try_get("oldest")?;
                    stats.oldest_queued_age_ms =
                        oldest.map_or(0, |oldest| (now_ms() - oldest).max(0));
                }
                "processing" => stats.processing = count,
                _ => stats.dead = count,
            }
        }
        Ok(stats)
    }
}
