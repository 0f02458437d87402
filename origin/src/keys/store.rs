//! API keys: created (the key is shown once, only its hash is kept), listed,
//! revoked, and looked up by hash for the edge, which caches the answer for a
//! bounded time (`api_key_cache_seconds` there): that is how long a revocation
//! takes to reach every edge instance.

use crate::clock::now_ms;
use crate::db::Db;
use serde::Serialize;
use sluice_core::api_key;
use sluice_core::identity::Tier;
use sqlx::Row;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("no such key")]
    NotFound,
    #[error("no such user")]
    NoSuchUser,
}

/// What the admin API shows of a key: never the key or its hash.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct KeyInfo {
    pub id: String,
    pub subject: String,
    pub tier: Tier,
    pub name: String,
    pub scopes: Vec<String>,
    pub created_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
    /// The key's own token limit (enforced at the edge).
    pub token_limit: Option<String>,
    /// Its user's own token limit, which replaces the tier's.
    pub user_token_limit: Option<String>,
}

/// A user as the token-limit admin API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct UserInfo {
    pub subject: String,
    pub tier: Tier,
    pub token_limit: Option<String>,
}

/// A new key: the only time `key` exists outside the client.
#[derive(Debug, Serialize)]
pub struct CreatedKey {
    pub key: String,
    #[serde(flatten)]
    pub info: KeyInfo,
}

pub struct NewKey<'a> {
    pub subject: &'a str,
    /// Sets the subject's tier (created as free when absent and new).
    pub tier: Option<Tier>,
    pub name: &'a str,
    pub scopes: &'a [String],
    pub token_limit: Option<&'a str>,
}

#[derive(Clone)]
pub struct KeyStore {
    db: Db,
}

/// `sk-` and 244 random bits (two v4 UUIDs, from the OS's generator) as hex.
fn generate_key() -> String {
    format!(
        "sk-{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

fn tier_of(name: &str) -> Tier {
    // The CHECK constraint admits only the three names.
    Tier::parse(name).unwrap_or(Tier::Free)
}

const KEY_COLUMNS: &str = "k.id, k.subject, u.tier, k.name, k.scopes, k.created_at_ms, \
     k.revoked_at_ms, k.token_limit, u.token_limit AS user_token_limit";

fn info(row: &sqlx::any::AnyRow) -> Result<KeyInfo, sqlx::Error> {
    let scopes: String = row.try_get("scopes")?;
    Ok(KeyInfo {
        id: row.try_get("id")?,
        subject: row.try_get("subject")?,
        tier: tier_of(&row.try_get::<String, _>("tier")?),
        name: row.try_get("name")?,
        scopes: scopes.split_whitespace().map(str::to_string).collect(),
        created_at_ms: row.try_get("created_at_ms")?,
        revoked_at_ms: row.try_get("revoked_at_ms")?,
        token_limit: row.try_get("token_limit")?,
        user_token_limit: row.try_get("user_token_limit")?,
    })
}

impl KeyStore {
    pub fn new(db: Db) -> KeyStore {
        KeyStore { db }
    }

    pub async fn create(&self, new: NewKey<'_>) -> Result<CreatedKey, KeyError> {
        let key = generate_key();
        let hash = api_key::hash(&key);
        let id = api_key::key_id(&hash).to_string();
        let now = now_ms();
        let mut tx = self.db.begin().await?;
        match new.tier {
            Some(tier) => {
                sqlx::query(
                    "INSERT INTO users (subject, tier, created_at_ms) VALUES ($1, $2, $3) \
                     ON CONFLICT (subject) DO UPDATE SET tier = excluded.tier",
                )
                .bind(new.subject)
                .bind(tier.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            None => {
                sqlx::query(
                    "INSERT INTO users (subject, tier, created_at_ms) VALUES ($1, 'free', $2) \
                     ON CONFLICT (subject) DO NOTHING",
                )
                .bind(new.subject)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
        }
        sqlx::query(
            "INSERT INTO api_keys (id, key_hash, subject, name, scopes, created_at_ms, token_limit) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&id)
        .bind(&hash)
        .bind(new.subject)
        .bind(new.name)
        .bind(new.scopes.join(" "))
        .bind(now)
        .bind(new.token_limit)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys k JOIN users u ON u.subject = k.subject WHERE k.id = $1"
        ))
        .bind(&id)
        .fetch_one(&mut *tx)
        .await?;
        let info = info(&row)?;
        tx.commit().await?;
        Ok(CreatedKey { key, info })
    }

    /// Keys of one subject, or all, newest first.
    pub async fn list(&self, subject: Option<&str>) -> Result<Vec<KeyInfo>, KeyError> {
        let rows =
            match subject {
                Some(subject) => sqlx::query(&format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys k JOIN users u ON u.subject = k.subject \
                     WHERE k.subject = $1 ORDER BY k.created_at_ms DESC, k.id"
                ))
                .bind(subject)
                .fetch_all(&self.db)
                .await?,
                None => sqlx::query(&format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys k JOIN users u ON u.subject = k.subject \
                     ORDER BY k.created_at_ms DESC, k.id"
                ))
                .fetch_all(&self.db)
                .await?,
            };
        Ok(rows.iter().map(info).collect::<Result<_, _>>()?)
    }

    /// Revokes a key; revoking twice keeps the first time.
    pub async fn revoke(&self, id: &str) -> Result<KeyInfo, KeyError> {
        sqlx::query(
            "UPDATE api_keys SET revoked_at_ms = COALESCE(revoked_at_ms, $1) WHERE id = $2",
        )
        .bind(now_ms())
        .bind(id)
        .execute(&self.db)
        .await?;
        self.by_id(id).await
    }

    async fn by_id(&self, id: &str) -> Result<KeyInfo, KeyError> {
        let row = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys k JOIN users u ON u.subject = k.subject WHERE k.id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.db)
        .await?
        .ok_or(KeyError::NotFound)?;
        Ok(info(&row)?)
    }

    /// Sets (or with `None` clears) a key's own token limit.
    pub async fn set_key_token_limit(
        &self,
        id: &str,
        limit: Option<&str>,
    ) -> Result<KeyInfo, KeyError> {
        sqlx::query("UPDATE api_keys SET token_limit = $1 WHERE id = $2")
            .bind(limit)
            .bind(id)
            .execute(&self.db)
            .await?;
        self.by_id(id).await
    }

    /// Sets (or with `None` clears) a user's own token limit.
    pub async fn set_user_token_limit(
        &self,
        subject: &str,
        limit: Option<&str>,
    ) -> Result<UserInfo, KeyError> {
        sqlx::query("UPDATE users SET token_limit = $1 WHERE subject = $2")
            .bind(limit)
            .bind(subject)
            .execute(&self.db)
            .await?;
        let row = sqlx::query("SELECT subject, tier, token_limit FROM users WHERE subject = $1")
            .bind(subject)
            .fetch_optional(&self.db)
            .await?
            .ok_or(KeyError::NoSuchUser)?;
        Ok(UserInfo {
            subject: row.try_get("subject")?,
            tier: tier_of(&row.try_get::<String, _>("tier")?),
            token_limit: row.try_get("token_limit")?,
        })
    }

    /// The active (not revoked) key with this hash, for the edge.
    pub async fn active_by_hash(&self, hash: &str) -> Result<Option<KeyInfo>, KeyError> {
        let row = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys k JOIN users u ON u.subject = k.subject \
             WHERE k.key_hash = $1 AND k.revoked_at_ms IS NULL"
        ))
        .bind(hash)
        .fetch_optional(&self.db)
        .await?;
        Ok(row.as_ref().map(info).transpose()?)
    }
}
