//! `timelines-sync status`: job counts by workspace, kind and state, and the oldest queued job.

use std::fmt::Write;

use sqlx::PgPool;

/// One row of `timelines.job_counts`.
#[derive(Debug, sqlx::FromRow)]
pub struct CountRow {
    /// Workspace.
    pub workspace: String,
    /// Job kind.
    pub kind: String,
    /// State.
    pub state: String,
    /// How many.
    pub jobs: i64,
}

/// One row of `timelines.rate_limit_status`.
#[derive(Debug, sqlx::FromRow)]
pub struct RateRow {
    /// Workspace.
    pub workspace: String,
    /// Configured limit.
    pub rate_limit_per_minute: i32,
    /// Requests made in the last minute.
    pub requests_last_minute: i64,
    /// Seconds until the next request may go (0: now).
    pub next_in_seconds: f64,
    /// Throttle pauses in the last hour.
    pub throttle_pauses_last_hour: i64,
    /// API calls left this period (latest quota reading), if read.
    pub api_calls_left: Option<i64>,
    /// Messaging credits left (latest quota reading), if read.
    pub messaging_left: Option<i64>,
}

/// One row of `timelines.source_status`.
#[derive(Debug, sqlx::FromRow)]
pub struct SourceRow {
    /// The source.
    pub source: String,
    /// Its cursor.
    pub cursor_value: chrono::DateTime<chrono::Utc>,
    /// The last run's status.
    pub last_run_status: Option<String>,
    /// When the last run started.
    pub last_run_started_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Records read in 24 h.
    pub records_24h: i64,
    /// Jobs created in 24 h.
    pub jobs_24h: i64,
    /// Records skipped in 24 h.
    pub skipped_24h: i64,
    /// The last error, if the last run failed.
    pub last_error: Option<String>,
}

/// The figures `status` prints.
#[derive(Debug)]
pub struct Report {
    /// Per polled source.
    pub sources: Vec<SourceRow>,
    /// Counts by workspace, kind, state.
    pub counts: Vec<CountRow>,
    /// The oldest due queued job: id and age in seconds.
    pub oldest_queued: Option<(i64, f64)>,
    /// Rate limit and quota per workspace.
    pub rates: Vec<RateRow>,
}

/// Reads the figures.
pub async fn report(pool: &PgPool) -> sqlx::Result<Report> {
    let counts = sqlx::query_as(
        "SELECT workspace, kind, state, jobs FROM timelines.job_counts ORDER BY workspace, kind, state",
    )
    .fetch_all(pool)
    .await?;
    let oldest_queued = sqlx::query_as(
        "SELECT id, extract(epoch FROM now() - run_at)::float8 FROM timelines.jobs
          WHERE state IN ('queued', 'retrying') AND run_at <= now()
          ORDER BY run_at, id LIMIT 1",
    )
    .fetch_optional(pool)
    .await?;
    let rates = sqlx::query_as(
        "SELECT workspace, rate_limit_per_minute, requests_last_minute,
                greatest(0, extract(epoch FROM next_request_at - now()))::float8 AS next_in_seconds,
                throttle_pauses_last_hour, api_calls_left, messages_left AS messaging_left
           FROM timelines.rate_limit_status ORDER BY workspace",
    )
    .fetch_all(pool)
    .await?;
    let sources = sqlx::query_as(
        "SELECT source, cursor_value, last_run_status, last_run_started_at, records_24h::int8,
                jobs_24h::int8, skipped_24h::int8, last_error
           FROM timelines.source_status ORDER BY source",
    )
    .fetch_all(pool)
    .await?;
    Ok(Report {
        sources,
        counts,
        oldest_queued,
        rates,
    })
}

impl Report {
    /// The report as a text table.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if self.counts.is_empty() {
            out.push_str("no jobs\n");
        } else {
            let w = self
                .counts
                .iter()
                .map(|r| r.workspace.len())
                .max()
                .unwrap_or(0)
                .max(9);
            let k = self
                .counts
                .iter()
                .map(|r| r.kind.len())
                .max()
                .unwrap_or(0)
                .max(4);
            let _ = writeln!(
                out,
                "{:<w$}  {:<k$}  {:<9}  {:>9}",
                "workspace", "kind", "state", "jobs"
            );
            for r in &self.counts {
                let _ = writeln!(
                    out,
                    "{:<w$}  {:<k$}  {:<9}  {:>9}",
                    r.workspace, r.kind, r.state, r.jobs
                );
            }
        }
        match self.oldest_queued {
            Some((id, age)) => {
                let _ = writeln!(
                    out,
                    "oldest queued job: {} waiting for {}",
                    id,
                    human_age(age)
                );
            }
            None => out.push_str("oldest queued job: none waiting\n"),
        }
        let _ = writeln!(
            out,
            "\n{:<12} {:>9} {:>13} {:>12} {:>15} {:>15} {:>15}",
            "workspace",
            "limit/min",
            "last minute",
            "next in",
            "throttles (1h)",
            "api calls left",
            "messages left"
        );
        let opt = |v: Option<i64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
        for r in &self.rates {
            let _ = writeln!(
                out,
                "{:<12} {:>9} {:>13} {:>11.1}s {:>15} {:>15} {:>15}",
                r.workspace,
                r.rate_limit_per_minute,
                r.requests_last_minute,
                r.next_in_seconds,
                r.throttle_pauses_last_hour,
                opt(r.api_calls_left),
                opt(r.messaging_left)
            );
        }
        if !self.sources.is_empty() {
            let _ = writeln!(
                out,
                "\n{:<16} {:<20} {:<11} {:<20} {:>9} {:>9} {:>9}",
                "source", "cursor", "last run", "started", "read 24h", "jobs 24h", "skip 24h"
            );
            let t = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M:%S").to_string();
            for r in &self.sources {
                let _ = writeln!(
                    out,
                    "{:<16} {:<20} {:<11} {:<20} {:>9} {:>9} {:>9}",
                    r.source,
                    t(r.cursor_value),
                    r.last_run_status.as_deref().unwrap_or("-"),
                    r.last_run_started_at
                        .map(t)
                        .unwrap_or_else(|| "-".to_owned()),
                    r.records_24h,
                    r.jobs_24h,
                    r.skipped_24h
                );
                if let Some(error) = &r.last_error {
                    let _ = writeln!(out, "  last error: {error}");
                }
            }
        }
        out
    }
}

fn human_age(seconds: f64) -> String {
    let s = seconds.max(0.0);
    match s {
        s if s < 60.0 => format!("{s:.1}s"),
        s if s < 3600.0 => format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64),
        s => format!(
            "{}h{:02}m",
            (s / 3600.0) as u64,
            ((s % 3600.0) / 60.0) as u64
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_naturally() {
        assert_eq!(human_age(4.25), "4.2s");
        assert_eq!(human_age(125.0), "2m05s");
        assert_eq!(human_age(7322.0), "2h02m");
    }
}
