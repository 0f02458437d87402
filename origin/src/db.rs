//! The database: SQLite (a file, the embedded default) or Postgres, chosen by
//! the URL, behind sqlx's `Any` driver so one set of queries and migrations
//! serves both. Queries use `$1`-style parameters, which both engines accept.

use crate::config::DatabaseConfig;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, ConnectOptions as _, Executor};
use std::str::FromStr as _;
use std::time::Duration;

pub type Db = AnyPool;

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Whether the URL names Postgres (otherwise SQLite).
pub fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres")
}

/// Opens the pool and brings the schema up to date.
pub async fn connect(config: &DatabaseConfig) -> Result<Db, DbError> {
    install_default_drivers();
    let statement_timeout_ms = config.statement_timeout_secs.saturating_mul(1000);
    let postgres = is_postgres(&config.url);
    // Every statement is reported at TRACE, which only the query metrics
    // (`sluice_telemetry`) read; slow ones at WARN, which the log keeps.
    let options = AnyConnectOptions::from_str(&config.url)?
        .log_statements(log::LevelFilter::Trace)
        .log_slow_statements(
            log::LevelFilter::Warn,
            Duration::from_millis(config.slow_statement_ms),
        );
    let pool = AnyPoolOptions::new()
        .max_connections(config.max_connections)
        .min_connections(config.min_connections)
        .idle_timeout(Duration::from_secs(config.idle_timeout_secs))
        .acquire_timeout(Duration::from_secs(config.acquire_timeout_secs))
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                // Both bound how long one statement may hold a connection: Postgres
                // cancels it, SQLite stops waiting for a lock.
                let setting = if postgres {
                    format!("SET statement_timeout = {statement_timeout_ms}")
                } else {
                    format!("PRAGMA busy_timeout = {statement_timeout_ms}")
                };
                conn.execute(setting.as_str()).await?;
                if !postgres {
                    // Readers never wait for the writer; the file stays consistent on a crash.
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    // With WAL, NORMAL syncs at checkpoints instead of every
                    // commit: a committed write survives the process crashing
                    // (the queue's promise), only a power loss can undo the last
                    // ones. FULL made each job's claim and result wait on fsync.
                    conn.execute("PRAGMA synchronous = NORMAL").await?;
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                }
                Ok(())
            })
        })
        .connect_with(options)
        .await?;
    MIGRATIONS.run(&pool).await?;
    Ok(pool)
}
