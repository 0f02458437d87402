//! The edge entry point: runs auth -> rate limit -> cache, then forwards misses
//! to the origin with the principal signed (see `sluice_core::edge_signature`).
//!
//! Variables: `origin_url` (scheme://host:port, no trailing slash) and
//! `edge_secret` (shared with the origin).

use sluice_core::{edge_signature, errors, identity};
use spin_sdk::http::{Request, Response};
use spin_sdk::http_component;
use spin_sdk::wit::wasi::config::store as config;

spin_sdk::wit_bindgen::generate!({
    world: "policies",
    path: "../../wit",
    runtime_path: "spin_sdk::wit_bindgen::rt",
    generate_all,
});

use sluice::edge::cache::{self, LookupResult};
use sluice::edge::types::{Denial, Principal, RequestHead, Tier};
use sluice::edge::{auth, rate_limit};

type Headers = Vec<(String, String)>;

/// Request headers the origin must not see from the client: credentials, our own
/// signed identity (which only the gateway may set), and hop-by-hop headers.
const STRIPPED_REQUEST_HEADERS: &[&str] = &[
    "authorization",
    "host",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "te",
    "upgrade",
    "proxy-authorization",
    "spin-client-addr",
    edge_signature::IDENTITY_HEADER,
    edge_signature::TIMESTAMP_HEADER,
    edge_signature::SIGNATURE_HEADER,
];

/// Response headers not relayed from the origin (the host frames the body itself).
const STRIPPED_RESPONSE_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
];

#[http_component]
async fn handle(req: Request) -> Response {
    if req.path() == "/health" {
        return json(
            200,
            Vec::new(),
            serde_json::json!({ "status": "ok", "tier": "edge" })
                .to_string()
                .into_bytes(),
        );
    }
    // The origin's internal routes answer only the edge's own signed calls;
    // clients never reach them through the gateway.
    if req.path().starts_with("/internal/") {
        return json(
            404,
            Vec::new(),
            errors::openai_error(
                "Not found.",
                "invalid_request_error",
                Some("not_found"),
                None,
            )
            .to_string()
            .into_bytes(),
        );
    }
    let head = request_head(&req);

    let who = match auth::authenticate(&head) {
        Ok(who) => who,
        Err(denial) => return from_denial(denial, Vec::new()),
    };
    let limit_headers = match rate_limit::check(&who, &head) {
        Ok(headers) => headers,
        Err(denial) => return from_denial(denial, Vec::new()),
    };

    if head.path == PURGE_PATH {
        return purge(&req, limit_headers);
    }

    let ticket = match cache::find(&who, &head, req.body()) {
        LookupResult::Hit((cached, age)) => {
            let mut headers = cached.headers;
            headers.push(("x-cache".into(), "HIT".into()));
            headers.push(("age".into(), age.to_string()));
            return respond(cached.status, headers, limit_headers, cached.body);
        }
        LookupResult::Miss(ticket) => Some((ticket, "MISS")),
        LookupResult::Bypass(ticket) => ticket.map(|t| (t, "BYPASS")),
    };

    let upstream = match forward(req, head.headers, &who).await {
        Ok(response) => response,
        Err(message) => {
            let body =
                errors::openai_error(&message, "server_error", Some("origin_unreachable"), None);
            return from_denial(
                Denial {
                    status: 502,
                    headers: vec![("content-type".into(), "application/json".into())],
                    body: body.to_string().into_bytes(),
                },
                limit_headers,
            );
        }
    };
    let status = *upstream.status();
    let headers: Headers = upstream
        .headers()
        .filter(|(name, _)| !STRIPPED_RESPONSE_HEADERS.contains(name))
        .filter_map(|(name, value)| Some((name.to_string(), value.as_str()?.to_string())))
        .collect();
    let body = upstream.into_body();

    // The cache borrows the response, so it is offered without a copy and taken back.
    let (mut headers, body, cache_status) = match ticket {
        Some((ticket, label)) => {
            let offered = cache::Response {
                status,
                headers,
                body,
            };
            let stored = cache::offer(&ticket, &offered);
            let label = if label == "MISS" || stored {
                label
            } else {
                "BYPASS"
            };
            (offered.headers, offered.body, label)
        }
        None => (headers, body, "BYPASS"),
    };
    headers.push(("x-cache".into(), cache_status.into()));
    respond(status, headers, limit_headers, body)
}

/// Admin purge of edge cache entries; the cache lives here, so the edge answers
/// it (auth has already refused callers below the admin tier on `/v1/admin/**`).
const PURGE_PATH: &str = "/v1/admin/cache/purge";

/// `POST {"subject": "..."}` purges one subject's entries, `{"all": true}` every entry.
fn purge(req: &Request, limit_headers: Headers) -> Response {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Purge {
        subject: Option<String>,
        #[serde(default)]
        all: bool,
    }
    let refuse = |status: u16, message: &str, param: Option<&str>| {
        let body = errors::openai_error(message, "invalid_request_error", None, param);
        from_denial(
            Denial {
                status,
                headers: vec![("content-type".into(), "application/json".into())],
                body: body.to_string().into_bytes(),
            },
            limit_headers.clone(),
        )
    };
    if req.method().to_string() != "POST" {
        return refuse(405, "Use POST.", None);
    }
    let target = match serde_json::from_slice::<Purge>(req.body()) {
        Ok(Purge {
            subject: Some(subject),
            all: false,
        }) if !subject.is_empty() => Some(subject),
        Ok(Purge {
            subject: None,
            all: true,
        }) => None,
        _ => {
            return refuse(
                400,
                "Send {\"subject\": \"...\"} or {\"all\": true}.",
                Some("subject"),
            );
        }
    };
    let purged = match &target {
        Some(subject) => serde_json::json!({ "subject": subject }),
        None => serde_json::json!("all"),
    };
    match cache::purge(target.as_deref()) {
        Ok(()) => respond(
            200,
            vec![("content-type".into(), "application/json".into())],
            limit_headers,
            serde_json::json!({ "purged": purged })
                .to_string()
                .into_bytes(),
        ),
        Err(message) => from_denial(
            Denial {
                status: 503,
                headers: vec![("content-type".into(), "application/json".into())],
                body: errors::openai_error(&message, "server_error", None, None)
                    .to_string()
                    .into_bytes(),
            },
            limit_headers,
        ),
    }
}

fn request_head(req: &Request) -> RequestHead {
    let headers: Headers = req
        .headers()
        .filter_map(|(name, value)| Some((name.to_ascii_lowercase(), value.as_str()?.to_string())))
        .collect();
    let client_ip = headers
        .iter()
        .find(|(n, _)| n == "spin-client-addr")
        .map(|(_, v)| {
            // `ip:port` or `[v6]:port`.
            v.rsplit_once(':')
                .map(|(ip, _)| ip.trim_matches(['[', ']']))
                .unwrap_or(v)
                .to_string()
        });
    let query = Some(req.query())
        .filter(|q| !q.is_empty())
        .map(str::to_string);
    RequestHead {
        method: req.method().to_string(),
        path: req.path().to_string(),
        query,
        headers,
        client_ip,
    }
}

/// Sends the request to the origin with the principal signed. `headers` are the
/// request's, already lower-cased by `request_head`.
async fn forward(req: Request, headers: Headers, who: &Principal) -> Result<Response, String> {
    let origin = setting("origin_url")?;
    let secret = setting("edge_secret")?;
    let path_and_query = req.path_and_query().unwrap_or("/").to_string();
    let identity = identity::Identity {
        sub: who.subject.clone(),
        tier: match who.tier {
            Tier::Free => identity::Tier::Free,
            Tier::Premium => identity::Tier::Premium,
            Tier::Admin => identity::Tier::Admin,
        },
        kid: who.key_id.clone(),
        scopes: who.scopes.clone(),
    }
    .encode();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let method = req.method().to_string();
    let signature =
        edge_signature::sign(secret.as_bytes(), &method, &path_and_query, now, &identity);
    let client_addr = headers
        .iter()
        .find(|(name, _)| name == "spin-client-addr")
        .map(|(_, value)| value.clone());

    let mut builder = Request::builder();
    builder
        .method(req.method().clone())
        .uri(format!("{}{path_and_query}", origin.trim_end_matches('/')));
    for (name, value) in headers {
        if !STRIPPED_REQUEST_HEADERS.contains(&name.as_str()) {
            builder.header(name, value);
        }
    }
    if let Some(addr) = client_addr {
        builder.header("x-forwarded-for", addr);
    }
    builder
        .header(edge_signature::IDENTITY_HEADER, identity)
        .header(edge_signature::TIMESTAMP_HEADER, now.to_string())
        .header(edge_signature::SIGNATURE_HEADER, signature);
    let outbound = builder.body(req.into_body()).build();
    spin_sdk::http::send::<_, Response>(outbound)
        .await
        .map_err(|e| format!("origin request failed: {e}"))
}

fn setting(name: &str) -> Result<String, String> {
    match config::get(name) {
        Ok(Some(value)) if !value.is_empty() => Ok(value),
        _ => Err(format!("edge variable `{name}` is not set")),
    }
}

fn from_denial(denial: Denial, extra: Headers) -> Response {
    respond(denial.status, denial.headers, extra, denial.body)
}

fn json(status: u16, headers: Headers, body: Vec<u8>) -> Response {
    let mut headers = headers;
    headers.push(("content-type".into(), "application/json".into()));
    respond(status, headers, Vec::new(), body)
}

fn respond(status: u16, headers: Headers, extra: Headers, body: Vec<u8>) -> Response {
    let mut builder = Response::builder();
    builder.status(status);
    for (name, value) in headers.into_iter().chain(extra) {
        builder.header(name, value);
    }
    builder.body(body).build()
}
