//! One run of a source: the incremental algorithm of ../shared/crm-sources.md §3.3.
//!
//! 1. Single-flight: a session advisory lock per source (released if the process dies), and for
//!    scheduled runs one run per cron tick across all instances (`source_state.last_tick`).
//! 2. Window: from `cursor - lookback` (never before the source's start point) to
//!    `server time - settle` (exclusive); records changed later wait for the next run.
//! 3. Pages in ascending cursor order where the source allows; re-anchored at result caps.
//! 4. Per record (reading stage, here): skip deleted ones, read the phone (E.164), opt-out flags
//!    and watched fields.
//! 5. Per batch of about 1,000 records (write stage, [`super::write`], running while the next
//!    batch is read), one transaction: contacts, watched fields, rule events (trigger, filter,
//!    opt-outs, frequency cap, quiet hours, templates) with their jobs (`ON CONFLICT
//!    (idempotency_key) DO NOTHING`), the cursor (sorted sources) and the run's counters. A crash
//!    between fetch and commit repeats the batch; the idempotency keys make the repeat a no-op.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool, SqlSafeStr};
use tokio::sync::Mutex;

use super::fetch::{self, FetchError, HttpPages, SqlPages, Window};
use super::record::{self, Record, Skip};
use super::spec::{Catalog, Initial, Rule, Source, SourceKind};
use super::write::{Contacts, Read, payloads_trusted, prepare, write_batch};

/// The advisory lock class of source runs (the key is `hashtext(source)`).
const LOCK_CLASS: i32 = 0x7469_6d65; // "time"
/// Skipped records written to `timelines.source_skips` per run at most (all are counted).
const MAX_SKIP_ROWS: u64 = 1000;

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

    /// Runs source `name` once.
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

    /// Writes a batch of records (several pages) in one transaction, with the cursor of sorted
    /// sources: the highest time read, and the ids read at exactly that time.
    #[allow(clippy::too_many_arguments)]
    async fn flush(
        &self,
        source: &Source,
        rules: &[&Rule],
        batch: Batch,
        state: &mut State,
        report: &mut RunReport,
        skip_rows: &mut u64,
        dry_run: bool,
        trusted: bool,
    ) -> Result<(), String> {
        let Batch {
            reads,
            deleted,
            mut skips,
            last_cursor,
            at_last_cursor,
            resume_token,
            records_seen,
            pages,
            requests,
            window_to,
        } = batch;
        report.records_seen = report.records_seen.max(records_seen);
        report.pages = report.pages.max(pages);
        report.requests = report.requests.max(requests);
        report.window_to = Some(window_to);
        if reads.is_empty() && deleted.is_empty() && skips.is_empty() && resume_token.is_none() {
            return Ok(());
        }
        let db = |e: sqlx::Error| format!("database: {e}");
        let checkpoint = if source.sorted {
            last_cursor.map(|c| {
                let mut boundary: HashSet<String> = if c == state.cursor {
                    state.boundary.clone()
                } else {
                    HashSet::new()
                };
                boundary.extend(at_last_cursor);
                (c, boundary)
            })
        } else {
            None
        };
        // Three connections when the pool has them to spare, so Postgres works on the batch's
        // parts at once: this one (rule events, watched values, cursor), one for the jobs and
        // one for the contacts. The other two commit first: the cursor never passes a contact or
        // job not written, and a failure after their commit is repeated idempotently when the
        // batch is read again (contacts are upserted, a job's key is found taken and linked).
        let mut reads = reads;
        let contacts = Contacts::take(&mut reads);
        // Plans for this batch's arrays and the tables as they are now: a plan cached while the
        // tables were empty would scan them whole on every batch of a large first import. A
        // wait for a lock on a side connection is bounded, so the parts of one batch can never
        // wait on each other for good.
        let (main_begin, jobs_begin) = if trusted {
            (
                "BEGIN; SET LOCAL plan_cache_mode = force_custom_plan;
                 SET LOCAL timelines.payloads_checked = on",
                "BEGIN; SET LOCAL lock_timeout = '60s'; SET LOCAL timelines.payloads_checked = on",
            )
        } else {
            (
                "BEGIN; SET LOCAL plan_cache_mode = force_custom_plan",
                "BEGIN; SET LOCAL lock_timeout = '60s'",
            )
        };
        let (batch_tx, jobs_tx, contacts_tx) = tokio::join!(
            async {
                let conn = self.pool.acquire().await?;
                sqlx::Transaction::begin(conn, Some(main_begin.into_sql_str())).await
            },
            self.side_transaction(jobs_begin),
            async {
                if contacts.is_empty() {
                    return Ok(None);
                }
                self.side_transaction("BEGIN; SET LOCAL lock_timeout = '60s'")
                    .await
            }
        );
        let (mut batch_tx, mut jobs_tx, mut contacts_tx) = (
            batch_tx.map_err(db)?,
            jobs_tx.map_err(db)?,
            contacts_tx.map_err(db)?,
        );
        if contacts_tx.is_none() {
            contacts
                .upsert(&mut batch_tx, &source.name)
                .await
                .map_err(db)?;
        }
        let (written, contacts_written) = tokio::join!(
            write_batch(
                &mut batch_tx,
                jobs_tx.as_deref_mut(),
                source,
                rules,
                reads,
                deleted,
                &mut skips,
                report,
                dry_run
            ),
            async {
                match &mut contacts_tx {
                    Some(side) => contacts.upsert(side, &source.name).await,
                    None => Ok(()),
                }
            }
        );
        written.map_err(db)?;
        contacts_written.map_err(db)?;
        let tx: &mut PgConnection = &mut batch_tx;
        if let Some((cursor, boundary)) = checkpoint
            && cursor >= state.cursor
        {
            if !dry_run {
                save_cursor(tx, &source.name, cursor, &boundary)
                    .await
                    .map_err(db)?;
            }
            state.cursor = cursor;
            state.boundary = boundary;
        }
        if let Some(token) = resume_token
            && !dry_run
        {
            sqlx::query("UPDATE timelines.source_state SET vendor_token = $2 WHERE source = $1")
                .bind(&source.name)
                .bind(&token)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            state.vendor_token = Some(token);
        }
        let mut rows = Vec::new();
        for (external_id, rule, skip) in &skips {
            *report.skipped.entry(skip.reason.to_owned()).or_default() += 1;
            if report.skip_examples.len() < 20 {
                report
                    .skip_examples
                    .push((skip.reason.to_owned(), skip.detail.clone()));
            }
            if *skip_rows < MAX_SKIP_ROWS {
                *skip_rows += 1;
                rows.push((external_id, rule, skip));
            }
        }
        if let Some(run_id) = report.run_id {
            if !rows.is_empty() {
                let ids: Vec<Option<&str>> = rows.iter().map(|r| r.0.as_deref()).collect();
                let rules: Vec<Option<&str>> = rows.iter().map(|r| r.1.as_deref()).collect();
                let reasons: Vec<&str> = rows.iter().map(|r| r.2.reason).collect();
                let details: Vec<&str> = rows.iter().map(|r| r.2.detail.as_str()).collect();
                sqlx::query(
                    "INSERT INTO timelines.source_skips (run_id, source, external_id, rule, reason, detail)
                     SELECT $1, $2, * FROM unnest($3::text[], $4::text[], $5::text[], $6::text[])",
                )
                .bind(run_id)
                .bind(&source.name)
                .bind(&ids)
                .bind(&rules)
                .bind(&reasons)
                .bind(&details)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            }
            update_counters(tx, run_id, report).await.map_err(db)?;
        }
        // (Together: concurrent commits share the wait for the WAL flush.)
        let finish = |side: Option<sqlx::Transaction<'static, sqlx::Postgres>>| async move {
            match side {
                Some(side) if dry_run => side.rollback().await,
                Some(side) => side.commit().await,
                None => Ok(()),
            }
        };
        let (contacts_done, jobs_done) = tokio::join!(finish(contacts_tx), finish(jobs_tx));
        contacts_done.map_err(db)?;
        jobs_done.map_err(db)?;
        let done = if dry_run {
            batch_tx.rollback().await
        } else {
            batch_tx.commit().await
        };
        done.map_err(db)
    }

    /// A transaction (opened by `begin`) on a connection the pool can spare, for writing part of
    /// a batch alongside the batch's own; None when there is none (that part then goes in the
    /// batch's).
    async fn side_transaction(
        &self,
        begin: &'static str,
    ) -> sqlx::Result<Option<sqlx::Transaction<'static, sqlx::Postgres>>> {
        // An idle connection, or a new one while the pool is below its size; never a long wait
        // for one to come back (the batch's own holds one).
        let room = self.pool.num_idle() > 0
            || self.pool.size() < self.pool.options().get_max_connections();
        if !room {
            return Ok(None);
        }
        let Ok(conn) = tokio::time::timeout(SIDE_ACQUIRE, self.pool.acquire()).await else {
            return Ok(None);
        };
        Ok(Some(
            sqlx::Transaction::begin(conn?, Some(begin.into_sql_str())).await?,
        ))
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
            let reading = tokio::spawn(async move {
                let next = read_batch(&reading_source, &reading_catalog, &mut reading_ctx).await;
                (reading_ctx, next)
            });
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

/// The reading stage's state.
struct ReadCtx {
    reader: Reader,
    window: Window,
    /// The current query's lower bound (moves with re-anchoring).
    lower: DateTime<Utc>,
    /// The window's end (narrowed once the server's clock is known).
    upper: DateTime<Utc>,
    /// The cursor and boundary ids the run started from.
    start_cursor: DateTime<Utc>,
    start_boundary: HashSet<String>,
    /// The ids already read in this run, by cursor: re-anchored queries repeat their boundary,
    /// offset pages shift when records change.
    seen: BTreeMap<DateTime<Utc>, HashSet<String>>,
    /// Sorted sources: the lowest cursor of the last batch. Nothing before it can come again (a
    /// re-anchored query starts later, a shifted page moves by a few records, not a batch), so
    /// what `seen` holds before it is forgotten and its size stays about two batches.
    forget_before: Option<DateTime<Utc>>,
    last_cursor: Option<DateTime<Utc>>,
    /// Records past the starting cursor (re-reading the lookback is not progress).
    progress: u64,
    records_seen: u64,
    pages: u32,
    stopped_early: bool,
    done: bool,
    error: Option<String>,
}

/// Reads pages until about WRITE_BATCH records are gathered (or the window ends, the run limit
/// is reached, or a request fails: then `ctx.error` is set and the batch holds what was read
/// before, to be written), and prepares them.
async fn read_batch(source: &Arc<Source>, catalog: &Arc<Catalog>, ctx: &mut ReadCtx) -> Batch {
    let templates = &catalog.templates;
    if source.sorted
        && let Some(before) = ctx.forget_before
    {
        ctx.seen = ctx.seen.split_off(&before);
    }
    let mut records: Vec<Record> = Vec::new();
    let mut skips: Vec<(Option<String>, Option<String>, Skip)> = Vec::new();
    loop {
        if let Some(max) = source.max_records_per_run
            && ctx.progress >= max
        {
            ctx.stopped_early = true;
            break;
        }
        if records.len() + skips.len() >= WRITE_BATCH {
            break;
        }
        if let Reader::Http(pages) = &mut ctx.reader
            && pages.near_cap()
        {
            let at = ctx.last_cursor.unwrap_or(ctx.lower);
            if at <= ctx.lower {
                ctx.error = Some(format!(
                    "more records share the time {at} than the source's result cap allows in one query"
                ));
                break;
            }
            ctx.lower = at;
            pages.reanchor(at);
        }
        let page = match &mut ctx.reader {
            Reader::Http(pages) => pages.next_page().await,
            Reader::Sql(pages) => pages.next_page().await,
        };
        let page = match page {
            Ok(Some(page)) => page,
            Ok(None) => {
                ctx.done = true;
                break;
            }
            Err(FetchError { message, .. }) => {
                ctx.error = Some(message);
                break;
            }
        };
        ctx.pages += 1;
        if let Some(server) = page.server_time {
            let settle = chrono::Duration::from_std(source.settle).unwrap_or_default();
            if server - settle < ctx.upper {
                ctx.upper = server - settle;
                ctx.reader.set_upper(ctx.upper);
            }
        }
        let mut read = Vec::new();
        for raw in page.records {
            match record::read(source, raw) {
                Ok(r) => {
                    // (A vendor cursor decides what is new by itself: no window applies.)
                    if !source.resume_token
                        && (r.cursor < ctx.window.lower || r.cursor >= ctx.upper)
                    {
                        // Outside the window: before it (an API without a lower filter) or
                        // too recent (the next run reads it once it has settled).
                        continue;
                    }
                    if r.cursor == ctx.start_cursor && ctx.start_boundary.contains(&r.id) {
                        continue;
                    }
                    if !ctx.seen.entry(r.cursor).or_default().insert(r.id.clone()) {
                        continue;
                    }
                    read.push(r);
                }
                Err(skip) => skips.push((None, None, skip)),
            }
        }
        ctx.progress += read.iter().filter(|r| r.cursor > ctx.start_cursor).count() as u64;
        if let (Reader::Http(pages), SourceKind::Http(spec)) = (&mut ctx.reader, &source.kind)
            && !spec.enrich.is_empty()
            && !read.is_empty()
            && let Err(e) = fetch::enrich(&mut pages.http, source, spec, templates, &mut read).await
        {
            ctx.error = Some(e.message);
            break;
        }
        if let Some(max_cursor) = read.iter().map(|r| r.cursor).max() {
            ctx.last_cursor = Some(ctx.last_cursor.map_or(max_cursor, |c| c.max(max_cursor)));
        }
        // Keyset paging: the next page is a new query from the last time read (the records
        // at that time come again and are skipped by `seen`); within a run of equal times
        // the token goes on.
        if source.keyset_paging
            && let Reader::Http(pages) = &mut ctx.reader
            && !pages.is_done()
            && let Some(at) = ctx.last_cursor
            && at > ctx.lower
        {
            ctx.lower = at;
            pages.reanchor(at);
        }
        records.append(&mut read);
        if ctx.reader.is_done() {
            ctx.done = true;
            break;
        }
    }
    ctx.records_seen += (records.len() + skips.len()) as u64;
    // The same record twice in a batch (a SQL source joining rows, a re-anchored page with a
    // newer version): its latest version.
    records.sort_by(|a, b| a.id.cmp(&b.id).then(b.cursor.cmp(&a.cursor)));
    records.dedup_by(|later, kept| later.id == kept.id);
    records.sort_by(|a, b| a.cursor.cmp(&b.cursor).then(a.id.cmp(&b.id)));
    if let Some(first) = records.first() {
        ctx.forget_before = Some(first.cursor);
    }
    let at_last_cursor = records
        .iter()
        .filter(|r| Some(r.cursor) == ctx.last_cursor)
        .map(|r| r.id.clone())
        .collect();
    let rules: Vec<&Rule> = catalog.rules_of(&source.name).collect();
    let (reads, deleted) = prepare(
        catalog,
        source,
        &rules,
        ctx.window.lower,
        records,
        &mut skips,
    );
    let resume_token = match &ctx.reader {
        Reader::Http(pages) if source.resume_token => pages.resume_token(),
        _ => None,
    };
    Batch {
        reads,
        deleted,
        skips,
        resume_token,
        last_cursor: ctx.last_cursor,
        at_last_cursor,
        records_seen: ctx.records_seen,
        pages: ctx.pages,
        requests: ctx.reader.requests(),
        window_to: ctx.upper,
    }
}

/// Records read and prepared, not yet written, with the reading stage's figures at the time.
#[derive(Default)]
struct Batch {
    reads: Vec<Read>,
    deleted: Vec<String>,
    skips: Vec<(Option<String>, Option<String>, Skip)>,
    last_cursor: Option<DateTime<Utc>>,
    /// The ids read at exactly `last_cursor` in this batch.
    at_last_cursor: Vec<String>,
    /// The vendor token to resume from after this batch.
    resume_token: Option<String>,
    records_seen: u64,
    pages: u32,
    requests: u32,
    window_to: DateTime<Utc>,
}

/// How long a batch waits for a connection of its own for its jobs or contacts.
const SIDE_ACQUIRE: std::time::Duration = std::time::Duration::from_millis(500);

/// Records per write transaction (pages are gathered up to about this many). Each batch costs
/// three commits and a dozen statements whatever its size: 2,000 took a 100,000-record import
/// from 21,000 to 25,000 records/s, for about 12 MB more memory at its peak.
pub const WRITE_BATCH: usize = 2000;

enum Reader {
    Http(Box<HttpPages>),
    Sql(SqlPages),
}

impl Reader {
    fn is_done(&self) -> bool {
        match self {
            Reader::Http(p) => p.is_done(),
            Reader::Sql(p) => p.is_done(),
        }
    }
    fn requests(&self) -> u32 {
        match self {
            Reader::Http(p) => p.http.requests,
            Reader::Sql(p) => p.requests,
        }
    }
    fn set_upper(&mut self, upper: DateTime<Utc>) {
        match self {
            Reader::Http(p) => p.set_upper(upper),
            Reader::Sql(p) => p.set_upper(upper),
        }
    }
}

/// A database error without the connection string.
fn redact_db_error(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Configuration(_) => "invalid database_url".to_owned(),
        other => other.to_string(),
    }
}

/// The source's state; a new source's is created (when `create`) at its `initial` point.
async fn load_state(conn: &mut PgConnection, source: &Source, create: bool) -> sqlx::Result<State> {
    let initial = match source.initial {
        Initial::Now => None,
        Initial::At(t) => Some(t),
    };
    if create {
        // A new source starts at its `initial` point (default: now), never at the beginning of
        // time.
        sqlx::query(
            "INSERT INTO timelines.source_state (source, cursor_value, start_from)
             VALUES ($1, coalesce($2, now()), coalesce($2, now()))
             ON CONFLICT (source) DO NOTHING",
        )
        .bind(&source.name)
        .bind(initial)
        .execute(&mut *conn)
        .await?;
    }
    let row: Option<StateRow> = sqlx::query_as(
        "SELECT cursor_value, start_from, boundary_ids, vendor_token
           FROM timelines.source_state WHERE source = $1",
    )
    .bind(&source.name)
    .fetch_optional(&mut *conn)
    .await?;
    let (cursor, start_from, boundary, vendor_token) = match row {
        Some(row) => row,
        // Not created (a dry run): where it would start.
        None => {
            let at = match initial {
                Some(t) => t,
                None => {
                    sqlx::query_scalar("SELECT now()")
                        .fetch_one(&mut *conn)
                        .await?
                }
            };
            (at, at, Vec::new(), None)
        }
    };
    Ok(State {
        cursor,
        start_from,
        boundary: boundary.into_iter().collect(),
        vendor_token,
    })
}

/// A `source_state` row: cursor, start point, boundary ids, vendor token.
type StateRow = (DateTime<Utc>, DateTime<Utc>, Vec<String>, Option<String>);

async fn save_cursor(
    conn: &mut PgConnection,
    source: &str,
    cursor: DateTime<Utc>,
    boundary: &HashSet<String>,
) -> sqlx::Result<()> {
    let mut ids: Vec<&String> = boundary.iter().collect();
    ids.sort();
    sqlx::query(
        "UPDATE timelines.source_state SET cursor_value = $2, boundary_ids = $3, updated_at = now()
          WHERE source = $1",
    )
    .bind(source)
    .bind(cursor)
    .bind(ids)
    .execute(conn)
    .await?;
    Ok(())
}

async fn update_counters(
    conn: &mut PgConnection,
    run_id: i64,
    report: &RunReport,
) -> sqlx::Result<()> {
    let skipped: u64 = report.skipped.values().sum();
    sqlx::query(
        "UPDATE timelines.source_runs
            SET requests = $2, pages = $3, records_seen = $4, jobs_created = $5,
                records_skipped = $6, skipped = $7, window_to = $8
          WHERE id = $1",
    )
    .bind(run_id)
    .bind(report.requests as i32)
    .bind(report.pages as i32)
    .bind(report.records_seen as i32)
    .bind(report.jobs_created as i32)
    .bind(skipped as i32)
    .bind(json!(report.skipped))
    .bind(report.window_to)
    .execute(conn)
    .await?;
    Ok(())
}

async fn finish_run(
    pool: &PgPool,
    run_id: i64,
    source: &str,
    report: &RunReport,
    error: Option<&str>,
) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    update_counters(&mut tx, run_id, report).await?;
    sqlx::query(
        "UPDATE timelines.source_runs
            SET status = CASE WHEN $2::text IS NULL THEN 'succeeded' ELSE 'failed' END,
                finished_at = now(), error = $2, cursor_after = $3
          WHERE id = $1",
    )
    .bind(run_id)
    .bind(error)
    .bind(report.cursor_after)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE timelines.source_state
            SET last_error = $2, updated_at = now(),
                last_success_at = CASE WHEN $2::text IS NULL THEN now() ELSE last_success_at END
          WHERE source = $1",
    )
    .bind(source)
    .bind(error)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}
