//! Operations through the real stack: metrics on both admin listeners after
//! real traffic, the stats endpoint, the status page in headless Chromium,
//! draining on SIGTERM, and every deployment manifest checked against the
//! binaries it deploys.
#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: any failure should fail the test"
)]

use reqwest::StatusCode;
use serde_json::{Value, json};
use sluice_e2e::{DEMO_KEY, OTHER_KEY, Options, Process, RedisServer, Stack, repo};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const ADMIN_KEY: &str = "sk-sluice-e2e-ops-admin";

fn chat_body(text: &str) -> Value {
    json!({ "model": "sluice-sim-1", "messages": [{ "role": "user", "content": text }] })
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

/// Options with an admin key and a free tier of 2 requests a minute (alice).
fn options() -> Options {
    Options {
        api_keys: vec![(ADMIN_KEY.into(), "ops-admin".into(), "admin")],
        edge_variables: vec![("rate_limit_free", "2/1m".into())],
        ..Options::default()
    }
}

/// A cache miss and hit, a rate-limited call, a job run to completion, and
/// the stats endpoint as admin and as someone else.
async fn drive_traffic(stack: &Stack) {
    let chat = format!("{}/v1/chat/completions", stack.edge);
    let body = chat_body(&sluice_e2e::unique("ops"));
    for expected in ["MISS", "HIT"] {
        let r = client()
            .post(&chat)
            .bearer_auth(DEMO_KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["x-cache"], expected);
    }
    let limited = client()
        .post(&chat)
        .bearer_auth(DEMO_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);

    let job: Value = client()
        .post(format!("{}/v1/jobs", stack.edge))
        .bearer_auth(OTHER_KEY)
        .json(&chat_body("ops job"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = format!("{}/v1/jobs/{}", stack.edge, job["job_id"].as_str().unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let job: Value = client()
            .get(&url)
            .bearer_auth(OTHER_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if job["status"] == "completed" {
            break;
        }
        assert!(Instant::now() < deadline, "{job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stats_url = format!("{}/v1/admin/stats", stack.edge);
    let forbidden = client()
        .get(&stats_url)
        .bearer_auth(OTHER_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);
}

async fn text(url: &str) -> String {
    let r = client().get(url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{url}");
    r.text().await.unwrap()
}

/// The sum of every series of `name` whose labels include all of `labels`.
fn metric(exposition: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in exposition.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap_or((line, ""));
        let (series_name, series_labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if series_name != name {
            continue;
        }
        let matches = labels
            .iter()
            .all(|(k, v)| series_labels.contains(&format!("{k}=\"{v}\"")));
        if matches {
            *found.get_or_insert(0.0) += value.parse::<f64>().unwrap_or(f64::NAN);
        }
    }
    found
}

fn metric_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_and_stats_follow_traffic_through_both_tiers() {
    let stack = Stack::start(options()).await;
    drive_traffic(&stack).await;

    let edge = text(&format!("{}/metrics", stack.edge_admins[0])).await;
    let at_least = |text: &str, name: &str, labels: &[(&str, &str)], n: f64| {
        let value = metric(text, name, labels)
            .unwrap_or_else(|| panic!("{name}{labels:?} missing:\n{text}"));
        assert!(value >= n, "{name}{labels:?} = {value}, expected >= {n}");
    };
    at_least(
        &edge,
        "sluice_edge_cache_requests_total",
        &[("result", "hit")],
        1.0,
    );
    at_least(
        &edge,
        "sluice_edge_cache_requests_total",
        &[("result", "miss")],
        1.0,
    );
    at_least(
        &edge,
        "sluice_edge_rate_limit_decisions_total",
        &[("decision", "limited")],
        1.0,
    );
    at_least(
        &edge,
        "sluice_edge_rate_limit_decisions_total",
        &[("decision", "allowed")],
        2.0,
    );
    at_least(
        &edge,
        "sluice_host_requests_total",
        &[("status", "429")],
        1.0,
    );
    // The edge refuses non-admins on admin routes itself.
    at_least(
        &edge,
        "sluice_host_requests_total",
        &[("status", "403")],
        1.0,
    );
    // Instances are reused between requests, so instantiations alone count
    // fewer than the requests: every request either instantiated or reused one.
    at_least(
        &edge,
        "sluice_host_instantiation_duration_seconds_count",
        &[("component", "gateway")],
        1.0,
    );
    let runs = metric(
        &edge,
        "sluice_host_instantiations_total",
        &[("component", "gateway")],
    )
    .unwrap_or(0.0)
        + metric(
            &edge,
            "sluice_host_instance_reuses_total",
            &[("component", "gateway")],
        )
        .unwrap_or(0.0);
    assert!(
        runs >= 5.0,
        "instantiations + reuses = {runs}, expected >= 5"
    );
    at_least(
        &edge,
        "sluice_host_execution_duration_seconds_count",
        &[("component", "gateway")],
        5.0,
    );
    at_least(
        &edge,
        "sluice_host_kv_operation_duration_seconds_count",
        &[("backend", "memory")],
        1.0,
    );
    assert_eq!(
        metric(
            &edge,
            "sluice_host_traps_total",
            &[("component", "gateway")]
        ),
        Some(0.0)
    );

    let origin = text(&format!("{}/metrics", stack.origin_admin)).await;
    at_least(
        &origin,
        "sluice_http_requests_total",
        &[
            ("route", "/v1/chat/completions"),
            ("method", "POST"),
            ("status", "200"),
        ],
        1.0,
    );
    at_least(
        &origin,
        "sluice_http_requests_total",
        &[("route", "/v1/jobs"), ("status", "202")],
        1.0,
    );
    at_least(
        &origin,
        "sluice_http_request_duration_seconds_count",
        &[("route", "/v1/jobs/{id}")],
        1.0,
    );
    at_least(
        &origin,
        "sluice_jobs_processed_total",
        &[("outcome", "completed")],
        1.0,
    );
    at_least(
        &origin,
        "sluice_upstream_request_duration_seconds_count",
        &[("outcome", "ok")],
        2.0,
    );
    at_least(&origin, "sluice_prompt_tokens_total", &[], 1.0);
    at_least(&origin, "sluice_queue_workers_idle", &[], 1.0);
    at_least(&origin, "sluice_provider_key_available", &[], 1.0);
    at_least(&origin, "sluice_db_pool_max_connections", &[], 1.0);
    at_least(&origin, "process_resident_memory_bytes", &[], 1e6);
    assert!(
        metric(&origin, "sluice_queue_depth", &[("state", "queued")]).is_some(),
        "{origin}"
    );

    // The stats document, through the edge as admin and on the admin listener.
    let stats: Value = client()
        .get(format!("{}/v1/admin/stats", stack.edge))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["object"], "stats");
    // A miss, the job's submission and its polls reached the origin (the hit
    // and the 429 did not); they show once their seconds are over.
    let deadline = Instant::now() + Duration::from_secs(5);
    let direct = loop {
        let direct: Value =
            serde_json::from_str(&text(&format!("{}/stats", stack.origin_admin)).await).unwrap();
        let seen: u64 = direct["requests"]["series"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["requests"].as_u64().unwrap())
            .sum();
        if seen >= 4 {
            break direct;
        }
        assert!(Instant::now() < deadline, "{direct}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(direct["workers"]["total"], 4);
    assert_eq!(direct["deployments"][0]["keys"][0]["breaker"], "closed");

    let ready: Value =
        serde_json::from_str(&text(&format!("{}/ready", stack.origin_admin)).await).unwrap();
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["database"]["ok"], true);
    assert!(ready["memory"]["resident_bytes"].as_u64().unwrap() > 1 << 20);
    let edge_ready: Value =
        serde_json::from_str(&text(&format!("{}/ready", stack.edge_admins[0])).await).unwrap();
    assert_eq!(edge_ready["status"], "ready");
    assert_eq!(edge_ready["components"], 1);
}

/// Headless Chromium loads the status page, runs its script against the
/// live `/stats`, and the rendered DOM carries the numbers and both charts.
#[tokio::test(flavor = "multi_thread")]
async fn status_page_renders_live_numbers_in_headless_chromium() {
    let chromium = Path::new("/usr/bin/chromium");
    assert!(
        chromium.exists(),
        "Debian's chromium is needed (scripts/setup installs it)"
    );
    let stack = Stack::start(options()).await;
    drive_traffic(&stack).await;
    // The page charts whole seconds: let the traffic's second end.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let profile = tempfile_dir("chromium-profile");
    let url = format!("{}/status", stack.origin_admin);
    let screenshot = repo().join("target").join("status-page.png");
    let dom = tokio::task::spawn_blocking({
        let profile = profile.clone();
        let screenshot = screenshot.clone();
        move || {
            let run = |extra: &[String]| sluice_e2e::headless_chromium(&url, &profile, extra);
            let screenshot_run = run(&[format!("--screenshot={}", screenshot.display())]);
            assert!(screenshot_run.status.success(), "{screenshot_run:?}");
            let dump = run(&["--dump-dom".to_string()]);
            assert!(dump.status.success(), "{dump:?}");
            String::from_utf8(dump.stdout).unwrap()
        }
    })
    .await
    .unwrap();
    let _ = std::fs::remove_dir_all(&profile);

    let attribute = |id: &str, name: &str| -> Option<String> {
        let at = dom.find(&format!("id=\"{id}\""))?;
        let tag_start = dom[..at].rfind('<')?;
        let tag = &dom[tag_start..at + dom[at..].find('>')?];
        let value_at = tag.find(&format!("{name}=\""))? + name.len() + 2;
        Some(tag[value_at..value_at + tag[value_at..].find('"')?].to_string())
    };
    let inner = |id: &str| -> String {
        let at = dom
            .find(&format!("id=\"{id}\""))
            .unwrap_or_else(|| panic!("#{id} missing: {dom}"));
        let open = at + dom[at..].find('>').unwrap() + 1;
        dom[open..open + dom[open..].find('<').unwrap()].to_string()
    };
    assert!(
        dom.contains("data-rendered=\""),
        "the script never rendered: {dom}"
    );
    assert_eq!(inner("error"), "", "{dom}");
    assert!(inner("p95").ends_with(" ms"), "{}", inner("p95"));
    assert_eq!(inner("workers"), "0 / 4");
    assert!(inner("memory").ends_with(" MiB"));
    assert!(inner("updated").starts_with("updated "));
    // Two series on the traffic chart, three on latency, 59 seconds each.
    assert_eq!(
        attribute("chart-rps", "data-points").as_deref(),
        Some("118")
    );
    assert_eq!(
        attribute("chart-latency", "data-points").as_deref(),
        Some("177")
    );
    let rps_max: f64 = attribute("chart-rps", "data-max").unwrap().parse().unwrap();
    assert!(rps_max >= 1.0, "the traffic shows in the chart: {rps_max}");
    assert!(
        dom.contains("<td>sluice-sim-1</td>"),
        "the key table: {dom}"
    );
    assert!(screenshot.exists());
}

fn tempfile_dir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(sluice_e2e::unique(prefix));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// SIGTERM to the edge host and the origin while generations are in flight:
/// every one of them completes, then both processes exit cleanly.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_in_flight_requests_on_both_tiers() {
    let mut stack = Stack::start(Options {
        origin_env: vec![("SLUICE_SIMULATED__TIME_TO_FIRST_TOKEN_MS", "1500".into())],
        ..Options::default()
    })
    .await;
    let chat = format!("{}/v1/chat/completions", stack.edge);
    let in_flight: Vec<_> = (0..12)
        .map(|i| {
            let request = client()
                .post(&chat)
                .bearer_auth(OTHER_KEY)
                .json(&chat_body(&format!("drain {i}")))
                .send();
            tokio::spawn(async move {
                let r = request.await?;
                let status = r.status();
                let body: Value = r.json().await?;
                anyhow::Ok((status, body))
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stack.terminate(Process::Edge(0));
    stack.terminate(Process::Origin);
    for (i, task) in in_flight.into_iter().enumerate() {
        let (status, body) = task
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("request {i} lost: {e}"));
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(
            body["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .contains(&format!("drain {i}")),
            "{body}"
        );
    }
    for which in [Process::Edge(0), Process::Origin] {
        let status = stack
            .exited(which, Duration::from_secs(20))
            .await
            .unwrap_or_else(|| panic!("{which:?} still running 20 s after SIGTERM"));
        assert!(status.success(), "{which:?} exited with {status}");
    }
    assert!(
        client()
            .get(format!("{}/health", stack.edge))
            .send()
            .await
            .is_err()
    );
}

// ---------------------------------------------------------------------------
// Deployment manifests against the binaries.

fn deploy(path: &str) -> PathBuf {
    repo().join("deploy").join(path)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml_documents(path: &Path) -> Vec<serde_yaml::Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(&read(path))
        .map(|doc| {
            let mut value = serde_yaml::Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            // `<<: *anchor` merge keys, as compose applies them.
            value
                .apply_merge()
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            value
        })
        .filter(|doc| !doc.is_null())
        .collect()
}

fn to_json(value: &serde_yaml::Value) -> Value {
    serde_json::to_value(value).unwrap()
}

fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().join(name)
}

/// Metric names a PromQL expression reads.
fn promql_metrics(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut current = String::new();
    let mut in_braces = false;
    let mut in_string = false;
    for c in expr.chars().chain(std::iter::once(' ')) {
        match c {
            '"' => in_string = !in_string,
            '{' if !in_string => in_braces = true,
            '}' if !in_string => in_braces = false,
            _ => {}
        }
        if !in_braces && !in_string && (c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            current.push(c);
            continue;
        }
        if current.starts_with("sluice_") || current.starts_with("process_") {
            names.insert(current.clone());
        }
        current.clear();
    }
    names
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .parse()
        .unwrap_or_else(|_| panic!("no port in {addr}"))
}

/// Runs `sluice-origin --check` with `args`, `env` and a config file: the
/// binary's own strict parsing of every option and SLUICE_* name.
fn origin_accepts(config: &Path, env: &[(String, String)], args: &[String]) {
    let out = Command::new(bin("sluice-origin"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("SLUICE_CONFIG", config)
        .arg("--check")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sluice-origin --check {args:?} with {env:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `sluice-host` parses `args` (the `--help` at the end stops it after parsing).
fn host_accepts(args: &[String]) {
    let out = Command::new(bin("sluice-host"))
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sluice-host {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn help(binary: &str, args: &[&str]) -> String {
    let out = Command::new(bin(binary))
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

/// Every `SLUICE_*` name a manifest gives the host is one of its options.
fn host_env_known(name: &str) {
    if name.starts_with("SPIN_VARIABLE_") {
        let variable = name
            .trim_start_matches("SPIN_VARIABLE_")
            .to_ascii_lowercase();
        let spin: toml::Value = toml::from_str(&read(&repo().join("spin.toml"))).unwrap();
        assert!(
            spin["variables"].get(&variable).is_some(),
            "{name}: no `{variable}` in spin.toml"
        );
        return;
    }
    let up = help("sluice-host", &["up"]);
    assert!(
        up.contains(&format!("env: {name}")) || up.contains(&format!("env: {name}=")),
        "{name} is not a sluice-host option:\n{up}"
    );
}

/// Dummy values for secrets that manifests take from a Secret.
fn env_value(name: &str, value: Option<&str>) -> String {
    match (name, value) {
        ("SLUICE_EDGE__SECRET", _) => "0123456789abcdef0123456789abcdef".into(),
        (_, Some(v)) => v.into(),
        ("SLUICE_DATABASE__URL", None) => "postgres://sluice@postgres:5432/sluice".into(),
        (other, None) => panic!("{other} has no value and no test stand-in"),
    }
}

#[derive(Default)]
struct Ports {
    origin_http: u16,
    origin_admin: u16,
}

fn origin_ports(config_text: &str) -> Ports {
    let config: toml::Value = toml::from_str(config_text).unwrap();
    Ports {
        origin_http: port_of(config["server"]["listen"].as_str().unwrap()),
        origin_admin: port_of(config["server"]["admin_listen"].as_str().unwrap()),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn deploy_manifests_match_the_binaries() {
    // Redis behind both tiers, so every metric the alerts and dashboards use exists.
    let redis = RedisServer::start().await;
    let stack = Stack::start(Options {
        runtime_config: Some(format!(
            "[key_value_store.default]\ntype = \"redis\"\nurl = \"{}\"\n",
            redis.url()
        )),
        origin_env: vec![("SLUICE_CACHE__REDIS_URL", redis.url())],
        ..options()
    })
    .await;
    drive_traffic(&stack).await;
    let mut exposed = metric_names(&text(&format!("{}/metrics", stack.origin_admin)).await);
    exposed.extend(metric_names(
        &text(&format!("{}/metrics", stack.edge_admins[0])).await,
    ));
    let mut used: Vec<(String, String)> = Vec::new();
    let mut check_paths: Vec<(String, String)> = Vec::new();

    // --- Kubernetes
    let mut docs: Vec<Value> = Vec::new();
    for entry in std::fs::read_dir(deploy("kubernetes")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            docs.extend(yaml_documents(&path).iter().map(to_json));
        }
    }
    let find = |kind: &str, name: &str| -> Value {
        docs.iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {kind} {name} in deploy/kubernetes"))
    };
    let kustomization = yaml_documents(&deploy("kubernetes/kustomization.yaml"));
    for resource in to_json(&kustomization[0])["resources"].as_array().unwrap() {
        assert!(
            deploy("kubernetes")
                .join(resource.as_str().unwrap())
                .exists(),
            "{resource}"
        );
    }
    let config_text = find("ConfigMap", "sluice-origin")["data"]["origin.toml"]
        .as_str()
        .unwrap()
        .to_string();
    let config_file = std::env::temp_dir()
        .join(sluice_e2e::unique("k8s-origin"))
        .with_extension("toml");
    std::fs::write(&config_file, &config_text).unwrap();
    let ports = origin_ports(&config_text);
    for name in ["sluice-origin", "sluice-worker"] {
        let deployment = find("Deployment", name);
        let pod = &deployment["spec"]["template"];
        let container = &pod["spec"]["containers"][0];
        let env: Vec<(String, String)> = container["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let n = e["name"].as_str().unwrap();
                (n.to_string(), env_value(n, e["value"].as_str()))
            })
            .filter(|(n, _)| n != "SLUICE_CONFIG")
            .collect();
        let args: Vec<String> = container["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        origin_accepts(&config_file, &env, &args);
        let named: HashMap<&str, u64> = container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap(),
                    p["containerPort"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            named["admin"],
            u64::from(ports.origin_admin),
            "{name} admin port"
        );
        if let Some(http) = named.get("http") {
            assert_eq!(*http, u64::from(ports.origin_http), "{name} http port");
        }
        assert_eq!(
            pod["metadata"]["annotations"]["prometheus.io/port"]
                .as_str()
                .unwrap(),
            ports.origin_admin.to_string()
        );
        for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
            if container[probe].is_null() {
                continue;
            }
            let get = &container[probe]["httpGet"];
            assert!(
                named.contains_key(get["port"].as_str().unwrap()),
                "{name} {probe} port"
            );
            check_paths.push((
                stack.origin_admin.clone(),
                get["path"].as_str().unwrap().to_string(),
            ));
        }
        let resources = &container["resources"];
        for key in ["requests", "limits"] {
            assert!(
                resources[key]["cpu"].is_string() && resources[key]["memory"].is_string(),
                "{name} {key}"
            );
        }
        let mounted = container["volumeMounts"][0]["mountPath"].as_str().unwrap();
        assert!(
            env_of(container, "SLUICE_CONFIG").starts_with(mounted),
            "{name}: the config file is mounted"
        );
    }
    let _ = std::fs::remove_file(&config_file);
    let service = find("Service", "sluice-origin");
    let origin_deployment = find("Deployment", "sluice-origin");
    let port_names: Vec<&str> =
        origin_deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
    for port in service["spec"]["ports"].as_array().unwrap() {
        assert!(
            port_names.contains(&port["targetPort"].as_str().unwrap()),
            "{port}"
        );
    }
    let hpa = find("HorizontalPodAutoscaler", "sluice-origin");
    assert_eq!(
        (
            hpa["spec"]["minReplicas"].as_u64(),
            hpa["spec"]["maxReplicas"].as_u64()
        ),
        (Some(3), Some(50))
    );
    let scaled = find("ScaledObject", "sluice-worker");
    assert_eq!(scaled["spec"]["scaleTargetRef"]["name"], "sluice-worker");
    let query = scaled["spec"]["triggers"][0]["metadata"]["query"]
        .as_str()
        .unwrap();
    assert!(query.contains("sluice_queue_depth"));
    used.push(("worker ScaledObject".into(), query.into()));

    let spinapp = find("SpinApp", "sluice-edge");
    for variable in spinapp["spec"]["variables"].as_array().unwrap() {
        host_env_known(&format!(
            "SPIN_VARIABLE_{}",
            variable["name"].as_str().unwrap().to_ascii_uppercase()
        ));
    }
    let spin: toml::Value = toml::from_str(&read(&repo().join("spin.toml"))).unwrap();
    let stores: Vec<&str> = spin["component"]["gateway"]["key_value_stores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    for store in spinapp["spec"]["runtimeConfig"]["keyValueStores"]
        .as_array()
        .unwrap()
    {
        assert!(stores.contains(&store["name"].as_str().unwrap()), "{store}");
        assert_eq!(store["type"], "redis");
    }
    for check in ["liveness", "readiness"] {
        check_paths.push((
            stack.edge.clone(),
            spinapp["spec"]["checks"][check]["httpGet"]["path"]
                .as_str()
                .unwrap()
                .to_string(),
        ));
    }
    let secret = &yaml_documents(&deploy("kubernetes/secret.example.yaml"))[0];
    let secret_keys: Vec<String> = to_json(secret)["stringData"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let manifests = docs.iter().map(|d| d.to_string()).collect::<String>();
    let mut referenced = 0;
    for key in manifests.split("\"secretKeyRef\":").skip(1) {
        let key = key
            .split("\"key\":\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert!(
            secret_keys.iter().any(|k| k == key),
            "secret key {key} is not in secret.example.yaml"
        );
        referenced += 1;
    }
    assert!(referenced >= 5);

    // --- Dockerfiles
    for (file, binary, admin_port) in [
        (
            "docker/origin.Dockerfile",
            "sluice-origin",
            ports.origin_admin,
        ),
        ("docker/host.Dockerfile", "sluice-host", 3001),
    ] {
        let text = read(&deploy(file));
        let entrypoint = instruction(&text, "ENTRYPOINT");
        assert_eq!(entrypoint, format!("[\"{binary}\"]"), "{file}");
        assert!(
            bin(binary).exists(),
            "{file}: {binary} is a workspace binary"
        );
        assert!(
            text.contains(&format!("cargo build --release --locked -p {binary}")),
            "{file}"
        );
        let healthcheck = instruction(&text, "HEALTHCHECK");
        assert!(
            healthcheck.contains(&format!("http://127.0.0.1:{admin_port}/health")),
            "{file}: {healthcheck}"
        );
        let expose = instruction(&text, "EXPOSE");
        assert!(
            expose
                .split_whitespace()
                .any(|p| p == admin_port.to_string()),
            "{file}: EXPOSE {expose}"
        );
        assert!(text.contains("USER 10001"), "{file} runs as non-root");
        let env = docker_env(&instruction(&text, "ENV"));
        if binary == "sluice-origin" {
            let http = env
                .iter()
                .find(|(k, _)| k == "SLUICE_SERVER__LISTEN")
                .unwrap();
            assert!(expose.contains(&port_of(&http.1).to_string()));
            let admin = env
                .iter()
                .find(|(k, _)| k == "SLUICE_SERVER__ADMIN_LISTEN")
                .unwrap();
            assert_eq!(port_of(&admin.1), admin_port);
            let mut env = env.clone();
            env.push((
                "SLUICE_EDGE__SECRET".into(),
                env_value("SLUICE_EDGE__SECRET", None),
            ));
            origin_accepts(Path::new("/dev/null"), &env, &[]);
        } else {
            for (name, value) in &env {
                host_env_known(name);
                if name == "SLUICE_HOST_ADMIN_LISTEN" {
                    assert_eq!(port_of(value), admin_port);
                }
            }
            let cmd: Vec<String> = serde_json::from_str(&instruction(&text, "CMD")).unwrap();
            host_accepts(&cmd);
        }
    }

    // --- Compose
    let compose = to_json(&yaml_documents(&deploy("compose.yaml"))[0]);
    let services = compose["services"].as_object().unwrap();
    for service in [
        "edge",
        "origin",
        "worker",
        "redis",
        "postgres",
        "prometheus",
        "grafana",
    ] {
        assert!(services.contains_key(service), "compose has no {service}");
    }
    // Every shipped Redis is bounded and evicts the least recently used.
    let bounded = |args: &Value, name: &str| {
        let args: Vec<&str> = args
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        let after = |flag: &str| args.iter().position(|a| *a == flag).map(|i| args[i + 1]);
        assert!(after("--maxmemory").is_some(), "{name}: {args:?}");
        assert_eq!(after("--maxmemory-policy"), Some("allkeys-lru"), "{name}");
    };
    bounded(&services["redis"]["command"], "compose redis");
    let redis = find("StatefulSet", "redis");
    bounded(
        &redis["spec"]["template"]["spec"]["containers"][0]["args"],
        "kubernetes redis",
    );
    assert_eq!(find("Service", "redis")["spec"]["ports"][0]["port"], 6379);
    // The Ingress sends clients to the Service the Spin Operator makes for the edge.
    let ingress = find("Ingress", "sluice-edge");
    let backend = &ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"];
    assert_eq!(
        backend["name"],
        find("SpinApp", "sluice-edge")["metadata"]["name"]
    );
    let compose_config = read(&deploy("config/origin.toml"));
    let compose_ports = origin_ports(&compose_config);
    for name in ["origin", "worker"] {
        let service = &services[name];
        let env: Vec<(String, String)> = service["environment"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| *k != "SLUICE_CONFIG")
            .map(|(k, v)| {
                (
                    k.clone(),
                    env_value(k, v.as_str().filter(|v| !v.starts_with("${"))),
                )
            })
            .collect();
        let mount = service["volumes"][0].as_str().unwrap();
        assert!(mount.starts_with("./config/origin.toml:"));
        assert!(mount.contains(env_of_compose(service, "SLUICE_CONFIG")));
        let args: Vec<String> = service["command"]
            .as_array()
            .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
            .unwrap_or_default();
        origin_accepts(&deploy("config/origin.toml"), &env, &args);
        assert!(
            service["build"]["dockerfile"]
                .as_str()
                .unwrap()
                .ends_with("origin.Dockerfile")
        );
    }
    assert!(
        services["origin"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p
                .as_str()
                .unwrap()
                .ends_with(&format!(":{}", compose_ports.origin_admin)))
    );
    let edge = &services["edge"];
    let command: Vec<String> = edge["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            v.as_str()
                .unwrap()
                .replace(
                    "/app/spin.toml",
                    &repo().join("spin.toml").display().to_string(),
                )
                .replace(
                    "/etc/sluice/runtime-config.toml",
                    &deploy("config/runtime-config.toml").display().to_string(),
                )
        })
        .collect();
    host_accepts(&command);
    let checked = Command::new(bin("sluice-host"))
        .env(
            "SPIN_VARIABLE_EDGE_SECRET",
            env_value("SLUICE_EDGE__SECRET", None),
        )
        .args(["check", "--from"])
        .arg(repo().join("spin.toml"))
        .arg("--runtime-config-file")
        .arg(deploy("config/runtime-config.toml"))
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    for name in edge["environment"].as_object().unwrap().keys() {
        host_env_known(name);
    }
    assert_eq!(
        edge["environment"]["SPIN_VARIABLE_ORIGIN_URL"]
            .as_str()
            .map(port_of),
        Some(compose_ports.origin_http)
    );

    // --- Prometheus: scrape targets are the admin ports; the alerts the issue asks for exist.
    let prometheus = to_json(&yaml_documents(&deploy("prometheus/prometheus.yml"))[0]);
    for job in prometheus["scrape_configs"].as_array().unwrap() {
        for group in job["static_configs"].as_array().unwrap() {
            for target in group["targets"].as_array().unwrap() {
                let target = target.as_str().unwrap();
                let expected = if target.starts_with("edge:") {
                    3001
                } else {
                    compose_ports.origin_admin
                };
                assert_eq!(port_of(target), expected, "{target}");
            }
        }
    }
    let alerts = to_json(&yaml_documents(&deploy("prometheus/alerts.yml"))[0]);
    let rules: Vec<&Value> = alerts["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    for (alert, threshold) in [
        ("SluiceQueueBacklog", "> 1000"),
        ("SluiceCacheHitRateLow", "< 0.70"),
        ("SluiceErrorRateHigh", "> 0.01"),
        ("SluiceRedisDown", "== 0"),
        ("SluiceLatencyP95High", "> 0.3"),
        ("SluiceCpuSaturated", "process_cpu_seconds_total"),
        ("SluiceMemoryHigh", "process_resident_memory_bytes"),
        ("SluiceSlowQueries", "sluice_db_slow_queries_total"),
    ] {
        let rule = rules
            .iter()
            .find(|r| r["alert"] == alert)
            .unwrap_or_else(|| panic!("no alert {alert}"));
        assert!(
            rule["expr"].as_str().unwrap().contains(threshold),
            "{alert}: {}",
            rule["expr"]
        );
    }
    for rule in &rules {
        used.push((
            format!("alert {}", rule["alert"]),
            rule["expr"].as_str().unwrap().to_string(),
        ));
    }
    let compose_prometheus = services["prometheus"]["volumes"].to_string();
    for file in ["prometheus.yml", "alerts.yml"] {
        assert!(
            compose_prometheus.contains(&format!("./prometheus/{file}:")),
            "compose mounts {file}"
        );
    }

    // --- Grafana
    let dashboard: Value =
        serde_json::from_str(&read(&deploy("grafana/dashboards/sluice.json"))).unwrap();
    let mut targets = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            used.push((
                format!("dashboard panel {}", panel["title"]),
                target["expr"].as_str().unwrap().to_string(),
            ));
            targets += 1;
        }
    }
    assert!(targets >= 20, "{targets}");
    let provisioning =
        to_json(&yaml_documents(&deploy("grafana/provisioning/dashboards/sluice.yaml"))[0]);
    let path = provisioning["providers"][0]["options"]["path"]
        .as_str()
        .unwrap();
    assert!(
        services["grafana"]["volumes"]
            .to_string()
            .contains(&format!("./grafana/dashboards:{path}"))
    );
    // The dashboard's panels name the datasource the provisioning creates.
    let datasources =
        to_json(&yaml_documents(&deploy("grafana/provisioning/datasources/prometheus.yaml"))[0]);
    let datasource = &datasources["datasources"][0];
    assert_eq!(datasource["type"], "prometheus");
    let prometheus_url = datasource["url"].as_str().unwrap();
    assert_eq!(port_of(prometheus_url), 9090);
    assert!(
        services["prometheus"]["ports"]
            .to_string()
            .contains(":9090")
    );
    for panel in dashboard["panels"].as_array().unwrap() {
        if panel["type"] != "row" {
            assert_eq!(
                panel["datasource"]["uid"], datasource["uid"],
                "{}",
                panel["title"]
            );
        }
    }

    // --- Load tests: the seed's stages in both, and the Locust file parses.
    let k6 = read(&deploy("load/k6.js"));
    let targets: Vec<&str> = k6
        .split("target: ")
        .skip(1)
        .map(|t| t.split(' ').next().unwrap())
        .collect();
    assert_eq!(targets, ["100", "300", "500", "800", "1000", "1000", "0"]);
    assert!(k6.contains("/v1/chat/completions"));
    let locust = read(&deploy("load/locustfile.py"));
    assert!(
        locust.contains(
            "(120, 100), (420, 300), (720, 500), (1020, 800), (1320, 1000), (1920, 1000)"
        )
    );
    let compiled = Command::new("python3")
        .args(["-c", "import ast, sys; ast.parse(open(sys.argv[1]).read())"])
        .arg(deploy("load/locustfile.py"))
        .output()
        .unwrap();
    assert!(
        compiled.status.success(),
        "{}",
        String::from_utf8_lossy(&compiled.stderr)
    );

    // --- Every metric name used above is exposed by the binaries.
    let mut missing = Vec::new();
    for (place, expr) in &used {
        for name in promql_metrics(expr) {
            if !exposed.contains(&name) {
                missing.push(format!("{name} (in {place})"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "metrics not exposed: {missing:#?}\nexposed: {exposed:#?}"
    );

    // --- Probe and check paths answer 200 on the running binaries.
    for (base, path) in check_paths {
        let status = client()
            .get(format!("{base}{path}"))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, StatusCode::OK, "{base}{path}");
    }
}

fn env_of<'a>(container: &'a Value, name: &str) -> &'a str {
    container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str())
        .unwrap_or_else(|| panic!("no {name} in {container}"))
}

fn env_of_compose<'a>(service: &'a Value, name: &str) -> &'a str {
    service["environment"][name]
        .as_str()
        .unwrap_or_else(|| panic!("no {name} in {service}"))
}

/// The argument of a Dockerfile instruction in the final stage, continuation
/// lines joined.
fn instruction(dockerfile: &str, name: &str) -> String {
    let final_stage = dockerfile.rsplit("\nFROM ").next().unwrap();
    let joined = final_stage.replace("\\\n", " ");
    joined
        .lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in the final stage"))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// `ENV A=1 B=2` pairs.
fn docker_env(text: &str) -> Vec<(String, String)> {
    text.split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A minimal OTLP/HTTP collector: answers 200 to every POST and keeps the
/// bodies (JSON with `http/json`).
async fn collector() -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (bodies, received) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let bodies = bodies.clone();
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                loop {
                    let mut length = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        let lower = line.to_ascii_lowercase();
                        if let Some(value) = lower.strip_prefix("content-length:") {
                            length = value.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; length];
                    if stream.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    let _ = bodies.send(String::from_utf8_lossy(&body).into_owned());
                    let reply = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
                    if stream.get_mut().write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, received)
}

/// With `OTEL_EXPORTER_OTLP_ENDPOINT` set, the origin exports its request
/// span as a child of the `traceparent` the client sent through the edge.
#[tokio::test(flavor = "multi_thread")]
async fn traces_continue_the_callers_trace_from_the_edge_to_the_origin() {
    let (endpoint, mut bodies) = collector().await;
    let stack = Stack::start(Options {
        origin_env: vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json".into()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
        ],
        ..Options::default()
    })
    .await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let r = client()
        .post(format!("{}/v1/chat/completions", stack.edge))
        .bearer_auth(OTHER_KEY)
        .header("traceparent", format!("00-{trace}-{parent}-01"))
        .json(&chat_body(&sluice_e2e::unique("traced")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let body = tokio::time::timeout_at(deadline.into(), bodies.recv())
            .await
            .expect("no spans exported within 15 s")
            .unwrap();
        let export: Value = serde_json::from_str(&body).unwrap_or_default();
        let spans: Vec<&Value> = export["resourceSpans"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|r| r["scopeSpans"].as_array().into_iter().flatten())
            .flat_map(|s| s["spans"].as_array().into_iter().flatten())
            .collect();
        let completion = spans.iter().find(|s| {
            s["name"] == "request" && s["attributes"].to_string().contains("/v1/chat/completions")
        });
        if let Some(span) = completion {
            assert_eq!(span["traceId"], trace, "{span}");
            assert_eq!(span["parentSpanId"], parent, "{span}");
            let service = export["resourceSpans"][0]["resource"]["attributes"].to_string();
            assert!(service.contains("sluice-origin"), "{service}");
            break;
        }
    }
}

/// Every Kubernetes manifest passes strict schema validation (unknown fields
/// refused) for the Kubernetes API, with `kubernetes-validate` (its schemas
/// are bundled; `scripts/test` installs it). Only the custom resources of the
/// operators the cluster must run (SpinKube, KEDA) and kustomize's own file
/// have no schema there.
#[test]
fn kubernetes_manifests_pass_schema_validation() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy("kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let output = std::process::Command::new("kubernetes-validate")
        .args(["--strict", "--kubernetes-version", "1.30.0"])
        .args(&files)
        .output()
        .unwrap_or_else(|e| {
            panic!("kubernetes-validate (pip install kubernetes-validate==1.37.0): {e}")
        });
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{report}");
    let mut unvalidated: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("WARN"))
        .map(|l| {
            l.split("for kind ")
                .nth(1)
                .and_then(|rest| rest.split(' ').next())
                .unwrap_or_else(|| panic!("unexpected warning: {l}"))
        })
        .collect();
    unvalidated.sort_unstable();
    assert_eq!(
        unvalidated,
        ["Kustomization", "ScaledObject", "SpinApp"],
        "{report}"
    );
    let passed = report
        .lines()
        .filter(|l| l.contains(" passed for "))
        .count();
    assert!(passed >= 11, "{report}");

    // The check would see a mistake: a misspelt field in the origin's Deployment.
    let misspelt = read(&deploy("kubernetes/origin.yaml")).replacen("replicas:", "replica:", 1);
    let path = std::env::temp_dir().join(format!("{}.yaml", sluice_e2e::unique("k8s-bad")));
    std::fs::write(&path, misspelt).unwrap();
    let refused = std::process::Command::new("kubernetes-validate")
        .args(["--strict", "--kubernetes-version", "1.30.0"])
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(!refused.status.success(), "a misspelt field passed");
}
