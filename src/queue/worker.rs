//! The worker: claims jobs in batches, runs them on a handler with bounded concurrency, and writes
//! their outcomes in batches, while a heartbeat keeps the leases of running jobs alive.
//!
//! Tasks of one worker:
//! - the producer (the caller of [`Worker::run`]) waits for a free slot, claims up to
//!   `claim_batch_size` jobs, and spawns one task per job holding a semaphore permit;
//! - a listener turns `NOTIFY timelines_jobs` into wake-ups (a hint only: the producer also polls,
//!   because notifications are lost while the listener reconnects);
//! - the completer writes outcomes: whatever has accumulated since its last write goes in one
//!   statement, so under load one UPDATE finishes hundreds of jobs and when idle a job is written
//!   at once;
//! - the heartbeat renews the lease of every job claimed and not yet written, every lease/3.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use futures_util::FutureExt;
use sqlx::PgPool;
use sqlx::postgres::{PgListener, PgPoolOptions};
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::{AbortHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;

use super::backoff::Backoff;
use super::{Job, Outcome};
use crate::config::DispatcherSettings;
use crate::db::queue::ClaimScope;
use crate::db::{self, queue as q};
use crate::shutdown::Shutdown;

/// The channel `timelines.jobs` inserts notify.
pub const NOTIFY_CHANNEL: &str = "timelines_jobs";

/// Runs jobs of the kinds it names.
pub trait Handler: Send + Sync + 'static {
    /// The kinds this handler runs; the worker claims only these.
    fn kinds(&self) -> Vec<String>;
    /// The workspaces this handler can run jobs for; `None` for all. An instance configured
    /// with fewer workspaces than another must not claim (and fail) the others' jobs.
    fn workspaces(&self) -> Option<Vec<String>> {
        None
    }
    /// Runs one attempt. Panics are caught and count as a failed attempt.
    fn handle(&self, job: Job) -> impl Future<Output = Outcome> + Send;
}

/// Settings of one worker.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Identifies this worker in `jobs.locked_by`; unique per process.
    pub id: String,
    /// Jobs running at once.
    pub concurrency: usize,
    /// Most jobs claimed per query.
    pub claim_batch_size: usize,
    /// Most outcomes written per statement (1 writes every job on its own).
    pub completion_batch_size: usize,
    /// Fallback poll interval (jittered ±10 %).
    pub poll_interval: Duration,
    /// Lease of a running job.
    pub lease: Duration,
    /// Longest one attempt may run.
    pub job_timeout: Duration,
    /// Retry delays for `Outcome::Retry` without an explicit delay.
    pub backoff: Backoff,
}

impl WorkerConfig {
    /// From `[dispatcher]`, with a fresh worker id.
    pub fn from_settings(settings: &DispatcherSettings) -> Self {
        Self {
            id: new_worker_id(),
            concurrency: settings.concurrency,
            claim_batch_size: settings.claim_batch_size,
            completion_batch_size: 1000,
            poll_interval: Duration::from_millis(settings.poll_interval_ms),
            lease: settings.lease(),
            job_timeout: Duration::from_secs(settings.job_timeout_seconds),
            backoff: Backoff {
                base: Duration::from_secs_f64(settings.retry_base_seconds),
                max: Duration::from_secs_f64(settings.retry_max_seconds),
                jitter: 0.2,
            },
        }
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self::from_settings(&DispatcherSettings::default())
    }
}

/// `host-pid-random`: readable in `locked_by`, unique across processes and restarts.
pub fn new_worker_id() -> String {
    let host = hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "host".into());
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    format!("{host}-{}-{suffix}", std::process::id())
}

/// What a worker did, returned when it stops.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Jobs claimed.
    pub claimed: AtomicU64,
    /// Outcomes written.
    pub completed: AtomicU64,
    /// Outcomes discarded because the job was no longer held (cancelled, or its lease rescued).
    pub discarded: AtomicU64,
    /// Jobs given back at shutdown.
    pub released: AtomicU64,
}

/// Claims and runs jobs until shut down.
pub struct Worker<H> {
    pool: PgPool,
    config: WorkerConfig,
    handler: Arc<H>,
    stats: Arc<WorkerStats>,
}

/// Jobs claimed by this worker and not yet written: attempt number and the task running it.
#[derive(Default)]
struct Jobs(Mutex<HashMap<i64, (i32, Option<AbortHandle>)>>);

type Inflight = Arc<Jobs>;

impl Jobs {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, (i32, Option<AbortHandle>)>> {
        self.0.lock().expect("inflight lock")
    }

    fn claimed(&self, jobs: &[Job]) {
        self.lock()
            .extend(jobs.iter().map(|job| (job.id, (job.attempts, None))));
    }

    fn started(&self, id: i64, attempt: i32, task: AbortHandle) {
        if let Some(entry) = self.lock().get_mut(&id).filter(|(a, _)| *a == attempt) {
            entry.1 = Some(task);
        }
    }

    /// Forgets a written attempt. Only that attempt's entry: the same job may have been rescued
    /// and claimed again by this worker as a newer attempt, whose lease must stay renewed.
    fn written(&self, id: i64, attempt: i32) {
        let mut held = self.lock();
        if held.get(&id).is_some_and(|(a, _)| *a == attempt) {
            held.remove(&id);
        }
    }

    fn held(&self) -> Vec<(i64, i32)> {
        self.lock()
            .iter()
            .map(|(id, (attempt, _))| (*id, *attempt))
            .collect()
    }

    /// Stops the attempts whose lease is gone (cancelled by a user, or rescued after this worker
    /// failed to renew in time): someone else owns the job now. Returns how many.
    fn lost(&self, lost: &[(i64, i32)]) -> usize {
        let mut held = self.lock();
        let mut stopped = 0;
        for (id, attempt) in lost {
            if held.get(id).is_some_and(|(a, _)| a == attempt)
                && let Some((_, task)) = held.remove(id)
            {
                if let Some(task) = task {
                    task.abort();
                }
                stopped += 1;
            }
        }
        stopped
    }
}

impl<H: Handler> Worker<H> {
    /// A worker on `pool` running `handler`.
    pub fn new(pool: PgPool, config: WorkerConfig, handler: Arc<H>) -> Self {
        Self {
            pool,
            config,
            handler,
            stats: Arc::default(),
        }
    }

    /// The id written to `jobs.locked_by`.
    pub fn id(&self) -> &str {
        &self.config.id
    }

    /// Live counters (they keep counting while the worker runs).
    pub fn stats(&self) -> Arc<WorkerStats> {
        self.stats.clone()
    }

    /// Runs until `shutdown` stops claiming; then waits for running jobs until it aborts, writes
    /// every outcome, and gives back whatever was cut off.
    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<Arc<WorkerStats>> {
        let kinds = self.handler.kinds();
        let workspaces = self.handler.workspaces();
        let inflight: Inflight = Arc::default();
        let wake = Arc::new(Notify::new());
        let background = CancellationToken::new();
        let (tx, rx) = mpsc::channel::<q::Finished>(self.config.concurrency * 2 + 1024);

        // Abort-on-drop: if this future is dropped (its task aborted), the helpers stop with it
        // instead of renewing leases of jobs nobody runs any more.
        let listener = AbortOnDropHandle::new(tokio::spawn(listen(
            self.pool.clone(),
            NOTIFY_CHANNEL,
            wake.clone(),
            background.clone(),
        )));
        let heartbeat = AbortOnDropHandle::new(tokio::spawn(heartbeat(
            self.pool.clone(),
            self.config.clone(),
            inflight.clone(),
            background.clone(),
        )));
        let completer = AbortOnDropHandle::new(tokio::spawn(complete(
            self.pool.clone(),
            self.config.clone(),
            rx,
            inflight.clone(),
            self.stats.clone(),
            wake.clone(),
        )));
        tracing::info!(worker = %self.config.id, concurrency = self.config.concurrency, ?kinds, "worker started");

        let scope = ClaimScope {
            kinds: &kinds,
            workspaces: workspaces.as_deref(),
        };
        let mut tasks = self.produce(&shutdown, scope, &inflight, &wake, tx).await;

        // Stage one: let running jobs finish; stage two: abandon them.
        let running = tasks.len();
        if running > 0 {
            tracing::info!(running, "waiting for running jobs to finish");
        }
        tokio::select! {
            _ = async { while tasks.join_next().await.is_some() {} } => {}
            _ = shutdown.aborting() => {
                tracing::warn!(running = tasks.len(), "grace period over: aborting running jobs");
                tasks.abort_all();
                while tasks.join_next().await.is_some() {}
            }
        }
        // Every task has ended, so every sender is gone: the completer writes what is left and ends.
        if let Err(e) = completer.await {
            tracing::error!(error = %e, "the completer task failed");
        }
        background.cancel();
        let _ = heartbeat.await;
        let _ = listener.await;

        let cut_off: Vec<i64> = inflight.held().into_iter().map(|(id, _)| id).collect();
        if !cut_off.is_empty() {
            let released = q::release(&self.pool, &self.config.id, &cut_off, true).await?;
            self.stats.released.fetch_add(released, Ordering::Relaxed);
            tracing::warn!(
                jobs = released,
                "released interrupted jobs for another attempt"
            );
        }
        tracing::info!(worker = %self.config.id, "worker stopped");
        Ok(self.stats)
    }

    /// The claim loop. Returns the set of still-running job tasks when claiming stops.
    async fn produce(
        &self,
        shutdown: &Shutdown,
        scope: ClaimScope<'_>,
        inflight: &Inflight,
        wake: &Notify,
        tx: mpsc::Sender<q::Finished>,
    ) -> JoinSet<()> {
        // The producer claims one batch at a time, so one connection is all it needs.
        let claimer = PgPoolOptions::new()
            .max_connections(1)
            .connect_lazy_with(q::claim_connect_options(&self.pool.connect_options()));
        let slots = Arc::new(Semaphore::new(self.config.concurrency));
        let mut tasks = JoinSet::new();
        let mut failures = 0u32;
        loop {
            while tasks.try_join_next().is_some() {}
            let first = tokio::select! {
                biased;
                _ = shutdown.stopping() => break,
                permit = slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            };
            let mut permits = vec![first];
            while permits.len() < self.config.claim_batch_size {
                match slots.clone().try_acquire_owned() {
                    Ok(permit) => permits.push(permit),
                    Err(_) => break,
                }
            }
            let wanted = permits.len();
            let jobs = match q::claim_scoped(
                &claimer,
                &self.config.id,
                wanted,
                self.config.lease,
                scope,
            )
            .await
            {
                Ok(jobs) => {
                    failures = 0;
                    jobs
                }
                Err(error) => {
                    failures += 1;
                    let pause = Backoff {
                        base: Duration::from_millis(100),
                        max: Duration::from_secs(10),
                        jitter: 0.2,
                    }
                    .delay(failures, rand::random());
                    tracing::warn!(error = %error, retry_in_ms = pause.as_millis() as u64, "claiming jobs failed");
                    drop(permits);
                    tokio::select! {
                        _ = shutdown.stopping() => break,
                        _ = tokio::time::sleep(pause) => continue,
                    }
                }
            };
            let full = jobs.len() == wanted;
            self.stats
                .claimed
                .fetch_add(jobs.len() as u64, Ordering::Relaxed);
            inflight.claimed(&jobs);
            for (job, permit) in jobs.into_iter().zip(permits.drain(..)) {
                // Info level: the attempt's warnings carry the job at the default log level.
                let span = tracing::info_span!("job", job_id = job.id, kind = %job.kind,
                    workspace = %job.workspace, attempt = job.attempts);
                let (id, attempt) = (job.id, job.attempts);
                let run = run_one(self.handler.clone(), self.config.clone(), job, tx.clone());
                let task = tasks.spawn(
                    async move {
                        run.await;
                        drop(permit);
                    }
                    .instrument(span),
                );
                inflight.started(id, attempt, task);
            }
            drop(permits);
            if !full {
                // Nothing more is due now: sleep until a NOTIFY, a finished job (a retry may be
                // due), or the poll interval.
                let poll = self
                    .config
                    .poll_interval
                    .mul_f64(0.9 + 0.2 * rand::random::<f64>());
                tokio::select! {
                    _ = shutdown.stopping() => break,
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(poll) => {}
                }
            }
        }
        claimer.close().await;
        tasks
    }
}

/// Runs one attempt and hands its outcome to the completer.
async fn run_one<H: Handler>(
    handler: Arc<H>,
    config: WorkerConfig,
    job: Job,
    tx: mpsc::Sender<q::Finished>,
) {
    let (id, attempt, kind) = (job.id, job.attempts, job.kind.clone());
    let workspace = job.workspace.clone();
    let started = std::time::Instant::now();
    let attempt_future = AssertUnwindSafe(handler.handle(job)).catch_unwind();
    let outcome = match tokio::time::timeout(config.job_timeout, attempt_future).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(panic)) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            // Cut off mid-way: whatever the attempt did may have taken effect.
            Outcome::Uncertain {
                error: format!("the handler panicked: {message}"),
                delay: None,
            }
        }
        Err(_) => Outcome::Uncertain {
            error: format!("attempt timed out after {} s", config.job_timeout.as_secs()),
            delay: None,
        },
    };
    crate::telemetry::metrics::attempt_finished(
        &workspace,
        &kind,
        outcome.label(),
        started.elapsed(),
    );
    let completion = match outcome {
        Outcome::Done(result) => q::Completion::Succeeded(result),
        Outcome::Retry { error, delay } => {
            let delay = delay
                .unwrap_or_else(|| config.backoff.delay(attempt.max(1) as u32, rand::random()));
            tracing::warn!(job_id = id, %kind, attempt, %error, retry_in_s = delay.as_secs_f64(), "attempt failed");
            q::Completion::Retry {
                error,
                delay,
                uncertain: false,
            }
        }
        Outcome::Uncertain { error, delay } => {
            let delay = delay
                .unwrap_or_else(|| config.backoff.delay(attempt.max(1) as u32, rand::random()));
            tracing::warn!(job_id = id, %kind, attempt, %error, retry_in_s = delay.as_secs_f64(),
                "attempt ended with an unknown effect; the next attempt checks before repeating it");
            q::Completion::Retry {
                error,
                delay,
                uncertain: true,
            }
        }
        Outcome::Hold {
            reason,
            recheck_after,
        } => {
            tracing::info!(job_id = id, %kind, %reason, "job held");
            q::Completion::Hold {
                reason,
                delay: recheck_after,
            }
        }
        Outcome::Snooze(delay) => q::Completion::Snooze { delay },
        Outcome::Fail(error) => {
            tracing::warn!(job_id = id, %kind, attempt, %error, "job failed");
            q::Completion::Failed { error }
        }
    };
    // Fails only when the completer is gone, i.e. never before this task ends.
    let _ = tx
        .send(q::Finished {
            id,
            attempt,
            completion,
        })
        .await;
}

/// Writes outcomes in batches until every sender is dropped and the channel is empty.
async fn complete(
    pool: PgPool,
    config: WorkerConfig,
    mut rx: mpsc::Receiver<q::Finished>,
    inflight: Inflight,
    stats: Arc<WorkerStats>,
    wake: Arc<Notify>,
) {
    let mut batch = Vec::with_capacity(config.completion_batch_size);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < config.completion_batch_size {
            match rx.try_recv() {
                Ok(finished) => batch.push(finished),
                Err(_) => break,
            }
        }
        let write = || q::complete(&pool, &config.id, &batch);
        let written = write
            .retry(ExponentialBuilder::default().with_min_delay(Duration::from_millis(50))
                .with_max_delay(Duration::from_secs(5))
                .with_max_times(10)
                .with_jitter())
            .when(db::is_transient)
            .notify(|error, pause| tracing::warn!(%error, retry_in_ms = pause.as_millis() as u64, "writing job outcomes failed"))
            .await;
        match written {
            Ok(ids) => {
                let discarded = batch.len() - ids.len();
                stats
                    .completed
                    .fetch_add(ids.len() as u64, Ordering::Relaxed);
                if discarded > 0 {
                    stats
                        .discarded
                        .fetch_add(discarded as u64, Ordering::Relaxed);
                    tracing::info!(
                        discarded,
                        "outcomes discarded: the jobs were cancelled or rescued meanwhile"
                    );
                }
                for finished in &batch {
                    inflight.written(finished.id, finished.attempt);
                }
            }
            Err(error) => {
                // The leases run out and the rescuer hands these jobs to another attempt, marked
                // interrupted so that attempt checks whether the effect already happened.
                tracing::error!(%error, jobs = batch.len(), "giving up writing job outcomes");
                for finished in &batch {
                    inflight.written(finished.id, finished.attempt);
                }
            }
        }
        batch.clear();
        // A retry or snooze may already be due; let the producer look.
        wake.notify_one();
    }
}

/// Renews the leases of every job this worker holds, every lease/3.
async fn heartbeat(
    pool: PgPool,
    config: WorkerConfig,
    inflight: Inflight,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(config.lease / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let held = inflight.held();
        let ids: Vec<i64> = held.iter().map(|(id, _)| *id).collect();
        match q::heartbeat(&pool, &config.id, &ids, config.lease).await {
            Ok(renewed) => {
                let lost: Vec<(i64, i32)> = held
                    .into_iter()
                    .filter(|(id, _)| !renewed.contains(id))
                    .collect();
                let stopped = inflight.lost(&lost);
                if stopped > 0 {
                    tracing::warn!(
                        jobs = stopped,
                        "stopped attempts whose jobs were cancelled or rescued meanwhile"
                    );
                }
            }
            // Nothing can be told from a failed renewal: keep going, the next tick tries again.
            Err(error) => tracing::warn!(%error, jobs = ids.len(), "renewing job leases failed"),
        }
    }
}

/// Forwards notifications on `channel` as wake-ups until stopped, reconnecting with backoff (a
/// hint only: notifications sent while it reconnects are lost, so listeners also poll).
pub(crate) async fn listen(
    pool: PgPool,
    channel: &'static str,
    wake: Arc<Notify>,
    stop: CancellationToken,
) {
    let mut failures = 0u32;
    loop {
        let error = tokio::select! {
            _ = stop.cancelled() => return,
            error = listen_session(&pool, channel, &wake, &mut failures) => error,
        };
        failures += 1;
        let pause = Backoff {
            base: Duration::from_millis(200),
            max: Duration::from_secs(10),
            jitter: 0.2,
        }
        .delay(failures, rand::random());
        tracing::warn!(%error, retry_in_ms = pause.as_millis() as u64, "LISTEN connection lost; polling meanwhile");
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// One LISTEN connection, until it fails.
async fn listen_session(
    pool: &PgPool,
    channel: &str,
    wake: &Notify,
    failures: &mut u32,
) -> sqlx::Error {
    let mut listener = match PgListener::connect_with(pool).await {
        Ok(listener) => listener,
        Err(error) => return error,
    };
    if let Err(error) = listener.listen(channel).await {
        return error;
    }
    *failures = 0;
    // Anything inserted while nobody listened: look now.
    wake.notify_one();
    loop {
        match listener.recv().await {
            Ok(_) => wake.notify_one(),
            Err(error) => return error,
        }
    }
}
