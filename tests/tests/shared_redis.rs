//! Edge hosts keeping their state in Redis: several hosts sharing one Redis stay
//! within the limit, share the cache, and ride out a Redis outage by each
//! policy's fail mode, recovering by themselves.
//!
//! The shared Redis is the machine's (127.0.0.1:6379, started by the test
//! command when down); the outage test runs a Redis of its own so stopping it
//! disturbs nothing else. Subjects are unique per run, so records left in the
//! shared Redis by an earlier run never count.
#![expect(
    clippy::unwrap_used,
    reason = "tests: any failure should fail the test"
)]

use sluice_e2e::{Options, RedisServer, Stack, unique};
use std::time::{Duration, Instant};

fn redis_config(url: &str) -> String {
    format!("[key_value_store.default]\ntype = \"redis\"\nurl = \"{url}\"\n")
}

async fn get(url: &str, key: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(url)
        .bearer_auth(key)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hosts_on_one_redis_admit_at_most_the_limit_and_share_the_cache() {
    const LIMIT: usize = 200;
    const REQUESTS: usize = 600;
    let key = unique("sk-shared");
    let subject = unique("shared");
    let stack = Stack::start(Options {
        edge_variables: vec![
            ("rate_limit_free", format!("{LIMIT}/1h")),
            ("rate_limit_ip", "unlimited".into()),
        ],
        runtime_config: Some(redis_config("redis://127.0.0.1:6379")),
        edge_hosts: 2,
        api_keys: vec![(key.clone(), subject.clone(), "free")],
        ..Options::default()
    })
    .await;

    // The cache is shared: stored through one host, served by the other.
    let me_a = format!("{}/v1/me", stack.edges[0]);
    let me_b = format!("{}/v1/me", stack.edges[1]);
    assert_eq!(get(&me_a, &key).await.headers()["x-cache"], "MISS");
    let hit = get(&me_b, &key).await;
    assert_eq!(hit.headers()["x-cache"], "HIT");
    assert_eq!(
        hit.json::<serde_json::Value>().await.unwrap()["subject"],
        subject.as_str()
    );

    // Concurrent load on both hosts, one subject: 2 requests already counted.
    let client = reqwest::Client::new();
    let semaphore = std::sync::Arc::new(tokio::sync::Semaphore::new(48));
    let mut tasks = Vec::new();
    for i in 0..REQUESTS {
        let url = format!("{}/v1/models", stack.edges[i % 2]);
        let (client, key, semaphore) = (client.clone(), key.clone(), semaphore.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = semaphore.acquire().await.unwrap();
            client
                .get(url)
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let (mut admitted, mut refused) = (2, 0);
    for task in tasks {
        match task.await.unwrap() {
            200 => admitted += 1,
            429 => refused += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(admitted + refused, REQUESTS + 2);
    // One token returns every 18 s; the run takes far less, so the burst is all
    // there is (a refusal racing another at the boundary may leave a slot unused).
    assert!(
        (LIMIT * 95 / 100..=LIMIT + LIMIT / 100).contains(&admitted),
        "admitted {admitted} of {} with a limit of {LIMIT} over two hosts",
        REQUESTS + 2
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_outage_follows_each_policys_fail_mode_and_heals_itself() {
    let mut redis = RedisServer::start().await;
    let (free_key, premium_key) = (unique("sk-free"), unique("sk-premium"));
    let stack = Stack::start(Options {
        edge_variables: vec![
            ("rate_limit_free", "5/1h".into()),
            ("rate_limit_premium", "100/1h;fail=closed".into()),
            ("rate_limit_ip", "unlimited".into()),
            ("rate_limit_fail_mode", "open".into()),
        ],
        runtime_config: Some(redis_config(&redis.url())),
        edge_hosts: 1,
        api_keys: vec![
            (free_key.clone(), unique("free"), "free"),
            (premium_key.clone(), unique("premium"), "premium"),
        ],
        ..Options::default()
    })
    .await;
    let models = format!("{}/v1/models", stack.edge);

    for _ in 0..5 {
        let r = get(&models, &free_key).await;
        assert_eq!(r.status(), 200);
        assert!(r.headers().contains_key("x-ratelimit-remaining"));
    }
    assert_eq!(get(&models, &free_key).await.status(), 429);

    redis.stop();
    for _ in 0..5 {
        let started = Instant::now();
        let free = get(&models, &free_key).await;
        assert_eq!(free.status(), 200, "free fails open: admitted, unlimited");
        assert!(!free.headers().contains_key("x-ratelimit-remaining"));
        let premium = get(&models, &premium_key).await;
        assert_eq!(premium.status(), 503, "premium fails closed");
        assert_eq!(premium.headers()["retry-after"], "1");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "an outage costs a bounded wait, took {:?}",
            started.elapsed()
        );
    }

    // Back (empty, as it keeps nothing on disk): the hosts reconnect by themselves.
    redis.resume().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = get(&models, &premium_key).await;
        if r.status() == 200 && r.headers().contains_key("x-ratelimit-remaining") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recovery 20 s after Redis returned: {}",
            r.status()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let statuses: Vec<u16> = sequential_statuses(&models, &free_key, 6).await;
    assert_eq!(
        statuses,
        [200, 200, 200, 200, 200, 429],
        "limits apply again"
    );
}

async fn sequential_statuses(url: &str, key: &str, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(get(url, key).await.status().as_u16());
    }
    out
}
