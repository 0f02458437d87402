//! The runtime-host serving real components over real HTTP.
//!
//! Needs the components built first (`cargo xtask edge`, which the test
//! command runs); a missing component fails the test, never skips it.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers: any failure should fail the test"
)]

use sluice_host::app::{self, App, Limits};
use sluice_host::manifest::Loaded;
use sluice_host::runtime_config::RuntimeConfig;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn wasm(name: &str) -> PathBuf {
    let path = repo().join("target/wasm").join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask edge` first",
        path.display()
    );
    path
}

fn limits(timeout: Duration, memory_mib: usize) -> Limits {
    Limits {
        max_concurrent_requests: 16,
        max_memory_bytes: memory_mib << 20,
        request_timeout: timeout,
        kv_memory_max_bytes: 16 << 20,
        max_resources: 10_000,
        reuse: sluice_host::reuse::ReusePolicy::NEVER,
    }
}

/// Writes a manifest serving the probe under `/...` and loads it.
fn probe_app(allowed: &[String], limits: Limits) -> App {
    probe_app_named("probe", allowed, limits)
}

/// The probe under the component id `id` (its metrics' label).
fn probe_app_named(id: &str, allowed: &[String], limits: Limits) -> App {
    let dir = tempfile::tempdir().unwrap();
    let allowed: Vec<String> = allowed.iter().map(|a| format!("\"{a}\"")).collect();
    let text = format!(
        "spin_manifest_version = 2\n[application]\nname = \"probe\"\n[[trigger.http]]\nroute = \"/...\"\ncomponent = \"{id}\"\n\
         [component.{id}]\nsource = \"{}\"\nallowed_outbound_hosts = [{}]\n",
        wasm("probe").display(),
        allowed.join(", ")
    );
    let path = dir.path().join("spin.toml");
    std::fs::write(&path, text).unwrap();
    let loaded = Loaded::read(&path).unwrap();
    app::load(&loaded, &RuntimeConfig::default(), limits, None, &|_| None).unwrap()
}

/// Serves `app` on an ephemeral port until the test ends.
async fn serve(app: App) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(sluice_host::server::serve(
        app,
        listener,
        std::future::pending(),
    ));
    format!("http://{addr}")
}

async fn get(url: &str) -> (u16, String) {
    let r = reqwest::get(url).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn serves_a_component_and_survives_its_traps() {
    let base = serve(probe_app(&[], limits(Duration::from_secs(30), 64))).await;
    assert_eq!(get(&base).await, (200, "ok".into()));
    let (status, _) = get(&format!("{base}/trap")).await;
    assert_eq!(status, 500);
    assert_eq!(
        get(&format!("{base}/after")).await,
        (200, "ok".into()),
        "host keeps serving after a trap"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_runaway_component_is_stopped_at_the_deadline() {
    let base = serve(probe_app(&[], limits(Duration::from_millis(300), 64))).await;
    let started = std::time::Instant::now();
    let (status, _) = get(&format!("{base}/loop")).await;
    assert_eq!(status, 500);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(get(&base).await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn host_resources_are_capped_per_request() {
    let mut capped = limits(Duration::from_secs(30), 64);
    capped.max_resources = 1_000;
    let base = serve(probe_app(&[], capped)).await;
    let (status, body) = get(&format!("{base}/resources")).await;
    assert_eq!(
        status, 500,
        "20k resources must not fit under a cap of 1000: {body}"
    );
    assert_eq!(get(&base).await, (200, "ok".into()));
    let mut roomy = limits(Duration::from_secs(30), 64);
    roomy.max_resources = 100_000;
    let base = serve(probe_app(&[], roomy)).await;
    assert_eq!(
        get(&format!("{base}/resources")).await,
        (200, "held 20000 resources".into()),
        "the cap is what refused, not the probe"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_is_capped_per_instance() {
    let base = serve(probe_app(&[], limits(Duration::from_secs(30), 32))).await;
    let (status, body) = get(&format!("{base}/alloc")).await;
    assert_eq!(
        status, 500,
        "allocation of 1 GiB must fail under a 32 MiB cap: {body}"
    );
    assert_eq!(get(&base).await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn outbound_requests_follow_allowed_outbound_hosts() {
    let target = serve(probe_app(&[], limits(Duration::from_secs(30), 64))).await;
    let closed = serve(probe_app(&[], limits(Duration::from_secs(30), 64))).await;
    let (status, body) = get(&format!("{closed}/fetch?url={target}/")).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("outbound refused"), "{body}");

    let open = serve(probe_app(
        std::slice::from_ref(&target),
        limits(Duration::from_secs(30), 64),
    ))
    .await;
    assert_eq!(
        get(&format!("{open}/fetch?url={target}/")).await,
        (200, "upstream answered 200".into())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_edge_manifest_composes_and_links() {
    for name in ["gateway", "auth", "ratelimit", "cache"] {
        wasm(name);
    }
    let loaded = Loaded::read(&repo().join("spin.toml")).unwrap();
    let err = app::load(
        &loaded,
        &RuntimeConfig::default(),
        limits(Duration::from_secs(5), 64),
        None,
        &|_| None,
    )
    .err();
    let err = err.map(|e| format!("{e:#}")).unwrap_or_default();
    assert!(
        err.contains("edge_secret") && err.contains("required"),
        "a required variable without a value is refused: {err}"
    );
    let env = |name: &str| (name == "SPIN_VARIABLE_EDGE_SECRET").then(|| "s".repeat(32));
    let app = app::load(
        &loaded,
        &RuntimeConfig::default(),
        limits(Duration::from_secs(5), 64),
        None,
        &env,
    )
    .unwrap();
    assert_eq!(app.components.len(), 1);
    let (_, gateway) = app.route("/v1/chat/completions").unwrap();
    assert_eq!(gateway.config.variables["rate_limit_free"], "60/1m");
}

#[test]
fn spin_toml_validates_against_spins_schema() {
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("runtime-host/tests/spin-manifest-v2.schema.json"))
            .unwrap(),
    )
    .unwrap();
    let manifest: toml::Value =
        toml::from_str(&std::fs::read_to_string(repo().join("spin.toml")).unwrap()).unwrap();
    let manifest = serde_json::to_value(manifest).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&manifest)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

/// Every crate of the edge workspace, and the test here that serves it. A new
/// component fails this until it is built by `cargo xtask edge` and tested.
const TESTED_COMPONENTS: &[(&str, &str)] = &[
    (
        "gateway",
        "the_edge_manifest_composes_and_links (and tests/ end to end)",
    ),
    ("auth", "policies.rs: auth_jwt_battery, auth_admits_..."),
    ("ratelimit", "policies.rs: rate_limit_*"),
    ("cache", "policies.rs: cache_*"),
    ("probe", "serves_a_component_and_survives_its_traps"),
    (
        "shared",
        "a library linked into every component, tested through them",
    ),
];

/// Edge crates that are libraries, not components: nothing of theirs to build.
const LIBRARIES: &[&str] = &["shared"];

#[test]
fn every_edge_crate_is_built_and_host_tested() {
    let manifest: toml::Value =
        toml::from_str(&std::fs::read_to_string(repo().join("edge/Cargo.toml")).unwrap()).unwrap();
    let members: Vec<&str> = manifest["workspace"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m.as_str())
        .collect();
    assert!(!members.is_empty());
    for member in members {
        assert!(
            TESTED_COMPONENTS.iter().any(|(name, _)| *name == member),
            "edge crate `{member}` has no host test: add one and list it in TESTED_COMPONENTS"
        );
        if !LIBRARIES.contains(&member) {
            wasm(member);
        }
    }
}

/// The edge manifest with its `[component.gateway.dependencies]` table replaced.
fn gateway_with_dependencies(dependencies: &str) -> Result<App, String> {
    let manifest = std::fs::read_to_string(repo().join("spin.toml")).unwrap();
    let start = manifest.find("[component.gateway.dependencies]").unwrap();
    let end = manifest[start..]
        .find("\n\n")
        .map_or(manifest.len(), |e| start + e);
    let text = format!(
        "{}[component.gateway.dependencies]\n{}\n{}",
        &manifest[..start],
        dependencies.replace("WASM", &repo().join("target/wasm").display().to_string()),
        &manifest[end..]
    )
    .replace(
        "source = \"target/wasm/gateway.wasm\"",
        &format!("source = \"{}\"", wasm("gateway").display()),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spin.toml");
    std::fs::write(&path, text).unwrap();
    let loaded = Loaded::read(&path).map_err(|e| e.to_string())?;
    let env = |name: &str| (name == "SPIN_VARIABLE_EDGE_SECRET").then(|| "s".repeat(32));
    app::load(
        &loaded,
        &RuntimeConfig::default(),
        limits(Duration::from_secs(5), 64),
        None,
        &env,
    )
    .map_err(|e| format!("{e:#}"))
}

/// The error for a manifest that must be refused (an acceptance fails the
/// caller's assertion with the dependencies it accepted).
fn refused(dependencies: &str) -> String {
    gateway_with_dependencies(dependencies)
        .err()
        .unwrap_or_else(|| format!("accepted: {dependencies}"))
}

const AUTH: &str = "\"sluice:auth/auth\" = { path = \"WASM/auth.wasm\" }";
const RATE_LIMIT: &str = "\"sluice:rate-limit/rate-limit\" = { path = \"WASM/ratelimit.wasm\" }";
const CACHE: &str = "\"sluice:cache/cache\" = { path = \"WASM/cache.wasm\" }";

/// Spin's rule (spin-compose `register_package`): each dependency is registered
/// under its package name, so two dependencies from one WIT package collide,
/// even for different interfaces. This is what refused the old manifest.
#[tokio::test(flavor = "multi_thread")]
async fn spin_rule_one_dependency_per_package() {
    for name in ["gateway", "auth", "ratelimit", "cache"] {
        wasm(name);
    }
    gateway_with_dependencies(&[AUTH, RATE_LIMIT, CACHE].join("\n")).unwrap();
    let err = refused(&format!(
        "{AUTH}\n\"sluice:auth\" = {{ path = \"WASM/auth.wasm\" }}\n{RATE_LIMIT}\n{CACHE}"
    ));
    assert!(
        err.contains("both from package `sluice:auth`"),
        "two dependencies of package sluice:auth: {err}"
    );
}

/// Spin's rule (`UnmatchedDependencyName`): every dependency must match an import.
#[tokio::test(flavor = "multi_thread")]
async fn spin_rule_a_dependency_must_match_an_import() {
    let err = refused(&format!(
        "{AUTH}\n{RATE_LIMIT}\n{CACHE}\n\"sluice:missing/thing\" = {{ path = \"WASM/cache.wasm\" }}"
    ));
    assert!(
        err.contains("doesn't match any imports of component `gateway`"),
        "{err}"
    );
}

/// Spin's rule (`MissingExport`): the export used must exist under exactly
/// that name (the import's own, or `export`).
#[tokio::test(flavor = "multi_thread")]
async fn spin_rule_the_export_must_exist() {
    let err = refused(&format!(
        "\"sluice:auth/auth\" = {{ path = \"WASM/cache.wasm\" }}\n{RATE_LIMIT}\n{CACHE}"
    ));
    assert!(
        err.contains("doesn't export `sluice:auth/auth@0.1.0`"),
        "{err}"
    );
    let err = refused(&format!(
        "\"sluice:auth/auth\" = {{ path = \"WASM/auth.wasm\", export = \"sluice:auth/authz@0.1.0\" }}\n{RATE_LIMIT}\n{CACHE}"
    ));
    assert!(
        err.contains("doesn't export `sluice:auth/authz@0.1.0`"),
        "{err}"
    );
}

/// Spin's rules (`ComponentDependencies::validate`, `DependencyName`): names
/// parse as packages or kebab names; a package-level name picks no export.
#[tokio::test(flavor = "multi_thread")]
async fn spin_rule_dependency_names_and_exports() {
    let err = refused(&format!(
        "\"sluice:Auth/auth\" = {{ path = \"WASM/auth.wasm\" }}\n{RATE_LIMIT}\n{CACHE}"
    ));
    assert!(err.contains("not a package name"), "{err}");
    let err = refused(&format!(
        "\"sluice:auth\" = {{ path = \"WASM/auth.wasm\", export = \"sluice:auth/auth@0.1.0\" }}\n{RATE_LIMIT}\n{CACHE}"
    ));
    assert!(err.contains("cannot pick an `export`"), "{err}");
    // A whole-package name is fine on its own.
    gateway_with_dependencies(&format!(
        "\"sluice:auth\" = {{ path = \"WASM/auth.wasm\" }}\n{RATE_LIMIT}\n{CACHE}"
    ))
    .unwrap();
}

/// Spin's rule (`Map<KebabId, Component>`): component ids are kebab-case.
#[test]
fn spin_rule_component_ids_are_kebab_case() {
    let text = "spin_manifest_version = 2\n[application]\nname = \"t\"\n[[trigger.http]]\nroute = \"/...\"\ncomponent = \"My_web\"\n[component.My_web]\nsource = \"web.wasm\"\n";
    let err = Loaded::parse(Path::new("spin.toml"), text.to_string())
        .unwrap_err()
        .to_string();
    assert!(err.contains("kebab-case"), "{err}");
}

/// The edge manifest loaded with a compilation cache in `dir`.
fn edge_app_cached(dir: &std::path::Path) -> App {
    let loaded = Loaded::read(&repo().join("spin.toml")).unwrap();
    let env = |name: &str| (name == "SPIN_VARIABLE_EDGE_SECRET").then(|| "s".repeat(32));
    app::load(
        &loaded,
        &RuntimeConfig::default(),
        limits(Duration::from_secs(5), 64),
        Some(dir),
        &env,
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_start_loads_compiled_components_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let counts = |app: &App| {
        let cache = app.compile_cache.as_ref().unwrap();
        (cache.hits(), cache.misses())
    };
    let first = edge_app_cached(dir.path());
    assert_eq!(counts(&first), (0, 1), "compiled once");
    let entries = || {
        walk(dir.path())
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
            .collect::<Vec<_>>()
    };
    assert_eq!(entries().len(), 1, "one entry written");
    let second = edge_app_cached(dir.path());
    assert_eq!(counts(&second), (1, 0), "loaded, not compiled");
    serves_health(second).await;
    // One flipped bit in the artefact: compiled again rather than loaded,
    // and the entry replaced by a sound one.
    let entry = entries().remove(0);
    let mut bytes = std::fs::read(&entry).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&entry, &bytes).unwrap();
    let third = edge_app_cached(dir.path());
    assert_eq!(counts(&third), (0, 1), "a damaged entry is compiled again");
    let fourth = edge_app_cached(dir.path());
    assert_eq!(counts(&fourth), (1, 0), "and replaced");
    // An entry of another engine under this one's name (a cache shared with
    // another wasmtime, or a file copied in): refused by wasmtime, compiled again.
    let other = wasmtime::Engine::new(wasmtime::Config::new().wasm_component_model(true)).unwrap();
    let foreign = other
        .precompile_component(&std::fs::read(repo().join("target/wasm/probe.wasm")).unwrap())
        .unwrap();
    let mut forged = b"sluice-host compiled component v1\n".to_vec();
    forged.extend_from_slice(&sha256(&foreign));
    forged.extend_from_slice(&foreign);
    std::fs::write(&entry, &forged).unwrap();
    let fifth = edge_app_cached(dir.path());
    assert_eq!(counts(&fifth), (0, 1), "a foreign entry is compiled again");
    serves_health(fifth).await;
    drop((first, third, fourth));
}

/// The app answers `/health` (it loaded a working gateway).
async fn serves_health(app: App) {
    let addr = serve(app).await;
    let response = reqwest::get(format!("{addr}/health")).await.unwrap();
    assert_eq!(response.status(), 200);
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).to_vec()
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}

/// The probe served with instances reused up to `max_uses` requests.
async fn serve_reusing(max_uses: u32, idle: Duration, timeout: Duration) -> String {
    serve_reusing_as("probe", max_uses, idle, timeout).await
}

async fn serve_reusing_as(id: &str, max_uses: u32, idle: Duration, timeout: Duration) -> String {
    let mut limits = limits(timeout, 64);
    limits.reuse = sluice_host::reuse::ReusePolicy {
        max_uses,
        idle_timeout: idle,
    };
    serve(probe_app_named(id, &[], limits)).await
}

/// A counter of the process's metrics (as the admin listener renders them)
/// for component `id`, with `cause` when given; 0 when never recorded.
fn host_counter(name: &str, id: &str, cause: Option<&str>) -> u64 {
    let page = sluice_telemetry::prometheus().render();
    let component = format!("component=\"{id}\"");
    let cause = cause.map(|c| format!("cause=\"{c}\""));
    page.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .filter(|line| line.contains(&component))
        .filter(|line| cause.as_ref().is_none_or(|c| line.contains(c.as_str())))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Gives the instance that served the last request the time to go back to
/// the pool: that happens once its handler has returned, which can be just
/// after its client has the whole answer.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// How many requests the instance that served this one has served.
async fn count(base: &str) -> u32 {
    settle().await;
    let (status, text) = get(&format!("{base}/count")).await;
    assert_eq!(status, 200, "{text}");
    text.trim_start_matches("served ").parse().unwrap()
}

/// An instance is kept only after a request that ended cleanly.
async fn after(base: &str, path: &str) -> u32 {
    settle().await;
    // Read to its end, so the host settles the instance at once.
    if let Ok(response) = reqwest::get(format!("{base}{path}")).await {
        let _ = response.bytes().await;
    }
    // The instance is settled once its answer has been delivered.
    tokio::time::sleep(Duration::from_millis(50)).await;
    count(base).await
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_serves_consecutive_requests_up_to_its_share() {
    let base = serve_reusing(3, Duration::from_secs(30), Duration::from_secs(5)).await;
    let mut counts = Vec::new();
    for _ in 0..7 {
        counts.push(count(&base).await);
    }
    assert_eq!(
        counts,
        [1, 2, 3, 1, 2, 3, 1],
        "three requests, then a new instance"
    );
    // Reuse off: every request on a new instance, as Spin serves WASI 0.2.
    let base = serve_reusing(1, Duration::from_secs(30), Duration::from_secs(5)).await;
    for _ in 0..3 {
        assert_eq!(count(&base).await, 1);
    }
    // An instance idle past its timeout is dropped.
    // (A second, so a busy machine does not retire it between the first two.)
    // It is dropped on time even when no request comes to take it.
    sluice_telemetry::prometheus();
    let id = "probe-idle";
    let base = serve_reusing_as(id, 100, Duration::from_secs(1), Duration::from_secs(5)).await;
    assert_eq!(count(&base).await, 1);
    assert_eq!(count(&base).await, 2);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(
        host_counter("sluice_host_instances_retired_total", id, Some("idle")),
        1,
        "dropped while no request came"
    );
    assert_eq!(count(&base).await, 1, "idle too long");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_is_never_reused_after_a_request_that_did_not_end_cleanly() {
    // Its own component id: the metrics below are this test's alone.
    let id = "probe-isolation";
    sluice_telemetry::prometheus();
    let base = serve_reusing_as(id, 100, Duration::from_secs(30), Duration::from_millis(500)).await;
    let retired =
        |cause: &str| host_counter("sluice_host_instances_retired_total", id, Some(cause));
    assert_eq!(count(&base).await, 1);
    assert_eq!(count(&base).await, 2, "reused");
    assert_eq!(after(&base, "/trap").await, 1, "after a trap");
    assert_eq!(retired("trap"), 1);
    assert_eq!(count(&base).await, 2);
    assert_eq!(after(&base, "/loop").await, 1, "after a timeout");
    assert_eq!(retired("timeout"), 1);
    assert_eq!(count(&base).await, 2);
    assert_eq!(
        after(&base, "/try-alloc").await,
        1,
        "after the memory limit refused a grow"
    );
    assert_eq!(retired("limit"), 1);
    assert_eq!(count(&base).await, 2);
    assert_eq!(
        after(&base, "/resources").await,
        1,
        "after the resource cap"
    );
    assert_eq!(count(&base).await, 2);
    // A client that leaves in the middle of a stream.
    settle().await;
    let response = reqwest::get(format!("{base}/stream")).await.unwrap();
    let mut body = response.bytes_stream();
    use futures::StreamExt as _;
    let first = body.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"chunk 0"), "{first:?}");
    drop(body);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(count(&base).await, 1, "after a stream its client left");
    assert_eq!(retired("abandoned"), 1);
    assert_eq!(count(&base).await, 2);
    // Every instance was counted: one per fresh start above, the rest reused.
    let instantiated = host_counter("sluice_host_instantiations_total", id, None);
    let reused = host_counter("sluice_host_instance_reuses_total", id, None);
    assert_eq!(instantiated, 6, "the first, then one after each retirement");
    assert_eq!(instantiated + reused, 17, "every request counted once");
}
