//! TLS to Redis and Postgres, as managed services require it (Upstash and
//! ElastiCache in-transit encryption, RDS with forced SSL): a Redis that
//! listens on TLS only and a Postgres cluster that accepts TLS connections
//! only, both with certificates from a CA this test makes. The edge's
//! key-value store, the origin's L2 cache and its Redis Streams queue speak
//! `rediss://`; the origin's database URL says `sslmode=verify-full` with the
//! CA as `sslrootcert`; the CA reaches the Redis clients as `SSL_CERT_FILE`.
#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "tests: any failure should fail the test"
)]

use serde_json::{Value, json};
use sluice_e2e::{DEMO_KEY, Options, Stack, unique, wait_for_job};
use sqlx::Connection;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run(command: &mut Command) {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A CA and a server certificate for 127.0.0.1 and localhost, made with openssl.
struct Certificates {
    dir: PathBuf,
}

impl Certificates {
    fn make() -> Certificates {
        let dir = std::env::temp_dir().join(unique("sluice-tls"));
        std::fs::create_dir_all(&dir).unwrap();
        let openssl = |args: &[&str]| run(Command::new("openssl").args(args).current_dir(&dir));
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-subj",
            "/CN=Sluice test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]);
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            "server.crt",
            "-extfile",
            "server.ext",
        ]);
        Certificates { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Certificates {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} on {port} did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `redis-server` with its plain port off and TLS on `port`.
struct TlsRedis {
    port: u16,
    child: Child,
}

impl TlsRedis {
    fn start(certs: &Certificates) -> TlsRedis {
        let port = free_port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--tls-auth-clients",
                "no",
            ])
            .arg("--tls-cert-file")
            .arg(certs.path("server.crt"))
            .arg("--tls-key-file")
            .arg(certs.path("server.key"))
            .arg("--tls-ca-cert-file")
            .arg(certs.path("ca.crt"))
            .arg("--dir")
            .arg(&certs.dir)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        wait_for_port(port, "redis-server --tls-port");
        TlsRedis { port, child }
    }

    fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Postgres cluster of its own (run as the `postgres` user, as initdb
/// requires) with `ssl = on` and only `hostssl` entries in pg_hba.conf.
struct TlsPostgres {
    port: u16,
    dir: PathBuf,
}

fn pg_bin(name: &str) -> PathBuf {
    let versions = std::fs::read_dir("/usr/lib/postgresql").unwrap();
    let version = versions
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.join("bin").join(name).exists())
        .unwrap_or_else(|| panic!("no PostgreSQL server binaries (Debian postgresql)"));
    version.join("bin").join(name)
}

fn as_postgres(program: &Path) -> Command {
    let mut command = Command::new("runuser");
    command.args(["-u", "postgres", "--"]).arg(program);
    command
}

impl TlsPostgres {
    fn start(certs: &Certificates) -> TlsPostgres {
        let dir = std::env::temp_dir().join(unique("sluice-pg-tls"));
        let data = dir.join("data");
        std::fs::create_dir_all(&dir).unwrap();
        run(Command::new("chown").arg("postgres:postgres").arg(&dir));
        run(as_postgres(&pg_bin("initdb")).arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "--auth=trust",
        ]));
        for file in ["server.crt", "server.key"] {
            std::fs::copy(certs.path(file), data.join(file)).unwrap();
        }
        run(Command::new("chown")
            .arg("postgres:postgres")
            .arg(data.join("server.crt"))
            .arg(data.join("server.key")));
        run(Command::new("chmod")
            .arg("600")
            .arg(data.join("server.key")));
        let port = free_port();
        let mut conf = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        conf.push_str(&format!(
            "\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n\
             listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n",
            dir.display()
        ));
        std::fs::write(data.join("postgresql.conf"), conf).unwrap();
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
        )
        .unwrap();
        run(as_postgres(&pg_bin("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.join("log"))
            .args(["-w", "start"]));
        wait_for_port(port, "postgres");
        TlsPostgres { port, dir }
    }

    fn url(&self, certs: &Certificates, sslmode: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?sslmode={sslmode}&sslrootcert={}",
            self.port,
            certs.path("ca.crt").display()
        )
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        let _ = as_postgres(&pg_bin("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn call(method: &str, url: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .request(method.parse().unwrap(), url)
        .bearer_auth(DEMO_KEY)
        .timeout(Duration::from_secs(20));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stack_runs_on_tls_only_redis_and_postgres() {
    let certs = Certificates::make();
    let redis = TlsRedis::start(&certs);
    let postgres = TlsPostgres::start(&certs);

    // The cluster refuses a connection without TLS and verifies with the CA.
    let plain = sqlx::PgConnection::connect(&postgres.url(&certs, "disable")).await;
    assert!(plain.is_err(), "a plain connection was accepted");
    let mut verified = sqlx::PgConnection::connect(&postgres.url(&certs, "verify-full"))
        .await
        .unwrap();
    let (ssl,): (bool,) =
        sqlx::query_as("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&mut verified)
            .await
            .unwrap();
    assert!(ssl);
    drop(verified);

    let ca = certs.path("ca.crt").display().to_string();
    let stack = Stack::start(Options {
        runtime_config: Some(format!(
            "[key_value_store.default]\ntype = \"redis\"\nurl = \"{}\"\n",
            redis.url()
        )),
        host_env: vec![("SSL_CERT_FILE", ca.clone())],
        origin_env: vec![
            ("SSL_CERT_FILE", ca.clone()),
            ("SLUICE_DATABASE__URL", postgres.url(&certs, "verify-full")),
            ("SLUICE_CACHE__REDIS_URL", redis.url()),
            ("SLUICE_QUEUE__BACKEND", "redis_streams".into()),
            ("SLUICE_QUEUE__REDIS_URL", redis.url()),
        ],
        ..Options::default()
    })
    .await;
    let edge = &stack.edge;

    // Rate limits and the edge cache on the TLS Redis.
    let (status, me) = call("GET", &format!("{edge}/v1/me"), None).await;
    assert_eq!(status, 200, "{me}");
    // A conversation in the TLS Postgres, read through the L2 cache on the TLS Redis.
    let (status, created) = call(
        "POST",
        &format!("{edge}/v1/conversations"),
        Some(json!({ "title": "over tls" })),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap();
    for _ in 0..2 {
        let (status, conversation) =
            call("GET", &format!("{edge}/v1/conversations/{id}"), None).await;
        assert_eq!(status, 200, "{conversation}");
        assert_eq!(conversation["title"], "over tls");
    }
    // A job delivered through Redis Streams over TLS.
    let (status, job) = call(
        "POST",
        &format!("{edge}/v1/jobs"),
        Some(json!({ "model": "sluice-sim-1",
            "messages": [{ "role": "user", "content": "queued over tls" }] })),
    )
    .await;
    assert_eq!(status, 202, "{job}");
    let done = wait_for_job(
        edge,
        DEMO_KEY,
        job["job_id"].as_str().unwrap(),
        &["completed", "failed"],
    )
    .await;
    assert_eq!(done["status"], "completed", "{done}");
    // The origin's readiness covers both stores.
    let ready = reqwest::get(format!("{}/ready", stack.origin_admin))
        .await
        .unwrap();
    assert_eq!(
        ready.status().as_u16(),
        200,
        "{}",
        ready.text().await.unwrap()
    );
}
