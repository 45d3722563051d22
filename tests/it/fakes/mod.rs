//! Fake vendor APIs for the pollers' tests: real HTTP servers on 127.0.0.1 whose paging, cursors
//! and errors follow the vendors' documented behaviour (`crm-sources.md` §2, checklist in §5.3).
//!
//! Each fake keeps its data behind one `std::sync::Mutex` that a request holds from start to
//! finish, so requests are answered one at a time and every answer is deterministic. Nothing in
//! a fake sleeps: lag, rate limits and faults are decided from the request and the state alone.

pub mod freshdesk;
pub mod generic;
pub mod hubspot;
pub mod pipedrive;
pub mod salesforce;
pub mod zendesk;
pub mod zoho;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// One request a fake received, with the status it answered.
#[allow(dead_code)] // Tests read only the fields they assert on.
#[derive(Clone, Debug)]
pub struct Request {
    /// The HTTP method, e.g. `POST`.
    pub method: String,
    /// The path without the query, e.g. `/crm/v3/objects/contacts/search`.
    pub path: String,
    /// The raw query string without `?` (empty when there was none).
    pub query: String,
    /// Every header as sent, names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The body parsed as JSON; `Null` when empty or not JSON.
    pub body: Value,
    /// The status code the fake answered.
    pub status: u16,
}

impl Request {
    fn new(method: &Method, uri: &Uri, headers: &HeaderMap, body: &Bytes, status: u16) -> Self {
        Self {
            method: method.to_string(),
            path: uri.path().to_owned(),
            query: uri.query().unwrap_or_default().to_owned(),
            headers: headers
                .iter()
                .map(|(name, value)| {
                    let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                    (name.as_str().to_owned(), value)
                })
                .collect(),
            body: serde_json::from_slice(body).unwrap_or(Value::Null),
            status,
        }
    }
}

/// Binds a fresh port on 127.0.0.1 and returns the listener with its base URL (no trailing slash).
async fn bind() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding a port for a fake vendor");
    let addr = listener
        .local_addr()
        .expect("reading the fake vendor's address");
    (listener, format!("http://{addr}"))
}

/// Serves `router` on `listener` until the returned task is aborted.
fn spawn(listener: TcpListener, router: Router) -> JoinHandle<()> {
    tokio::spawn(async move {
        axum::serve(listener, router)
            .await
            .expect("serving a fake vendor");
    })
}

/// An answer that is not the endpoint's normal result: an error status with a vendor body.
struct Rejection {
    status: StatusCode,
    body: Value,
    retry_after: Option<String>,
}

impl Rejection {
    fn new(status: StatusCode, body: Value) -> Self {
        Self {
            status,
            body,
            retry_after: None,
        }
    }
}

/// A JSON response, with a `Retry-After` header when given.
fn json_response(status: StatusCode, body: &Value, retry_after: Option<&str>) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    if let Some(value) = retry_after {
        let value = HeaderValue::from_str(value).expect("Retry-After must be a valid header value");
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        json_response(self.status, &self.body, self.retry_after.as_deref())
    }
}

/// Scripted failures: the next `remaining` data requests answer `status`.
#[derive(Default)]
struct Faults {
    status: u16,
    retry_after: Option<String>,
    remaining: usize,
}

impl Faults {
    fn set(&mut self, status: u16, retry_after: Option<&str>, times: usize) {
        StatusCode::from_u16(status).expect("fail_next needs a valid HTTP status");
        *self = Self {
            status,
            retry_after: retry_after.map(str::to_owned),
            remaining: times,
        };
    }

    /// The scripted status and `Retry-After` for this request, if a fault is pending.
    fn take(&mut self) -> Option<(StatusCode, Option<String>)> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let status = StatusCode::from_u16(self.status).expect("checked by Faults::set");
        Some((status, self.retry_after.clone()))
    }
}

/// A sliding one-second window: at most `per_second` admitted requests in any second.
#[derive(Default)]
struct RateWindow {
    per_second: Option<u32>,
    admitted: VecDeque<Instant>,
}

impl RateWindow {
    fn set(&mut self, per_second: Option<u32>) {
        self.per_second = per_second;
        self.admitted.clear();
    }

    /// Whether a request arriving `now` is within the limit; an admitted request counts
    /// against the next second, a rejected one does not.
    fn admit(&mut self, now: Instant) -> bool {
        let Some(limit) = self.per_second else {
            return true;
        };
        while let Some(&first) = self.admitted.front() {
            if now.duration_since(first) < Duration::from_secs(1) {
                break;
            }
            self.admitted.pop_front();
        }
        if self.admitted.len() >= limit as usize {
            return false;
        }
        self.admitted.push_back(now);
        true
    }
}

/// Percent-encodes a query-string component (everything but RFC 3986 unreserved characters).
fn encode_component(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

const BASE64_URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Encodes `data` as unpadded URL-safe base64, the shape of most vendors' opaque tokens.
fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let bits = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            let index = (bits >> (18 - 6 * i)) & 0x3f;
            out.push(char::from(BASE64_URL[index as usize]));
        }
    }
    out
}

/// Decodes unpadded URL-safe base64; `None` for any character or length it cannot produce.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for chunk in text.as_bytes().chunks(4) {
        let mut bits = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            let value = BASE64_URL.iter().position(|&b| b == c)?;
            bits |= (value as u32) << (18 - 6 * i);
        }
        let bytes = bits.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    // Only the canonical encoding of `out` is accepted, so a token has exactly one spelling.
    (base64_encode(&out) == text).then_some(out)
}
