//! The per-workspace rate limiter shared by every worker process: a GCRA row in Postgres
//! (`timelines.reserve_request`), with `governor` in front so one process asks the row for at
//! most one slot per spacing interval.
//!
//! Spacing, not bursts: with a limit of L requests per minute, requests are spaced
//! `60 s / min(L - 1, 0.98 L)` apart. Any 60-second window, however it is aligned with the
//! server's, then holds at most L requests (⌊60 / spacing⌋ + 1 ≤ L), and the sustained rate is
//! 98 % of the limit (at 50/min: 49). The margin is at least one slot and at least 2 % of the
//! time, so a request delayed on its way (scheduling, network) by up to 2 % of the spacing times
//! L cannot push a window of the server's over the limit, even a window shorter than a minute
//! (600/min enforced as 10 per second keeps 20 ms of slack per ten requests). A token bucket of
//! L per minute (`Quota::per_minute(L)`) would admit 2L - 1 in the first minute.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use sqlx::PgPool;

use crate::timelines::Gate;

/// Longest a request waits for its slot; beyond it the job is snoozed instead.
pub const MAX_WAIT: Duration = Duration::from_secs(30);

/// The spacing between requests for a limit of `per_minute` requests per minute.
pub fn spacing(per_minute: u32) -> Duration {
    let l = f64::from(per_minute);
    Duration::from_secs(60).div_f64((l - 1.0).min(0.98 * l).max(1.0))
}

/// Paces the requests of one workspace across all processes.
pub struct WorkspaceLimiter {
    pool: PgPool,
    workspace: String,
    period: Duration,
    local: DefaultDirectRateLimiter,
}

impl WorkspaceLimiter {
    /// A limiter for `workspace` allowing `per_minute` requests per minute.
    pub fn new(pool: PgPool, workspace: &str, per_minute: u32) -> Arc<Self> {
        let period = spacing(per_minute);
        let quota = Quota::with_period(period)
            .expect("the spacing is never zero")
            .allow_burst(NonZeroU32::MIN);
        Arc::new(Self {
            pool,
            workspace: workspace.to_owned(),
            period,
            local: RateLimiter::direct(quota),
        })
    }

    /// Reserves the next shared slot if it is at most [`MAX_WAIT`] away; returns how long until
    /// the slot (reserved or not). Database trouble is retried: a request must never go out
    /// without a slot.
    async fn reserve(&self) -> (Duration, bool) {
        let mut failures = 0u32;
        loop {
            // One clock reading decides both the reservation and the wait.
            let answer: sqlx::Result<(f64, bool)> = sqlx::query_as(
                "WITH n AS (SELECT clock_timestamp() AS at)
                 SELECT greatest(0, extract(epoch FROM s - n.at))::float8,
                        s - n.at <= make_interval(secs => $3)
                   FROM n, LATERAL timelines.reserve_request($1, make_interval(secs => $2),
                                                             make_interval(secs => $3), n.at) s",
            )
            .bind(&self.workspace)
            .bind(self.period.as_secs_f64())
            .bind(MAX_WAIT.as_secs_f64())
            .fetch_one(&self.pool)
            .await;
            match answer {
                Ok((seconds, reserved)) => return (Duration::from_secs_f64(seconds), reserved),
                Err(error) => {
                    failures += 1;
                    let pause = Duration::from_millis(100 * 2u64.pow(failures.min(7)));
                    tracing::warn!(%error, workspace = %self.workspace, "reserving a request slot failed; retrying");
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    /// Waits for this process's turn, then for the shared slot. When the slot is more than
    /// [`MAX_WAIT`] away (a throttle pause, a crowd of workers), returns how far instead, having
    /// reserved nothing: the caller's job steps aside until then rather than sit on a claim.
    pub async fn acquire(&self) -> Result<(), Duration> {
        let started = std::time::Instant::now();
        self.local.until_ready().await;
        let (wait, reserved) = self.reserve().await;
        crate::telemetry::metrics::limiter_waited(
            &self.workspace,
            started.elapsed() + wait,
            !reserved,
        );
        if !reserved {
            return Err(wait);
        }
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }

    /// Pauses every worker of the workspace: for `retry_after`, or a growing backoff when the
    /// API gave none.
    pub async fn pause(&self, retry_after: Option<Duration>) {
        let result = sqlx::query("SELECT timelines.pause_requests($1, $2)")
            .bind(&self.workspace)
            .bind(retry_after.map(|d| d.as_secs_f64()))
            .execute(&self.pool)
            .await;
        match result {
            Ok(_) => {
                tracing::warn!(workspace = %self.workspace, retry_after_s = retry_after.map(|d| d.as_secs_f64()),
                "the API throttled the workspace: every worker pauses")
            }
            Err(error) => {
                tracing::warn!(%error, workspace = %self.workspace, "recording a throttle pause failed")
            }
        }
    }
}

impl Gate for WorkspaceLimiter {
    fn before(&self) -> BoxFuture<'_, Result<(), Duration>> {
        self.acquire().boxed()
    }

    fn throttled(&self, retry_after: Option<Duration>) -> BoxFuture<'_, ()> {
        self.pause(retry_after).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spacing_keeps_one_slot_of_margin_under_the_limit() {
        for per_minute in [2u32, 10, 50, 600, 6000] {
            let s = spacing(per_minute).as_secs_f64();
            // at most the limit in any 60 s window
            assert!(((60.0 / s).floor() as u32) < per_minute, "{per_minute}");
            // and at least 97 % of it sustained, from 50/min up
            if per_minute >= 50 {
                assert!(60.0 / s >= 0.97 * f64::from(per_minute), "{per_minute}");
            }
        }
    }

    #[test]
    fn a_limit_of_one_is_spaced_a_minute_apart() {
        assert_eq!(spacing(1), Duration::from_secs(60));
    }
}
