//! The quota refresher: enqueues a `refresh_quota` job per workspace on a schedule, so the
//! monthly ledger is reconciled with the API's own figures and held jobs learn when there is
//! room again. Each slot's job has an idempotency key, so any number of instances enqueue one.

use std::time::Duration;

use sqlx::PgPool;

use crate::shutdown::Shutdown;

/// Priority of the scheduled readings: above the reserve threshold, so they run even when bulk
/// jobs are held for quota.
pub const REFRESH_PRIORITY: i32 = 100;

/// Enqueues quota readings every `interval`.
pub struct QuotaRefresher {
    pool: PgPool,
    interval: Duration,
}

impl QuotaRefresher {
    /// A refresher on `pool`.
    pub fn new(pool: PgPool, interval: Duration) -> Self {
        Self { pool, interval }
    }

    /// Enqueues this slot's reading for every workspace that has none yet. Returns how many.
    pub async fn run_once(&self) -> sqlx::Result<u64> {
        let done = sqlx::query(
            "INSERT INTO timelines.jobs (kind, payload, workspace, priority, idempotency_key)
             SELECT 'refresh_quota', '{}', w.name, $2,
                    'refresh_quota:' || w.name || ':' || floor(extract(epoch FROM now()) / $1)::bigint
               FROM timelines.workspaces w
             ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING",
        )
        .bind(self.interval.as_secs_f64())
        .bind(REFRESH_PRIORITY)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Ticks until shutdown, starting with a reading at once.
    pub async fn run(self, shutdown: Shutdown) {
        let tick = || async {
            if let Err(error) = self.run_once().await {
                tracing::warn!(%error, "enqueueing quota readings failed");
            }
        };
        tick().await;
        super::every(self.interval, shutdown, tick).await
    }
}
