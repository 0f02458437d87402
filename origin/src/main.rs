use anyhow::{Context, Result};
use clap::Parser;
use sluice_origin::app::{AppState, app};
use sluice_origin::config::Config;
use std::path::PathBuf;
use std::time::Duration;

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
}

fn main() {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,tower_http=warn".into());
    if cli.log_json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
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
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("binding {}", config.server.listen))?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, models = config.models.len(), "sluice-origin listening");
        println!("listening on http://{addr}");
        let router = app(
            AppState::from_config(&config),
            Duration::from_secs(config.server.request_timeout_secs),
        );
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown_signal())
            .await?;
        tracing::info!("stopped");
        Ok(())
    })
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
