//! Load for the benchmarks, on this machine, without closed-loop bias.
//!
//! `rate` sends requests at a fixed rate whatever the server does (open loop):
//! each latency is measured from when its request was *due*, so a stalled
//! server shows as latency instead of silently lowering the load (coordinated
//! omission); it also reports the time to the first body byte (for a stream:
//! to its first event). `hold` opens many connections, sends one request on
//! each (a plain GET, or a streamed completion) and keeps them open, for
//! memory measurements under connection load. Both print one JSON object.
//! `trivial` serves a do-nothing axum handler: the throughput ceiling any
//! axum service on this machine is measured against. `jobs` submits async
//! jobs to the origin and waits for the queue to drain (enqueue rate,
//! end-to-end throughput, per-job latency), or with `--sync` makes the same
//! calls as plain completions: the baseline.

mod stages;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use serde_json::json;
use sluice_core::edge_signature;
use sluice_core::identity::{Identity, Tier};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

#[derive(Parser)]
#[command(name = "sluice-load", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fixed-rate load; prints requests/s, success rate and latency percentiles.
    Rate(RateArgs),
    /// Hold N connections open after one request each; prints how many succeeded.
    Hold(HoldArgs),
    /// Print the edge's headers for one request, signed now (valid for the
    /// origin's clock-skew window), one `Name: value` per line.
    Sign {
        #[arg(long)]
        secret: String,
        #[arg(long, default_value = "POST")]
        method: String,
        #[arg(long)]
        path: String,
        #[arg(long, default_value = "bench")]
        subject: String,
        /// free, premium or admin.
        #[arg(long, default_value = "premium")]
        tier: String,
    },
    /// Submit jobs (closed loop, `--concurrency` at a time) and wait until the
    /// queue has run them all; prints rates and latencies.
    Jobs(JobsArgs),
    /// The seed's staged load test with virtual users (think time between
    /// requests); per-stage percentiles, success rate, requests/s and charts.
    Stages(stages::StagesArgs),
    /// Serve `{"ok":true}` on every path: a trivial axum baseline.
    Trivial {
        #[arg(long, default_value = "127.0.0.1:3199")]
        listen: std::net::SocketAddr,
    },
}

#[derive(clap::Args)]
struct RateArgs {
    #[arg(long)]
    url: String,
    /// Requests per second.
    #[arg(long)]
    rate: u32,
    /// Seconds of load (after a warm-up of one second, not counted).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    #[arg(long, default_value = "GET")]
    method: String,
    /// Request body (sent as JSON); `{n}` becomes the request's number, so
    /// bodies can differ (cache misses) or repeat (hits).
    #[arg(long)]
    body: Option<String>,
    /// `Name: value`, repeatable.
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// Most requests in flight at once; more are counted as errors rather than queued.
    #[arg(long, default_value_t = 2000)]
    max_in_flight: usize,
    /// Sign each request as the edge would, with this secret: a baseline that
    /// calls the origin directly.
    #[arg(long)]
    sign_secret: Option<String>,
    #[arg(long, default_value = "bench")]
    sign_subject: String,
    /// Count the "first byte" when the body read so far first contains this
    /// text (for a stream, its first token of a kind: `"tool_calls"`), not
    /// at the first byte of the body.
    #[arg(long)]
    first_match: Option<String>,
}

#[derive(clap::Args)]
struct JobsArgs {
    /// The origin, e.g. `http://127.0.0.1:3131` (called directly, signed).
    #[arg(long)]
    origin: String,
    #[arg(long)]
    secret: String,
    #[arg(long, default_value_t = 2000)]
    jobs: usize,
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// The chat completion request; `{n}` becomes the job's number.
    #[arg(long)]
    body: String,
    /// Make the calls as synchronous chat completions instead (the baseline).
    #[arg(long)]
    sync: bool,
}

#[derive(clap::Args)]
struct HoldArgs {
    /// `host:port`
    #[arg(long)]
    addr: String,
    #[arg(long, default_value = "/health")]
    path: String,
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// How long to keep them open after the last one answered.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// With a body, the request is a POST of it (JSON), e.g. a streamed completion.
    #[arg(long)]
    body: Option<String>,
    /// Sign each request as the edge would (calling the origin directly).
    #[arg(long)]
    sign_secret: Option<String>,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 200)]
    open_concurrency: usize,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(async {
        match cli.command {
            Command::Rate(args) => rate(args).await,
            Command::Hold(args) => hold(args).await,
            Command::Trivial { listen } => trivial(listen).await,
            Command::Jobs(args) => jobs(args).await,
            Command::Stages(args) => stages::run(args).await,
            Command::Sign {
                secret,
                method,
                path,
                subject,
                tier,
            } => {
                let tier = Tier::parse(&tier).context("--tier: free, premium or admin")?;
                let identity = identity_of(&subject, tier);
                let headers = edge_headers(&secret, &method.parse()?, &path, &identity);
                let lines: Vec<String> = headers.iter().map(|(n, v)| format!("{n}: {v}")).collect();
                Ok(serde_json::Value::String(lines.join("\n")))
            }
        }
    })?;
    match report {
        serde_json::Value::String(text) => println!("{text}"),
        report => println!("{report}"),
    }
    Ok(())
}

fn parse_headers(raw: &[String]) -> Result<Vec<(String, String)>> {
    raw.iter()
        .map(|h| {
            let (name, value) = h
                .split_once(':')
                .with_context(|| format!("header `{h}` is not `Name: value`"))?;
            Ok((name.trim().to_string(), value.trim().to_string()))
        })
        .collect()
}

async fn rate(args: RateArgs) -> Result<serde_json::Value> {
    if args.rate == 0 {
        bail!("--rate must be positive");
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.max_in_flight)
        .timeout(Duration::from_secs(30))
        .build()?;
    let method: reqwest::Method = args.method.parse()?;
    let headers = parse_headers(&args.headers)?;
    let url: reqwest::Url = args.url.parse()?;
    let path_and_query = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    let identity = bench_identity(&args.sign_subject);
    let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    let warmup = u64::from(args.rate);
    let total = warmup + u64::from(args.rate) * args.seconds;
    let in_flight = std::sync::Arc::new(tokio::sync::Semaphore::new(args.max_in_flight));
    // (micros to the first body byte, micros to the end), per counted request.
    let (results, mut received) = tokio::sync::mpsc::unbounded_channel::<Option<(u64, u64)>>();
    let start = Instant::now();
    let mut shed = 0u64;
    for i in 0..total {
        let due = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due).await;
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            shed += 1;
            continue;
        };
        let mut request = client.request(method.clone(), &args.url);
        for (name, value) in &headers {
            request = request.header(name, value);
        }
        if let Some(secret) = &args.sign_secret {
            for (name, value) in edge_headers(secret, &method, &path_and_query, &identity) {
                request = request.header(name, value);
            }
        }
        if let Some(body) = &args.body {
            request = request
                .header("content-type", "application/json")
                .body(body.replace("{n}", &i.to_string()));
        }
        let results = results.clone();
        let counted = i >= warmup;
        let first_match = args.first_match.clone();
        tokio::spawn(async move {
            let outcome = match request.send().await {
                Ok(response) if response.status().is_success() => {
                    read_body(response, due, first_match.as_deref()).await
                }
                _ => None,
            };
            drop(permit);
            if counted {
                let total = due.elapsed().as_micros() as u64;
                let _ = results.send(outcome.map(|first| (first, total)));
            }
        });
    }
    drop(results);
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut first_byte = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut ok, mut failed) = (0u64, 0u64);
    while let Some(result) = received.recv().await {
        match result {
            Some((first, total)) => {
                ok += 1;
                first_byte.saturating_record(first);
                histogram.saturating_record(total);
            }
            None => failed += 1,
        }
    }
    let elapsed = start.elapsed().as_secs_f64() - 1.0;
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    let first_ms = |q: f64| first_byte.value_at_quantile(q) as f64 / 1000.0;
    Ok(json!({
        "mode": "rate",
        "url": args.url,
        "target_rps": args.rate,
        "seconds": args.seconds,
        "sent": ok + failed,
        "ok": ok,
        "failed": failed,
        "shed": shed,
        "achieved_rps": (ok + failed) as f64 / elapsed.max(0.001),
        "success_rate": ok as f64 / ((ok + failed).max(1)) as f64,
        "p50_ms": ms(0.50),
        "p95_ms": ms(0.95),
        "p99_ms": ms(0.99),
        "max_ms": histogram.max() as f64 / 1000.0,
        "first_byte_p50_ms": first_ms(0.50),
        "first_byte_p99_ms": first_ms(0.99),
    }))
}

/// Reads the whole body as a client would; returns micros from `due` to its
/// first byte (or to the first appearance of `first_match`), or `None` if
/// it broke or never contained `first_match`.
async fn read_body(
    mut response: reqwest::Response,
    due: Instant,
    first_match: Option<&str>,
) -> Option<u64> {
    let mut first = None;
    let mut read = Vec::new();
    while let Some(chunk) = response.chunk().await.ok()? {
        if first.is_some() || chunk.is_empty() {
            continue;
        }
        match first_match {
            None => first = Some(due.elapsed().as_micros() as u64),
            Some(needle) => {
                read.extend_from_slice(&chunk);
                if read
                    .windows(needle.len().max(1))
                    .any(|w| w == needle.as_bytes())
                {
                    first = Some(due.elapsed().as_micros() as u64);
                }
            }
        }
    }
    match first_match {
        Some(_) => first,
        None => Some(first.unwrap_or_else(|| due.elapsed().as_micros() as u64)),
    }
}

async fn trivial(listen: std::net::SocketAddr) -> Result<serde_json::Value> {
    let app = axum::Router::new().fallback(|| async { axum::Json(json!({ "ok": true })) });
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!(
        "{}",
        json!({ "event": "listening", "addr": listener.local_addr()?.to_string() })
    );
    axum::serve(listener, app).await?;
    Ok(json!({ "mode": "trivial" }))
}

/// The encoded identity signed requests carry: a premium principal.
fn bench_identity(subject: &str) -> String {
    identity_of(subject, Tier::Premium)
}

fn identity_of(subject: &str, tier: Tier) -> String {
    Identity {
        sub: subject.into(),
        tier,
        kid: None,
        scopes: Vec::new(),
    }
    .encode()
}

/// A signed call to the origin; the JSON body of its answer.
async fn origin_call(
    client: &reqwest::Client,
    args: &JobsArgs,
    method: reqwest::Method,
    path: &str,
    identity: &str,
    body: Option<String>,
) -> Result<(reqwest::StatusCode, serde_json::Value)> {
    let mut request = client.request(method.clone(), format!("{}{path}", args.origin));
    for (name, value) in edge_headers(&args.secret, &method, path, identity) {
        request = request.header(name, value);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body);
    }
    let response = request.send().await?;
    let status = response.status();
    Ok((status, response.json().await.unwrap_or_default()))
}

fn percentile_ms(histogram: &Histogram<u64>, q: f64) -> f64 {
    histogram.value_at_quantile(q) as f64 / 1000.0
}

async fn jobs(args: JobsArgs) -> Result<serde_json::Value> {
    let args = std::sync::Arc::new(args);
    let client = reqwest::Client::new();
    let identity = std::sync::Arc::new(bench_identity("bench-jobs"));
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let path = if args.sync {
        "/v1/chat/completions"
    } else {
        "/v1/jobs"
    };
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let (args, client, identity, next) =
            (args.clone(), client.clone(), identity.clone(), next.clone());
        tasks.spawn(async move {
            let mut latencies = Histogram::<u64>::new(3)?;
            let mut ids = Vec::new();
            let mut failed = 0_usize;
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= args.jobs {
                    break;
                }
                let body = args.body.replace("{n}", &n.to_string());
                let sent = Instant::now();
                let (status, answer) = origin_call(
                    &client,
                    &args,
                    reqwest::Method::POST,
                    path,
                    &identity,
                    Some(body),
                )
                .await?;
                latencies.record(sent.elapsed().as_micros() as u64)?;
                match answer["job_id"].as_str() {
                    Some(id) if status.is_success() => ids.push(id.to_string()),
                    _ if status.is_success() && args.sync => {}
                    _ => failed += 1,
                }
            }
            anyhow::Ok((latencies, ids, failed))
        });
    }
    let mut latencies = Histogram::<u64>::new(3)?;
    let mut ids = Vec::new();
    let mut failed = 0;
    while let Some(done) = tasks.join_next().await {
        let (histogram, more, more_failed) = done??;
        latencies.add(&histogram)?;
        ids.extend(more);
        failed += more_failed;
    }
    let submitted_in = started.elapsed();
    let mut report = json!({
        "mode": if args.sync { "sync" } else { "jobs" },
        "calls": args.jobs, "failed": failed, "concurrency": args.concurrency,
        "calls_per_s": args.jobs as f64 / submitted_in.as_secs_f64(),
        "call_p50_ms": percentile_ms(&latencies, 0.5),
        "call_p99_ms": percentile_ms(&latencies, 0.99),
    });
    if args.sync {
        return Ok(report);
    }
    // Wait for the queue to drain, then read each job's own timing.
    let admin = identity_of("bench-admin", Tier::Admin);
    loop {
        let (_, stats) = origin_call(
            &client,
            &args,
            reqwest::Method::GET,
            "/v1/admin/queue",
            &admin,
            None,
        )
        .await?;
        let stats = &stats["stats"];
        if stats["queued"] == 0 && stats["processing"] == 0 {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("the queue did not drain in 10 minutes: {stats}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drained_in = started.elapsed();
    let mut waits = Histogram::<u64>::new(3)?;
    let mut completed = 0;
    for id in &ids {
        let (_, job) = origin_call(
            &client,
            &args,
            reqwest::Method::GET,
            &format!("/v1/jobs/{id}"),
            &identity,
            None,
        )
        .await?;
        if job["status"] == "completed" {
            completed += 1;
            let created = job["created_at_ms"].as_u64().unwrap_or(0);
            let finished = job["finished_at_ms"].as_u64().unwrap_or(created);
            waits.record(finished.saturating_sub(created).max(1) * 1000)?;
        }
    }
    report["completed"] = json!(completed);
    report["end_to_end_jobs_per_s"] = json!(completed as f64 / drained_in.as_secs_f64());
    report["job_p50_ms"] = json!(percentile_ms(&waits, 0.5));
    report["job_p99_ms"] = json!(percentile_ms(&waits, 0.99));
    Ok(report)
}

/// The headers the edge adds: identity, time and their HMAC.
fn edge_headers(
    secret: &str,
    method: &reqwest::Method,
    path_and_query: &str,
    identity: &str,
) -> [(&'static str, String); 3] {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    edge_signature::signed_headers(
        secret.as_bytes(),
        method.as_str(),
        path_and_query,
        now,
        identity,
    )
}

async fn hold(args: HoldArgs) -> Result<serde_json::Value> {
    let mut headers = parse_headers(&args.headers)?;
    let method = if args.body.is_some() {
        reqwest::Method::POST
    } else {
        reqwest::Method::GET
    };
    if let Some(secret) = &args.sign_secret {
        let identity = bench_identity("bench");
        for (name, value) in edge_headers(secret, &method, &args.path, &identity) {
            headers.push((name.to_string(), value));
        }
    }
    let mut request = format!(
        "{method} {} HTTP/1.1\r\nHost: {}\r\nConnection: keep-alive\r\n",
        args.path, args.addr
    );
    for (name, value) in &headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = &args.body {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    } else {
        request.push_str("\r\n");
    }
    // Connections are opened a batch at a time: ten thousand SYNs at once
    // overflow the listen backlog and measure the kernel's retry timers instead.
    let opening = std::sync::Arc::new(tokio::sync::Semaphore::new(args.open_concurrency.max(1)));
    let mut tasks = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let (addr, request) = (args.addr.clone(), request.clone());
        let opening = std::sync::Arc::clone(&opening);
        tasks.push(tokio::spawn(async move {
            let _permit = opening.acquire_owned().await.ok()?;
            let mut stream = tokio::net::TcpStream::connect(&addr).await.ok()?;
            stream.write_all(request.as_bytes()).await.ok()?;
            let mut head = [0u8; 1024];
            let n = stream.read(&mut head).await.ok()?;
            let answered = head[..n].starts_with(b"HTTP/1.1 2");
            answered.then_some(stream)
        }));
    }
    let mut open = Vec::new();
    for task in tasks {
        if let Ok(Some(stream)) = task.await {
            open.push(stream);
        }
    }
    println!(
        "{}",
        json!({ "event": "holding", "connections": open.len(), "pid": std::process::id() })
    );
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    Ok(json!({
        "mode": "hold",
        "requested": args.connections,
        "answered_and_held": open.len(),
        "seconds": args.seconds,
    }))
}
