//! Client -> runtime-host (spin.toml: gateway + auth + rate limit + cache) -> origin.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers: any failure should fail the test"
)]

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sluice_e2e::{DEMO_KEY, OTHER_KEY, Options, Stack};

fn chat_body(text: &str) -> Value {
    json!({ "model": "sluice-sim-1", "messages": [{ "role": "user", "content": text }] })
}

async fn post(url: &str, key: Option<&str>, body: String) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body);
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    req.send().await.unwrap()
}

async fn get(url: &str, key: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(url)
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn chat_completion_through_the_edge() {
    let stack = Stack::start(Options::default()).await;
    let r = post(
        &format!("{}/v1/chat/completions", stack.edge),
        Some(DEMO_KEY),
        chat_body("ping through the edge").to_string(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-ratelimit-limit"], "60");
    assert_eq!(r.headers()["x-sluice-provider"], "simulated");
    assert!(r.headers().contains_key("ratelimit-policy"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert!(
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains("ping through the edge")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_or_wrong_key_gets_401_with_a_challenge() {
    let stack = Stack::start(Options::default()).await;
    let url = format!("{}/v1/chat/completions", stack.edge);
    for key in [None, Some("sk-wrong")] {
        let r = post(&url, key, chat_body("hi").to_string()).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(
            r.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer")
        );
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "invalid_api_key");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn over_the_limit_gets_429_with_retry_after() {
    let stack = Stack::start(Options {
        edge_variables: vec![("rate_limit_free", "3/1m".into())],
        ..Options::default()
    })
    .await;
    let url = format!("{}/v1/chat/completions", stack.edge);
    for remaining in ["2", "1", "0"] {
        let r = post(&url, Some(DEMO_KEY), chat_body("x").to_string()).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["x-ratelimit-remaining"], remaining);
    }
    let r = post(&url, Some(DEMO_KEY), chat_body("x").to_string()).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // Sliding window: the three requests' window ends, then fades by a third.
    assert!(
        (20..=80).contains(&retry_after),
        "retry-after {retry_after}"
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status_code"], 429);
    assert_eq!(
        v["detail"],
        format!("Rate limit exceeded. Try again in {retry_after} seconds.")
    );
    assert_eq!(v["error"]["type"], "rate_limit_error");
    // Another principal has its own budget.
    assert_eq!(
        post(&url, Some(OTHER_KEY), chat_body("x").to_string())
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_origin_refuses_requests_that_bypass_the_edge() {
    let stack = Stack::start(Options::default()).await;
    let r = post(
        &format!("{}/v1/chat/completions", stack.origin),
        Some(DEMO_KEY),
        chat_body("sneaky").to_string(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "edge_signature_required");
    // Forged identity headers with a wrong key are refused too.
    let r = reqwest::Client::new()
        .get(format!("{}/v1/me", stack.origin))
        .header(
            "x-sluice-identity",
            "eyJzdWIiOiJhZG1pbiIsInRpZXIiOiJhZG1pbiJ9",
        )
        .header("x-sluice-timestamp", "0")
        .header("x-sluice-signature", "v1=00")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_body_gets_400_in_openai_shape() {
    let stack = Stack::start(Options::default()).await;
    let url = format!("{}/v1/chat/completions", stack.edge);
    let r = post(
        &url,
        Some(DEMO_KEY),
        "{\"model\": \"sluice-sim-1\", \"messages\": [".into(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    let r = post(
        &url,
        Some(DEMO_KEY),
        json!({ "model": "sluice-sim-1", "messages": [{ "role": 7 }] }).to_string(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["param"], "messages[0].role");
}

#[tokio::test(flavor = "multi_thread")]
async fn cached_responses_stay_with_their_principal_unless_public() {
    let stack = Stack::start(Options::default()).await;
    let me = format!("{}/v1/me", stack.edge);
    let first = get(&me, DEMO_KEY).await;
    assert_eq!(first.headers()["x-cache"], "MISS");
    let second = get(&me, DEMO_KEY).await;
    assert_eq!(second.headers()["x-cache"], "HIT");
    assert!(second.headers().contains_key("age"));
    assert_eq!(second.json::<Value>().await.unwrap()["subject"], "alice");
    let bob = get(&me, OTHER_KEY).await;
    assert_eq!(
        bob.headers()["x-cache"],
        "MISS",
        "bob must not get alice's cached /v1/me"
    );
    assert_eq!(bob.json::<Value>().await.unwrap()["subject"], "bob");

    // /v1/models is `Cache-Control: public`: stored once, served to everyone.
    let models = format!("{}/v1/models", stack.edge);
    assert_eq!(get(&models, DEMO_KEY).await.headers()["x-cache"], "MISS");
    assert_eq!(get(&models, OTHER_KEY).await.headers()["x-cache"], "HIT");

    // The client's `no-cache` refreshes instead of reading the cache.
    let refreshed = reqwest::Client::new()
        .get(&me)
        .bearer_auth(DEMO_KEY)
        .header("cache-control", "no-cache")
        .send()
        .await
        .unwrap();
    assert_eq!(refreshed.headers()["x-cache"], "BYPASS");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openai_python_sdk_works_through_the_edge() {
    let stack = Stack::start(Options {
        edge_variables: vec![("rate_limit_free", "5/1m".into())],
        ..Options::default()
    })
    .await;
    let script = sluice_e2e::repo().join("tests/sdk/openai_sdk.py");
    let out = tokio::process::Command::new("python3")
        .arg(&script)
        .env("SLUICE_BASE_URL", format!("{}/v1", stack.edge))
        .env("SLUICE_API_KEY", DEMO_KEY)
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "SDK script failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("sdk checks passed"), "{stdout}");
}

/// Agent loops with the official `openai` and `anthropic` SDKs through the
/// edge: tool call, tool result, answer; streamed tool calls; structured
/// output; images; Anthropic's error classes (tests/sdk/agent_loops.py).
#[tokio::test(flavor = "multi_thread")]
async fn sdk_agent_loops_complete_a_tool_round_trip_through_the_edge() {
    let stack = Stack::start(Options::default()).await;
    let script = sluice_e2e::repo().join("tests/sdk/agent_loops.py");
    let out = tokio::process::Command::new("python3")
        .arg(&script)
        .env("SLUICE_EDGE", &stack.edge)
        .env("SLUICE_API_KEY", DEMO_KEY)
        .env("SLUICE_OTHER_KEY", OTHER_KEY)
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "SDK script failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("agent loops passed"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn admins_purge_cached_entries_and_others_are_forbidden() {
    let admin_key = sluice_e2e::unique("sk-admin");
    let stack = Stack::start(Options {
        api_keys: vec![(admin_key.clone(), "root".into(), "admin")],
        ..Options::default()
    })
    .await;
    let me = format!("{}/v1/me", stack.edge);
    let purge = format!("{}/v1/admin/cache/purge", stack.edge);
    assert_eq!(get(&me, DEMO_KEY).await.headers()["x-cache"], "MISS");
    assert_eq!(get(&me, DEMO_KEY).await.headers()["x-cache"], "HIT");
    assert_eq!(get(&me, OTHER_KEY).await.headers()["x-cache"], "MISS");

    let denied = post(&purge, Some(DEMO_KEY), json!({"all": true}).to_string()).await;
    assert_eq!(denied.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        denied.json::<Value>().await.unwrap()["error"]["type"],
        "permission_error"
    );
    let bad = post(
        &purge,
        Some(&admin_key),
        json!({"who": "alice"}).to_string(),
    )
    .await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);

    let done = post(
        &purge,
        Some(&admin_key),
        json!({"subject": "alice"}).to_string(),
    )
    .await;
    assert_eq!(done.status(), StatusCode::OK);
    assert_eq!(
        done.json::<Value>().await.unwrap(),
        json!({"purged": {"subject": "alice"}})
    );
    assert_eq!(get(&me, DEMO_KEY).await.headers()["x-cache"], "MISS");
    assert_eq!(
        get(&me, OTHER_KEY).await.headers()["x-cache"],
        "HIT",
        "bob's stay"
    );

    post(&purge, Some(&admin_key), json!({"all": true}).to_string()).await;
    assert_eq!(get(&me, OTHER_KEY).await.headers()["x-cache"], "MISS");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_jwt_caller_reaches_the_origin_as_its_subject_and_tier() {
    let secret = "an-e2e-hs256-secret-of-32-bytes-or-more";
    let stack = Stack::start(Options {
        edge_variables: vec![
            ("jwt_hs256_secret", secret.into()),
            ("jwt_issuer", "https://idp.example".into()),
        ],
        ..Options::default()
    })
    .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = |exp: u64, iss: &str| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &json!({"sub": "jwt-user", "tier": "premium", "iss": iss, "exp": exp, "scope": "chat"}),
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    let me = format!("{}/v1/me", stack.edge);
    let r = get(&me, &token(now + 60, "https://idp.example")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-ratelimit-limit"], "300", "premium limits");
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (&v["subject"], &v["tier"], &v["key_id"], &v["scopes"]),
        (
            &json!("jwt-user"),
            &json!("premium"),
            &json!("jwt:hs256"),
            &json!(["chat"])
        )
    );
    let expired = get(&me, &token(now - 600, "https://idp.example")).await;
    assert_eq!(expired.status(), StatusCode::UNAUTHORIZED);
    assert!(
        expired.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
    let foreign = get(&me, &token(now + 60, "https://other.example")).await;
    assert_eq!(foreign.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_issued_by_the_admin_api_work_at_the_edge_until_revoked() {
    let admin_key = sluice_e2e::unique("sk-admin");
    let stack = Stack::start(Options {
        api_keys: vec![(admin_key.clone(), "root".into(), "admin")],
        edge_variables: vec![
            ("api_key_cache_seconds", "2".into()),
            ("api_key_negative_cache_seconds", "0".into()),
        ],
        ..Options::default()
    })
    .await;
    let keys = format!("{}/v1/admin/keys", stack.edge);
    let me = format!("{}/v1/me", stack.edge);

    let denied = post(&keys, Some(DEMO_KEY), json!({"subject": "x"}).to_string()).await;
    assert_eq!(denied.status(), StatusCode::FORBIDDEN);
    let created = post(
        &keys,
        Some(&admin_key),
        json!({"subject": "carol", "tier": "premium"}).to_string(),
    )
    .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.unwrap();
    let key = created["key"].as_str().unwrap();

    let r = get(&me, key).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-ratelimit-limit"], "300");
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (&v["subject"], &v["tier"]),
        (&json!("carol"), &json!("premium"))
    );
    assert_eq!(v["key_id"], created["id"]);

    // Clients cannot reach the origin's internal lookup through the edge.
    let hash = sluice_core::api_key::hash(key);
    let probe = get(
        &format!("{}/internal/v1/keys/{hash}", stack.edge),
        &admin_key,
    )
    .await;
    assert_eq!(probe.status(), StatusCode::NOT_FOUND);

    let revoked = reqwest::Client::new()
        .delete(format!("{keys}/{}", created["id"].as_str().unwrap()))
        .bearer_auth(&admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::OK);
    let started = std::time::Instant::now();
    loop {
        let status = get(&me, key).await.status();
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(status, StatusCode::OK);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(4),
            "still admitted {:?} after revocation (bound: 2 s cache)",
            started.elapsed()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        get(&me, "sk-never-issued").await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_pass_through_the_edge_as_they_are_generated() {
    // 20 tokens/s: the simulated answer's chunks are 50 ms apart.
    let stack = Stack::start(Options {
        origin_env: vec![
            ("SLUICE_SIMULATED__TIME_TO_FIRST_TOKEN_MS", "100".into()),
            ("SLUICE_SIMULATED__TOKENS_PER_SECOND", "20".into()),
        ],
        ..Options::default()
    })
    .await;
    let started = std::time::Instant::now();
    let response = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", stack.edge))
        .bearer_auth(DEMO_KEY)
        .json(&serde_json::json!({
            "model": "sluice-sim-1", "stream": true,
            "messages": [{ "role": "user", "content": "one two three four five six" }],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["x-cache"], "BYPASS");
    let mut body = response.bytes_stream();
    let (mut text, mut first_content, mut arrivals) = (String::new(), None, 0);
    while let Some(chunk) = body.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        arrivals += 1;
        if first_content.is_none() && text.contains("[simulated") {
            first_content = Some(started.elapsed());
        }
    }
    let done = started.elapsed();
    let first_content = first_content.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    // Ten tokens 50 ms apart: a buffered relay would deliver the first
    // one together with the last.
    assert!(
        done - first_content >= std::time::Duration::from_millis(300),
        "first content at {first_content:?}, done at {done:?}: buffered"
    );
    assert!(arrivals >= 5, "{arrivals} reads: chunks were merged");
}

#[tokio::test(flavor = "multi_thread")]
async fn conversations_are_stored_and_a_write_makes_cached_reads_stale() {
    let stack = Stack::start(Options::default()).await;
    let created = post(
        &format!("{}/v1/conversations", stack.edge),
        Some(DEMO_KEY),
        json!({ "title": "through the edge" }).to_string(),
    )
    .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let id = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let list = format!("{}/v1/conversations", stack.edge);
    let messages = format!("{}/v1/conversations/{id}/messages", stack.edge);
    assert_eq!(get(&list, DEMO_KEY).await.headers()["x-cache"], "MISS");
    assert_eq!(get(&list, DEMO_KEY).await.headers()["x-cache"], "HIT");
    let empty = get(&messages, DEMO_KEY).await;
    assert_eq!(empty.headers()["x-cache"], "MISS");
    assert_eq!(empty.json::<Value>().await.unwrap()["data"], json!([]));
    assert_eq!(get(&messages, DEMO_KEY).await.headers()["x-cache"], "HIT");

    // Bob cannot see it, cached or not.
    let theirs = get(&messages, OTHER_KEY).await;
    assert_eq!(theirs.status(), StatusCode::NOT_FOUND);

    let turn = post(
        &messages,
        Some(DEMO_KEY),
        json!({ "content": "remember this" }).to_string(),
    )
    .await;
    assert_eq!(turn.status(), StatusCode::CREATED);
    let turn: Value = turn.json().await.unwrap();
    assert!(
        turn["message"]["content"]
            .as_str()
            .unwrap()
            .contains("remember this")
    );
    // A streamed turn: stored before the stream ends.
    let streamed = post(
        &messages,
        Some(DEMO_KEY),
        json!({ "content": "and this", "stream": true }).to_string(),
    )
    .await;
    assert_eq!(streamed.status(), StatusCode::OK);
    assert!(streamed.text().await.unwrap().contains("data: [DONE]"));

    // The writes raised alice's generation: both reads miss and see them.
    let fresh = get(&messages, DEMO_KEY).await;
    assert_eq!(fresh.headers()["x-cache"], "MISS");
    let fresh: Value = fresh.json().await.unwrap();
    let roles: Vec<&str> = fresh["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "user", "assistant"]);
    assert_eq!(get(&list, DEMO_KEY).await.headers()["x-cache"], "MISS");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_submitted_at_the_edge_completes_in_the_background() {
    let stack = Stack::start(Options::default()).await;
    let submitted = reqwest::Client::new()
        .post(format!("{}/v1/jobs", stack.edge))
        .bearer_auth(DEMO_KEY)
        .header("idempotency-key", "e2e-1")
        .json(&chat_body("queued work"))
        .send()
        .await
        .unwrap();
    assert_eq!(submitted.status(), StatusCode::ACCEPTED);
    let job: Value = submitted.json().await.unwrap();
    assert_eq!(job["status"], "queued");
    let url = format!("{}/v1/jobs/{}", stack.edge, job["job_id"].as_str().unwrap());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let done = loop {
        let job: Value = get(&url, DEMO_KEY).await.json().await.unwrap();
        if job["status"] == "completed" {
            break job;
        }
        assert!(std::time::Instant::now() < deadline, "{job}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(
        done["result"]["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains("queued work")
    );
    assert_eq!(
        get(&url, OTHER_KEY).await.status(),
        StatusCode::NOT_FOUND,
        "another caller's job"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn anthropics_x_api_key_is_accepted_and_never_forwarded() {
    // A stub origin that records the headers of what the edge forwards.
    let seen: std::sync::Arc<std::sync::Mutex<Vec<axum::http::HeaderMap>>> = Default::default();
    let record = std::sync::Arc::clone(&seen);
    let stub = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
        let record = std::sync::Arc::clone(&record);
        async move {
            record.lock().unwrap().push(headers);
            axum::Json(json!({ "object": "stub" }))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stub_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, stub).await });
    let stack = Stack::start(Options {
        edge_variables: vec![("origin_url", stub_url)],
        ..Options::default()
    })
    .await;
    let r = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", stack.edge))
        .header("x-api-key", DEMO_KEY)
        .header("content-type", "application/json")
        .body(json!({ "model": "m", "messages": [], "stream": true }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let forwarded = seen.lock().unwrap().pop().unwrap();
    assert!(forwarded.get("x-api-key").is_none(), "{forwarded:?}");
    assert!(forwarded.get("authorization").is_none(), "{forwarded:?}");
    let identity = forwarded["x-sluice-identity"].to_str().unwrap();
    let who = sluice_core::identity::Identity::decode(identity).unwrap();
    assert_eq!(who.sub, "alice");
}

/// Even with `/v1/responses` in `cache_routes`, a stored or continued
/// Responses call always reaches the origin (each one is a new stored
/// response); only a stateless one (`store: false`) may be replayed.
#[tokio::test(flavor = "multi_thread")]
async fn stateful_responses_calls_are_never_served_from_the_edge_cache() {
    let stack = Stack::start(Options {
        edge_variables: vec![("cache_routes", "POST /v1/responses=3600".into())],
        ..Options::default()
    })
    .await;
    let url = format!("{}/v1/responses", stack.edge);
    let stored = json!({ "model": "sluice-sim-1", "input": "remember me" }).to_string();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let response = post(&url, Some(DEMO_KEY), stored.clone()).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["x-cache"], "BYPASS");
        ids.push(response.json::<Value>().await.unwrap()["id"].clone());
    }
    assert_ne!(ids[0], ids[1], "two stored responses");
    let continued = json!({ "model": "sluice-sim-1", "input": "and then", "store": false,
        "previous_response_id": ids[0] })
    .to_string();
    for _ in 0..2 {
        let response = post(&url, Some(DEMO_KEY), continued.clone()).await;
        assert_eq!(response.headers()["x-cache"], "BYPASS");
    }
    let stateless =
        json!({ "model": "sluice-sim-1", "input": "anyone", "store": false }).to_string();
    let first = post(&url, Some(DEMO_KEY), stateless.clone()).await;
    assert_eq!(first.headers()["x-cache"], "MISS");
    let again = post(&url, Some(DEMO_KEY), stateless).await;
    assert_eq!(again.headers()["x-cache"], "HIT");
    // The Responses routes are in the AI group and refuse in OpenAI's shape.
    let refused = post(&url, Some("sk-never-issued"), stored).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        refused.json::<Value>().await.unwrap()["error"]["type"],
        "invalid_request_error"
    );
}

/// The host sends components' outbound requests through one pool of
/// keep-alive connections: sequential requests through the edge reach the
/// origin on a connection or two, not one each.
#[tokio::test(flavor = "multi_thread")]
async fn the_edge_reuses_its_connections_to_the_origin() {
    use std::net::SocketAddr;
    let peers: std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<SocketAddr>>> =
        Default::default();
    let record = std::sync::Arc::clone(&peers);
    let stub = axum::Router::new().fallback(
        move |axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>| {
            let record = std::sync::Arc::clone(&record);
            async move {
                record.lock().unwrap().insert(peer);
                axum::Json(json!({ "object": "stub" }))
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stub_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(
            listener,
            stub.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    let stack = Stack::start(Options {
        edge_variables: vec![("origin_url", stub_url)],
        ..Options::default()
    })
    .await;
    let url = format!("{}/v1/chat/completions", stack.edge);
    for i in 0..20 {
        let body = json!({ "model": "m", "messages": [], "n": i }).to_string();
        assert_eq!(
            post(&url, Some(DEMO_KEY), body).await.status(),
            StatusCode::OK
        );
    }
    let connections = peers.lock().unwrap().len();
    assert!(
        connections <= 2,
        "20 requests opened {connections} connections to the origin"
    );
}
