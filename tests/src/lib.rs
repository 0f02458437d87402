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
    /// The first edge host; `edges` lists every one.
    pub edge: String,
    pub edges: Vec<String>,
    /// The first origin; `origins` lists every one (edge host i calls origin i mod n).
    pub origin: String,
    pub origins: Vec<String>,
    /// The origin's admin listener (metrics, probes, stats, status page).
    pub origin_admin: String,
    /// Each edge host's admin listener, in `edges` order.
    pub edge_admins: Vec<String>,
    pub secret: String,
    /// Origins first, then edge hosts.
    children: Vec<Child>,
    origin_count: usize,
    /// The origin's SQLite file, removed with the stack.
    database: PathBuf,
}

impl Drop for Stack {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.database.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Settings that differ between tests.
#[derive(Default)]
pub struct Options {
    /// As `SPIN_VARIABLE_*` for the edge.
    pub edge_variables: Vec<(&'static str, String)>,
    /// `runtime-config.toml` text for the edge hosts (memory stores when `None`).
    pub runtime_config: Option<String>,
    /// How many edge hosts to start (1 when 0), all on the same origin and config.
    pub edge_hosts: usize,
    /// API keys beside alice's and bob's: (key, subject, tier).
    pub api_keys: Vec<(String, String, &'static str)>,
    /// `SLUICE_*` settings for the origin.
    pub origin_env: Vec<(&'static str, String)>,
    /// How many origin processes to start (1 when 0), on one database: give
    /// `SLUICE_DATABASE__URL` in `origin_env` for a shared Postgres.
    pub origins: usize,
    /// Further environment for the edge hosts (`SSL_CERT_FILE`, ...).
    pub host_env: Vec<(&'static str, String)>,
}

impl Stack {
    pub async fn start(options: Options) -> Stack {
        let secret = format!("{:032x}", rand_u128());
        let mut keys = vec![
            format!("{}:alice:free", sluice_core::api_key::hash(DEMO_KEY)),
            format!("{}:bob:premium", sluice_core::api_key::hash(OTHER_KEY)),
        ];
        for (key, subject, tier) in &options.api_keys {
            keys.push(format!(
                "{}:{subject}:{tier}",
                sluice_core::api_key::hash(key)
            ));
        }
        let keys = keys.join(",");
        let database = std::env::temp_dir().join(format!("sluice-e2e-{:x}.db", rand_u128()));
        let mut children = Vec::new();
        let mut origins = Vec::new();
        let mut origin_admins = Vec::new();
        for _ in 0..options.origins.max(1) {
            let (port, admin_port) = (free_port(), free_port());
            let child = Command::new(bin("sluice-origin"))
                .env("SLUICE_EDGE__SECRET", &secret)
                .env(
                    "SLUICE_DATABASE__URL",
                    format!("sqlite://{}?mode=rwc", database.display()),
                )
                .env("SLUICE_SERVER__LISTEN", format!("127.0.0.1:{port}"))
                .env(
                    "SLUICE_SERVER__ADMIN_LISTEN",
                    format!("127.0.0.1:{admin_port}"),
                )
                .envs(options.origin_env.iter().map(|(k, v)| (*k, v)))
                .stdout(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("starting sluice-origin: {e}"));
            children.push(child);
            origins.push(format!("http://127.0.0.1:{port}"));
            origin_admins.push(format!("http://127.0.0.1:{admin_port}"));
            // The first one migrates the database before the others open it.
            if origins.len() == 1 {
                wait_healthy(&format!("{}/health", origins[0])).await;
            }
        }
        let origin_count = origins.len();
        let runtime_config = options.runtime_config.as_ref().map(|text| {
            let path = std::env::temp_dir().join(format!("sluice-e2e-{:x}.toml", rand_u128()));
            std::fs::write(&path, text)
                .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
            path
        });
        let mut edges = Vec::new();
        let mut edge_admins = Vec::new();
        for i in 0..options.edge_hosts.max(1) {
            let origin = &origins[i % origin_count];
            let edge_port = free_port();
            let admin_port = free_port();
            let mut host = Command::new(bin("sluice-host"));
            host.args(["up", "--from"])
                .arg(repo().join("spin.toml"))
                .args(["--listen", &format!("127.0.0.1:{edge_port}")])
                .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
                .env("SPIN_VARIABLE_EDGE_SECRET", &secret)
                .env("SPIN_VARIABLE_ORIGIN_URL", origin)
                .env("SPIN_VARIABLE_API_KEYS", &keys)
                .envs(options.host_env.iter().map(|(k, v)| (*k, v)))
                .stdout(Stdio::null());
            if let Some(path) = &runtime_config {
                host.arg("--runtime-config-file").arg(path);
            }
            for (name, value) in &options.edge_variables {
                host.env(
                    format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase()),
                    value,
                );
            }
            children.push(
                host.spawn()
                    .unwrap_or_else(|e| panic!("starting sluice-host: {e}")),
            );
            edges.push(format!("http://127.0.0.1:{edge_port}"));
            edge_admins.push(format!("http://127.0.0.1:{admin_port}"));
        }
        let stack = Stack {
            edge: edges[0].clone(),
            edges,
            origin: origins[0].clone(),
            origin_admin: origin_admins[0].clone(),
            origins,
            edge_admins,
            secret,
            children,
            origin_count,
            database,
        };
        for origin in &stack.origins {
            wait_healthy(&format!("{origin}/health")).await;
        }
        for edge in &stack.edges {
            wait_healthy(&format!("{edge}/health")).await;
        }
        wait_healthy(&format!("{}/health", stack.origin_admin)).await;
        for admin in &stack.edge_admins {
            wait_healthy(&format!("{admin}/health")).await;
        }
        stack
    }
}

/// Which process of the stack to signal.
#[derive(Debug, Clone, Copy)]
pub enum Process {
    Origin,
    Edge(usize),
}

impl Stack {
    fn child(&mut self, which: Process) -> &mut Child {
        let index = match which {
            Process::Origin => 0,
            Process::Edge(i) => self.origin_count + i,
        };
        &mut self.children[index]
    }

    /// Sends SIGTERM, as an orchestrator stopping the process would.
    pub fn terminate(&mut self, which: Process) {
        let pid = self.child(which).id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap_or_else(|e| panic!("kill -TERM {pid}: {e}"));
        assert!(status.success(), "kill -TERM {pid} failed");
    }

    /// Waits up to `limit` for the process to exit; its status, or `None`.
    pub async fn exited(
        &mut self,
        which: Process,
        limit: Duration,
    ) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child(which).try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }
}

/// A Redis server of the test's own on a free port, for outages that must not
/// disturb the shared one: stop it and start it again on the same port.
pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    /// Further `redis-server` arguments (`--maxmemory`, ...).
    args: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        RedisServer::start_with(&[]).await
    }

    pub async fn start_with(args: &[&str]) -> RedisServer {
        let dir = std::env::temp_dir().join(format!("sluice-redis-{:x}", rand_u128()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let mut server = RedisServer {
            port: free_port(),
            dir,
            args: args.iter().map(|a| a.to_string()).collect(),
            child: None,
        };
        server.resume().await;
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts (again) on the same port, and waits until it answers.
    pub async fn resume(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.args)
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting redis-server (Debian package redis-server): {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server on port {} did not start", self.port);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Debian's Chromium, headless, loading `url` with its scripts run (5 s of
/// virtual time) in the profile directory `profile`, plus `extra` flags
/// (`--dump-dom`, `--screenshot=...`).
pub fn headless_chromium(url: &str, profile: &Path, extra: &[String]) -> std::process::Output {
    Command::new("/usr/bin/chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=5000",
            "--window-size=1280,1500",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .output()
        .unwrap_or_else(|e| panic!("running /usr/bin/chromium (scripts/setup installs it): {e}"))
}

/// A random id, for names that must not collide across runs (shared Redis).
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:x}", rand_u128())
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

/// Polls `GET {edge}/v1/jobs/{id}` as `key` until the job's status is one of
/// `until` (30 s at most), and returns the job.
pub async fn wait_for_job(edge: &str, key: &str, id: &str, until: &[&str]) -> serde_json::Value {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let job: serde_json::Value = client
            .get(format!("{edge}/v1/jobs/{id}"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("polling job {id}: {e}"))
            .json()
            .await
            .unwrap_or_default();
        if until.iter().any(|s| job["status"] == *s) {
            return job;
        }
        assert!(Instant::now() < deadline, "job {id} still {job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The test AWS Bedrock (tests/sdk/bedrock_upstream.py: SigV4 checked with
/// botocore, Converse bodies with botocore's service model), killed on drop.
/// `anthropic_backend` answers its Claude models' InvokeModel calls.
pub struct TestBedrock {
    process: Child,
    pub base: String,
}

impl TestBedrock {
    pub fn start(anthropic_backend: Option<&str>) -> TestBedrock {
        use std::io::BufRead;
        let mut command = Command::new("python3");
        command.arg(repo().join("tests/sdk/bedrock_upstream.py"));
        if let Some(backend) = anthropic_backend {
            command.args(["--anthropic-backend", backend]);
        }
        let mut process = command
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting python3: {e}"));
        let mut line = String::new();
        if let Some(stdout) = process.stdout.take() {
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        }
        let port = line
            .trim()
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("the test Bedrock did not start: {line:?}"));
        TestBedrock {
            process,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    /// What each call carried, and the STS sessions asked for.
    pub async fn seen(&self) -> serde_json::Value {
        let answer = reqwest::get(format!("{}/_seen", self.base)).await;
        match answer.and_then(|r| r.error_for_status()) {
            Ok(answer) => answer
                .json()
                .await
                .unwrap_or_else(|e| panic!("the test Bedrock's record: {e}")),
            Err(e) => panic!("the test Bedrock's record: {e}"),
        }
    }
}

impl Drop for TestBedrock {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}
