//! Stored responses, owned by one subject each: every query names the
//! owner, so another subject's response is simply not found.

use crate::clock::now_ms;
use crate::db::Db;
use serde_json::Value;
use sqlx::Row;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("a stored response is not valid JSON: {0}")]
    Corrupt(#[from] serde_json::Error),
}

/// A stored response and the input items it was generated from.
pub struct Stored {
    pub response: Value,
    pub context: Vec<Value>,
}

#[derive(Clone)]
pub struct ResponseStore {
    db: Db,
}

impl ResponseStore {
    pub fn new(db: Db) -> ResponseStore {
        ResponseStore { db }
    }

    pub async fn save(
        &self,
        subject: &str,
        response: &Value,
        context: &[Value],
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO responses (id, subject, body, context, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(response["id"].as_str().unwrap_or_default())
        .bind(subject)
        .bind(response.to_string())
        .bind(serde_json::to_string(context)?)
        .bind(now_ms())
        .execute(&self.db)
        .await?;
        metrics::counter!("sluice_db_queries_total", "query" => "response_write").increment(1);
        Ok(())
    }

    pub async fn get(&self, subject: &str, id: &str) -> Result<Option<Stored>, StoreError> {
        metrics::counter!("sluice_db_queries_total", "query" => "response_read").increment(1);
        let row = sqlx::query("SELECT body, context FROM responses WHERE id = $1 AND subject = $2")
            .bind(id)
            .bind(subject)
            .fetch_optional(&self.db)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let body: String = row.try_get("body")?;
        let context: String = row.try_get("context")?;
        Ok(Some(Stored {
            response: serde_json::from_str(&body)?,
            context: serde_json::from_str(&context)?,
        }))
    }

    /// Deletes the subject's response; false when it had none of that id.
    pub async fn delete(&self, subject: &str, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM responses WHERE id = $1 AND subject = $2")
            .bind(id)
            .bind(subject)
            .execute(&self.db)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}
