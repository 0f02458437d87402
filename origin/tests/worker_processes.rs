//! The queue across real processes: `sluice-origin worker` killed with
//! SIGKILL mid-run and restarted, stopped with SIGTERM (drain, then release),
//! and two worker processes sharing one Postgres queue.
#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers: any failure should fail the test"
)]

mod common;

use common::{SECRET, TestDb};
use serde_json::json;
use sluice_origin::priority::Priority;
use sluice_origin::queue::streams::JobStreams;
use sluice_origin::queue::{JobQueue, JobStatus, NewJob};
use sqlx::Row;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Setup {
    db: TestDb,
    pool: sluice_origin::db::Db,
    queue: JobQueue,
    dir: tempfile::TempDir,
}

/// The shared Redis of this machine kind (the test command starts it).
const REDIS_URL: &str = "redis://127.0.0.1:6379";

/// A database with `jobs` queued (`job 0`, `job 1`, ...), delivered through
/// Redis Streams under `streams` when given.
async fn setup(db: TestDb, jobs: usize, streams: Option<&str>) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let config = db.config("");
    let pool = sluice_origin::db::connect(&config.database).await.unwrap();
    let mut queue = JobQueue::new(
        pool.clone(),
        config.queue.settings(),
        sluice_origin::db::is_postgres(&db.url),
    );
    if let Some(prefix) = streams {
        queue = queue.with_streams(
            JobStreams::connect(REDIS_URL, prefix, Duration::from_secs(2))
                .await
                .unwrap(),
        );
    }
    for n in 0..jobs {
        let request = json!({
            "model": "sluice-sim-1",
            "messages": [{ "role": "user", "content": format!("job {n}") }],
        });
        queue
            .submit(NewJob {
                subject: "crash",
                key_id: None,
                priority: Priority::Normal,
                idempotency_key: Some(&format!("job-{n}")),
                request: &request.to_string(),
            })
            .await
            .unwrap();
    }
    Setup {
        db,
        pool,
        queue,
        dir,
    }
}

/// A worker's configuration: its simulated model takes `ttft_ms` per answer;
/// `streams` names the Redis Streams prefix when jobs come that way.
fn write_config(
    dir: &Path,
    name: &str,
    db_url: &str,
    ttft_ms: u64,
    drain_secs: u64,
    streams: Option<&str>,
) -> PathBuf {
    let path = dir.join(name);
    let backend = match streams {
        Some(prefix) => format!(
            "backend = \"redis_streams\"\nredis_url = \"{REDIS_URL}\"\nstream_prefix = \"{prefix}\"\n"
        ),
        None => String::new(),
    };
    std::fs::write(
        &path,
        format!(
            "[edge]\nsecret = \"{SECRET}\"\n\
             [database]\nurl = \"{db_url}\"\nmin_connections = 1\nmax_connections = 8\n\
             [simulated]\ntime_to_first_token_ms = {ttft_ms}\n\
             [queue]\nvisibility_timeout_secs = 2\npoll_interval_ms = 50\n\
             drain_timeout_secs = {drain_secs}\n{backend}"
        ),
    )
    .unwrap();
    path
}

fn stream_prefix() -> String {
    format!("sluice:test:{}:", uuid::Uuid::new_v4().simple())
}

/// `sluice-origin worker`, logging JSON to `log`.
fn start_worker(config: &Path, concurrency: usize, log: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_sluice-origin"))
        .arg("--config")
        .arg(config)
        .arg("--log-json")
        .arg("worker")
        .arg("--concurrency")
        .arg(concurrency.to_string())
        .env("RUST_LOG", "info")
        // Several workers run at once: each takes any free admin port.
        .env("SLUICE_SERVER__ADMIN_LISTEN", "127.0.0.1:0")
        .stdout(std::fs::File::create(log).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

async fn count(setup: &Setup, status: &str) -> i64 {
    sqlx::query("SELECT COUNT(*) AS n FROM jobs WHERE status = $1")
        .bind(status)
        .fetch_one(&setup.pool)
        .await
        .unwrap()
        .try_get("n")
        .unwrap()
}

async fn wait_until(what: &str, secs: u64, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_exit(child: &mut Child, secs: u64) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("worker did not exit within {secs} s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every job completed, once, with the answer to its own request.
async fn assert_all_completed_once(setup: &Setup, jobs: usize) -> i64 {
    let mut result_ids = HashSet::new();
    let mut attempts = 0;
    for n in 0..jobs {
        let (job, created) = setup
            .queue
            .submit(NewJob {
                subject: "crash",
                key_id: None,
                priority: Priority::Normal,
                idempotency_key: Some(&format!("job-{n}")),
                request: "{}",
            })
            .await
            .unwrap();
        assert!(!created, "the idempotency key finds the job");
        assert_eq!(job.status, JobStatus::Completed, "job {n}: {job:?}");
        let result = job.result.unwrap();
        let content = result["choices"][0]["message"]["content"].as_str().unwrap();
        assert!(content.ends_with(&format!("job {n}")), "{content}");
        assert!(result_ids.insert(result["id"].as_str().unwrap().to_string()));
        attempts += job.attempts;
    }
    assert_eq!(
        count(setup, "completed").await,
        i64::try_from(jobs).unwrap()
    );
    attempts
}

async fn kill_9_mid_run_then_restart(streams: Option<&str>) {
    const JOBS: usize = 40;
    let setup = setup(TestDb::sqlite(), JOBS, streams).await;
    let config = write_config(
        setup.dir.path(),
        "worker.toml",
        &setup.db.url,
        300,
        10,
        streams,
    );
    let log = setup.dir.path().join("first.log");

    let mut worker = start_worker(&config, 4, &log);
    wait_until("some jobs to complete", 60, async || {
        count(&setup, "completed").await >= 8
    })
    .await;
    worker.kill().unwrap(); // SIGKILL: no chance to release anything
    worker.wait().unwrap();
    let interrupted = count(&setup, "processing").await;
    assert!(interrupted > 0, "the kill caught jobs mid-run");
    let done_before = count(&setup, "completed").await;
    assert!(done_before < i64::try_from(JOBS).unwrap());

    let mut worker = start_worker(&config, 4, &setup.dir.path().join("second.log"));
    wait_until("every job to complete", 120, async || {
        count(&setup, "completed").await == i64::try_from(JOBS).unwrap()
    })
    .await;
    sigterm(&worker);
    assert!(wait_exit(&mut worker, 20).success());
    let attempts = assert_all_completed_once(&setup, JOBS).await;
    // Only the interrupted jobs ran twice.
    assert_eq!(attempts, i64::try_from(JOBS).unwrap() + interrupted);
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_run_then_restart_loses_and_duplicates_nothing() {
    kill_9_mid_run_then_restart(None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_run_with_redis_streams_reclaims_the_pending_deliveries() {
    kill_9_mid_run_then_restart(Some(&stream_prefix())).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_finishes_running_jobs_within_the_drain_time_and_releases_the_rest() {
    // Drain long enough: the running jobs finish, nothing new starts.
    let setup = setup(TestDb::sqlite(), 8, None).await;
    let config = write_config(setup.dir.path(), "drain.toml", &setup.db.url, 800, 10, None);
    let mut worker = start_worker(&config, 2, &setup.dir.path().join("drain.log"));
    wait_until("two jobs running", 30, async || {
        count(&setup, "processing").await == 2
    })
    .await;
    sigterm(&worker);
    assert!(wait_exit(&mut worker, 15).success());
    assert_eq!(count(&setup, "processing").await, 0);
    let completed = count(&setup, "completed").await;
    assert!((2..8).contains(&completed), "{completed}");
    assert_eq!(count(&setup, "queued").await, 8 - completed);

    // Drain too short: running jobs go back to the queue at once, attempts
    // untouched, and are not held for the visibility timeout.
    let config = write_config(
        setup.dir.path(),
        "short.toml",
        &setup.db.url,
        5_000,
        1,
        None,
    );
    let mut worker = start_worker(&config, 2, &setup.dir.path().join("short.log"));
    wait_until("two jobs running", 30, async || {
        count(&setup, "processing").await == 2
    })
    .await;
    let stopped_at = Instant::now();
    sigterm(&worker);
    assert!(wait_exit(&mut worker, 10).success());
    assert!(stopped_at.elapsed() < Duration::from_secs(4));
    assert_eq!(count(&setup, "processing").await, 0);
    assert_eq!(count(&setup, "queued").await, 8 - completed);
    let max_attempts: i64 =
        sqlx::query("SELECT MAX(attempts) AS n FROM jobs WHERE status = 'queued'")
            .fetch_one(&setup.pool)
            .await
            .unwrap()
            .try_get("n")
            .unwrap();
    assert_eq!(max_attempts, 0, "a released job's attempt does not count");
}

async fn two_worker_processes(db: TestDb, streams: Option<&str>) {
    const JOBS: usize = 60;
    let setup = setup(db, JOBS, streams).await;
    let config = write_config(
        setup.dir.path(),
        "two.toml",
        &setup.db.url,
        100,
        10,
        streams,
    );
    let logs = [
        setup.dir.path().join("a.log"),
        setup.dir.path().join("b.log"),
    ];
    let mut workers: Vec<Child> = logs
        .iter()
        .map(|log| start_worker(&config, 3, log))
        .collect();
    wait_until("every job to complete", 120, async || {
        count(&setup, "completed").await == i64::try_from(JOBS).unwrap()
    })
    .await;
    for worker in &mut workers {
        sigterm(worker);
        assert!(wait_exit(worker, 20).success());
    }
    let attempts = assert_all_completed_once(&setup, JOBS).await;
    assert_eq!(attempts, i64::try_from(JOBS).unwrap(), "no job ran twice");
    for log in &logs {
        let text = std::fs::read_to_string(log).unwrap();
        let finished = text
            .lines()
            .filter(|l| l.contains("\"job_finished\"") && l.contains("\"completed\""))
            .count();
        assert!(finished > 0, "both processes took jobs: {text}");
    }
    setup.pool.close().await;
    setup.db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_worker_processes_share_a_postgres_queue() {
    two_worker_processes(TestDb::postgres().await, None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_worker_processes_share_a_redis_streams_queue() {
    two_worker_processes(TestDb::postgres().await, Some(&stream_prefix())).await;
}
