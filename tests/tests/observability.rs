//! The figures an operator needs beyond request counts, from the running
//! binaries after real traffic: database statement latency and slow
//! statements (every statement is slow at a 0 ms threshold), job processing
//! time, open connections on both tiers, and cache entries.
#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "tests: any failure should fail the test"
)]

use serde_json::{Value, json};
use sluice_e2e::{DEMO_KEY, Options, Stack, wait_for_job};

/// The value of the first sample of `name` whose labels contain `labels`.
fn sample(metrics: &str, name: &str, labels: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.split([' ', '{']).next() == Some(name) && (labels.is_empty() || l.contains(labels))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} {labels} in\n{metrics}"))
}

async fn metrics(admin: &str) -> String {
    reqwest::get(format!("{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn statements_jobs_connections_and_caches_are_measured() {
    let stack = Stack::start(Options {
        origin_env: vec![("SLUICE_DATABASE__SLOW_STATEMENT_MS", "0".into())],
        ..Options::default()
    })
    .await;
    let edge = &stack.edge;
    // One client, so its connection to the edge stays open between calls.
    let client = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        client
            .post(format!("{edge}{path}"))
            .bearer_auth(DEMO_KEY)
            .json(&body)
            .send()
    };
    let created: Value = post("/v1/conversations", json!({ "title": "measured" }))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap();
    let read = client
        .get(format!("{edge}/v1/conversations/{id}"))
        .bearer_auth(DEMO_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status().as_u16(), 200);
    let job: Value = post(
        "/v1/jobs",
        json!({ "model": "sluice-sim-1", "messages": [{ "role": "user", "content": "timed" }] }),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let done = wait_for_job(
        edge,
        DEMO_KEY,
        job["job_id"].as_str().unwrap(),
        &["completed", "failed"],
    )
    .await;
    assert_eq!(done["status"], "completed", "{done}");

    let origin = metrics(&stack.origin_admin).await;
    assert!(sample(&origin, "sluice_db_query_duration_seconds_count", "") > 10.0);
    assert!(sample(&origin, "sluice_db_slow_queries_total", "") > 10.0);
    assert!(
        sample(
            &origin,
            "sluice_job_processing_duration_seconds_count",
            "outcome=\"completed\""
        ) >= 1.0
    );
    // The edge keeps its connections to the origin open.
    assert!(sample(&origin, "sluice_http_connections_active", "") >= 1.0);
    assert!(sample(&origin, "sluice_origin_cache_entries", "") >= 1.0);

    let host = metrics(&stack.edge_admins[0]).await;
    assert!(sample(&host, "sluice_host_connections_active", "") >= 1.0);
    assert!(sample(&host, "sluice_host_kv_entries", "store=\"default\"") >= 1.0);
    assert_eq!(sample(&host, "sluice_host_kv_evictions_total", ""), 0.0);
}
