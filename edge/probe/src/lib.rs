//! Imports only `wasi:http`, so `wasmtime serve` runs the very same `.wasm`
//! as the runtime-host in the baseline benchmark. Its routes make a host
//! misbehave on demand (trap, run away, grow, hold resources, stream slowly),
//! and `/count` says how many requests this instance has served, which is
//! how the host tests see an instance reused or not.

use futures::SinkExt;
use spin_sdk::http::{
    Fields, IncomingRequest, OutgoingResponse, Request, Response, ResponseOutparam,
};
use spin_sdk::http_component;
use std::sync::atomic::{AtomicU32, Ordering};

/// Requests this instance has served: kept in its memory, so a reused
/// instance counts on and a new one starts at 1.
static SERVED: AtomicU32 = AtomicU32::new(0);

#[http_component]
async fn handle(incoming: IncomingRequest, out: ResponseOutparam) {
    let served = SERVED.fetch_add(1, Ordering::Relaxed) + 1;
    let path = incoming.path_with_query().unwrap_or_default();
    let (path, query) = path.split_once('?').unwrap_or((&path, ""));
    let response = match path {
        "/trap" => trap(),
        "/loop" => spin_forever(),
        "/count" => Response::new(200, format!("served {served}")),
        "/stream" => return stream_slowly(out).await,
        "/alloc" => {
            // Grow linear memory past any sane per-instance limit.
            let mut chunks: Vec<Vec<u8>> = Vec::new();
            for _ in 0..1024 {
                chunks.push(vec![1u8; 1 << 20]);
            }
            Response::new(200, format!("allocated {} MiB", chunks.len()))
        }
        "/try-alloc" => {
            // The same, asking nicely: a refused grow is an answer, not a trap.
            let mut chunk: Vec<u8> = Vec::new();
            match chunk.try_reserve(1 << 30) {
                Ok(()) => Response::new(200, "reserved 1 GiB"),
                Err(_) => Response::new(200, "refused"),
            }
        }
        "/resources" => {
            // Hold ever more host resources, past the host's per-request cap.
            let held: Vec<Fields> = (0..20_000).map(|_| Fields::new()).collect();
            Response::new(200, format!("held {} resources", held.len()))
        }
        "/fetch" => {
            let url = query.strip_prefix("url=").unwrap_or_default().to_string();
            match spin_sdk::http::send::<_, Response>(Request::get(url)).await {
                Ok(upstream) => {
                    Response::new(200, format!("upstream answered {}", upstream.status()))
                }
                Err(e) => Response::new(502, format!("outbound refused: {e}")),
            }
        }
        _ => Response::new(200, "ok"),
    };
    let body = response.body().to_vec();
    let head = OutgoingResponse::new(Fields::new());
    let _ = head.set_status_code(*response.status());
    let mut sink = head.take_body();
    out.set(head);
    let _ = sink.send(body).await;
}

/// 200 chunks 20 ms apart: a stream a client can leave in the middle of.
async fn stream_slowly(out: ResponseOutparam) {
    let head = OutgoingResponse::new(Fields::new());
    let mut sink = head.take_body();
    out.set(head);
    for i in 0..200 {
        if sink
            .send(format!("chunk {i}\n").into_bytes())
            .await
            .is_err()
        {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[expect(clippy::panic, reason = "the probe exists to trap on demand")]
fn trap() -> Response {
    panic!("trap requested")
}

fn spin_forever() -> Response {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}
