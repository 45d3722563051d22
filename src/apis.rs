//! The API side of the service: one client per configured workspace, and the built-in simulator
//! for workspaces without a token (the zero-config default and `demo`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;

use sqlx::PgPool;

use crate::config::{Secret, Settings};
use crate::dispatcher::request_log::{LoggedRequest, RequestLog};
use crate::limiter::WorkspaceLimiter;
use crate::simulator::{Simulator, SimulatorConfig};
use crate::timelines::record::{RequestObserver, RequestRecord, RequestTag};
use crate::timelines::{Client, ClientOptions};

/// Clients by workspace name, and the simulator some of them may talk to.
pub struct Apis {
    /// One client per workspace.
    pub clients: HashMap<String, Client>,
    /// Workspaces that run against the built-in simulator.
    pub simulated: Vec<String>,
    /// The simulator, when any workspace uses it.
    pub simulator: Option<Simulator>,
}

impl Apis {
    /// Builds the clients; starts the simulator (with `simulator`'s settings) on a loopback port
    /// if a workspace has no token. Every request is paced by the workspace's shared limiter in
    /// `pool` and reported to `log`.
    pub async fn build(
        settings: &Settings,
        pool: &PgPool,
        log: Option<RequestLog>,
        simulator: SimulatorConfig,
    ) -> anyhow::Result<Self> {
        // Every client reports to the metrics; to the request log when there is one.
        let observer = observer(log);
        let wire = |client: Client, name: &str| {
            crate::telemetry::metrics::workspace_configured(name);
            let limit = settings
                .workspaces
                .get(name)
                .map_or(50, |ws| ws.rate_limit_per_minute);
            with(
                client.with_gate(WorkspaceLimiter::new(pool.clone(), name, limit)),
                name,
                &observer,
            )
        };
        let simulated = settings.simulated_workspaces();
        let mut real = Vec::new();
        for (name, ws) in &settings.workspaces {
            if simulated.contains(name) {
                continue;
            }
            let token = ws.resolved_token().with_context(|| {
                format!(
                    "config key `workspaces.{name}.token`: workspace {name} has no API token; set token, \
                     token_env or (for default) TIMELINES_API_TOKEN, or `simulator = true` to use the \
                     built-in simulator"
                )
            })?;
            real.push((name.clone(), ws.api_url.clone(), token));
        }
        let options = ClientOptions::default();
        let mut clients = HashMap::new();
        for (name, url, token) in real {
            let client = Client::new(&url, token, options.clone())
                .with_context(|| format!("workspace {name}"))?;
            clients.insert(name.clone(), wire(client, &name));
        }
        let simulator = if simulated.is_empty() {
            None
        } else {
            let token = uuid::Uuid::new_v4().to_string();
            let config = SimulatorConfig {
                tokens: vec![token.clone()],
                ..simulator
            };
            let sim = Simulator::start(config, SocketAddr::from(([127, 0, 0, 1], 0)))
                .await
                .context("failed to start the built-in API simulator")?;
            tracing::warn!(
                workspaces = ?simulated, url = %sim.base_url(),
                "no API token configured: these workspaces use the built-in simulator and nothing reaches WhatsApp \
                 (set TIMELINES_API_TOKEN or [workspaces.NAME].token to use the real API)"
            );
            for name in &simulated {
                let client =
                    Client::new(&sim.base_url(), Secret::new(token.clone()), options.clone())?;
                clients.insert(name.clone(), wire(client, name));
            }
            Some(sim)
        };
        Ok(Self {
            clients,
            simulated,
            simulator,
        })
    }
}

/// Tags the client with its workspace (jobs re-tag it with their id) and attaches the observer.
fn with(client: Client, workspace: &str, observer: &RequestObserver) -> Client {
    client.with_observer(observer.clone()).tagged(RequestTag {
        workspace: workspace.to_owned(),
        job_id: None,
    })
}

/// Reports every request of a client to the metrics and the request log.
fn observer(log: Option<RequestLog>) -> RequestObserver {
    Arc::new(move |record: RequestRecord| {
        let (workspace, job_id) = match record.tag {
            Some(tag) => (tag.workspace, tag.job_id),
            None => (String::new(), None),
        };
        crate::telemetry::metrics::api_request(
            &workspace,
            record.method,
            &record.path,
            record.status,
            record.error_class,
        );
        let Some(log) = &log else { return };
        log.record(LoggedRequest {
            workspace,
            job_id,
            method: record.method.to_owned(),
            path: record.path,
            status: record.status,
            error_class: record.error_class.map(|c| c.as_str()),
            duration: record.duration,
            requested_at: record.started_at,
        });
    })
}
