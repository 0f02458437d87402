//! API keys through the admin API and the edge's lookup, on SQLite and on
//! Postgres (127.0.0.1:5432, database `test`, trust auth; the test command
//! starts it when down). Each Postgres run gets a database of its own.
#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers: any failure should fail the test"
)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sluice_core::edge_signature::{self, IDENTITY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use sluice_core::identity::{EDGE_INTERNAL_SCOPE, Identity, Tier};
use sluice_origin::app::{AppState, app, unix_now};
use sluice_origin::config::Config;
use sqlx::Connection;
use std::time::Duration;
use tower::ServiceExt;

const SECRET: &str = "0123456789abcdef0123456789abcdef";
const POSTGRES_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A database for one test: a SQLite file, or a fresh Postgres database
/// dropped at the end.
struct TestDb {
    url: String,
    postgres_name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        TestDb {
            url: format!("sqlite://{}?mode=rwc", dir.path().join("keys.db").display()),
            postgres_name: None,
            _dir: Some(dir),
        }
    }

    async fn postgres() -> TestDb {
        let name = format!("sluice_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(POSTGRES_ADMIN)
            .await
            .unwrap_or_else(|e| panic!("Postgres at {POSTGRES_ADMIN}: {e}"));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        TestDb {
            url: format!("postgres://postgres@127.0.0.1:5432/{name}"),
            postgres_name: Some(name),
            _dir: None,
        }
    }

    async fn drop_database(self) {
        if let Some(name) = &self.postgres_name {
            let mut admin = sqlx::PgConnection::connect(POSTGRES_ADMIN).await.unwrap();
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut admin)
                .await
                .unwrap();
        }
    }
}

async fn router(db: &TestDb) -> axum::Router {
    let config = Config::from_toml(&format!(
        "[edge]\nsecret = \"{SECRET}\"\n[database]\nurl = \"{}\"\nmin_connections = 1\nmax_connections = 5\n",
        db.url
    ))
    .unwrap();
    let pool = sluice_origin::db::connect(&config.database).await.unwrap();
    app(
        AppState::new(&config, pool).unwrap(),
        Duration::from_secs(5),
    )
}

fn identity(sub: &str, tier: Tier, scopes: &[&str]) -> Identity {
    Identity {
        sub: sub.into(),
        tier,
        kid: None,
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
    }
}

async fn call(
    router: &axum::Router,
    method: &str,
    path: &str,
    who: &Identity,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let identity = who.encode();
    let now = unix_now();
    let signature = edge_signature::sign(SECRET.as_bytes(), method, path, now, &identity);
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(IDENTITY_HEADER, identity)
        .header(TIMESTAMP_HEADER, now.to_string())
        .header(SIGNATURE_HEADER, signature)
        .header("content-type", "application/json")
        .body(body.map(|b| Body::from(b.to_string())).unwrap_or_default())
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

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
        json!({"subject": "alice", "tier": "premium", "key_id": id, "scopes": ["chat"]})
    );
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
