//! Templates and expressions (minijinja) for requests, rule filters and messages.
//!
//! Every template and expression of the configuration is compiled once at start-up, so a syntax
//! error stops start-up naming its key. Rendering is semi-strict: printing a field a record does
//! not have fails for that record (recorded as a skip) rather than rendering an empty gap, while
//! `{% if field %}` and `field is defined` treat it as absent. Fields whose value is null count as
//! missing, so `{{ firstname | default("there") }}` works.

use chrono::{DateTime, SecondsFormat, Utc};
use minijinja::{Environment, Error, ErrorKind, UndefinedBehavior, Value};

/// Compiled templates and expressions, by name.
pub struct Templates {
    env: Environment<'static>,
    /// Expressions: absent fields are simply undefined (false, unequal), never errors.
    expressions: Environment<'static>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates").finish_non_exhaustive()
    }
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

impl Templates {
    /// An empty set with the time filters (`unix_ms`, `unix_s`, `rfc3339`, `date`, `datetime`).
    pub fn new() -> Self {
        let mut expressions = Environment::new();
        expressions.set_undefined_behavior(UndefinedBehavior::Chainable);
        Self {
            env: Self::environment(),
            expressions,
        }
    }

    fn environment() -> Environment<'static> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        env.set_keep_trailing_newline(true);
        env.add_filter("unix_ms", |v: String| {
            time(&v).map(|t| t.timestamp_millis())
        });
        env.add_filter("unix_s", |v: String| time(&v).map(|t| t.timestamp()));
        env.add_filter("rfc3339", |v: String| {
            time(&v).map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        });
        env.add_filter("rfc3339_ms", |v: String| {
            time(&v).map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        });
        env.add_filter("datetime", |v: String| {
            time(&v).map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        });
        env.add_filter("rfc3339_offset", |v: String| {
            time(&v).map(|t| t.format("%Y-%m-%dT%H:%M:%S+00:00").to_string())
        });
        env.add_filter("shift", |v: String, seconds: i64| {
            time(&v).map(|t| {
                (t + chrono::Duration::seconds(seconds))
                    .to_rfc3339_opts(SecondsFormat::Millis, true)
            })
        });
        env.add_filter("date", |v: String| {
            time(&v).map(|t| t.format("%Y-%m-%d").to_string())
        });
        env
    }

    /// Adds a template; the error is minijinja's, with line and reason.
    pub fn add(&mut self, name: &str, source: &str) -> Result<(), String> {
        self.env
            .add_template_owned(name.to_owned(), source.to_owned())
            .map_err(describe)
    }

    /// Adds an expression (rendered as a template that yields `1` when it is true).
    pub fn add_expression(&mut self, name: &str, expression: &str) -> Result<(), String> {
        self.expressions
            .add_template_owned(
                name.to_owned(),
                format!("{{% if ({expression}) %}}1{{% endif %}}"),
            )
            .map_err(describe)
    }

    /// Renders template `name` over `context`.
    pub fn render(&self, name: &str, context: &Value) -> Result<String, String> {
        self.env
            .get_template(name)
            .and_then(|t| t.render(context))
            .map_err(describe)
    }

    /// Evaluates expression `name` over `context`.
    pub fn test(&self, name: &str, context: &Value) -> Result<bool, String> {
        self.expressions
            .get_template(name)
            .and_then(|t| t.render(context))
            .map(|s| s == "1")
            .map_err(describe)
    }
}

/// A JSON value as a template context, with nulls removed from objects so they count as
/// undefined (strict rendering reports them; `default()` replaces them). The value is read as it
/// is converted, never copied first.
pub fn context(value: &serde_json::Value) -> Value {
    Value::from_serialize(WithoutNulls(value))
}

/// Serialises a JSON value with the null members of its objects left out.
struct WithoutNulls<'a>(&'a serde_json::Value);

impl serde::Serialize for WithoutNulls<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self.0 {
            serde_json::Value::Object(map) => {
                let mut out = serializer.serialize_map(None)?;
                for (key, value) in map.iter().filter(|(_, v)| !v.is_null()) {
                    out.serialize_entry(key, &WithoutNulls(value))?;
                }
                out.end()
            }
            serde_json::Value::Array(items) => {
                let mut out = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    out.serialize_element(&WithoutNulls(item))?;
                }
                out.end()
            }
            other => other.serialize(serializer),
        }
    }
}

fn time(value: &str) -> Result<DateTime<Utc>, Error> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            Error::new(
                ErrorKind::InvalidOperation,
                format!("not an RFC 3339 time: {value:?} ({e})"),
            )
        })
}

/// minijinja's error with its detail (e.g. which variable is undefined) on one line.
fn describe(error: Error) -> String {
    let mut text = error.to_string();
    if let Some(detail) = error.detail()
        && !text.contains(detail)
    {
        text.push_str(": ");
        text.push_str(detail);
    }
    text
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn renders_record_fields_and_time_filters() {
        let mut t = Templates::new();
        t.add("m", "Hi {{ firstname }}, since {{ at | unix_ms }}")
            .unwrap();
        let out = t
            .render(
                "m",
                &context(&json!({"firstname": "Ana", "at": "2024-01-01T00:00:01Z"})),
            )
            .unwrap();
        assert_eq!(out, "Hi Ana, since 1704067201000");
    }

    #[test]
    fn a_missing_or_null_field_is_an_error_unless_defaulted() {
        let mut t = Templates::new();
        t.add("strict", "Hi {{ firstname }}").unwrap();
        t.add("soft", "Hi {{ firstname | default('there') }}")
            .unwrap();
        let record = context(&json!({"firstname": null}));
        let error = t.render("strict", &record).unwrap_err();
        assert!(error.contains("undefined"), "{error}");
        assert_eq!(t.render("soft", &record).unwrap(), "Hi there");
    }

    #[test]
    fn expressions_are_tested_and_syntax_errors_found_when_added() {
        let mut t = Templates::new();
        t.add_expression("e", "stage == 'customer' and amount | int > 100")
            .unwrap();
        assert!(
            t.test(
                "e",
                &context(&json!({"stage": "customer", "amount": "150"}))
            )
            .unwrap()
        );
        assert!(
            !t.test("e", &context(&json!({"stage": "lead", "amount": "150"})))
                .unwrap()
        );
        // An absent field is false in a condition, not an error.
        assert!(!t.test("e", &context(&json!({"amount": "150"}))).unwrap());
        assert!(t.add_expression("bad", "stage ==").is_err());
        assert!(t.add("bad2", "{{ unclosed").is_err());
    }
}
