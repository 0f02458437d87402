//! The edge entry point: runs auth -> rate limit -> cache -> token limits, then
//! forwards misses to the origin with the principal signed (see
//! `sluice_core::edge_signature`). Origin responses the cache will not keep
//! (streams above all) are relayed chunk by chunk as they arrive; only
//! cacheable ones are read whole. Token limits come after the cache, so a hit
//! costs no tokens; a charged request is settled to the usage the answer
//! reports once it has ended (`sluice_core::usage_report`).
//!
//! Request bodies are read whole up to `max_request_body_bytes`. On the AI
//! routes a larger one (up to `max_ai_request_body_bytes`: a coding
//! assistant's session of screenshots) is streamed to the origin as it
//! arrives instead ([`forward_streaming`]): never cached, its tokens counted
//! as it passes and admitted before its last byte is sent; a refusal then
//! aborts the body, so the origin never acts on it.
//!
//! Variables: `origin_url` (scheme://host:port, no trailing slash) and
//! `edge_secret` (shared with the origin).

use futures::{SinkExt, StreamExt};
use sluice_core::cors::CorsSettings;
use sluice_core::settings::{ClientIpSettings, OriginSettings, RequestLimits, SettingsError};
use sluice_core::token_estimate::TokenScanner;
use sluice_core::{client_ip, edge_signature, usage_report};
use sluice_edge_shared::kept;
use spin_sdk::http::conversions::TryIntoOutgoingRequest;
use spin_sdk::http::{
    IncomingRequest, IncomingResponse, OutgoingBody, OutgoingResponse, Request, Response,
    ResponseOutparam,
};
use spin_sdk::http_component;
use spin_sdk::wit::wasi::config::store as config;
use std::pin::Pin;
use std::sync::OnceLock;

spin_sdk::wit_bindgen::generate!({
    world: "policies",
    path: "../../wit",
    runtime_path: "spin_sdk::wit_bindgen::rt",
    with: { "sluice:types/types@0.1.0": sluice_edge_shared::types },
    generate_all,
});

use sluice::auth::auth;
use sluice::cache::cache::{self, LookupResult};
use sluice::rate_limit::rate_limit::{self, TokenCharge, TokenRequest};
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
        /// The answer is an event stream ending with the usage comment the
        /// gateway asked for, which the client never sees.
        strip_usage: bool,
    },
}

/// A token charge to settle once a relayed answer has ended.
struct Settlement {
    charge: TokenCharge,
    /// What the response head said (a non-streamed answer's usage).
    used: Option<u64>,
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
    static CORS: OnceLock<Result<CorsSettings, SettingsError>> = OnceLock::new();
    // `entry` answers preflights with it, every answer gets its headers.
    let cors = kept(&CORS, || CorsSettings::load(variable));
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
            strip_usage,
        } => relay(head, origin, tokens, strip_usage, out).await,
    }
}

/// Reads the request within the configured bounds and answers a CORS
/// preflight; everything else goes through [`gateway`].
async fn entry(
    incoming: IncomingRequest,
    browser_origin: Option<&str>,
    cors: &Result<&CorsSettings, SettingsError>,
) -> Result<Reply, Denial> {
    let settings_error =
        |e: &sluice_core::settings::SettingsError| Denial::server_error(&e.to_string());
    static LIMITS: OnceLock<Result<RequestLimits, SettingsError>> = OnceLock::new();
    let limits = kept(&LIMITS, || RequestLimits::load(variable)).map_err(|e| settings_error(&e))?;
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
    let (req, rest) = read_request(incoming, limits).await?;
    Ok(gateway(req, rest).await)
}

/// The rest of a request body too large to hold, streamed to the origin.
struct BodyRest {
    chunks: Pin<Box<dyn futures::Stream<Item = Result<Vec<u8>, String>>>>,
    /// The route's body limit and the variable that sets it.
    limit: usize,
    limit_name: &'static str,
}

/// 413 in OpenAI's shape, naming the limit and how to raise it.
fn too_large(limit: usize, name: &str) -> Denial {
    Denial::openai(
        413,
        &format!(
            "Request body is over the limit of {limit} bytes for this route (the edge's \
             `{name}` variable; an operator can raise it)."
        ),
        "invalid_request_error",
        Some("request_too_large"),
        None,
    )
}

/// The request with its body, refused as soon as it is over a bound: too
/// many or too large headers (431), or a body over the route's limit (413),
/// declared by `Content-Length` or found while reading a streamed one, whose
/// rest is then never read. A body is read whole up to
/// `max_request_body_bytes`; past it, on the AI routes, the rest is left to
/// stream ([`BodyRest`]).
async fn read_request(
    incoming: IncomingRequest,
    limits: &RequestLimits,
) -> Result<(Request, Option<BodyRest>), Denial> {
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
    let method = incoming.method().to_string();
    let path = incoming.path_with_query().unwrap_or_default();
    let path = path.split('?').next().unwrap_or_default().to_string();
    let (limit, limit_name) = limits.body_limit(&method, &path);
    let declared = entries
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| std::str::from_utf8(v).ok()?.trim().parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(too_large(limit, limit_name));
    }
    let mut builder = Request::builder();
    builder
        .method(incoming.method())
        .uri(incoming.uri())
        .headers(incoming.headers());
    let held = limits.max_body_bytes.min(limit);
    let mut body = Vec::with_capacity(declared.unwrap_or(0).min(held));
    let mut chunks = incoming.into_body_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| unreadable(&e.to_debug_string()))?;
        if body.len() + chunk.len() > held {
            if held == limit {
                return Err(too_large(limit, limit_name));
            }
            // Too large to hold: what is read goes first, the rest streams.
            body.extend_from_slice(&chunk);
            let rest = BodyRest {
                chunks: Box::pin(chunks.map(|c| c.map_err(|e| e.to_debug_string()))),
                limit,
                limit_name,
            };
            return Ok((builder.body(body).build(), Some(rest)));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((builder.body(body).build(), None))
}

fn unreadable(why: &str) -> Denial {
    Denial::openai(
        400,
        &format!("Could not read the request: {why}"),
        "invalid_request_error",
        None,
        None,
    )
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
    strip_usage: bool,
    out: ResponseOutparam,
) {
    let Ok(head) = OutgoingResponse::try_from(head) else {
        return;
    };
    let mut sink = head.take_body();
    out.set(head);
    let mut chunks = origin.take_body_stream();
    let mut stripper = strip_usage.then(usage_report::Stripper::default);
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

async fn gateway(req: Request, rest: Option<BodyRest>) -> Reply {
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
    static CLIENT: OnceLock<Result<ClientIpSettings, SettingsError>> = OnceLock::new();
    let client = match kept(&CLIENT, || ClientIpSettings::load(variable)) {
        Ok(client) => client,
        Err(e) => return from_denial(Denial::server_error(&e.to_string()), Vec::new()).into(),
    };
    let head = request_head(&req, client);

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

    // A streamed body is never served from or stored in the cache (it is
    // looked up as `no-store`, which still lets a write invalidate).
    let lookup = match &rest {
        None => cache::find(&who, &head, req.body()),
        Some(_) => {
            let mut uncached = head.clone();
            uncached
                .headers
                .push(("cache-control".into(), "no-store".into()));
            cache::find(&who, &uncached, &[])
        }
    };
    let ticket = match lookup {
        LookupResult::Hit((cached, age)) => {
            let mut headers = cached.headers;
            headers.push(("x-cache".into(), "HIT".into()));
            headers.push(("age".into(), age.to_string()));
            return respond(cached.status, headers, limit_headers, cached.body).into();
        }
        LookupResult::Miss(ticket) => Some((ticket, "MISS")),
        LookupResult::Bypass(ticket) => ticket.map(|t| (t, "BYPASS")),
    };

    let forwarded_for = Forwarded {
        client_ip: head.client_ip.clone(),
        client_ip_header: client.header.name().to_string(),
        // A streamed body's charge is known only once it has been sent, so
        // the usage is always asked for then (and its comment always taken out).
        report_usage: true,
    };
    let sent = match rest {
        None => {
            let mut scanner = TokenScanner::default();
            scanner.feed(req.body());
            match admit(&who, &head, scanner) {
                Ok((charge, headers)) => {
                    limit_headers = joined(limit_headers, headers);
                    let asked = charge.is_some();
                    let forwarded_for = Forwarded {
                        report_usage: asked,
                        ..forwarded_for
                    };
                    match forward(req, head.headers.clone(), &who, forwarded_for).await {
                        Ok(response) => Ok((response, charge, asked)),
                        Err(message) => Err((message, charge)),
                    }
                }
                Err(mut denial) => {
                    denial.headers = joined(limit_headers, denial.headers);
                    return from_denial(denial, Vec::new()).into();
                }
            }
        }
        Some(rest) => match forward_streaming(req, rest, &head, &who, forwarded_for).await {
            Ok(Streamed::Answered {
                response,
                charge,
                headers,
            }) => {
                limit_headers = joined(limit_headers, headers);
                Ok((response, charge, true))
            }
            Ok(Streamed::Refused(mut denial)) => {
                denial.headers = joined(limit_headers, denial.headers);
                return from_denial(denial, Vec::new()).into();
            }
            Err(message) => Err((message, None)),
        },
    };
    let (upstream, charge, asked_usage) = match sent {
        Ok(sent) => sent,
        Err((message, charge)) => {
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
        let tokens = charge.map(|charge| Settlement { charge, used });
        let mut headers = headers;
        headers.push(("x-cache".into(), "BYPASS".into()));
        return Reply::Relay {
            head: respond(status, headers, limit_headers, Vec::new()),
            origin: upstream,
            tokens,
            strip_usage: asked_usage && stream,
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
    let (body, used) = match (asked_usage, stream) {
        (true, true) => {
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
    let outbound = to_origin(req, headers, who, forwarded)?;
    spin_sdk::http::send::<_, IncomingResponse>(outbound)
        .await
        .map_err(|e| format!("origin request failed: {e}"))
}

/// The request as the origin gets it: the origin's URL, the client's
/// headers but the stripped ones, one `X-Forwarded-For`, the signed identity.
fn to_origin(
    req: Request,
    headers: Headers,
    who: &Principal,
    forwarded: Forwarded,
) -> Result<Request, String> {
    static ORIGIN: OnceLock<Result<OriginSettings, SettingsError>> = OnceLock::new();
    let origin = kept(&ORIGIN, || OriginSettings::load(variable)).map_err(|e| e.to_string())?;
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
    Ok(builder.body(req.into_body()).build())
}

/// Charges what the scanned body says it may use to the caller's token
/// limits: the charge to settle (when a limit applies) and the headers to add.
fn admit(
    who: &Principal,
    head: &RequestHead,
    scanner: TokenScanner,
) -> Result<(Option<TokenCharge>, Headers), Denial> {
    let read = scanner.finish();
    let request = TokenRequest {
        text_bytes: read.text_bytes,
        files: read.files,
        output_tokens: read.output_tokens,
        choices: read.choices,
    };
    rate_limit::admit_tokens(who, head, request).map(|a| (a.charge, a.headers))
}

/// How a streamed body ended.
enum Streamed {
    /// All of it was admitted and sent; the origin's answer.
    Answered {
        response: IncomingResponse,
        charge: Option<TokenCharge>,
        headers: Headers,
    },
    /// Over its limit, or refused by a token limit: the body was aborted.
    Refused(Denial),
}

/// What one outbound write may hold (wasi:io's `blocking-write-and-flush`
/// takes at most 4096 bytes).
const WRITE_BYTES: usize = 4096;

/// Sends a body too large to hold: the part already read, then the rest as
/// it arrives, counted by a [`TokenScanner`]. Before the body is finished
/// its tokens are admitted; a refusal (or a body over its limit) drops the
/// outgoing body unfinished, which wasi:http turns into an aborted request,
/// so the origin never acts on a partial body.
async fn forward_streaming(
    req: Request,
    rest: BodyRest,
    head: &RequestHead,
    who: &Principal,
    forwarded: Forwarded,
) -> Result<Streamed, String> {
    let mut scanner = TokenScanner::default();
    scanner.feed(req.body());
    // The part already read comes back as the request's buffered body,
    // which `send` would write; it is written here, before the rest.
    let (outbound, first) = to_origin(req, head.headers.clone(), who, forwarded)?
        .try_into_outgoing_request()
        .map_err(|e| format!("origin request: {e}"))?;
    let first = first.unwrap_or_default();
    let body = outbound
        .body()
        .map_err(|()| "origin request: its body was taken".to_string())?;
    let response = std::pin::pin!(spin_sdk::http::send::<_, IncomingResponse>(outbound));
    let sent = std::pin::pin!(send_body(body, first, rest, scanner, who, head));
    match futures::future::select(response, sent).await {
        // The origin answered before the body ended (it refused it early):
        // the rest is not sent.
        futures::future::Either::Left((response, _)) => {
            let response = response.map_err(|e| format!("origin request failed: {e}"))?;
            Ok(Streamed::Answered {
                response,
                charge: None,
                headers: Vec::new(),
            })
        }
        futures::future::Either::Right((sent, response)) => match sent {
            Ok((charge, headers)) => {
                let response = response
                    .await
                    .map_err(|e| format!("origin request failed: {e}"))?;
                Ok(Streamed::Answered {
                    response,
                    charge,
                    headers,
                })
            }
            Err(Unsent::Refused(denial)) => Ok(Streamed::Refused(denial)),
            Err(Unsent::Failed(message)) => Err(message),
        },
    }
}

/// Why a streamed body was not finished.
enum Unsent {
    Refused(Denial),
    Failed(String),
}

/// Writes `first` and then `rest` to the origin, admits the scanned tokens
/// and finishes the body; on any refusal the body is dropped unfinished.
async fn send_body(
    body: OutgoingBody,
    first: Vec<u8>,
    mut rest: BodyRest,
    mut scanner: TokenScanner,
    who: &Principal,
    head: &RequestHead,
) -> Result<(Option<TokenCharge>, Headers), Unsent> {
    let stream = body
        .write()
        .map_err(|()| Unsent::Failed("origin request body: not writable".into()))?;
    let write = |bytes: &[u8]| -> Result<(), Unsent> {
        for piece in bytes.chunks(WRITE_BYTES) {
            stream
                .blocking_write_and_flush(piece)
                .map_err(|e| Unsent::Failed(format!("origin request body: {e:?}")))?;
        }
        Ok(())
    };
    let mut total = first.len();
    write(&first)?;
    while let Some(chunk) = rest.chunks.next().await {
        let chunk = chunk.map_err(|why| Unsent::Refused(unreadable(&why)))?;
        total += chunk.len();
        if total > rest.limit {
            return Err(Unsent::Refused(too_large(rest.limit, rest.limit_name)));
        }
        scanner.feed(&chunk);
        write(&chunk)?;
    }
    let admitted = admit(who, head, scanner).map_err(Unsent::Refused)?;
    drop(stream);
    OutgoingBody::finish(body, None)
        .map_err(|e| Unsent::Failed(format!("origin request body: {e:?}")))?;
    Ok(admitted)
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
