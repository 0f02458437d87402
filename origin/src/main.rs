use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use sluice_core::identity::Tier;
use sluice_origin::app::{AppState, app};
use sluice_origin::config::{Config, SimulatedConfig};
use sluice_origin::keys::{KeyStore, NewKey};
use sluice_origin::ops;
use sluice_origin::queue::worker::{self, WorkerSettings};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::watch;

/// The Sluice origin service.
#[derive(Parser)]
#[command(name = "sluice-origin", version)]
struct Cli {
    /// TOML configuration; `SLUICE_*` environment variables override it.
    #[arg(short, long, env = "SLUICE_CONFIG")]
    config: Option<PathBuf>,
    /// Validate the configuration and exit.
    #[arg(long)]
    check: bool,
    /// Log as JSON lines.
    #[arg(long, env = "SLUICE_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Manage API keys in the configured database (the admin API does the same
    /// over HTTP; this creates the first admin key).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Run queued jobs without the HTTP API (scale these on queue depth).
    Worker(WorkerArgs),
    /// Serve the simulated provider as a stand-alone OpenAI-compatible upstream
    /// (for benchmarks and fallback drills); needs no configuration file.
    Simulate(SimulateArgs),
}

#[derive(clap::Args)]
struct WorkerArgs {
    /// Jobs run at once (default: `[queue] workers`).
    #[arg(long)]
    concurrency: Option<usize>,
}

#[derive(clap::Args)]
struct SimulateArgs {
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: std::net::SocketAddr,
    #[arg(long, default_value_t = 0)]
    time_to_first_token_ms: u64,
    /// 0 = the whole answer at once.
    #[arg(long, default_value_t = 0)]
    tokens_per_second: u64,
    /// Share of calls (0-1) answered 503.
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Share of calls (0-1) answered 429 with `Retry-After`.
    #[arg(long, default_value_t = 0.0)]
    rate_limit_rate: f64,
    #[arg(long, default_value_t = 1)]
    retry_after_secs: u64,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key and print it (shown only this once).
    Create {
        #[arg(long)]
        subject: String,
        /// free, premium or admin; sets the subject's tier.
        #[arg(long, value_parser = parse_tier)]
        tier: Option<Tier>,
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List keys (never the keys themselves), as JSON.
    List {
        #[arg(long)]
        subject: Option<String>,
    },
    /// Revoke a key by id.
    Revoke { id: String },
}

fn parse_tier(s: &str) -> Result<Tier, String> {
    Tier::parse(s).ok_or_else(|| format!("`{s}` is not free, premium or admin"))
}

fn main() {
    let cli = Cli::parse();
    let telemetry = sluice_telemetry::init(cli.log_json, "info,tower_http=warn", "sluice-origin");
    let result = run(cli);
    // Flushes spans still buffered; `exit` below would skip it.
    drop(telemetry);
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let command = match cli.command {
        Some(Command::Simulate(args)) => return simulate(args),
        other => other,
    };
    let config = Config::load(cli.config.as_deref()).context("invalid configuration")?;
    if cli.check {
        println!(
            "configuration ok: listen {}, {} model(s)",
            config.server.listen,
            config.models.len()
        );
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if let Some(Command::Keys(command)) = command {
        return runtime.block_on(keys(&config, command));
    }
    let worker_args = match command {
        Some(Command::Worker(args)) => Some(args),
        _ => None,
    };
    runtime.block_on(async move {
        let db = sluice_origin::db::connect(&config.database)
            .await
            .context("opening the database")?;
        let state = AppState::new(&config, db)
            .await
            .context("starting the origin")?;
        let (stop, stopped) = watch::channel(false);
        let runner = state.runner();
        let mut settings = WorkerSettings {
            concurrency: config.queue.workers,
            poll_interval: Duration::from_millis(config.queue.poll_interval_ms),
            drain_timeout: Duration::from_secs(config.queue.drain_timeout_secs),
            cleanup_interval: Duration::from_secs(config.queue.cleanup_interval_secs),
        };
        // Workers and API processes alike expose metrics and probes.
        let admin = bind(config.server.admin_listen).await?;
        println!("admin on http://{}", admin.local_addr()?);
        let sampler = ops::spawn_sampler(state.ops.clone());
        let admin = tokio::spawn(
            axum::serve(admin, ops::admin_app(state.ops.clone()))
                .with_graceful_shutdown(stopping(stopped.clone()))
                .into_future(),
        );
        if let Some(args) = worker_args {
            settings.concurrency = args.concurrency.unwrap_or(settings.concurrency).max(1);
            tracing::info!(
                concurrency = settings.concurrency,
                "sluice-origin worker running"
            );
            println!("worker running {} at once", settings.concurrency);
            let workers = tokio::spawn(worker::run(runner, settings, stopped));
            shutdown_signal().await;
            tracing::info!("stopping: finishing or releasing running jobs");
            let _ = stop.send(true);
            workers.await?;
        } else {
            let listener = bind(config.server.listen).await?;
            let addr = listener.local_addr()?;
            tracing::info!(%addr, models = config.models.len(), workers = settings.concurrency,
                "sluice-origin listening");
            println!("listening on http://{addr}");
            let workers = tokio::spawn(worker::run(runner, settings, stopped.clone()));
            let router = app(
                state.clone(),
                Duration::from_secs(config.server.request_timeout_secs),
            );
            // New connections stop at the signal; requests in flight finish.
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    shutdown_signal().await;
                    tracing::info!("stopping: draining requests and jobs");
                    let _ = stop.send(true);
                })
                .await?;
            workers.await?;
        }
        sampler.abort();
        admin.await??;
        // Usage records still buffered are written before the process ends.
        state.usage.flush().await;
        tracing::info!("stopped");
        Ok(())
    })
}

async fn bind(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))
}

async fn stopping(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

fn simulate(args: SimulateArgs) -> Result<()> {
    let config = SimulatedConfig {
        time_to_first_token_ms: args.time_to_first_token_ms,
        tokens_per_second: args.tokens_per_second,
        error_rate: args.error_rate,
        rate_limit_rate: args.rate_limit_rate,
        retry_after_secs: args.retry_after_secs,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        println!(
            "simulated provider listening on http://{}",
            listener.local_addr()?
        );
        axum::serve(listener, sluice_origin::simulator::app(config))
            .with_graceful_shutdown(shutdown_signal())
            .await?;
        Ok(())
    })
}

async fn keys(config: &Config, command: KeysCommand) -> Result<()> {
    let db = sluice_origin::db::connect(&config.database)
        .await
        .context("opening the database")?;
    let store = KeyStore::new(db);
    let out = match command {
        KeysCommand::Create {
            subject,
            tier,
            name,
        } => serde_json::to_string_pretty(
            &store
                .create(NewKey {
                    subject: &subject,
                    tier,
                    name: &name,
                    scopes: &[],
                })
                .await?,
        )?,
        KeysCommand::List { subject } => {
            serde_json::to_string_pretty(&store.list(subject.as_deref()).await?)?
        }
        KeysCommand::Revoke { id } => serde_json::to_string_pretty(&store.revoke(&id).await?)?,
    };
    println!("{out}");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return ctrl_c.await.unwrap_or(()),
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
}
