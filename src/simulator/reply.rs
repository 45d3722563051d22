//! Answers: the success and error envelopes (§2.1), the branded HTML 404 page (§1, §8.1), and
//! the gateway pages of injected 5xx faults.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde_json::{Value, json};

/// `{"status":"ok","data":…}` with HTTP 200 (§2.1).
pub(crate) fn ok(data: Value) -> Response {
    Json(json!({ "status": "ok", "data": data })).into_response()
}

/// One entry of `errors[]`: `{"fields":["body","phone"],"msg":"…"}` (§2.1).
#[derive(Debug, Clone)]
pub(crate) struct FieldError {
    pub fields: Vec<String>,
    pub msg: String,
}

impl FieldError {
    /// An error about a request-body field.
    pub fn body(field: &str, msg: impl Into<String>) -> Self {
        Self::at("body", field, msg)
    }

    /// An error about a query parameter.
    pub fn query(field: &str, msg: impl Into<String>) -> Self {
        Self::at("query", field, msg)
    }

    /// An error about the request body as a whole.
    pub fn whole_body(msg: impl Into<String>) -> Self {
        Self {
            fields: vec!["body".to_owned()],
            msg: msg.into(),
        }
    }

    pub fn at(location: &str, field: &str, msg: impl Into<String>) -> Self {
        Self {
            fields: vec![location.to_owned(), field.to_owned()],
            msg: msg.into(),
        }
    }
}

/// An error answer in the §2.1 envelope.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub error_code: Option<&'static str>,
    pub errors: Vec<FieldError>,
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            error_code: Some(code),
            errors: Vec::new(),
            retry_after_secs: None,
        }
    }

    /// 400 `validation_error` (§8.1; the code is from a test fixture). The message repeats the
    /// first problem so a human reading a log sees it without `errors[]`.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let message = match errors.first() {
            Some(e) => format!("Validation failed: {}: {}", e.fields.join("."), e.msg),
            None => "Validation failed".to_owned(),
        };
        Self {
            errors,
            ..Self::new(StatusCode::BAD_REQUEST, "validation_error", message)
        }
    }

    pub fn invalid(field: FieldError) -> Self {
        Self::validation(vec![field])
    }

    /// 404 `not_found` for an unknown chat, message, file or webhook (§8.1).
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "status": "error", "message": self.message });
        if let Some(code) = self.error_code {
            body["error_code"] = json!(code);
        }
        if !self.errors.is_empty() {
            body["errors"] = self
                .errors
                .iter()
                .map(|e| json!({ "fields": e.fields, "msg": e.msg }))
                .collect();
        }
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// Handler result: the envelope on success, an [`ApiError`] otherwise.
pub(crate) type ApiResult = Result<Response, ApiError>;

/// The branded HTML page for unknown paths and trailing slashes (§1: `GET /chats/` answers
/// HTML, not JSON). Also the router's fallback outside the API.
pub(crate) async fn html_not_found() -> Response {
    (StatusCode::NOT_FOUND, Html(NOT_FOUND_PAGE)).into_response()
}

const NOT_FOUND_PAGE: &str = "<!DOCTYPE html>
<html lang=\"en\">
<head><meta charset=\"utf-8\"><title>Page not found | TimelinesAI</title>
<style>body{font-family:sans-serif;text-align:center;padding-top:10%;color:#1d2b36}
.brand{color:#25d366;font-weight:bold;font-size:28px}</style></head>
<body><div class=\"brand\">TimelinesAI</div>
<h1>404</h1><p>The page you were looking for doesn't exist.</p>
<p><a href=\"https://app.timelines.ai/\">Back to TimelinesAI</a></p></body>
</html>
";

/// A 5xx HTML page as a CDN or gateway in front of the API would send it (§8.1: 5xx bodies may
/// be non-JSON).
pub(crate) fn gateway_page(status: StatusCode) -> Response {
    let reason = status.canonical_reason().unwrap_or("Error");
    let code = status.as_u16();
    let page = format!(
        "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n\
         <center><h1>{code} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n\
         </body>\r\n</html>\r\n"
    );
    (status, Html(page)).into_response()
}
