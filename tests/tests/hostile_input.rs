//! Hostile and malformed input through the edge, on Postgres (where a NUL
//! byte in a stored string is a database error): every case is a 4xx in its
//! API's own error shape, never a 5xx and never a 2xx; a bad identifier
//! never looks like a database outage.
#![expect(
    clippy::unwrap_used,
    reason = "tests: any failure should fail the test"
)]

use serde_json::Value;
use sluice_e2e::{DEMO_KEY, Options, Stack, unique};
use sqlx::Connection;

const POSTGRES_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The error shape a route answers in.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Shape {
    OpenAi,
    Anthropic,
}

/// Status and body (a JSON value, `Null` when it is not JSON) of a request.
async fn request(
    stack: &Stack,
    key: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut request = client
        .request(method.parse().unwrap(), format!("{}{path}", stack.edge))
        .bearer_auth(key)
        .header("content-type", "application/json");
    if let Some(body) = body {
        request = request.body(body.to_string());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn assert_refused(case: &str, shape: Shape, status: u16, body: &Value) {
    assert!((400..500).contains(&status), "{case}: {status} {body}");
    match shape {
        Shape::OpenAi => assert!(
            body["error"]["message"].is_string() && body["error"]["type"].is_string(),
            "{case}: not OpenAI's error shape: {body}"
        ),
        Shape::Anthropic => assert!(
            body["type"] == "error" && body["error"]["type"].is_string(),
            "{case}: not Anthropic's error shape: {body}"
        ),
    }
    assert_ne!(
        body["error"]["code"], "database_unavailable",
        "{case}: input reported as an outage"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_input_is_a_4xx_in_the_apis_shape() {
    let database = format!("sluice_e2e_{}", uuid::Uuid::new_v4().simple());
    let mut admin_db = sqlx::PgConnection::connect(POSTGRES_ADMIN).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {database}"))
        .execute(&mut admin_db)
        .await
        .unwrap();
    let admin = unique("sk-admin");
    let stack = Stack::start(Options {
        api_keys: vec![(admin.clone(), "root".into(), "admin")],
        origin_env: vec![(
            "SLUICE_DATABASE__URL",
            format!("postgres://postgres@127.0.0.1:5432/{database}"),
        )],
        edge_variables: vec![("rate_limit_free", "10000/1m".into())],
        ..Options::default()
    })
    .await;

    let messages = |extra: &str| {
        format!(
            r#"{{"model":"sluice-sim-1","max_tokens":16,"messages":[{{"role":"user","content":"hi"}}]{extra}}}"#
        )
    };
    let responses = |extra: &str| format!(r#"{{"model":"sluice-sim-1","input":"hi"{extra}}}"#);
    let user_cases: Vec<(&str, &str, String, Option<String>, Shape)> = vec![
        ("NUL in previous_response_id", "POST", "/v1/responses".into(),
            Some(responses(r#","previous_response_id":"resp_\u0000abc""#)), Shape::OpenAi),
        ("NUL in a response id", "GET", "/v1/responses/resp_%00x".into(), None, Shape::OpenAi),
        ("NUL in input_items' id", "GET", "/v1/responses/resp_%00x/input_items".into(), None, Shape::OpenAi),
        ("not UTF-8 in a response id", "GET", "/v1/responses/resp_%FF%FE".into(), None, Shape::OpenAi),
        ("not UTF-8 in input_items' id", "GET", "/v1/responses/resp_%FF%FE/input_items".into(), None, Shape::OpenAi),
        ("NUL in an item reference", "POST", "/v1/responses".into(),
            Some(r#"{"model":"sluice-sim-1","input":[{"type":"item_reference","id":"msg_\u0000"}]}"#.into()), Shape::OpenAi),
        ("unknown item reference", "POST", "/v1/responses".into(),
            Some(r#"{"model":"sluice-sim-1","input":[{"type":"item_reference","id":"msg_nope"}]}"#.into()), Shape::OpenAi),
        ("text as a string", "POST", "/v1/responses".into(), Some(responses(r#","text":"x""#)), Shape::OpenAi),
        ("reasoning as a string", "POST", "/v1/responses".into(), Some(responses(r#","reasoning":"high""#)), Shape::OpenAi),
        ("an unknown effort", "POST", "/v1/responses".into(),
            Some(responses(r#","reasoning":{"effort":"max power"}"#)), Shape::OpenAi),
        ("system as a number", "POST", "/v1/messages".into(), Some(messages(r#","system":5"#)), Shape::Anthropic),
        ("temperature as a word", "POST", "/v1/messages".into(), Some(messages(r#","temperature":"hot""#)), Shape::Anthropic),
        ("temperature below 0", "POST", "/v1/messages".into(), Some(messages(r#","temperature":-5"#)), Shape::Anthropic),
        ("stop_sequences as a string", "POST", "/v1/messages".into(), Some(messages(r#","stop_sequences":"STOP""#)), Shape::Anthropic),
        ("tools as an object", "POST", "/v1/messages".into(), Some(messages(r#","tools":{"name":"x"}"#)), Shape::Anthropic),
        ("thinking as a word", "POST", "/v1/messages".into(), Some(messages(r#","thinking":"on""#)), Shape::Anthropic),
        ("a negative thinking budget", "POST", "/v1/messages".into(),
            Some(messages(r#","thinking":{"type":"enabled","budget_tokens":-100}"#)), Shape::Anthropic),
        ("no messages", "POST", "/v1/messages".into(),
            Some(r#"{"model":"sluice-sim-1","max_tokens":16,"messages":[]}"#.into()), Shape::Anthropic),
        ("no messages, streamed", "POST", "/v1/messages".into(),
            Some(r#"{"model":"sluice-sim-1","max_tokens":16,"stream":true,"messages":[]}"#.into()), Shape::Anthropic),
        ("a message of no role", "POST", "/v1/messages".into(),
            Some(r#"{"model":"sluice-sim-1","max_tokens":16,"messages":[{"content":"x"}]}"#.into()), Shape::Anthropic),
        ("top_p above 1", "POST", "/v1/chat/completions".into(),
            Some(r#"{"model":"sluice-sim-1","top_p":3,"messages":[{"role":"user","content":"x"}]}"#.into()), Shape::OpenAi),
        ("n of 0", "POST", "/v1/chat/completions".into(),
            Some(r#"{"model":"sluice-sim-1","n":0,"messages":[{"role":"user","content":"x"}]}"#.into()), Shape::OpenAi),
        ("five stop strings", "POST", "/v1/chat/completions".into(),
            Some(r#"{"model":"sluice-sim-1","stop":["a","b","c","d","e"],"messages":[{"role":"user","content":"x"}]}"#.into()), Shape::OpenAi),
        ("an unknown reasoning effort", "POST", "/v1/chat/completions".into(),
            Some(r#"{"model":"sluice-sim-1","reasoning_effort":"ultra","messages":[{"role":"user","content":"x"}]}"#.into()), Shape::OpenAi),
        ("a conversation id with NUL", "GET", "/v1/conversations/%00/messages".into(), None, Shape::OpenAi),
        ("a job id not UTF-8", "GET", "/v1/jobs/%FF".into(), None, Shape::OpenAi),
        ("a page query with NUL", "GET", "/v1/conversations?after=%00".into(), None, Shape::OpenAi),
    ];
    for (case, method, path, body, shape) in &user_cases {
        let (status, answer) = request(&stack, DEMO_KEY, method, path, body.as_deref()).await;
        assert_refused(case, *shape, status, &answer);
    }

    let admin_cases: Vec<(&str, &str, &str, Option<&str>)> = vec![
        (
            "NUL in a key's subject",
            "POST",
            "/v1/admin/keys",
            Some(r#"{"subject":"a\u0000b"}"#),
        ),
        (
            "a newline in a key's subject",
            "POST",
            "/v1/admin/keys",
            Some(r#"{"subject":"a\nb"}"#),
        ),
        (
            "NUL in a key's name",
            "POST",
            "/v1/admin/keys",
            Some(r#"{"subject":"ann","name":"x\u0000"}"#),
        ),
        (
            "NUL in a listed subject",
            "GET",
            "/v1/admin/keys?subject=%00",
            None,
        ),
        (
            "an unknown query parameter",
            "GET",
            "/v1/admin/keys?bogus=1",
            None,
        ),
        ("NUL in a revoked id", "DELETE", "/v1/admin/keys/%00", None),
        (
            "NUL in a user",
            "PATCH",
            "/v1/admin/users/%00",
            Some(r#"{"token_limit":"10/1m"}"#),
        ),
        (
            "NUL in a team id",
            "POST",
            "/v1/admin/teams",
            Some(r#"{"id":"t\u0000"}"#),
        ),
        ("NUL in a team's path", "GET", "/v1/admin/teams/%00", None),
        (
            "NUL in a member",
            "PUT",
            "/v1/admin/teams/acme/members/%00",
            None,
        ),
        (
            "NUL in a budget id",
            "PUT",
            "/v1/admin/budgets/team/%00",
            Some(r#"{"period":"day","limit_usd":1}"#),
        ),
        (
            "NUL in a spend filter",
            "GET",
            "/v1/admin/spend?team_id=%00",
            None,
        ),
        (
            "NUL in a spend subject",
            "GET",
            "/v1/admin/spend?subject=%00",
            None,
        ),
        ("a job id with NUL", "GET", "/v1/admin/jobs/%00", None),
        (
            "not UTF-8 in a redrive",
            "POST",
            "/v1/admin/jobs/%FF/redrive",
            None,
        ),
    ];
    for (case, method, path, body) in &admin_cases {
        let (status, answer) = request(&stack, &admin, method, path, *body).await;
        assert_refused(case, Shape::OpenAi, status, &answer);
    }

    // The origin is still healthy and serving.
    let (status, _) = request(
        &stack,
        DEMO_KEY,
        "POST",
        "/v1/responses",
        Some(&responses("")),
    )
    .await;
    assert_eq!(status, 200);
    drop(stack);
    sqlx::query(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
        .execute(&mut admin_db)
        .await
        .unwrap();
}
