//! The origin's HTTP API through `oneshot`: no sockets, the real router.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers: any failure should fail the test"
)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use sluice_core::edge_signature;
use sluice_core::identity::{Identity, Tier};
use sluice_origin::app::{AppState, app};
use sluice_origin::clock::unix_now;
use sluice_origin::config::Config;
use std::time::Duration;
use tower::ServiceExt;

const SECRET: &str = "0123456789abcdef0123456789abcdef";

async fn router() -> axum::Router {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::from_toml(&format!(
        "[edge]\nsecret = \"{SECRET}\"\n[server]\nbody_limit_bytes = 2048\nai_body_limit_bytes = 3072\n[database]\nurl = \"sqlite://{}?mode=rwc\"\nmin_connections = 1\n",
        dir.path().join("api.db").display()
    ))
    .unwrap();
    let db = sluice_origin::db::connect(&config.database).await.unwrap();
    // The file outlives the test's few requests; the OS cleans the temp dir.
    std::mem::forget(dir);
    app(
        AppState::new(&config, db).await.unwrap(),
        Duration::from_secs(5),
    )
}

fn alice() -> Identity {
    Identity {
        sub: "alice".into(),
        tier: Tier::Premium,
        kid: Some("k1".into()),
        scopes: vec![],
    }
}

fn signed(method: &str, path: &str, body: impl Into<Body>, at: u64) -> Request<Body> {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json");
    for (name, value) in
        edge_signature::signed_headers(SECRET.as_bytes(), method, path, at, &alice().encode())
    {
        request = request.header(name, value);
    }
    request.body(body.into()).unwrap()
}

async fn send(req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let response = router().await.oneshot(req).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, headers, body)
}

fn json(body: &[u8]) -> Value {
    let parsed = serde_json::from_slice(body);
    assert!(
        parsed.is_ok(),
        "not JSON: {}",
        String::from_utf8_lossy(body)
    );
    parsed.unwrap()
}

const CHAT: &str =
    r#"{"model":"sluice-sim-1","messages":[{"role":"user","content":"Hello there"}]}"#;

#[tokio::test]
async fn health_needs_no_signature() {
    let (status, _, body) = send(Request::get("/health").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&body)["status"], "ok");
}

#[tokio::test]
async fn signed_chat_completion_is_answered_by_the_simulated_provider() {
    let (status, headers, body) =
        send(signed("POST", "/v1/chat/completions", CHAT, unix_now())).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let v = json(&body);
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "sluice-sim-1");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert!(
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains("Hello there")
    );
    let usage = &v["usage"];
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(
            usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
        )
    );
    assert_eq!(headers["x-sluice-provider"], "simulated");
}

#[tokio::test]
async fn unsigned_stale_or_tampered_requests_get_401() {
    let unsigned = Request::post("/v1/chat/completions")
        .body(Body::from(CHAT))
        .unwrap();
    let (status, headers, body) = send(unsigned).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(json(&body)["error"]["code"], "edge_signature_required");
    assert!(headers.contains_key("www-authenticate"));

    let (status, _, _) = send(signed(
        "POST",
        "/v1/chat/completions",
        CHAT,
        unix_now() - 120,
    ))
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let mut retargeted = signed("POST", "/v1/chat/completions", CHAT, unix_now());
    *retargeted.uri_mut() = "/v1/me".parse().unwrap();
    let (status, _, _) = send(retargeted).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn bad_input_gets_openai_shaped_4xx_naming_the_field() {
    let (status, _, body) = send(signed(
        "POST",
        "/v1/chat/completions",
        "{\"model\": ",
        unix_now(),
    ))
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(json(&body)["error"]["type"], "invalid_request_error");

    let wrong_type = r#"{"model":"sluice-sim-1","messages":"hi"}"#;
    let (status, _, body) = send(signed(
        "POST",
        "/v1/chat/completions",
        wrong_type,
        unix_now(),
    ))
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(json(&body)["error"]["param"], "messages");

    let unknown = CHAT.replace("sluice-sim-1", "gpt-17");
    let (status, _, body) = send(signed("POST", "/v1/chat/completions", unknown, unix_now())).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(json(&body)["error"]["code"], "model_not_found");

    let huge = format!(
        r#"{{"model":"sluice-sim-1","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(4096)
    );
    let (status, _, body) = send(signed("POST", "/v1/chat/completions", huge, unix_now())).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(json(&body)["error"]["code"], "request_too_large");
    let message = json(&body)["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains("3072") && message.contains("ai_body_limit_bytes"),
        "the 413 names the limit and its setting: {message}"
    );
    // A generating route takes more than the others (2048 for the rest).
    let between = format!(
        r#"{{"model":"sluice-sim-1","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(2500)
    );
    let (status, _, _) = send(signed(
        "POST",
        "/v1/chat/completions",
        between.clone(),
        unix_now(),
    ))
    .await;
    assert_eq!(status, StatusCode::OK);
    let title = format!(r#"{{"title":"{}"}}"#, "t".repeat(2500));
    let (status, _, body) = send(signed("POST", "/v1/conversations", title, unix_now())).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        json(&body)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("body_limit_bytes"),
        "{body:?}"
    );
}

#[tokio::test]
async fn streamed_completion_is_server_sent_events() {
    let body = r#"{"model":"sluice-sim-1","messages":[{"role":"user","content":"Hi"}],"stream":true,"stream_options":{"include_usage":true}}"#;
    let (status, headers, body) =
        send(signed("POST", "/v1/chat/completions", body, unix_now())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "text/event-stream");
    let text = String::from_utf8(body).unwrap();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.last(), Some(&"data: [DONE]"));
    let usage = json(
        events[events.len() - 2]
            .strip_prefix("data: ")
            .unwrap()
            .as_bytes(),
    );
    assert!(usage["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    let content: String = events[..events.len() - 2]
        .iter()
        .map(|e| json(e.strip_prefix("data: ").unwrap().as_bytes()))
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert!(content.contains("Hi"), "{content}");
}

#[tokio::test]
async fn models_and_me_reflect_config_and_identity() {
    let (status, headers, body) =
        send(signed("GET", "/v1/models", Body::empty(), unix_now())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&body)["data"][0]["id"], "sluice-sim-1");
    assert_eq!(headers["cache-control"], "public, max-age=300");
    let (_, _, body) = send(signed("GET", "/v1/me", Body::empty(), unix_now())).await;
    let me = json(&body);
    assert_eq!(
        (me["subject"].as_str(), me["tier"].as_str()),
        (Some("alice"), Some("premium"))
    );
}

/// The `sluice_http_requests_total` count for one route and status, read
/// from the process's Prometheus recorder.
fn requests_counted(route: &str, status: u16) -> u64 {
    let page = sluice_telemetry::prometheus().render();
    page.lines()
        .filter(|l| l.starts_with("sluice_http_requests_total{"))
        .filter(|l| l.contains(&format!("route=\"{route}\"")))
        .filter(|l| l.contains(&format!("status=\"{status}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn a_request_that_times_out_is_counted_with_the_504_the_client_got() {
    sluice_telemetry::prometheus();
    let dir = tempfile::tempdir().unwrap();
    let config = Config::from_toml(&format!(
        "[edge]\nsecret = \"{SECRET}\"\n[simulated]\ntime_to_first_token_ms = 5000\n\
         [database]\nurl = \"sqlite://{}?mode=rwc\"\nmin_connections = 1\n",
        dir.path().join("timeout.db").display()
    ))
    .unwrap();
    let db = sluice_origin::db::connect(&config.database).await.unwrap();
    let state = AppState::new(&config, db).await.unwrap();
    let before = requests_counted("/v1/chat/completions", 504);
    let router = app(state.clone(), Duration::from_millis(200));
    let response = router
        .oneshot(signed("POST", "/v1/chat/completions", CHAT, unix_now()))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(requests_counted("/v1/chat/completions", 504), before + 1);
    let window = state.ops.window.summary(unix_now() + 1, 5);
    assert_eq!(window.requests, 1);
    assert_eq!(
        window.error_rate, 1.0,
        "the 504 is an error in the status window"
    );
}

#[expect(clippy::panic, reason = "the route exists to panic")]
async fn panicking() -> StatusCode {
    panic!("handler panicked")
}

#[tokio::test]
async fn a_handler_that_panics_is_counted_with_the_500_the_client_got() {
    sluice_telemetry::prometheus();
    let window = std::sync::Arc::new(sluice_origin::ops::window::RequestWindow::default());
    // The layers `app` puts around every public route, around a route that panics.
    let routes = axum::Router::new().route("/test/panics", axum::routing::get(panicking));
    let router = sluice_origin::app::counted(
        sluice_origin::app::guarded(routes, Duration::from_secs(5)),
        std::sync::Arc::clone(&window),
    );
    let before = requests_counted("/test/panics", 500);
    let response = router
        .oneshot(Request::get("/test/panics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(requests_counted("/test/panics", 500), before + 1);
    let summary = window.summary(unix_now() + 1, 5);
    assert_eq!((summary.requests, summary.error_rate), (1, 1.0));
}
