//! The reading stage's half of a batch: per record, what needs no database (deleted records,
//! opt-out flags, the phone, watched values) and, per rule, the event it could be with its
//! filter and its job, rendered ahead.

use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use serde_json::{Value, json};

use super::super::config::Trigger;
use super::super::engine::PlannedJob;
use super::super::policy::after_quiet_hours;
use super::super::record::{self, Record, Skip, lookup, text};
use super::super::spec::{Catalog, Rule, Source};
use super::super::template::{Templates, context};
use super::SkipRow;

/// What one rule makes of one record, worked out in the reading stage: the event's key, the
/// filter's verdict and the job, rendered ahead. What needs the database (a change against the
/// last values seen, an event handled before, opt-outs, caps) is decided at write time.
pub(in crate::sources) struct Candidate {
    /// Index in the run's rules.
    pub(super) rule: usize,
    /// The event's idempotency key.
    pub(super) key: String,
    /// Field triggers: the field's value now (an event only if it differs from the last one).
    pub(super) now: Option<Value>,
    /// The filter's verdict (an error is recorded as a skip if the event is new).
    pub(super) filter: Result<bool, String>,
    /// The job, when the filter passed (a template error is recorded if the event is new).
    pub(super) job: Option<Result<Rendered, String>>,
}

/// A job built ahead, with its payload already serialised.
pub(in crate::sources) struct Rendered {
    pub(super) job: PlannedJob,
    pub(super) payload: String,
}

/// Per record, what the reading stage prepared.
pub(in crate::sources) struct Read {
    pub(super) id: String,
    pub(super) cursor: DateTime<Utc>,
    pub(super) phone: Option<String>,
    pub(super) name: Option<String>,
    pub(super) opted_out: bool,
    /// Created inside the run's window (for `created` and first-seen field triggers).
    pub(super) created_now: bool,
    pub(super) watched: Value,
    /// The record's variables as JSON text (`contacts.fields`; taken by [`Contacts::take`]).
    pub(super) fields: String,
    pub(super) candidates: Vec<Candidate>,
}

/// The part of an idempotency key that names the event; long values are hashed.
fn event_part(text: &str) -> String {
    if text.len() <= 64 {
        text.to_owned()
    } else {
        uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, text.as_bytes()).to_string()
    }
}

pub(super) fn same(a: &Value, b: &Value) -> bool {
    a == b || matches!((text(a), text(b)), (Some(x), Some(y)) if x == y)
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The per-record work that needs no database: deleted records, opt-out flags, phones, watched
/// values, and for each rule the event it could be, its filter and its job (templates rendered,
/// quiet hours applied). Runs in the reading stage, alongside the previous batch's writes.
pub(in crate::sources) fn prepare(
    catalog: &Catalog,
    source: &Source,
    rules: &[&Rule],
    window_lower: DateTime<Utc>,
    records: Vec<Record>,
    skips: &mut Vec<SkipRow>,
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
            // (The caller passes only the rules whose `on` matches the event.)
            Trigger::Event => ("event".to_owned(), None),
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
        let key = format!(
            "{}:{}:{}:{}:{}",
            source.key_prefix(),
            source.name,
            rule.name,
            record.id,
            event
        );
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
