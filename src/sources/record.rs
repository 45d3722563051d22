//! One record from a source: its id, times, variables, phone and flags, read by the source's
//! field paths. Anything unusable becomes a [`Skip`] with a reason, never a panic.

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde_json::{Map, Value};

use super::phone::{self, PhoneError};
use super::spec::Source;
use super::template::Templates;

/// Why a record was not turned into jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    /// A short machine-readable reason (`missing_phone`, `invalid_phone`, `bad_record`, ...).
    pub reason: &'static str,
    /// Details for people.
    pub detail: String,
}

impl Skip {
    /// A skip with `reason` and `detail`.
    pub fn new(reason: &'static str, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

/// A record, read.
#[derive(Debug, Clone)]
pub struct Record {
    /// Its id, as text.
    pub id: String,
    /// Its modification time (the cursor).
    pub cursor: DateTime<Utc>,
    /// Its creation time, when the source has one.
    pub created: Option<DateTime<Utc>>,
    /// The variables rules and templates see: the record, with `fields_path` merged in.
    pub variables: Value,
}

/// The value at a dotted path (`properties.firstname`, `phones.0.value`).
pub fn lookup<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    if path.is_empty() {
        return Some(value);
    }
    path.split('.').try_fold(value, |v, part| match v {
        Value::Object(map) => map.get(part),
        Value::Array(items) => part.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

/// A scalar as text (numbers and booleans too); None for null, objects and arrays.
pub fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Parses the time formats CRMs use: RFC 3339 (with `Z`, offsets, `+0000`, millis), epoch
/// milliseconds or seconds (as numbers or digit strings), and `YYYY-MM-DD HH:MM:SS` (UTC).
pub fn parse_time(value: &Value) -> Option<DateTime<Utc>> {
    match value {
        Value::Number(n) => epoch(n.as_f64()?),
        Value::String(s) => {
            let s = s.trim();
            if let Ok(t) = DateTime::parse_from_rfc3339(s) {
                return Some(t.with_timezone(&Utc));
            }
            // Salesforce: 2024-05-01T10:00:00.000+0000
            if let Ok(t) = DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z") {
                return Some(t.with_timezone(&Utc));
            }
            if let Ok(t) = NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f") {
                return Some(Utc.from_utc_datetime(&t));
            }
            if let Ok(t) = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f") {
                return Some(Utc.from_utc_datetime(&t));
            }
            if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
                return epoch(s.parse().ok()?);
            }
            None
        }
        _ => None,
    }
}

/// Epoch seconds or milliseconds (values past the year 33658 in seconds are milliseconds).
fn epoch(value: f64) -> Option<DateTime<Utc>> {
    if !value.is_finite() || value < 0.0 {
        return None;
    }
    let millis = if value >= 1e12 { value } else { value * 1000.0 };
    Utc.timestamp_millis_opt(millis as i64).single()
}

/// Reads `raw` with `source`'s paths.
pub fn read(source: &Source, raw: Value) -> Result<Record, Skip> {
    let id = lookup(&raw, &source.id_field)
        .and_then(text)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| Skip::new("bad_record", format!("no id at `{}`", source.id_field)))?;
    let mut raw = raw;
    strip_nul(&mut raw);
    let variables = variables(source, raw);
    let cursor_value = lookup(&variables, &source.cursor_field).ok_or_else(|| {
        Skip::new(
            "bad_record",
            format!(
                "record {id}: no modification time at `{}`",
                source.cursor_field
            ),
        )
    })?;
    let cursor = parse_time(cursor_value).ok_or_else(|| {
        Skip::new(
            "bad_record",
            format!(
                "record {id}: `{}` is not a time: {}",
                source.cursor_field,
                short(cursor_value)
            ),
        )
    })?;
    let created = source
        .created_field
        .as_deref()
        .and_then(|path| lookup(&variables, path))
        .and_then(parse_time);
    Ok(Record {
        id,
        cursor,
        created,
        variables,
    })
}

/// Removes NUL characters, which Postgres text and jsonb cannot store.
fn strip_nul(value: &mut Value) {
    match value {
        Value::String(s) if s.contains('\0') => s.retain(|c| c != '\0'),
        Value::Array(items) => items.iter_mut().for_each(strip_nul),
        Value::Object(map) => {
            let keys: Vec<String> = map.keys().filter(|k| k.contains('\0')).cloned().collect();
            for key in keys {
                if let Some(v) = map.remove(&key) {
                    map.insert(key.replace('\0', ""), v);
                }
            }
            map.values_mut().for_each(strip_nul);
        }
        _ => {}
    }
}

/// The record as variables: its `fields_path` object's keys at the top level, the record's own
/// top-level keys over them.
fn variables(source: &Source, raw: Value) -> Value {
    let fields = source
        .fields_path
        .as_deref()
        .and_then(|path| lookup(&raw, path))
        .and_then(Value::as_object)
        .cloned();
    match (raw, fields) {
        (Value::Object(record), Some(mut merged)) => {
            merged.extend(record);
            Value::Object(merged)
        }
        (Value::Object(record), None) => Value::Object(record),
        (other, _) => {
            let mut map = Map::new();
            map.insert("value".to_owned(), other);
            Value::Object(map)
        }
    }
}

/// The contact's phone (E.164) from the source's phone fields.
pub fn phone_of(source: &Source, record: &Record) -> Result<String, Skip> {
    let candidates: Vec<String> = source
        .phone_fields
        .iter()
        .filter_map(|path| lookup(&record.variables, path))
        .flat_map(phone_texts)
        .collect();
    phone::first_valid(candidates.iter().map(String::as_str), source.region).map_err(|e| match e {
        PhoneError::Missing => {
            Skip::new("missing_phone", format!("record {}: no phone", record.id))
        }
        PhoneError::Invalid(raw) => Skip::new(
            "invalid_phone",
            format!("record {}: invalid phone {raw:?}", record.id),
        ),
    })
}

/// Phone values: a string or number; a list of them; or Pipedrive-style `[{value, primary}]`
/// (primary first).
fn phone_texts(value: &Value) -> Vec<String> {
    match value {
        Value::Array(items) => {
            let mut sorted: Vec<&Value> = items.iter().collect();
            sorted.sort_by_key(|v| !v.get("primary").and_then(Value::as_bool).unwrap_or(false));
            sorted
                .into_iter()
                .filter_map(|v| match v {
                    Value::Object(o) => o.get("value").and_then(text),
                    other => text(other),
                })
                .collect()
        }
        other => text(other).into_iter().collect(),
    }
}

/// The contact's name from the source's name fields, joined with spaces.
pub fn name_of(source: &Source, record: &Record) -> Option<String> {
    let parts: Vec<String> = source
        .name_fields
        .iter()
        .filter_map(|path| lookup(&record.variables, path))
        .filter_map(text)
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    (!parts.is_empty()).then(|| parts.join(" "))
}

/// Evaluates one of the source's expressions (`skip_if`, `opted_out_if`) on a record, given as
/// its template context ([`super::template::context`] of its variables).
pub fn test(
    templates: &Templates,
    source: &Source,
    part: &str,
    record: &Record,
    variables: &minijinja::Value,
) -> Result<bool, Skip> {
    templates
        .test(&source.template(part), variables)
        .map_err(|e| Skip::new("bad_record", format!("record {}: {part}: {e}", record.id)))
}

fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.len() > 60 {
        format!("{}…", &text[..text.floor_char_boundary(60)])
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn paths_reach_into_objects_and_lists() {
        let v = json!({"a": {"b": [{"c": 1}]}});
        assert_eq!(lookup(&v, "a.b.0.c"), Some(&json!(1)));
        assert_eq!(lookup(&v, "a.x"), None);
        assert_eq!(lookup(&v, ""), Some(&v));
    }

    #[test]
    fn vendor_time_formats_parse() {
        let expected: DateTime<Utc> = "2024-05-01T10:00:00Z".parse().unwrap();
        for value in [
            json!("2024-05-01T10:00:00Z"),
            json!("2024-05-01T10:00:00.000Z"),
            json!("2024-05-01T15:30:00+05:30"),
            json!("2024-05-01T10:00:00.000+0000"),
            json!("2024-05-01 10:00:00"),
            json!("1714557600000"),
            json!(1714557600000_i64),
            json!(1714557600),
        ] {
            assert_eq!(parse_time(&value), Some(expected), "{value}");
        }
        assert_eq!(parse_time(&json!("yesterday")), None);
        assert_eq!(parse_time(&json!(null)), None);
    }

    #[test]
    fn pipedrive_style_phone_lists_put_the_primary_first() {
        let phones = json!([{"value": "+1 415 555 0100", "primary": false}, {"value": "+5511999999999", "primary": true}]);
        assert_eq!(
            phone_texts(&phones),
            vec!["+5511999999999", "+1 415 555 0100"]
        );
    }
}
