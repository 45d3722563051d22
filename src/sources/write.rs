//! The write stage of a run: a batch of prepared records becomes, in one transaction, the
//! cancellations of deleted or opted-out contacts' queued jobs, the watched values, the contacts,
//! and the rule events with their jobs (after the duplicate, opt-out and frequency-cap checks,
//! templates rendered, quiet hours applied).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};

use super::config::Trigger;
use super::engine::{PlannedJob, RunReport};
use super::policy::after_quiet_hours;
use super::record::{self, Record, Skip, lookup, text};
use super::spec::{Catalog, Rule, Source};
use super::template::{Templates, context};

/// The advisory lock class of frequency-cap checks (the key is `hashtext(phone)`).
const CAP_LOCK_CLASS: i32 = 0x6361_7073; // "caps"
/// Planned jobs a dry run keeps to show (all are counted).
const MAX_PLANNED: usize = 200;

/// Whether every rule's jobs can skip the per-row payload check: each rule's payload shape (its
/// constant fields, every template rendered as a string, the text, an E.164 phone) passes
/// `timelines.validate_payload`, its workspace exists, and every templated field is a plain
/// string field (a templated URL or id could still render something invalid per row).
pub(super) async fn payloads_trusted(pool: &PgPool, rules: &[&Rule]) -> sqlx::Result<bool> {
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

/// What one rule makes of one record, worked out in the reading stage: the event's key, the
/// filter's verdict and the job, rendered ahead. What needs the database (a change against the
/// last values seen, an event handled before, opt-outs, caps) is decided at write time.
pub(super) struct Candidate {
    /// Index in the run's rules.
    rule: usize,
    /// The event's idempotency key.
    key: String,
    /// Field triggers: the field's value now (an event only if it differs from the last one).
    now: Option<Value>,
    /// The filter's verdict (an error is recorded as a skip if the event is new).
    filter: Result<bool, String>,
    /// The job, when the filter passed (a template error is recorded if the event is new).
    job: Option<Result<Rendered, String>>,
}

/// A job built ahead, with its payload already serialised.
pub(super) struct Rendered {
    job: PlannedJob,
    payload: String,
}

/// One new rule event of a batch: `reads[read].candidates[candidate]`.
struct Event {
    read: usize,
    candidate: usize,
}

/// Per record, what the reading stage prepared.
pub(super) struct Read {
    id: String,
    cursor: DateTime<Utc>,
    phone: Option<String>,
    name: Option<String>,
    opted_out: bool,
    /// Created inside the run's window (for `created` and first-seen field triggers).
    created_now: bool,
    watched: Value,
    /// The record's variables as JSON text (`contacts.fields`; taken by [`Contacts::take`]).
    fields: String,
    candidates: Vec<Candidate>,
}

/// The part of an idempotency key that names the event; long values are hashed.
fn event_part(text: &str) -> String {
    if text.len() <= 64 {
        text.to_owned()
    } else {
        uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, text.as_bytes()).to_string()
    }
}

fn same(a: &Value, b: &Value) -> bool {
    a == b || matches!((text(a), text(b)), (Some(x), Some(y)) if x == y)
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The per-record work that needs no database: deleted records, opt-out flags, phones, watched
/// values, and for each rule the event it could be, its filter and its job (templates rendered,
/// quiet hours applied). Runs in the reading stage, alongside the previous batch's writes.
pub(super) fn prepare(
    catalog: &Catalog,
    source: &Source,
    rules: &[&Rule],
    window_lower: DateTime<Utc>,
    records: Vec<Record>,
    skips: &mut Vec<(Option<String>, Option<String>, Skip)>,
) -> (Vec<Read>, Vec<String>) {
    let templates = &catalog.templates;
    let now = Utc::now();
    let mut reads: Vec<Read> = Vec::new();
    let mut deleted: Vec<String> = Vec::new();
    for record in records {
        // The record as a template context, built once for its expressions, filters and jobs.
        let mut variables: Option<minijinja::Value> = None;
        if source.skip_if {
            let ctx = variables.get_or_insert_with(|| context(&record.variables));
            match record::test(templates, source, "skip_if", &record, ctx) {
                Ok(true) => {
                    deleted.push(record.id.clone());
                    skips.push((
                        Some(record.id.clone()),
                        None,
                        Skip::new(
                            "deleted",
                            format!("record {} is deleted or archived", record.id),
                        ),
                    ));
                    continue;
                }
                Ok(false) => {}
                Err(skip) => {
                    skips.push((Some(record.id.clone()), None, skip));
                    continue;
                }
            }
        }
        let opted_out = if source.opted_out_if {
            let ctx = variables.get_or_insert_with(|| context(&record.variables));
            match record::test(templates, source, "opted_out_if", &record, ctx) {
                Ok(flag) => flag,
                Err(skip) => {
                    skips.push((Some(record.id.clone()), None, skip));
                    continue;
                }
            }
        } else {
            false
        };
        let phone = match record::phone_of(source, &record) {
            Ok(phone) => Some(phone),
            Err(skip) => {
                skips.push((Some(record.id.clone()), None, skip));
                None
            }
        };
        let watched = Value::Object(
            source
                .watched
                .iter()
                .map(|f| {
                    (
                        f.clone(),
                        lookup(&record.variables, f).cloned().unwrap_or(Value::Null),
                    )
                })
                .collect(),
        );
        let name = record::name_of(source, &record);
        // `created` needs the record's creation time (checked at start-up): "first seen" would
        // also match old records the first time they change after the source is set up.
        let created_now = record
            .created
            .is_some_and(|created| created >= window_lower);
        let candidates = match &phone {
            Some(phone) => {
                let ctx = variables.get_or_insert_with(|| context(&record.variables));
                candidates(
                    catalog,
                    source,
                    rules,
                    &record,
                    ctx,
                    phone,
                    name.as_deref(),
                    created_now,
                    now,
                )
            }
            None => Vec::new(),
        };
        reads.push(Read {
            fields: record.variables.to_string(),
            id: record.id,
            cursor: record.cursor,
            phone,
            name,
            opted_out,
            created_now,
            watched,
            candidates,
        });
    }

    (reads, deleted)
}

/// The events `rules` could see in a record with a usable phone, with their filters and jobs.
#[allow(clippy::too_many_arguments)]
fn candidates(
    catalog: &Catalog,
    source: &Source,
    rules: &[&Rule],
    record: &Record,
    variables: &minijinja::Value,
    phone: &str,
    name: Option<&str>,
    created_now: bool,
    now: DateTime<Utc>,
) -> Vec<Candidate> {
    let templates = &catalog.templates;
    let mut found = Vec::new();
    // Filters see the record; templates also see `contact` and `source` (which win over the
    // record's own fields of those names).
    let mut job_context = None;
    for (index, rule) in rules.iter().enumerate() {
        let (event, now_value) = match rule.trigger {
            Trigger::Created => {
                if !created_now {
                    continue;
                }
                ("created".to_owned(), None)
            }
            Trigger::Updated => (format!("updated@{}", stamp(record.cursor)), None),
            Trigger::FieldChanged | Trigger::FieldEquals => {
                let field = rule.field.as_deref().unwrap_or_default();
                let value = lookup(&record.variables, field)
                    .cloned()
                    .unwrap_or(Value::Null);
                if value.is_null() || !rule.value.as_ref().is_none_or(|v| same(v, &value)) {
                    continue;
                }
                let shown = text(&value).unwrap_or_else(|| value.to_string());
                (
                    format!("{field}={}@{}", event_part(&shown), stamp(record.cursor)),
                    Some(value),
                )
            }
        };
        let filter = if rule.filter {
            templates
                .test(&rule.template("filter"), variables)
                .map_err(|e| format!("record {}: rule {}: filter: {e}", record.id, rule.name))
        } else {
            Ok(true)
        };
        let key = format!("poll:{}:{}:{}:{}", source.name, rule.name, record.id, event);
        let job = matches!(filter, Ok(true)).then(|| {
            let context = job_context.get_or_insert_with(|| {
                minijinja::context! {
                    contact => context(&json!({"phone": phone, "name": name, "external_id": record.id})),
                    source => source.name.as_str(),
                    ..variables.clone()
                }
            });
            build_job(source, rule, templates, record, context, phone, now).map(|job| Rendered {
                payload: job.payload.to_string(),
                job: PlannedJob {
                    idempotency_key: key.clone(),
                    ..job
                },
            })
        });
        found.push(Candidate {
            rule: index,
            key,
            now: now_value,
            filter,
            job,
        });
    }
    found
}

/// The `timelines.contacts` rows of a batch: its records with a usable phone.
#[derive(Default)]
pub(super) struct Contacts {
    ids: Vec<String>,
    phones: Vec<String>,
    names: Vec<Option<String>>,
    fields: Vec<String>,
    opted_out: Vec<bool>,
}

impl Contacts {
    /// Takes the contact rows out of `reads` (their fields text moves here).
    pub(super) fn take(reads: &mut [Read]) -> Self {
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

    pub(super) fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Inserts or updates the rows.
    pub(super) async fn upsert(&self, conn: &mut PgConnection, source: &str) -> sqlx::Result<()> {
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

/// Writes what a batch of prepared records does in `tx`: cancellations, watched values, and the
/// new rule events with their jobs. (Its [`Contacts`] are written by the caller.)
#[allow(clippy::too_many_arguments)]
pub(super) async fn write_batch(
    tx: &mut PgConnection,
    jobs_tx: Option<&mut PgConnection>,
    source: &Source,
    rules: &[&Rule],
    mut reads: Vec<Read>,
    deleted: Vec<String>,
    skips: &mut Vec<(Option<String>, Option<String>, Skip)>,
    report: &mut RunReport,
    dry_run: bool,
) -> sqlx::Result<()> {
    if reads.is_empty() && deleted.is_empty() {
        return Ok(());
    }
    // Last values of the watched fields.
    let previous: HashMap<String, Value> = if source.watched.is_empty() {
        HashMap::new()
    } else {
        let ids: Vec<&str> = reads.iter().map(|r| r.id.as_str()).collect();
        sqlx::query_as::<_, (String, Value)>(
            "SELECT external_id, watched FROM timelines.source_records
              WHERE source = $1 AND external_id = ANY($2)",
        )
        .bind(&source.name)
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect()
    };

    // Contacts who opted out (by a field of the record) lose their queued messages.
    let opted: Vec<&str> = reads
        .iter()
        .filter(|r| r.opted_out)
        .filter_map(|r| r.phone.as_deref())
        .collect();
    if !opted.is_empty() && !dry_run {
        sqlx::query(
            "UPDATE timelines.jobs
                SET state = 'cancelled', finished_at = now(), updated_at = now(),
                    last_error = 'cancelled: ' || (payload->>'phone') || ' opted out (source ' || $2 || ')'
              WHERE state IN ('queued', 'retrying', 'held') AND kind = ANY($3)
                AND payload->>'phone' = ANY($1)",
        )
        .bind(&opted)
        .bind(&source.name)
        .bind(super::spec::MESSAGE_KINDS)
        .execute(&mut *tx)
        .await?;
    }

    // Queued jobs of records deleted since are cancelled (a dry run only reports).
    if !deleted.is_empty() && !dry_run {
        sqlx::query(
            "UPDATE timelines.jobs
                SET state = 'cancelled', finished_at = now(), updated_at = now(),
                    last_error = 'cancelled: the record was deleted in source ' || $1
              WHERE id IN (SELECT job_id FROM timelines.rule_events
                            WHERE source = $1 AND external_id = ANY($2) AND job_id IS NOT NULL)
                AND state IN ('queued', 'retrying', 'held')",
        )
        .bind(&source.name)
        .bind(&deleted)
        .execute(&mut *tx)
        .await?;
    }

    // Watched fields (only of records the rules could act on: a change seen while a record has
    // no usable phone is not used up, it fires once the phone is there).
    if !source.watched.is_empty() {
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
    }
    // Rule events: a field trigger fires on a change against the last value seen.
    let mut events: Vec<Event> = Vec::new();
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
    if events.is_empty() {
        return Ok(());
    }
    let key_of = |e: &Event| reads[e.read].candidates[e.candidate].key.as_str();

    // Events handled before (re-reads, overlapping runs, a repeated page after a crash): one
    // index probe per key (a hash join would read the whole ledger).
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
    let mut claimed_keys: HashSet<&str> = HashSet::new();
    events.retain(|e| !known.contains(key_of(e)) && claimed_keys.insert(key_of(e)));
    report.duplicates += (before - events.len()) as u64;
    drop(claimed_keys);

    let phone_of = |e: &Event| {
        reads[e.read]
            .phone
            .as_deref()
            .expect("events are found for records with a phone")
    };
    let phones: Vec<&str> = events.iter().map(phone_of).collect();
    // Opted out: in the tables, or by a record of this batch (whose contact row is written
    // alongside, not before).
    let mut opted_out: HashSet<String> = sqlx::query_scalar(
        "SELECT o.phone FROM unnest($1::text[]) AS p(phone)
           JOIN timelines.opt_outs o ON o.phone = p.phone
         UNION
         SELECT c.phone FROM unnest($1::text[]) AS p(phone)
           CROSS JOIN LATERAL (SELECT c.phone FROM timelines.contacts c
                                WHERE c.phone = p.phone AND c.opted_out LIMIT 1) AS c",
    )
    .bind(&phones)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .collect();
    opted_out.extend(
        reads
            .iter()
            .filter(|r| r.opted_out)
            .filter_map(|r| r.phone.clone()),
    );
    // Messages per phone inside each cap window in use.
    let mut sent: HashMap<(u64, String), i64> = HashMap::new();
    let windows: HashSet<u64> = events
        .iter()
        .filter_map(|e| {
            rules[reads[e.read].candidates[e.candidate].rule]
                .frequency_cap
                .map(|c| c.window.as_secs())
        })
        .collect();
    if !windows.is_empty() {
        // Serialise cap checks per phone across concurrent runs (two sources, one contact).
        sqlx::query(
            "SELECT pg_advisory_xact_lock($2, hashtext(p))
               FROM (SELECT DISTINCT unnest($1::text[]) AS p ORDER BY 1) AS phones",
        )
        .bind(&phones)
        .bind(CAP_LOCK_CLASS)
        .execute(&mut *tx)
        .await?;
    }
    for secs in windows {
        let counts: Vec<(String, i64)> = sqlx::query_as(
            "SELECT phone, count(*) FROM timelines.rule_events
              WHERE phone = ANY($1) AND outcome = 'enqueued' AND messages
                AND created_at > now() - make_interval(secs => $2)
              GROUP BY phone",
        )
        .bind(&phones)
        .bind(secs as f64)
        .fetch_all(&mut *tx)
        .await?;
        for (phone, n) in counts {
            sent.insert((secs, phone), n);
        }
    }
    drop(phones);

    struct Outcome<'r> {
        key: String,
        rule: &'r Rule,
        external_id: String,
        phone: String,
        outcome: &'static str,
        detail: Option<String>,
        job: Option<Rendered>,
    }
    let mut outcomes: Vec<Outcome> = Vec::with_capacity(events.len());
    for event in &events {
        let read = &mut reads[event.read];
        let candidate = &mut read.candidates[event.candidate];
        let rule = rules[candidate.rule];
        let phone = read
            .phone
            .clone()
            .expect("events are found for records with a phone");
        let messages = rule.messages_contact();
        let mut outcome = Outcome {
            key: std::mem::take(&mut candidate.key),
            rule,
            external_id: read.id.clone(),
            phone,
            outcome: "enqueued",
            detail: None,
            job: None,
        };
        let phone = outcome.phone.as_str();
        if !rule.ignore_opt_out && (read.opted_out || opted_out.contains(phone)) {
            outcome.outcome = "opted_out";
            outcome.detail = Some(format!("{phone} opted out"));
            skips.push((
                Some(read.id.clone()),
                Some(rule.name.clone()),
                Skip::new(
                    "opted_out",
                    format!(
                        "record {}: rule {}: {phone} has opted out",
                        read.id, rule.name
                    ),
                ),
            ));
            outcomes.push(outcome);
            continue;
        }
        let job = candidate
            .job
            .take()
            .expect("events are found for candidates whose filter passed");
        let cap = rule.frequency_cap.filter(|_| messages);
        if let Some(cap) = cap {
            let count = sent
                .entry((cap.window.as_secs(), phone.to_owned()))
                .or_default();
            // (A job that could not be built sends nothing, so it takes no share of the cap.)
            if job.is_ok() && *count >= i64::from(cap.max) {
                outcome.outcome = "capped";
                outcome.detail = Some(format!(
                    "{} messages to {phone} in {} h already",
                    count,
                    cap.window.as_secs() / 3600
                ));
                skips.push((
                    Some(read.id.clone()),
                    Some(rule.name.clone()),
                    Skip::new(
                        "frequency_cap",
                        format!(
                            "record {}: rule {}: {phone} reached the cap of {} per {} h",
                            read.id,
                            rule.name,
                            cap.max,
                            cap.window.as_secs() / 3600
                        ),
                    ),
                ));
                outcomes.push(outcome);
                continue;
            }
            if job.is_ok() {
                *count += 1;
            }
        }
        match job {
            Ok(job) => outcome.job = Some(job),
            Err(detail) => {
                outcome.outcome = "skipped";
                outcome.detail = Some(detail.clone());
                skips.push((
                    Some(read.id.clone()),
                    Some(rule.name.clone()),
                    Skip::new("template_error", detail),
                ));
            }
        }
        outcomes.push(outcome);
    }

    // The jobs and their rule events go in at once, the jobs on their own connection when the
    // caller has one: the job ids are taken ahead from the jobs' sequence. Rarely a job does not
    // go in (a key another job already has, a payload the table refuses); its rule event is
    // then corrected before the commit.
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
    let job_ids: Vec<Option<i64>> = outcomes
        .iter()
        .map(|o| o.job.as_ref().and_then(|_| next_id.next()))
        .collect();
    let events = EventRows {
        keys: outcomes.iter().map(|o| o.key.as_str()).collect(),
        rules: outcomes.iter().map(|o| o.rule.name.as_str()).collect(),
        external_ids: outcomes.iter().map(|o| o.external_id.as_str()).collect(),
        phones: outcomes.iter().map(|o| o.phone.as_str()).collect(),
        outcomes: outcomes.iter().map(|o| o.outcome).collect(),
        job_ids,
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
    drop(events);
    drop(jobs);

    // Corrections: jobs refused (the event is skipped) or already there (the event links it).
    if !written.refused.is_empty() || !written.existing.is_empty() {
        let mut keys: Vec<String> = Vec::new();
        let mut kinds: Vec<&str> = Vec::new();
        let mut details: Vec<Option<String>> = Vec::new();
        let mut job_ids: Vec<Option<i64>> = Vec::new();
        for outcome in &mut outcomes {
            if let Some(message) = written.refused.get(&outcome.key) {
                outcome.outcome = "skipped";
                outcome.detail = Some(format!("job refused: {message}"));
                skips.push((
                    Some(outcome.external_id.clone()),
                    Some(outcome.rule.name.clone()),
                    Skip::new(
                        "job_refused",
                        format!(
                            "record {}: rule {}: {message}",
                            outcome.external_id, outcome.rule.name
                        ),
                    ),
                ));
                outcome.job = None;
            } else if let Some(existing) = written.existing.get(&outcome.key) {
                outcome.job = None;
                keys.push(outcome.key.clone());
                kinds.push(outcome.outcome);
                details.push(outcome.detail.clone());
                job_ids.push(*existing);
                continue;
            } else {
                continue;
            }
            keys.push(outcome.key.clone());
            kinds.push(outcome.outcome);
            details.push(outcome.detail.clone());
            job_ids.push(None);
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
    }
    for outcome in &mut outcomes {
        if let Some(rendered) = outcome.job.take() {
            report.jobs_created += 1;
            if report.planned.len() < MAX_PLANNED {
                report.planned.push(rendered.job);
            }
        }
    }
    Ok(())
}

/// The `timelines.rule_events` rows of a batch, as columns.
struct EventRows<'a> {
    keys: Vec<&'a str>,
    rules: Vec<&'a str>,
    external_ids: Vec<&'a str>,
    phones: Vec<&'a str>,
    outcomes: Vec<&'static str>,
    job_ids: Vec<Option<i64>>,
    messages: Vec<bool>,
    details: Vec<Option<&'a str>>,
}

impl EventRows<'_> {
    /// A plain INSERT: the keys were found new in this transaction, and a source is polled by
    /// one run at a time.
    async fn insert(
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
struct JobsWritten {
    /// Refused by the table's checks, with the reason.
    refused: HashMap<String, String>,
    /// Another job has the key: its id.
    existing: HashMap<String, Option<i64>>,
}

/// Inserts `jobs` with the ids taken for them: one plain INSERT (a third cheaper per row than
/// `ON CONFLICT DO NOTHING`); if it fails, each job alone, so one bad job is recorded and the
/// others go in.
async fn insert_jobs(
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

/// The job for one event: payload from the rule (templates rendered over `context`, the
/// record's variables with `contact` and `source`), the phone, the run time after the delay and
/// quiet hours.
fn build_job(
    source: &Source,
    rule: &Rule,
    templates: &Templates,
    record: &Record,
    ctx: &minijinja::Value,
    phone: &str,
    now: DateTime<Utc>,
) -> Result<PlannedJob, String> {
    let mut payload = rule.payload.clone();
    for field in &rule.payload_templates {
        let value = templates
            .render(&rule.template(&format!("payload:{field}")), ctx)
            .map_err(|e| {
                format!(
                    "record {}: rule {}: payload.{field}: {e}",
                    record.id, rule.name
                )
            })?;
        payload.insert(field.clone(), Value::String(value));
    }
    if rule.text {
        let text = templates
            .render(&rule.template("text"), ctx)
            .map_err(|e| format!("record {}: rule {}: template: {e}", record.id, rule.name))?;
        if text.trim().is_empty() {
            return Err(format!(
                "record {}: rule {}: the message is empty",
                record.id, rule.name
            ));
        }
        payload.insert("text".to_owned(), Value::String(text));
    }
    payload.insert("phone".to_owned(), Value::String(phone.to_owned()));
    let mut run_at = now + chrono::Duration::from_std(rule.delay).unwrap_or_default();
    if rule.messages_contact()
        && let Some(quiet) = &rule.quiet_hours
    {
        let zone = source
            .timezone_field
            .as_deref()
            .and_then(|f| lookup(&record.variables, f))
            .and_then(text)
            .and_then(|z| z.parse::<Tz>().ok());
        run_at = after_quiet_hours(run_at, quiet, zone);
    }
    Ok(PlannedJob {
        rule: rule.name.clone(),
        record: record.id.clone(),
        kind: rule.action.clone(),
        payload: Value::Object(payload),
        run_at,
        idempotency_key: String::new(),
    })
}
