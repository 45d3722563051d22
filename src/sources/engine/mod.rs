//! One run of a source: the incremental algorithm of ../shared/crm-sources.md §3.3.
//!
//! 1. Single-flight: a session advisory lock per source (released if the process dies), and for
//!    scheduled runs one run per cron tick across all instances (`source_state.last_tick`).
//! 2. Window: from `cursor - lookback` (never before the source's start point) to
//!    `server time - settle` (exclusive); records changed later wait for the next run.
//! 3. Pages in ascending cursor order where the source allows; re-anchored at result caps.
//! 4. Per record (reading stage, here): skip deleted ones, read the phone (E.164), opt-out flags
//!    and watched fields.
//! 5. Per batch of about [`WRITE_BATCH`] records (write stage, [`batch`] and [`super::write`],
//!    running while the next batch is read): contacts, watched fields, rule events (trigger,
//!    filter, opt-outs, frequency cap, quiet hours, templates) with their jobs, the cursor (sorted
//!    sources) and the run's counters, committed together. A crash between fetch and commit
//!    repeats the batch; the idempotency keys make the repeat a no-op.
//!
//! Here: the run, its window and its two stages; [`read`]: the reading stage; [`batch`]: writing
//! a batch; [`state`]: the source's state and the run's row.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::Mutex;
use tracing::Instrument;

mod batch;
mod read;
mod state;

pub use self::read::WRITE_BATCH;
use self::read::{ReadCtx, Reader, read_batch};
use self::state::{finish_run, load_state, redact_db_error, save_cursor, update_counters};
use super::fetch::{HttpPages, SqlPages, Window};
use super::spec::{Catalog, Rule, Source, SourceKind};
use super::write::payloads_trusted;

/// The advisory lock class of source runs (the key is `hashtext(source)`).
const LOCK_CLASS: i32 = 0x7469_6d65; // "time"

/// Why a run happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A cron tick.
    Scheduled {
        /// The tick's time.
        tick: DateTime<Utc>,
    },
    /// `timelines-sync poll`.
    Manual,
    /// `timelines-sync backfill --since`.
    Backfill {
        /// The window's start.
        since: DateTime<Utc>,
    },
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Scheduled { .. } => "scheduled",
            Mode::Manual => "manual",
            Mode::Backfill { .. } => "backfill",
        }
    }
}

/// How a run did not happen or ended.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Another run of the source holds its lock (here or on another instance).
    #[error("source {0} is being polled by another run")]
    Busy(String),
    /// Another instance already ran this cron tick.
    #[error("this tick of source {0} already ran")]
    TickTaken(String),
    /// No source of that name.
    #[error("no source called {0:?}")]
    Unknown(String),
    /// The run failed; the cursor stays at the last committed page.
    #[error("polling {name} failed: {message}")]
    Failed {
        /// The source.
        name: String,
        /// Why.
        message: String,
    },
}

/// A job a run created (or, in a dry run, would create).
#[derive(Debug, Clone, Serialize)]
pub struct PlannedJob {
    /// The rule.
    pub rule: String,
    /// The record.
    pub record: String,
    /// The job kind.
    pub kind: String,
    /// The payload.
    pub payload: Value,
    /// When it runs.
    pub run_at: DateTime<Utc>,
    /// Its idempotency key.
    pub idempotency_key: String,
}

/// What a run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunReport {
    /// The `source_runs` row (None in a dry run).
    pub run_id: Option<i64>,
    /// The source.
    pub source: String,
    /// The window read.
    pub window_from: Option<DateTime<Utc>>,
    /// Its exclusive end.
    pub window_to: Option<DateTime<Utc>>,
    /// The cursor before.
    pub cursor_before: Option<DateTime<Utc>>,
    /// The cursor after.
    pub cursor_after: Option<DateTime<Utc>>,
    /// Requests or queries made.
    pub requests: u32,
    /// Pages read.
    pub pages: u32,
    /// Records read in the window.
    pub records_seen: u64,
    /// Jobs created.
    pub jobs_created: u64,
    /// Skipped records and rule events by reason.
    pub skipped: BTreeMap<String, u64>,
    /// Rule events already handled by an earlier run (re-reads, overlaps).
    pub duplicates: u64,
    /// The first jobs created (all of them in a dry run, up to a limit).
    pub planned: Vec<PlannedJob>,
    /// The first skips, with details.
    pub skip_examples: Vec<(String, String)>,
    /// The run stopped at `max_records_per_run`; the next run continues.
    pub stopped_early: bool,
}

/// Runs sources.
pub struct Poller {
    pool: PgPool,
    catalog: Arc<Catalog>,
    client: reqwest::Client,
    instance: String,
    sql_pools: Mutex<HashMap<String, PgPool>>,
    /// Pause before the first retry of a failed request (tests shorten it).
    pub retry_base: std::time::Duration,
}

/// The state of a source, as loaded.
#[derive(Debug, Clone)]
struct State {
    cursor: DateTime<Utc>,
    start_from: DateTime<Utc>,
    boundary: HashSet<String>,
    /// The vendor's durable cursor (sources with `resume_token`).
    vendor_token: Option<String>,
}

impl Poller {
    /// A poller of `catalog`'s sources writing to `pool`.
    pub fn new(pool: PgPool, catalog: Arc<Catalog>, instance: impl Into<String>) -> Self {
        let client = reqwest::Client::builder()
            .user_agent(concat!("timelines-sync/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(10))
            // Credentials in custom headers would follow a redirect to another host.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("the HTTP client builds");
        Self {
            pool,
            catalog,
            client,
            instance: instance.into(),
            sql_pools: Mutex::new(HashMap::new()),
            retry_base: std::time::Duration::from_secs(1),
        }
    }

    /// The catalog.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// Runs source `name` once, in a `poll` span naming the source.
    #[tracing::instrument(name = "poll", skip_all, fields(source = name))]
    pub async fn run(&self, name: &str, mode: Mode, dry_run: bool) -> Result<RunReport, RunError> {
        let source = self
            .catalog
            .sources
            .get(name)
            .cloned()
            .ok_or_else(|| RunError::Unknown(name.to_owned()))?;
        let failed = |message: String| RunError::Failed {
            name: name.to_owned(),
            message,
        };
        let db = |e: sqlx::Error| failed(format!("database: {e}"));

        // Single-flight: a session lock on a connection of its own, closed (and so released)
        // when the run ends however it ends.
        let mut lock = if dry_run {
            None
        } else {
            let mut conn = self.pool.acquire().await.map_err(db)?.detach();
            let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext($2))")
                .bind(LOCK_CLASS)
                .bind(name)
                .fetch_one(&mut conn)
                .await
                .map_err(db)?;
            if !locked {
                return Err(RunError::Busy(name.to_owned()));
            }
            Some(conn)
        };
        let result = self.run_locked(&source, mode, dry_run).await;
        if let Some(mut conn) = lock.take() {
            // Unlock before closing: the server ends a closed session (and drops its locks) a
            // moment after the client has gone, and the next run may already be asking.
            let _ = sqlx::query("SELECT pg_advisory_unlock($1, hashtext($2))")
                .bind(LOCK_CLASS)
                .bind(name)
                .execute(&mut conn)
                .await;
            let _ = sqlx::Connection::close(conn).await;
        }
        result
    }

    async fn run_locked(
        &self,
        source: &Arc<Source>,
        mode: Mode,
        dry_run: bool,
    ) -> Result<RunReport, RunError> {
        let name = source.name.as_str();
        let failed = |message: String| RunError::Failed {
            name: name.to_owned(),
            message,
        };
        let db = |e: sqlx::Error| failed(format!("database: {e}"));

        // A dry run writes each page in a transaction that is rolled back, and keeps the cursor
        // in memory: it never holds a lock a real run would wait for.
        let state = {
            let conn = &mut *self.pool.acquire().await.map_err(db)?;
            let state = load_state(conn, source, !dry_run).await.map_err(db)?;
            if let Mode::Scheduled { tick } = mode {
                let claimed = sqlx::query(
                    "UPDATE timelines.source_state SET last_tick = $2
                      WHERE source = $1 AND (last_tick IS NULL OR last_tick < $2)",
                )
                .bind(name)
                .bind(tick)
                .execute(&mut *conn)
                .await
                .map_err(db)?;
                if claimed.rows_affected() == 0 {
                    return Err(RunError::TickTaken(name.to_owned()));
                }
            }
            state
        };

        let now = Utc::now();
        let settle = chrono::Duration::from_std(source.settle).unwrap_or_default();
        let lookback = chrono::Duration::from_std(source.lookback).unwrap_or_default();
        let usual = (state.cursor - lookback).max(state.start_from);
        let lower = match mode {
            // Never later than a normal run would start: a backfill must not skip a gap.
            Mode::Backfill { since } => since.min(usual),
            _ => usual,
        };
        let window = Window {
            lower,
            upper: now - settle,
        };
        let mut report = RunReport {
            source: name.to_owned(),
            window_from: Some(window.lower),
            window_to: Some(window.upper),
            cursor_before: Some(state.cursor),
            ..RunReport::default()
        };

        let run_id = if dry_run {
            None
        } else {
            let id: i64 = sqlx::query_scalar(
                "WITH stale AS (
                     UPDATE timelines.source_runs
                        SET status = 'interrupted', finished_at = now(),
                            error = 'the process running it stopped before the end'
                      WHERE source = $1 AND status = 'running')
                 INSERT INTO timelines.source_runs (source, mode, instance, window_from, window_to, cursor_before, tick)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            )
            .bind(name)
            .bind(mode.as_str())
            .bind(&self.instance)
            .bind(window.lower)
            .bind(window.upper)
            .bind(state.cursor)
            .bind(match mode {
                Mode::Scheduled { tick } => Some(tick),
                _ => None,
            })
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
            sqlx::query("UPDATE timelines.source_state SET last_run_id = $2, updated_at = now() WHERE source = $1")
                .bind(name)
                .bind(id)
                .execute(&self.pool)
                .await
                .map_err(db)?;
            Some(id)
        };
        report.run_id = run_id;

        let outcome = self
            .read_window(source, state, window, &mut report, dry_run)
            .await;
        match outcome {
            Ok(()) => {
                if let Some(id) = run_id {
                    finish_run(&self.pool, id, name, &report, None)
                        .await
                        .map_err(db)?;
                }
                Ok(report)
            }
            Err(message) => {
                if let Some(id) = run_id {
                    let _ = finish_run(&self.pool, id, name, &report, Some(&message)).await;
                }
                Err(failed(message))
            }
        }
    }

    async fn sql_pool(&self, source: &Source) -> Result<PgPool, String> {
        let SourceKind::Sql(spec) = &source.kind else {
            unreachable!("only SQL sources have a SQL pool");
        };
        let Some(url) = &spec.database_url else {
            return Ok(self.pool.clone());
        };
        let mut pools = self.sql_pools.lock().await;
        if let Some(pool) = pools.get(&source.name) {
            return Ok(pool.clone());
        }
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(url.expose())
            .await
            .map_err(|e| format!("connecting to the source database: {}", redact_db_error(&e)))?;
        pools.insert(source.name.clone(), pool.clone());
        Ok(pool)
    }

    async fn read_window(
        &self,
        source: &Arc<Source>,
        mut state: State,
        window: Window,
        report: &mut RunReport,
        dry_run: bool,
    ) -> Result<(), String> {
        let templates = self.catalog.templates.clone();
        let rules: Vec<&Rule> = self.catalog.rules_of(&source.name).collect();
        let reader = match &source.kind {
            SourceKind::Http(spec) => {
                let mut pages = HttpPages::new(
                    self.client.clone(),
                    source.clone(),
                    spec,
                    templates.clone(),
                    window,
                );
                pages.http.retry_base = self.retry_base;
                if source.resume_token
                    && let Some(token) = state.vendor_token.clone()
                {
                    pages.resume_from(token);
                }
                Reader::Http(Box::new(pages))
            }
            SourceKind::Sql(spec) => {
                let pool = self.sql_pool(source).await?;
                Reader::Sql(SqlPages::new(pool, source, spec, window).map_err(|e| e.message)?)
            }
            SourceKind::Webhook => {
                return Err(format!(
                    "{} is the built-in source of webhook events: it is not polled",
                    source.name
                ));
            }
        };
        let trusted = payloads_trusted(&self.pool, &rules)
            .await
            .map_err(|e| format!("database: {e}"))?;
        let mut ctx = ReadCtx {
            reader,
            window,
            lower: window.lower,
            upper: window.upper,
            start_cursor: state.cursor,
            start_boundary: state.boundary.clone(),
            seen: BTreeMap::new(),
            forget_before: None,
            last_cursor: None,
            progress: 0,
            records_seen: 0,
            pages: 0,
            stopped_early: false,
            done: false,
            error: None,
        };
        let mut skip_rows = 0u64;
        // Two stages: while one batch is written (Postgres' work), the next is read and
        // prepared (this process's work: parsing, phones, expressions).
        let mut batch = read_batch(source, &self.catalog, &mut ctx).await;
        loop {
            if ctx.done || ctx.error.is_some() || ctx.stopped_early {
                self.flush(
                    source,
                    &rules,
                    batch,
                    &mut state,
                    report,
                    &mut skip_rows,
                    dry_run,
                    trusted,
                )
                .await?;
                break;
            }
            // The reading stage runs as a task of its own, so its CPU work proceeds on another
            // core while this one waits on Postgres.
            let (reading_source, reading_catalog) = (source.clone(), self.catalog.clone());
            let mut reading_ctx = ctx;
            let reading = tokio::spawn(
                async move {
                    let next =
                        read_batch(&reading_source, &reading_catalog, &mut reading_ctx).await;
                    (reading_ctx, next)
                }
                .in_current_span(),
            );
            let flushed = self
                .flush(
                    source,
                    &rules,
                    batch,
                    &mut state,
                    report,
                    &mut skip_rows,
                    dry_run,
                    trusted,
                )
                .await;
            let (returned, next) = reading
                .await
                .map_err(|e| format!("the reading stage failed: {e}"))?;
            ctx = returned;
            flushed?;
            batch = next;
        }
        report.stopped_early = ctx.stopped_early;
        report.records_seen = ctx.records_seen;
        report.pages = ctx.pages;
        report.requests = ctx.reader.requests();
        report.window_to = Some(ctx.upper);
        if let Some(error) = ctx.error {
            if let Some(run_id) = report.run_id {
                let conn = &mut *self
                    .pool
                    .acquire()
                    .await
                    .map_err(|e| format!("database: {e}"))?;
                update_counters(conn, run_id, report)
                    .await
                    .map_err(|e| format!("database: {e}"))?;
            }
            return Err(error);
        }

        // The whole window was read: the cursor moves to its end (records changed later come
        // with later times; late-arriving ones are re-read by the lookback).
        let end = if report.stopped_early {
            state.cursor
        } else {
            ctx.upper.max(state.cursor)
        };
        let boundary = if end == state.cursor {
            state.boundary.clone()
        } else {
            HashSet::new()
        };
        // (Never backwards: `end` is at least the saved cursor, also after a backfill.)
        if !dry_run {
            let conn = &mut *self
                .pool
                .acquire()
                .await
                .map_err(|e| format!("database: {e}"))?;
            save_cursor(conn, &source.name, end, &boundary)
                .await
                .map_err(|e| format!("database: {e}"))?;
        }
        report.cursor_after = Some(end);
        Ok(())
    }
}
