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
use super::template::context;

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

/// One rule event found on a page.
struct Event<'a> {
    rule: &'a Rule,
    record: usize,
    key: String,
}

/// Per record, what the page read.
pub(super) struct Read {
    record: Record,
    phone: Option<String>,
    opted_out: bool,
    watched: Value,
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
/// values. Runs in the reading stage, alongside the previous batch's writes.
pub(super) fn prepare(
    templates: &super::template::Templates,
    source: &Source,
    records: Vec<Record>,
    skips: &mut Vec<(Option<String>, Option<String>, Skip)>,
) -> (Vec<Read>, Vec<String>) {
    let mut reads: Vec<Read> = Vec::new();
    let mut deleted: Vec<String> = Vec::new();
    for record in records {
        if source.skip_if {
            match record::test(templates, source, "skip_if", &record) {
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
            match record::test(templates, source, "opted_out_if", &record) {
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
        reads.push(Read {
            record,
            phone,
            opted_out,
            watched,
        });
    }

    (reads, deleted)
}

/// Writes everything about a batch of prepared records in `tx`: cancellations, watched values,
/// contacts, and the rule events with their jobs.
#[allow(clippy::too_many_arguments)]
pub(super) async fn write_batch(
    tx: &mut PgConnection,
    source: &Source,
    rules: &[&Rule],
    catalog: &Catalog,
    reads: Vec<Read>,
    deleted: Vec<String>,
    skips: &mut Vec<(Option<String>, Option<String>, Skip)>,
    window_lower: DateTime<Utc>,
    report: &mut RunReport,
    dry_run: bool,
) -> sqlx::Result<()> {
    let templates = &catalog.templates;
    if reads.is_empty() && deleted.is_empty() {
        return Ok(());
    }
    // Last values of the watched fields.
    let ids: Vec<String> = reads.iter().map(|r| r.record.id.clone()).collect();
    let previous: HashMap<String, Value> = if source.watched.is_empty() {
        HashMap::new()
    } else {
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
    // no usable phone is not used up, it fires once the phone is there) and contacts.
    {
        // (Only sources whose rules watch fields keep them.)
        let actionable: Vec<&Read> = reads
            .iter()
            .filter(|r| r.phone.is_some() && !source.watched.is_empty())
            .collect();
        let ids: Vec<&str> = actionable.iter().map(|r| r.record.id.as_str()).collect();
        let cursors: Vec<DateTime<Utc>> = actionable.iter().map(|r| r.record.cursor).collect();
        let watched: Vec<Value> = actionable.iter().map(|r| r.watched.clone()).collect();
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

        let with_phone: Vec<&Read> = reads.iter().filter(|r| r.phone.is_some()).collect();
        let ids: Vec<&str> = with_phone.iter().map(|r| r.record.id.as_str()).collect();
        let phones: Vec<&str> = with_phone
            .iter()
            .filter_map(|r| r.phone.as_deref())
            .collect();
        let names: Vec<Option<String>> = with_phone
            .iter()
            .map(|r| record::name_of(source, &r.record))
            .collect();
        let fields: Vec<Value> = with_phone
            .iter()
            .map(|r| r.record.variables.clone())
            .collect();
        let opted: Vec<bool> = with_phone.iter().map(|r| r.opted_out).collect();
        sqlx::query(
            "INSERT INTO timelines.contacts AS c (source, external_id, phone, name, fields, opted_out)
             SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[], $5::jsonb[], $6::boolean[])
             ON CONFLICT (source, external_id) DO UPDATE
                SET phone = excluded.phone, name = excluded.name, fields = excluded.fields,
                    opted_out = excluded.opted_out, last_seen = now()",
        )
        .bind(&source.name)
        .bind(&ids)
        .bind(&phones)
        .bind(&names)
        .bind(&fields)
        .bind(&opted)
        .execute(&mut *tx)
        .await?;
    }

    // Rule events.
    let mut events: Vec<Event> = Vec::new();
    for (index, read) in reads.iter().enumerate() {
        if read.phone.is_none() {
            continue;
        }
        let record = &read.record;
        let before = previous.get(&record.id);
        // `created` needs the record's creation time (checked at start-up): "first seen" would
        // also match old records the first time they change after the source is set up.
        let created_now = record
            .created
            .is_some_and(|created| created >= window_lower);
        for rule in rules {
            let event = match rule.trigger {
                Trigger::Created => created_now.then(|| "created".to_owned()),
                Trigger::Updated => Some(format!("updated@{}", stamp(record.cursor))),
                Trigger::FieldChanged | Trigger::FieldEquals => {
                    let field = rule.field.as_deref().unwrap_or_default();
                    let now = lookup(&record.variables, field)
                        .cloned()
                        .unwrap_or(Value::Null);
                    // A record seen before, but not with this field watched (the rule is new):
                    // its value is the baseline, not a change.
                    let known = before.is_some();
                    let was = before.and_then(|w| w.get(field).cloned());
                    // A record first seen: a change only if it was created in the window.
                    let changed = match &was {
                        Some(was) => !same(was, &now),
                        None if known => false,
                        None => created_now,
                    };
                    let wanted = rule.value.as_ref().is_none_or(|v| same(v, &now));
                    let value = text(&now).unwrap_or_else(|| now.to_string());
                    (changed && wanted && !now.is_null())
                        .then(|| format!("{field}={}@{}", event_part(&value), stamp(record.cursor)))
                }
            };
            let Some(event) = event else { continue };
            if rule.filter {
                match templates.test(&rule.template("filter"), &context(&record.variables)) {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(e) => {
                        skips.push((
                            Some(record.id.clone()),
                            Some(rule.name.clone()),
                            Skip::new(
                                "filter_error",
                                format!("record {}: rule {}: filter: {e}", record.id, rule.name),
                            ),
                        ));
                        continue;
                    }
                }
            }
            events.push(Event {
                rule,
                record: index,
                key: format!("poll:{}:{}:{}:{}", source.name, rule.name, record.id, event),
            });
        }
    }
    if events.is_empty() {
        return Ok(());
    }

    // Events handled before (re-reads, overlapping runs, a repeated page after a crash).
    let keys: Vec<&str> = events.iter().map(|e| e.key.as_str()).collect();
    let known: HashSet<String> = sqlx::query_scalar(
        "SELECT e.idempotency_key FROM unnest($1::text[]) AS k(key)
           JOIN timelines.rule_events e ON e.idempotency_key = k.key",
    )
    .bind(&keys)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .collect();
    let before = events.len();
    events.retain(|e| !known.contains(&e.key));
    report.duplicates += (before - events.len()) as u64;

    let phones: Vec<&str> = events
        .iter()
        .filter_map(|e| reads[e.record].phone.as_deref())
        .collect();
    let opted_out: HashSet<String> = sqlx::query_scalar(
        "SELECT o.phone FROM unnest($1::text[]) AS p(phone)
           JOIN timelines.opt_outs o ON o.phone = p.phone
         UNION
         SELECT c.phone FROM unnest($1::text[]) AS p(phone)
           JOIN timelines.contacts c ON c.phone = p.phone AND c.opted_out",
    )
    .bind(&phones)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .collect();
    // Messages per phone inside each cap window in use.
    let mut sent: HashMap<(u64, String), i64> = HashMap::new();
    let windows: HashSet<u64> = events
        .iter()
        .filter_map(|e| e.rule.frequency_cap.map(|c| c.window.as_secs()))
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

    struct Outcome {
        key: String,
        rule: String,
        external_id: String,
        phone: Option<String>,
        outcome: &'static str,
        messages: bool,
        detail: Option<String>,
        job: Option<PlannedJob>,
    }
    let now = Utc::now();
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut claimed_keys: HashSet<String> = HashSet::new();
    for event in &events {
        if !claimed_keys.insert(event.key.clone()) {
            continue;
        }
        let read = &reads[event.record];
        let rule = event.rule;
        let phone = read
            .phone
            .clone()
            .expect("events are found for records with a phone");
        let messages = rule.messages_contact();
        let mut outcome = Outcome {
            key: event.key.clone(),
            rule: rule.name.clone(),
            external_id: read.record.id.clone(),
            phone: Some(phone.clone()),
            outcome: "enqueued",
            messages,
            detail: None,
            job: None,
        };
        if !rule.ignore_opt_out && (read.opted_out || opted_out.contains(&phone)) {
            outcome.outcome = "opted_out";
            outcome.detail = Some(format!("{phone} opted out"));
            skips.push((
                Some(read.record.id.clone()),
                Some(rule.name.clone()),
                Skip::new(
                    "opted_out",
                    format!(
                        "record {}: rule {}: {phone} has opted out",
                        read.record.id, rule.name
                    ),
                ),
            ));
            outcomes.push(outcome);
            continue;
        }
        if messages && let Some(cap) = rule.frequency_cap {
            let count = sent
                .entry((cap.window.as_secs(), phone.clone()))
                .or_default();
            if *count >= i64::from(cap.max) {
                outcome.outcome = "capped";
                outcome.detail = Some(format!(
                    "{} messages to {phone} in {} h already",
                    count,
                    cap.window.as_secs() / 3600
                ));
                skips.push((
                    Some(read.record.id.clone()),
                    Some(rule.name.clone()),
                    Skip::new(
                        "frequency_cap",
                        format!(
                            "record {}: rule {}: {phone} reached the cap of {} per {} h",
                            read.record.id,
                            rule.name,
                            cap.max,
                            cap.window.as_secs() / 3600
                        ),
                    ),
                ));
                outcomes.push(outcome);
                continue;
            }
            *count += 1;
        }
        match build_job(source, rule, catalog, read, &phone, now) {
            Ok(job) => {
                outcome.job = Some(PlannedJob {
                    idempotency_key: event.key.clone(),
                    ..job
                })
            }
            Err(detail) => {
                if messages && let Some(cap) = rule.frequency_cap {
                    *sent
                        .entry((cap.window.as_secs(), phone.clone()))
                        .or_default() -= 1;
                }
                outcome.outcome = "skipped";
                outcome.detail = Some(detail.clone());
                skips.push((
                    Some(read.record.id.clone()),
                    Some(rule.name.clone()),
                    Skip::new("template_error", detail),
                ));
            }
        }
        outcomes.push(outcome);
    }

    // The jobs: one statement for the page; if a payload is refused by the table's checks, each
    // job alone, so one bad job is recorded and the others go in.
    let jobs: Vec<&PlannedJob> = outcomes.iter().filter_map(|o| o.job.as_ref()).collect();
    let mut ids_by_key: HashMap<String, i64> = HashMap::new();
    let mut refused: HashMap<String, String> = HashMap::new();
    if !jobs.is_empty() {
        sqlx::query("SAVEPOINT page_jobs").execute(&mut *tx).await?;
        match insert_jobs(tx, &jobs, rules).await {
            Ok(rows) => {
                sqlx::query("RELEASE SAVEPOINT page_jobs")
                    .execute(&mut *tx)
                    .await?;
                ids_by_key.extend(rows);
            }
            Err(sqlx::Error::Database(_)) => {
                sqlx::query("ROLLBACK TO SAVEPOINT page_jobs")
                    .execute(&mut *tx)
                    .await?;
                for job in &jobs {
                    sqlx::query("SAVEPOINT one_job").execute(&mut *tx).await?;
                    match insert_jobs(tx, std::slice::from_ref(job), rules).await {
                        Ok(rows) => {
                            sqlx::query("RELEASE SAVEPOINT one_job")
                                .execute(&mut *tx)
                                .await?;
                            ids_by_key.extend(rows);
                        }
                        Err(sqlx::Error::Database(e)) => {
                            sqlx::query("ROLLBACK TO SAVEPOINT one_job")
                                .execute(&mut *tx)
                                .await?;
                            refused.insert(job.idempotency_key.clone(), e.message().to_owned());
                        }
                        Err(other) => return Err(other),
                    }
                }
            }
            Err(other) => return Err(other),
        }
    }
    for outcome in &mut outcomes {
        if let Some(message) = refused.remove(&outcome.key) {
            outcome.outcome = "skipped";
            outcome.detail = Some(format!("job refused: {message}"));
            skips.push((
                Some(outcome.external_id.clone()),
                Some(outcome.rule.clone()),
                Skip::new(
                    "job_refused",
                    format!(
                        "record {}: rule {}: {message}",
                        outcome.external_id, outcome.rule
                    ),
                ),
            ));
            outcome.job = None;
        }
    }
    for outcome in &outcomes {
        if let Some(job) = &outcome.job {
            report.jobs_created += 1;
            if report.planned.len() < MAX_PLANNED {
                report.planned.push(job.clone());
            }
        }
    }

    let keys: Vec<&str> = outcomes.iter().map(|o| o.key.as_str()).collect();
    let rule_names: Vec<&str> = outcomes.iter().map(|o| o.rule.as_str()).collect();
    let externals: Vec<&str> = outcomes.iter().map(|o| o.external_id.as_str()).collect();
    let phones: Vec<Option<&str>> = outcomes.iter().map(|o| o.phone.as_deref()).collect();
    let kinds: Vec<&str> = outcomes.iter().map(|o| o.outcome).collect();
    let job_ids: Vec<Option<i64>> = outcomes
        .iter()
        .map(|o| ids_by_key.get(&o.key).copied())
        .collect();
    let messages: Vec<bool> = outcomes.iter().map(|o| o.messages).collect();
    let details: Vec<Option<&str>> = outcomes.iter().map(|o| o.detail.as_deref()).collect();
    sqlx::query(
        "INSERT INTO timelines.rule_events
             (idempotency_key, source, rule, external_id, phone, outcome, job_id, messages, detail, run_id)
         SELECT k, $2, r, x, p, o, j, m, d, $10
           FROM unnest($1::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[],
                       $8::boolean[], $9::text[]) AS t(k, r, x, p, o, j, m, d)
         ON CONFLICT (idempotency_key) DO NOTHING",
    )
    .bind(&keys)
    .bind(&source.name)
    .bind(&rule_names)
    .bind(&externals)
    .bind(&phones)
    .bind(&kinds)
    .bind(&job_ids)
    .bind(&messages)
    .bind(&details)
    .bind(report.run_id)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn insert_jobs(
    tx: &mut PgConnection,
    jobs: &[&PlannedJob],
    rules: &[&Rule],
) -> sqlx::Result<Vec<(String, i64)>> {
    let rule_of = |name: &str| rules.iter().find(|r| r.name == name).copied();
    let kinds: Vec<&str> = jobs.iter().map(|j| j.kind.as_str()).collect();
    let payloads: Vec<&Value> = jobs.iter().map(|j| &j.payload).collect();
    let workspaces: Vec<&str> = jobs
        .iter()
        .map(|j| rule_of(&j.rule).map_or("default", |r| r.workspace.as_str()))
        .collect();
    let run_at: Vec<DateTime<Utc>> = jobs.iter().map(|j| j.run_at).collect();
    let priorities: Vec<i32> = jobs
        .iter()
        .map(|j| rule_of(&j.rule).map_or(0, |r| r.priority))
        .collect();
    let keys: Vec<&str> = jobs.iter().map(|j| j.idempotency_key.as_str()).collect();
    let attempts: Vec<Option<i32>> = jobs
        .iter()
        .map(|j| rule_of(&j.rule).and_then(|r| r.max_attempts))
        .collect();
    sqlx::query_as(
        "INSERT INTO timelines.jobs (kind, payload, workspace, run_at, priority, idempotency_key, max_attempts)
         SELECT k, p, w, r, pr, key, coalesce(a, 20)
           FROM unnest($1::text[], $2::jsonb[], $3::text[], $4::timestamptz[], $5::int[], $6::text[], $7::int[])
                AS t(k, p, w, r, pr, key, a)
         ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
         RETURNING idempotency_key, id",
    )
    .bind(&kinds)
    .bind(&payloads)
    .bind(&workspaces)
    .bind(&run_at)
    .bind(&priorities)
    .bind(&keys)
    .bind(&attempts)
    .fetch_all(&mut *tx)
    .await
}

/// The job for one event: payload from the rule (templates rendered over the record's
/// variables and `contact`), the phone, the run time after the delay and quiet hours.
fn build_job(
    source: &Source,
    rule: &Rule,
    catalog: &Catalog,
    read: &Read,
    phone: &str,
    now: DateTime<Utc>,
) -> Result<PlannedJob, String> {
    let mut variables = read.record.variables.clone();
    if let Some(vars) = variables.as_object_mut() {
        vars.insert(
            "contact".to_owned(),
            json!({
                "phone": phone,
                "name": record::name_of(source, &read.record),
                "external_id": read.record.id,
            }),
        );
        vars.insert("source".to_owned(), json!(source.name));
    }
    let ctx = context(&variables);
    let templates = &catalog.templates;
    let mut payload = rule.payload.clone();
    for field in &rule.payload_templates {
        let value = templates
            .render(&rule.template(&format!("payload:{field}")), &ctx)
            .map_err(|e| {
                format!(
                    "record {}: rule {}: payload.{field}: {e}",
                    read.record.id, rule.name
                )
            })?;
        payload.insert(field.clone(), Value::String(value));
    }
    if rule.text {
        let text = templates
            .render(&rule.template("text"), &ctx)
            .map_err(|e| {
                format!(
                    "record {}: rule {}: template: {e}",
                    read.record.id, rule.name
                )
            })?;
        if text.trim().is_empty() {
            return Err(format!(
                "record {}: rule {}: the message is empty",
                read.record.id, rule.name
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
            .and_then(|f| lookup(&read.record.variables, f))
            .and_then(text)
            .and_then(|z| z.parse::<Tz>().ok());
        run_at = after_quiet_hours(run_at, quiet, zone);
    }
    Ok(PlannedJob {
        rule: rule.name.clone(),
        record: read.record.id.clone(),
        kind: rule.action.clone(),
        payload: Value::Object(payload),
        run_at,
        idempotency_key: String::new(),
    })
}
