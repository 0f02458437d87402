//! `stages`: the seed's load test shape (k6's `stages`) with virtual users.
//! Each user sends a request, waits for the answer, thinks for a random time
//! (mean `--think-ms`), and repeats; the user count steps at each stage.
//! Reported per stage: requests, success rate, rate-limited share, requests/s
//! and P50/P95/P99, plus two SVG charts for BENCHMARKS.md.
//!
//! Closed loop on purpose: this is how users (and k6) behave. For latency
//! under a fixed offered load without coordinated omission, use `rate`.

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

#[derive(clap::Args)]
pub struct StagesArgs {
    #[arg(long)]
    url: String,
    /// `users:seconds`, comma separated, e.g. `100:30,300:30,500:30,800:30,1000:30,1000:60`.
    #[arg(long)]
    stages: String,
    /// Request body (JSON); `{n}` becomes a per-request number, `{r}` a
    /// number below `--repeat-pool` (the same prompts again: cache hits).
    #[arg(long)]
    body: String,
    /// Share (0-1) of requests that use `{r}` in place of `{n}`.
    #[arg(long, default_value_t = 0.5)]
    repeat_share: f64,
    #[arg(long, default_value_t = 20)]
    repeat_pool: u64,
    /// `Name: value`, repeatable.
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// Mean think time between a user's requests, in ms (uniform 0 to twice it).
    #[arg(long, default_value_t = 1000)]
    think_ms: u64,
    /// Writes `<prefix>-latency.svg` and `<prefix>-throughput.svg`.
    #[arg(long)]
    charts: Option<PathBuf>,
}

struct Sample {
    stage: usize,
    status: u16,
    micros: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    pub users: usize,
    pub seconds: u64,
}

pub fn parse_stages(text: &str) -> Result<Vec<Stage>> {
    let stages: Vec<Stage> = text
        .split(',')
        .map(|part| {
            let (users, seconds) = part
                .trim()
                .split_once(':')
                .with_context(|| format!("stage `{part}` is not users:seconds"))?;
            Ok(Stage {
                users: users.trim().parse()?,
                seconds: seconds.trim().parse()?,
            })
        })
        .collect::<Result<_>>()?;
    if stages.is_empty() || stages.iter().any(|s| s.seconds == 0) {
        bail!("--stages needs at least one stage, each longer than 0 s");
    }
    Ok(stages)
}

pub async fn run(args: StagesArgs) -> Result<Value> {
    let stages = parse_stages(&args.stages)?;
    let headers = crate::parse_headers(&args.headers)?;
    let most = stages.iter().map(|s| s.users).max().unwrap_or(1);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(most)
        .timeout(Duration::from_secs(60))
        .build()?;
    // Users with an index below `active` keep going; the rest stop.
    let active = Arc::new(AtomicUsize::new(0));
    let stage_now = Arc::new(AtomicUsize::new(0));
    let counter = Arc::new(AtomicUsize::new(0));
    let (samples, mut received) = mpsc::unbounded_channel::<Sample>();
    let mut spawned = 0usize;
    let started = Instant::now();
    let collector = tokio::spawn({
        let stage_count = stages.len();
        async move {
            let mut per_stage: Vec<(Histogram<u64>, u64, u64, u64)> = Vec::new();
            for _ in 0..stage_count {
                per_stage.push((Histogram::new_with_bounds(1, 120_000_000, 3)?, 0, 0, 0));
            }
            while let Some(sample) = received.recv().await {
                let entry = &mut per_stage[sample.stage];
                match sample.status {
                    200..=299 => {
                        entry.1 += 1;
                        entry.0.saturating_record(sample.micros);
                    }
                    429 => entry.2 += 1,
                    _ => entry.3 += 1,
                }
            }
            anyhow::Ok(per_stage)
        }
    });
    for (index, stage) in stages.iter().enumerate() {
        stage_now.store(index, Ordering::Relaxed);
        active.store(stage.users, Ordering::Relaxed);
        while spawned < stage.users {
            let user = spawned;
            spawned += 1;
            let ctx = User {
                client: client.clone(),
                url: args.url.clone(),
                headers: headers.clone(),
                body: args.body.clone(),
                repeat_share: args.repeat_share,
                repeat_pool: args.repeat_pool.max(1),
                think: Duration::from_millis(args.think_ms),
                active: Arc::clone(&active),
                stage: Arc::clone(&stage_now),
                counter: Arc::clone(&counter),
                samples: samples.clone(),
            };
            tokio::spawn(ctx.run(user));
        }
        tokio::time::sleep(Duration::from_secs(stage.seconds)).await;
    }
    active.store(0, Ordering::Relaxed);
    drop(samples);
    let elapsed = started.elapsed();
    // Users finish the request in hand; its sample counts for the last stage.
    let per_stage = tokio::time::timeout(Duration::from_secs(65), collector)
        .await
        .context("users did not finish within 65 s")???;
    let mut rows = Vec::new();
    for (stage, (histogram, ok, limited, failed)) in stages.iter().zip(&per_stage) {
        let total = ok + limited + failed;
        let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
        rows.push(json!({
            "users": stage.users,
            "seconds": stage.seconds,
            "requests": total,
            "ok": ok,
            "rate_limited": limited,
            "failed": failed,
            "success_rate": *ok as f64 / (total.max(1)) as f64,
            "requests_per_second": total as f64 / stage.seconds as f64,
            "p50_ms": ms(0.50),
            "p95_ms": ms(0.95),
            "p99_ms": ms(0.99),
        }));
    }
    if let Some(prefix) = &args.charts {
        write_charts(prefix, &rows)?;
    }
    Ok(json!({
        "mode": "stages",
        "url": args.url,
        "think_ms": args.think_ms,
        "seconds": elapsed.as_secs_f64(),
        "stages": rows,
    }))
}

struct User {
    client: reqwest::Client,
    url: String,
    headers: Vec<(String, String)>,
    body: String,
    repeat_share: f64,
    repeat_pool: u64,
    think: Duration,
    active: Arc<AtomicUsize>,
    stage: Arc<AtomicUsize>,
    counter: Arc<AtomicUsize>,
    samples: mpsc::UnboundedSender<Sample>,
}

impl User {
    async fn run(self, index: usize) {
        // Users start spread over one think time, not all in the same instant.
        tokio::time::sleep(self.think.mul_f64(fastrand::f64())).await;
        while index < self.active.load(Ordering::Relaxed) {
            let n = self.counter.fetch_add(1, Ordering::Relaxed);
            let body = if fastrand::f64() < self.repeat_share {
                self.body
                    .replace("{r}", &fastrand::u64(..self.repeat_pool).to_string())
                    .replace("{n}", &fastrand::u64(..self.repeat_pool).to_string())
            } else {
                self.body
                    .replace("{n}", &format!("u{index}-{n}"))
                    .replace("{r}", &format!("u{index}-{n}"))
            };
            let mut request = self
                .client
                .post(&self.url)
                .header("content-type", "application/json")
                .body(body);
            for (name, value) in &self.headers {
                request = request.header(name, value);
            }
            let stage = self.stage.load(Ordering::Relaxed);
            let sent = Instant::now();
            let status = match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    match response.bytes().await {
                        Ok(_) => status,
                        Err(_) => 599,
                    }
                }
                Err(_) => 599,
            };
            let micros = sent.elapsed().as_micros() as u64;
            if self
                .samples
                .send(Sample {
                    stage,
                    status,
                    micros,
                })
                .is_err()
            {
                return;
            }
            tokio::time::sleep(self.think.mul_f64(2.0 * fastrand::f64())).await;
        }
    }
}

fn number(row: &Value, field: &str) -> f64 {
    row.get(field).and_then(Value::as_f64).unwrap_or(0.0)
}

/// Two line charts over the stages: latency percentiles, and requests/s with
/// the success rate.
fn write_charts(prefix: &std::path::Path, rows: &[Value]) -> Result<()> {
    let labels: Vec<String> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| format!("{}: {} users", i + 1, number(r, "users")))
        .collect();
    let latency = svg_chart(
        "Latency by stage (ms)",
        &labels,
        &[
            (
                "P50",
                "#1f883d",
                rows.iter().map(|r| number(r, "p50_ms")).collect(),
            ),
            (
                "P95",
                "#bf8700",
                rows.iter().map(|r| number(r, "p95_ms")).collect(),
            ),
            (
                "P99",
                "#cf222e",
                rows.iter().map(|r| number(r, "p99_ms")).collect(),
            ),
        ],
    );
    let throughput = svg_chart(
        "Requests/s by stage (success rate in the legend)",
        &labels,
        &[(
            "requests/s",
            "#0969da",
            rows.iter()
                .map(|r| number(r, "requests_per_second"))
                .collect(),
        )],
    );
    let success: Vec<String> = rows
        .iter()
        .map(|r| format!("{:.2} %", 100.0 * number(r, "success_rate")))
        .collect();
    let throughput = throughput.replace(
        "</svg>",
        &format!(
            "<text x=\"60\" y=\"292\" font-size=\"11\" fill=\"#66707d\">success: {}</text></svg>",
            success.join(" | ")
        ),
    );
    let path = |suffix: &str| {
        let mut p = prefix.as_os_str().to_owned();
        p.push(suffix);
        PathBuf::from(p)
    };
    std::fs::write(path("-latency.svg"), latency)?;
    std::fs::write(path("-throughput.svg"), throughput)?;
    Ok(())
}

/// A small self-contained SVG line chart; written by hand because a plotting
/// crate would add more to the build than these few lines do.
pub fn svg_chart(title: &str, labels: &[String], series: &[(&str, &str, Vec<f64>)]) -> String {
    let (w, h, left, right, top, bottom) = (760.0, 300.0, 60.0, 60.0, 30.0, 60.0);
    let max = series
        .iter()
        .flat_map(|(_, _, v)| v.iter().copied())
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let n = labels.len().max(2) - 1;
    let x = |i: usize| left + (w - left - right) * i as f64 / n as f64;
    let y = |v: f64| h - bottom - (h - top - bottom) * v / max;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\">\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\
         <text x=\"{left}\" y=\"18\" font-size=\"14\">{title}</text>"
    );
    for tick in 0..=4 {
        let value = max * f64::from(tick) / 4.0;
        let ty = y(value);
        out.push_str(&format!(
            "<line x1=\"{left}\" y1=\"{ty:.1}\" x2=\"{:.1}\" y2=\"{ty:.1}\" stroke=\"#d8dde3\"/>\
             <text x=\"4\" y=\"{:.1}\" font-size=\"11\" fill=\"#66707d\">{}</text>",
            w - right,
            ty + 4.0,
            if value >= 100.0 {
                format!("{value:.0}")
            } else {
                format!("{value:.2}")
            }
        ));
    }
    for (i, label) in labels.iter().enumerate() {
        out.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\" fill=\"#66707d\">{label}</text>",
            x(i),
            h - bottom + 16.0
        ));
    }
    for (k, (name, color, values)) in series.iter().enumerate() {
        let points: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v)))
            .collect();
        out.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>",
            points.join(" ")
        ));
        for point in &points {
            let (px, py) = point.split_once(',').unwrap_or(("0", "0"));
            out.push_str(&format!(
                "<circle cx=\"{px}\" cy=\"{py}\" r=\"3\" fill=\"{color}\"/>"
            ));
        }
        out.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" fill=\"{color}\">&#9632; {name}</text>",
            left + 110.0 * k as f64,
            h - 22.0
        ));
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_parse_and_refuse_nonsense() {
        assert_eq!(
            parse_stages("100:30, 300:5").ok(),
            Some(vec![
                Stage {
                    users: 100,
                    seconds: 30
                },
                Stage {
                    users: 300,
                    seconds: 5
                }
            ])
        );
        assert!(parse_stages("100").is_err());
        assert!(parse_stages("100:0").is_err());
        assert!(parse_stages("").is_err());
    }

    #[test]
    fn chart_has_a_point_per_stage_and_series() {
        let labels: Vec<String> = (1..=3).map(|i| i.to_string()).collect();
        let svg = svg_chart(
            "t",
            &labels,
            &[
                ("a", "#000", vec![1.0, 2.0, 3.0]),
                ("b", "#111", vec![3.0, 2.0, 1.0]),
            ],
        );
        assert_eq!(svg.matches("<circle").count(), 6);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
    }
}
