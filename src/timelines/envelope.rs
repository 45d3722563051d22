//! The response envelope (reference §2.1): `{"status":"ok","data":…}` or
//! `{"status":"error","message":…,"error_code":…,"errors":[…]}`, read together with the HTTP
//! status because the API sometimes answers HTTP 200 with `status:"error"`.
//!
//! Tolerance: an empty 2xx body is success with `data: null` (DELETE); JSON without a `status`
//! field is success with its `data` if it has one, else the whole document; bodies that are not
//! JSON (HTML 404 pages, proxies' 5xx pages, plain-text 401s) become an error whose message is a
//! short, single-line excerpt.

use std::time::SystemTime;

use reqwest::header::HeaderMap;
use serde_json::Value;

use super::classify;
use super::error::{ApiError, ErrorClass, FieldError, HttpMethod};

/// How much of a non-JSON body an error message quotes.
const SNIPPET_CHARS: usize = 160;

/// The fields of an error envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ErrorBody {
    pub(crate) message: Option<String>,
    pub(crate) error_code: Option<String>,
    pub(crate) field_errors: Vec<FieldError>,
}

/// A response body, parsed just enough to classify it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ParsedBody {
    /// No bytes, or only whitespace.
    Empty,
    /// `status:"ok"` (or no `status`): the data.
    Ok(Value),
    /// `status:"error"`.
    Error(ErrorBody),
    /// Not JSON: an HTML page or plain text.
    NotJson { html: bool, snippet: String },
}

/// Parses a body without looking at the HTTP status.
pub(crate) fn parse_body(bytes: &[u8]) -> ParsedBody {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return ParsedBody::Empty;
    }
    let Ok(value) = serde_json::from_slice::<Value>(bytes) else {
        let text = String::from_utf8_lossy(bytes);
        let html = text.trim_start().starts_with('<');
        return ParsedBody::NotJson {
            html,
            snippet: snippet(&text, html),
        };
    };
    match value.get("status").and_then(Value::as_str) {
        Some(s) if s.eq_ignore_ascii_case("error") => ParsedBody::Error(error_body(&value)),
        _ => match value {
            Value::Object(mut map) if map.contains_key("data") => {
                ParsedBody::Ok(map.remove("data").unwrap_or(Value::Null))
            }
            other => ParsedBody::Ok(other),
        },
    }
}

fn error_body(value: &Value) -> ErrorBody {
    let text = |key: &str| match value.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let field_errors = value
        .get("errors")
        .and_then(Value::as_array)
        .map(|items| items.iter().filter_map(field_error).collect())
        .unwrap_or_default();
    ErrorBody {
        message: text("message").or_else(|| text("error")),
        error_code: text("error_code"),
        field_errors,
    }
}

fn field_error(item: &Value) -> Option<FieldError> {
    let fields = match item.get("fields") {
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|p| p.as_str().map_or_else(|| p.to_string(), str::to_owned))
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    };
    let msg = item.get("msg").or_else(|| item.get("message"))?;
    Some(FieldError {
        fields,
        msg: msg.as_str().map_or_else(|| msg.to_string(), str::to_owned),
    })
}

/// A single-line excerpt; for HTML, the `<title>` when there is one, since the rest is markup.
fn snippet(text: &str, html: bool) -> String {
    let lower = text.to_ascii_lowercase();
    let source = if html
        && let Some(start) = lower.find("<title>")
        && let Some(len) = lower[start + 7..].find("</title>")
    {
        &text[start + 7..start + 7 + len]
    } else {
        text
    };
    let line: String = source.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() > SNIPPET_CHARS {
        let cut: String = line.chars().take(SNIPPET_CHARS).collect();
        format!("{cut}…")
    } else {
        line
    }
}

/// The outcome of a response: its `data` on success, else a classified [`ApiError`].
pub(crate) fn interpret(
    method: HttpMethod,
    path: &str,
    status: u16,
    headers: &HeaderMap,
    bytes: &[u8],
) -> Result<Value, ApiError> {
    let body = parse_body(bytes);
    let read_only = method == HttpMethod::Get;
    let Some(class) = classify::classify(read_only, status, headers, &body) else {
        return Ok(match body {
            ParsedBody::Ok(data) => data,
            _ => Value::Null,
        });
    };
    let mut err = ApiError::new(class, method, path, describe(status, &body));
    err.status = Some(status);
    err.retry_after = classify::retry_after(headers, SystemTime::now());
    if let ParsedBody::Error(e) = body {
        err.error_code = e.error_code;
        err.field_errors = e.field_errors.into();
    }
    Err(err)
}

/// The message of an error response.
fn describe(status: u16, body: &ParsedBody) -> String {
    match body {
        ParsedBody::Error(e) => e
            .message
            .clone()
            .unwrap_or_else(|| "error without a message".to_owned()),
        ParsedBody::Empty => "empty response body".to_owned(),
        ParsedBody::NotJson {
            html: true,
            snippet,
        } if status == 404 => format!(
            "HTML 404 page ({snippet}): the path is wrong (trailing slash or unknown endpoint)"
        ),
        ParsedBody::NotJson {
            html: true,
            snippet,
        } if (200..300).contains(&status) => {
            format!("HTML page instead of JSON: is the base URL right? ({snippet})")
        }
        ParsedBody::NotJson {
            html: true,
            snippet,
        } => {
            format!("HTML page instead of JSON, likely from a proxy ({snippet})")
        }
        ParsedBody::NotJson {
            html: false,
            snippet,
        } => snippet.clone(),
        ParsedBody::Ok(value) => {
            // JSON without an error envelope: quote the usual message keys, else the document.
            let text = ["message", "error", "detail"]
                .iter()
                .find_map(|k| value.get(k).and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_else(|| value.to_string());
            snippet(&text, false)
        }
    }
}

impl ApiError {
    /// The class for a response whose envelope was fine but whose `data` the client could not
    /// read. On a GET that is permanent until the client is fixed (InvalidRequest); on any
    /// other method the server accepted the request, so whether it took effect is unknown to the
    /// caller (Ambiguous): a send must not be repeated blindly.
    pub(crate) fn undecodable(
        method: HttpMethod,
        path: &str,
        status: u16,
        reason: impl std::fmt::Display,
    ) -> Self {
        let class = if method == HttpMethod::Get {
            ErrorClass::InvalidRequest
        } else {
            ErrorClass::Ambiguous
        };
        let mut err = ApiError::new(
            class,
            method,
            path,
            format!("unreadable response data: {reason}"),
        );
        err.status = Some(status);
        err
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(method: HttpMethod, status: u16, body: &str) -> Result<Value, ApiError> {
        interpret(
            method,
            "/chats/1",
            status,
            &HeaderMap::new(),
            body.as_bytes(),
        )
    }

    #[test]
    fn an_ok_envelope_yields_its_data() {
        let data = run(HttpMethod::Get, 200, r#"{"status":"ok","data":{"id":1}}"#).unwrap();
        assert_eq!(data, serde_json::json!({"id": 1}));
    }

    #[test]
    fn an_error_envelope_yields_message_code_and_field_errors() {
        let err = run(
            HttpMethod::Post,
            400,
            r#"{"status":"error","message":"Validation failed","error_code":"validation_error",
                "errors":[{"fields":["body","phone"],"msg":"field required"}]}"#,
        )
        .unwrap_err();
        assert_eq!(err.class, ErrorClass::InvalidRequest);
        assert_eq!(err.status, Some(400));
        assert_eq!(err.message, "Validation failed");
        assert_eq!(err.error_code.as_deref(), Some("validation_error"));
        assert_eq!(
            err.field_errors.to_vec(),
            vec![FieldError {
                fields: vec!["body".into(), "phone".into()],
                msg: "field required".into()
            }]
        );
    }

    #[test]
    fn http_200_with_status_error_is_an_error() {
        let err = run(
            HttpMethod::Post,
            200,
            r#"{"status":"error","message":"Chat is archived"}"#,
        )
        .unwrap_err();
        assert_eq!(err.class, ErrorClass::InvalidRequest);
        assert_eq!(err.status, Some(200));
        assert_eq!(err.message, "Chat is archived");
    }

    #[test]
    fn an_empty_2xx_body_is_ok_with_null_data() {
        assert_eq!(run(HttpMethod::Delete, 200, "").unwrap(), Value::Null);
        assert_eq!(run(HttpMethod::Delete, 204, " \n").unwrap(), Value::Null);
        assert_eq!(
            run(HttpMethod::Delete, 200, r#"{"status":"ok"}"#).unwrap(),
            serde_json::json!({"status": "ok"})
        );
    }

    #[test]
    fn json_without_an_envelope_is_tolerated() {
        assert_eq!(
            run(HttpMethod::Get, 200, "[1,2]").unwrap(),
            serde_json::json!([1, 2])
        );
        let err = run(HttpMethod::Get, 500, r#"{"detail":"upstream exploded"}"#).unwrap_err();
        assert_eq!(err.class, ErrorClass::Transient);
        assert_eq!(err.message, "upstream exploded");
    }

    #[test]
    fn an_html_404_is_not_found_and_says_the_path_is_wrong() {
        let err = run(
            HttpMethod::Get,
            404,
            "<!DOCTYPE html>\n<html><head><title>Page not found | TimelinesAI</title></head>\
             <body>lots of markup</body></html>",
        )
        .unwrap_err();
        assert_eq!(err.class, ErrorClass::NotFound);
        assert!(
            err.message.contains("Page not found | TimelinesAI"),
            "{err}"
        );
        assert!(err.message.contains("path is wrong"), "{err}");
    }

    #[test]
    fn a_proxy_html_5xx_is_transient_with_a_short_message() {
        let page = format!(
            "<html><body><h1>502 Bad Gateway</h1>{}</body></html>",
            "x".repeat(5000)
        );
        let err = run(HttpMethod::Get, 502, &page).unwrap_err();
        assert_eq!(err.class, ErrorClass::Transient);
        assert!(err.message.chars().count() < 250, "{}", err.message);
    }

    #[test]
    fn a_plain_text_401_is_auth() {
        let err = run(HttpMethod::Get, 401, "Unauthorized").unwrap_err();
        assert_eq!(err.class, ErrorClass::Auth);
        assert_eq!(err.message, "Unauthorized");
    }

    #[test]
    fn an_html_200_is_an_error_not_empty_data() {
        // The web app's HTML at a wrong base URL: a configuration bug on a read, and on a write
        // nobody knows what the page did with the request.
        let err = run(
            HttpMethod::Get,
            200,
            "<html><title>TimelinesAI</title></html>",
        )
        .unwrap_err();
        assert_eq!(err.class, ErrorClass::InvalidRequest);
        assert!(err.message.contains("HTML page"), "{err}");
        let err = run(HttpMethod::Post, 200, "<html></html>").unwrap_err();
        assert_eq!(err.class, ErrorClass::Ambiguous);
    }

    #[test]
    fn undecodable_data_is_ambiguous_except_on_get() {
        let get = ApiError::undecodable(HttpMethod::Get, "/chats/1", 200, "missing field `id`");
        assert_eq!(get.class, ErrorClass::InvalidRequest);
        let post = ApiError::undecodable(
            HttpMethod::Post,
            "/messages",
            200,
            "missing field `message_uid`",
        );
        assert_eq!(post.class, ErrorClass::Ambiguous);
    }
}
