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
    /// Rows deleted per statement.
    pub batch_size: i64,
}

impl Default for PrunerConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(300),
            retention: Duration::from_secs(7 * 24 * 3600),
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

    /// Deletes every finished job past retention, batch by batch. Returns how many. Runs only in
    /// the instance that holds the pruner's advisory lock; the others return 0 at once.
    pub async fn run_once(&self) -> sqlx::Result<u64> {
        let mut conn = self.pool.acquire().await?;
        let locked: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext('timelines.pruner'))")
                .fetch_one(&mut *conn)
                .await?;
        if !locked {
            return Ok(0);
        }
        let mut total = 0;
        let result = loop {
            match q::prune_finished(&mut *conn, self.config.retention, self.config.batch_size).await
            {
                Ok(deleted) => {
                    total += deleted;
                    if deleted < self.config.batch_size as u64 {
                        break Ok(total);
                    }
                }
                Err(error) => break Err(error),
            }
        };
        sqlx::query("SELECT pg_advisory_unlock(hashtext('timelines.pruner'))")
            .execute(&mut *conn)
            .await?;
        result
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
