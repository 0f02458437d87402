//! The edge entry point: runs auth -> rate limit -> cache -> token limits, then
//! forwards misses to the origin with the principal signed (see
//! `sluice_core::edge_signature`). Origin responses the cache will not keep
//! (streams above all) are relayed chunk by chunk as they arrive; only
//! cacheable ones are read whole. Token limits come after the cache, so a hit
//! costs no tokens; a charged request is settled to the usage the answer
//! reports once it has ended (`sluice_core::usage_report`).
//!
//! Variables: `origin_url` (scheme://host:port, no trailing slash) and
//! `edge_secret` (shared with the origin).

use futures::{SinkExt, StreamExt};
use sluice_core::cors::CorsSettings;
use sluice_core::settings::{ClientIpSettings, OriginSettings, RequestLimits};
use sluice_core::{client_ip, edge_signature, usage_report};
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
use sluice::rate_limit::rate_limit::{self, TokenCharge};
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
    usage_report::REQUEST_HEADER,
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
        tokens: Option<Settlement>,
    },
}

/// A token charge to settle once a relayed answer has ended.
struct Settlement {
    charge: TokenCharge,
    /// What the response head said (a non-streamed answer's usage).
    used: Option<u64>,
    /// An event stream whose usage comes in its closing comment.
    stream: bool,
}

impl From<Response> for Reply {
    fn from(response: Response) -> Reply {
        Reply::Whole(response)
    }
}

#[http_component]
async fn handle(incoming: IncomingRequest, out: ResponseOutparam) {
    let path = incoming.path_with_query().unwrap_or_default();
    let path = path.split('?').next().unwrap_or_default().to_string();
    let browser_origin = incoming
        .headers()
        .get("origin")
        .into_iter()
        .next()
        .and_then(|v| String::from_utf8(v).ok());
    // Read once: `entry` answers preflights with it, every answer gets its headers.
    let cors = CorsSettings::load(variable);
    let reply = match entry(incoming, browser_origin.as_deref(), &cors).await {
        Ok(reply) => reply,
        Err(denial) => Reply::Whole(from_denial(denial, Vec::new())),
    };
    let mut reply = if is_anthropic_route(&path) {
        in_anthropic_shape(reply)
    } else {
        reply
    };
    if let Some(origin) = &browser_origin
        && let Ok(cors) = &cors
    {
        let head = match &mut reply {
            Reply::Whole(response) | Reply::Relay { head: response, .. } => response,
        };
        with_headers(head, cors.response_headers(origin));
    }
    match reply {
        Reply::Whole(mut response) => {
            let body = std::mem::take(response.body_mut());
            if let Ok(head) = OutgoingResponse::try_from(response) {
                // The client may be gone; nothing is left to tell it.
                let _ = out.set_with_body(head, body).await;
            }
        }
        Reply::Relay {
            head,
            origin,
            tokens,
        } => relay(head, origin, tokens, out).await,
    }
}

/// Reads the request within the configured bounds and answers a CORS
/// preflight; everything else goes through [`gateway`].
async fn entry(
    incoming: IncomingRequest,
    browser_origin: Option<&str>,
    cors: &Result<CorsSettings, sluice_core::settings::SettingsError>,
) -> Result<Reply, Denial> {
    let settings_error =
        |e: &sluice_core::settings::SettingsError| Denial::server_error(&e.to_string());
    let limits = RequestLimits::load(variable).map_err(|e| settings_error(&e))?;
    let cors = cors.as_ref().map_err(settings_error)?;
    let preflight = incoming.method() == spin_sdk::http::Method::Options
        && !incoming
            .headers()
            .get("access-control-request-method")
            .is_empty();
    if let (true, true, Some(origin)) = (preflight, cors.enabled(), browser_origin) {
        let asked = incoming
            .headers()
            .get("access-control-request-headers")
            .into_iter()
            .filter_map(|v| String::from_utf8(v).ok())
            .collect::<Vec<_>>()
            .join(", ");
        // Browsers send no credentials on a preflight, so it is answered
        // before auth; the request it clears is checked as usual.
        return match cors.preflight(origin, Some(&asked)) {
            Some(headers) => Ok(respond(204, headers, Vec::new(), Vec::new()).into()),
            None => Err(Denial::openai(
                403,
                &format!("Origin {origin} is not allowed to call this API."),
                "invalid_request_error",
                Some("origin_not_allowed"),
                None,
            )),
        };
    }
    let req = read_request(incoming, &limits).await?;
    Ok(gateway(req).await)
}

/// The request with its body, refused as soon as it is over a bound: too
/// many or too large headers (431), or a body over `max_request_body_bytes`
/// (413), declared by `Content-Length` or found while reading a streamed one,
/// whose rest is then never read.
async fn read_request(
    incoming: IncomingRequest,
    limits: &RequestLimits,
) -> Result<Request, Denial> {
    let entries = incoming.headers().entries();
    let header_bytes: usize = entries.iter().map(|(n, v)| n.len() + v.len()).sum();
    if entries.len() > limits.max_headers || header_bytes > limits.max_header_bytes {
        return Err(Denial::openai(
            431,
            &format!(
                "Request headers are over the limit ({} headers, {} bytes; at most {} and {}).",
                entries.len(),
                header_bytes,
                limits.max_headers,
                limits.max_header_bytes
            ),
            "invalid_request_error",
            Some("request_header_fields_too_large"),
            None,
        ));
    }
    let too_large = || {
        Denial::openai(
            413,
            &format!(
                "Request body is over the limit of {} bytes.",
                limits.max_body_bytes
            ),
            "invalid_request_error",
            Some("request_too_large"),
            None,
        )
    };
    let declared = entries
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| std::str::from_utf8(v).ok()?.trim().parse::<usize>().ok());
    if declared.is_some_and(|length| length > limits.max_body_bytes) {
        return Err(too_large());
    }
    let mut builder = Request::builder();
    builder
        .method(incoming.method())
        .uri(incoming.uri())
        .headers(incoming.headers());
    let mut body = Vec::with_capacity(declared.unwrap_or(0));
    let mut chunks = incoming.into_body_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| {
            Denial::openai(
                400,
                &format!("Could not read the request: {}", e.to_debug_string()),
                "invalid_request_error",
                None,
                None,
            )
        })?;
        if body.len() + chunk.len() > limits.max_body_bytes {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(builder.body(body).build())
}

fn variable(name: &str) -> Option<String> {
    config::get(name).ok().flatten()
}

/// Adds `extra` to a response's headers; `Vary` joins the one already there.
fn with_headers(response: &mut Response, extra: Headers) {
    for (name, value) in extra {
        let value = match (
            name.as_str(),
            response.header(&name).and_then(|v| v.as_str()),
        ) {
            ("vary", Some(existing)) => format!("{existing}, {value}"),
            _ => value,
        };
        response.set_header(name, value);
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
/// cancels the upstream call behind it (and a token charge keeps its
/// estimate: what the call used is not known).
async fn relay(
    head: Response,
    origin: IncomingResponse,
    tokens: Option<Settlement>,
    out: ResponseOutparam,
) {
    let Ok(head) = OutgoingResponse::try_from(head) else {
        return;
    };
    let mut sink = head.take_body();
    out.set(head);
    let mut chunks = origin.take_body_stream();
    let mut stripper = tokens
        .as_ref()
        .filter(|t| t.stream)
        .map(|_| usage_report::Stripper::default());
    let mut complete = true;
    while let Some(chunk) = chunks.next().await {
        let Ok(chunk) = chunk else {
            complete = false;
            break;
        };
        let chunk = match &mut stripper {
            Some(stripper) => stripper.feed(&chunk),
            None => chunk,
        };
        if !chunk.is_empty() && sink.send(chunk).await.is_err() {
            complete = false;
            break;
        }
    }
    let mut reported = None;
    if let (Some(stripper), true) = (stripper, complete) {
        let (rest, tokens) = stripper.finish();
        reported = tokens;
        if !rest.is_empty() {
            let _ = sink.send(rest).await;
        }
    }
    if let Some(tokens) = tokens
        && complete
        && let Some(used) = reported.or(tokens.used)
    {
        rate_limit::settle_tokens(&tokens.charge, used);
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
    let client = match ClientIpSettings::load(|name| config::get(name).ok().flatten()) {
        Ok(client) => client,
        Err(e) => return from_denial(Denial::server_error(&e.to_string()), Vec::new()).into(),
    };
    let head = request_head(&req, &client);

    let who = match auth::authenticate(&head) {
        Ok(who) => who,
        Err(denial) => return from_denial(denial, Vec::new()).into(),
    };
    let mut limit_headers = match rate_limit::check(&who, &head) {
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

    let charge = match rate_limit::admit_tokens(&who, &head, req.body()) {
        Ok(admission) => {
            limit_headers = joined(limit_headers, admission.headers);
            admission.charge
        }
        Err(mut denial) => {
            denial.headers = joined(limit_headers, denial.headers);
            return from_denial(denial, Vec::new()).into();
        }
    };

    let forwarded_for = Forwarded {
        client_ip: head.client_ip.clone(),
        client_ip_header: client.header.name().to_string(),
        report_usage: charge.is_some(),
    };
    let upstream = match forward(req, head.headers, &who, forwarded_for).await {
        Ok(response) => response,
        Err(message) => {
            if let Some(charge) = &charge {
                rate_limit::settle_tokens(charge, 0);
            }
            return origin_failed(&message, limit_headers).into();
        }
    };
    let status = upstream.status();
    let headers: Headers = upstream
        .headers()
        .entries()
        .into_iter()
        .filter(|(name, _)| !STRIPPED_RESPONSE_HEADERS.contains(&name.as_str()))
        .filter_map(|(name, value)| Some((name, String::from_utf8(value).ok()?)))
        .collect();

    let used = reported_tokens(status, &headers);
    let stream = headers
        .iter()
        .any(|(n, v)| n == "content-type" && v.starts_with("text/event-stream"));
    let Some((ticket, label)) = ticket else {
        let tokens = charge.map(|charge| Settlement {
            charge,
            used,
            stream,
        });
        let mut headers = headers;
        headers.push(("x-cache".into(), "BYPASS".into()));
        return Reply::Relay {
            head: respond(status, headers, limit_headers, Vec::new()),
            origin: upstream,
            tokens,
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
    // A stream read whole (a conversation turn, whose write must be seen
    // before the cache is invalidated) has its usage comment taken out here.
    let (body, used) = match (&charge, stream) {
        (Some(_), true) => {
            let mut stripper = usage_report::Stripper::default();
            let mut kept = stripper.feed(&body);
            let (rest, reported) = stripper.finish();
            kept.extend(rest);
            (kept, reported.or(used))
        }
        _ => (body, used),
    };
    if let (Some(charge), Some(used)) = (&charge, used) {
        rate_limit::settle_tokens(charge, used);
    }
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

/// The tokens an answer's head says it used: its `x-sluice-total-tokens`;
/// none for an origin semantic-cache hit or a refusal (no model call); `None`
/// when it does not say (a stream says at its end; a queued job never does).
fn reported_tokens(status: u16, headers: &Headers) -> Option<u64> {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    if let Some(total) = header("x-sluice-total-tokens").and_then(|v| v.parse().ok()) {
        return Some(total);
    }
    let semantic_hit = header("x-sluice-semantic-cache").is_some_and(|v| v == "hit");
    (semantic_hit || status >= 400).then_some(0)
}

/// Rate-limit headers of request and token policies together: the IETF
/// fields are lists, so two policies' items join in one field.
fn joined(mut headers: Headers, more: Headers) -> Headers {
    for (name, value) in more {
        let list = matches!(name.as_str(), "ratelimit-policy" | "ratelimit");
        match headers.iter_mut().find(|(n, _)| list && *n == name) {
            Some((_, existing)) => {
                existing.push_str(", ");
                existing.push_str(&value);
            }
            None => headers.push((name, value)),
        }
    }
    headers
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

/// The request as the policies see it; its client address is the peer's, or
/// what a trusted proxy in front says (`sluice_core::client_ip`).
fn request_head(req: &Request, client: &ClientIpSettings) -> RequestHead {
    let headers: Headers = req
        .headers()
        .filter_map(|(name, value)| Some((name.to_ascii_lowercase(), value.as_str()?.to_string())))
        .collect();
    let client_ip = headers
        .iter()
        .find(|(n, _)| n == "spin-client-addr")
        .and_then(|(_, v)| client_ip::parse_address(v))
        .map(|peer| {
            client_ip::resolve(peer, &headers, &client.trusted_proxies, &client.header).to_string()
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
/// What the edge tells the origin beside the client's own headers.
struct Forwarded {
    /// The client as resolved here: the origin's one `X-Forwarded-For`.
    client_ip: Option<String>,
    /// Where a trusted proxy named the client (not forwarded: resolved here).
    client_ip_header: String,
    report_usage: bool,
}

async fn forward(
    req: Request,
    headers: Headers,
    who: &Principal,
    forwarded: Forwarded,
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
    let mut builder = Request::builder();
    builder
        .method(req.method().clone())
        .uri(format!("{}{path_and_query}", origin.origin_url));
    for (name, value) in headers {
        let proxy_header = matches!(name.as_str(), "x-forwarded-for" | "forwarded")
            || name == forwarded.client_ip_header;
        if !proxy_header && !STRIPPED_REQUEST_HEADERS.contains(&name.as_str()) {
            builder.header(name, value);
        }
    }
    if let Some(ip) = forwarded.client_ip {
        builder.header("x-forwarded-for", ip);
    }
    if forwarded.report_usage {
        builder.header(usage_report::REQUEST_HEADER, "1");
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
