use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use sluice_host::admin::AdminState;
use sluice_host::app::{self, Limits};
use sluice_host::manifest::Loaded;
use sluice_host::reuse::ReusePolicy;
use sluice_host::runtime_config::RuntimeConfig;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Serves a Spin application locally (like `spin up`).
#[derive(Parser)]
#[command(name = "sluice-host", version)]
struct Cli {
    /// Log as JSON lines.
    #[arg(long, global = true, env = "SLUICE_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load, compose and serve the application.
    Up(UpArgs),
    /// Check the manifest and runtime config, compose and compile, then exit.
    Check(AppArgs),
    /// Compose and compile every component into the compilation cache, so the
    /// next start (a container's, say) loads them instead of compiling.
    Compile(AppArgs),
}

#[derive(clap::Args)]
struct AppArgs {
    /// The application manifest.
    #[arg(short = 'f', long = "from", default_value = "spin.toml")]
    manifest: PathBuf,
    /// Spin-format runtime configuration (key-value stores).
    #[arg(long = "runtime-config-file")]
    runtime_config: Option<PathBuf>,
    /// Requests handled at once; more wait for a slot.
    #[arg(long, default_value_t = 256, env = "SLUICE_HOST_MAX_CONCURRENT")]
    max_concurrent_requests: u32,
    /// Linear memory one request's instances may grow to, in MiB.
    #[arg(long, default_value_t = 128)]
    max_memory_mib: usize,
    /// Deadline for one request, guest CPU and waiting included, in seconds.
    #[arg(long, default_value_t = 120)]
    request_timeout_secs: u64,
    /// Bound of each in-memory key-value store, in MiB; least recently used
    /// entries are evicted beyond it. Redis stores are bounded by Redis itself.
    #[arg(long, default_value_t = 64, env = "SLUICE_HOST_KV_MEMORY_MIB")]
    kv_memory_mib: u64,
    /// Host resources (streams, header fields, pollables) one request may hold at once.
    #[arg(long, default_value_t = 10_000)]
    max_resources: usize,
    /// Requests one instance serves before it is dropped: above 1, an
    /// instance that finished a request cleanly serves the next (named as in
    /// `wasmtime serve`); 1 instantiates for every request, as Spin serves
    /// WASI 0.2.
    #[arg(long, default_value_t = 128, env = "SLUICE_HOST_MAX_INSTANCE_REUSE_COUNT",
        value_parser = clap::value_parser!(u32).range(1..))]
    max_instance_reuse_count: u32,
    /// How long an instance may wait for its next request (`500ms`, `1s`, `2m`).
    #[arg(long, default_value = "1s", env = "SLUICE_HOST_IDLE_INSTANCE_TIMEOUT",
        value_parser = parse_duration)]
    idle_instance_timeout: Duration,
    /// Where compiled components are kept across starts (default:
    /// `$XDG_CACHE_HOME/sluice-host`, else `~/.cache/sluice-host`). Keep it
    /// writable by this user only: what is in it is loaded as machine code.
    #[arg(long, env = "SLUICE_HOST_COMPILE_CACHE")]
    compile_cache: Option<PathBuf>,
    /// Compile every component at every start (wins over --compile-cache).
    #[arg(long)]
    no_compile_cache: bool,
}

impl AppArgs {
    /// The compilation cache's directory, unless it is off.
    fn compile_cache(&self) -> Option<PathBuf> {
        if self.no_compile_cache {
            return None;
        }
        self.compile_cache.clone().or_else(|| {
            let base = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
            Some(base.join("sluice-host"))
        })
    }
}

#[derive(clap::Args)]
struct UpArgs {
    #[command(flatten)]
    app: AppArgs,
    #[arg(long, default_value = "127.0.0.1:3000", env = "SLUICE_HOST_LISTEN")]
    listen: SocketAddr,
    /// `/metrics`, `/health` and `/ready` of the host itself (no
    /// authentication: keep it on loopback or a private network).
    #[arg(
        long,
        default_value = "127.0.0.1:3001",
        env = "SLUICE_HOST_ADMIN_LISTEN"
    )]
    admin_listen: SocketAddr,
}

fn main() {
    let cli = Cli::parse();
    let telemetry = sluice_telemetry::init(cli.log_json, "info", "sluice-host");
    let result = run(cli);
    // Flushes spans still buffered; `exit` below would skip it.
    drop(telemetry);
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn limits(args: &AppArgs) -> Limits {
    Limits {
        max_concurrent_requests: args.max_concurrent_requests,
        max_memory_bytes: args.max_memory_mib << 20,
        request_timeout: Duration::from_secs(args.request_timeout_secs),
        kv_memory_max_bytes: args.kv_memory_mib << 20,
        max_resources: args.max_resources,
        reuse: ReusePolicy {
            max_uses: args.max_instance_reuse_count,
            idle_timeout: args.idle_instance_timeout,
        },
    }
}

fn load(args: &AppArgs) -> Result<app::App> {
    let loaded = Loaded::read(&args.manifest)?;
    let runtime = match &args.runtime_config {
        Some(path) => RuntimeConfig::read(path)?,
        None => RuntimeConfig::default(),
    };
    let cache = args.compile_cache();
    let loading = std::time::Instant::now();
    let app = app::load(&loaded, &runtime, limits(args), cache.as_deref(), &|name| {
        std::env::var(name).ok()
    })?;
    let (hits, misses) = app
        .compile_cache
        .as_ref()
        .map_or((0, 0), |c| (c.hits(), c.misses()));
    tracing::info!(event = "components_loaded", components = app.components.len(),
        compile_cache = %cache.as_deref().map_or("off".into(), |p| p.display().to_string()),
        cache_hits = hits, cache_misses = misses,
        elapsed_ms = loading.elapsed().as_millis() as u64, "components composed, compiled and linked");
    Ok(app)
}

fn run(cli: Cli) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // Redis stores are created while loading and belong to this runtime.
    let _entered = runtime.enter();
    match cli.command {
        Command::Check(args) => {
            let app = load(&args)?;
            println!(
                "ok: {} component(s), {} route(s)",
                app.components.len(),
                app.routes.len()
            );
            Ok(())
        }
        Command::Compile(args) => {
            let Some(dir) = args.compile_cache() else {
                anyhow::bail!("there is no compilation cache to fill: give --compile-cache");
            };
            let loaded = Loaded::read(&args.manifest)?;
            let cache = app::precompile(&loaded, &limits(&args), &dir)?;
            println!(
                "{} component(s) in {} ({} compiled, {} already there)",
                cache.hits() + cache.misses(),
                cache.dir().display(),
                cache.misses(),
                cache.hits()
            );
            Ok(())
        }
        Command::Up(args) => {
            let app = load(&args.app)?;
            runtime.block_on(async move {
                let started = std::time::Instant::now();
                let listener = bind(args.listen).await?;
                let admin_listener = bind(args.admin_listen).await?;
                let addr = listener.local_addr()?;
                for route in &app.routes {
                    let suffix = if route.prefix { "/..." } else { "" };
                    tracing::info!(route = %format!("{}{suffix}", route.path.trim_end_matches('/')), component = %app.components[route.component].config.id, "serving");
                }
                tracing::info!(%addr, admin = %admin_listener.local_addr()?, "sluice-host listening");
                println!("listening on http://{addr}");
                println!("admin on http://{}", admin_listener.local_addr()?);
                sluice_host::admin::register_metrics(
                    &app.components.iter().map(|c| c.config.id.clone()).collect::<Vec<_>>(),
                );
                if let Some(cache) = &app.compile_cache {
                    metrics::counter!("sluice_host_compile_cache_hits_total")
                        .absolute(cache.hits());
                    metrics::counter!("sluice_host_compile_cache_misses_total")
                        .absolute(cache.misses());
                }
                let admin_state = Arc::new(AdminState {
                    stores: app.stores.clone(),
                    components: app.components.len(),
                    started,
                });
                let (stop, stopped) = tokio::sync::watch::channel(false);
                let admin = tokio::spawn(sluice_host::admin::serve(
                    admin_state,
                    admin_listener,
                    async move {
                        let mut stopped = stopped;
                        let _ = stopped.wait_for(|s| *s).await;
                    },
                ));
                // Probes and scrapes keep working while requests drain.
                let served = sluice_host::server::serve(app, listener, shutdown_signal()).await;
                let _ = stop.send(true);
                let _ = admin.await;
                tracing::info!("stopped");
                served
            })
        }
    }
}

/// `500ms`, `1s`, `2m` or plain seconds. (Three units: not worth a crate.)
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a duration such as 500ms, 1s or 2m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("`{text}`: the unit must be ms, s or m")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("`{text}`: {e}"))
}

async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await.unwrap_or(());
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_read_as_spin_and_wasmtime_write_them() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        for bad in ["", "s", "1h", "-1s", "1 sec", "nan"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
