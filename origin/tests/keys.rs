//! API keys through the admin API and the edge's lookup, on SQLite and on
//! Postgres (127.0.0.1:5432, database `test`, trust auth; the test command
//! starts it when down). Each Postgres run gets a database of its own.
#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers: any failure should fail the test"
)]

mod common;

use axum::http::StatusCode;
use common::{TestDb, call, identity, router};
use serde_json::json;
use sluice_core::identity::{EDGE_INTERNAL_SCOPE, Tier};

async fn key_lifecycle(db: TestDb) {
    let router = router(&db).await;
    let root = identity("root", Tier::Admin, &[]);
    let edge = identity("sluice-edge", Tier::Admin, &[EDGE_INTERNAL_SCOPE]);
    let alice = identity("alice", Tier::Premium, &[]);

    // Only admins manage keys.
    let (status, body) = call(
        &router,
        "POST",
        "/v1/admin/keys",
        &alice,
        Some(json!({"subject": "x"})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["type"], "permission_error");

    let (status, created) = call(
        &router,
        "POST",
        "/v1/admin/keys",
        &root,
        Some(json!({"subject": "alice", "tier": "premium", "name": "laptop", "scopes": ["chat"]})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let key = created["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("sk-") && key.len() > 60);
    assert_eq!(
        (created["subject"].as_str(), created["tier"].as_str()),
        (Some("alice"), Some("premium"))
    );
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(
        id,
        sluice_core::api_key::key_id(&sluice_core::api_key::hash(&key))
    );

    // A second key for the same subject keeps its tier unless one is given.
    let (status, second) = call(
        &router,
        "POST",
        "/v1/admin/keys",
        &root,
        Some(json!({"subject": "alice"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(second["tier"], "premium");

    let (status, list) = call(&router, "GET", "/v1/admin/keys?subject=alice", &root, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
    assert!(
        !list.to_string().contains(&key),
        "the key is never shown again"
    );
    assert!(
        !list.to_string().contains(&sluice_core::api_key::hash(&key)),
        "nor its hash"
    );

    // The edge's lookup: by hash, internal scope only.
    let lookup = format!("/internal/v1/keys/{}", sluice_core::api_key::hash(&key));
    let (status, _) = call(&router, "GET", &lookup, &root, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "admins are not the edge");
    let (status, found) = call(&router, "GET", &lookup, &edge, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        found,
        json!({"subject": "alice", "tier": "premium", "key_id": id, "scopes": ["chat"],
            "token_limits": {"key": null, "user": null}})
    );

    // Token limits an admin sets on the key and on its user reach the lookup.
    let (status, set) = call(
        &router,
        "PATCH",
        &format!("/v1/admin/keys/{id}"),
        &root,
        Some(json!({"token_limit": "20000/1m"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{set}");
    assert_eq!(set["key"]["token_limit"], "20000/1m");
    let (status, set) = call(
        &router,
        "PATCH",
        "/v1/admin/users/alice",
        &root,
        Some(json!({"token_limit": "unlimited"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{set}");
    let (_, found) = call(&router, "GET", &lookup, &edge, None).await;
    assert_eq!(
        found["token_limits"],
        json!({"key": "20000/1m", "user": "unlimited"})
    );
    let (status, refused) = call(
        &router,
        "PATCH",
        "/v1/admin/users/alice",
        &root,
        Some(json!({"token_limit": "20000 per minute"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    let (status, _) = call(
        &router,
        "PATCH",
        "/v1/admin/users/nobody",
        &root,
        Some(json!({"token_limit": null})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(&router, "GET", "/internal/v1/keys/00ff", &edge, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Revocation: at once at the origin.
    let (status, revoked) = call(
        &router,
        "DELETE",
        &format!("/v1/admin/keys/{id}"),
        &root,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{revoked}");
    assert!(revoked["key"]["revoked_at_ms"].as_i64().unwrap() > 0);
    let (status, _) = call(&router, "GET", &lookup, &edge, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(&router, "DELETE", "/v1/admin/keys/nope", &root, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Bad input is a 400 naming the field.
    let (status, body) = call(
        &router,
        "POST",
        "/v1/admin/keys",
        &root,
        Some(json!({"subject": ""})),
    )
    .await;
    assert_eq!(
        (status, body["error"]["param"].as_str()),
        (StatusCode::BAD_REQUEST, Some("subject"))
    );
    let (status, _) = call(
        &router,
        "POST",
        "/v1/admin/keys",
        &root,
        Some(json!({"subject": "b", "tier": "root"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = call(
        &router,
        "POST",
        "/v1/admin/keys",
        &root,
        Some(json!({"subject": "b", "scopes": [EDGE_INTERNAL_SCOPE]})),
    )
    .await;
    assert_eq!(
        (status, body["error"]["param"].as_str()),
        (StatusCode::BAD_REQUEST, Some("scopes"))
    );

    let (status, ready) = call(&router, "GET", "/ready", &root, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ready["database"]["ok"], true);
    db.drop_database().await;
}

#[tokio::test]
async fn keys_on_sqlite() {
    key_lifecycle(TestDb::sqlite()).await;
}

#[tokio::test]
async fn keys_on_postgres() {
    key_lifecycle(TestDb::postgres().await).await;
}
