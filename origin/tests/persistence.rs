//! Conversations, usage records and the job queue through the HTTP API, on
//! SQLite and on Postgres, with a real HTTP upstream for the model calls.
#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers: any failure should fail the test"
)]

mod common;
mod upstream;

use axum::http::StatusCode;
use common::{TestDb, call, identity, send, signed, state_and_router};
use serde_json::{Value, json};
use sluice_core::identity::Tier;
use sluice_origin::app::AppState;
use sluice_origin::priority::Priority;
use sluice_origin::queue::worker::{self, WorkerSettings};
use sluice_origin::queue::{JobQueue, JobStatus, NewJob};
use sqlx::Row;
use std::collections::HashSet;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use upstream::{Behaviour, Upstream};

/// One model on the test upstream; fast retries and no breaker in the way.
fn config_toml(upstream: &Upstream, queue: &str) -> String {
    format!(
        "[routing]\nattempts = 1\nbackoff_base_ms = 1\nbackoff_max_ms = 2\nbreaker_failures = 1000\n\
         [queue]\n{queue}\n\
         [[models]]\nname = \"m\"\n\
         deployments = [{{ provider = \"openai\", base_url = \"{}\", keys = [\"k\"] }}]\n",
        upstream.openai_base()
    )
}

/// Usage records of `subject`, once there are at least `expected` (they are
/// written in the background) or after two seconds.
async fn usage_rows(state: &AppState, subject: &str, expected: i64) -> i64 {
    let mut count = 0;
    for _ in 0..100 {
        count = sqlx::query("SELECT COUNT(*) AS n FROM usage_records WHERE subject = $1")
            .bind(subject)
            .fetch_one(&state.db)
            .await
            .unwrap()
            .try_get("n")
            .unwrap();
        if count >= expected {
            return count;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    count
}

async fn conversations(db: TestDb) {
    let upstream = Upstream::start().await;
    let config = db.config(&config_toml(&upstream, ""));
    let (state, router) = state_and_router(&config).await;
    let alice = identity("alice", Tier::Free, &[]);
    let bob = identity("bob", Tier::Free, &[]);

    // Paging: newest first, cursors visit every conversation once.
    for n in 0..25 {
        let (status, created) = call(
            &router,
            "POST",
            "/v1/conversations",
            &alice,
            Some(json!({ "title": format!("c{n}") })),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
    }
    let (status, bobs) = call(&router, "POST", "/v1/conversations", &bob, None).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "an empty body is a conversation too"
    );
    let mut seen = Vec::new();
    let mut path = "/v1/conversations?limit=10".to_string();
    loop {
        let (status, page) = call(&router, "GET", &path, &alice, None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for c in page["data"].as_array().unwrap() {
            seen.push(c["title"].as_str().unwrap().to_string());
        }
        if page["has_more"] == false {
            assert!(page["next_cursor"].is_null());
            break;
        }
        path = format!(
            "/v1/conversations?limit=10&after={}",
            page["next_cursor"].as_str().unwrap()
        );
    }
    assert_eq!(seen.len(), 25, "{seen:?}");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 25);
    assert_eq!(seen[0], "c24", "newest first");
    let (status, body) = call(&router, "GET", "/v1/conversations?after=x", &alice, None).await;
    assert_eq!(
        (status, body["error"]["param"].as_str()),
        (StatusCode::BAD_REQUEST, Some("after"))
    );

    let (_, conversation) = call(
        &router,
        "POST",
        "/v1/conversations",
        &alice,
        Some(json!({ "title": "chat", "system_prompt": "Be brief." })),
    )
    .await;
    let id = conversation["id"].as_str().unwrap().to_string();
    let messages_path = format!("/v1/conversations/{id}/messages");

    // Ownership: another subject's conversation does not exist for them.
    for (method, path) in [
        ("GET", format!("/v1/conversations/{id}")),
        ("GET", messages_path.clone()),
        ("DELETE", format!("/v1/conversations/{id}")),
    ] {
        let (status, _) = call(&router, method, &path, &bob, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}");
    }
    let (status, _) = call(
        &router,
        "POST",
        &messages_path,
        &bob,
        Some(json!({ "content": "hi" })),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(upstream.seen().is_empty(), "nothing generated for bob");

    // A turn: the user message and the reply are stored, usage is recorded.
    let (status, turn) = call(
        &router,
        "POST",
        &messages_path,
        &alice,
        Some(json!({ "content": "first question" })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{turn}");
    assert_eq!(turn["user_message"]["content"], "first question");
    assert_eq!(turn["message"]["role"], "assistant");
    assert_eq!(turn["message"]["content"], upstream::REPLY);
    assert!(turn["usage"]["total_tokens"].as_u64().unwrap() > 0);

    // The next turn carries the conversation as context.
    let (status, _) = call(
        &router,
        "POST",
        &messages_path,
        &alice,
        Some(json!({ "content": "second question", "max_tokens": 20 })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let sent = upstream.seen().last().unwrap().messages.clone();
    assert_eq!(
        sent,
        vec![
            "system: Be brief.".to_string(),
            "user: first question".into(),
            format!("assistant: {}", upstream::REPLY),
            "user: second question".into(),
        ]
    );

    // Streamed: the reply is stored by the time the stream has ended.
    let (status, headers, sse) = send(
        &router,
        signed(
            "POST",
            &messages_path,
            &alice,
            &[],
            Some(json!({ "content": "third", "stream": true })),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{sse}");
    assert_eq!(headers["content-type"], "text/event-stream");
    assert!(sse.trim_end().ends_with("data: [DONE]"), "{sse}");
    let streamed: String = sse
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(String::from)
        })
        .collect();
    assert!(!streamed.is_empty());

    // Six messages in order, paged three at a time.
    let (_, first) = call(
        &router,
        "GET",
        &format!("{messages_path}?limit=3"),
        &alice,
        None,
    )
    .await;
    assert_eq!(first["has_more"], true);
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, rest) = call(
        &router,
        "GET",
        &format!("{messages_path}?limit=3&after={cursor}"),
        &alice,
        None,
    )
    .await;
    assert_eq!(rest["has_more"], false);
    let all: Vec<&Value> = first["data"]
        .as_array()
        .unwrap()
        .iter()
        .chain(rest["data"].as_array().unwrap())
        .collect();
    let roles: Vec<&str> = all.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(
        roles,
        [
            "user",
            "assistant",
            "user",
            "assistant",
            "user",
            "assistant"
        ]
    );
    let seqs: Vec<i64> = all.iter().map(|m| m["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
    assert_eq!(all[5]["content"].as_str().unwrap(), streamed);
    assert_eq!(usage_rows(&state, "alice", 3).await, 3);
    assert_eq!(usage_rows(&state, "bob", 0).await, 0);

    // Bad input names the field; unknown models are 404.
    let (status, body) = call(
        &router,
        "POST",
        &messages_path,
        &alice,
        Some(json!({ "content": " " })),
    )
    .await;
    assert_eq!(
        (status, body["error"]["param"].as_str()),
        (StatusCode::BAD_REQUEST, Some("content"))
    );
    let (status, _) = call(
        &router,
        "POST",
        &messages_path,
        &alice,
        Some(json!({ "content": "x", "model": "nope" })),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Delete: gone, with its messages.
    let (status, deleted) = call(
        &router,
        "DELETE",
        &format!("/v1/conversations/{id}"),
        &alice,
        None,
    )
    .await;
    assert_eq!(
        (status, &deleted["deleted"]),
        (StatusCode::OK, &json!(true))
    );
    let (status, _) = call(&router, "GET", &messages_path, &alice, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let left: i64 = sqlx::query("SELECT COUNT(*) AS n FROM messages WHERE conversation_id = $1")
        .bind(&id)
        .fetch_one(&state.db)
        .await
        .unwrap()
        .try_get("n")
        .unwrap();
    assert_eq!(left, 0);
    let (status, _) = call(
        &router,
        "GET",
        &format!("/v1/conversations/{}", bobs["id"].as_str().unwrap()),
        &bob,
        None,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "bob's own conversation is untouched"
    );
    db.drop_database().await;
}

#[tokio::test]
async fn conversations_on_sqlite() {
    conversations(TestDb::sqlite()).await;
}

#[tokio::test]
async fn conversations_on_postgres() {
    conversations(TestDb::postgres().await).await;
}

fn chat(content: &str) -> Value {
    json!({ "model": "m", "messages": [{ "role": "user", "content": content }] })
}

/// Polls a job until `done` holds for it.
async fn wait_for_job(
    router: &axum::Router,
    who: &sluice_core::identity::Identity,
    id: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, job) = call(router, "GET", &format!("/v1/jobs/{id}"), who, None).await;
        assert_eq!(status, StatusCode::OK, "{job}");
        if done(&job) {
            return job;
        }
        assert!(Instant::now() < deadline, "job never got there: {job}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn start_workers(state: &AppState, concurrency: usize) -> watch::Sender<bool> {
    let (stop, stopped) = watch::channel(false);
    let runner = state.runner();
    let settings = WorkerSettings {
        concurrency,
        poll_interval: Duration::from_millis(20),
        drain_timeout: Duration::from_secs(5),
        cleanup_interval: Duration::from_secs(3600),
    };
    tokio::spawn(worker::run(runner, settings, stopped));
    stop
}

/// Queue settings delivering through Redis Streams, on keys of this test's own.
fn redis_streams_toml() -> String {
    format!(
        "backend = \"redis_streams\"\nredis_url = \"{REDIS_URL}\"\nstream_prefix = \"sluice:test:{}:\"",
        uuid::Uuid::new_v4().simple()
    )
}

async fn jobs(db: TestDb, queue: &str) {
    let upstream = Upstream::start().await;
    let config = db.config(&config_toml(
        &upstream,
        &format!("visibility_timeout_secs = 1\nbackoff_base_ms = 10\nbackoff_max_ms = 40\n{queue}"),
    ));
    let (state, router) = state_and_router(&config).await;
    let alice = identity("alice", Tier::Free, &[]);
    let bob = identity("bob", Tier::Free, &[]);
    let root = identity("root", Tier::Admin, &[]);

    // Refused before queueing: streams, unknown models, bad bodies.
    for (body, status, param) in [
        (
            json!({ "model": "m", "stream": true, "messages": [{ "role": "user", "content": "x" }] }),
            StatusCode::BAD_REQUEST,
            Some("stream"),
        ),
        (
            json!({ "model": "nope", "messages": [{ "role": "user", "content": "x" }] }),
            StatusCode::NOT_FOUND,
            Some("model"),
        ),
        (
            json!({ "model": "m", "messages": [] }),
            StatusCode::BAD_REQUEST,
            Some("messages"),
        ),
    ] {
        let (got, error) = call(&router, "POST", "/v1/jobs", &alice, Some(body)).await;
        assert_eq!(
            (got, error["error"]["param"].as_str()),
            (status, param),
            "{error}"
        );
    }

    // Queued with no worker running: 202, then visible as queued.
    let (status, job) = call(&router, "POST", "/v1/jobs", &alice, Some(chat("one"))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    assert_eq!(job["status"], "queued");
    let id = job["job_id"].as_str().unwrap().to_string();
    assert_eq!(job["id"], job["job_id"]);
    let (status, _) = call(&router, "GET", &format!("/v1/jobs/{id}"), &bob, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another caller's job");

    // Idempotency: the same key returns the same job, per caller.
    let keyed = |who| {
        signed(
            "POST",
            "/v1/jobs",
            who,
            &[("idempotency-key", "order-42")],
            Some(chat("keyed")),
        )
    };
    let (status, _, first) = send(&router, keyed(&alice)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, headers, again) = send(&router, keyed(&alice)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(headers["idempotent-replayed"], "true");
    let first: Value = serde_json::from_str(&first).unwrap();
    let again: Value = serde_json::from_str(&again).unwrap();
    assert_eq!(first["job_id"], again["job_id"]);
    let (_, _, bobs) = send(&router, keyed(&bob)).await;
    let bobs: Value = serde_json::from_str(&bobs).unwrap();
    assert_ne!(bobs["job_id"], first["job_id"]);

    // Cancelled before it runs: it never runs.
    let (_, doomed) = call(&router, "POST", "/v1/jobs", &alice, Some(chat("doomed"))).await;
    let doomed = doomed["job_id"].as_str().unwrap().to_string();
    let (status, cancelled) = call(
        &router,
        "DELETE",
        &format!("/v1/jobs/{doomed}"),
        &alice,
        None,
    )
    .await;
    assert_eq!(
        (status, &cancelled["status"]),
        (StatusCode::OK, &json!("cancelled"))
    );

    // Depth and age for autoscaling.
    let (status, stats) = call(&router, "GET", "/v1/admin/queue", &root, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stats["stats"]["queued"], 3, "{stats}");
    assert!(stats["stats"]["oldest_queued_age_ms"].as_i64().unwrap() >= 0);
    let (status, _) = call(&router, "GET", "/v1/admin/queue", &alice, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Priorities: critical before normal before low, whatever the order queued.
    let probe = state.jobs.clone();
    for priority in [Priority::Low, Priority::Critical, Priority::Normal] {
        probe
            .submit(NewJob {
                subject: "prio",
                key_id: None,
                priority,
                idempotency_key: None,
                request: &chat("p").to_string(),
            })
            .await
            .unwrap();
    }
    // Claimed ones stay invisible, so claiming everything shows the order.
    let mut claimed_all = Vec::new();
    while let Some(claimed) = probe.claim().await.unwrap() {
        claimed_all.push(claimed);
    }
    let order: Vec<Priority> = claimed_all
        .iter()
        .filter(|c| c.subject == "prio")
        .map(|c| c.priority)
        .collect();
    for claimed in &claimed_all {
        assert!(probe.release(claimed).await.unwrap());
        if claimed.subject == "prio" {
            probe.cancel("prio", &claimed.id).await.unwrap();
        }
    }
    assert_eq!(order, [Priority::Critical, Priority::Normal, Priority::Low]);

    // A worker that dies holding a job: redelivered after the visibility
    // timeout, and the dead holder can no longer store a result.
    let lost = probe
        .submit(NewJob {
            subject: "alice",
            key_id: None,
            priority: Priority::High,
            idempotency_key: None,
            request: &chat("lost").to_string(),
        })
        .await
        .unwrap()
        .0;
    let held = loop {
        let claimed = probe.claim().await.unwrap().unwrap();
        if claimed.id == lost.id {
            break claimed;
        }
        probe.release(&claimed).await.unwrap();
    };

    // Workers run everything queued.
    let stop = start_workers(&state, 2);
    let done = wait_for_job(&router, &alice, &id, |j| j["status"] == "completed").await;
    assert_eq!(done["attempts"], 1);
    assert_eq!(
        done["result"]["choices"][0]["message"]["content"],
        upstream::REPLY
    );
    assert_eq!(done["result"]["object"], "chat.completion");
    let redelivered = wait_for_job(&router, &alice, &lost.id, |j| j["status"] == "completed").await;
    assert_eq!(redelivered["attempts"], 2, "{redelivered}");
    assert!(
        !probe
            .complete(&held, &json!({"stale": true}))
            .await
            .unwrap(),
        "a lost lease stores nothing"
    );
    let (_, after) = call(
        &router,
        "GET",
        &format!("/v1/jobs/{}", lost.id),
        &alice,
        None,
    )
    .await;
    assert_eq!(after["result"]["object"], "chat.completion");
    let (_, still) = call(&router, "GET", &format!("/v1/jobs/{doomed}"), &alice, None).await;
    assert_eq!(still["status"], "cancelled");
    assert!(still["result"].is_null());
    assert!(usage_rows(&state, "alice", 2).await >= 2);

    // The seed's form.
    let (status, job) = call(
        &router,
        "POST",
        "/generate?async=true",
        &bob,
        Some(chat("seed")),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let seed_id = job["job_id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, job) = call(&router, "GET", &format!("/jobs/{seed_id}"), &bob, None).await;
        assert_eq!(status, StatusCode::OK);
        if job["status"] == "completed" {
            break;
        }
        assert!(Instant::now() < deadline, "{job}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (status, sync) = call(&router, "POST", "/generate", &bob, Some(chat("now"))).await;
    assert_eq!(
        (status, &sync["object"]),
        (StatusCode::OK, &json!("chat.completion"))
    );

    // Retryable failures: three attempts with backoff, then the dead-letter queue.
    upstream.for_model("m", Behaviour::Status(503, None));
    let (_, job) = call(&router, "POST", "/v1/jobs", &alice, Some(chat("flaky"))).await;
    let flaky = job["job_id"].as_str().unwrap().to_string();
    let dead = wait_for_job(&router, &alice, &flaky, |j| j["status"] == "failed").await;
    assert_eq!(dead["attempts"], 3, "{dead}");
    assert!(dead["error"].as_str().unwrap().contains("503"), "{dead}");
    // Not retryable (the provider refused the request): dead at once.
    upstream.for_model("m", Behaviour::Status(400, None));
    let (_, job) = call(&router, "POST", "/v1/jobs", &alice, Some(chat("bad"))).await;
    let refused = job["job_id"].as_str().unwrap().to_string();
    let refused_job = wait_for_job(&router, &alice, &refused, |j| j["status"] == "failed").await;
    assert_eq!(refused_job["attempts"], 1, "{refused_job}");

    let (status, _) = call(&router, "GET", "/v1/admin/jobs/dead", &alice, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, letters) = call(&router, "GET", "/v1/admin/jobs/dead", &root, None).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = letters["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&flaky.as_str()) && ids.contains(&refused.as_str()));
    let (status, inspected) = call(
        &router,
        "GET",
        &format!("/v1/admin/jobs/{flaky}"),
        &root,
        None,
    )
    .await;
    assert_eq!(
        (status, &inspected["subject"]),
        (StatusCode::OK, &json!("alice"))
    );

    // Redrive once the provider is healthy again.
    upstream.clear();
    let (status, redriven) = call(
        &router,
        "POST",
        &format!("/v1/admin/jobs/{flaky}/redrive"),
        &root,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{redriven}");
    let revived = wait_for_job(&router, &alice, &flaky, |j| j["status"] == "completed").await;
    assert_eq!(revived["attempts"], 1);
    let (_, stats) = call(&router, "GET", "/v1/admin/queue", &root, None).await;
    assert_eq!(stats["stats"]["dead"], 1, "{stats}");
    let _ = stop.send(true);

    // Retention: finished jobs past it are deleted, queued ones never.
    let mut settings = config.queue.settings();
    settings.retention = Duration::ZERO;
    settings.dead_retention = Duration::ZERO;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let cleaner = JobQueue::new(state.db.clone(), settings, false);
    assert!(cleaner.clean_up().await.unwrap() >= 5);
    let (status, _) = call(&router, "GET", &format!("/v1/jobs/{id}"), &alice, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let left: Vec<JobStatus> = {
        let rows = sqlx::query("SELECT id FROM jobs")
            .fetch_all(&state.db)
            .await
            .unwrap();
        let mut left = Vec::new();
        for row in rows {
            let id: String = row.try_get("id").unwrap();
            left.push(state.jobs.get(None, &id).await.unwrap().status);
        }
        left
    };
    assert!(
        left.iter()
            .all(|s| matches!(s, JobStatus::Queued | JobStatus::Processing)),
        "{left:?}"
    );
    db.drop_database().await;
}

#[tokio::test]
async fn jobs_on_sqlite() {
    jobs(TestDb::sqlite(), "").await;
}

#[tokio::test]
async fn jobs_on_postgres() {
    jobs(TestDb::postgres().await, "").await;
}

#[tokio::test]
async fn jobs_through_redis_streams_on_sqlite() {
    jobs(TestDb::sqlite(), &redis_streams_toml()).await;
}

#[tokio::test]
async fn jobs_through_redis_streams_on_postgres() {
    jobs(TestDb::postgres().await, &redis_streams_toml()).await;
}

/// The shared Redis of this machine kind (the test command starts it).
const REDIS_URL: &str = "redis://127.0.0.1:6379";

fn cache_toml(redis: bool) -> String {
    let prefix = format!("sluice:test:{}:", uuid::Uuid::new_v4().simple());
    if redis {
        format!("[cache]\nredis_url = \"{REDIS_URL}\"\nkey_prefix = \"{prefix}\"\n")
    } else {
        format!("[cache]\nkey_prefix = \"{prefix}\"\n")
    }
}

async fn new_conversation(router: &axum::Router, who: &sluice_core::identity::Identity) -> String {
    let (status, created) = call(
        router,
        "POST",
        "/v1/conversations",
        who,
        Some(json!({ "title": "cached" })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn conversation_reads_come_from_the_cache_until_the_owner_writes() {
    let upstream = Upstream::start().await;
    let db = TestDb::sqlite();
    let config = db.config(&format!(
        "{}{}",
        config_toml(&upstream, ""),
        cache_toml(false)
    ));
    let (state, router) = state_and_router(&config).await;
    let alice = identity("alice", Tier::Free, &[]);
    let bob = identity("bob", Tier::Free, &[]);
    let root = identity("root", Tier::Admin, &[]);
    let id = new_conversation(&router, &alice).await;
    let messages = format!("/v1/conversations/{id}/messages");

    let reads = state.conversations.database_reads();
    let (_, first) = call(&router, "GET", "/v1/conversations", &alice, None).await;
    let (_, _) = call(&router, "GET", &messages, &alice, None).await;
    let after_first = state.conversations.database_reads();
    assert_eq!(
        after_first - reads,
        3,
        "list, the ownership check, messages"
    );
    for _ in 0..5 {
        let (_, again) = call(&router, "GET", "/v1/conversations", &alice, None).await;
        assert_eq!(again, first);
        call(&router, "GET", &messages, &alice, None).await;
    }
    assert_eq!(
        state.conversations.database_reads(),
        after_first,
        "all hits"
    );

    // Bob's reads are his own: a miss, and never alice's data.
    let (_, bobs) = call(&router, "GET", "/v1/conversations", &bob, None).await;
    assert_eq!(bobs["data"], json!([]));
    let (status, _) = call(&router, "GET", &messages, &bob, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A write makes alice's entries stale at once.
    let (status, _) = call(
        &router,
        "POST",
        &messages,
        &alice,
        Some(json!({ "content": "new" })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, fresh) = call(&router, "GET", &messages, &alice, None).await;
    assert_eq!(fresh["data"].as_array().unwrap().len(), 2);
    let (_, list) = call(&router, "GET", "/v1/conversations", &alice, None).await;
    assert_ne!(list, first, "updated_at moved");

    // Fifty concurrent readers of a cold key: one database read.
    let second = new_conversation(&router, &alice).await;
    let before = state.conversations.database_reads();
    let path = format!("/v1/conversations/{second}");
    let readers: Vec<_> = (0..50)
        .map(|_| {
            let router = router.clone();
            let alice = alice.clone();
            let path = path.clone();
            tokio::spawn(async move { call(&router, "GET", &path, &alice, None).await.0 })
        })
        .collect();
    for reader in readers {
        assert_eq!(reader.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(state.conversations.database_reads() - before, 1);

    let (status, stats) = call(&router, "GET", "/v1/admin/cache", &root, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        stats["origin"]["l1_hits"].as_u64().unwrap() >= 59,
        "{stats}"
    );
    assert!(stats["origin"]["misses"].as_u64().unwrap() >= 5, "{stats}");
    assert!(stats["semantic"].is_null(), "off unless configured");
}

#[tokio::test]
async fn instances_share_l2_in_redis_and_see_each_others_invalidations() {
    let upstream = Upstream::start().await;
    let db = TestDb::sqlite();
    let config = db.config(&format!(
        "{}{}",
        config_toml(&upstream, ""),
        cache_toml(true)
    ));
    let (a, router_a) = state_and_router(&config).await;
    let (b, router_b) = state_and_router(&config).await;
    let alice = identity("alice", Tier::Free, &[]);
    let root = identity("root", Tier::Admin, &[]);
    new_conversation(&router_a, &alice).await;

    let (_, from_a) = call(&router_a, "GET", "/v1/conversations", &alice, None).await;
    assert_eq!(from_a["data"].as_array().unwrap().len(), 1);
    let (_, from_b) = call(&router_b, "GET", "/v1/conversations", &alice, None).await;
    assert_eq!(from_a, from_b);
    assert_eq!(
        b.conversations.database_reads(),
        0,
        "B read A's entry from L2"
    );
    let (_, stats) = call(&router_b, "GET", "/v1/admin/cache", &root, None).await;
    assert_eq!(stats["origin"]["l2_hits"], 1, "{stats}");

    // A write through A; B's next read misses and sees it.
    new_conversation(&router_a, &alice).await;
    let (_, fresh) = call(&router_b, "GET", "/v1/conversations", &alice, None).await;
    assert_eq!(fresh["data"].as_array().unwrap().len(), 2);
    assert_eq!(b.conversations.database_reads(), 1);
    assert!(a.conversations.database_reads() >= 1);
}

#[tokio::test]
async fn warming_loads_the_most_active_users_first_pages() {
    let upstream = Upstream::start().await;
    let db = TestDb::sqlite();
    let config = db.config(&format!(
        "{}{}",
        config_toml(&upstream, ""),
        cache_toml(false)
    ));
    let (writer, writer_router) = state_and_router(&config).await;
    for who in ["ann", "ben", "cat"] {
        let who = identity(who, Tier::Free, &[]);
        new_conversation(&writer_router, &who).await;
        new_conversation(&writer_router, &who).await;
    }
    drop(writer);
    // A new instance (after a deploy): its cache is cold.
    let (state, router) = state_and_router(&config).await;
    let root = identity("root", Tier::Admin, &[]);
    let (status, _) = call(
        &router,
        "POST",
        "/v1/admin/cache/warm",
        &identity("ann", Tier::Free, &[]),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, warmed) = call(
        &router,
        "POST",
        "/v1/admin/cache/warm",
        &root,
        Some(json!({ "top": 2 })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{warmed}");
    assert_eq!(warmed["subjects"], 2);
    assert_eq!(warmed["pages"], 6, "two lists and four message pages");
    let reads = state.conversations.database_reads();
    let cat = identity("cat", Tier::Free, &[]);
    let (_, list) = call(&router, "GET", "/v1/conversations", &cat, None).await;
    for conversation in list["data"].as_array().unwrap() {
        let path = format!(
            "/v1/conversations/{}/messages",
            conversation["id"].as_str().unwrap()
        );
        call(&router, "GET", &path, &cat, None).await;
    }
    assert_eq!(
        state.conversations.database_reads(),
        reads,
        "the busiest user (the last to write) was warmed"
    );
}

#[tokio::test]
async fn similar_prompts_are_answered_from_the_semantic_cache_per_principal() {
    let upstream = Upstream::start().await;
    let db = TestDb::sqlite();
    let config = db.config(&format!(
        "[cache.semantic]\nembeddings_model = \"emb\"\n\
         [[models]]\nname = \"emb\"\ndeployments = [{{ provider = \"simulated\" }}]\n{}",
        config_toml(&upstream, "")
    ));
    let (_state, router) = state_and_router(&config).await;
    let alice = identity("alice", Tier::Free, &[]);
    let bob = identity("bob", Tier::Free, &[]);
    let ask = |who: &sluice_core::identity::Identity, body: Value, headers: &[(&str, &str)]| {
        signed("POST", "/v1/chat/completions", who, headers, Some(body))
    };
    let question = chat("What is the capital of France?");

    let (status, headers, first) = send(&router, ask(&alice, question.clone(), &[])).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(headers["x-sluice-semantic-cache"], "miss");
    assert_eq!(upstream.seen().len(), 1);

    // The same question, however it is cased and punctuated: no upstream call.
    let (_, headers, again) = send(
        &router,
        ask(&alice, chat("what is the capital of france"), &[]),
    )
    .await;
    assert_eq!(headers["x-sluice-semantic-cache"], "hit");
    assert_eq!(headers["x-sluice-semantic-similarity"], "1.0000");
    let (first, again): (Value, Value) = (
        serde_json::from_str(&first).unwrap(),
        serde_json::from_str(&again).unwrap(),
    );
    assert_eq!(again["choices"], first["choices"]);
    assert_ne!(again["id"], first["id"]);
    // Close in meaning.
    let (_, headers, _) = send(
        &router,
        ask(&alice, chat("What is the capital city of France?"), &[]),
    )
    .await;
    assert_eq!(headers["x-sluice-semantic-cache"], "hit");
    let similarity: f32 = headers["x-sluice-semantic-similarity"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((0.92..1.0).contains(&similarity), "{similarity}");
    assert_eq!(upstream.seen().len(), 1);

    // Misses: another question, another caller, another request shape, and a
    // client that asks for a fresh answer.
    let mut hot = question.clone();
    hot["temperature"] = json!(1.5);
    for (who, body, headers, label) in [
        (&alice, chat("How tall is Mont Blanc?"), vec![], "miss"),
        (&bob, question.clone(), vec![], "miss"),
        (&alice, hot, vec![], "miss"),
        (
            &alice,
            question.clone(),
            vec![("cache-control", "no-cache")],
            "bypass",
        ),
    ] {
        let (status, got, _) = send(&router, ask(who, body, &headers)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(got["x-sluice-semantic-cache"], label);
    }
    assert_eq!(upstream.seen().len(), 5);
}

#[tokio::test]
async fn conversation_turns_use_the_semantic_cache_only_when_their_setting_says_so() {
    for (setting, reused) in [
        ("", false),
        ("[conversations]\nsemantic_cache = true\n", true),
    ] {
        let upstream = Upstream::start().await;
        let db = TestDb::sqlite();
        let config = db.config(&format!(
            "{setting}[cache.semantic]\nembeddings_model = \"emb\"\n{}\
             [[models]]\nname = \"emb\"\ndeployments = [{{ provider = \"simulated\" }}]\n",
            config_toml(&upstream, "")
        ));
        let (_state, router) = state_and_router(&config).await;
        let alice = identity("alice", Tier::Free, &[]);
        let mut labels = Vec::new();
        // The same first message in two new conversations: the same prompt.
        for _ in 0..2 {
            let (status, conversation) = call(
                &router,
                "POST",
                "/v1/conversations",
                &alice,
                Some(json!({ "model": "m" })),
            )
            .await;
            assert_eq!(status, StatusCode::CREATED);
            let path = format!(
                "/v1/conversations/{}/messages",
                conversation["id"].as_str().unwrap()
            );
            let body = json!({ "content": "What is the capital of France?" });
            let (status, headers, text) =
                send(&router, signed("POST", &path, &alice, &[], Some(body))).await;
            assert_eq!(status, StatusCode::CREATED, "{text}");
            labels.push(
                headers
                    .get("x-sluice-semantic-cache")
                    .map(|v| v.to_str().unwrap().to_string()),
            );
        }
        if reused {
            assert_eq!(labels, [Some("miss".into()), Some("hit".into())]);
            assert_eq!(
                upstream.seen().len(),
                1,
                "the second turn made no upstream call"
            );
        } else {
            assert_eq!(
                labels,
                [None, None],
                "turns leave the semantic cache alone by default"
            );
            assert_eq!(upstream.seen().len(), 2);
        }
    }
}
