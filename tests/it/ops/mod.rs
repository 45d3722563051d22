//! Operations: `/metrics` and the logs (format, spans, secrets). The service runs in-process
//! (`startup::run_on`) against the simulator over HTTP, its HTTP routes on a free port.

mod logs;
mod metrics;

use std::net::SocketAddr;
use std::time::Duration;

use sqlx::PgPool;
use timelines_sync::config::{Secret, Settings, WorkspaceSettings};
use timelines_sync::shutdown::Shutdown;
use timelines_sync::simulator::{Simulator, SimulatorConfig};

/// The service's loops (`run_on`) on `pool`, every workspace talking to `sim` with `token`.
pub struct Service {
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Service {
    /// Starts `run_on` with `default` and `workspace` configured against `sim` (the limiter
    /// out of the way unless the simulator throttles).
    pub async fn start(pool: &PgPool, sim: &Simulator, token: &str, workspace: &str) -> Self {
        let mut settings = Settings::default();
        for name in ["default", workspace] {
            let ws = settings
                .workspaces
                .entry(name.to_owned())
                .or_insert_with(WorkspaceSettings::default);
            ws.api_url = sim.base_url();
            ws.token = Some(Secret::new(token));
            ws.rate_limit_per_minute = 60_000;
        }
        settings.dispatcher.poll_interval_ms = 100;
        timelines_sync::db::sync_workspaces(pool, &settings, &[])
            .await
            .unwrap();
        let shutdown = Shutdown::new();
        let (pool, stop) = (pool.clone(), shutdown.clone());
        let task = tokio::spawn(async move {
            timelines_sync::startup::run_on(pool, &settings, SimulatorConfig::default(), stop).await
        });
        Self { shutdown, task }
    }

    /// Stops the loops and waits for them (the request log is written by then).
    pub async fn stop(self) {
        self.shutdown.begin();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the service stops")
            .unwrap()
            .unwrap();
    }
}

/// Serves the service's routes on `pool` at a free port until the returned `Shutdown` begins.
pub async fn serve_http(pool: &PgPool) -> (SocketAddr, Shutdown) {
    let settings = timelines_sync::config::HttpSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        enabled: true,
    };
    let listener = timelines_sync::http::bind(&settings).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Shutdown::new();
    tokio::spawn(timelines_sync::http::serve(
        listener,
        timelines_sync::http::router(pool.clone()),
        shutdown.clone(),
    ));
    (addr, shutdown)
}

/// Starts a simulator accepting `token`.
pub async fn simulator(token: &str, config: SimulatorConfig) -> Simulator {
    Simulator::start(
        SimulatorConfig {
            tokens: vec![token.to_owned()],
            ..config
        },
        ([127, 0, 0, 1], 0).into(),
    )
    .await
    .unwrap()
}

/// Enqueues a job in `workspace`.
pub async fn enqueue(pool: &PgPool, workspace: &str, kind: &str, payload: &str) -> i64 {
    sqlx::query_scalar("SELECT timelines.enqueue($1, $2::jsonb, workspace => $3)")
        .bind(kind)
        .bind(payload)
        .bind(workspace)
        .fetch_one(pool)
        .await
        .unwrap()
}
