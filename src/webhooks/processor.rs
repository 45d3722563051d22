//! The processor loop: applies stored events in arrival order, one transaction per event. The
//! event's row is locked `FOR UPDATE SKIP LOCKED` for the transaction, so any number of
//! instances share the work and a crash leaves the event pending (its effects rolled back). It
//! wakes on `NOTIFY timelines_webhooks` (sent by every insert) and polls as well, since
//! notifications are lost while the listener reconnects.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::apply::Applier;
use super::config::WebhookSettings;
use super::events::{self, status};
use crate::queue::backoff::Backoff;
use crate::shutdown::Shutdown;
use crate::sources::inbound::Inbound;

/// The channel the `webhook_events` insert trigger notifies.
pub const NOTIFY_CHANNEL: &str = "timelines_webhooks";
/// Events applied per [`Processor::run_once`] at most, so shutdown is never far.
const BATCH: usize = 200;
/// Old events deleted per statement.
const PRUNE_BATCH: i64 = 10_000;
/// How often old events are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// What one [`Processor::run_once`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessorRunResult {
    /// Events applied (processed).
    pub processed: u64,
    /// Events marked ignored, malformed, unknown or failed.
    pub refused: u64,
    /// Attempts that failed on a transient error and will be retried.
    pub retried: u64,
    /// Jobs created by inbound rules.
    pub jobs_created: u64,
}

impl ProcessorRunResult {
    fn events(&self) -> u64 {
        self.processed + self.refused + self.retried
    }
}

/// Applies stored webhook events.
pub struct Processor {
    pool: PgPool,
    applier: Applier,
    wake: Arc<Notify>,
    poll_interval: Duration,
    max_attempts: u32,
    retention: Duration,
}

impl Processor {
    /// A processor on `pool`.
    pub fn new(pool: PgPool, settings: Arc<WebhookSettings>, rules: Arc<Inbound>) -> Self {
        Self {
            pool,
            poll_interval: Duration::from_millis(settings.poll_interval_ms),
            max_attempts: settings.max_attempts,
            retention: Duration::from_secs(settings.retention_hours * 3600),
            applier: Applier { settings, rules },
            wake: Arc::new(Notify::new()),
        }
    }

    /// Applies due events until none is left or [`BATCH`] were handled.
    pub async fn run_once(&self) -> sqlx::Result<ProcessorRunResult> {
        let mut result = ProcessorRunResult::default();
        while result.events() < BATCH as u64 {
            if !self.apply_next(&mut result).await? {
                break;
            }
        }
        Ok(result)
    }

    /// Applies the next due event; false when there is none.
    async fn apply_next(&self, result: &mut ProcessorRunResult) -> sqlx::Result<bool> {
        let mut tx = self.pool.begin().await?;
        let Some(event) = events::claim_next(&mut tx).await? else {
            return Ok(false);
        };
        let applied = match self.applier.apply(&mut tx, &event).await {
            Ok(applied) => applied,
            Err(error) => {
                drop(tx); // rolled back: the event's partial effects go with it
                self.failed(&event, &error, result).await?;
                return Ok(true);
            }
        };
        events::finish(&mut tx, event.id, &applied).await?;
        tx.commit().await?;
        if applied.status == status::PROCESSED {
            result.processed += 1;
            result.jobs_created += applied.jobs_created;
        } else {
            result.refused += 1;
            tracing::warn!(
                id = event.id, event_type = %event.event_type, status = applied.status,
                error = applied.error.as_deref().unwrap_or(""), "webhook event not applied"
            );
        }
        Ok(true)
    }

    /// Records a failed attempt: a write the database refuses (bad data, a broken constraint)
    /// fails at once; anything else (a lost connection, a deadlock, a key another instance took
    /// at the same moment) is retried with backoff until `max_attempts`.
    async fn failed(
        &self,
        event: &events::Claimed,
        error: &sqlx::Error,
        result: &mut ProcessorRunResult,
    ) -> sqlx::Result<()> {
        let permanent = matches!(error, sqlx::Error::Database(e)
            if e.code().is_some_and(|c| (c.starts_with("22") || c.starts_with("23")) && c != "23505"));
        let attempts = if permanent { 0 } else { self.max_attempts };
        let delay = Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(300),
            jitter: 0.2,
        }
        .delay(event.attempts as u32 + 1, rand::random());
        let gave_up = events::retry_later(
            &self.pool,
            event.id,
            &format!("applying failed: {error}"),
            delay,
            attempts,
        )
        .await?;
        if gave_up {
            result.refused += 1;
        } else {
            result.retried += 1;
        }
        tracing::warn!(id = event.id, event_type = %event.event_type, %error, gave_up, "applying a webhook event failed");
        Ok(())
    }

    /// Applies events until shutdown: on a wake-up, else every poll interval (jittered).
    pub async fn run(self, shutdown: Shutdown) {
        let stop = CancellationToken::new();
        let listener = tokio::spawn(crate::queue::listen(
            self.pool.clone(),
            NOTIFY_CHANNEL,
            self.wake.clone(),
            stop.clone(),
        ));
        let mut next_prune = tokio::time::Instant::now();
        let mut failures = 0u32;
        loop {
            let pause = match self.run_once().await {
                Ok(done) => {
                    failures = 0;
                    if done.events() > 0 {
                        tracing::info!(
                            processed = done.processed,
                            refused = done.refused,
                            retried = done.retried,
                            jobs_created = done.jobs_created,
                            "webhook events applied"
                        );
                    }
                    if done.events() >= BATCH as u64 {
                        continue;
                    }
                    self.poll_interval
                        .mul_f64(0.9 + 0.2 * rand::random::<f64>())
                }
                Err(error) => {
                    failures += 1;
                    tracing::warn!(%error, "applying webhook events failed; retrying");
                    Duration::from_millis(200 * u64::from(failures.min(50)))
                }
            };
            if tokio::time::Instant::now() >= next_prune {
                next_prune += PRUNE_EVERY;
                self.prune().await;
            }
            tokio::select! {
                _ = shutdown.stopping() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
        stop.cancel();
        let _ = listener.await;
    }

    async fn prune(&self) {
        loop {
            match events::prune(&self.pool, self.retention, PRUNE_BATCH).await {
                Ok(n) if n == PRUNE_BATCH as u64 => continue,
                Ok(0) => return,
                Ok(n) => {
                    tracing::info!(deleted = n, "old webhook events pruned");
                    return;
                }
                Err(error) => {
                    tracing::warn!(%error, "pruning webhook events failed");
                    return;
                }
            }
        }
    }
}
