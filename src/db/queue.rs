//! Every statement the queue engine runs. The queue is a state machine in SQL:
//!
//! ```text
//! queued/retrying --claim--> running --complete--> succeeded | failed | retrying | queued
//!                               |  \--lease expires (rescue)--> retrying (interrupted)
//!                               \--shutdown (release)--> queued/retrying
//! ```
//!
//! A claim commits before the work starts, so no transaction is held across an API call. Every
//! write to a running job checks that the caller still holds it (`locked_by` and `attempts`), so a
//! worker whose lease was rescued cannot overwrite the newer attempt.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::postgres::PgConnectOptions;
use sqlx::{PgExecutor, PgPool};

use crate::queue::Job;

/// How an attempt ended, ready to be written.
#[derive(Debug, Clone, PartialEq)]
pub enum Completion {
    /// `succeeded`, with an optional result.
    Succeeded(Option<Value>),
    /// Another attempt after `delay` (or `failed` when attempts are used up). `uncertain`: the
    /// attempt may have had its effect, so the next one is marked `interrupted`.
    Retry {
        error: String,
        delay: Duration,
        uncertain: bool,
    },
    /// Run again after `delay` without using up the attempt.
    Snooze { delay: Duration },
    /// `held` without using up the attempt; looked at again after `delay`.
    Hold { reason: String, delay: Duration },
    /// `failed` for good.
    Failed { error: String },
}

/// One finished attempt of a job held by this worker.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    /// The job.
    pub id: i64,
    /// The attempt number it was claimed with (guards against a rescued lease).
    pub attempt: i32,
    /// What to write.
    pub completion: Completion,
}

/// Claims up to `limit` runnable jobs for `worker`, highest priority first, then oldest `run_at`,
/// then id. `kinds` restricts the claim to the kinds this worker can run.
///
/// Run it on a connection made with [`claim_connect_options`]: the plan must be an ordered walk of
/// `jobs_claim_idx` that stops after `limit` rows, and a queue table's statistics are stale by
/// nature (100,000 rows bulk-inserted into a table last analysed empty), which otherwise makes
/// the planner sort every due job on each claim (measured: 65 ms instead of 0.7 ms per claim).
pub async fn claim(
    db: impl PgExecutor<'_>,
    worker: &str,
    limit: usize,
    lease: Duration,
    kinds: &[String],
) -> sqlx::Result<Vec<Job>> {
    claim_scoped(
        db,
        worker,
        limit,
        lease,
        ClaimScope {
            kinds,
            workspaces: None,
        },
    )
    .await
}

/// Which jobs a worker may claim.
#[derive(Debug, Clone, Copy)]
pub struct ClaimScope<'a> {
    /// The kinds it can run.
    pub kinds: &'a [String],
    /// The workspaces it has clients for; `None` for all.
    pub workspaces: Option<&'a [String]>,
}

/// [`claim`], limited to `scope`.
///
/// With more than one workspace in scope the claim is fair: it takes the first due job of each
/// workspace, then the second of each, and so on (each workspace's jobs in claim order), so a
/// large backlog in one workspace never delays the others. Each workspace has its own rate limit,
/// so this lets every workspace drain at its own limit at the same time.
pub async fn claim_scoped(
    db: impl PgExecutor<'_>,
    worker: &str,
    limit: usize,
    lease: Duration,
    scope: ClaimScope<'_>,
) -> sqlx::Result<Vec<Job>> {
    let fair = scope.workspaces.is_some_and(|w| w.len() > 1);
    let sql = if fair { CLAIM_FAIR } else { CLAIM_ORDERED };
    sqlx::query_as(sql)
        .bind(limit as i64)
        .bind(worker)
        .bind(lease.as_secs_f64())
        .bind(scope.kinds)
        .bind(scope.workspaces)
        .fetch_all(db)
        .await
}

/// The claimed jobs' new state, and what a claim returns.
macro_rules! claim_update {
    () => {
        "UPDATE timelines.jobs j
            SET state = 'running', attempts = j.attempts + 1, attempted_at = now(), updated_at = now(),
                locked_by = $2, locked_until = now() + make_interval(secs => $3)
           FROM next
          WHERE j.id = next.id
         RETURNING j.id, j.workspace, j.kind, j.payload, j.priority, j.attempts, j.max_attempts,
                   j.idempotency_key, j.interrupted, j.created_at, j.result"
    };
}

/// One ordered walk of `jobs_claim_idx`. The CTE is a fence: the planner must pick exactly
/// `limit` ids before the UPDATE, or it may update more rows than asked. SKIP LOCKED lets
/// concurrent workers claim disjoint sets.
const CLAIM_ORDERED: &str = concat!(
    "WITH next AS (
         SELECT id FROM timelines.jobs
          WHERE state IN ('queued', 'retrying') AND run_at <= now() AND kind = ANY($4)
            AND ($5::text[] IS NULL OR workspace = ANY($5))
          ORDER BY priority DESC, run_at, id
          LIMIT $1
          FOR UPDATE SKIP LOCKED)
     ",
    claim_update!()
);

/// Round-robin over workspaces: one ordered walk of `jobs_claim_workspace_idx` per workspace
/// (ordered by `-priority`, an expression only that index provides, so the planner cannot pick
/// `jobs_claim_idx` and walk another workspace's backlog)
/// locks up to `limit` candidates each (SKIP LOCKED, so concurrent workers take disjoint sets),
/// the candidates are ranked by their turn within their workspace, and the first `limit` are
/// claimed. Candidates not taken are unlocked when the statement commits.
const CLAIM_FAIR: &str = concat!(
    "WITH candidates AS MATERIALIZED (
         SELECT c.id, c.priority, c.run_at,
                row_number() OVER (PARTITION BY w.name ORDER BY c.priority DESC, c.run_at, c.id) AS turn
           FROM unnest($5::text[]) AS w(name)
          CROSS JOIN LATERAL (
                SELECT id, priority, run_at FROM timelines.jobs
                 WHERE workspace = w.name AND state IN ('queued', 'retrying') AND run_at <= now()
                   AND kind = ANY($4)
                 ORDER BY -(priority::bigint), run_at, id
                 LIMIT $1
                 FOR UPDATE SKIP LOCKED) c),
     next AS MATERIALIZED (
         SELECT id FROM candidates ORDER BY turn, priority DESC, run_at, id LIMIT $1)
     ",
    claim_update!()
);

/// Options for the connections that claim: `options` with sorting and bitmap scans priced out,
/// so the claim always walks the index in order whatever the statistics say. Only the claim runs
/// on these connections. (A plpgsql function with `SET` clauses does the same but measured 40 %
/// slower per claim.) JIT is off: the fair claim must sort its few candidates, which the priced-out
/// sort makes look expensive enough to JIT-compile, 180 ms for a query that runs in 0.2 ms.
pub fn claim_connect_options(options: &PgConnectOptions) -> PgConnectOptions {
    options
        .clone()
        .options([
            ("enable_sort", "off"),
            ("enable_bitmapscan", "off"),
            ("jit", "off"),
        ])
        .application_name("timelines-sync claim")
}

/// Writes the outcomes of finished attempts in one statement. Returns the ids written; an id
/// missing from the answer was no longer held (cancelled meanwhile, or rescued after a lost lease).
pub async fn complete(
    db: impl PgExecutor<'_>,
    worker: &str,
    finished: &[Finished],
) -> sqlx::Result<Vec<i64>> {
    // One array per column, unnested into rows in SQL: one statement for the whole batch.
    let n = finished.len();
    let mut ids = Vec::with_capacity(n);
    let mut attempts = Vec::with_capacity(n);
    let mut actions = Vec::with_capacity(n);
    let mut results = Vec::with_capacity(n);
    let mut errors = Vec::with_capacity(n);
    let mut delays = Vec::with_capacity(n);
    let mut uncertain = Vec::with_capacity(n);
    for f in finished {
        let (action, result, error, delay) = match &f.completion {
            Completion::Succeeded(result) => ("done", result.clone(), None, Duration::ZERO),
            Completion::Retry { error, delay, .. } => ("retry", None, Some(error.clone()), *delay),
            Completion::Snooze { delay } => ("snooze", None, None, *delay),
            Completion::Hold { reason, delay } => ("hold", None, Some(reason.clone()), *delay),
            Completion::Failed { error } => ("fail", None, Some(error.clone()), Duration::ZERO),
        };
        ids.push(f.id);
        attempts.push(f.attempt);
        actions.push(action);
        results.push(result);
        errors.push(error);
        delays.push(delay.as_secs_f64());
        uncertain.push(matches!(
            f.completion,
            Completion::Retry {
                uncertain: true,
                ..
            }
        ));
    }
    sqlx::query_scalar(
        "WITH c AS (
             SELECT * FROM unnest($1::bigint[], $2::int[], $3::text[], $4::jsonb[], $5::text[], $6::float8[],
                                  $8::bool[])
                 AS c(id, attempt, action, result, error, delay, uncertain))
         UPDATE timelines.jobs j SET
             state = CASE
                 WHEN c.action = 'done' THEN 'succeeded'
                 WHEN c.action = 'fail' THEN 'failed'
                 WHEN c.action = 'retry' AND j.attempts >= j.max_attempts THEN 'failed'
                 WHEN c.action = 'retry' THEN 'retrying'
                 WHEN c.action = 'hold' THEN 'held'
                 WHEN j.attempts > 1 OR j.interrupted THEN 'retrying'
                 ELSE 'queued' END,
             attempts = CASE WHEN c.action IN ('snooze', 'hold') THEN j.attempts - 1 ELSE j.attempts END,
             run_at = CASE WHEN c.action IN ('retry', 'snooze', 'hold')
                           THEN now() + make_interval(secs => c.delay) ELSE j.run_at END,
             result = CASE WHEN c.action = 'done' THEN c.result ELSE j.result END,
             last_error = coalesce(c.error, j.last_error),
             errors = CASE WHEN c.error IS NULL THEN j.errors
                           ELSE (CASE WHEN jsonb_array_length(j.errors) >= 10 THEN j.errors - 0
                                      ELSE j.errors END)
                                || jsonb_build_array(jsonb_build_object(
                                       'attempt', j.attempts, 'at', now(), 'error', c.error)) END,
             finished_at = CASE
                 WHEN c.action IN ('done', 'fail') THEN now()
                 WHEN c.action = 'retry' AND j.attempts >= j.max_attempts THEN now()
                 ELSE NULL END,
             -- once an attempt may have had its effect, every later attempt checks first, until
             -- one succeeds (a plain failure of the checking attempt must not clear the mark)
             interrupted = c.action <> 'done' AND (c.uncertain OR j.interrupted),
             locked_by = NULL,
             locked_until = NULL,
             updated_at = now()
           FROM c
          WHERE j.id = c.id AND j.state = 'running' AND j.locked_by = $7 AND j.attempts = c.attempt
         RETURNING j.id",
    )
    .bind(&ids)
    .bind(&attempts)
    .bind(&actions)
    .bind(&results)
    .bind(&errors)
    .bind(&delays)
    .bind(worker)
    .bind(&uncertain)
    .fetch_all(db)
    .await
}

/// Merges `progress` into the `result` of a job this worker is running, so a later attempt can
/// pick up where this one stopped (e.g. a file already uploaded). Returns false if the job is no
/// longer held.
pub async fn checkpoint(
    db: impl PgExecutor<'_>,
    job_id: i64,
    attempt: i32,
    progress: &Value,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE timelines.jobs SET result = coalesce(result, '{}') || $3, updated_at = now()
          WHERE id = $1 AND attempts = $2 AND state = 'running'",
    )
    .bind(job_id)
    .bind(attempt)
    .bind(progress)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Extends the lease of the jobs this worker is running. Returns the ids renewed: a job missing
/// from the answer is no longer this worker's (cancelled, or rescued after a lost lease).
pub async fn heartbeat(
    db: impl PgExecutor<'_>,
    worker: &str,
    ids: &[i64],
    lease: Duration,
) -> sqlx::Result<Vec<i64>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_scalar(
        "UPDATE timelines.jobs SET locked_until = now() + make_interval(secs => $3)
          WHERE id = ANY($1) AND state = 'running' AND locked_by = $2
         RETURNING id",
    )
    .bind(ids)
    .bind(worker)
    .bind(lease.as_secs_f64())
    .fetch_all(db)
    .await
}

/// Gives back jobs this worker holds, at shutdown. `interrupted` says whether the attempt had
/// started (its effect may have happened) or the job was only claimed. The attempt is not counted:
/// stopping the service is not the job's fault.
pub async fn release(
    db: impl PgExecutor<'_>,
    worker: &str,
    ids: &[i64],
    interrupted: bool,
) -> sqlx::Result<u64> {
    if ids.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query(
        "UPDATE timelines.jobs SET
             state = CASE WHEN attempts > 1 OR interrupted OR $3 THEN 'retrying' ELSE 'queued' END,
             attempts = attempts - 1, run_at = now(), interrupted = interrupted OR $3,
             last_error = CASE WHEN $3 THEN 'attempt ' || attempts || ' interrupted: worker ' || $2
                                         || ' shut down while the job was running'
                               ELSE last_error END,
             locked_by = NULL, locked_until = NULL, updated_at = now()
          WHERE id = ANY($1) AND state = 'running' AND locked_by = $2",
    )
    .bind(ids)
    .bind(worker)
    .bind(interrupted)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Returns jobs whose lease expired (their worker crashed, was killed or lost the database) to
/// `retrying`, marked `interrupted`, or to `failed` when that was their last attempt.
/// Returns the number rescued; at most `limit` per call.
pub async fn rescue_expired(db: impl PgExecutor<'_>, limit: i64) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "WITH stuck AS (
             SELECT id FROM timelines.jobs
              WHERE state = 'running' AND locked_until < now()
              ORDER BY locked_until
              LIMIT $1
              FOR UPDATE SKIP LOCKED)
         UPDATE timelines.jobs j SET
             state = CASE WHEN j.attempts >= j.max_attempts THEN 'failed' ELSE 'retrying' END,
             finished_at = CASE WHEN j.attempts >= j.max_attempts THEN now() END,
             run_at = now(),
             interrupted = true,
             last_error = format('attempt %s interrupted: the lease of worker %s expired at %s',
                                 j.attempts, j.locked_by, j.locked_until),
             errors = (CASE WHEN jsonb_array_length(j.errors) >= 10 THEN j.errors - 0 ELSE j.errors END)
                      || jsonb_build_array(jsonb_build_object('attempt', j.attempts, 'at', now(),
                             'error', format('interrupted: lease of worker %s expired', j.locked_by))),
             locked_by = NULL,
             locked_until = NULL,
             updated_at = now()
           FROM stuck
          WHERE j.id = stuck.id",
    )
    .bind(limit)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Returns `held` jobs whose recheck time has come to the queue. Returns how many.
pub async fn resume_held(db: impl PgExecutor<'_>, limit: i64) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "UPDATE timelines.jobs SET state = CASE WHEN attempts > 0 OR interrupted THEN 'retrying' ELSE 'queued' END,
                updated_at = now()
          WHERE id IN (SELECT id FROM timelines.jobs WHERE state = 'held' AND run_at <= now()
                        ORDER BY run_at LIMIT $1 FOR UPDATE SKIP LOCKED)",
    )
    .bind(limit)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Deletes up to `limit` finished jobs older than `retention`. Returns how many.
pub async fn prune_finished(
    db: impl PgExecutor<'_>,
    retention: Duration,
    limit: i64,
) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "DELETE FROM timelines.jobs WHERE id IN (
             SELECT id FROM timelines.jobs
              WHERE state IN ('succeeded', 'failed', 'cancelled')
                AND finished_at < now() - make_interval(secs => $1)
              ORDER BY finished_at
              LIMIT $2
              FOR UPDATE SKIP LOCKED)",
    )
    .bind(retention.as_secs_f64())
    .bind(limit)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Deletes up to `limit` rows of the request log older than `retention`. Returns how many.
pub async fn prune_request_log(
    db: impl PgExecutor<'_>,
    retention: Duration,
    limit: i64,
) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "DELETE FROM timelines.api_requests WHERE id IN (
             SELECT id FROM timelines.api_requests
              WHERE requested_at < now() - make_interval(secs => $1)
              ORDER BY requested_at
              LIMIT $2)",
    )
    .bind(retention.as_secs_f64())
    .bind(limit)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Enqueues a job through `timelines.enqueue` (the same function users call from SQL).
pub async fn enqueue(db: impl PgExecutor<'_>, new: &NewJob) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "SELECT timelines.enqueue($1, $2, workspace => $3, run_at => coalesce($4, now()),
                                  priority => $5, idempotency_key => $6, max_attempts => $7)",
    )
    .bind(&new.kind)
    .bind(&new.payload)
    .bind(&new.workspace)
    .bind(new.run_at)
    .bind(new.priority)
    .bind(&new.idempotency_key)
    .bind(new.max_attempts)
    .fetch_one(db)
    .await
}

/// A job to enqueue from Rust (pollers, tests, the benchmark).
#[derive(Debug, Clone)]
pub struct NewJob {
    /// The kind.
    pub kind: String,
    /// The arguments.
    pub payload: Value,
    /// The workspace (`default` unless set).
    pub workspace: String,
    /// When it may run; `None` for now.
    pub run_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Higher runs first.
    pub priority: i32,
    /// Deduplication key.
    pub idempotency_key: Option<String>,
    /// Attempts; `None` for the default (20).
    pub max_attempts: Option<i32>,
}

impl NewJob {
    /// A job of `kind` with `payload` for the default workspace, due now.
    pub fn new(kind: impl Into<String>, payload: Value) -> Self {
        Self {
            kind: kind.into(),
            payload,
            workspace: crate::config::DEFAULT_WORKSPACE.to_owned(),
            run_at: None,
            priority: 0,
            idempotency_key: None,
            max_attempts: None,
        }
    }
}

/// Inserts `count` no-op jobs in one statement (benchmarks and tests).
pub async fn enqueue_noops(pool: &PgPool, count: i64, payload: Value) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "INSERT INTO timelines.jobs (kind, payload) SELECT 'noop', $2 FROM generate_series(1, $1)",
    )
    .bind(count)
    .bind(payload)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// An empty no-op payload.
pub fn noop_payload() -> Value {
    json!({})
}
