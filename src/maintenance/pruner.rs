//! The pruner: deletes finished jobs (succeeded, failed, cancelled) past the retention period, in
//! bounded batches so it never holds long locks or bloats one transaction.

use std::time::Duration;

use sqlx::PgPool;

use crate::db::queue as q;
use crate::shutdown::Shutdown;

/// Settings of the pruner.
#[derive(Debug, Clone)]
pub struct PrunerConfig {
    /// How often to prune.
    pub interval: Duration,
    /// Finished jobs younger than this are kept.
    pub retention: Duration,
    /// Rows of `timelines.api_requests` younger than this are kept.
    pub request_log_retention: Duration,
    /// Rows deleted per statement.
    pub batch_size: i64,
}

impl Default for PrunerConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(300),
            retention: Duration::from_secs(7 * 24 * 3600),
            request_log_retention: Duration::from_secs(30 * 24 * 3600),
            batch_size: 10_000,
        }
    }
}

/// Deletes old finished jobs.
pub struct Pruner {
    pool: PgPool,
    config: PrunerConfig,
}

impl Pruner {
    /// A pruner on `pool`.
    pub fn new(pool: PgPool, config: PrunerConfig) -> Self {
        Self { pool, config }
    }

    /// Deletes every finished job and request-log row past retention, batch by batch. Returns how
    /// many jobs. Runs only in the instance that holds the pruner's advisory lock; the others
    /// return 0 at once.
    pub async fn run_once(&self) -> sqlx::Result<u64> {
        let mut conn = self.pool.acquire().await?;
        let locked: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext('timelines.pruner'))")
                .fetch_one(&mut *conn)
                .await?;
        if !locked {
            return Ok(0);
        }
        let result = self.prune(&mut conn).await;
        sqlx::query("SELECT pg_advisory_unlock(hashtext('timelines.pruner'))")
            .execute(&mut *conn)
            .await?;
        result
    }

    async fn prune(&self, conn: &mut sqlx::PgConnection) -> sqlx::Result<u64> {
        let batch = self.config.batch_size;
        let mut total = 0;
        loop {
            let deleted = q::prune_finished(&mut *conn, self.config.retention, batch).await?;
            total += deleted;
            if deleted < batch as u64 {
                break;
            }
        }
        let mut requests = 0;
        loop {
            let deleted =
                q::prune_request_log(&mut *conn, self.config.request_log_retention, batch).await?;
            requests += deleted;
            if deleted < batch as u64 {
                break;
            }
        }
        if requests > 0 {
            tracing::info!(requests, "pruned request log rows past retention");
        }
        Ok(total)
    }

    /// Ticks until shutdown.
    pub async fn run(self, shutdown: Shutdown) {
        super::every(self.config.interval, shutdown, || async {
            match self.run_once().await {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(deleted, "pruned finished jobs past retention"),
                Err(error) => tracing::warn!(%error, "pruning finished jobs failed"),
            }
        })
        .await
    }
}
