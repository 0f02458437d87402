use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use sluice_host::admin::AdminState;
use sluice_host::app::{self, Limits};
use sluice_host::manifest::Loaded;
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

fn load(args: &AppArgs) -> Result<app::App> {
    let loaded = Loaded::read(&args.manifest)?;
    let runtime = match &args.runtime_config {
        Some(path) => RuntimeConfig::read(path)?,
        None => RuntimeConfig::default(),
    };
    let limits = Limits {
        max_concurrent_requests: args.max_concurrent_requests,
        max_memory_bytes: args.max_memory_mib << 20,
        request_timeout: Duration::from_secs(args.request_timeout_secs),
        kv_memory_max_bytes: args.kv_memory_mib << 20,
        max_resources: args.max_resources,
    };
    app::load(&loaded, &runtime, limits, &|name| std::env::var(name).ok())
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
