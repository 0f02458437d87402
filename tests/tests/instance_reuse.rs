//! Consecutive instance reuse in sluice-host, through the real edge and
//! origin: two principals alternating on one reused instance never see each
//! other's identity, cache entries, rate-limit or token counters, or
//! headers; a revoked key is refused on a reused instance within
//! `api_key_cache_seconds`, as on a fresh one; and the same holds with reuse
//! off (an instance per request, as Spin serves WASI 0.2). The host's
//! metrics show which happened.
#![expect(
    clippy::unwrap_used,
    reason = "tests: any failure should fail the test"
)]

use serde_json::{Value, json};
use sluice_e2e::{DEMO_KEY, OTHER_KEY, Options, Stack, unique};
use std::time::Duration;

/// A counter of the host's metrics, summed over its labels when `label` is
/// empty (else the series with that label text).
async fn metric(admin: &str, name: &str, label: &str) -> f64 {
    let text = reqwest::get(format!("{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(name) && (label.is_empty() || l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

async fn call(stack: &Stack, key: &str, method: &str, path: &str, body: Option<Value>) -> Answer {
    let client = reqwest::Client::new();
    let mut request = client
        .request(method.parse().unwrap(), format!("{}{path}", stack.edge))
        .bearer_auth(key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
    }
}

fn header(answer: &Answer, name: &str) -> String {
    answer
        .headers
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

async fn two_principals_alternate(reuse: u32) {
    let admin_key = unique("sk-admin");
    let stack = Stack::start(Options {
        host_env: vec![
            ("SLUICE_HOST_MAX_INSTANCE_REUSE_COUNT", reuse.to_string()),
            ("SLUICE_HOST_IDLE_INSTANCE_TIMEOUT", "30s".into()),
        ],
        edge_variables: vec![
            ("tokens_free", "1000000/1h".into()),
            ("api_key_cache_seconds", "1".into()),
        ],
        api_keys: vec![(admin_key.clone(), "root".into(), "admin")],
        ..Options::default()
    })
    .await;
    let admin = &stack.edge_admins[0];
    let before = metric(admin, "sluice_host_instantiations_total", "gateway").await;
    let chat = json!({ "model": "sluice-sim-1", "max_tokens": 8,
        "messages": [{ "role": "user", "content": format!("shared question {}", unique("q")) }] });
    let mut alice_remaining = Vec::new();
    let mut bob_remaining = Vec::new();
    // One request at a time: with reuse on, one instance serves them all.
    for round in 0..6 {
        for (key, subject) in [(DEMO_KEY, "alice"), (OTHER_KEY, "bob")] {
            let me = call(&stack, key, "GET", "/v1/me", None).await;
            assert_eq!(me.status, 200);
            assert_eq!(me.body["subject"], subject, "round {round}: {}", me.body);
            let answer = call(
                &stack,
                key,
                "POST",
                "/v1/chat/completions",
                Some(chat.clone()),
            )
            .await;
            assert_eq!(answer.status, 200);
            // Each caller's first answer is its own miss, never the other's entry.
            let expected = if round == 0 { "MISS" } else { "HIT" };
            assert_eq!(
                header(&answer, "x-cache"),
                expected,
                "{subject} round {round}"
            );
            let remaining: u64 = header(&answer, "x-ratelimit-remaining").parse().unwrap();
            let tokens = header(&answer, "x-ratelimit-remaining-tokens");
            if subject == "alice" {
                alice_remaining.push(remaining);
                // Tokens are charged on a miss (a hit costs none).
                assert!(
                    round > 0 || !tokens.is_empty(),
                    "alice (free) has a token limit"
                );
            } else {
                bob_remaining.push(remaining);
                assert!(tokens.is_empty(), "bob (premium) has none: {tokens}");
            }
        }
    }
    // Each counter moved by its own caller's requests only (two per round).
    for remaining in [&alice_remaining, &bob_remaining] {
        for pair in remaining.windows(2) {
            assert_eq!(pair[0] - pair[1], 2, "{remaining:?}");
        }
    }
    let instantiated = metric(admin, "sluice_host_instantiations_total", "gateway").await - before;
    let reused = metric(admin, "sluice_host_instance_reuses_total", "gateway").await;
    if reuse > 1 {
        assert!(
            instantiated <= 2.0,
            "{instantiated} instances for 24 requests"
        );
        assert!(reused >= 20.0, "{reused} reuses");
    } else {
        assert!(
            instantiated >= 24.0,
            "{instantiated} instances for 24 requests"
        );
        assert_eq!(reused, 0.0);
    }

    // A key issued and revoked: refused within api_key_cache_seconds.
    let created = call(
        &stack,
        &admin_key,
        "POST",
        "/v1/admin/keys",
        Some(json!({ "subject": unique("carol"), "tier": "premium" })),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let key = created.body["key"].as_str().unwrap().to_string();
    let id = created.body["id"].as_str().unwrap().to_string();
    assert_eq!(call(&stack, &key, "GET", "/v1/me", None).await.status, 200);
    let revoked = call(
        &stack,
        &admin_key,
        "DELETE",
        &format!("/v1/admin/keys/{id}"),
        None,
    )
    .await;
    assert_eq!(revoked.status, 200, "{}", revoked.body);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(
        call(&stack, &key, "GET", "/v1/me", None).await.status,
        401,
        "revoked within api_key_cache_seconds"
    );
    println!("reuse {reuse}: {instantiated} gateway instances, {reused} reuses");
}

#[tokio::test(flavor = "multi_thread")]
async fn principals_alternating_on_a_reused_instance_stay_apart() {
    two_principals_alternate(1000).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn principals_alternating_on_fresh_instances_stay_apart() {
    two_principals_alternate(1).await;
}
