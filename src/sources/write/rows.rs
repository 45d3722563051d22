//! The rows a batch writes besides its rule events' decisions: contacts, rule events and jobs, as
//! column arrays, and the run-level check that lets checked jobs skip the per-row trigger.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};

use super::super::spec::Rule;
use super::prepare::{Read, Rendered};

/// Whether every rule's jobs can skip the per-row payload check: each rule's payload shape (its
/// constant fields, every template rendered as a string, the text, an E.164 phone) passes
/// `timelines.validate_payload`, its workspace exists, and every templated field is a plain
/// string field (a templated URL or id could still render something invalid per row).
pub(in crate::sources) async fn payloads_trusted(
    pool: &PgPool,
    rules: &[&Rule],
) -> sqlx::Result<bool> {
    for rule in rules {
        let mut sample = rule.payload.clone();
        let mut templated: Vec<String> = rule.payload_templates.clone();
        for field in &rule.payload_templates {
            sample.insert(field.clone(), Value::String("x".to_owned()));
        }
        if rule.text {
            sample.insert("text".to_owned(), Value::String("x".to_owned()));
            templated.push("text".to_owned());
        }
        sample.insert("phone".to_owned(), Value::String("+14155550123".to_owned()));
        let valid = sqlx::query("SELECT timelines.validate_payload($1, $2)")
            .bind(&rule.action)
            .bind(Value::Object(sample))
            .execute(pool)
            .await;
        match valid {
            Ok(_) => {}
            Err(sqlx::Error::Database(_)) => return Ok(false),
            Err(other) => return Err(other),
        }
        let plain: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM timelines.workspaces WHERE name = $1)
                AND coalesce((SELECT bool_and(k.fields ->> f = 'string')
                                FROM timelines.job_kinds k, unnest($3::text[]) AS f
                               WHERE k.kind = $2), true)",
        )
        .bind(&rule.workspace)
        .bind(&rule.action)
        .bind(&templated)
        .fetch_one(pool)
        .await?;
        if !plain {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The `timelines.contacts` rows of a batch: its records with a usable phone.
#[derive(Default)]
pub(in crate::sources) struct Contacts {
    ids: Vec<String>,
    phones: Vec<String>,
    names: Vec<Option<String>>,
    fields: Vec<String>,
    opted_out: Vec<bool>,
}

impl Contacts {
    /// Takes the contact rows out of `reads` (their fields text moves here).
    pub(in crate::sources) fn take(reads: &mut [Read]) -> Self {
        let mut rows = Self::default();
        for read in reads.iter_mut() {
            let Some(phone) = &read.phone else { continue };
            rows.ids.push(read.id.clone());
            rows.phones.push(phone.clone());
            rows.names.push(read.name.take());
            rows.fields.push(std::mem::take(&mut read.fields));
            rows.opted_out.push(read.opted_out);
        }
        rows
    }

    pub(in crate::sources) fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Inserts or updates the rows.
    pub(in crate::sources) async fn upsert(
        &self,
        conn: &mut PgConnection,
        source: &str,
    ) -> sqlx::Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO timelines.contacts AS c (source, external_id, phone, name, fields, opted_out)
             SELECT $1, x, p, n, f::jsonb, o
               FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::boolean[]) AS t(x, p, n, f, o)
             ON CONFLICT (source, external_id) DO UPDATE
                SET phone = excluded.phone, name = excluded.name, fields = excluded.fields,
                    opted_out = excluded.opted_out, last_seen = now()",
        )
        .bind(source)
        .bind(&self.ids)
        .bind(&self.phones)
        .bind(&self.names)
        .bind(&self.fields)
        .bind(&self.opted_out)
        .execute(conn)
        .await?;
        Ok(())
    }
}

/// The `timelines.rule_events` rows of a batch, as columns.
pub(super) struct EventRows<'a> {
    pub(super) keys: Vec<&'a str>,
    pub(super) rules: Vec<&'a str>,
    pub(super) external_ids: Vec<&'a str>,
    pub(super) phones: Vec<&'a str>,
    pub(super) outcomes: Vec<&'static str>,
    pub(super) job_ids: Vec<Option<i64>>,
    pub(super) messages: Vec<bool>,
    pub(super) details: Vec<Option<&'a str>>,
}

impl EventRows<'_> {
    /// A plain INSERT: the keys were found new in this transaction, and a source is polled by
    /// one run at a time.
    pub(super) async fn insert(
        &self,
        tx: &mut PgConnection,
        source: &str,
        run_id: Option<i64>,
    ) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO timelines.rule_events
                 (idempotency_key, source, rule, external_id, phone, outcome, job_id, messages, detail, run_id)
             SELECT k, $2, r, x, p, o, j, m, d, $10
               FROM unnest($1::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[],
                           $8::boolean[], $9::text[]) AS t(k, r, x, p, o, j, m, d)",
        )
        .bind(&self.keys)
        .bind(source)
        .bind(&self.rules)
        .bind(&self.external_ids)
        .bind(&self.phones)
        .bind(&self.outcomes)
        .bind(&self.job_ids)
        .bind(&self.messages)
        .bind(&self.details)
        .bind(run_id)
        .execute(tx)
        .await?;
        Ok(())
    }
}

/// The jobs of a batch that did not go in as planned, by idempotency key.
#[derive(Default)]
pub(super) struct JobsWritten {
    /// Refused by the table's checks, with the reason.
    pub(super) refused: HashMap<String, String>,
    /// Another job has the key: its id.
    pub(super) existing: HashMap<String, Option<i64>>,
}

/// Inserts `jobs` with the ids taken for them: one plain INSERT (a third cheaper per row than
/// `ON CONFLICT DO NOTHING`); if it fails, each job alone, so one bad job is recorded and the
/// others go in.
pub(super) async fn insert_jobs(
    tx: &mut PgConnection,
    jobs: &[(&Rule, &Rendered)],
    ids: &[i64],
) -> sqlx::Result<JobsWritten> {
    let mut written = JobsWritten::default();
    if jobs.is_empty() {
        return Ok(written);
    }
    sqlx::query("SAVEPOINT batch_jobs")
        .execute(&mut *tx)
        .await?;
    match insert_job_rows(tx, jobs, ids, false).await {
        Ok(_) => {
            sqlx::query("RELEASE SAVEPOINT batch_jobs")
                .execute(&mut *tx)
                .await?;
            return Ok(written);
        }
        Err(sqlx::Error::Database(_)) => {
            sqlx::query("ROLLBACK TO SAVEPOINT batch_jobs")
                .execute(&mut *tx)
                .await?;
        }
        Err(other) => return Err(other),
    }
    for (job, id) in jobs.iter().zip(ids) {
        let key = &job.1.job.idempotency_key;
        sqlx::query("SAVEPOINT one_job").execute(&mut *tx).await?;
        match insert_job_rows(tx, std::slice::from_ref(job), &[*id], true).await {
            Ok(1) => {}
            Ok(_) => {
                let existing: Option<i64> =
                    sqlx::query_scalar("SELECT id FROM timelines.jobs WHERE idempotency_key = $1")
                        .bind(key)
                        .fetch_optional(&mut *tx)
                        .await?;
                written.existing.insert(key.clone(), existing);
            }
            Err(sqlx::Error::Database(e)) => {
                sqlx::query("ROLLBACK TO SAVEPOINT one_job")
                    .execute(&mut *tx)
                    .await?;
                written.refused.insert(key.clone(), e.message().to_owned());
                continue;
            }
            Err(other) => return Err(other),
        }
        sqlx::query("RELEASE SAVEPOINT one_job")
            .execute(&mut *tx)
            .await?;
    }
    Ok(written)
}

/// One INSERT of `jobs`; with `skip_taken`, a job whose idempotency key another job has is
/// skipped. Returns the rows inserted.
async fn insert_job_rows(
    tx: &mut PgConnection,
    jobs: &[(&Rule, &Rendered)],
    ids: &[i64],
    skip_taken: bool,
) -> sqlx::Result<u64> {
    let kinds: Vec<&str> = jobs.iter().map(|(r, _)| r.action.as_str()).collect();
    let payloads: Vec<&str> = jobs.iter().map(|(_, j)| j.payload.as_str()).collect();
    let workspaces: Vec<&str> = jobs.iter().map(|(r, _)| r.workspace.as_str()).collect();
    let run_at: Vec<DateTime<Utc>> = jobs.iter().map(|(_, j)| j.job.run_at).collect();
    let priorities: Vec<i32> = jobs.iter().map(|(r, _)| r.priority).collect();
    let keys: Vec<&str> = jobs
        .iter()
        .map(|(_, j)| j.job.idempotency_key.as_str())
        .collect();
    let attempts: Vec<Option<i32>> = jobs.iter().map(|(r, _)| r.max_attempts).collect();
    macro_rules! insert {
        ($tail:literal) => {
            concat!(
                "INSERT INTO timelines.jobs
                     (id, kind, payload, workspace, run_at, priority, idempotency_key, max_attempts)
                 SELECT i, k, p::jsonb, w, r, pr, key, coalesce(a, 20)
                   FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::timestamptz[],
                               $6::int[], $7::text[], $8::int[]) AS t(i, k, p, w, r, pr, key, a)",
                $tail
            )
        };
    }
    let sql = if skip_taken {
        insert!(" ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING")
    } else {
        insert!("")
    };
    let done = sqlx::query(sql)
        .bind(ids)
        .bind(&kinds)
        .bind(&payloads)
        .bind(&workspaces)
        .bind(&run_at)
        .bind(&priorities)
        .bind(&keys)
        .bind(&attempts)
        .execute(&mut *tx)
        .await?;
    Ok(done.rows_affected())
}
