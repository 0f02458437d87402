//! Imports only `wasi:http`, so `wasmtime serve` runs the very same `.wasm`
//! as the runtime-host in the baseline benchmark.

use spin_sdk::http::{Request, Response};
use spin_sdk::http_component;

#[http_component]
async fn handle(req: Request) -> Response {
    match req.path() {
        "/trap" => trap(),
        "/loop" => spin_forever(),
        "/alloc" => {
            // Grow linear memory past any sane per-instance limit.
            let mut chunks: Vec<Vec<u8>> = Vec::new();
            for _ in 0..1024 {
                chunks.push(vec![1u8; 1 << 20]);
            }
            Response::new(200, format!("allocated {} MiB", chunks.len()))
        }
        "/resources" => {
            // Hold ever more host resources, past the host's per-request cap.
            let held: Vec<spin_sdk::http::Fields> =
                (0..20_000).map(|_| spin_sdk::http::Fields::new()).collect();
            Response::new(200, format!("held {} resources", held.len()))
        }
        "/fetch" => {
            let url = req
                .query()
                .strip_prefix("url=")
                .unwrap_or_default()
                .to_string();
            match spin_sdk::http::send::<_, Response>(Request::get(url)).await {
                Ok(upstream) => {
                    Response::new(200, format!("upstream answered {}", upstream.status()))
                }
                Err(e) => Response::new(502, format!("outbound refused: {e}")),
            }
        }
        _ => Response::new(200, "ok"),
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
