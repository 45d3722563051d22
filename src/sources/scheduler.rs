//! Runs each enabled source on its cron schedule (UTC) until shutdown. Every instance runs the
//! same schedules; the per-source lock and the per-tick claim in `source_state` make each tick
//! run once across all of them, and a run never overlaps the previous one. A tick missed while a
//! run was still going is skipped, not made up.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::task::JoinSet;

use super::engine::{Mode, Poller, RunError};
use super::schedule::next_after;
use crate::shutdown::Shutdown;

/// Runs every scheduled source until `shutdown`; returns when all loops have stopped.
pub async fn run(poller: Arc<Poller>, shutdown: Shutdown) {
    let mut loops = JoinSet::new();
    for source in poller.catalog().sources.values() {
        if !source.enabled || source.schedule.is_none() {
            continue;
        }
        let (poller, shutdown, source) = (poller.clone(), shutdown.clone(), source.clone());
        loops.spawn(async move {
            let schedule = source.schedule.clone().expect("checked above");
            tracing::info!(source = %source.name, schedule = source.schedule_text.as_deref().unwrap_or(""), "source scheduled");
            loop {
                let Some(tick) = next_after(&schedule, Utc::now()) else {
                    tracing::warn!(source = %source.name, "the schedule has no future run");
                    return;
                };
                let wait = (tick - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                tokio::select! {
                    _ = shutdown.stopping() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                let run = poller.run(&source.name, Mode::Scheduled { tick }, false);
                let result = tokio::select! {
                    // A run stopped by shutdown leaves its cursor at the last committed page.
                    _ = shutdown.stopping() => return,
                    result = run => result,
                };
                match result {
                    Ok(report) => tracing::info!(
                        source = %source.name,
                        records = report.records_seen,
                        jobs = report.jobs_created,
                        skipped = report.skipped.values().sum::<u64>(),
                        pages = report.pages,
                        "source polled"
                    ),
                    Err(RunError::Busy(_)) | Err(RunError::TickTaken(_)) => {
                        tracing::debug!(source = %source.name, "tick run elsewhere");
                    }
                    Err(error) => tracing::warn!(source = %source.name, error = %error, "polling failed"),
                }
            }
        });
    }
    while let Some(done) = loops.join_next().await {
        if let Err(error) = done
            && error.is_panic()
        {
            tracing::error!(%error, "a source's schedule loop panicked; that source is no longer polled");
        }
    }
}
