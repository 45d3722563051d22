//! What can go wrong with a call, sorted into the classes the dispatcher branches on.
//!
//! Which class a response gets is decided in `classify` (a pure function, tested on its own);
//! `envelope` parses bodies and [`super::client`] maps transport failures.

use std::fmt;
use std::time::Duration;

/// The HTTP methods the API uses. A one-byte enum rather than a string keeps [`ApiError`] small
/// (see `api_error_stays_small`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HttpMethod {
    /// `GET`: reads only, so a failed GET is never [`ErrorClass::Ambiguous`].
    Get,
    /// `POST`.
    Post,
    /// `PUT`.
    Put,
    /// `PATCH`.
    Patch,
    /// `DELETE`.
    Delete,
}

impl HttpMethod {
    /// The method's name, e.g. `"POST"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
            Self::Delete => "DELETE",
        }
    }

    pub(crate) fn to_reqwest(self) -> reqwest::Method {
        match self {
            Self::Get => reqwest::Method::GET,
            Self::Post => reqwest::Method::POST,
            Self::Put => reqwest::Method::PUT,
            Self::Patch => reqwest::Method::PATCH,
            Self::Delete => reqwest::Method::DELETE,
        }
    }
}

impl fmt::Display for HttpMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of failure happened, which decides what the caller should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Too many requests (429, or a 403 that says so): wait (`retry_after` if given) and retry.
    RateLimited,
    /// The monthly messaging or API-call quota is used up: retrying before the period ends only
    /// burns attempts.
    QuotaExhausted,
    /// The token is missing, invalid or revoked (401): every request of the workspace will fail
    /// the same way until the token is fixed.
    Auth,
    /// The chat, message, file or webhook does not exist, or (an HTML 404) the path is wrong.
    NotFound,
    /// The API refused this request as such (400, 422, a plain 403, a response the client cannot
    /// read): retrying it unchanged gives the same answer.
    InvalidRequest,
    /// Nothing happened on the server (connect failure, 5xx, a proxy's error page, a timeout on
    /// a read): safe to retry.
    Transient,
    /// The request may or may not have taken effect (a timeout or dropped connection after a
    /// send-like request was sent): retrying risks a duplicate.
    Ambiguous,
}

impl ErrorClass {
    /// The snake-case name used in logs and in `timelines.api_requests.error_class`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RateLimited => "rate_limited",
            Self::QuotaExhausted => "quota_exhausted",
            Self::Auth => "auth",
            Self::NotFound => "not_found",
            Self::InvalidRequest => "invalid_request",
            Self::Transient => "transient",
            Self::Ambiguous => "ambiguous",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of an error body's `errors` list: which request fields were wrong and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field path, e.g. `["body", "phone"]`.
    pub fields: Vec<String>,
    /// The API's explanation.
    pub msg: String,
}

/// A failed API call. Carries no token and no request body; `path` has no query string (which
/// may hold phone numbers). Kept under 128 bytes so `Result<T, ApiError>` stays cheap to return
/// (and clippy's `result_large_err` quiet in callers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// What the caller should do about it.
    pub class: ErrorClass,
    /// The HTTP status, when a response arrived.
    pub status: Option<u16>,
    /// The API's `message`, or a description of what went wrong locally.
    pub message: String,
    /// The API's stable `error_code`, when it sent one (e.g. `invalid_token`).
    pub error_code: Option<String>,
    /// The `Retry-After` delay, when the response carried one.
    pub retry_after: Option<Duration>,
    /// The API's per-field validation errors (`errors: [{fields, msg}]`).
    pub field_errors: Box<[FieldError]>,
    /// The HTTP method.
    pub method: HttpMethod,
    /// The endpoint path below the base URL, without the query string, e.g. `/chats/42`.
    pub path: String,
}

impl ApiError {
    /// An error with only class, method, path and message set.
    pub(crate) fn new(
        class: ErrorClass,
        method: HttpMethod,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            class,
            status: None,
            message: message.into(),
            error_code: None,
            retry_after: None,
            field_errors: Box::default(),
            method,
            path: path.into(),
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TimelinesAI {} {}: ", self.method, self.path)?;
        if let Some(status) = self.status {
            write!(f, "HTTP {status}: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(code) = &self.error_code {
            write!(f, " [{code}]")?;
        }
        for e in self.field_errors.iter() {
            write!(f, "; {}: {}", e.fields.join("."), e.msg)?;
        }
        write!(f, " ({})", self.class)
    }
}

impl std::error::Error for ApiError {}

/// Why a [`super::Client`] could not be built. Never contains the token.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The base URL is not an absolute http(s) URL, or ends with `/` (the API answers an HTML 404
    /// to paths with a trailing slash).
    #[error("invalid TimelinesAI base URL {url:?}: {reason}")]
    BaseUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The token is empty or has characters an HTTP header cannot carry.
    #[error("the TimelinesAI token {0}")]
    Token(&'static str),
    /// The HTTP stack could not start (TLS set-up).
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_error_stays_small() {
        // Under clippy's 128-byte `result_large_err` threshold with room for a caller's enum.
        assert!(std::mem::size_of::<ApiError>() <= 112);
    }

    #[test]
    fn display_names_method_path_status_message_code_fields_and_class() {
        let mut e = ApiError::new(
            ErrorClass::InvalidRequest,
            HttpMethod::Post,
            "/messages",
            "Validation failed",
        );
        e.status = Some(400);
        e.error_code = Some("validation_error".into());
        e.field_errors = vec![FieldError {
            fields: vec!["body".into(), "phone".into()],
            msg: "required".into(),
        }]
        .into();
        assert_eq!(
            e.to_string(),
            "TimelinesAI POST /messages: HTTP 400: Validation failed [validation_error]; \
             body.phone: required (invalid_request)"
        );
    }
}
