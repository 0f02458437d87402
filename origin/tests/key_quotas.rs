//! Provider key quotas shared across origin replicas through Redis (the
//! machine's, 127.0.0.1:6379, which the test command starts when down): two
//! origin instances with their own key pools draw from one key's quota.
#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "tests: any failure should fail the test"
)]

mod common;

use axum::http::StatusCode;
use common::{TestDb, call, identity, state_and_router};
use serde_json::json;
use sluice_core::identity::Tier;

async fn calls_admitted(quota_lines: &str, redis: Option<&str>) -> (usize, usize) {
    let prefix = format!("sluice:test:{}:", uuid::Uuid::new_v4().simple());
    let routing = match redis {
        Some(url) => {
            format!("[routing]\nquota_redis_url = \"{url}\"\nquota_prefix = \"{prefix}\"\n")
        }
        None => String::new(),
    };
    let config = format!(
        "{routing}[[models]]\nname = \"limited\"\n[[models.deployments]]\nprovider = \"simulated\"\n{quota_lines}\n"
    );
    let (db_a, db_b) = (TestDb::sqlite(), TestDb::sqlite());
    let (_, a) = state_and_router(&db_a.config(&config)).await;
    let (_, b) = state_and_router(&db_b.config(&config)).await;
    // Quotas are fixed minute, hour and day windows: start well inside one.
    let into_minute = sluice_origin::clock::now_ms() % 60_000;
    if into_minute > 55_000 {
        tokio::time::sleep(std::time::Duration::from_millis(
            (60_100 - into_minute) as u64,
        ))
        .await;
    }
    let who = identity("quota", Tier::Premium, &[]);
    let (mut ok, mut limited) = (0, 0);
    for i in 0..12 {
        let router = if i % 2 == 0 { &a } else { &b };
        let (status, body) = call(router, "POST", "/v1/chat/completions", &who,
            Some(json!({ "model": "limited", "messages": [{ "role": "user", "content": format!("q {i}") }] }))).await;
        match status {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}");
                limited += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    (ok, limited)
}

#[tokio::test]
async fn two_replicas_on_one_redis_share_a_keys_minute_quota() {
    let (ok, limited) =
        calls_admitted("requests_per_minute = 5", Some("redis://127.0.0.1:6379")).await;
    assert_eq!((ok, limited), (5, 7));
}

#[tokio::test]
async fn without_redis_each_replica_has_the_whole_quota() {
    // The in-process default: each of the two has its own 5 per minute, of
    // which normal requests may use 90 % (`critical_reserve`): 4 each.
    let (ok, _) = calls_admitted("requests_per_minute = 5", None).await;
    assert_eq!(ok, 8);
}

#[tokio::test]
async fn hourly_and_daily_quotas_hold_across_replicas() {
    let (ok, _) = calls_admitted(
        "requests_per_hour = 4\nrequests_per_day = 100",
        Some("redis://127.0.0.1:6379"),
    )
    .await;
    assert_eq!(ok, 4);
}
