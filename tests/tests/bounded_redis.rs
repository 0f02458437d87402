//! The edge on a bounded Redis (`maxmemory` with `allkeys-lru`, as every
//! shipped deployment runs it), filled past its bound with stale records such
//! as superseded cache entries and counters of clients long gone: Redis
//! evicts the least recently used, and the live rate-limit records and cache
//! entries, used a moment ago, stay right.
#![expect(
    clippy::unwrap_used,
    reason = "tests: any failure should fail the test"
)]

use serde_json::json;
use sluice_e2e::{DEMO_KEY, OTHER_KEY, Options, RedisServer, Stack};
use std::time::Duration;

const MAXMEMORY: u64 = 4 << 20;

async fn info_field(connection: &mut redis::aio::MultiplexedConnection, name: &str) -> u64 {
    let info: String = redis::cmd("INFO").query_async(connection).await.unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn past_its_bound_redis_evicts_stale_records_and_limits_and_caches_stay_right() {
    let redis = RedisServer::start_with(&[
        "--maxmemory",
        &MAXMEMORY.to_string(),
        "--maxmemory-policy",
        "allkeys-lru",
    ])
    .await;
    let stack = Stack::start(Options {
        edge_variables: vec![
            ("rate_limit_free", "5/1h".into()),
            ("rate_limit_ip", "unlimited".into()),
        ],
        runtime_config: Some(format!(
            "[key_value_store.default]\ntype = \"redis\"\nurl = \"{}\"\n",
            redis.url()
        )),
        ..Options::default()
    })
    .await;
    let mut connection = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();

    // Twice the bound in stale records.
    for batch in 0..64 {
        let mut pipe = redis::pipe();
        for i in 0..500 {
            pipe.set(format!("stale:{batch}:{i}"), vec![b'x'; 256])
                .ignore();
        }
        pipe.query_async::<()>(&mut connection).await.unwrap();
    }
    assert!(info_field(&mut connection, "evicted_keys").await > 0);
    // Redis's LRU clock ticks in seconds: let the stale records age.
    tokio::time::sleep(Duration::from_millis(2100)).await;

    // A rate limit still admits exactly its quota (every write now evicts).
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let response = client
            .get(format!("{}/v1/me", stack.edge))
            .bearer_auth(DEMO_KEY)
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429]);

    // A response is still stored and served from the cache.
    let body = json!({ "model": "sluice-sim-1", "max_tokens": 5,
        "messages": [{ "role": "user", "content": "cached on a full store" }] });
    let mut labels = Vec::new();
    for _ in 0..2 {
        let response = client
            .post(format!("{}/v1/chat/completions", stack.edge))
            .bearer_auth(OTHER_KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        labels.push(response.headers()["x-cache"].to_str().unwrap().to_string());
    }
    assert_eq!(labels, ["MISS", "HIT"]);

    let used = info_field(&mut connection, "used_memory").await;
    assert!(used <= MAXMEMORY + (MAXMEMORY / 10), "{used} bytes used");
}
