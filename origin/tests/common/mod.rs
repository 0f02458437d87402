//! Helpers shared by the origin's integration tests: a database per test
//! (a SQLite file, or a fresh Postgres database at 127.0.0.1:5432, database
//! `test`, trust auth; the test command starts it when down), the app on it,
//! and signed calls as the edge would make them.
#![allow(dead_code, reason = "each test crate uses part of this")]

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use sluice_core::edge_signature;
use sluice_core::identity::{Identity, Tier};
use sluice_origin::app::{AppState, app};
use sluice_origin::clock::unix_now;
use sluice_origin::config::Config;
use sqlx::Connection;
use std::time::Duration;
use tower::ServiceExt;

pub const SECRET: &str = "0123456789abcdef0123456789abcdef";
const POSTGRES_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A database for one test: a SQLite file, or a fresh Postgres database
/// dropped at the end.
pub struct TestDb {
    pub url: String,
    postgres_name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        TestDb {
            url: format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("sluice.db").display()
            ),
            postgres_name: None,
            _dir: Some(dir),
        }
    }

    pub async fn postgres() -> TestDb {
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

    pub async fn drop_database(self) {
        if let Some(name) = &self.postgres_name {
            let mut admin = sqlx::PgConnection::connect(POSTGRES_ADMIN).await.unwrap();
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut admin)
                .await
                .unwrap();
        }
    }

    /// The configuration for this database, with `extra` TOML appended.
    pub fn config(&self, extra: &str) -> Config {
        Config::from_toml(&format!(
            "{extra}\n[edge]\nsecret = \"{SECRET}\"\n[database]\nurl = \"{}\"\nmin_connections = 1\nmax_connections = 5\n",
            self.url
        ))
        .unwrap()
    }
}

/// The app's state and router on `db`.
pub async fn state_and_router(config: &Config) -> (AppState, axum::Router) {
    let pool = sluice_origin::db::connect(&config.database).await.unwrap();
    let state = AppState::new(config, pool).await.unwrap();
    let router = app(state.clone(), Duration::from_secs(30));
    (state, router)
}

pub async fn router(db: &TestDb) -> axum::Router {
    state_and_router(&db.config("")).await.1
}

pub fn identity(sub: &str, tier: Tier, scopes: &[&str]) -> Identity {
    Identity {
        sub: sub.into(),
        tier,
        kid: None,
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
    }
}

/// A request signed as the edge signs it.
pub fn signed(
    method: &str,
    path: &str,
    who: &Identity,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Request<Body> {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json");
    for (name, value) in
        edge_signature::signed_headers(SECRET.as_bytes(), method, path, unix_now(), &who.encode())
    {
        request = request.header(name, value);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request
        .body(body.map(|b| Body::from(b.to_string())).unwrap_or_default())
        .unwrap()
}

/// Status, headers and the body as text.
pub async fn send(
    router: &axum::Router,
    request: Request<Body>,
) -> (StatusCode, HeaderMap, String) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

pub async fn call(
    router: &axum::Router,
    method: &str,
    path: &str,
    who: &Identity,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let (status, _, text) = send(router, signed(method, path, who, &[], body)).await;
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}
