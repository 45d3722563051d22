//! The text `poll` and `backfill` print.

use std::fmt::Write;

use super::engine::RunReport;

/// The report of one run, for a terminal.
pub fn render(report: &RunReport, dry_run: bool) -> String {
    let mut out = String::new();
    let t = |v: Option<chrono::DateTime<chrono::Utc>>| {
        v.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_else(|| "-".to_owned())
    };
    let _ = writeln!(
        out,
        "{}source {}: window {} .. {}",
        if dry_run {
            "DRY RUN (nothing written) "
        } else {
            ""
        },
        report.source,
        t(report.window_from),
        t(report.window_to)
    );
    if let Some(id) = report.run_id {
        let _ = writeln!(
            out,
            "run id {id} (SELECT * FROM timelines.source_runs WHERE id = {id})"
        );
    }
    let skipped: u64 = report.skipped.values().sum();
    let _ = writeln!(
        out,
        "{} requests, {} pages, {} records read, {} jobs {}, {} skipped, {} already handled",
        report.requests,
        report.pages,
        report.records_seen,
        report.jobs_created,
        if dry_run {
            "would be created"
        } else {
            "created"
        },
        skipped,
        report.duplicates
    );
    for (reason, count) in &report.skipped {
        let _ = writeln!(out, "  skipped {reason}: {count}");
    }
    for (reason, detail) in report.skip_examples.iter().take(10) {
        let _ = writeln!(out, "    {reason}: {detail}");
    }
    let _ = writeln!(
        out,
        "cursor {} -> {}{}",
        t(report.cursor_before),
        t(report.cursor_after),
        if report.stopped_early {
            " (stopped at max_records_per_run; the next run continues)"
        } else {
            ""
        }
    );
    if dry_run {
        for job in &report.planned {
            let _ = writeln!(
                out,
                "  would enqueue {} at {} (rule {}, record {}): {}",
                job.kind,
                t(Some(job.run_at)),
                job.rule,
                job.record,
                job.payload
            );
        }
        if report.jobs_created as usize > report.planned.len() {
            let _ = writeln!(
                out,
                "  ... and {} more",
                report.jobs_created as usize - report.planned.len()
            );
        }
    }
    out
}
