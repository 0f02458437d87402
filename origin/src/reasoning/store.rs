//! Where kept reasoning lives: the database every origin replica shares, so
//! the next step of a tool loop finds it whichever replica serves it.

use crate::clock::now_ms;
use crate::db::Db;
use crate::openai::ChatRequest;
use serde_json::Value;
use sqlx::Row;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("kept reasoning is not valid JSON: {0}")]
    Corrupt(#[from] serde_json::Error),
}

#[derive(Clone)]
pub struct ReasoningStore {
    db: Db,
    keep: Duration,
    max_entry_bytes: usize,
}

impl ReasoningStore {
    pub fn new(db: Db, config: &crate::config::ReasoningConfig) -> ReasoningStore {
        ReasoningStore {
            db,
            keep: Duration::from_secs(config.keep_secs),
            max_entry_bytes: config.max_entry_bytes,
        }
    }

    /// Keeps the thinking `blocks` that led to tool call `call_id`; too
    /// large ones are not kept (counted).
    pub async fn remember(
        &self,
        subject: &str,
        call_id: &str,
        blocks: &Value,
    ) -> Result<(), StoreError> {
        let text = blocks.to_string();
        if text.len() > self.max_entry_bytes {
            metrics::counter!("sluice_reasoning_kept_total", "outcome" => "too_large").increment(1);
            return Ok(());
        }
        let expires = now_ms() + self.keep.as_millis() as i64;
        sqlx::query(
            "INSERT INTO reasoning_state (subject, call_id, blocks, expires_at_ms) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (subject, call_id) \
             DO UPDATE SET blocks = excluded.blocks, expires_at_ms = excluded.expires_at_ms",
        )
        .bind(subject)
        .bind(call_id)
        .bind(text)
        .bind(expires)
        .execute(&self.db)
        .await?;
        metrics::counter!("sluice_reasoning_kept_total", "outcome" => "kept").increment(1);
        Ok(())
    }

    /// Keeps what an answer's trace yielded, logging a failure: a request
    /// already answered is not failed for it.
    pub async fn remember_logged(&self, subject: &str, kept: Option<(String, Value)>) {
        let Some((call, blocks)) = kept else { return };
        if let Err(error) = self.remember(subject, &call, &blocks).await {
            tracing::warn!(event = "reasoning_keep_failed", error = %error,
                "thinking for a tool loop could not be kept");
        }
    }

    pub async fn recall(&self, subject: &str, call_id: &str) -> Result<Option<Value>, StoreError> {
        let row = sqlx::query(
            "SELECT blocks FROM reasoning_state \
             WHERE subject = $1 AND call_id = $2 AND expires_at_ms > $3",
        )
        .bind(subject)
        .bind(call_id)
        .bind(now_ms())
        .fetch_optional(&self.db)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let text: String = row.try_get("blocks")?;
        Ok(Some(serde_json::from_str(&text)?))
    }

    /// The request with the thinking kept for its tool loop put back on its
    /// last assistant message (see `super::missing_thinking`); unchanged
    /// when nothing was kept or the store cannot be read (the provider then
    /// goes on without thinking).
    pub async fn restore(&self, subject: &str, request: Arc<ChatRequest>) -> Arc<ChatRequest> {
        let Some(call) = super::missing_thinking(&request) else {
            return request;
        };
        let blocks = match self.recall(subject, call).await {
            Ok(Some(blocks)) => blocks,
            Ok(None) => {
                metrics::counter!("sluice_reasoning_restored_total", "outcome" => "none")
                    .increment(1);
                return request;
            }
            Err(error) => {
                tracing::warn!(event = "reasoning_recall_failed", error = %error);
                return request;
            }
        };
        metrics::counter!("sluice_reasoning_restored_total", "outcome" => "restored").increment(1);
        let mut restored = (*request).clone();
        if let Some(last) = restored
            .messages
            .iter_mut()
            .rev()
            .find(|m| m.role == crate::openai::Role::Assistant)
        {
            last.extra.insert("thinking_blocks".into(), blocks);
        }
        Arc::new(restored)
    }

    /// Deletes expired entries every minute. Runs forever.
    pub async fn sweep_forever(self) {
        let mut every = tokio::time::interval(Duration::from_secs(60));
        loop {
            every.tick().await;
            if let Err(error) = self.sweep().await {
                tracing::warn!(event = "reasoning_sweep_failed", error = %error);
            }
        }
    }

    /// Deletes expired entries; how many.
    pub async fn sweep(&self) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM reasoning_state WHERE expires_at_ms <= $1")
            .bind(now_ms())
            .execute(&self.db)
            .await?;
        Ok(done.rows_affected())
    }
}
