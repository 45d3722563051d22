//! The write stage of a run. A batch of prepared records ([`prepare`], in the reading stage)
//! becomes, in one transaction: the cancellations of deleted or opted-out contacts' queued jobs,
//! the watched values, and the new rule events with their jobs, after the duplicate, opt-out and
//! frequency-cap checks. Contacts ([`Contacts`]) and jobs may go in on connections of their own
//! alongside ([`super::engine`] decides).

mod prepare;
mod rows;

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;

pub(super) use self::prepare::{Read, prepare};
use self::prepare::{Rendered, same};
pub(super) use self::rows::{Contacts, payloads_trusted};
use self::rows::{EventRows, JobsWritten, insert_jobs};
use super::engine::RunReport;
use super::record::Skip;
use super::spec::{MESSAGE_KINDS, Rule, Source};

/// A skipped record or rule event: (record id, rule, why).
pub(super) type SkipRow = (Option<String>, Option<String>, Skip);

/// The advisory lock class of frequency-cap checks (the key is `hashtext(phone)`).
const CAP_LOCK_CLASS: i32 = 0x6361_7073; // "caps"
/// Planned jobs a dry run keeps to show (all are counted).
const MAX_PLANNED: usize = 200;

/// One new rule event of a batch: `reads[read].candidates[candidate]`.
struct Event {
    read: usize,
    candidate: usize,
}

/// What a rule event came to: a job (enqueued), or why not.
struct Outcome<'r> {
    key: String,
    rule: &'r Rule,
    external_id: String,
    phone: String,
    outcome: &'static str,
    detail: Option<String>,
    job: Option<Rendered>,
}

impl Outcome<'_> {
    /// Marks the outcome as not enqueued, recording `reason` as a skip.
    fn skip(
        &mut self,
        outcome: &'static str,
        detail: String,
        reason: &'static str,
        why: String,
        skips: &mut Vec<SkipRow>,
    ) {
        self.outcome = outcome;
        self.detail = Some(detail);
        self.job = None;
        skips.push((
            Some(self.external_id.clone()),
            Some(self.rule.name.clone()),
            Skip::new(reason, why),
        ));
    }
}

/// Writes what a batch of prepared records does in `tx`: cancellations, watched values, and the
/// new rule events with their jobs (in `jobs_tx` when given). Its [`Contacts`] are the caller's.
#[allow(clippy::too_many_arguments)]
pub(super) async fn write_batch(
    tx: &mut PgConnection,
    jobs_tx: Option<&mut PgConnection>,
    source: &Source,
    rules: &[&Rule],
    mut reads: Vec<Read>,
    deleted: Vec<String>,
    skips: &mut Vec<SkipRow>,
    report: &mut RunReport,
    dry_run: bool,
) -> sqlx::Result<()> {
    if reads.is_empty() && deleted.is_empty() {
        return Ok(());
    }
    let previous = last_watched(tx, source, &reads).await?;
    if !dry_run {
        cancel_queued(tx, source, &reads, &deleted).await?;
    }
    save_watched(tx, source, &reads).await?;
    let mut events = new_events(&reads, rules, &previous, skips);
    if events.is_empty() {
        return Ok(());
    }
    report.duplicates += drop_known(tx, &reads, &mut events).await?;
    let mut outcomes = decide(tx, &mut reads, rules, &events, skips).await?;
    record(tx, jobs_tx, source, &mut outcomes, skips, report).await
}

/// The last values of the watched fields of the batch's records, by record id.
async fn last_watched(
    tx: &mut PgConnection,
    source: &Source,
    reads: &[Read],
) -> sqlx::Result<HashMap<String, Value>> {
    if source.watched.is_empty() {
        return Ok(HashMap::new());
    }
    let ids: Vec<&str> = reads.iter().map(|r| r.id.as_str()).collect();
    let rows = sqlx::query_as::<_, (String, Value)>(
        "SELECT external_id, watched FROM timelines.source_records
          WHERE source = $1 AND external_id = ANY($2)",
    )
    .bind(&source.name)
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Queued messages to contacts who opted out (by a field of their record) and queued jobs of
/// records deleted since are cancelled, with the reason.
async fn cancel_queued(
    tx: &mut PgConnection,
    source: &Source,
    reads: &[Read],
    deleted: &[String],
) -> sqlx::Result<()> {
    let opted: Vec<&str> = reads
        .iter()
        .filter(|r| r.opted_out)
        .filter_map(|r| r.phone.as_deref())
        .collect();
    if !opted.is_empty() {
        sqlx::query(
            "UPDATE timelines.jobs
                SET state = 'cancelled', finished_at = now(), updated_at = now(),
                    last_error = 'cancelled: ' || (payload->>'phone') || ' opted out (source ' || $2 || ')'
              WHERE state IN ('queued', 'retrying', 'held') AND kind = ANY($3)
                AND payload->>'phone' = ANY($1)",
        )
        .bind(&opted)
        .bind(&source.name)
        .bind(MESSAGE_KINDS)
        .execute(&mut *tx)
        .await?;
    }
    if !deleted.is_empty() {
        sqlx::query(
            "UPDATE timelines.jobs
                SET state = 'cancelled', finished_at = now(), updated_at = now(),
                    last_error = 'cancelled: the record was deleted in source ' || $1
              WHERE id IN (SELECT job_id FROM timelines.rule_events
                            WHERE source = $1 AND external_id = ANY($2) AND job_id IS NOT NULL)
                AND state IN ('queued', 'retrying', 'held')",
        )
        .bind(&source.name)
        .bind(deleted)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// The watched fields' values now, of records the rules could act on: a change seen while a
/// record has no usable phone is not used up, it fires once the phone is there.
async fn save_watched(tx: &mut PgConnection, source: &Source, reads: &[Read]) -> sqlx::Result<()> {
    if source.watched.is_empty() {
        return Ok(());
    }
    let with_phone: Vec<&Read> = reads.iter().filter(|r| r.phone.is_some()).collect();
    let ids: Vec<&str> = with_phone.iter().map(|r| r.id.as_str()).collect();
    let cursors: Vec<DateTime<Utc>> = with_phone.iter().map(|r| r.cursor).collect();
    let watched: Vec<&Value> = with_phone.iter().map(|r| &r.watched).collect();
    sqlx::query(
        "INSERT INTO timelines.source_records AS r (source, external_id, cursor_value, watched)
         SELECT $1, * FROM unnest($2::text[], $3::timestamptz[], $4::jsonb[])
         ON CONFLICT (source, external_id) DO UPDATE
            SET cursor_value = greatest(r.cursor_value, excluded.cursor_value),
                watched = CASE WHEN excluded.cursor_value >= r.cursor_value
                               THEN r.watched || excluded.watched ELSE r.watched END,
                last_seen = now()",
    )
    .bind(&source.name)
    .bind(&ids)
    .bind(&cursors)
    .bind(&watched)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The rule events of the batch whose filter passed: every candidate, a field trigger's only
/// when the field changed against the last value seen. Filter errors are recorded as skips.
fn new_events(
    reads: &[Read],
    rules: &[&Rule],
    previous: &HashMap<String, Value>,
    skips: &mut Vec<SkipRow>,
) -> Vec<Event> {
    let mut events = Vec::new();
    for (index, read) in reads.iter().enumerate() {
        let before = previous.get(&read.id);
        for (at, candidate) in read.candidates.iter().enumerate() {
            let rule = rules[candidate.rule];
            if let Some(now) = &candidate.now {
                let field = rule.field.as_deref().unwrap_or_default();
                let changed = match before {
                    Some(last) => match last.get(field) {
                        Some(was) => !same(was, now),
                        // A record seen before, but not with this field watched (the rule is
                        // new): its value is the baseline, not a change.
                        None => false,
                    },
                    // A record first seen: a change only if it was created in the window.
                    None => read.created_now,
                };
                if !changed {
                    continue;
                }
            }
            match &candidate.filter {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    skips.push((
                        Some(read.id.clone()),
                        Some(rule.name.clone()),
                        Skip::new("filter_error", e.clone()),
                    ));
                    continue;
                }
            }
            events.push(Event {
                read: index,
                candidate: at,
            });
        }
    }
    events
}

/// Drops the events handled before (re-reads, overlapping runs, a batch repeated after a
/// crash) and repeats within the batch; returns how many. One index probe per key: a hash join
/// would read the whole ledger.
async fn drop_known(
    tx: &mut PgConnection,
    reads: &[Read],
    events: &mut Vec<Event>,
) -> sqlx::Result<u64> {
    let key_of = |e: &Event| reads[e.read].candidates[e.candidate].key.as_str();
    let keys: Vec<&str> = events.iter().map(key_of).collect();
    let known: HashSet<String> = sqlx::query_scalar(
        "SELECT k.key FROM unnest($1::text[]) AS k(key)
           CROSS JOIN LATERAL (SELECT 1 FROM timelines.rule_events e
                                WHERE e.idempotency_key = k.key LIMIT 1) AS e",
    )
    .bind(&keys)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .collect();
    let before = events.len();
    let mut claimed: HashSet<&str> = HashSet::new();
    events.retain(|e| !known.contains(key_of(e)) && claimed.insert(key_of(e)));
    Ok((before - events.len()) as u64)
}

/// What each new event comes to: opted-out contacts get nothing, a contact at its frequency cap
/// gets nothing more, a job that could not be built is a skip; the rest are enqueued.
async fn decide<'r>(
    tx: &mut PgConnection,
    reads: &mut [Read],
    rules: &[&'r Rule],
    events: &[Event],
    skips: &mut Vec<SkipRow>,
) -> sqlx::Result<Vec<Outcome<'r>>> {
    let phone_of = |read: &Read| {
        read.phone
            .clone()
            .expect("events are found for records with a phone")
    };
    let phones: Vec<String> = events.iter().map(|e| phone_of(&reads[e.read])).collect();
    let mut opted_out = opted_out(tx, &phones).await?;
    // (Opted out by a record of this batch, whose contact row is written alongside.)
    opted_out.extend(
        reads
            .iter()
            .filter(|r| r.opted_out)
            .filter_map(|r| r.phone.clone()),
    );
    let windows: HashSet<u64> = events
        .iter()
        .filter_map(|e| {
            rules[reads[e.read].candidates[e.candidate].rule]
                .frequency_cap
                .map(|c| c.window.as_secs())
        })
        .collect();
    let mut sent = messages_sent(tx, &phones, windows).await?;

    let mut outcomes: Vec<Outcome> = Vec::with_capacity(events.len());
    for (event, phone) in events.iter().zip(phones) {
        let read = &mut reads[event.read];
        let candidate = &mut read.candidates[event.candidate];
        let rule = rules[candidate.rule];
        let mut outcome = Outcome {
            key: std::mem::take(&mut candidate.key),
            rule,
            external_id: read.id.clone(),
            phone,
            outcome: "enqueued",
            detail: None,
            job: None,
        };
        let phone = outcome.phone.clone();
        let job = candidate
            .job
            .take()
            .expect("events are found for candidates whose filter passed");
        if !rule.ignore_opt_out && (read.opted_out || opted_out.contains(&phone)) {
            let why = format!(
                "record {}: rule {}: {phone} has opted out",
                read.id, rule.name
            );
            outcome.skip(
                "opted_out",
                format!("{phone} opted out"),
                "opted_out",
                why,
                skips,
            );
        } else if let Err(detail) = job {
            outcome.skip("skipped", detail.clone(), "template_error", detail, skips);
        } else {
            let cap = rule.frequency_cap.filter(|_| rule.messages_contact());
            let count = cap.map(|c| sent.entry((c.window.as_secs(), phone.clone())).or_default());
            match (cap, count) {
                (Some(cap), Some(count)) if *count >= i64::from(cap.max) => {
                    let hours = cap.window.as_secs() / 3600;
                    let detail = format!("{count} messages to {phone} in {hours} h already");
                    let why = format!(
                        "record {}: rule {}: {phone} reached the cap of {} per {hours} h",
                        read.id, rule.name, cap.max
                    );
                    outcome.skip("capped", detail, "frequency_cap", why, skips);
                }
                (_, count) => {
                    if let Some(count) = count {
                        *count += 1;
                    }
                    outcome.job = job.ok();
                }
            }
        }
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

/// The phones among `phones` that opted out: in `timelines.opt_outs`, or by a contact's field.
async fn opted_out(tx: &mut PgConnection, phones: &[String]) -> sqlx::Result<HashSet<String>> {
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT o.phone FROM unnest($1::text[]) AS p(phone)
           JOIN timelines.opt_outs o ON o.phone = p.phone
         UNION
         SELECT c.phone FROM unnest($1::text[]) AS p(phone)
           CROSS JOIN LATERAL (SELECT c.phone FROM timelines.contacts c
                                WHERE c.phone = p.phone AND c.opted_out LIMIT 1) AS c",
    )
    .bind(phones)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Messages enqueued per (cap window, phone) inside each window in use. The phones are locked
/// (transaction advisory locks, in order) so concurrent runs of two sources count one contact's
/// messages one after the other.
async fn messages_sent(
    tx: &mut PgConnection,
    phones: &[String],
    windows: HashSet<u64>,
) -> sqlx::Result<HashMap<(u64, String), i64>> {
    let mut sent = HashMap::new();
    if windows.is_empty() {
        return Ok(sent);
    }
    sqlx::query(
        "SELECT pg_advisory_xact_lock($2, hashtext(p))
           FROM (SELECT DISTINCT unnest($1::text[]) AS p ORDER BY 1) AS phones",
    )
    .bind(phones)
    .bind(CAP_LOCK_CLASS)
    .execute(&mut *tx)
    .await?;
    for secs in windows {
        let counts: Vec<(String, i64)> = sqlx::query_as(
            "SELECT phone, count(*) FROM timelines.rule_events
              WHERE phone = ANY($1) AND outcome = 'enqueued' AND messages
                AND created_at > now() - make_interval(secs => $2)
              GROUP BY phone",
        )
        .bind(phones)
        .bind(secs as f64)
        .fetch_all(&mut *tx)
        .await?;
        for (phone, n) in counts {
            sent.insert((secs, phone), n);
        }
    }
    Ok(sent)
}

/// Writes the outcomes: the jobs and their rule events at once, the jobs on their own
/// connection when there is one, with job ids taken ahead from the jobs' sequence. Rarely a job
/// does not go in (a key another job already has, a payload the table refuses): its rule event
/// is corrected before the commit.
async fn record(
    tx: &mut PgConnection,
    jobs_tx: Option<&mut PgConnection>,
    source: &Source,
    outcomes: &mut [Outcome<'_>],
    skips: &mut Vec<SkipRow>,
    report: &mut RunReport,
) -> sqlx::Result<()> {
    let jobs: Vec<(&Rule, &Rendered)> = outcomes
        .iter()
        .filter_map(|o| o.job.as_ref().map(|j| (o.rule, j)))
        .collect();
    let ids: Vec<i64> = if jobs.is_empty() {
        Vec::new()
    } else {
        // (The identity column's sequence, named as a constant: looking it up per row with
        // pg_get_serial_sequence cost 3 us an id.)
        sqlx::query_scalar("SELECT nextval('timelines.jobs_id_seq') FROM generate_series(1, $1)")
            .bind(jobs.len() as i64)
            .fetch_all(&mut *tx)
            .await?
    };
    let mut next_id = ids.iter().copied();
    let events = EventRows {
        keys: outcomes.iter().map(|o| o.key.as_str()).collect(),
        rules: outcomes.iter().map(|o| o.rule.name.as_str()).collect(),
        external_ids: outcomes.iter().map(|o| o.external_id.as_str()).collect(),
        phones: outcomes.iter().map(|o| o.phone.as_str()).collect(),
        outcomes: outcomes.iter().map(|o| o.outcome).collect(),
        job_ids: outcomes
            .iter()
            .map(|o| o.job.as_ref().and_then(|_| next_id.next()))
            .collect(),
        messages: outcomes.iter().map(|o| o.rule.messages_contact()).collect(),
        details: outcomes.iter().map(|o| o.detail.as_deref()).collect(),
    };
    let (written, recorded) = match jobs_tx {
        Some(side) => {
            tokio::join!(
                insert_jobs(side, &jobs, &ids),
                events.insert(tx, &source.name, report.run_id)
            )
        }
        None => {
            let written = insert_jobs(tx, &jobs, &ids).await;
            (
                written,
                events.insert(tx, &source.name, report.run_id).await,
            )
        }
    };
    let written = written?;
    recorded?;
    drop((events, jobs));
    correct(tx, outcomes, &written, skips).await?;
    for outcome in outcomes.iter_mut() {
        if let Some(rendered) = outcome.job.take() {
            report.jobs_created += 1;
            if report.planned.len() < MAX_PLANNED {
                report.planned.push(rendered.job);
            }
        }
    }
    Ok(())
}

/// Corrects the rule events of jobs that did not go in: refused ones become skips, those whose
/// key another job has link that job.
async fn correct(
    tx: &mut PgConnection,
    outcomes: &mut [Outcome<'_>],
    written: &JobsWritten,
    skips: &mut Vec<SkipRow>,
) -> sqlx::Result<()> {
    if written.refused.is_empty() && written.existing.is_empty() {
        return Ok(());
    }
    let (mut keys, mut kinds, mut details, mut job_ids) = (vec![], vec![], vec![], vec![]);
    for outcome in outcomes.iter_mut() {
        let linked = if let Some(message) = written.refused.get(&outcome.key) {
            let why = format!(
                "record {}: rule {}: {message}",
                outcome.external_id, outcome.rule.name
            );
            let detail = format!("job refused: {message}");
            outcome.skip("skipped", detail, "job_refused", why, skips);
            None
        } else if let Some(existing) = written.existing.get(&outcome.key) {
            outcome.job = None;
            *existing
        } else {
            continue;
        };
        keys.push(outcome.key.clone());
        kinds.push(outcome.outcome);
        details.push(outcome.detail.clone());
        job_ids.push(linked);
    }
    sqlx::query(
        "UPDATE timelines.rule_events e SET outcome = t.o, detail = t.d, job_id = t.j
           FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[]) AS t(k, o, d, j)
          WHERE e.idempotency_key = t.k",
    )
    .bind(&keys)
    .bind(&kinds)
    .bind(&details)
    .bind(&job_ids)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
