//! Property: fields Sluice does not know survive the round trip. Random
//! `x_...` fields (any JSON) added to a request reach the upstream as sent,
//! and the same fields added to the upstream's answer (the test upstream
//! echoes the request's `x_echo` object) reach the client, on chat
//! completions, on Responses (translated to chat) and on Messages (native
//! to an Anthropic upstream).
#![expect(
    clippy::unwrap_used,
    reason = "test helpers: any failure should fail the test"
)]

mod upstream;

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use serde_json::{Map, Value, json};
use sluice_core::edge_signature;
use sluice_core::identity::{Identity, Tier};
use sluice_origin::app::{AppState, app};
use sluice_origin::clock::unix_now;
use sluice_origin::config::Config;
use std::net::SocketAddr;
use std::time::Duration;
use upstream::Upstream;

const SECRET: &str = "0123456789abcdef0123456789abcdef";

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "\\PC{0,16}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Field names no API uses.
fn unknown_fields() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map("x_[a-z_]{1,12}", json_value(), 1..5)
        .prop_map(|m| m.into_iter().collect())
}

async fn start() -> (Upstream, SocketAddr) {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = Config::from_toml(&format!(
        r#"
[edge]
secret = "{SECRET}"
[database]
url = "sqlite://{db}?mode=rwc"
min_connections = 1

[[models]]
name = "gpt"
[[models.deployments]]
provider = "openai"
base_url = "{openai}"
model = "upstream-gpt"

[[models]]
name = "claude"
[[models.deployments]]
provider = "anthropic"
base_url = "{anthropic}"
model = "claude-upstream"
keys = ["ak-1"]
"#,
        db = dir.path().join("lossless.db").display(),
        openai = up.openai_base(),
        anthropic = up.anthropic_base(),
    ))
    .unwrap();
    let db = sluice_origin::db::connect(&config.database).await.unwrap();
    std::mem::forget(dir);
    let router = app(
        AppState::new(&config, db).await.unwrap(),
        Duration::from_secs(30),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (up, addr)
}

async fn post(addr: SocketAddr, path: &str, body: &Value) -> Value {
    let identity = Identity {
        sub: "alice".into(),
        tier: Tier::Premium,
        kid: None,
        scopes: vec![],
    }
    .encode();
    let mut request = reqwest::Client::new().post(format!("http://{addr}{path}"));
    for (name, value) in
        edge_signature::signed_headers(SECRET.as_bytes(), "POST", path, unix_now(), &identity)
    {
        request = request.header(name, value);
    }
    let response = request.json(body).send().await.unwrap();
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.unwrap()
}

/// Every field of `fields` is in `object`, unchanged.
fn holds(object: &Value, fields: &Map<String, Value>, what: &str) -> Result<(), TestCaseError> {
    for (name, value) in fields {
        prop_assert_eq!(&object[name], value, "{} lost or changed {}", what, name);
    }
    Ok(())
}

#[test]
fn unknown_fields_survive_the_round_trip() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (up, addr) = runtime.block_on(start());
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 32,
        ..ProptestConfig::default()
    });
    runner
        .run(&(unknown_fields(), unknown_fields()), |(sent, echoed)| {
            runtime.block_on(async {
                let with = |mut body: Value| {
                    let object = body.as_object_mut().unwrap();
                    object.extend(sent.clone());
                    object.insert("x_echo".into(), Value::Object(echoed.clone()));
                    body
                };
                let cases = [
                    (
                        "/v1/chat/completions",
                        with(json!({ "model": "gpt",
                        "messages": [{ "role": "user", "content": "hi" }] })),
                    ),
                    (
                        "/v1/responses",
                        with(json!({ "model": "gpt", "input": "hi", "store": false })),
                    ),
                    (
                        "/v1/messages",
                        with(json!({ "model": "claude", "max_tokens": 16,
                        "messages": [{ "role": "user", "content": "hi" }] })),
                    ),
                ];
                for (path, body) in cases {
                    let answer = post(addr, path, &body).await;
                    let seen = up.seen().pop().unwrap();
                    holds(&seen.body, &sent, &format!("{path} on the way up"))?;
                    holds(&answer, &echoed, &format!("{path} on the way back"))?;
                }
                Ok(())
            })
        })
        .unwrap();
}
