//! The rescuer: jobs whose worker stopped renewing their lease (crash, kill -9, lost network) go
//! back to `retrying`, marked `interrupted` so the next attempt checks for a side effect first.

use std::time::Duration;

use sqlx::PgPool;

use crate::db::queue as q;
use crate::shutdown::Shutdown;

/// Settings of the rescuer.
#[derive(Debug, Clone)]
pub struct RescuerConfig {
    /// How often to look. A crashed worker's jobs wait at most lease + interval.
    pub interval: Duration,
    /// Jobs rescued per statement.
    pub batch_size: i64,
}

impl Default for RescuerConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            batch_size: 1000,
        }
    }
}

/// Returns jobs with expired leases to the queue.
pub struct Rescuer {
    pool: PgPool,
    config: RescuerConfig,
}

impl Rescuer {
    /// A rescuer on `pool`.
    pub fn new(pool: PgPool, config: RescuerConfig) -> Self {
        Self { pool, config }
    }

    /// Rescues every job whose lease has expired, in batches, and returns `held` jobs whose
    /// recheck time has come to the queue. Returns how many were rescued.
    pub async fn run_once(&self) -> sqlx::Result<u64> {
        let mut total = 0;
        loop {
            let rescued = q::rescue_expired(&self.pool, self.config.batch_size).await?;
            total += rescued;
            if rescued < self.config.batch_size as u64 {
                break;
            }
        }
        while q::resume_held(&self.pool, self.config.batch_size).await?
            == self.config.batch_size as u64
        {}
        Ok(total)
    }

    /// Ticks until shutdown.
    pub async fn run(self, shutdown: Shutdown) {
        super::every(self.config.interval, shutdown, || async {
            match self.run_once().await {
                Ok(0) => {}
                Ok(rescued) => tracing::warn!(
                    rescued,
                    "rescued jobs whose worker stopped renewing its lease"
                ),
                Err(error) => tracing::warn!(%error, "rescuing expired jobs failed"),
            }
        })
        .await
    }
}
