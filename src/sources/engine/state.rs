//! The source's state (`timelines.source_state`) and the run's row (`timelines.source_runs`).

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::{PgConnection, PgPool};

use super::{RunReport, State};
use crate::sources::spec::{Initial, Source};

/// A database error without the connection string.
pub(super) fn redact_db_error(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Configuration(_) => "invalid database_url".to_owned(),
        other => other.to_string(),
    }
}

/// The source's state; a new source's is created (when `create`) at its `initial` point.
pub(super) async fn load_state(
    conn: &mut PgConnection,
    source: &Source,
    create: bool,
) -> sqlx::Result<State> {
    let initial = match source.initial {
        Initial::Now => None,
        Initial::At(t) => Some(t),
    };
    if create {
        // A new source starts at its `initial` point (default: now), never at the beginning of
        // time.
        sqlx::query(
            "INSERT INTO timelines.source_state (source, cursor_value, start_from)
             VALUES ($1, coalesce($2, now()), coalesce($2, now()))
             ON CONFLICT (source) DO NOTHING",
        )
        .bind(&source.name)
        .bind(initial)
        .execute(&mut *conn)
        .await?;
    }
    let row: Option<StateRow> = sqlx::query_as(
        "SELECT cursor_value, start_from, boundary_ids, vendor_token
           FROM timelines.source_state WHERE source = $1",
    )
    .bind(&source.name)
    .fetch_optional(&mut *conn)
    .await?;
    let (cursor, start_from, boundary, vendor_token) = match row {
        Some(row) => row,
        // Not created (a dry run): where it would start.
        None => {
            let at = match initial {
                Some(t) => t,
                None => {
                    sqlx::query_scalar("SELECT now()")
                        .fetch_one(&mut *conn)
                        .await?
                }
            };
            (at, at, Vec::new(), None)
        }
    };
    Ok(State {
        cursor,
        start_from,
        boundary: boundary.into_iter().collect(),
        vendor_token,
    })
}

/// A `source_state` row: cursor, start point, boundary ids, vendor token.
type StateRow = (DateTime<Utc>, DateTime<Utc>, Vec<String>, Option<String>);

pub(super) async fn save_cursor(
    conn: &mut PgConnection,
    source: &str,
    cursor: DateTime<Utc>,
    boundary: &HashSet<String>,
) -> sqlx::Result<()> {
    let mut ids: Vec<&String> = boundary.iter().collect();
    ids.sort();
    sqlx::query(
        "UPDATE timelines.source_state SET cursor_value = $2, boundary_ids = $3, updated_at = now()
          WHERE source = $1",
    )
    .bind(source)
    .bind(cursor)
    .bind(ids)
    .execute(conn)
    .await?;
    Ok(())
}

pub(super) async fn update_counters(
    conn: &mut PgConnection,
    run_id: i64,
    report: &RunReport,
) -> sqlx::Result<()> {
    let skipped: u64 = report.skipped.values().sum();
    sqlx::query(
        "UPDATE timelines.source_runs
            SET requests = $2, pages = $3, records_seen = $4, jobs_created = $5,
                records_skipped = $6, skipped = $7, window_to = $8
          WHERE id = $1",
    )
    .bind(run_id)
    .bind(report.requests as i32)
    .bind(report.pages as i32)
    .bind(report.records_seen as i32)
    .bind(report.jobs_created as i32)
    .bind(skipped as i32)
    .bind(json!(report.skipped))
    .bind(report.window_to)
    .execute(conn)
    .await?;
    Ok(())
}

pub(super) async fn finish_run(
    pool: &PgPool,
    run_id: i64,
    source: &str,
    report: &RunReport,
    error: Option<&str>,
) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    update_counters(&mut tx, run_id, report).await?;
    sqlx::query(
        "UPDATE timelines.source_runs
            SET status = CASE WHEN $2::text IS NULL THEN 'succeeded' ELSE 'failed' END,
                finished_at = now(), error = $2, cursor_after = $3
          WHERE id = $1",
    )
    .bind(run_id)
    .bind(error)
    .bind(report.cursor_after)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE timelines.source_state
            SET last_error = $2, updated_at = now(),
                last_success_at = CASE WHEN $2::text IS NULL THEN now() ELSE last_success_at END
          WHERE source = $1",
    )
    .bind(source)
    .bind(error)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}
