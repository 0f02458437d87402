//! USD budgets through the origin's router, on SQLite and on Postgres
//! (127.0.0.1:5432; the test command starts it when down): the admin API,
//! refusals at each level of key within user within team, concurrent
//! requests from two origin instances on one database never spending past a
//! limit, a stream ended at its reservation, soft-threshold webhooks sent
//! once, and reports that match the usage records.
#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers: any failure should fail the test"
)]

mod common;
mod upstream;

use axum::http::StatusCode;
use common::{TestDb, call, identity, send, signed, state_and_router};
use serde_json::{Value, json};
use sluice_core::identity::{Identity, Tier};
use sqlx::Row;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use upstream::{Behaviour, Upstream};

/// One simulated model at $0.0001 per prompt token and $0.01 per output
/// token, and one at the same prices behind the test upstream (which can
/// ignore `max_tokens`).
fn models(upstream: &str, webhook: Option<&str>) -> String {
    let webhook = webhook.map_or(String::new(), |url| format!("webhook_url = \"{url}\""));
    format!(
        r#"
[budgets]
{webhook}
definitions_cache_ms = 0
[[models]]
name = "priced"
[[models.deployments]]
provider = "simulated"
input_cost_per_million = 100.0
output_cost_per_million = 10000.0
[[models]]
name = "runaway"
[[models.deployments]]
provider = "openai"
base_url = "{upstream}"
model = "upstream-gpt"
input_cost_per_million = 100.0
output_cost_per_million = 10000.0
"#
    )
}

fn admin() -> Identity {
    identity("root", Tier::Admin, &[])
}

fn user(sub: &str, key: &str) -> Identity {
    Identity {
        kid: Some(key.into()),
        ..identity(sub, Tier::Free, &[])
    }
}

fn chat(content: &str, max_tokens: u32) -> Value {
    json!({ "model": "priced", "max_tokens": max_tokens,
            "messages": [{ "role": "user", "content": content }] })
}

async fn put_budget(router: &axum::Router, scope: &str, id: &str, period: &str, usd: f64) {
    let (status, body) = call(
        router,
        "PUT",
        &format!("/v1/admin/budgets/{scope}/{id}"),
        &admin(),
        Some(json!({ "period": period, "limit_usd": usd })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["limit_usd"], usd);
}

async fn team_with(router: &axum::Router, team: &str, members: &[&str]) {
    let (status, body) = call(
        router,
        "POST",
        "/v1/admin/teams",
        &admin(),
        Some(json!({ "id": team, "name": "Team" })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for member in members {
        let (status, body) = call(
            router,
            "PUT",
            &format!("/v1/admin/teams/{team}/members/{member}"),
            &admin(),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
}

/// Spend recorded in the usage records, in microdollars, per `column` value.
async fn recorded(db: &sluice_origin::db::Db, column: &str, value: &str) -> i64 {
    let row = sqlx::query(&format!(
        "SELECT CAST(COALESCE(SUM(cost_microdollars), 0) AS BIGINT) AS spent FROM usage_records WHERE {column} = $1"
    ))
    .bind(value)
    .fetch_one(db)
    .await
    .unwrap();
    row.try_get("spent").unwrap()
}

async fn flushed(state: &sluice_origin::app::AppState) {
    state.usage.flush().await;
}

async fn nested_budgets_each_refuse(db: TestDb) {
    let up = Upstream::start().await;
    let config = db.config(&models(&up.openai_base(), None));
    let (state, router) = state_and_router(&config).await;
    team_with(&router, "acme", &["ann"]).await;
    let ann = user("ann", "key-1");
    // The key's budget is the tightest: it refuses first.
    put_budget(&router, "key", "key-1", "day", 0.50).await;
    put_budget(&router, "user", "ann", "day", 5.0).await;
    put_budget(&router, "team", "acme", "month", 50.0).await;
    let (status, headers, text) = send(
        &router,
        signed(
            "POST",
            "/v1/chat/completions",
            &ann,
            &[],
            Some(chat("hi", 5)),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(headers["x-sluice-budget-scope"], "key:key-1");
    let remaining: f64 = headers["x-sluice-budget-remaining-usd"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let cost: f64 = headers["x-sluice-cost-usd"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(cost > 0.0);
    assert!(
        (remaining - (0.50 - cost)).abs() < 1e-6,
        "{remaining} {cost}"
    );

    // A request whose worst case passes the key's remainder is refused, in
    // OpenAI's shape, naming the key's budget.
    let big = chat(&"word ".repeat(200), 100);
    let (status, headers, text) = send(
        &router,
        signed("POST", "/v1/chat/completions", &ann, &[], Some(big)),
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["error"]["type"], "insufficient_quota");
    assert_eq!(body["error"]["code"], "insufficient_quota");
    assert_eq!(body["error"]["budget"]["scope"], "key");
    assert_eq!(body["error"]["budget"]["limit_usd"], 0.5);
    assert!(
        body["error"]["budget"]["resets_at"]
            .as_str()
            .unwrap()
            .ends_with("T00:00:00Z")
    );
    assert_eq!(body["status_code"], 429);
    assert!(headers.contains_key("retry-after"));

    // Lift the key's: the user's refuses; lift it: the team's; on Messages too.
    put_budget(&router, "key", "key-1", "day", 100.0).await;
    put_budget(&router, "user", "ann", "week", 0.10).await;
    let (status, body) = call(
        &router,
        "POST",
        "/v1/chat/completions",
        &ann,
        Some(chat("hi", 50)),
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["error"]["budget"]["scope"], "user");
    assert_eq!(body["error"]["budget"]["period"], "week");
    put_budget(&router, "user", "ann", "week", 100.0).await;
    put_budget(&router, "team", "acme", "total", 0.05).await;
    let messages = json!({ "model": "priced", "max_tokens": 50,
        "messages": [{ "role": "user", "content": "hi" }] });
    let (status, body) = call(&router, "POST", "/v1/messages", &ann, Some(messages)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("team `acme`"),
        "{body}"
    );
    // A total budget never resets: no Retry-After, `resets_at` null.
    let (status, headers, text) = send(
        &router,
        signed(
            "POST",
            "/v1/chat/completions",
            &ann,
            &[],
            Some(chat("hi", 50)),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(!headers.contains_key("retry-after"));
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["error"]["budget"]["resets_at"],
        Value::Null
    );

    // Someone outside the team, without budgets, is not limited.
    let (status, _) = call(
        &router,
        "POST",
        "/v1/chat/completions",
        &user("bob", "key-2"),
        Some(chat("hi", 5)),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // The caller sees its own budgets and spend; the report agrees with the records.
    let (status, usage) = call(&router, "GET", "/v1/usage", &ann, None).await;
    assert_eq!(status, StatusCode::OK, "{usage}");
    assert_eq!(usage["team_id"], "acme");
    let scopes: Vec<&str> = usage["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["scope"].as_str().unwrap())
        .collect();
    assert_eq!(scopes, ["team", "user", "key"]);
    flushed(&state).await;
    let ann_spent = recorded(&state.db, "subject", "ann").await;
    assert!(ann_spent > 0);
    assert_eq!(
        usage["spend"]["total"]["cost_usd"],
        json!(ann_spent as f64 / 1e6)
    );
    let (status, report) = call(
        &router,
        "GET",
        "/v1/admin/spend?group_by=team",
        &admin(),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let acme = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["group"] == "acme")
        .unwrap();
    assert_eq!(acme["cost_usd"], json!(ann_spent as f64 / 1e6));
    assert_eq!(acme["requests"], 1);
    let (status, headers, csv) = send(
        &router,
        signed(
            "GET",
            "/v1/admin/spend?group_by=user&format=csv",
            &admin(),
            &[],
            None,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "text/csv; charset=utf-8");
    assert!(
        csv.starts_with("group,requests,prompt_tokens,completion_tokens,cost_usd\n"),
        "{csv}"
    );
    assert!(csv.contains("ann,1,"), "{csv}");
    // Budgets' spend equals the records.
    let (_, budgets) = call(&router, "GET", "/v1/admin/budgets", &admin(), None).await;
    let key = budgets["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["scope"] == "key" && b["id"] == "key-1")
        .unwrap();
    assert_eq!(key["spent_usd"], json!(ann_spent as f64 / 1e6));
    assert_eq!(key["reserved_usd"], 0.0);

    // Bad input is refused in OpenAI's shape.
    let (status, body) = call(
        &router,
        "PUT",
        "/v1/admin/budgets/planet/x",
        &admin(),
        Some(json!({ "period": "day", "limit_usd": 1.0 })),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = call(
        &router,
        "PUT",
        "/v1/admin/budgets/key/x",
        &admin(),
        Some(json!({ "period": "fortnight", "limit_usd": 1.0 })),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = call(
        &router,
        "PUT",
        "/v1/admin/budgets/team/nope",
        &admin(),
        Some(json!({ "period": "day", "limit_usd": 1.0 })),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(&router, "GET", "/v1/admin/budgets", &ann, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    db.drop_database().await;
}

#[tokio::test]
async fn nested_budgets_each_refuse_on_sqlite() {
    nested_budgets_each_refuse(TestDb::sqlite()).await;
}

#[tokio::test]
async fn nested_budgets_each_refuse_on_postgres() {
    nested_budgets_each_refuse(TestDb::postgres().await).await;
}

/// 200 concurrent requests from two origin instances (own pools, own
/// caches) on one database, against a team budget that admits about 50:
/// recorded spend never passes the limit.
async fn concurrent_requests_never_overspend(db: TestDb) {
    let up = Upstream::start().await;
    let config = db.config(&models(&up.openai_base(), None));
    let (state, first) = state_and_router(&config).await;
    let (other, second) = state_and_router(&config).await;
    let members: Vec<String> = (0..4).map(|i| format!("member-{i}")).collect();
    let names: Vec<&str> = members.iter().map(String::as_str).collect();
    team_with(&first, "racers", &names).await;
    // What one answer costs (~$0.06): the limit is 50 of them.
    let (_, headers, _) = send(
        &first,
        signed(
            "POST",
            "/v1/chat/completions",
            &user("probe", "probe-key"),
            &[],
            Some(chat("race 000", 8)),
        ),
    )
    .await;
    let one: f64 = headers["x-sluice-cost-usd"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let limit = (one * 50.0 * 1e4).round() / 1e4;
    put_budget(&first, "team", "racers", "day", limit).await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let router = if i % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        let who = user(&members[i % 4], &format!("key-{}", i % 4));
        tasks.push(tokio::spawn(async move {
            let (status, _) = call(
                &router,
                "POST",
                "/v1/chat/completions",
                &who,
                Some(chat(&format!("race {i:03}"), 8)),
            )
            .await;
            status
        }));
    }
    let mut admitted = 0;
    for task in tasks {
        match task.await.unwrap() {
            StatusCode::OK => admitted += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("unexpected {other}"),
        }
    }
    flushed(&state).await;
    flushed(&other).await;
    let spent = recorded(&state.db, "team_id", "racers").await;
    let limit_micro = (limit * 1e6).round() as i64;
    assert!(spent <= limit_micro, "spent {spent} over {limit_micro}");
    assert!((10..=55).contains(&admitted), "{admitted} admitted");
    let (_, budget) = call(
        &first,
        "GET",
        "/v1/admin/budgets/team/racers",
        &admin(),
        None,
    )
    .await;
    assert_eq!(budget["spent_usd"], json!(spent as f64 / 1e6), "{budget}");
    assert_eq!(budget["reserved_usd"], 0.0, "{budget}");
    println!("admitted {admitted} of 200; spent {spent} of {limit_micro} microdollars");
    db.drop_database().await;
}

#[tokio::test]
async fn concurrent_requests_never_overspend_on_sqlite() {
    concurrent_requests_never_overspend(TestDb::sqlite()).await;
}

#[tokio::test]
async fn concurrent_requests_never_overspend_on_postgres() {
    concurrent_requests_never_overspend(TestDb::postgres().await).await;
}

/// Notices POSTed to the webhook, as JSON bodies.
async fn webhook() -> (String, Arc<Mutex<Vec<Value>>>) {
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let kept = Arc::clone(&seen);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let kept = Arc::clone(&kept);
            async move {
                kept.lock().unwrap().push(body);
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

#[tokio::test]
async fn thresholds_notify_once_and_streams_end_at_their_reservation() {
    let db = TestDb::sqlite();
    let up = Upstream::start().await;
    let (hook, notices) = webhook().await;
    let config = db.config(&models(&up.openai_base(), Some(&hook)));
    let (state, router) = state_and_router(&config).await;
    let dee = user("dee", "key-d");
    put_budget(&router, "user", "dee", "month", 3.0).await;
    // Each answer costs ~$0.06 and reserves ~$0.09: spend reaches at least
    // $2.91, past 70, 85 and 95 %.
    let mut ok = 0;
    for i in 0..60 {
        let (status, _) = call(
            &router,
            "POST",
            "/v1/chat/completions",
            &dee,
            Some(chat(&format!("n {i}"), 8)),
        )
        .await;
        if status == StatusCode::OK {
            ok += 1;
        }
    }
    assert!(ok >= 40, "{ok}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = notices.lock().unwrap().clone();
    let thresholds: Vec<f64> = seen
        .iter()
        .map(|n| n["threshold"].as_f64().unwrap())
        .collect();
    assert_eq!(thresholds, [0.7, 0.85, 0.95], "{seen:?}");
    assert!(seen.iter().all(|n| n["type"] == "budget.threshold_reached"
        && n["scope"] == "user"
        && n["id"] == "dee"));

    // A stream whose upstream ignores its cap is ended at the reservation
    // with an error event in OpenAI's shape, and charged what it streamed.
    up.for_model(
        "upstream-gpt",
        Behaviour::SlowStream(Duration::from_millis(1)),
    );
    put_budget(&router, "user", "eve", "day", 50.0).await;
    let eve = user("eve", "key-e");
    let request = json!({ "model": "runaway", "stream": true, "max_tokens": 10,
        "messages": [{ "role": "user", "content": "go on" }] });
    let (status, _, text) = send(
        &router,
        signed("POST", "/v1/chat/completions", &eve, &[], Some(request)),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let ticks = text.matches("tick").count();
    assert!((1..=10).contains(&ticks), "{ticks} chunks relayed");
    assert!(text.contains("\"budget_reservation_reached\""), "{text}");
    assert!(!text.contains("[DONE]"));
    flushed(&state).await;
    let charged = recorded(&state.db, "subject", "eve").await;
    assert!(charged > 0);
    let (_, budget) = call(&router, "GET", "/v1/admin/budgets/user/eve", &admin(), None).await;
    assert_eq!(budget["spent_usd"], json!(charged as f64 / 1e6));
    assert_eq!(budget["reserved_usd"], 0.0);

    // Without a cap, Sluice sets the default one under a budget, and says so.
    up.clear();
    let (status, headers, _) = send(
        &router,
        signed(
            "POST",
            "/v1/chat/completions",
            &eve,
            &[],
            Some(json!({ "model": "runaway", "messages": [{ "role": "user", "content": "hi" }] })),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-sluice-output-cap"], "4096");
    let sent = up.seen().last().unwrap().body.clone();
    assert_eq!(sent["max_tokens"], 4096);
    db.drop_database().await;
}

/// A day budget spent out on one day has its whole limit again the next
/// (a new window starts at zero); a total budget does not.
#[tokio::test]
async fn budgets_reset_at_their_period_boundary() {
    use sluice_origin::budgets::period::Period;
    use sluice_origin::budgets::store::{Budget, BudgetStore, Scope};
    let db = TestDb::sqlite();
    let pool = sluice_origin::db::connect(&db.config("").database)
        .await
        .unwrap();
    let store = BudgetStore::new(pool, false);
    let budget = |period| Budget {
        scope: Scope::User,
        scope_id: format!("{period:?}"),
        period,
        limit_microdollars: 1_000,
    };
    // 2026-12-02T23:59:59.999Z, then one millisecond later.
    let before_midnight = 1_796_255_999_999;
    for period in [Period::Day, Period::Total] {
        let budgets = [budget(period)];
        store.set_budget(&budgets[0]).await.unwrap();
        let held = store
            .reserve("spend", &budgets, 1_000, before_midnight, 60_000)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(held[0].remaining_microdollars(), 0);
        let window = sluice_origin::budgets::store::HeldWindow {
            scope: Scope::User,
            id: budgets[0].scope_id.clone(),
            start: held[0].window.start_ms,
        };
        store
            .settle("spend", &[window], 1_000, 1_000)
            .await
            .unwrap();
        let id = format!("next-{period:?}");
        let same_day = store
            .reserve(&id, &budgets, 1, before_midnight, 60_000)
            .await
            .unwrap();
        assert!(same_day.is_err(), "{period:?}: spent out");
        let next_day = store
            .reserve(&id, &budgets, 1_000, before_midnight + 1, 60_000)
            .await
            .unwrap();
        assert_eq!(next_day.is_ok(), period == Period::Day, "{period:?}");
    }
}

/// One way to spend: every surface, with what makes a call cost more than
/// its body says (`n` answers, stored context, a conversation's history).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Chat { n: u32, stream: bool },
    ResponsesChain,
    ConversationTurn,
    Messages { stream: bool },
    Embeddings,
    Job,
}

/// What one caller carries from one request to its next.
#[derive(Default)]
struct Caller {
    previous_response: Option<String>,
    conversation: Option<String>,
}

/// Text of about `bytes` bytes (about a quarter as many prompt tokens).
fn words(bytes: usize, seed: usize) -> String {
    let mut text = format!("caller {seed}: ");
    while text.len() < bytes {
        text.push_str("lorem ipsum ");
    }
    text
}

/// Sends one request of `path` as `who`; whether it was admitted (a
/// budget's 429 is not; a job counts once it ran).
async fn spend(
    router: &axum::Router,
    who: &Identity,
    path: Path,
    caller: &mut Caller,
    seed: usize,
    max_tokens: u32,
    prompt_bytes: usize,
) -> bool {
    let text = words(prompt_bytes, seed);
    let (route, body) = match path {
        Path::Chat { n, stream } => (
            "/v1/chat/completions".to_string(),
            json!({ "model": "priced", "max_tokens": max_tokens, "n": n, "stream": stream,
                "messages": [{ "role": "user", "content": text }] }),
        ),
        Path::ResponsesChain => (
            "/v1/responses".to_string(),
            json!({ "model": "priced", "max_output_tokens": max_tokens.max(16), "input": text,
                "previous_response_id": caller.previous_response }),
        ),
        Path::ConversationTurn => {
            if caller.conversation.is_none() {
                let (status, created) =
                    call(router, "POST", "/v1/conversations", who, Some(json!({}))).await;
                assert_eq!(status, StatusCode::CREATED, "{created}");
                caller.conversation = created["id"].as_str().map(str::to_string);
            }
            (
                format!(
                    "/v1/conversations/{}/messages",
                    caller.conversation.as_deref().unwrap()
                ),
                json!({ "model": "priced", "content": text, "max_tokens": max_tokens }),
            )
        }
        Path::Messages { stream } => (
            "/v1/messages".to_string(),
            json!({ "model": "priced", "max_tokens": max_tokens, "stream": stream,
                "messages": [{ "role": "user", "content": text }] }),
        ),
        Path::Embeddings => (
            "/v1/embeddings".to_string(),
            json!({ "model": "priced", "input": [text.clone(), text] }),
        ),
        Path::Job => (
            "/v1/jobs".to_string(),
            json!({ "model": "priced", "max_tokens": max_tokens,
                "messages": [{ "role": "user", "content": text }] }),
        ),
    };
    let (status, _, answer) = send(router, signed("POST", &route, who, &[], Some(body))).await;
    match status {
        StatusCode::OK | StatusCode::CREATED | StatusCode::ACCEPTED => {}
        StatusCode::TOO_MANY_REQUESTS => return false,
        other => panic!("{path:?}: unexpected {other}: {answer}"),
    }
    let answer: Value = serde_json::from_str(&answer).unwrap_or(Value::Null);
    if path == Path::ResponsesChain {
        caller.previous_response = answer["id"].as_str().map(str::to_string);
    }
    if path == Path::Job {
        let id = answer["job_id"].as_str().unwrap().to_string();
        for _ in 0..400 {
            let (_, job) = call(router, "GET", &format!("/v1/jobs/{id}"), who, None).await;
            match job["status"].as_str() {
                Some("completed") => return true,
                Some("failed") => return false,
                _ => tokio::time::sleep(Duration::from_millis(25)).await,
            }
        }
        panic!("job {id} never finished");
    }
    true
}

/// Two app instances on one database, each with a worker, as two origin
/// replicas are.
struct Replicas {
    states: [sluice_origin::app::AppState; 2],
    routers: [axum::Router; 2],
    stop: tokio::sync::watch::Sender<bool>,
    workers: Vec<tokio::task::JoinHandle<()>>,
    _upstream: Upstream,
}

impl Replicas {
    async fn start(db: &TestDb) -> Replicas {
        let up = Upstream::start().await;
        let config = db.config(&models(&up.openai_base(), None));
        let (state, first) = state_and_router(&config).await;
        let (other, second) = state_and_router(&config).await;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let settings = sluice_origin::queue::worker::WorkerSettings {
            concurrency: 2,
            poll_interval: Duration::from_millis(10),
            drain_timeout: Duration::from_secs(1),
            cleanup_interval: Duration::from_secs(60),
        };
        let workers = [&state, &other]
            .iter()
            .map(|s| {
                tokio::spawn(sluice_origin::queue::worker::run(
                    s.runner(),
                    settings,
                    stopped.clone(),
                ))
            })
            .collect();
        Replicas {
            states: [state, other],
            routers: [first, second],
            stop,
            workers,
            _upstream: up,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        for worker in self.workers {
            worker.await.unwrap();
        }
    }

    /// A team of four under a budget of `limit_usd`; `requests` run by four
    /// concurrent callers (two on each replica), each in its order. Returns
    /// how many were admitted, after checking that the recorded spend is
    /// within the limit and nothing stays reserved.
    async fn within_budget(&self, limit_usd: f64, requests: Vec<(Path, u32, usize)>) -> usize {
        let [first, second] = &self.routers;
        let team = format!("team-{}", uuid::Uuid::new_v4().simple());
        let members: Vec<String> = (0..4).map(|i| format!("{team}-m{i}")).collect();
        let names: Vec<&str> = members.iter().map(String::as_str).collect();
        team_with(first, &team, &names).await;
        put_budget(first, "team", &team, "day", limit_usd).await;
        let mut lanes: Vec<Vec<(Path, u32, usize)>> = vec![Vec::new(); 4];
        for (i, request) in requests.into_iter().enumerate() {
            lanes[i % 4].push(request);
        }
        let mut tasks = Vec::new();
        for (lane, requests) in lanes.into_iter().enumerate() {
            let router = if lane % 2 == 0 {
                first.clone()
            } else {
                second.clone()
            };
            let who = user(&members[lane], &format!("{team}-key-{lane}"));
            tasks.push(tokio::spawn(async move {
                let mut caller = Caller::default();
                let mut admitted = 0;
                for (i, (path, max_tokens, prompt_bytes)) in requests.into_iter().enumerate() {
                    let seed = lane * 1000 + i;
                    if spend(
                        &router,
                        &who,
                        path,
                        &mut caller,
                        seed,
                        max_tokens,
                        prompt_bytes,
                    )
                    .await
                    {
                        admitted += 1;
                    }
                }
                admitted
            }));
        }
        let mut admitted = 0;
        for task in tasks {
            admitted += task.await.unwrap();
        }
        for state in &self.states {
            flushed(state).await;
        }
        let spent = recorded(&self.states[0].db, "team_id", &team).await;
        let limit_micro = (limit_usd * 1e6).round() as i64;
        assert!(
            spent <= limit_micro,
            "spent {spent} of {limit_micro} microdollars"
        );
        let (_, budget) = call(
            first,
            "GET",
            &format!("/v1/admin/budgets/team/{team}"),
            &admin(),
            None,
        )
        .await;
        assert_eq!(budget["spent_usd"], json!(spent as f64 / 1e6), "{budget}");
        assert_eq!(budget["reserved_usd"], 0.0, "{budget}");
        println!("{admitted} admitted, spent {spent} of {limit_micro} microdollars");
        admitted
    }
}

/// Every path stays within its budget under concurrent callers, each with
/// what makes it cost more than its body says.
async fn every_path_stays_within_its_budget(db: TestDb) {
    let paths = [
        (
            Path::Chat {
                n: 4,
                stream: false,
            },
            8,
            200,
            1.0,
        ),
        (Path::Chat { n: 4, stream: true }, 8, 200, 1.0),
        // Each turn carries the whole chain: the context, not the body, costs.
        (Path::ResponsesChain, 4, 4000, 1.0),
        (Path::ConversationTurn, 4, 4000, 1.0),
        (Path::Messages { stream: false }, 16, 400, 1.0),
        (Path::Messages { stream: true }, 16, 400, 1.0),
        (Path::Embeddings, 0, 2000, 1.0),
        (Path::Job, 8, 200, 0.5),
    ];
    let replicas = Replicas::start(&db).await;
    for (path, max_tokens, prompt_bytes, limit) in paths {
        let requests = vec![(path, max_tokens, prompt_bytes); 40];
        let admitted = replicas.within_budget(limit, requests).await;
        assert!(
            (1..40).contains(&admitted),
            "{path:?}: {admitted} of 40 admitted"
        );
    }
    replicas.stop().await;
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_path_stays_within_its_budget_on_sqlite() {
    every_path_stays_within_its_budget(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_path_stays_within_its_budget_on_postgres() {
    every_path_stays_within_its_budget(TestDb::postgres().await).await;
}

fn any_path() -> impl proptest::strategy::Strategy<Value = Path> {
    use proptest::prelude::*;
    prop_oneof![
        (1u32..=4, any::<bool>()).prop_map(|(n, stream)| Path::Chat { n, stream }),
        Just(Path::ResponsesChain),
        Just(Path::ConversationTurn),
        any::<bool>().prop_map(|stream| Path::Messages { stream }),
        Just(Path::Embeddings),
        Just(Path::Job),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(6))]

    /// Random mixes of paths, caps and prompt sizes, from concurrent callers
    /// on two instances, never spend past one budget.
    #[test]
    fn random_mixes_never_spend_past_a_budget(
        requests in proptest::collection::vec((any_path(), 1u32..=24, 50usize..6000), 12..36),
        limit_cents in 10u32..200,
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let db = TestDb::sqlite();
            let replicas = Replicas::start(&db).await;
            replicas.within_budget(f64::from(limit_cents) / 100.0, requests).await;
            replicas.stop().await;
            db.drop_database().await;
        });
    }
}
