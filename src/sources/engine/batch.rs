//! Writing a batch: its three transactions (the batch's own, and the contacts' and the jobs'
//! when the pool can spare connections), the cursor and the run's counters.

use std::collections::HashSet;

use sqlx::{PgConnection, SqlSafeStr};

use super::read::Batch;
use super::state::{save_cursor, update_counters};
use super::{Poller, RunReport, State};
use crate::sources::spec::{Rule, Source};
use crate::sources::write::{Contacts, write_batch};

/// Skipped records written to `timelines.source_skips` per run at most (all are counted).
const MAX_SKIP_ROWS: u64 = 1000;
/// How long a batch waits for a connection of its own for its jobs or contacts.
const SIDE_ACQUIRE: std::time::Duration = std::time::Duration::from_millis(500);

impl Poller {
    /// Writes a batch of records (several pages): its own transaction holds the rule events,
    /// the cursor of sorted sources (the highest time read, and the ids read at exactly that
    /// time) and the run's counters, and commits after the contacts' and jobs' transactions.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn flush(
        &self,
        source: &Source,
        rules: &[&Rule],
        batch: Batch,
        state: &mut State,
        report: &mut RunReport,
        skip_rows: &mut u64,
        dry_run: bool,
        trusted: bool,
    ) -> Result<(), String> {
        let Batch {
            reads,
            deleted,
            mut skips,
            last_cursor,
            at_last_cursor,
            resume_token,
            records_seen,
            pages,
            requests,
            window_to,
        } = batch;
        report.records_seen = report.records_seen.max(records_seen);
        report.pages = report.pages.max(pages);
        report.requests = report.requests.max(requests);
        report.window_to = Some(window_to);
        if reads.is_empty() && deleted.is_empty() && skips.is_empty() && resume_token.is_none() {
            return Ok(());
        }
        let db = |e: sqlx::Error| format!("database: {e}");
        let checkpoint = if source.sorted {
            last_cursor.map(|c| {
                let mut boundary: HashSet<String> = if c == state.cursor {
                    state.boundary.clone()
                } else {
                    HashSet::new()
                };
                boundary.extend(at_last_cursor);
                (c, boundary)
            })
        } else {
            None
        };
        // Three connections when the pool has them to spare, so Postgres works on the batch's
        // parts at once: this one (rule events, watched values, cursor), one for the jobs and
        // one for the contacts. The other two commit first: the cursor never passes a contact or
        // job not written, and a failure after their commit is repeated idempotently when the
        // batch is read again (contacts are upserted, a job's key is found taken and linked).
        let mut reads = reads;
        let contacts = Contacts::take(&mut reads);
        // Plans for this batch's arrays and the tables as they are now: a plan cached while the
        // tables were empty would scan them whole on every batch of a large first import. A
        // wait for a lock on a side connection is bounded, so the parts of one batch can never
        // wait on each other for good.
        let (main_begin, jobs_begin) = if trusted {
            (
                "BEGIN; SET LOCAL plan_cache_mode = force_custom_plan;
                 SET LOCAL timelines.payloads_checked = on",
                "BEGIN; SET LOCAL lock_timeout = '60s'; SET LOCAL timelines.payloads_checked = on",
            )
        } else {
            (
                "BEGIN; SET LOCAL plan_cache_mode = force_custom_plan",
                "BEGIN; SET LOCAL lock_timeout = '60s'",
            )
        };
        let (batch_tx, jobs_tx, contacts_tx) = tokio::join!(
            async {
                let conn = self.pool.acquire().await?;
                sqlx::Transaction::begin(conn, Some(main_begin.into_sql_str())).await
            },
            self.side_transaction(jobs_begin),
            async {
                if contacts.is_empty() {
                    return Ok(None);
                }
                self.side_transaction("BEGIN; SET LOCAL lock_timeout = '60s'")
                    .await
            }
        );
        let (mut batch_tx, mut jobs_tx, mut contacts_tx) = (
            batch_tx.map_err(db)?,
            jobs_tx.map_err(db)?,
            contacts_tx.map_err(db)?,
        );
        if contacts_tx.is_none() {
            contacts
                .upsert(&mut batch_tx, &source.name)
                .await
                .map_err(db)?;
        }
        let (written, contacts_written) = tokio::join!(
            write_batch(
                &mut batch_tx,
                jobs_tx.as_deref_mut(),
                source,
                rules,
                reads,
                deleted,
                &mut skips,
                report,
                dry_run
            ),
            async {
                match &mut contacts_tx {
                    Some(side) => contacts.upsert(side, &source.name).await,
                    None => Ok(()),
                }
            }
        );
        written.map_err(db)?;
        contacts_written.map_err(db)?;
        let tx: &mut PgConnection = &mut batch_tx;
        if let Some((cursor, boundary)) = checkpoint
            && cursor >= state.cursor
        {
            if !dry_run {
                save_cursor(tx, &source.name, cursor, &boundary)
                    .await
                    .map_err(db)?;
            }
            state.cursor = cursor;
            state.boundary = boundary;
        }
        if let Some(token) = resume_token
            && !dry_run
        {
            sqlx::query("UPDATE timelines.source_state SET vendor_token = $2 WHERE source = $1")
                .bind(&source.name)
                .bind(&token)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            state.vendor_token = Some(token);
        }
        let mut rows = Vec::new();
        for (external_id, rule, skip) in &skips {
            *report.skipped.entry(skip.reason.to_owned()).or_default() += 1;
            if report.skip_examples.len() < 20 {
                report
                    .skip_examples
                    .push((skip.reason.to_owned(), skip.detail.clone()));
            }
            if *skip_rows < MAX_SKIP_ROWS {
                *skip_rows += 1;
                rows.push((external_id, rule, skip));
            }
        }
        if let Some(run_id) = report.run_id {
            if !rows.is_empty() {
                let ids: Vec<Option<&str>> = rows.iter().map(|r| r.0.as_deref()).collect();
                let rules: Vec<Option<&str>> = rows.iter().map(|r| r.1.as_deref()).collect();
                let reasons: Vec<&str> = rows.iter().map(|r| r.2.reason).collect();
                let details: Vec<&str> = rows.iter().map(|r| r.2.detail.as_str()).collect();
                sqlx::query(
                    "INSERT INTO timelines.source_skips (run_id, source, external_id, rule, reason, detail)
                     SELECT $1, $2, * FROM unnest($3::text[], $4::text[], $5::text[], $6::text[])",
                )
                .bind(run_id)
                .bind(&source.name)
                .bind(&ids)
                .bind(&rules)
                .bind(&reasons)
                .bind(&details)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            }
            update_counters(tx, run_id, report).await.map_err(db)?;
        }
        // (Together: concurrent commits share the wait for the WAL flush.)
        let finish = |side: Option<sqlx::Transaction<'static, sqlx::Postgres>>| async move {
            match side {
                Some(side) if dry_run => side.rollback().await,
                Some(side) => side.commit().await,
                None => Ok(()),
            }
        };
        let (contacts_done, jobs_done) = tokio::join!(finish(contacts_tx), finish(jobs_tx));
        contacts_done.map_err(db)?;
        jobs_done.map_err(db)?;
        let done = if dry_run {
            batch_tx.rollback().await
        } else {
            batch_tx.commit().await
        };
        done.map_err(db)
    }

    /// A transaction (opened by `begin`) on a connection the pool can spare, for writing part of
    /// a batch alongside the batch's own; None when there is none (that part then goes in the
    /// batch's).
    async fn side_transaction(
        &self,
        begin: &'static str,
    ) -> sqlx::Result<Option<sqlx::Transaction<'static, sqlx::Postgres>>> {
        // An idle connection, or a new one while the pool is below its size; never a long wait
        // for one to come back (the batch's own holds one).
        let room = self.pool.num_idle() > 0
            || self.pool.size() < self.pool.options().get_max_connections();
        if !room {
            return Ok(None);
        }
        let Ok(conn) = tokio::time::timeout(SIDE_ACQUIRE, self.pool.acquire()).await else {
            return Ok(None);
        };
        Ok(Some(
            sqlx::Transaction::begin(conn?, Some(begin.into_sql_str())).await?,
        ))
    }
}
