//! A blocking GET over `wasi:http/outgoing-handler`, for the JWKS and key
//! lookups at the origin. Policies are
//! synchronous WIT functions, so this waits on the pollables itself; the host
//! applies `allowed_outbound_hosts` and the request deadline.

use crate::wasi::http::outgoing_handler;
use crate::wasi::http::types::{Fields, Method, OutgoingRequest, RequestOptions, Scheme};

/// The most a key set may weigh; anything larger is refused.
const MAX_BODY_BYTES: u64 = 256 * 1024;
const TIMEOUT_NS: u64 = 3_000_000_000;

/// What came back: the status and, for a 200, the body.
pub struct Fetched {
    pub status: u16,
    pub body: Vec<u8>,
}

/// A GET that must answer 200.
pub fn get(url: &str) -> Result<Vec<u8>, String> {
    let fetched = get_with(url, &[])?;
    if fetched.status != 200 {
        return Err(format!("status {}", fetched.status));
    }
    Ok(fetched.body)
}

pub fn get_with(url: &str, extra_headers: &[(&str, String)]) -> Result<Fetched, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("not an absolute URL: {url}"))?;
    let scheme = match scheme {
        "https" => Scheme::Https,
        "http" => Scheme::Http,
        other => return Err(format!("unsupported scheme {other}")),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut fields = vec![("accept".to_string(), b"application/json".to_vec())];
    for (name, value) in extra_headers {
        fields.push((name.to_string(), value.as_bytes().to_vec()));
    }
    let headers = Fields::from_list(&fields).map_err(|e| format!("{e:?}"))?;
    let request = OutgoingRequest::new(headers);
    let set = |ok: Result<(), ()>| ok.map_err(|()| "invalid request part".to_string());
    set(request.set_method(&Method::Get))?;
    set(request.set_scheme(Some(&scheme)))?;
    set(request.set_authority(Some(authority)))?;
    set(request.set_path_with_query(Some(path)))?;
    let options = RequestOptions::new();
    set(options.set_connect_timeout(Some(TIMEOUT_NS)))?;
    set(options.set_first_byte_timeout(Some(TIMEOUT_NS)))?;
    set(options.set_between_bytes_timeout(Some(TIMEOUT_NS)))?;

    let pending = outgoing_handler::handle(request, Some(options)).map_err(|e| format!("{e:?}"))?;
    pending.subscribe().block();
    let response = pending
        .get()
        .ok_or("no response")?
        .map_err(|()| "response taken twice")?
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status();
    if status != 200 {
        return Ok(Fetched {
            status,
            body: Vec::new(),
        });
    }
    let body = response.consume().map_err(|()| "body taken twice")?;
    let stream = body.stream().map_err(|()| "body stream taken twice")?;
    let mut out = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => {
                out.extend_from_slice(&chunk);
                if out.len() as u64 > MAX_BODY_BYTES {
                    return Err("key set too large".into());
                }
            }
            Err(crate::wasi::io::streams::StreamError::Closed) => break,
            Err(e) => return Err(format!("{e:?}")),
        }
    }
    Ok(Fetched { status, body: out })
}
