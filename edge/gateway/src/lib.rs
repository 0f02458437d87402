//! The edge entry point: runs auth -> rate limit -> cache, then forwards misses
//! to the origin with the principal signed (see `sluice_core::edge_signature`).
//! Origin responses the cache will not keep (streams above all) are relayed
//! chunk by chunk as they arrive; only cacheable ones are read whole.
//!
//! Variables: `origin_url` (scheme://host:port, no trailing slash) and
//! `edge_secret` (shared with the origin).

use futures::{SinkExt, StreamExt};
use sluice_core::edge_signature;
use sluice_core::settings::OriginSettings;
use spin_sdk::http::conversions::TryFromIncomingRequest;
use spin_sdk::http::{
    IncomingRequest, IncomingResponse, OutgoingResponse, Request, Response, ResponseOutparam,
};
use spin_sdk::http_component;
use spin_sdk::wit::wasi::config::store as config;

spin_sdk::wit_bindgen::generate!({
    world: "policies",
    path: "../../wit",
    runtime_path: "spin_sdk::wit_bindgen::rt",
    with: { "sluice:types/types@0.1.0": sluice_edge_shared::types },
    generate_all,
});

use sluice::auth::auth;
use sluice::cache::cache::{self, LookupResult};
use sluice::rate_limit::rate_limit;
use sluice_edge_shared::types::{Denial, Principal, RequestHead};

type Headers = Vec<(String, String)>;

/// Request headers the origin must not see from the client: credentials, our own
/// signed identity (which only the gateway may set), and hop-by-hop headers.
const STRIPPED_REQUEST_HEADERS: &[&str] = &[
    "authorization",
    "x-api-key",
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

/// What the gateway answers: a finished response, or the origin's status and
/// headers with its body still arriving.
enum Reply {
    Whole(Response),
    Relay {
        head: Response,
        origin: IncomingResponse,
    },
}

impl From<Response> for Reply {
    fn from(response: Response) -> Reply {
        Reply::Whole(response)
    }
}

#[http_component]
async fn handle(incoming: IncomingRequest, out: ResponseOutparam) {
    let reply = match Request::try_from_incoming_request(incoming).await {
        Ok(req) if is_anthropic_route(req.path()) => in_anthropic_shape(gateway(req).await),
        Ok(req) => gateway(req).await,
        Err(e) => Reply::Whole(from_denial(
            Denial::openai(
                400,
                &format!("Could not read the request: {e}"),
                "invalid_request_error",
                None,
                None,
            ),
            Vec::new(),
        )),
    };
    match reply {
        Reply::Whole(mut response) => {
            let body = std::mem::take(response.body_mut());
            if let Ok(head) = OutgoingResponse::try_from(response) {
                // The client may be gone; nothing is left to tell it.
                let _ = out.set_with_body(head, body).await;
            }
        }
        Reply::Relay { head, origin } => relay(head, origin, out).await,
    }
}

/// Routes of Anthropic's API, whose clients expect its error shape.
fn is_anthropic_route(path: &str) -> bool {
    path == "/v1/messages" || path.starts_with("/v1/messages/")
}

/// The edge's own refusals (auth, rate limits, ...) are written in OpenAI's
/// shape; on Anthropic's routes they go out in Anthropic's. The origin's
/// errors there are Anthropic's already and pass unchanged.
fn in_anthropic_shape(reply: Reply) -> Reply {
    match reply {
        Reply::Whole(mut response) if *response.status() >= 400 => {
            let status = *response.status();
            if let Some(body) = sluice_core::errors::openai_to_anthropic(status, response.body()) {
                *response.body_mut() = body;
            }
            Reply::Whole(response)
        }
        other => other,
    }
}

/// Sends the origin's body on as each chunk arrives. If the client leaves, the
/// origin response is dropped, which closes the origin connection and so
/// cancels the upstream call behind it.
async fn relay(head: Response, origin: IncomingResponse, out: ResponseOutparam) {
    let Ok(head) = OutgoingResponse::try_from(head) else {
        return;
    };
    let mut sink = head.take_body();
    out.set(head);
    let mut chunks = origin.take_body_stream();
    while let Some(Ok(chunk)) = chunks.next().await {
        if sink.send(chunk).await.is_err() {
            break;
        }
    }
}

async fn gateway(req: Request) -> Reply {
    if req.path() == "/health" {
        return Reply::Whole(json(
            200,
            Vec::new(),
            serde_json::json!({ "status": "ok", "tier": "edge" })
                .to_string()
                .into_bytes(),
        ));
    }
    // The origin's internal routes answer only the edge's own signed calls;
    // clients never reach them through the gateway.
    if req.path().starts_with("/internal/") {
        return Reply::Whole(from_denial(
            Denial::openai(
                404,
                "Not found.",
                "invalid_request_error",
                Some("not_found"),
                None,
            ),
            Vec::new(),
        ));
    }
    let head = request_head(&req);

    let who = match auth::authenticate(&head) {
        Ok(who) => who,
        Err(denial) => return from_denial(denial, Vec::new()).into(),
    };
    let limit_headers = match rate_limit::check(&who, &head) {
        Ok(headers) => headers,
        Err(denial) => return from_denial(denial, Vec::new()).into(),
    };

    if head.path == PURGE_PATH {
        return purge(&req, limit_headers).into();
    }

    let ticket = match cache::find(&who, &head, req.body()) {
        LookupResult::Hit((cached, age)) => {
            let mut headers = cached.headers;
            headers.push(("x-cache".into(), "HIT".into()));
            headers.push(("age".into(), age.to_string()));
            return respond(cached.status, headers, limit_headers, cached.body).into();
        }
        LookupResult::Miss(ticket) => Some((ticket, "MISS")),
        LookupResult::Bypass(ticket) => ticket.map(|t| (t, "BYPASS")),
    };

    let upstream = match forward(req, head.headers, &who).await {
        Ok(response) => response,
        Err(message) => return origin_failed(&message, limit_headers).into(),
    };
    let status = upstream.status();
    let headers: Headers = upstream
        .headers()
        .entries()
        .into_iter()
        .filter(|(name, _)| !STRIPPED_RESPONSE_HEADERS.contains(&name.as_str()))
        .filter_map(|(name, value)| Some((name, String::from_utf8(value).ok()?)))
        .collect();

    let Some((ticket, label)) = ticket else {
        let mut headers = headers;
        headers.push(("x-cache".into(), "BYPASS".into()));
        return Reply::Relay {
            head: respond(status, headers, limit_headers, Vec::new()),
            origin: upstream,
        };
    };
    // Cacheable: read it whole, offer it to the cache (which borrows it), take it back.
    let body = match upstream.into_body().await {
        Ok(body) => body,
        Err(e) => {
            let message = format!("origin response failed: {}", e.to_debug_string());
            return origin_failed(&message, limit_headers).into();
        }
    };
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
    let mut headers = offered.headers;
    headers.push(("x-cache".into(), label.into()));
    respond(status, headers, limit_headers, offered.body).into()
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
        from_denial(
            Denial::openai(status, message, "invalid_request_error", None, param),
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
            Denial::openai(503, &message, "server_error", None, None),
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
async fn forward(
    req: Request,
    headers: Headers,
    who: &Principal,
) -> Result<IncomingResponse, String> {
    let origin =
        OriginSettings::load(|name| config::get(name).ok().flatten()).map_err(|e| e.to_string())?;
    let path_and_query = req.path_and_query().unwrap_or("/").to_string();
    let method = req.method().to_string();
    let signed = edge_signature::signed_headers(
        origin.edge_secret.as_bytes(),
        &method,
        &path_and_query,
        sluice_edge_shared::unix_now(),
        &who.identity().encode(),
    );
    let client_addr = headers
        .iter()
        .find(|(name, _)| name == "spin-client-addr")
        .map(|(_, value)| value.clone());

    let mut builder = Request::builder();
    builder
        .method(req.method().clone())
        .uri(format!("{}{path_and_query}", origin.origin_url));
    for (name, value) in headers {
        if !STRIPPED_REQUEST_HEADERS.contains(&name.as_str()) {
            builder.header(name, value);
        }
    }
    if let Some(addr) = client_addr {
        builder.header("x-forwarded-for", addr);
    }
    for (name, value) in signed {
        builder.header(name, value);
    }
    let outbound = builder.body(req.into_body()).build();
    spin_sdk::http::send::<_, IncomingResponse>(outbound)
        .await
        .map_err(|e| format!("origin request failed: {e}"))
}

/// 502 in OpenAI's shape: the origin could not be reached or broke off.
fn origin_failed(message: &str, limit_headers: Headers) -> Response {
    from_denial(
        Denial::openai(
            502,
            message,
            "server_error",
            Some("origin_unreachable"),
            None,
        ),
        limit_headers,
    )
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
