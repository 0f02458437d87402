//! Stored responses, owned by one subject each: every query names the
//! owner, so another subject's response is simply not found.

use crate::clock::now_ms;
use crate::db::Db;
use serde_json::Value;
use sqlx::Row;
use std::collections::HashMap;

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

    /// Stores a response, the items it was generated from (`context`,
    /// earlier turns' included), and by id each of `new_items` (this call's
    /// input and the response's output), which a later `item_reference`
    /// names; an id stored before keeps its first item.
    pub async fn save(
        &self,
        subject: &str,
        response: &Value,
        context: &[Value],
        new_items: &[Value],
    ) -> Result<(), StoreError> {
        let id = response["id"].as_str().unwrap_or_default();
        let mut tx = self.db.begin().await?;
        sqlx::query(
            "INSERT INTO responses (id, subject, body, context, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(subject)
        .bind(response.to_string())
        .bind(serde_json::to_string(context)?)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        let items: Vec<(&str, &Value)> = new_items
            .iter()
            .filter_map(|item| Some((item["id"].as_str()?, item)))
            .collect();
        // Both engines take multi-row VALUES; 4 parameters a row keeps a
        // batch far under SQLite's parameter limit.
        for batch in items.chunks(200) {
            let rows: Vec<String> = (0..batch.len())
                .map(|i| {
                    format!(
                        "(${}, ${}, ${}, ${})",
                        4 * i + 1,
                        4 * i + 2,
                        4 * i + 3,
                        4 * i + 4
                    )
                })
                .collect();
            let sql = format!(
                "INSERT INTO response_items (subject, id, response_id, item) VALUES {} \
                 ON CONFLICT (subject, id) DO NOTHING",
                rows.join(", ")
            );
            let mut query = sqlx::query(&sql);
            for (item_id, item) in batch {
                query = query
                    .bind(subject)
                    .bind(*item_id)
                    .bind(id)
                    .bind(item.to_string());
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        metrics::counter!("sluice_db_queries_total", "query" => "response_write").increment(1);
        Ok(())
    }

    /// The caller's stored items of these ids (those it has).
    pub async fn items(
        &self,
        subject: &str,
        ids: &[String],
    ) -> Result<HashMap<String, Value>, StoreError> {
        let mut found = HashMap::new();
        for batch in ids.chunks(200) {
            let placeholders: Vec<String> =
                (0..batch.len()).map(|i| format!("${}", i + 2)).collect();
            let sql = format!(
                "SELECT id, item FROM response_items WHERE subject = $1 AND id IN ({})",
                placeholders.join(", ")
            );
            let mut query = sqlx::query(&sql).bind(subject);
            for id in batch {
                query = query.bind(id.as_str());
            }
            metrics::counter!("sluice_db_queries_total", "query" => "response_items_read")
                .increment(1);
            for row in query.fetch_all(&self.db).await? {
                let id: String = row.try_get("id")?;
                let item: String = row.try_get("item")?;
                found.insert(id, serde_json::from_str(&item)?);
            }
        }
        Ok(found)
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

    /// Deletes the subject's response and the items it stored; false when
    /// it had none of that id.
    pub async fn delete(&self, subject: &str, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.db.begin().await?;
        let done = sqlx::query("DELETE FROM responses WHERE id = $1 AND subject = $2")
            .bind(id)
            .bind(subject)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM response_items WHERE response_id = $1 AND subject = $2")
            .bind(id)
            .bind(subject)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }
}
