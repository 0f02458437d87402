//! Job delivery through Redis Streams, for many origin and worker processes.
//! The database stays the record of every job (status, lease, result); Redis
//! only says which job to try next, so a lost or duplicated stream entry can
//! delay a job but never run it twice at once or lose its result.
//!
//! - One stream per priority, one consumer group (`workers`); a worker reads
//!   the most urgent stream first, without blocking (the shared connection
//!   stays free), and sleeps briefly when all are empty.
//! - A delivery whose worker died stays pending in the group; `XAUTOCLAIM`
//!   hands it to another worker once it has been idle for the visibility
//!   timeout, when the job's lease in the database has run out too.
//! - Retries wait in a sorted set scored by when they become visible and are
//!   moved back to their stream when due.
//! - Finished entries are acknowledged and deleted, so streams stay short.

use crate::priority::Priority;
use std::time::Duration;

const GROUP: &str = "workers";
const PRIORITIES: [Priority; 4] = [
    Priority::Critical,
    Priority::High,
    Priority::Normal,
    Priority::Low,
];

/// Where a delivered job came from, to acknowledge it when done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub stream: String,
    pub entry: String,
}

#[derive(Clone)]
pub struct JobStreams {
    connection: redis::aio::ConnectionManager,
    prefix: String,
    consumer: String,
    visibility_timeout: Duration,
}

type Entries = Vec<(String, Vec<(String, String)>)>;

/// `XREADGROUP` answers `[[stream, [[id, [field, value, ...]], ...]], ...]`.
type ReadReply = Option<Vec<(String, Entries)>>;

fn job_id(fields: &[(String, String)]) -> Option<String> {
    fields
        .iter()
        .find(|(name, _)| name == "job")
        .map(|(_, id)| id.clone())
}

impl JobStreams {
    /// Whether Redis answers, for `/ready`.
    pub async fn ping(&self) -> bool {
        crate::cache::ping(&self.connection).await
    }

    /// Connects and creates the consumer group on each stream when missing;
    /// fails when Redis is unreachable (a queue that cannot take jobs should
    /// not start). Reconnects by itself later.
    pub async fn connect(
        url: &str,
        prefix: &str,
        visibility_timeout: Duration,
    ) -> Result<JobStreams, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let settings = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)));
        let streams = JobStreams {
            connection: client.get_connection_manager_lazy(settings)?,
            prefix: prefix.to_string(),
            consumer: format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()),
            visibility_timeout,
        };
        for priority in PRIORITIES {
            let created: Result<(), redis::RedisError> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(streams.stream(priority))
                .arg(GROUP)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut streams.connection.clone())
                .await;
            match created {
                Ok(()) => {}
                Err(e) if e.code() == Some("BUSYGROUP") => {}
                Err(e) => return Err(e),
            }
        }
        Ok(streams)
    }

    fn stream(&self, priority: Priority) -> String {
        format!("{}{}", self.prefix, priority.as_str())
    }

    fn delayed(&self) -> String {
        format!("{}delayed", self.prefix)
    }

    /// Offers a job to the workers.
    pub async fn push(&self, id: &str, priority: Priority) -> Result<(), redis::RedisError> {
        let _: String = redis::cmd("XADD")
            .arg(self.stream(priority))
            .arg("*")
            .arg("job")
            .arg(id)
            .query_async(&mut self.connection.clone())
            .await?;
        Ok(())
    }

    /// Offers a job again once `visible_at_ms` has passed (a retry's backoff).
    pub async fn push_later(
        &self,
        id: &str,
        priority: Priority,
        visible_at_ms: i64,
    ) -> Result<(), redis::RedisError> {
        let _: i64 = redis::cmd("ZADD")
            .arg(self.delayed())
            .arg(visible_at_ms)
            .arg(format!("{}:{id}", priority.rank()))
            .query_async(&mut self.connection.clone())
            .await?;
        Ok(())
    }

    /// Moves due retries to their streams. Removing first means one process
    /// moves each, however many run this at once.
    async fn promote_due(&self, now_ms: i64) -> Result<(), redis::RedisError> {
        let due: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.delayed())
            .arg("-inf")
            .arg(now_ms)
            .arg("LIMIT")
            .arg(0)
            .arg(100)
            .query_async(&mut self.connection.clone())
            .await?;
        for member in due {
            let removed: i64 = redis::cmd("ZREM")
                .arg(self.delayed())
                .arg(&member)
                .query_async(&mut self.connection.clone())
                .await?;
            if removed == 1
                && let Some((rank, id)) = member.split_once(':')
            {
                let priority = Priority::from_rank(rank.parse().unwrap_or(2));
                self.push(id, priority).await?;
            }
        }
        Ok(())
    }

    /// The next delivery, most urgent stream first: a new entry, else one a
    /// dead worker left pending past the visibility timeout.
    pub async fn next(&self, now_ms: i64) -> Result<Option<(String, Receipt)>, redis::RedisError> {
        self.promote_due(now_ms).await?;
        for priority in PRIORITIES {
            let stream = self.stream(priority);
            let reply: ReadReply = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(GROUP)
                .arg(&self.consumer)
                .arg("COUNT")
                .arg(1)
                .arg("STREAMS")
                .arg(&stream)
                .arg(">")
                .query_async(&mut self.connection.clone())
                .await?;
            if let Some(found) = self
                .first(&stream, reply.into_iter().flatten().flat_map(|(_, e)| e))
                .await?
            {
                return Ok(Some(found));
            }
        }
        let idle_ms = u64::try_from(self.visibility_timeout.as_millis()).unwrap_or(u64::MAX);
        for priority in PRIORITIES {
            let stream = self.stream(priority);
            // XAUTOCLAIM answers [next-cursor, [[id, [field, value]]], deleted-ids].
            let (_, entries, _): (String, Entries, Vec<String>) = redis::cmd("XAUTOCLAIM")
                .arg(&stream)
                .arg(GROUP)
                .arg(&self.consumer)
                .arg(idle_ms)
                .arg("0-0")
                .arg("COUNT")
                .arg(1)
                .query_async(&mut self.connection.clone())
                .await?;
            if let Some(found) = self.first(&stream, entries).await? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// The job id of the first entry; entries without one are dropped.
    async fn first(
        &self,
        stream: &str,
        entries: impl IntoIterator<Item = (String, Vec<(String, String)>)>,
    ) -> Result<Option<(String, Receipt)>, redis::RedisError> {
        for (entry, fields) in entries {
            let delivery = Receipt {
                stream: stream.to_string(),
                entry,
            };
            match job_id(&fields) {
                Some(id) => return Ok(Some((id, delivery))),
                None => self.done(&delivery).await?,
            }
        }
        Ok(None)
    }

    /// Acknowledges and deletes a delivery: the job needs it no more.
    pub async fn done(&self, delivery: &Receipt) -> Result<(), redis::RedisError> {
        let _: () = redis::pipe()
            .cmd("XACK")
            .arg(&delivery.stream)
            .arg(GROUP)
            .arg(&delivery.entry)
            .ignore()
            .cmd("XDEL")
            .arg(&delivery.stream)
            .arg(&delivery.entry)
            .ignore()
            .query_async(&mut self.connection.clone())
            .await?;
        Ok(())
    }
}
