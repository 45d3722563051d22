//! What `/metrics` answers: this process's metrics ([`super::metrics`]) followed by gauges read
//! from the database at scrape time. Figures about shared state (jobs, quotas, poll runs,
//! webhook events) come from Postgres because every instance works on the same rows: each
//! instance reports the same values, so dashboards take `max()` across instances rather than
//! `sum()`.
//!
//! The reading is a handful of aggregate queries in one read-only transaction with a statement
//! timeout; when it fails or times out, the scrape still answers 200 with the process metrics
//! and [`DB_ERROR`] at 1.

use std::time::Duration;

use metrics::{describe_gauge, gauge};
use metrics_exporter_prometheus::PrometheusBuilder;
use sqlx::{PgConnection, PgPool};

/// Jobs by workspace, kind and state (terminal ones until the pruner deletes them).
pub const JOBS: &str = "timelines_sync_jobs";
/// Age of the oldest job that is due (queued or retrying, run_at passed) per workspace.
pub const OLDEST_DUE: &str = "timelines_sync_queue_oldest_due_age_seconds";
/// API calls counted in the workspace's current quota period.
pub const API_CALLS_USED: &str = "timelines_sync_quota_api_calls_used";
/// API calls left in the current quota period.
pub const API_CALLS_LEFT: &str = "timelines_sync_quota_api_calls_left";
/// Messaging credits used in the current quota period.
pub const CREDITS_USED: &str = "timelines_sync_quota_message_credits_used";
/// Messaging credits left in the current quota period (once the limit is known).
pub const CREDITS_LEFT: &str = "timelines_sync_quota_message_credits_left";
/// 1 while every worker of the workspace is paused by a throttle answer.
pub const PAUSED: &str = "timelines_sync_rate_limit_paused";
/// Poll runs started in the last 24 hours by source and status.
pub const POLL_RUNS: &str = "timelines_sync_poll_runs_24h";
/// Records read by the poll runs of the last 24 hours, per source.
pub const POLL_RECORDS: &str = "timelines_sync_poll_records_24h";
/// Jobs created by the poll runs of the last 24 hours, per source.
pub const POLL_JOBS: &str = "timelines_sync_poll_jobs_created_24h";
/// When each source last completed a run (Unix time).
pub const POLL_LAST_SUCCESS: &str = "timelines_sync_poll_last_success_timestamp_seconds";
/// Webhook events received in the last 24 hours by type and processing status.
pub const WEBHOOK_EVENTS: &str = "timelines_sync_webhook_events_24h";
/// Webhook events waiting to be processed, however old.
pub const WEBHOOK_PENDING: &str = "timelines_sync_webhook_events_pending";
/// 1 when this scrape could not read the database (its gauges are left out), else 0.
pub const DB_ERROR: &str = "timelines_sync_scrape_database_error";

/// The whole reading, pool wait included.
const READ_TIMEOUT: Duration = Duration::from_secs(3);
/// Each statement (the server enforces it).
const STATEMENT_TIMEOUT_MS: u32 = 2000;

/// Everything read from the database for one scrape.
#[derive(Debug, Default)]
struct Figures {
    jobs: Vec<(String, String, String, f64)>,
    oldest_due: Vec<(String, f64)>,
    quotas: Vec<Quota>,
    poll_runs: Vec<(String, String, f64, f64, f64)>,
    poll_last_success: Vec<(String, Option<f64>)>,
    webhook_events: Vec<(String, String, f64)>,
    /// `None` before the webhook receiver's table exists.
    webhook_pending: Option<f64>,
}

#[derive(Debug, sqlx::FromRow)]
struct Quota {
    workspace: String,
    api_calls_used: Option<f64>,
    api_calls_left: Option<f64>,
    messages_used: Option<f64>,
    messages_left: Option<f64>,
    paused: bool,
}

/// The body of `/metrics`. Never fails: database trouble only leaves its gauges out.
pub async fn render(pool: &PgPool) -> String {
    let mut text = super::metrics::install().render();
    let figures = match tokio::time::timeout(READ_TIMEOUT, read(pool)).await {
        Ok(Ok(figures)) => Some(figures),
        Ok(Err(error)) => {
            tracing::warn!(%error, "metrics: reading the database failed; its gauges are left out");
            None
        }
        Err(_) => {
            tracing::warn!(
                timeout_s = READ_TIMEOUT.as_secs(),
                "metrics: the database did not answer in time; its gauges are left out"
            );
            None
        }
    };
    text.push_str(&render_figures(figures.as_ref()));
    text
}

async fn read(pool: &PgPool) -> sqlx::Result<Figures> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION READ ONLY")
        .execute(&mut *tx)
        .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}"
    )))
    .execute(&mut *tx)
    .await?;
    let figures = read_on(&mut tx).await?;
    tx.rollback().await?;
    Ok(figures)
}

async fn read_on(conn: &mut PgConnection) -> sqlx::Result<Figures> {
    let jobs =
        sqlx::query_as("SELECT workspace, kind, state, jobs::float8 FROM timelines.job_counts")
            .fetch_all(&mut *conn)
            .await?;
    let oldest_due = sqlx::query_as(
        "SELECT w.name, coalesce(greatest(0, extract(epoch FROM now() - min(c.oldest_run_at))), 0)::float8
           FROM timelines.workspaces w
           LEFT JOIN timelines.job_counts c
                  ON c.workspace = w.name AND c.state IN ('queued', 'retrying')
          GROUP BY w.name",
    )
    .fetch_all(&mut *conn)
    .await?;
    let quotas = sqlx::query_as(
        "SELECT workspace, api_calls_used::float8, api_calls_left::float8,
                messages_used::float8, messages_left::float8, paused
           FROM timelines.rate_limit_status",
    )
    .fetch_all(&mut *conn)
    .await?;
    // Through source_state so each source's runs are found by its (source, started_at) index.
    let poll_runs = sqlx::query_as(
        "SELECT r.source, r.status, count(*)::float8, sum(r.records_seen)::float8,
                sum(r.jobs_created)::float8
           FROM timelines.source_state s
           JOIN timelines.source_runs r
             ON r.source = s.source AND r.started_at > now() - interval '24 hours'
          GROUP BY r.source, r.status",
    )
    .fetch_all(&mut *conn)
    .await?;
    let poll_last_success = sqlx::query_as(
        "SELECT source, extract(epoch FROM last_success_at)::float8 FROM timelines.source_state",
    )
    .fetch_all(&mut *conn)
    .await?;
    let (webhook_events, webhook_pending) = read_webhook_events(conn).await?;
    Ok(Figures {
        jobs,
        oldest_due,
        quotas,
        poll_runs,
        poll_last_success,
        webhook_events,
        webhook_pending,
    })
}

/// Webhook events by type and status, if the webhook receiver's table exists (migration 0009).
async fn read_webhook_events(
    conn: &mut PgConnection,
) -> sqlx::Result<(Vec<(String, String, f64)>, Option<f64>)> {
    let exists: bool =
        sqlx::query_scalar("SELECT to_regclass('timelines.webhook_events') IS NOT NULL")
            .fetch_one(&mut *conn)
            .await?;
    if !exists {
        return Ok((Vec::new(), None));
    }
    // A type the reference does not list is `other`: the sender chooses it, and a label value
    // of each would grow the series without bound.
    let events = sqlx::query_as(
        "SELECT CASE WHEN event_type IS NULL THEN 'none'
                     WHEN event_type = ANY($1) THEN event_type ELSE 'other' END,
                status, count(*)::float8
           FROM timelines.webhook_events
          WHERE received_at > now() - interval '24 hours'
          GROUP BY 1, 2",
    )
    .bind(crate::webhooks::EVENT_TYPES)
    .fetch_all(&mut *conn)
    .await?;
    // The backlog, however old (the processor's partial index answers it).
    let pending: f64 = sqlx::query_scalar(
        "SELECT count(*)::float8 FROM timelines.webhook_events WHERE status = 'pending'",
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok((events, Some(pending)))
}

/// The database gauges in Prometheus text, from a recorder of their own built for this scrape:
/// a label set that disappeared from the database (a state with no jobs left) disappears here.
fn render_figures(figures: Option<&Figures>) -> String {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        describe();
        gauge!(DB_ERROR).set(if figures.is_some() { 0.0 } else { 1.0 });
        if let Some(figures) = figures {
            set_queue(figures);
            set_quotas(&figures.quotas);
            set_polls(figures);
            set_webhook_events(figures);
        }
    });
    handle.render()
}

fn set_queue(figures: &Figures) {
    for (workspace, kind, state, n) in &figures.jobs {
        gauge!(JOBS, "workspace" => workspace.clone(), "kind" => kind.clone(), "state" => state.clone())
            .set(*n);
    }
    for (workspace, age) in &figures.oldest_due {
        gauge!(OLDEST_DUE, "workspace" => workspace.clone()).set(*age);
    }
}

fn set_quotas(quotas: &[Quota]) {
    for q in quotas {
        let ws = || q.workspace.clone();
        let values = [
            (API_CALLS_USED, q.api_calls_used),
            (API_CALLS_LEFT, q.api_calls_left),
            (CREDITS_USED, q.messages_used),
            (CREDITS_LEFT, q.messages_left),
        ];
        for (name, value) in values {
            if let Some(value) = value {
                gauge!(name, "workspace" => ws()).set(value);
            }
        }
        gauge!(PAUSED, "workspace" => ws()).set(if q.paused { 1.0 } else { 0.0 });
    }
}

fn set_polls(figures: &Figures) {
    let mut per_source: std::collections::BTreeMap<&str, (f64, f64)> = Default::default();
    for (source, status, runs, records, jobs) in &figures.poll_runs {
        gauge!(POLL_RUNS, "source" => source.clone(), "status" => status.clone()).set(*runs);
        let total = per_source.entry(source).or_default();
        total.0 += records;
        total.1 += jobs;
    }
    for (source, (records, jobs)) in per_source {
        gauge!(POLL_RECORDS, "source" => source.to_owned()).set(records);
        gauge!(POLL_JOBS, "source" => source.to_owned()).set(jobs);
    }
    for (source, at) in &figures.poll_last_success {
        if let Some(at) = at {
            gauge!(POLL_LAST_SUCCESS, "source" => source.clone()).set(*at);
        }
    }
}

fn set_webhook_events(figures: &Figures) {
    for (event_type, status, n) in &figures.webhook_events {
        gauge!(WEBHOOK_EVENTS, "event_type" => event_type.clone(), "status" => status.clone())
            .set(*n);
    }
    if let Some(pending) = figures.webhook_pending {
        gauge!(WEBHOOK_PENDING).set(pending);
    }
}

fn describe() {
    let help = [
        (
            JOBS,
            "Jobs by workspace, kind and state (terminal ones until pruned)",
        ),
        (OLDEST_DUE, "Age of the oldest due queued or retrying job"),
        (API_CALLS_USED, "API calls used in the current quota period"),
        (API_CALLS_LEFT, "API calls left in the current quota period"),
        (
            CREDITS_USED,
            "Messaging credits used in the current quota period",
        ),
        (
            CREDITS_LEFT,
            "Messaging credits left in the current quota period",
        ),
        (
            PAUSED,
            "1 while the workspace is paused by a throttle answer",
        ),
        (POLL_RUNS, "Poll runs started in the last 24 hours"),
        (
            POLL_RECORDS,
            "Records read by poll runs in the last 24 hours",
        ),
        (POLL_JOBS, "Jobs created by poll runs in the last 24 hours"),
        (
            POLL_LAST_SUCCESS,
            "Unix time of the source's last completed run",
        ),
        (
            WEBHOOK_EVENTS,
            "Webhook events received in the last 24 hours",
        ),
        (WEBHOOK_PENDING, "Webhook events waiting to be processed"),
        (DB_ERROR, "1 when this scrape could not read the database"),
    ];
    for (name, text) in help {
        describe_gauge!(name, text);
    }
}
