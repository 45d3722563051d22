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
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State as Shared;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, TimeDelta, Utc};
use futures_util::future::BoxFuture;
use serde_json::{Map, Value};
use timelines_sync::sources::fetch::Sleep;
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

/// A request as a fake sees it, with the fake's clock at its arrival.
pub struct Incoming<'a> {
    /// The HTTP method.
    pub method: &'a Method,
    /// The URI (path and query).
    pub uri: &'a Uri,
    /// The headers.
    pub headers: &'a HeaderMap,
    /// The raw body.
    pub body: &'a Bytes,
    /// The fake's clock when the request arrived.
    pub now: DateTime<Utc>,
}

/// What each fake vendor implements: its answer to one request, from its state.
pub trait Vendor: Send + 'static {
    /// The answer to `request`.
    fn respond(&mut self, request: &Incoming<'_>) -> Response;
    /// The scripted failures ([`Server::fail_next`]).
    fn faults(&mut self) -> &mut Faults;
}

/// A vendor's state and the requests it received, behind one lock.
struct Logged<V> {
    vendor: V,
    log: Vec<Request>,
}

struct Inner<V> {
    state: Mutex<Logged<V>>,
    clock: Clock,
}

/// A running fake vendor on 127.0.0.1; the server stops when this is dropped. A request holds
/// the vendor's lock from start to finish, so requests are answered one at a time.
pub struct Server<V> {
    /// Base URL, e.g. `http://127.0.0.1:41234` (no trailing slash).
    pub url: String,
    inner: Arc<Inner<V>>,
    task: JoinHandle<()>,
}

impl<V> Drop for Server<V> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The vendor's state, locked.
pub struct Guard<'a, V>(MutexGuard<'a, Logged<V>>);

impl<V> Deref for Guard<'_, V> {
    type Target = V;

    fn deref(&self) -> &V {
        &self.0.vendor
    }
}

impl<V> DerefMut for Guard<'_, V> {
    fn deref_mut(&mut self) -> &mut V {
        &mut self.0.vendor
    }
}

#[allow(dead_code)] // Each test uses only part of the fakes' API.
impl<V: Vendor> Server<V> {
    /// Binds a port and serves the vendor `make` builds from the base URL.
    async fn serve(make: impl FnOnce(&str) -> V) -> Self {
        let (listener, url) = bind().await;
        let inner = Arc::new(Inner {
            state: Mutex::new(Logged {
                vendor: make(&url),
                log: Vec::new(),
            }),
            clock: Clock::default(),
        });
        let router = Router::new()
            .fallback(handle::<V>)
            .with_state(Arc::clone(&inner));
        let task = spawn(listener, router);
        Self { url, inner, task }
    }

    /// The vendor's state, locked (the server waits meanwhile).
    fn state(&self) -> Guard<'_, V> {
        Guard(self.inner.state.lock().expect("fake vendor state lock"))
    }

    /// The clock the fake decides time-dependent answers by (rate windows, lag, exclusions).
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// Makes the next `times` requests the fake answers with data (each fake says which:
    /// authenticated requests to its data endpoints) answer `status` with the vendor's body for
    /// it, and `Retry-After` when given.
    pub fn fail_next(&self, status: u16, retry_after: Option<&str>, times: usize) {
        self.state().faults().set(status, retry_after, times);
    }

    /// Makes the first data answer that would hold record `id` answer `status` instead, once:
    /// the pages before it are served, that one fails (a failure in the middle of a run).
    pub fn fail_serving(&self, id: &str, status: u16) {
        self.state().faults().poison(id, status);
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<Request> {
        self.inner
            .state
            .lock()
            .expect("fake vendor state lock")
            .log
            .clone()
    }
}

async fn handle<V: Vendor>(
    Shared(inner): Shared<Arc<Inner<V>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut state = inner.state.lock().expect("fake vendor state lock");
    let request = Incoming {
        method: &method,
        uri: &uri,
        headers: &headers,
        body: &body,
        now: inner.clock.now(),
    };
    let mut response = state.vendor.respond(&request);
    // The vendor's clock is the fake's: a poller reads the server's time from `Date`.
    let date = httpdate::fmt_http_date(request.now.into());
    let date = HeaderValue::from_str(&date).expect("an HTTP date is a valid header value");
    response.headers_mut().insert(header::DATE, date);
    let logged = Request::new(&method, &uri, &headers, &body, response.status().as_u16());
    state.log.push(logged);
    response
}

/// The fakes' clock, sent as each answer's `Date`: real time, or frozen and moved only by
/// [`Clock::advance`]. A poller given this clock as its [`Sleep`] advances it instead of
/// waiting, so a vendor's minute-long `Retry-After` is honoured in no time and the fake sees the
/// minute pass.
#[derive(Clone, Debug, Default)]
pub struct Clock(Arc<Mutex<ClockState>>);

#[derive(Debug, Default)]
struct ClockState {
    frozen: Option<DateTime<Utc>>,
    offset: TimeDelta,
    waits: Vec<Duration>,
}

#[allow(dead_code)] // Each test uses only part of the fakes' API.
impl Clock {
    fn lock(&self) -> MutexGuard<'_, ClockState> {
        self.0.lock().expect("fake clock lock")
    }

    /// The time now.
    pub fn now(&self) -> DateTime<Utc> {
        let state = self.lock();
        state.frozen.unwrap_or_else(Utc::now) + state.offset
    }

    /// Stops the clock where it is: from now on only [`Clock::advance`] moves it.
    pub fn freeze(&self) {
        let now = self.now();
        self.set(now);
    }

    /// Stops the clock at `at`.
    pub fn set(&self, at: DateTime<Utc>) {
        let mut state = self.lock();
        state.frozen = Some(at);
        state.offset = TimeDelta::zero();
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let by = TimeDelta::from_std(by).expect("a sane duration");
        self.lock().offset += by;
    }

    /// The waits a poller made on this clock, in order.
    pub fn waits(&self) -> Vec<Duration> {
        self.lock().waits.clone()
    }
}

impl Sleep for Clock {
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        self.lock().waits.push(duration);
        self.advance(duration);
        Box::pin(tokio::task::yield_now())
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

/// Scripted failures: the next `remaining` data requests answer `status`; and, once, the first
/// data answer that would hold the `poisoned` record.
#[derive(Default)]
pub struct Faults {
    status: u16,
    retry_after: Option<String>,
    remaining: usize,
    poisoned: Option<(String, u16)>,
}

impl Faults {
    fn set(&mut self, status: u16, retry_after: Option<&str>, times: usize) {
        StatusCode::from_u16(status).expect("fail_next needs a valid HTTP status");
        self.status = status;
        self.retry_after = retry_after.map(str::to_owned);
        self.remaining = times;
    }

    fn poison(&mut self, id: &str, status: u16) {
        StatusCode::from_u16(status).expect("fail_serving needs a valid HTTP status");
        self.poisoned = Some((id.to_owned(), status));
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

    /// The poisoned status when `page` (records with their id at `id_field`) holds the
    /// poisoned record; the poison is used up.
    fn take_poisoned(&mut self, page: &[Value], id_field: &str) -> Option<StatusCode> {
        let (id, status) = self.poisoned.as_ref()?;
        let holds = page.iter().any(|record| {
            let text = record.get(id_field).map(|value| match value {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            });
            text.as_ref() == Some(id)
        });
        if !holds {
            return None;
        }
        let status = StatusCode::from_u16(*status).expect("checked by Faults::poison");
        self.poisoned = None;
        Some(status)
    }
}

/// A request budget on the fake's clock: at most `limit` credits per `period`, in a sliding
/// window (any `period` long span) or a fixed one (opened by its first charge, closed `period`
/// later). Only charged requests count.
pub struct RateWindow {
    limit: Option<u32>,
    period: TimeDelta,
    fixed: bool,
    charges: VecDeque<(DateTime<Utc>, u32)>,
}

impl RateWindow {
    /// A sliding window of `period`, without a limit until one is set.
    pub fn sliding(period: Duration) -> Self {
        Self::new(period, false)
    }

    /// A fixed window of `period`, without a limit until one is set.
    pub fn fixed(period: Duration) -> Self {
        Self::new(period, true)
    }

    fn new(period: Duration, fixed: bool) -> Self {
        Self {
            limit: None,
            period: TimeDelta::from_std(period).expect("a window of a sane length"),
            fixed,
            charges: VecDeque::new(),
        }
    }

    /// Sets the limit (`None` lifts it) and forgets what was charged.
    pub fn set_limit(&mut self, limit: Option<u32>) {
        self.limit = limit;
        self.charges.clear();
    }

    /// The limit, when one is set.
    pub fn limit(&self) -> Option<u32> {
        self.limit
    }

    fn expire(&mut self, now: DateTime<Utc>) {
        if self.fixed {
            if self
                .charges
                .front()
                .is_some_and(|(opened, _)| now - *opened >= self.period)
            {
                self.charges.clear();
            }
        } else {
            while self
                .charges
                .front()
                .is_some_and(|(at, _)| now - *at >= self.period)
            {
                self.charges.pop_front();
            }
        }
    }

    /// Credits charged in the window that holds `now`.
    pub fn used(&mut self, now: DateTime<Utc>) -> u32 {
        self.expire(now);
        self.charges.iter().map(|(_, credits)| credits).sum()
    }

    /// Whether a request arriving `now` may run (only credits already charged count), or how
    /// long until one may.
    pub fn check(&mut self, now: DateTime<Utc>) -> Result<(), Duration> {
        let used = self.used(now);
        match self.limit {
            Some(limit) if used >= limit => Err(self.wait(now)),
            _ => Ok(()),
        }
    }

    /// Charges `credits` for a request that ran at `now`.
    pub fn charge(&mut self, now: DateTime<Utc>, credits: u32) {
        self.expire(now);
        self.charges.push_back((now, credits));
    }

    /// [`RateWindow::check`], then one credit charged when it passes.
    pub fn admit(&mut self, now: DateTime<Utc>) -> Result<(), Duration> {
        self.check(now)?;
        self.charge(now, 1);
        Ok(())
    }

    /// How long until the oldest charge leaves the window (the whole period when none is in
    /// it): a fixed window's reset, a sliding one's next free credit.
    pub fn wait(&self, now: DateTime<Utc>) -> Duration {
        let left = self
            .charges
            .front()
            .map_or(self.period, |(at, _)| *at + self.period - now);
        left.to_std().unwrap_or_default()
    }

    /// Credits left in the window; `unset` is the limit reported while none is set.
    pub fn remaining(&mut self, now: DateTime<Utc>, unset: u32) -> u32 {
        let limit = self.limit.unwrap_or(unset);
        limit.saturating_sub(self.used(now))
    }
}

/// `duration` in whole seconds, rounded up and at least 1: how vendors write `Retry-After` and
/// window resets.
pub fn seconds_up(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis().div_ceil(1000))
        .unwrap_or(u64::MAX)
        .max(1)
}

/// `at` without its fraction of a second: most vendors keep whole seconds.
pub fn whole_seconds(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(at.timestamp(), 0).expect("a whole second of a valid time")
}

/// A fixture's fields as a JSON object; anything else is a mistake in the test.
pub fn fields_object(vendor: &str, fields: Value) -> Map<String, Value> {
    match fields {
        Value::Object(fields) => fields,
        other => panic!("{vendor} fields must be a JSON object, got {other}"),
    }
}

/// The pairs of an `application/x-www-form-urlencoded` body; `None` when it is not one.
fn form_pairs(body: &[u8]) -> Option<Vec<(String, String)>> {
    let text = std::str::from_utf8(body).ok()?;
    let uri = Uri::try_from(format!("/?{text}")).ok()?;
    let axum::extract::Query(pairs) =
        axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&uri).ok()?;
    Some(pairs)
}

/// The OAuth client a refresh-token request must name (Salesforce and Zoho).
struct OAuthClient {
    client_id: String,
    client_secret: String,
    refresh_token: String,
}

impl OAuthClient {
    fn new(client_id: &str, client_secret: &str, refresh_token: &str) -> Self {
        Self {
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            refresh_token: refresh_token.to_owned(),
        }
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

/// Standard padded base64, as HTTP Basic credentials use.
fn base64_standard_encode(data: &[u8]) -> String {
    let mut text = base64_encode(data).replace('-', "+").replace('_', "/");
    while !text.len().is_multiple_of(4) {
        text.push('=');
    }
    text
}

const BASE64_STANDARD: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Decodes standard base64 (`+/`, padding optional), the encoding of HTTP Basic credentials.
fn base64_standard_decode(text: &str) -> Option<Vec<u8>> {
    let text = text
        .strip_suffix("==")
        .or_else(|| text.strip_suffix('='))
        .unwrap_or(text);
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut bits, mut count) = (0u32, 0u32);
    for c in text.bytes() {
        let value = BASE64_STANDARD.iter().position(|&b| b == c)?;
        bits = (bits << 6) | u32::try_from(value).ok()?;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push(u8::try_from(bits >> count).ok()?);
            bits &= (1 << count) - 1;
        }
    }
    Some(out)
}
