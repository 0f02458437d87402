//! Workers heal themselves, through the real edge and origin: a job whose
//! generation panics (the simulated provider's fault injection) takes its
//! worker down; the worker is started again (counted in a metric), the job
//! goes back to the queue as a failed attempt and ends in the dead-letter
//! queue once its attempts are spent, and the next job is served by the one
//! worker there is.
#![expect(
    clippy::unwrap_used,
    reason = "tests: any failure should fail the test"
)]

use serde_json::{Value, json};
use sluice_e2e::{DEMO_KEY, Options, Stack, wait_for_job};

async fn submit(edge: &str, text: &str) -> String {
    let response = reqwest::Client::new()
        .post(format!("{edge}/v1/jobs"))
        .bearer_auth(DEMO_KEY)
        .json(&json!({ "model": "sluice-sim-1",
            "messages": [{ "role": "user", "content": text }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    let job: Value = response.json().await.unwrap();
    job["job_id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panicking_job_restarts_its_worker_and_ends_dead_lettered() {
    let stack = Stack::start(Options {
        origin_env: vec![
            ("SLUICE_SIMULATED__PANIC_ON", "trigger-a-panic".into()),
            ("SLUICE_QUEUE__WORKERS", "1".into()),
            ("SLUICE_QUEUE__MAX_ATTEMPTS", "2".into()),
            ("SLUICE_QUEUE__BACKOFF_BASE_MS", "50".into()),
            ("SLUICE_QUEUE__BACKOFF_MAX_MS", "100".into()),
        ],
        ..Options::default()
    })
    .await;
    let edge = &stack.edge;

    let poison = submit(edge, "please trigger-a-panic now").await;
    let job = wait_for_job(edge, DEMO_KEY, &poison, &["failed", "completed"]).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert!(
        job["error"]
            .as_str()
            .unwrap_or_default()
            .contains("the worker panicked"),
        "{job}"
    );
    assert_eq!(job["attempts"], 2, "{job}");

    // The only worker was started again and serves the next job.
    let fine = submit(edge, "an ordinary job").await;
    let job = wait_for_job(edge, DEMO_KEY, &fine, &["completed", "failed"]).await;
    assert_eq!(job["status"], "completed", "{job}");

    let metrics = reqwest::get(format!("{}/metrics", stack.origin_admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let restarts: f64 = metrics
        .lines()
        .find(|l| l.starts_with("sluice_queue_worker_restarts_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no restart count in {metrics}"));
    assert!(restarts >= 2.0, "{restarts} restarts");
}
