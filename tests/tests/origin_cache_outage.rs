//! The origin's L1 keeps serving while its shared L2 (Redis) is down: reads
//! that were cached stay off the database, the instance's own writes are
//! seen at once, and when Redis is back the answers stay right.
#![expect(
    clippy::unwrap_used,
    reason = "tests: any failure should fail the test"
)]

use serde_json::{Value, json};
use sluice_e2e::{DEMO_KEY, Options, RedisServer, Stack, unique};
use std::time::Duration;

async fn call(method: &str, url: &str, key: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .request(method.parse().unwrap(), url)
        .bearer_auth(key)
        .timeout(Duration::from_secs(10));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn titles(list: &Value) -> Vec<String> {
    let mut titles: Vec<String> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["title"].as_str().unwrap_or_default().to_string())
        .collect();
    titles.sort();
    titles
}

#[tokio::test(flavor = "multi_thread")]
async fn l1_serves_while_redis_is_down_and_sees_its_own_writes() {
    let mut redis = RedisServer::start().await;
    let admin = unique("sk-admin");
    let stack = Stack::start(Options {
        // The edge caches no conversation reads here, so each reaches the origin.
        edge_variables: vec![("cache_routes", "GET /v1/models=300".into())],
        api_keys: vec![(admin.clone(), "root".into(), "admin")],
        origin_env: vec![("SLUICE_CACHE__REDIS_URL", redis.url())],
        ..Options::default()
    })
    .await;
    let edge = &stack.edge;
    let list_url = format!("{edge}/v1/conversations");
    let database_reads = || async {
        let (status, stats) = call("GET", &format!("{edge}/v1/admin/cache"), &admin, None).await;
        assert_eq!(status, 200, "{stats}");
        stats["conversation_database_reads"].as_u64().unwrap()
    };

    let (status, body) = call(
        "POST",
        &list_url,
        DEMO_KEY,
        Some(json!({ "title": "first" })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, list) = call("GET", &list_url, DEMO_KEY, None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(titles(&list), ["first"]);

    redis.stop();
    let before = database_reads().await;
    for _ in 0..3 {
        let (status, list) = call("GET", &list_url, DEMO_KEY, None).await;
        assert_eq!(status, 200, "{list}");
        assert_eq!(titles(&list), ["first"]);
    }
    assert_eq!(
        database_reads().await,
        before,
        "with Redis down, cached reads are served from L1"
    );

    // A write during the outage is seen by the next read here.
    let (status, body) = call(
        "POST",
        &list_url,
        DEMO_KEY,
        Some(json!({ "title": "second" })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, list) = call("GET", &list_url, DEMO_KEY, None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(titles(&list), ["first", "second"]);

    // Redis back: still right, and cached again.
    redis.resume().await;
    for _ in 0..2 {
        let (status, list) = call("GET", &list_url, DEMO_KEY, None).await;
        assert_eq!(status, 200, "{list}");
        assert_eq!(titles(&list), ["first", "second"]);
    }
}
