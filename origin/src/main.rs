use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use sluice_core::identity::Tier;
use sluice_origin::app::{AppState, app};
use sluice_origin::budgets::handlers::{THIRTY_DAYS_MS, standing_json};
use sluice_origin::budgets::microdollars;
use sluice_origin::budgets::period::{Period, parse_instant};
use sluice_origin::budgets::report::{self, Filter, GroupBy};
use sluice_origin::budgets::store::{Budget, BudgetStore, Scope};
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
    /// Manage teams and their members (the admin API does the same over HTTP).
    #[command(subcommand)]
    Teams(TeamsCommand),
    /// Manage USD budgets on keys, users and teams.
    #[command(subcommand)]
    Budgets(BudgetsCommand),
    /// Print a spend report from the usage records.
    Spend(SpendArgs),
    /// Run queued jobs without the HTTP API (scale these on queue depth).
    Worker(WorkerArgs),
    /// Serve the simulated provider as a stand-alone OpenAI-compatible upstream
    /// (for benchmarks and fallback drills); needs no configuration file.
    Simulate(SimulateArgs),
    /// List each configured deployment's prices and where they come from
    /// (set on the deployment, the model catalog, or none).
    Prices {
        /// Exit with status 1 when a deployment has no price.
        #[arg(long)]
        strict: bool,
    },
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
        /// The key's own token limit at the edge (`N/period[;burst=B]`).
        #[arg(long)]
        token_limit: Option<String>,
    },
    /// List keys (never the keys themselves), as JSON.
    List {
        #[arg(long)]
        subject: Option<String>,
    },
    /// Revoke a key by id.
    Revoke { id: String },
}

#[derive(Subcommand)]
enum TeamsCommand {
    /// Create a team (or rename it).
    Create {
        id: String,
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List teams and their members, as JSON.
    List,
    /// Delete a team and its budget; its members stay, teamless.
    Delete {
        id: String,
    },
    /// Put a user in the team (out of any other).
    AddMember {
        id: String,
        subject: String,
    },
    RemoveMember {
        id: String,
        subject: String,
    },
}

#[derive(Subcommand)]
enum BudgetsCommand {
    /// Create or replace the budget of a key, user or team.
    Set {
        #[arg(value_parser = parse_scope)]
        scope: Scope,
        id: String,
        /// day, week, month or total.
        #[arg(long, value_parser = parse_period)]
        period: Period,
        #[arg(long)]
        limit_usd: f64,
    },
    /// List budgets with their spend in the current period, as JSON.
    List,
    Delete {
        #[arg(value_parser = parse_scope)]
        scope: Scope,
        id: String,
    },
}

#[derive(clap::Args)]
struct SpendArgs {
    /// key, user, team, model or day.
    #[arg(long, default_value = "model", value_parser = parse_group_by)]
    group_by: GroupBy,
    /// RFC 3339, YYYY-MM-DD or Unix milliseconds (default: 30 days before `to`).
    #[arg(long)]
    from: Option<String>,
    /// Default: now.
    #[arg(long)]
    to: Option<String>,
    #[arg(long)]
    subject: Option<String>,
    #[arg(long)]
    team: Option<String>,
    /// Print CSV instead of JSON.
    #[arg(long)]
    csv: bool,
    /// With `--csv`: the daily series rather than the totals per group.
    #[arg(long)]
    series: bool,
}

fn parse_scope(s: &str) -> Result<Scope, String> {
    Scope::parse(s).ok_or_else(|| format!("`{s}` is not key, user or team"))
}

fn parse_period(s: &str) -> Result<Period, String> {
    Period::parse(s).ok_or_else(|| format!("`{s}` is not day, week, month or total"))
}

fn parse_group_by(s: &str) -> Result<GroupBy, String> {
    serde_json::from_value(serde_json::Value::String(s.into()))
        .map_err(|_| format!("`{s}` is not key, user, team, model or day"))
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
    if let Some(Command::Prices { strict }) = command {
        let (report, unpriced) = sluice_origin::routing::price_report(&config);
        print!("{report}");
        if strict && unpriced > 0 {
            anyhow::bail!("{unpriced} deployment(s) have no price");
        }
        return Ok(());
    }
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
    let command = match command {
        Some(Command::Keys(command)) => return runtime.block_on(keys(&config, command)),
        Some(Command::Teams(command)) => return runtime.block_on(teams(&config, command)),
        Some(Command::Budgets(command)) => return runtime.block_on(budgets(&config, command)),
        Some(Command::Spend(args)) => return runtime.block_on(spend(&config, args)),
        other => other,
    };
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
        // Releases reservations of calls whose process died, and applies usage retention.
        let retention = (config.budgets.usage_retention_days > 0)
            .then(|| Duration::from_secs(config.budgets.usage_retention_days * 86_400));
        let sweeper = tokio::spawn(state.budgets.clone().sweep_forever(retention));
        // Expired tool-loop thinking (`[reasoning] keep_secs`).
        let reasoning_sweeper = state
            .generation
            .reasoning()
            .cloned()
            .map(|store| tokio::spawn(store.sweep_forever()));
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
            let listener = sluice_origin::http::connections::CountedListener(listener);
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
        sweeper.abort();
        if let Some(reasoning_sweeper) = reasoning_sweeper {
            reasoning_sweeper.abort();
        }
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
        panic_on: None,
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
            token_limit,
        } => {
            if let Some(limit) = &token_limit {
                sluice_core::rate_policy::PolicySpec::parse(limit)?;
            }
            serde_json::to_string_pretty(
                &store
                    .create(NewKey {
                        subject: &subject,
                        tier,
                        name: &name,
                        scopes: &[],
                        token_limit: token_limit.as_deref(),
                    })
                    .await?,
            )?
        }
        KeysCommand::List { subject } => {
            serde_json::to_string_pretty(&store.list(subject.as_deref()).await?)?
        }
        KeysCommand::Revoke { id } => serde_json::to_string_pretty(&store.revoke(&id).await?)?,
    };
    println!("{out}");
    Ok(())
}

async fn budget_store(config: &Config) -> Result<BudgetStore> {
    let db = sluice_origin::db::connect(&config.database)
        .await
        .context("opening the database")?;
    let postgres = sluice_origin::db::is_postgres(&config.database.url);
    Ok(BudgetStore::new(db, postgres))
}

async fn teams(config: &Config, command: TeamsCommand) -> Result<()> {
    let store = budget_store(config).await?;
    let out = match command {
        TeamsCommand::Create { id, name } => {
            serde_json::to_string_pretty(&store.create_team(&id, &name).await?)?
        }
        TeamsCommand::List => serde_json::to_string_pretty(&store.teams().await?)?,
        TeamsCommand::Delete { id } => {
            store.delete_team(&id).await?;
            format!("deleted team {id}")
        }
        TeamsCommand::AddMember { id, subject } => {
            store.add_member(&id, &subject).await?;
            serde_json::to_string_pretty(&store.team(&id).await?)?
        }
        TeamsCommand::RemoveMember { id, subject } => {
            store.remove_member(&id, &subject).await?;
            serde_json::to_string_pretty(&store.team(&id).await?)?
        }
    };
    println!("{out}");
    Ok(())
}

async fn budgets(config: &Config, command: BudgetsCommand) -> Result<()> {
    let store = budget_store(config).await?;
    let now = sluice_origin::clock::now_ms();
    let shown = match command {
        BudgetsCommand::Set {
            scope,
            id,
            period,
            limit_usd,
        } => {
            anyhow::ensure!(
                limit_usd.is_finite() && (0.0..=1e12).contains(&limit_usd),
                "--limit-usd must be from 0 to 1e12"
            );
            let budget = Budget {
                scope,
                scope_id: id,
                period,
                limit_microdollars: microdollars(limit_usd),
            };
            store.set_budget(&budget).await?;
            store.standings(&[budget], now).await?
        }
        BudgetsCommand::List => store.standings(&store.budgets().await?, now).await?,
        BudgetsCommand::Delete { scope, id } => {
            store.delete_budget(scope, &id).await?;
            println!("deleted the {} budget of {id}", scope.as_str());
            return Ok(());
        }
    };
    let shown: Vec<_> = shown.iter().map(standing_json).collect();
    println!("{}", serde_json::to_string_pretty(&shown)?);
    Ok(())
}

async fn spend(config: &Config, args: SpendArgs) -> Result<()> {
    let store = budget_store(config).await?;
    let instant = |value: &Option<String>, default: i64| match value {
        None => Ok(default),
        Some(v) => parse_instant(v)
            .with_context(|| format!("`{v}` is not RFC 3339, YYYY-MM-DD or Unix milliseconds")),
    };
    let to = instant(&args.to, sluice_origin::clock::now_ms() + 1)?;
    let filter = Filter {
        from_ms: instant(&args.from, to - THIRTY_DAYS_MS)?,
        to_ms: to,
        subject: args.subject,
        team_id: args.team,
        ..Filter::default()
    };
    let report = report::report(store.db(), args.group_by, &filter).await?;
    if args.csv {
        print!("{}", report::csv(&report, args.series));
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
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
