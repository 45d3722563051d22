//! The command line. Each subcommand loads the configuration, then calls into the library.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::{LogFormat, ProcessEnv, Settings};
use crate::shutdown::Shutdown;
use crate::{db, startup, status, telemetry};

/// Keeps WhatsApp conversations (TimelinesAI) in step with your CRMs through a Postgres job queue.
#[derive(Debug, Parser)]
#[command(name = "timelines-sync", version, about)]
pub struct Cli {
    /// Configuration file (default: $TIMELINES_SYNC_CONFIG, else config/timelines-sync.toml if it
    /// exists, else built-in defaults).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Log format; overrides [log].format.
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service: claim and execute jobs until SIGTERM or ctrl-c.
    Run,
    /// Apply database migrations and exit.
    Migrate,
    /// Print job counts by workspace, kind and state, and the oldest queued job's age.
    Status,
    /// Manage the embedded Postgres cluster (used when no database URL is configured).
    Db {
        /// start, stop or url.
        #[command(subcommand)]
        action: DbAction,
    },
    /// Serve the built-in TimelinesAI API simulator until ctrl-c (for trying things out and for
    /// tests of other tools).
    Simulate(SimulateArgs),
    /// See the whole flow: embedded Postgres + built-in simulator, a batch of varied jobs, live
    /// progress, a summary. Never talks to the real API.
    Demo,
    /// Poll one source now (whatever its schedule) and print what it did. With --dry-run,
    /// print the jobs it would create and write nothing.
    Poll(PollArgs),
    /// Read a source from a past date (not only since its cursor) and create the jobs its rules
    /// give; events already handled are not repeated. The cursor never moves back.
    Backfill(BackfillArgs),
    /// Manage the workspaces' webhook subscriptions to this service's receiver.
    Webhooks {
        /// sync or list.
        #[command(subcommand)]
        action: WebhooksAction,
    },
    /// Run a benchmark and print its figures.
    Bench {
        /// Which benchmark.
        #[command(subcommand)]
        which: crate::bench::BenchCommand,
    },
}

/// `poll` options.
#[derive(Debug, clap::Args)]
pub struct PollArgs {
    /// The source (`[sources.NAME]`).
    pub source: String,
    /// Read and evaluate everything, write nothing, print the jobs it would create.
    #[arg(long)]
    pub dry_run: bool,
}

/// `backfill` options.
#[derive(Debug, clap::Args)]
pub struct BackfillArgs {
    /// The source (`[sources.NAME]`).
    pub source: String,
    /// Start of the window: an RFC 3339 time or a date (YYYY-MM-DD, midnight UTC).
    #[arg(long, value_parser = parse_since)]
    pub since: chrono::DateTime<chrono::Utc>,
    /// Read and evaluate everything, write nothing, print the jobs it would create.
    #[arg(long)]
    pub dry_run: bool,
}

fn parse_since(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc())
        .map_err(|_| format!("{text:?} is neither an RFC 3339 time nor a date like 2026-01-31"))
}

/// `simulate` options.
#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 8089)]
    pub port: u16,
    /// Bearer token the simulator accepts.
    #[arg(long, default_value = crate::simulator::DEFAULT_TOKEN)]
    pub token: String,
    /// Requests accepted per window.
    #[arg(long, default_value_t = 50)]
    pub rate_limit: u32,
    /// Length of the sliding rate-limit window, in seconds.
    #[arg(long, default_value_t = 60.0)]
    pub rate_window_seconds: f64,
    /// Answer throttling with 403 instead of 429.
    #[arg(long)]
    pub throttle_as_403: bool,
    /// Fraction of requests answered with a 5xx (no side effect).
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Fraction of sends whose connection drops after the message was created.
    #[arg(long, default_value_t = 0.0)]
    pub drop_rate: f64,
}

/// `webhooks` actions.
#[derive(Debug, Subcommand)]
pub enum WebhooksAction {
    /// Create or update each workspace's subscriptions ([webhooks] events, and those inbound
    /// rules need) to point at [webhooks] public_url + the secret path; delete this service's
    /// subscriptions no longer wanted. Idempotent; never exceeds the workspace's limit.
    Sync,
    /// List each workspace's subscriptions (secrets hidden).
    List,
}

/// `db` actions.
#[derive(Debug, Subcommand)]
pub enum DbAction {
    /// Start the embedded cluster in the background (it keeps running; `run` reuses it).
    Start,
    /// Stop the embedded cluster.
    Stop,
    /// Print the embedded cluster's connection URL (it holds the password).
    Url,
}

/// Runs the parsed command line.
pub fn execute(cli: Cli) -> anyhow::Result<()> {
    let (settings, source) = Settings::load(cli.config.as_deref(), &ProcessEnv)?;
    telemetry::init(cli.log_format.unwrap_or(settings.log.format));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Run => {
                tracing::info!(config = %source, version = env!("CARGO_PKG_VERSION"), "timelines-sync starting");
                let shutdown = Shutdown::new();
                shutdown.on_signals(std::time::Duration::from_secs(settings.dispatcher.shutdown_grace_seconds));
                startup::run(settings, shutdown).await
            }
            Command::Migrate => {
                let (pool, embedded) = startup::open_database(&settings).await?;
                println!("migrations applied");
                close(pool, embedded).await
            }
            Command::Status => {
                let (pool, embedded) = startup::open_database(&settings).await?;
                print!("{}", status::report(&pool).await?.render());
                close(pool, embedded).await
            }
            Command::Db { action } => db_command(&settings, action).await,
            Command::Simulate(args) => simulate(args).await,
            Command::Demo => crate::demo::run(&settings).await,
            Command::Poll(args) => {
                poll(&settings, &args.source, crate::sources::engine::Mode::Manual, args.dry_run).await
            }
            Command::Backfill(args) => {
                let mode = crate::sources::engine::Mode::Backfill { since: args.since };
                poll(&settings, &args.source, mode, args.dry_run).await
            }
            Command::Webhooks { action } => webhooks(&settings, action).await,
            Command::Bench { which } => crate::bench::run(which, &settings).await,
        }
    })
}

/// `poll` and `backfill`: one run of a source, its report printed.
async fn poll(
    settings: &Settings,
    source: &str,
    mode: crate::sources::engine::Mode,
    dry_run: bool,
) -> anyhow::Result<()> {
    let catalog = std::sync::Arc::new(crate::sources::Catalog::build(settings, &ProcessEnv)?);
    if !catalog.sources.contains_key(source) {
        let known: Vec<&str> = catalog.sources.keys().map(String::as_str).collect();
        anyhow::bail!(
            "no source called {source:?} in the configuration (configured: {})",
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        );
    }
    let (pool, embedded) = startup::open_database(settings).await?;
    // A dry run leaves the workspaces table as it is (a test config must not rewrite it).
    if !dry_run {
        crate::db::sync_workspaces(&pool, settings, &settings.simulated_workspaces()).await?;
    }
    let poller =
        crate::sources::engine::Poller::new(pool.clone(), catalog, crate::queue::new_worker_id());
    let result = poller.run(source, mode, dry_run).await;
    close(pool, embedded).await?;
    let report = result?;
    print!("{}", crate::sources::report::render(&report, dry_run));
    Ok(())
}

/// `webhooks sync|list`, printed.
async fn webhooks(settings: &Settings, action: WebhooksAction) -> anyhow::Result<()> {
    use crate::webhooks::subscriptions;
    let (pool, embedded) = startup::open_database(settings).await?;
    let result = async {
        let clients = subscriptions::clients(settings, &pool)?;
        match action {
            WebhooksAction::Sync => subscriptions::sync(settings, &ProcessEnv, &clients).await,
            WebhooksAction::List => subscriptions::list(settings, &ProcessEnv, &clients).await,
        }
    }
    .await;
    close(pool, embedded).await?;
    print!("{}", result?);
    Ok(())
}

async fn close(pool: sqlx::PgPool, embedded: Option<startup::Embedded>) -> anyhow::Result<()> {
    pool.close().await;
    if let Some(embedded) = embedded {
        embedded.stop().await?;
    }
    Ok(())
}

async fn db_command(settings: &Settings, action: DbAction) -> anyhow::Result<()> {
    if settings.database.url.is_some() {
        anyhow::bail!(
            "a database URL is configured (DATABASE_URL or [database].url): the embedded cluster is not used"
        );
    }
    let data_dir = settings.database.data_dir.clone();
    match action {
        DbAction::Start => {
            let (embedded, url) = startup::Embedded::start(settings).await?;
            let pool = db::connect(url.expose(), 2).await?;
            db::migrate(&pool).await?;
            db::sync_workspaces(&pool, settings, &settings.simulated_workspaces()).await?;
            pool.close().await;
            drop(embedded); // leave it running
            println!(
                "embedded Postgres is running; connect with:\n{}",
                url.expose()
            );
        }
        DbAction::Stop => {
            let stopped = tokio::task::spawn_blocking(move || -> anyhow::Result<bool> {
                Ok(startup::open_cluster(&data_dir)?.stop()?)
            })
            .await??;
            println!(
                "{}",
                if stopped {
                    "embedded Postgres stopped"
                } else {
                    "embedded Postgres was not running"
                }
            );
        }
        DbAction::Url => {
            let (cluster, port) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
                let cluster = startup::open_cluster(&data_dir)?;
                let port = cluster.running_port()?;
                Ok((cluster, port))
            })
            .await??;
            match port {
                Some(port) => println!("{}", cluster.url(port, "postgres")),
                None => anyhow::bail!(
                    "the embedded cluster is not running: start it with `timelines-sync db start`"
                ),
            }
        }
    }
    Ok(())
}

async fn simulate(args: SimulateArgs) -> anyhow::Result<()> {
    use crate::simulator::{Faults, Simulator, SimulatorConfig};
    anyhow::ensure!(
        args.rate_window_seconds > 0.0 && args.rate_window_seconds.is_finite(),
        "--rate-window-seconds must be a positive number"
    );
    let config = SimulatorConfig {
        tokens: vec![args.token],
        rate_limit: args.rate_limit,
        rate_window: std::time::Duration::from_secs_f64(args.rate_window_seconds),
        throttle_as_403: args.throttle_as_403,
        faults: Faults {
            error_rate: args.error_rate,
            drop_after_side_effect_rate: args.drop_rate,
            ..Faults::default()
        },
        ..SimulatorConfig::default()
    };
    let sim = Simulator::start(
        config,
        std::net::SocketAddr::from(([127, 0, 0, 1], args.port)),
    )
    .await?;
    println!(
        "TimelinesAI simulator listening; base URL {}",
        sim.base_url()
    );
    println!(
        "inspect: http://{}/_sim/stats and /_sim/messages; ctrl-c stops it",
        sim.addr()
    );
    tokio::signal::ctrl_c().await?;
    sim.shutdown().await;
    Ok(())
}
