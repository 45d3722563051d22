//! Request parsing: the JSON-object body extractor, typed field access that collects every
//! problem into `errors[]` (§2.1), and the format rules of §5 and §9.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde_json::{Map, Value};

use super::reply::{ApiError, FieldError};

/// Text limit of a message (§5.1, M: taken from the spec's validation).
pub(crate) const MAX_TEXT_CHARS: usize = 2000;
/// Label limit (§5.1, §9).
pub(crate) const MAX_LABEL_CHARS: usize = 64;
/// `chat_name` limit on sends (§5.1).
pub(crate) const MAX_CHAT_NAME_CHARS: usize = 256;

/// A request body that is a JSON object. An empty body counts as `{}` (every field absent); a
/// non-empty one must be declared `application/json` (§1) and parse as an object. Failures are
/// 400 validation errors, never axum's plain-text 415/422 (§8.1: 422 is never seen).
pub(crate) struct JsonObject(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("application/json")
            });
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            ApiError::invalid(FieldError::whole_body(format!("unreadable body: {e}")))
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(Map::new()));
        }
        if !is_json {
            return Err(ApiError::invalid(FieldError::whole_body(
                "the body must be JSON with Content-Type: application/json",
            )));
        }
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => Ok(Self(map)),
            Ok(_) => Err(ApiError::invalid(FieldError::whole_body(
                "the body must be a JSON object",
            ))),
            Err(e) => Err(ApiError::invalid(FieldError::whole_body(format!(
                "invalid JSON: {e}"
            )))),
        }
    }
}

/// Typed access to body fields; every problem is recorded and reported together by [`finish`].
///
/// [`finish`]: Fields::finish
pub(crate) struct Fields<'a> {
    body: &'a Map<String, Value>,
    pub errors: Vec<FieldError>,
}

impl<'a> Fields<'a> {
    pub fn new(body: &'a Map<String, Value>) -> Self {
        Self {
            body,
            errors: Vec::new(),
        }
    }

    /// The field unless it is absent or `null`.
    fn get(&self, name: &str) -> Option<&'a Value> {
        self.body.get(name).filter(|v| !v.is_null())
    }

    pub fn error(&mut self, field: &str, msg: impl Into<String>) {
        self.errors.push(FieldError::body(field, msg));
    }

    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn opt_str(&mut self, name: &str) -> Option<String> {
        match self.get(name)? {
            Value::String(s) => Some(s.clone()),
            _ => {
                self.error(name, "must be a string");
                None
            }
        }
    }

    pub fn req_str(&mut self, name: &str) -> Option<String> {
        if !self.has(name) {
            self.error(name, "field required");
            return None;
        }
        self.opt_str(name)
    }

    pub fn opt_bool(&mut self, name: &str) -> Option<bool> {
        match self.get(name)? {
            Value::Bool(b) => Some(*b),
            _ => {
                self.error(name, "must be a boolean");
                None
            }
        }
    }

    pub fn opt_int(&mut self, name: &str) -> Option<i64> {
        match self.get(name)? {
            Value::Number(n) if n.is_i64() => n.as_i64(),
            _ => {
                self.error(name, "must be an integer");
                None
            }
        }
    }

    /// A required array of label strings, each 1–64 characters (§5.1, §9).
    pub fn labels(&mut self, name: &str) -> Option<Vec<String>> {
        let Some(value) = self.get(name) else {
            self.error(name, "field required");
            return None;
        };
        let Value::Array(items) = value else {
            self.error(name, "must be an array of strings");
            return None;
        };
        let mut labels = Vec::new();
        for item in items {
            match item.as_str() {
                Some(s) if check_label(s).is_ok() => {
                    if !labels.iter().any(|l| l == s) {
                        labels.push(s.to_owned());
                    }
                }
                Some(s) => {
                    let msg = check_label(s).unwrap_err();
                    self.error(name, msg);
                }
                None => self.error(name, "must be an array of strings"),
            }
        }
        Some(labels)
    }

    pub fn finish(self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::validation(self.errors))
        }
    }
}

/// E.164 with the leading `+` (§9: the fake accepts `+[country][number]`): 7–15 digits, the
/// first not 0.
pub(crate) fn check_phone(phone: &str) -> Result<(), &'static str> {
    let Some(digits) = phone.strip_prefix('+') else {
        return Err("must be in international format starting with '+', e.g. +14155551234");
    };
    let valid = (7..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    if valid {
        Ok(())
    } else {
        Err("must be an E.164 number: '+' then 7 to 15 digits")
    }
}

pub(crate) fn check_label(label: &str) -> Result<(), String> {
    let n = label.chars().count();
    if label.trim().is_empty() {
        Err("labels must not be empty".to_owned())
    } else if n > MAX_LABEL_CHARS {
        Err(format!(
            "label must be at most {MAX_LABEL_CHARS} characters (got {n})"
        ))
    } else {
        Ok(())
    }
}

pub(crate) fn check_text(text: &str) -> Result<(), String> {
    let n = text.chars().count();
    if n > MAX_TEXT_CHARS {
        Err(format!(
            "text must be at most {MAX_TEXT_CHARS} characters (got {n})"
        ))
    } else {
        Ok(())
    }
}

/// An `http(s)://host…` URL; enough to catch a missing scheme or an empty string.
pub(crate) fn check_url(url: &str) -> Result<(), &'static str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') && !url.contains(char::is_whitespace) => {
            Ok(())
        }
        _ => Err("must be an absolute http(s) URL"),
    }
}

pub(crate) fn check_email(email: &str) -> Result<(), &'static str> {
    match email.split_once('@') {
        Some((user, domain))
            if !user.is_empty() && domain.contains('.') && !email.contains(char::is_whitespace) =>
        {
            Ok(())
        }
        _ => Err("must be an email address"),
    }
}

/// Query parameters; empty values count as absent (some clients send `after=` for "none").
pub(crate) struct QueryParams(pub HashMap<String, String>);

impl QueryParams {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// `page`, starting at 1 (§2.3).
    pub fn page(&self, errors: &mut Vec<FieldError>) -> usize {
        match self.get("page") {
            None => 1,
            Some(raw) => match raw.parse::<usize>() {
                Ok(p) if p >= 1 => p,
                _ => {
                    errors.push(FieldError::query("page", "must be an integer >= 1"));
                    1
                }
            },
        }
    }

    pub fn bool(&self, name: &str, errors: &mut Vec<FieldError>) -> Option<bool> {
        match self.get(name)? {
            "true" => Some(true),
            "false" => Some(false),
            _ => {
                errors.push(FieldError::query(name, "must be true or false"));
                None
            }
        }
    }

    pub fn date(&self, name: &str, errors: &mut Vec<FieldError>) -> Option<DateTime<Utc>> {
        let raw = self.get(name)?;
        let parsed = parse_date(raw);
        if parsed.is_none() {
            errors.push(FieldError::query(
                name,
                "must be an ISO date or datetime, e.g. 2024-01-01T00:00:00Z",
            ));
        }
        parsed
    }

    /// A comma-separated multi-value filter (§2.4).
    pub fn list(&self, name: &str) -> Option<Vec<String>> {
        self.get(name).map(|raw| {
            raw.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        })
    }
}

/// Query dates (§2.5): RFC 3339, a naive datetime or a date (both read as UTC), or the
/// response format `YYYY-MM-DD HH:MM:SS ±HHMM` so a client can echo a timestamp back.
pub(crate) fn parse_date(raw: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = DateTime::parse_from_str(raw, "%Y-%m-%d %H:%M:%S %z") {
        return Some(t.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(raw, format) {
            return Some(t.and_utc());
        }
    }
    NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .ok()
        .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_must_be_e164_with_plus() {
        assert!(check_phone("+14155551234").is_ok());
        assert!(check_phone("14155551234").is_err());
        assert!(check_phone("+1 415 555").is_err());
        assert!(check_phone("+0123456789").is_err());
        assert!(check_phone("+1234567890123456").is_err());
    }

    #[test]
    fn query_dates_accept_iso_forms_and_the_response_format() {
        let want = parse_date("2024-01-01T00:00:00Z").unwrap();
        assert_eq!(parse_date("2024-01-01"), Some(want));
        assert_eq!(parse_date("2024-01-01T03:00:00+03:00"), Some(want));
        assert_eq!(parse_date("2024-01-01 03:00:00 +0300"), Some(want));
        assert_eq!(parse_date("yesterday"), None);
    }
}
