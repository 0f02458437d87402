//! Spend control through the real processes, tried as a new user would: an
//! admin creates a team with a $1/day budget, a user in it and a key for
//! the user; two edge hosts (one Redis) in front of two origins (one
//! Postgres) take 200 concurrent requests until the budget is reached. The
//! refusals say which budget and why, the spend report agrees with the
//! budget, and the recorded spend is not a cent over.
#![expect(
    clippy::unwrap_used,
    reason = "tests: any failure should fail the test"
)]

use serde_json::{Value, json};
use sluice_e2e::{Options, Stack, unique};
use sqlx::Connection;
use std::time::Duration;

const POSTGRES_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/test";

async fn fresh_postgres() -> (String, String) {
    let name = format!("sluice_e2e_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(POSTGRES_ADMIN).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    (format!("postgres://postgres@127.0.0.1:5432/{name}"), name)
}

async fn drop_postgres(name: &str) {
    let mut admin = sqlx::PgConnection::connect(POSTGRES_ADMIN).await.unwrap();
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
}

async fn send(method: &str, url: &str, key: &str, body: Option<Value>) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut request = client
        .request(method.parse().unwrap(), url)
        .bearer_auth(key)
        .timeout(Duration::from_secs(30));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_team_budget_holds_across_two_edges_and_two_origins() {
    let (database_url, database) = fresh_postgres().await;
    let config = std::env::temp_dir().join(format!("{}.toml", unique("sluice-budgets")));
    // $0.0001 per prompt token, $0.01 per output token.
    std::fs::write(
        &config,
        "[[models]]\nname = \"priced\"\n[[models.deployments]]\nprovider = \"simulated\"\n\
         input_cost_per_million = 100.0\noutput_cost_per_million = 10000.0\n",
    )
    .unwrap();
    let admin_key = unique("sk-admin");
    let stack = Stack::start(Options {
        edge_variables: vec![
            ("rate_limit_free", "100000/1h".into()),
            ("rate_limit_ip", "unlimited".into()),
        ],
        runtime_config: Some(
            "[key_value_store.default]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:6379\"\n"
                .into(),
        ),
        edge_hosts: 2,
        origins: 2,
        api_keys: vec![(admin_key.clone(), "root".into(), "admin")],
        origin_env: vec![
            ("SLUICE_CONFIG", config.display().to_string()),
            ("SLUICE_DATABASE__URL", database_url.clone()),
            ("SLUICE_BUDGETS__DEFINITIONS_CACHE_MS", "0".into()),
            // Two origins' pools together under the server's 100 connections.
            ("SLUICE_DATABASE__MAX_CONNECTIONS", "20".into()),
            ("SLUICE_DATABASE__MIN_CONNECTIONS", "2".into()),
        ],
        ..Options::default()
    })
    .await;
    let edge = &stack.edges[0];
    let team = unique("team");
    let subject = unique("user");

    // The admin sets it up through the edge.
    let (status, body) = send(
        "POST",
        &format!("{edge}/v1/admin/teams"),
        &admin_key,
        Some(json!({ "id": team, "name": "Research" })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = send(
        "PUT",
        &format!("{edge}/v1/admin/teams/{team}/members/{subject}"),
        &admin_key,
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["members"], json!([subject]));
    let (status, body) = send(
        "PUT",
        &format!("{edge}/v1/admin/budgets/team/{team}"),
        &admin_key,
        Some(json!({ "period": "day", "limit_usd": 1.0 })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, created) = send(
        "POST",
        &format!("{edge}/v1/admin/keys"),
        &admin_key,
        Some(json!({ "subject": subject, "name": "laptop" })),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let key = created["key"].as_str().unwrap().to_string();

    // 200 concurrent requests over both edges (each on its own origin);
    // one costs ~$0.06 and reserves ~$0.09, so about 15 fit in $1.
    let mut tasks = Vec::new();
    for i in 0..200 {
        let url = format!("{}/v1/chat/completions", stack.edges[i % 2]);
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            send(
                "POST",
                &url,
                &key,
                Some(json!({ "model": "priced", "max_tokens": 8,
                "messages": [{ "role": "user", "content": format!("request {i}") }] })),
            )
            .await
        }));
    }
    let (mut admitted, mut refusal) = (0, None);
    for task in tasks {
        let (status, body) = task.await.unwrap();
        match status {
            200 => admitted += 1,
            429 => refusal = Some(body),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    let refusal = refusal.unwrap();
    assert_eq!(refusal["error"]["type"], "insufficient_quota", "{refusal}");
    assert_eq!(refusal["error"]["budget"]["scope"], "team");
    assert_eq!(refusal["error"]["budget"]["id"], team.as_str());
    assert_eq!(refusal["error"]["budget"]["limit_usd"], 1.0);
    assert!(admitted >= 5, "{admitted} admitted");

    // Recorded spend (the usage records, written off the request path) is
    // within the budget, and the report and the budget agree with it.
    let mut db = sqlx::PgConnection::connect(&database_url).await.unwrap();
    let mut recorded = 0;
    for _ in 0..50 {
        let (count, spent): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), CAST(COALESCE(SUM(cost_microdollars), 0) AS BIGINT) FROM usage_records WHERE team_id = $1",
        )
        .bind(&team)
        .fetch_one(&mut db)
        .await
        .unwrap();
        recorded = spent;
        if count == admitted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        recorded > 0 && recorded <= 1_000_000,
        "spent {recorded} microdollars of 1000000"
    );
    let (status, report) = send(
        "GET",
        &format!("{edge}/v1/admin/spend?group_by=team&team_id={team}"),
        &admin_key,
        None,
    )
    .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["total"]["requests"], admitted);
    assert_eq!(report["total"]["cost_usd"], json!(recorded as f64 / 1e6));
    let (_, budget) = send(
        "GET",
        &format!("{edge}/v1/admin/budgets/team/{team}"),
        &admin_key,
        None,
    )
    .await;
    assert_eq!(
        budget["spent_usd"],
        json!(recorded as f64 / 1e6),
        "{budget}"
    );
    assert_eq!(budget["reserved_usd"], 0.0);
    // The user sees the same through `GET /v1/usage`.
    let (status, usage) = send("GET", &format!("{}/v1/usage", stack.edges[1]), &key, None).await;
    assert_eq!(status, 200, "{usage}");
    assert_eq!(usage["team_id"], team.as_str());
    assert_eq!(
        usage["budgets"][0]["spent_usd"],
        json!(recorded as f64 / 1e6)
    );
    println!("admitted {admitted} of 200, spent {recorded} of 1000000 microdollars");

    // The spend view on the origin's admin listener, rendered by headless
    // Chromium, shows the same: the budget, the team on top, the model's line.
    let (status, view) = send(
        "GET",
        &format!("{}/spend.json", stack.origin_admin),
        "",
        None,
    )
    .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["top"]["team"][0]["group"], team.as_str());
    assert_eq!(
        view["top"]["team"][0]["cost_usd"],
        json!(recorded as f64 / 1e6)
    );
    let profile = std::env::temp_dir().join(unique("chromium-spend"));
    let url = format!("{}/spend", stack.origin_admin);
    let dump = tokio::task::spawn_blocking({
        let profile = profile.clone();
        move || sluice_e2e::headless_chromium(&url, &profile, &["--dump-dom".to_string()])
    })
    .await
    .unwrap();
    let _ = std::fs::remove_dir_all(&profile);
    assert!(dump.status.success(), "{dump:?}");
    let dom = String::from_utf8(dump.stdout).unwrap();
    assert!(
        dom.contains("data-rendered=\""),
        "the script never rendered: {dom}"
    );
    let budget_row = dom
        .find(&format!("data-budget=\"team:{team}\""))
        .map(|at| &dom[at..at + dom[at..].find("</tr>").unwrap()])
        .unwrap_or_else(|| panic!("no row for the team's budget: {dom}"));
    assert!(budget_row.contains("$1.0000"), "{budget_row}");
    assert!(
        budget_row.contains(&format!("${:.4}", recorded as f64 / 1e6)),
        "{budget_row}"
    );
    assert!(
        dom.contains("data-model=\"priced\""),
        "no line for the model: {dom}"
    );
    drop(stack);
    drop_postgres(&database).await;
    let _ = std::fs::remove_file(config);
}

/// What makes a call cost more than its body says, mixed: `n: 4`, long
/// `previous_response_id` chains, conversation turns carrying their
/// history, streams, all at once from callers on two edges in front of two
/// origins on one Postgres: a $1 team budget is never passed.
#[tokio::test(flavor = "multi_thread")]
async fn a_team_budget_holds_for_every_kind_of_call_mixed() {
    let (database_url, database) = fresh_postgres().await;
    let config = std::env::temp_dir().join(format!("{}.toml", unique("sluice-budgets-mix")));
    std::fs::write(
        &config,
        "[[models]]\nname = \"priced\"\n[[models.deployments]]\nprovider = \"simulated\"\n\
         input_cost_per_million = 100.0\noutput_cost_per_million = 10000.0\n",
    )
    .unwrap();
    let admin_key = unique("sk-admin");
    let stack = Stack::start(Options {
        edge_variables: vec![
            ("rate_limit_free", "100000/1h".into()),
            ("rate_limit_ip", "unlimited".into()),
        ],
        runtime_config: Some(
            "[key_value_store.default]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:6379\"\n"
                .into(),
        ),
        edge_hosts: 2,
        origins: 2,
        api_keys: vec![(admin_key.clone(), "root".into(), "admin")],
        origin_env: vec![
            ("SLUICE_CONFIG", config.display().to_string()),
            ("SLUICE_DATABASE__URL", database_url.clone()),
            ("SLUICE_BUDGETS__DEFINITIONS_CACHE_MS", "0".into()),
            ("SLUICE_DATABASE__MAX_CONNECTIONS", "20".into()),
            ("SLUICE_DATABASE__MIN_CONNECTIONS", "2".into()),
        ],
        ..Options::default()
    })
    .await;
    let edge = &stack.edges[0];
    let team = unique("team");
    let subject = unique("user");
    let (status, body) = send(
        "POST",
        &format!("{edge}/v1/admin/teams"),
        &admin_key,
        Some(json!({ "id": team, "name": "Mixed" })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    send(
        "PUT",
        &format!("{edge}/v1/admin/teams/{team}/members/{subject}"),
        &admin_key,
        None,
    )
    .await;
    let (status, body) = send(
        "PUT",
        &format!("{edge}/v1/admin/budgets/team/{team}"),
        &admin_key,
        Some(json!({ "period": "day", "limit_usd": 1.0 })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (_, created) = send(
        "POST",
        &format!("{edge}/v1/admin/keys"),
        &admin_key,
        Some(json!({ "subject": subject, "name": "mixed" })),
    )
    .await;
    let key = created["key"].as_str().unwrap().to_string();

    let long = "lorem ipsum ".repeat(300);
    let mut tasks = Vec::new();
    for caller in 0..8usize {
        let edge = stack.edges[caller % 2].clone();
        let (key, long) = (key.clone(), long.clone());
        tasks.push(tokio::spawn(async move {
            let mut previous: Option<String> = None;
            let mut conversation: Option<String> = None;
            let mut outcomes = Vec::new();
            for turn in 0..12 {
                let stream = turn % 2 == 1;
                let (url, body) = match caller % 4 {
                    0 => (
                        format!("{edge}/v1/chat/completions"),
                        json!({ "model": "priced", "max_tokens": 8, "n": 4,
                            "messages": [{ "role": "user", "content": format!("{caller}/{turn}") }] }),
                    ),
                    1 => (
                        format!("{edge}/v1/responses"),
                        json!({ "model": "priced", "max_output_tokens": 16, "input": long,
                            "previous_response_id": previous }),
                    ),
                    2 => {
                        if conversation.is_none() {
                            let (_, made) =
                                send("POST", &format!("{edge}/v1/conversations"), &key, Some(json!({}))).await;
                            conversation = made["id"].as_str().map(str::to_string);
                        }
                        (
                            format!("{edge}/v1/conversations/{}/messages", conversation.as_deref().unwrap()),
                            json!({ "model": "priced", "content": long, "max_tokens": 4, "stream": stream }),
                        )
                    }
                    _ => (
                        format!("{edge}/v1/messages"),
                        json!({ "model": "priced", "max_tokens": 16, "stream": stream,
                            "messages": [{ "role": "user", "content": format!("{caller}/{turn}") }] }),
                    ),
                };
                let response = reqwest::Client::new()
                    .post(&url)
                    .bearer_auth(&key)
                    .timeout(Duration::from_secs(30))
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                let text = response.text().await.unwrap();
                if caller % 4 == 1 && status == 200 {
                    let answer: Value = serde_json::from_str(&text).unwrap();
                    previous = answer["id"].as_str().map(str::to_string);
                }
                assert!(
                    matches!(status, 200 | 201 | 429),
                    "caller {caller} turn {turn}: {status} {text}"
                );
                outcomes.push(status);
            }
            outcomes
        }));
    }
    let mut admitted = 0;
    for task in tasks {
        admitted += task.await.unwrap().iter().filter(|s| **s != 429).count();
    }
    assert!(admitted >= 4, "{admitted} admitted");
    let mut db = sqlx::PgConnection::connect(&database_url).await.unwrap();
    // The usage records are written off the request path: wait for them.
    let mut spent = 0;
    for _ in 0..50 {
        let (count, total): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), CAST(COALESCE(SUM(cost_microdollars), 0) AS BIGINT) FROM usage_records WHERE team_id = $1",
        )
        .bind(&team)
        .fetch_one(&mut db)
        .await
        .unwrap();
        spent = total;
        if count as usize >= admitted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        spent > 0 && spent <= 1_000_000,
        "spent {spent} of 1000000 microdollars"
    );
    let (_, budget) = send(
        "GET",
        &format!("{edge}/v1/admin/budgets/team/{team}"),
        &admin_key,
        None,
    )
    .await;
    assert_eq!(budget["reserved_usd"], 0.0, "{budget}");
    println!("mixed: {admitted} of 96 admitted, spent {spent} of 1000000 microdollars");
    drop(stack);
    drop_postgres(&database).await;
    let _ = std::fs::remove_file(config);
}
