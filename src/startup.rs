//! Wires configuration, database and loops into the running service.

use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;

use crate::apis::Apis;
use crate::config::{Secret, Settings};
use crate::dispatcher::Dispatcher;
use crate::dispatcher::request_log::RequestLog;
use crate::maintenance::{Pruner, PrunerConfig, QuotaRefresher, Rescuer, RescuerConfig};
use crate::pg::{Cluster, ClusterOptions};
use crate::queue::{Worker, WorkerConfig};
use crate::shutdown::Shutdown;
use crate::simulator::SimulatorConfig;
use crate::{db, pg};

/// The embedded cluster, when the service uses one.
pub struct Embedded {
    cluster: Cluster,
    /// Whether this process started it (and so stops it); false when it was already running
    /// (`timelines-sync db start`, or another instance).
    started_here: bool,
}

impl Embedded {
    /// Opens (initialising on first use) the cluster under `data_dir` and starts it unless it is
    /// already running. Returns the cluster and its URL.
    pub async fn start(settings: &Settings) -> anyhow::Result<(Self, Secret)> {
        let data_dir = settings.database.data_dir.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<(Self, Secret)> {
            let cluster = open_cluster(&data_dir)?;
            let (port, started_here) = match cluster.running_port()? {
                Some(port) => (port, false),
                None => (cluster.start()?, true),
            };
            tracing::info!(
                pgdata = %cluster.pgdata().display(), port, reused = !started_here,
                "using the embedded Postgres cluster"
            );
            let url = Secret::new(cluster.url(port, "postgres"));
            Ok((
                Self {
                    cluster,
                    started_here,
                },
                url,
            ))
        })
        .await?
    }

    /// Stops the cluster if this process started it.
    pub async fn stop(self) -> anyhow::Result<()> {
        if !self.started_here {
            return Ok(());
        }
        tokio::task::spawn_blocking(move || self.cluster.stop()).await??;
        tracing::info!("embedded Postgres cluster stopped");
        Ok(())
    }
}

/// Opens the embedded cluster under `data_dir` (running `initdb` the first time).
pub fn open_cluster(data_dir: &std::path::Path) -> anyhow::Result<Cluster> {
    let cluster = Cluster::open(
        data_dir,
        ClusterOptions {
            durable: true,
            settings: Vec::new(),
        },
    )?;
    Ok(cluster)
}

/// Connects to the configured database, or to the embedded cluster when none is configured;
/// migrates it and records the configured workspaces.
pub async fn open_database(settings: &Settings) -> anyhow::Result<(PgPool, Option<Embedded>)> {
    let (url, embedded) = match &settings.database.url {
        Some(url) => (url.clone(), None),
        None => {
            let (embedded, url) = Embedded::start(settings).await?;
            (url, Some(embedded))
        }
    };
    let pool = db::connect(url.expose(), settings.database.max_connections).await?;
    db::migrate(&pool).await?;
    db::sync_workspaces(&pool, settings, &settings.simulated_workspaces()).await?;
    Ok((pool, embedded))
}

/// Runs the service until `shutdown` completes: the dispatcher and the maintenance loops.
pub async fn run(settings: Settings, shutdown: Shutdown) -> anyhow::Result<()> {
    // Bound first: a taken port stops start-up before anything runs.
    let listener = match settings.http.enabled {
        true => Some(crate::http::bind(&settings.http).await?),
        false => None,
    };
    let (pool, embedded) = open_database(&settings).await?;
    let stop = shutdown.clone();
    let server = listener.map(|listener| {
        let router = crate::http::router(pool.clone()).merge(crate::webhooks::router(
            pool.clone(),
            &settings,
            &crate::config::ProcessEnv,
        ));
        tokio::spawn(crate::http::serve(listener, router, shutdown.clone()))
    });
    let result = run_on(
        pool.clone(),
        &settings,
        SimulatorConfig::default(),
        shutdown,
    )
    .await;
    // (run_on can also end by an error: the listener stops with it.)
    stop.begin();
    if let Some(server) = server {
        match server.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "the HTTP listener failed"),
            Err(error) => tracing::warn!(%error, "the HTTP listener panicked"),
        }
    }
    pool.close().await;
    if let Some(embedded) = embedded {
        embedded
            .stop()
            .await
            .context("failed to stop the embedded Postgres cluster")?;
    }
    result
}

/// Runs the service's loops on an open, migrated database until shutdown. Workspaces without a
/// token use a built-in simulator configured by `simulator`.
pub async fn run_on(
    pool: PgPool,
    settings: &Settings,
    simulator: SimulatorConfig,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    // Before anything records: metrics recorded before the recorder exists are lost.
    crate::telemetry::metrics::install();
    let upkeep = tokio::spawn(crate::telemetry::metrics::upkeep(shutdown.clone()));
    let (request_log, log_writer) = RequestLog::start(pool.clone());
    let apis = Apis::build(settings, &pool, Some(request_log), simulator).await?;
    let m = &settings.maintenance;
    let rescuer = Rescuer::new(
        pool.clone(),
        RescuerConfig {
            interval: Duration::from_secs(m.rescue_interval_seconds),
            ..RescuerConfig::default()
        },
    );
    let pruner = Pruner::new(
        pool.clone(),
        PrunerConfig {
            interval: Duration::from_secs(m.prune_interval_seconds),
            retention: Duration::from_secs(m.retention_hours * 3600),
            request_log_retention: Duration::from_secs(m.request_log_retention_hours * 3600),
            batch_size: m.prune_batch_size,
        },
    );
    let refresher = QuotaRefresher::new(
        pool.clone(),
        Duration::from_secs(m.quota_refresh_minutes * 60),
    );
    let catalog = std::sync::Arc::new(crate::sources::Catalog::build(
        settings,
        &crate::config::ProcessEnv,
    )?);
    let poller = std::sync::Arc::new(crate::sources::engine::Poller::new(
        pool.clone(),
        catalog.clone(),
        crate::queue::new_worker_id(),
    ));
    let scheduler = tokio::spawn(crate::sources::scheduler::run(poller, shutdown.clone()));
    let webhooks = tokio::spawn(
        crate::webhooks::processor(pool.clone(), settings, catalog.clone()).run(shutdown.clone()),
    );
    let refresher = tokio::spawn(refresher.run(shutdown.clone()));
    let rescuer = tokio::spawn(rescuer.run(shutdown.clone()));
    let pruner = tokio::spawn(pruner.run(shutdown.clone()));
    let dispatcher = Dispatcher::new(pool.clone(), apis.clients.clone());
    let worker = Worker::new(
        pool,
        WorkerConfig::from_settings(&settings.dispatcher),
        dispatcher,
    );
    let result = worker.run(shutdown.clone()).await.map(|_| ());
    let _ = tokio::join!(rescuer, pruner, refresher, scheduler, upkeep, webhooks);
    // The clients hold the request log's senders: drop them so the writer drains and ends.
    let Apis {
        clients, simulator, ..
    } = apis;
    drop(clients);
    if let Err(error) = log_writer.await {
        tracing::warn!(%error, "the request log writer failed");
    }
    if let Some(simulator) = simulator {
        simulator.shutdown().await;
    }
    result
}

/// Re-exported so the CLI can report a missing installation plainly.
pub use pg::PgError;
