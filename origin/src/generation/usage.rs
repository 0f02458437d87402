//! Usage records (tokens and cost per call) written to the database off the
//! request path: handlers hand records to a bounded channel, one task writes
//! them in batches. A full channel drops the record and counts it rather than
//! slowing generation down.

use crate::budgets::Hold;
use crate::clock::now_ms;
use crate::db::Db;
use crate::openai::Usage;
use crate::routing::Deployment;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Records waiting to be written before new ones are dropped.
const BACKLOG: usize = 10_000;
/// Records written per transaction at most.
const BATCH: usize = 256;

#[derive(Debug, Clone, PartialEq)]
pub struct UsageRecord {
    pub subject: String,
    pub key_id: Option<String>,
    pub team_id: Option<String>,
    pub model: String,
    pub deployment: String,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub estimated: bool,
    pub cost_usd: f64,
}

/// What the writer task receives: records, and requests to say when every
/// record sent before has been written.
enum Message {
    Record(UsageRecord),
    Flush(oneshot::Sender<()>),
}

/// How long shutdown waits for buffered records to be written.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct UsageLog {
    /// `None` for a log that keeps nothing (the stand-alone simulator).
    records: Option<mpsc::Sender<Message>>,
}

impl UsageLog {
    /// Starts the writer task; needs a Tokio runtime.
    pub fn start(db: Db) -> UsageLog {
        let (records, receiver) = mpsc::channel(BACKLOG);
        tokio::spawn(write_batches(db, receiver));
        UsageLog {
            records: Some(records),
        }
    }

    pub fn discard() -> UsageLog {
        UsageLog { records: None }
    }

    pub fn record(&self, record: UsageRecord) {
        let Some(records) = &self.records else { return };
        if records.try_send(Message::Record(record)).is_err() {
            metrics::counter!("sluice_usage_records_dropped_total").increment(1);
            tracing::warn!(
                event = "usage_record_dropped",
                "usage writer is behind; record dropped"
            );
        }
    }

    /// Waits (bounded) until every record handed over so far is written; on
    /// shutdown, so that no finished request's usage is lost.
    pub async fn flush(&self) {
        let Some(records) = &self.records else { return };
        let (done, written) = oneshot::channel();
        let flushed = async {
            records.send(Message::Flush(done)).await.ok()?;
            written.await.ok()
        };
        if tokio::time::timeout(FLUSH_TIMEOUT, flushed).await.is_err() {
            tracing::warn!(
                event = "usage_flush_timeout",
                "usage records still buffered at shutdown"
            );
        }
    }
}

async fn write_batches(db: Db, mut receiver: mpsc::Receiver<Message>) {
    let mut messages = Vec::with_capacity(BATCH);
    let mut batch = Vec::with_capacity(BATCH);
    while receiver.recv_many(&mut messages, BATCH).await > 0 {
        let mut flushes = Vec::new();
        for message in messages.drain(..) {
            match message {
                Message::Record(record) => batch.push(record),
                Message::Flush(done) => flushes.push(done),
            }
        }
        if !batch.is_empty()
            && let Err(e) = write(&db, &batch).await
        {
            metrics::counter!("sluice_usage_records_dropped_total").increment(batch.len() as u64);
            tracing::error!(event = "usage_write_failed", error = %e, records = batch.len(),
                "usage records not written");
        }
        batch.clear();
        for done in flushes {
            let _ = done.send(());
        }
    }
}

async fn write(db: &Db, batch: &[UsageRecord]) -> Result<(), sqlx::Error> {
    let now = now_ms();
    let mut tx = db.begin().await?;
    for record in batch {
        sqlx::query(
            "INSERT INTO usage_records (id, subject, model, deployment, prompt_tokens, \
             completion_tokens, estimated, cost_microdollars, created_at_ms, key_id, team_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(uuid::Uuid::new_v4().simple().to_string())
        .bind(&record.subject)
        .bind(&record.model)
        .bind(&record.deployment)
        .bind(i64::from(record.prompt_tokens))
        .bind(i64::from(record.completion_tokens))
        .bind(record.estimated)
        .bind(crate::budgets::microdollars(record.cost_usd))
        .bind(now)
        .bind(record.key_id.as_deref())
        .bind(record.team_id.as_deref())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

/// Usage and cost of one call: logged as an event, counted in metrics and
/// kept as a usage record of whom `hold` charges.
pub fn record_usage(
    log: &UsageLog,
    hold: &Hold,
    model: &str,
    deployment: &Deployment,
    usage: Usage,
    estimated: bool,
) -> f64 {
    let cost = deployment.pricing.cost_usd(usage);
    let subject = hold.payer.subject.as_str();
    tracing::info!(event = "usage", subject, model, deployment = %deployment.name,
        provider = deployment.provider.kind(), prompt_tokens = usage.prompt_tokens,
        completion_tokens = usage.completion_tokens, estimated, cost_usd = cost, "usage");
    let labels = [("deployment", deployment.name.clone())];
    metrics::counter!("sluice_prompt_tokens_total", &labels)
        .increment(u64::from(usage.prompt_tokens));
    metrics::counter!("sluice_completion_tokens_total", &labels)
        .increment(u64::from(usage.completion_tokens));
    metrics::counter!("sluice_cost_microdollars_total", &labels)
        .increment((cost * 1e6).round() as u64);
    log.record(UsageRecord {
        subject: subject.to_string(),
        key_id: hold.payer.key_id.clone(),
        team_id: hold.team.clone(),
        model: model.to_string(),
        deployment: deployment.name.clone(),
        prompt_tokens: usage.prompt_tokens,
        completion_tokens: usage.completion_tokens,
        estimated,
        cost_usd: cost,
    });
    cost
}
