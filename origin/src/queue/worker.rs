//! Workers: claim jobs, generate, store the result. On shutdown they stop
//! claiming, give running jobs the drain time to finish, and release the rest
//! so another worker picks them up at once instead of after the visibility
//! timeout.
//!
//! Each worker is supervised: a panic (a bug, somewhere below the job) fails
//! the job it was running as one retryable attempt, so it goes back to the
//! queue at once (and to the dead-letter queue when it keeps doing that,
//! instead of taking workers down forever), and the worker starts again after
//! a backoff that doubles up to 30 s and resets once it has run a minute.

use crate::budgets::{BudgetError, Payer};
use crate::generation::GenerateError;
use crate::generation::{Generate, GenerationService, Surface};
use crate::openai::ChatRequest;
use crate::queue::store::{Claimed, FailOutcome, JobQueue};
use crate::routing::RouteError;
use futures::FutureExt;
use serde_json::Value;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::watch;

/// What workers need besides the queue.
#[derive(Clone)]
pub struct Runner {
    pub queue: JobQueue,
    pub generation: GenerationService,
    pub load: Arc<WorkerLoad>,
}

/// Busy and idle workers of this process, for the gauges, `/ready` and the
/// status page.
#[derive(Debug, Default)]
pub struct WorkerLoad {
    busy: AtomicUsize,
    total: AtomicUsize,
}

impl WorkerLoad {
    pub fn busy(&self) -> usize {
        self.busy.load(Ordering::Relaxed)
    }

    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    fn publish(&self) {
        let busy = self.busy();
        metrics::gauge!("sluice_queue_workers_busy").set(busy as f64);
        metrics::gauge!("sluice_queue_workers_idle").set(self.total().saturating_sub(busy) as f64);
    }

    fn set_total(&self, total: usize) {
        self.total.store(total, Ordering::Relaxed);
        self.publish();
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::Relaxed);
        self.publish();
        Busy(Arc::clone(self))
    }
}

/// One worker's busy spell; ends when dropped, whatever path the job took.
struct Busy(Arc<WorkerLoad>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
        self.0.publish();
    }
}

#[derive(Debug, Clone, Copy)]
pub struct WorkerSettings {
    pub concurrency: usize,
    pub poll_interval: Duration,
    pub drain_timeout: Duration,
    pub cleanup_interval: Duration,
}

/// A failed run: the message kept on the job, and whether trying again may help.
struct RunError {
    message: String,
    retryable: bool,
}

impl Runner {
    async fn run_job(&self, job: &Claimed) -> Result<Value, RunError> {
        let request: ChatRequest = serde_json::from_str(&job.request).map_err(|e| RunError {
            message: format!("the stored request is unreadable: {e}"),
            retryable: false,
        })?;
        let generate = Generate {
            surface: Surface::Job,
            request: Arc::new(request),
            payer: Payer {
                subject: job.subject.clone(),
                key_id: job.key_id.clone(),
            },
            priority: job.priority,
            fingerprint: job.request.clone().into(),
            refuses_cache: false,
        };
        let completion = self
            .generation
            .complete(generate)
            .await
            .map_err(|e| RunError {
                // Out of budget is not retried: the budget resets on its
                // period, not within a backoff; the job can be redriven.
                retryable: !matches!(
                    e,
                    GenerateError::Route(RouteError::UnknownModel(_) | RouteError::Rejected(_))
                        | GenerateError::Budget(BudgetError::Exceeded(_))
                ),
                message: e.to_string(),
            })?;
        serde_json::to_value(completion.body).map_err(|e| RunError {
            message: e.to_string(),
            retryable: false,
        })
    }

    /// Runs one claimed job to its end, or releases it when shutdown's drain
    /// time runs out first.
    async fn process(&self, job: Claimed, shutdown: &mut watch::Receiver<bool>, drain: Duration) {
        let started = std::time::Instant::now();
        let run = self.run_job(&job);
        tokio::pin!(run);
        let outcome = tokio::select! {
            outcome = &mut run => Some(outcome),
            _ = stopping(shutdown) => tokio::time::timeout(drain, &mut run).await.ok(),
        };
        let label = match outcome {
            None => match self.queue.release(&job).await {
                Ok(_) => "released",
                Err(e) => {
                    tracing::error!(event = "job_release_failed", job = %job.id, error = %e,
                        "the job comes back after its visibility timeout");
                    "release_failed"
                }
            },
            Some(Ok(result)) => match self.queue.complete(&job, &result).await {
                Ok(true) => "completed",
                Ok(false) => "lease_lost",
                Err(e) => {
                    tracing::error!(event = "job_store_failed", job = %job.id, error = %e,
                        "result not stored; the job runs again after its visibility timeout");
                    "store_failed"
                }
            },
            Some(Err(error)) => {
                match self.queue.fail(&job, &error.message, error.retryable).await {
                    Ok(FailOutcome::Retrying) => "retrying",
                    Ok(FailOutcome::DeadLettered) => "dead_lettered",
                    Ok(FailOutcome::LeaseLost) => "lease_lost",
                    Err(e) => {
                        tracing::error!(event = "job_store_failed", job = %job.id, error = %e,
                            "failure not stored; the job runs again after its visibility timeout");
                        "store_failed"
                    }
                }
            }
        };
        tracing::info!(event = "job_finished", job = %job.id, outcome = label,
            attempt = job.attempts, elapsed_ms = started.elapsed().as_millis() as u64, "job");
        metrics::counter!("sluice_jobs_processed_total", "outcome" => label).increment(1);
        metrics::histogram!("sluice_job_processing_duration_seconds", "outcome" => label)
            .record(started.elapsed().as_secs_f64());
    }
}

/// First wait after a worker panics; doubled per panic in a row, up to the max.
const RESTART_BACKOFF: Duration = Duration::from_millis(100);
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A worker that ran this long before it panicked starts again at once.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// One worker, started again whenever it panics, until shutdown.
async fn supervised(runner: Runner, settings: WorkerSettings, mut shutdown: watch::Receiver<bool>) {
    let mut backoff = RESTART_BACKOFF;
    loop {
        let started = std::time::Instant::now();
        let ran = AssertUnwindSafe(worker(&runner, settings, shutdown.clone()))
            .catch_unwind()
            .await;
        let Err(panic) = ran else {
            return;
        };
        if started.elapsed() >= HEALTHY_RUN {
            backoff = RESTART_BACKOFF;
        }
        tracing::error!(event = "worker_restarted", panic = %panic_message(&panic),
            backoff_ms = backoff.as_millis() as u64, "a worker panicked; starting it again");
        metrics::counter!("sluice_queue_worker_restarts_total").increment(1);
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stopping(&mut shutdown) => return,
        }
        backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
    }
}

/// Claims and runs jobs until shutdown.
async fn worker(runner: &Runner, settings: WorkerSettings, mut shutdown: watch::Receiver<bool>) {
    while !*shutdown.borrow() {
        match runner.queue.claim().await {
            Ok(Some(job)) => {
                let _busy = runner.load.begin();
                let processed = AssertUnwindSafe(runner.process(
                    job.clone(),
                    &mut shutdown,
                    settings.drain_timeout,
                ))
                .catch_unwind()
                .await;
                if let Err(panic) = processed {
                    let message = format!("the worker panicked: {}", panic_message(&panic));
                    match runner.queue.fail(&job, &message, true).await {
                        Ok(outcome) => tracing::warn!(event = "job_failed_by_panic",
                            job = %job.id, outcome = ?outcome, "job"),
                        Err(e) => tracing::error!(event = "job_store_failed", job = %job.id,
                            error = %e, "the job comes back after its visibility timeout"),
                    }
                    metrics::counter!("sluice_jobs_processed_total", "outcome" => "panicked")
                        .increment(1);
                    std::panic::resume_unwind(panic);
                }
            }
            Ok(None) => {
                tokio::select! {
                    _ = runner.queue.submitted() => {}
                    _ = tokio::time::sleep(settings.poll_interval) => {}
                    _ = stopping(&mut shutdown) => {}
                }
            }
            Err(e) => {
                tracing::warn!(event = "job_claim_failed", error = %e, "queue unavailable");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stopping(&mut shutdown) => {}
                }
            }
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// Resolves once shutdown is signalled (or its sender is gone).
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Runs `settings.concurrency` workers and the retention cleanup until
/// `shutdown` turns true; returns when every running job has been finished
/// or released.
pub async fn run(runner: Runner, settings: WorkerSettings, shutdown: watch::Receiver<bool>) {
    let mut tasks = tokio::task::JoinSet::new();
    runner.load.set_total(settings.concurrency);
    for _ in 0..settings.concurrency {
        tasks.spawn(supervised(runner.clone(), settings, shutdown.clone()));
    }
    let queue = runner.queue.clone();
    let mut cleanup_shutdown = shutdown.clone();
    tasks.spawn(async move {
        loop {
            match queue.clean_up().await {
                Ok(0) => {}
                Ok(removed) => tracing::info!(event = "jobs_cleaned_up", removed, "retention"),
                Err(e) => tracing::warn!(event = "job_cleanup_failed", error = %e, "retention"),
            }
            tokio::select! {
                _ = tokio::time::sleep(settings.cleanup_interval) => {}
                _ = stopping(&mut cleanup_shutdown) => return,
            }
        }
    });
    while tasks.join_next().await.is_some() {}
    runner.load.set_total(0);
}
