//! Conversations and their messages, owned by one subject each. Every query
//! names the owner, so another subject's conversation is simply not found.
//! Reads go through the origin cache in the owner's scope; every write
//! invalidates that scope.

use crate::cache::OriginCache;
use crate::clock::now_ms;
use crate::db::Db;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Cloneable, so callers sharing one cached load can each get the error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConversationError {
    #[error("database: {0}")]
    Sql(Arc<sqlx::Error>),
    #[error("no such conversation")]
    NotFound,
    #[error("malformed cursor")]
    BadCursor,
}

impl From<sqlx::Error> for ConversationError {
    fn from(e: sqlx::Error) -> ConversationError {
        ConversationError::Sql(Arc::new(e))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, sqlx::FromRow)]
pub struct Conversation {
    pub id: String,
    pub object: String,
    pub title: String,
    pub model: Option<String>,
    pub system_prompt: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, sqlx::FromRow)]
pub struct Message {
    pub id: String,
    pub object: String,
    pub conversation_id: String,
    pub seq: i64,
    pub role: String,
    pub content: String,
    pub created_at_ms: i64,
}

/// One page of a listing; `next_cursor` is `None` on the last page.
#[derive(Debug, Serialize, Deserialize)]
pub struct Page<T> {
    pub object: String,
    pub data: Vec<T>,
    pub has_more: bool,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    fn from_rows(mut data: Vec<T>, limit: u32, cursor: impl Fn(&T) -> String) -> Page<T> {
        let has_more = data.len() > limit as usize;
        data.truncate(limit as usize);
        let next_cursor = if has_more {
            data.last().map(cursor)
        } else {
            None
        };
        Page {
            object: "list".into(),
            data,
            has_more,
            next_cursor,
        }
    }
}

/// Page size when the client names none (and the one cache warm-up loads).
pub const DEFAULT_PAGE_LIMIT: u32 = 20;

pub struct NewConversation<'a> {
    pub title: &'a str,
    pub model: Option<&'a str>,
    pub system_prompt: Option<&'a str>,
}

#[derive(Clone)]
pub struct ConversationStore {
    db: Db,
    cache: OriginCache,
    /// Read queries sent to the database (cache misses), for benchmarks.
    reads: Arc<AtomicU64>,
}

/// The columns `Conversation` and `Message` are read from (`FromRow`), the
/// API's `object` name included as a constant.
const CONVERSATION_COLUMNS: &str =
    "'conversation' AS object, id, title, model, system_prompt, created_at_ms, updated_at_ms";
const MESSAGE_COLUMNS: &str =
    "'conversation.message' AS object, id, conversation_id, seq, role, content, created_at_ms";

/// Conversation cursors are `created_at_ms.id` of the last row shown: stable
/// while rows are added, unlike offsets.
fn conversation_cursor(c: &Conversation) -> String {
    format!("{}.{}", c.created_at_ms, c.id)
}

fn parse_conversation_cursor(cursor: &str) -> Result<(i64, &str), ConversationError> {
    let (created, id) = cursor.split_once('.').ok_or(ConversationError::BadCursor)?;
    Ok((
        created.parse().map_err(|_| ConversationError::BadCursor)?,
        id,
    ))
}

impl ConversationStore {
    pub fn new(db: Db, cache: OriginCache) -> ConversationStore {
        ConversationStore {
            db,
            cache,
            reads: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Read queries sent to the database so far.
    pub fn database_reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    fn count_read(&self) {
        self.reads.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("sluice_db_queries_total", "query" => "conversation_read").increment(1);
    }

    pub async fn create(
        &self,
        subject: &str,
        new: NewConversation<'_>,
    ) -> Result<Conversation, ConversationError> {
        let now = now_ms();
        let id = format!("conv_{}", uuid::Uuid::now_v7().simple());
        sqlx::query(
            "INSERT INTO conversations (id, subject, title, model, system_prompt, created_at_ms, updated_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $6)",
        )
        .bind(&id)
        .bind(subject)
        .bind(new.title)
        .bind(new.model)
        .bind(new.system_prompt)
        .bind(now)
        .execute(&self.db)
        .await?;
        self.cache.invalidate(subject).await;
        Ok(Conversation {
            id,
            object: "conversation".into(),
            title: new.title.to_string(),
            model: new.model.map(str::to_string),
            system_prompt: new.system_prompt.map(str::to_string),
            created_at_ms: now,
            updated_at_ms: now,
        })
    }

    /// The subject's conversations, newest first.
    pub async fn list(
        &self,
        subject: &str,
        limit: u32,
        after: Option<&str>,
    ) -> Result<Page<Conversation>, ConversationError> {
        let key = format!("list:{limit}:{}", after.unwrap_or(""));
        self.cache
            .get_or_load(subject, &key, || self.list_uncached(subject, limit, after))
            .await
            .map_err(Arc::unwrap_or_clone)
    }

    async fn list_uncached(
        &self,
        subject: &str,
        limit: u32,
        after: Option<&str>,
    ) -> Result<Page<Conversation>, ConversationError> {
        self.count_read();
        let fetch = i64::from(limit) + 1;
        let data: Vec<Conversation> = match after {
            None => {
                sqlx::query_as(&format!(
                    "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE subject = $1 \
                     ORDER BY created_at_ms DESC, id DESC LIMIT $2"
                ))
                .bind(subject)
                .bind(fetch)
                .fetch_all(&self.db)
                .await?
            }
            Some(cursor) => {
                let (created, id) = parse_conversation_cursor(cursor)?;
                sqlx::query_as(&format!(
                    "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE subject = $1 \
                     AND (created_at_ms < $2 OR (created_at_ms = $2 AND id < $3)) \
                     ORDER BY created_at_ms DESC, id DESC LIMIT $4"
                ))
                .bind(subject)
                .bind(created)
                .bind(id)
                .bind(fetch)
                .fetch_all(&self.db)
                .await?
            }
        };
        Ok(Page::from_rows(data, limit, conversation_cursor))
    }

    pub async fn get(&self, subject: &str, id: &str) -> Result<Conversation, ConversationError> {
        self.cache
            .get_or_load(subject, &format!("get:{id}"), || {
                self.get_uncached(subject, id)
            })
            .await
            .map_err(Arc::unwrap_or_clone)
    }

    async fn get_uncached(
        &self,
        subject: &str,
        id: &str,
    ) -> Result<Conversation, ConversationError> {
        self.count_read();
        let conversation: Conversation = sqlx::query_as(&format!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = $1 AND subject = $2"
        ))
        .bind(id)
        .bind(subject)
        .fetch_optional(&self.db)
        .await?
        .ok_or(ConversationError::NotFound)?;
        Ok(conversation)
    }

    /// Deletes the conversation and (by cascade) its messages. The
    /// transaction writes first: on SQLite one that reads and then writes
    /// fails at once (`SQLITE_BUSY`) when another connection wrote between.
    pub async fn delete(&self, subject: &str, id: &str) -> Result<(), ConversationError> {
        let mut tx = self.db.begin().await?;
        // SQLite enforces the cascade only with `foreign_keys` on, which the pool
        // sets; deleting explicitly keeps this correct without relying on it.
        sqlx::query(
            "DELETE FROM messages WHERE conversation_id = $1 AND EXISTS \
             (SELECT 1 FROM conversations WHERE id = $1 AND subject = $2)",
        )
        .bind(id)
        .bind(subject)
        .execute(&mut *tx)
        .await?;
        let deleted = sqlx::query("DELETE FROM conversations WHERE id = $1 AND subject = $2")
            .bind(id)
            .bind(subject)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Err(ConversationError::NotFound);
        }
        tx.commit().await?;
        self.cache.invalidate(subject).await;
        Ok(())
    }

    /// The conversation's messages, oldest first; cursors are sequence numbers.
    pub async fn messages(
        &self,
        subject: &str,
        id: &str,
        limit: u32,
        after: Option<&str>,
    ) -> Result<Page<Message>, ConversationError> {
        let key = format!("messages:{id}:{limit}:{}", after.unwrap_or(""));
        self.cache
            .get_or_load(subject, &key, || {
                self.messages_uncached(subject, id, limit, after)
            })
            .await
            .map_err(Arc::unwrap_or_clone)
    }

    async fn messages_uncached(
        &self,
        subject: &str,
        id: &str,
        limit: u32,
        after: Option<&str>,
    ) -> Result<Page<Message>, ConversationError> {
        self.get(subject, id).await?;
        let after: i64 = match after {
            None => 0,
            Some(cursor) => cursor.parse().map_err(|_| ConversationError::BadCursor)?,
        };
        self.count_read();
        let data: Vec<Message> = sqlx::query_as(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 AND seq > $2 \
             ORDER BY seq LIMIT $3"
        ))
        .bind(id)
        .bind(after)
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.db)
        .await?;
        Ok(Page::from_rows(data, limit, |m: &Message| {
            m.seq.to_string()
        }))
    }

    /// Subjects with the most recently active conversations, busiest first.
    pub async fn active_subjects(&self, limit: u32) -> Result<Vec<String>, ConversationError> {
        let rows = sqlx::query(
            "SELECT subject, MAX(updated_at_ms) AS last FROM conversations \
             GROUP BY subject ORDER BY last DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.db)
        .await?;
        Ok(rows
            .iter()
            .map(|row| row.try_get("subject"))
            .collect::<Result<_, _>>()?)
    }

    /// Loads what a client opening the app reads first into the cache: the
    /// first page of each subject's conversations and of their messages.
    /// Returns how many pages were loaded.
    pub async fn warm(&self, subjects: &[String]) -> Result<usize, ConversationError> {
        let mut pages = 0;
        for subject in subjects {
            let list = self.list(subject, DEFAULT_PAGE_LIMIT, None).await?;
            pages += 1;
            for conversation in &list.data {
                self.messages(subject, &conversation.id, DEFAULT_PAGE_LIMIT, None)
                    .await?;
                pages += 1;
            }
        }
        Ok(pages)
    }

    /// The last `limit` messages, oldest first: the context for a reply.
    pub async fn history(
        &self,
        conversation_id: &str,
        limit: u32,
    ) -> Result<Vec<Message>, ConversationError> {
        let mut messages: Vec<Message> = sqlx::query_as(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 \
             ORDER BY seq DESC LIMIT $2"
        ))
        .bind(conversation_id)
        .bind(i64::from(limit))
        .fetch_all(&self.db)
        .await?;
        messages.reverse();
        Ok(messages)
    }

    /// Appends a message at the next sequence number. Two writers racing for
    /// one number: the loser's insert breaks the unique index and it tries again.
    pub async fn append(
        &self,
        subject: &str,
        conversation_id: &str,
        role: &str,
        content: &str,
    ) -> Result<Message, ConversationError> {
        let id = format!("msg_{}", uuid::Uuid::now_v7().simple());
        let mut last_error = None;
        for _ in 0..5 {
            let now = now_ms();
            let inserted: Result<Message, _> = sqlx::query_as(&format!(
                "INSERT INTO messages (id, conversation_id, seq, role, content, created_at_ms) \
                 SELECT $1, $2, COALESCE(MAX(seq), 0) + 1, $3, $4, $5 FROM messages \
                 WHERE conversation_id = $2 RETURNING {MESSAGE_COLUMNS}"
            ))
            .bind(&id)
            .bind(conversation_id)
            .bind(role)
            .bind(content)
            .bind(now)
            .fetch_one(&self.db)
            .await;
            match inserted {
                Ok(message) => {
                    sqlx::query("UPDATE conversations SET updated_at_ms = $1 WHERE id = $2")
                        .bind(now)
                        .bind(conversation_id)
                        .execute(&self.db)
                        .await?;
                    self.cache.invalidate(subject).await;
                    return Ok(message);
                }
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                    last_error = Some(sqlx::Error::Database(e));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(last_error.map_or(ConversationError::NotFound, ConversationError::from))
    }
}
