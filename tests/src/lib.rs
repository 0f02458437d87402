//! Starts the real stack (origin + runtime-host serving spin.toml) as processes
//! on ephemeral ports, for end-to-end tests. Processes die with the `Stack`.
#![expect(
    clippy::panic,
    reason = "a test harness that cannot start the stack must fail the test"
)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const DEMO_KEY: &str = "sk-sluice-e2e-alice";
pub const OTHER_KEY: &str = "sk-sluice-e2e-bob";

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// `target/debug` (or whichever profile built this test), where cargo put the binaries.
fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo test --workspace`, which builds it",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

pub struct Stack {
    pub edge: String,
    pub origin: String,
    pub secret: String,
    children: Vec<Child>,
}

impl Drop for Stack {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Settings that differ between tests, as `SPIN_VARIABLE_*` for the edge.
#[derive(Default)]
pub struct Options {
    pub edge_variables: Vec<(&'static str, String)>,
}

impl Stack {
    pub async fn start(options: Options) -> Stack {
        let secret = format!("{:032x}", rand_u128());
        let (origin_port, edge_port) = (free_port(), free_port());
        let origin = format!("http://127.0.0.1:{origin_port}");
        let edge = format!("http://127.0.0.1:{edge_port}");
        let keys = format!(
            "{}:alice:free,{}:bob:premium",
            sluice_core::api_key::hash(DEMO_KEY),
            sluice_core::api_key::hash(OTHER_KEY)
        );
        let origin_child = Command::new(bin("sluice-origin"))
            .env("SLUICE_EDGE__SECRET", &secret)
            .env("SLUICE_SERVER__LISTEN", format!("127.0.0.1:{origin_port}"))
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting sluice-origin: {e}"));
        let mut host = Command::new(bin("sluice-host"));
        host.args(["up", "--from"])
            .arg(repo().join("spin.toml"))
            .args(["--listen", &format!("127.0.0.1:{edge_port}")])
            .env("SPIN_VARIABLE_EDGE_SECRET", &secret)
            .env("SPIN_VARIABLE_ORIGIN_URL", &origin)
            .env("SPIN_VARIABLE_API_KEYS", keys)
            .stdout(Stdio::null());
        for (name, value) in &options.edge_variables {
            host.env(
                format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase()),
                value,
            );
        }
        let host_child = host
            .spawn()
            .unwrap_or_else(|e| panic!("starting sluice-host: {e}"));
        let stack = Stack {
            edge,
            origin,
            secret,
            children: vec![origin_child, host_child],
        };
        wait_healthy(&format!("{}/health", stack.origin)).await;
        wait_healthy(&format!("{}/health", stack.edge)).await;
        stack
    }
}

fn rand_u128() -> u128 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    let a = h.finish();
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(a);
    (u128::from(a) << 64) | u128::from(h.finish())
}

async fn wait_healthy(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(r) = reqwest::get(url).await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} did not become healthy within 60 s");
}
