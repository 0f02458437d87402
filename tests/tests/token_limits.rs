//! Token limits at the edge through the real processes: a request is admitted
//! against its estimate (prompt bytes / 4 plus its `max_tokens`) and settled
//! to the usage the answer reports once it ends, streams included; cache hits
//! cost nothing; two edge hosts on one Redis stay within the limit plus one
//! request's estimate; refusals are 429 with `Retry-After` in the route's shape.
#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "tests: any failure should fail the test"
)]

use serde_json::{Value, json};
use sluice_e2e::{Options, Stack, unique};
use std::time::Duration;

const REDIS: &str =
    "[key_value_store.default]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:6379\"\n";

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn remaining_tokens(&self) -> u64 {
        self.header("x-ratelimit-remaining-tokens")
            .unwrap_or_else(|| panic!("no token headers: {:?}", self.headers))
            .parse()
            .unwrap()
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
}

async fn post(url: &str, key: &str, body: &Value) -> Answer {
    let response = reqwest::Client::new()
        .post(url)
        .bearer_auth(key)
        .json(body)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap();
    Answer {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        text: response.text().await.unwrap(),
    }
}

async fn admin(method: &str, url: &str, key: &str, body: Value) -> Value {
    let response = reqwest::Client::new()
        .request(method.parse().unwrap(), url)
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert!(status < 300, "{method} {url}: {status} {body}");
    body
}

/// What the edge admits `body` for (the rule in `sluice_core::token_estimate`).
fn estimate(body: &Value) -> u64 {
    let bytes = serde_json::to_vec(body).unwrap().len() as u64;
    bytes.div_ceil(4) + body["max_tokens"].as_u64().unwrap()
}

fn chat(text: &str, max_tokens: u64, stream: bool) -> Value {
    let mut body = json!({ "model": "sluice-sim-1", "max_tokens": max_tokens,
        "messages": [{ "role": "user", "content": text }] });
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({ "include_usage": true });
    }
    body
}

/// The `usage.total_tokens` of a stream's usage chunk.
fn streamed_total(text: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find_map(|c| c["usage"]["total_tokens"].as_u64())
        .unwrap_or_else(|| panic!("no usage in {text}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_users_token_limit_is_charged_the_real_usage_of_answers_and_streams() {
    let admin_key = unique("sk-admin");
    let stack = Stack::start(Options {
        edge_variables: vec![
            ("rate_limit_free", "100000/1h".into()),
            ("rate_limit_ip", "unlimited".into()),
            ("tokens_free", "50/1h".into()),
        ],
        runtime_config: Some(REDIS.into()),
        api_keys: vec![(admin_key.clone(), "root".into(), "admin")],
        ..Options::default()
    })
    .await;
    let edge = &stack.edge;
    let subject = unique("user");
    let created = admin(
        "POST",
        &format!("{edge}/v1/admin/keys"),
        &admin_key,
        json!({ "subject": subject }),
    )
    .await;
    let key = created["key"].as_str().unwrap().to_string();
    // The user's own limit replaces the free tier's 50 (set before the
    // key's first use, as the edge caches the key lookup).
    let limit = 4000u64;
    let set = admin(
        "PATCH",
        &format!("{edge}/v1/admin/users/{subject}"),
        &admin_key,
        json!({ "token_limit": format!("{limit}/1000h") }),
    )
    .await;
    assert_eq!(set["user"]["token_limit"], "4000/1000h");
    let url = format!("{edge}/v1/chat/completions");

    // Admitted for its estimate; the headers list the token policy beside
    // the request policies.
    let first = chat("hello there, how are you today?", 50, false);
    let a = post(&url, &key, &first).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.remaining_tokens(), limit - estimate(&first));
    let policy = a.header("ratelimit-policy").unwrap();
    assert!(
        policy.contains("\"free\";q=100000") && policy.contains("\"tokens-user\";q=4000"),
        "{policy}"
    );
    assert!(
        a.header("ratelimit")
            .unwrap()
            .contains("\"tokens-user\";r=")
    );
    let used_a: u64 = a.header("x-sluice-total-tokens").unwrap().parse().unwrap();
    assert!(used_a < estimate(&first));

    // The next one sees the first settled to what it used.
    let second = chat("tell me something else", 40, false);
    let b = post(&url, &key, &second).await;
    assert_eq!(b.status, 200, "{}", b.text);
    assert_eq!(b.remaining_tokens(), limit - used_a - estimate(&second));
    let used_b: u64 = b.header("x-sluice-total-tokens").unwrap().parse().unwrap();

    // The same request again is an edge cache hit: no tokens.
    let hit = post(&url, &key, &first).await;
    assert_eq!(hit.header("x-cache"), Some("HIT"));

    // A stream: the client gets the origin's events, no usage comment, and
    // it is settled to the usage of its last chunk once it ends.
    let streamed = chat("stream me a reply please", 30, true);
    let s = post(&url, &key, &streamed).await;
    assert_eq!(s.status, 200, "{}", s.text);
    assert!(
        !s.text.contains("x-sluice-usage") && s.text.ends_with("data: [DONE]\n\n"),
        "{}",
        s.text
    );
    let used_s = streamed_total(&s.text);
    assert_eq!(
        s.remaining_tokens(),
        limit - used_a - used_b - estimate(&streamed)
    );
    let third = chat("and one more", 20, false);
    let c = post(&url, &key, &third).await;
    assert_eq!(c.status, 200, "{}", c.text);
    assert_eq!(
        c.remaining_tokens(),
        limit - used_a - used_b - used_s - estimate(&third),
        "the hit cost nothing and the stream was settled"
    );

    // A stream on Anthropic's route settles the same way.
    let messages = json!({ "model": "sluice-sim-1", "max_tokens": 25, "stream": true,
        "messages": [{ "role": "user", "content": "hi from the messages api" }] });
    let m = post(&format!("{edge}/v1/messages"), &key, &messages).await;
    assert_eq!(m.status, 200, "{}", m.text);
    assert!(!m.text.contains("x-sluice-usage"), "{}", m.text);
    assert!(m.text.contains("event: message_stop"), "{}", m.text);

    // Past the limit: 429 with Retry-After, OpenAI's token-limit shape on
    // chat and Anthropic's on /v1/messages.
    let big = chat("too much", 5000, false);
    let refused = post(&url, &key, &big).await;
    assert_eq!(refused.status, 429, "{}", refused.text);
    let error = refused.json();
    assert_eq!(error["error"]["type"], "tokens", "{error}");
    assert_eq!(error["error"]["code"], "rate_limit_exceeded");
    assert!(
        refused
            .header("retry-after")
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    assert!(
        refused
            .header("ratelimit-policy")
            .unwrap()
            .contains("tokens-user")
    );
    let big_messages = json!({ "model": "sluice-sim-1", "max_tokens": 5000,
        "messages": [{ "role": "user", "content": "too much" }] });
    let refused = post(&format!("{edge}/v1/messages"), &key, &big_messages).await;
    assert_eq!(refused.status, 429, "{}", refused.text);
    assert_eq!(refused.json()["type"], "error");
    assert_eq!(refused.json()["error"]["type"], "rate_limit_error");
    assert!(refused.header("retry-after").is_some());

    // A key's own limit applies beside its user's.
    let second_key = admin(
        "POST",
        &format!("{edge}/v1/admin/keys"),
        &admin_key,
        json!({ "subject": subject, "token_limit": "100/1000h" }),
    )
    .await;
    let second_key = second_key["key"].as_str().unwrap();
    let over_key = post(&url, second_key, &chat("a little", 150, false)).await;
    assert_eq!(over_key.status, 429, "{}", over_key.text);
    assert!(
        over_key.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tokens-key")
    );
    let under_key = post(&url, second_key, &chat("a little", 20, false)).await;
    assert_eq!(under_key.status, 200, "{}", under_key.text);
    let policy = under_key.header("ratelimit-policy").unwrap();
    assert!(
        policy.contains("tokens-key") && policy.contains("tokens-user"),
        "{policy}"
    );

    // A limit that does not parse is refused by the admin API.
    let response = reqwest::Client::new()
        .patch(format!("{edge}/v1/admin/users/{subject}"))
        .bearer_auth(&admin_key)
        .json(&json!({ "token_limit": "lots" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["param"], "token_limit", "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_edges_on_one_redis_stay_within_the_limit_plus_one_estimate() {
    let limit = 3000u64;
    let key = unique("sk-shared");
    let subject = unique("shared");
    let stack = Stack::start(Options {
        edge_variables: vec![
            ("rate_limit_free", "100000/1h".into()),
            ("rate_limit_ip", "unlimited".into()),
            ("tokens_free", format!("{limit}/1000h")),
        ],
        runtime_config: Some(REDIS.into()),
        edge_hosts: 2,
        api_keys: vec![(key.clone(), subject, "free")],
        ..Options::default()
    })
    .await;

    // 200 requests, 40 at a time over both edges, half of them streamed:
    // each is admitted for ~90 tokens and uses ~25, so the burst alone
    // fits ~33 and settlement makes room for more.
    let mut results = Vec::new();
    let mut max_estimate = 0;
    for wave in 0..5 {
        let mut tasks = Vec::new();
        for i in 0..40 {
            let n = wave * 40 + i;
            let body = chat(&format!("request number {n} of the test"), 60, n % 2 == 0);
            max_estimate = max_estimate.max(estimate(&body));
            let url = format!("{}/v1/chat/completions", stack.edges[n % 2]);
            let key = key.clone();
            tasks.push(tokio::spawn(async move { post(&url, &key, &body).await }));
        }
        for task in tasks {
            results.push(task.await.unwrap());
        }
    }
    let (mut admitted, mut used, mut refused) = (0u64, 0u64, 0u64);
    for answer in &results {
        match answer.status {
            200 => {
                admitted += 1;
                used += match answer.header("x-sluice-total-tokens") {
                    Some(total) => total.parse::<u64>().unwrap(),
                    None => streamed_total(&answer.text),
                };
                assert!(!answer.text.contains("x-sluice-usage"), "{}", answer.text);
            }
            429 => {
                refused += 1;
                assert_eq!(answer.json()["error"]["type"], "tokens", "{}", answer.text);
            }
            other => panic!("unexpected {other}: {}", answer.text),
        }
    }
    println!(
        "token limit {limit}: {admitted} admitted, {refused} refused, {used} tokens used \
         (largest estimate {max_estimate})"
    );
    assert!(refused > 0, "the limit was never reached");
    assert!(
        used <= limit + max_estimate,
        "{used} tokens used of {limit} (+{max_estimate})"
    );
    // More than estimates alone would admit: settling gave the rest back.
    assert!(
        admitted * max_estimate > limit + max_estimate,
        "{admitted} admitted"
    );
}
