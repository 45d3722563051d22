//! A fake internal JSON API (`crm-sources.md` §2.7): the "minimal contract" (`updated_since` plus
//! an opaque `next_cursor`) and the other paging styles a configurable HTTP source must follow:
//! page numbers with a `Link: rel="next"` header over a bare array, offsets, and a next URL in the
//! body.
//!
//! Every list is filtered `updated_since <= updated_at < updated_before` and sorted ascending by
//! (`updated_at`, `id`). Empty query parameters count as absent; unknown or repeated ones are 400.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::Query;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::{
    Faults, Incoming, RateWindow, Rejection, Server, Vendor, base64_decode, base64_encode,
    encode_component,
};

const API_KEY_HEADER: &str = "x-api-key";
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 200;
const DEFAULT_PER_PAGE: usize = 30;
const MAX_PER_PAGE: usize = 100;

/// A running fake internal API; the server stops when this is dropped.
pub type GenericApi = Server<State>;

/// A record's id as the sort sees it: numeric ids first, in numeric order, then the others as
/// strings (a total order, which "numeric when both are numbers, else strings" alone is not).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum RecordId {
    Number(i128, String),
    Text(String),
}

impl RecordId {
    fn parse(text: &str) -> Self {
        match text.parse::<i128>() {
            Ok(n) => Self::Number(n, text.to_owned()),
            Err(_) => Self::Text(text.to_owned()),
        }
    }

    fn from_json(id: &Value) -> Self {
        match id {
            Value::String(s) => Self::parse(s),
            Value::Number(n) => Self::parse(&n.to_string()),
            other => panic!("a record id must be a string or a number, got {other}"),
        }
    }

    fn text(&self) -> &str {
        match self {
            Self::Number(_, text) | Self::Text(text) => text,
        }
    }
}

/// A record's position in every listing.
type Key = (DateTime<Utc>, RecordId);

struct Stored {
    key: Key,
    record: Value,
}

/// The API's records, rate window and scripted failures.
pub struct State {
    api_key: String,
    url: String,
    records: BTreeMap<String, Stored>,
    page_cap: Option<u32>,
    rate: RateWindow,
    rate_retry_after: Option<String>,
    faults: Faults,
}

#[allow(dead_code)] // The fake's whole test API; each test uses only part of it.
impl GenericApi {
    /// Starts a fake API that accepts `X-Api-Key: <api_key>`.
    pub async fn start(api_key: &str) -> GenericApi {
        Server::serve(|url| State {
            api_key: api_key.to_owned(),
            url: url.to_owned(),
            records: BTreeMap::new(),
            page_cap: None,
            rate: RateWindow::sliding(Duration::from_secs(1)),
            rate_retry_after: None,
            faults: Faults::default(),
        })
        .await
    }

    /// Inserts or replaces the record with `record["id"]`; its `updated_at` (RFC 3339, or
    /// `YYYY-MM-DD HH:MM:SS` as UTC) is returned exactly as given.
    pub fn put(&self, record: Value) {
        let id = RecordId::from_json(record.get("id").expect("a record needs an id"));
        let updated_at = record
            .get("updated_at")
            .and_then(Value::as_str)
            .expect("a record needs an updated_at string");
        let updated_at = parse_record_time(updated_at).unwrap_or_else(|| {
            panic!("updated_at {updated_at:?} is neither RFC 3339 nor YYYY-MM-DD HH:MM:SS")
        });
        let stored = Stored {
            key: (updated_at, id.clone()),
            record,
        };
        self.state().records.insert(id.text().to_owned(), stored);
    }

    /// Removes the record with this id (a string or a number), if present.
    pub fn remove(&self, id: impl Into<Value>) {
        let id = RecordId::from_json(&id.into());
        self.state().records.remove(id.text());
    }

    /// Refuses `/pages` requests for pages beyond `pages` (400 "page limit exceeded"); `None`
    /// lifts the cap.
    pub fn set_page_cap(&self, pages: Option<u32>) {
        self.state().page_cap = pages;
    }

    /// Allows `per_second` data requests in any one-second window, answering 429 beyond it
    /// (with `Retry-After` when given); `None` lifts the limit.
    pub fn set_rate_limit(&self, per_second: Option<u32>, retry_after: Option<&str>) {
        let mut state = self.state();
        state.rate.set_limit(per_second);
        state.rate_retry_after = retry_after.map(str::to_owned);
    }
}

/// Scripted failures (`fail_next`) hit authenticated requests to known endpoints.
impl Vendor for State {
    fn respond(&mut self, request: &Incoming<'_>) -> Response {
        self.reply(request.method, request.uri, request.headers, request.now)
            .unwrap_or_else(IntoResponse::into_response)
    }

    fn faults(&mut self) -> &mut Faults {
        &mut self.faults
    }
}

/// Parses RFC 3339 or `YYYY-MM-DD HH:MM:SS[.fraction]` (taken as UTC).
fn parse_record_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
                .ok()
                .map(|t| t.and_utc())
        })
}

fn error(status: StatusCode, message: &str) -> Rejection {
    Rejection::new(status, json!({ "error": message }))
}

fn bad_request(message: &str) -> Rejection {
    error(StatusCode::BAD_REQUEST, message)
}

#[derive(Clone, Copy)]
enum Route {
    Records,
    Pages,
    Offset,
    Feed,
}

impl Route {
    fn parse(path: &str) -> Option<Self> {
        match path {
            "/records" => Some(Self::Records),
            "/pages" => Some(Self::Pages),
            "/offset" => Some(Self::Offset),
            "/feed" => Some(Self::Feed),
            _ => None,
        }
    }

    fn parameters(self) -> &'static [&'static str] {
        match self {
            Self::Records => &["updated_since", "updated_before", "cursor", "limit"],
            Self::Pages => &["updated_since", "updated_before", "page", "per_page"],
            Self::Offset => &["updated_since", "updated_before", "offset", "limit"],
            Self::Feed => &["updated_since", "updated_before", "limit", "token"],
        }
    }
}

impl State {
    fn reply(
        &mut self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        now: DateTime<Utc>,
    ) -> Result<Response, Rejection> {
        let key = headers.get(API_KEY_HEADER).map(HeaderValue::as_bytes);
        if key != Some(self.api_key.as_bytes()) {
            return Err(error(StatusCode::UNAUTHORIZED, "unauthorized"));
        }
        let Some(route) = Route::parse(uri.path()) else {
            return Err(error(StatusCode::NOT_FOUND, "not found"));
        };
        if method != Method::GET {
            return Err(error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"));
        }
        if let Some((status, retry_after)) = self.faults.take() {
            let mut rejection = match status {
                StatusCode::UNAUTHORIZED => error(status, "unauthorized"),
                StatusCode::TOO_MANY_REQUESTS => error(status, "rate limited"),
                _ => error(
                    status,
                    &status.canonical_reason().unwrap_or("error").to_lowercase(),
                ),
            };
            rejection.retry_after = retry_after;
            return Err(rejection);
        }
        if self.rate.admit(now).is_err() {
            let mut rejection = error(StatusCode::TOO_MANY_REQUESTS, "rate limited");
            rejection.retry_after = self.rate_retry_after.clone();
            return Err(rejection);
        }
        let params = Params::parse(uri, route.parameters())?;
        match route {
            Route::Records => self.records(&params),
            Route::Pages => self.pages(&params),
            Route::Offset => self.offset(&params),
            Route::Feed => self.feed(&params),
        }
    }

    /// The records in `window`, in listing order.
    fn listing(&self, window: &Window) -> Vec<&Stored> {
        let mut listed: Vec<&Stored> = self
            .records
            .values()
            .filter(|s| window.since.is_none_or(|since| s.key.0 >= since))
            .filter(|s| window.before.is_none_or(|before| s.key.0 < before))
            .collect();
        listed.sort_by(|a, b| a.key.cmp(&b.key));
        listed
    }

    /// `GET /records`: the minimal contract, `{"data": [...], "next_cursor": token|null}`.
    fn records(&self, params: &Params) -> Result<Response, Rejection> {
        let window = Window::parse(params)?;
        let limit = params.integer("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)?;
        let after = match params.get("cursor") {
            Some(token) => {
                Some(decode_records_cursor(token).ok_or_else(|| bad_request("invalid cursor"))?)
            }
            None => None,
        };
        let listed = self.listing(&window);
        let (page, more) = keyset_page(&listed, after.as_ref(), limit);
        let next_cursor = match page.last() {
            Some(last) if more => json!(encode_records_cursor(&last.key)),
            _ => Value::Null,
        };
        let data: Vec<&Value> = page.iter().map(|s| &s.record).collect();
        Ok(axum::Json(json!({ "data": data, "next_cursor": next_cursor })).into_response())
    }

    /// `GET /pages`: a bare array, with `Link: <next>; rel="next"` while more pages exist.
    fn pages(&self, params: &Params) -> Result<Response, Rejection> {
        let window = Window::parse(params)?;
        let page = params.integer("page", 1, 1, usize::MAX)?;
        let per_page = params.integer("per_page", DEFAULT_PER_PAGE, 1, MAX_PER_PAGE)?;
        if self.page_cap.is_some_and(|cap| page > cap as usize) {
            return Err(bad_request("page limit exceeded"));
        }
        let listed = self.listing(&window);
        let start = (page - 1).saturating_mul(per_page).min(listed.len());
        let end = start.saturating_add(per_page).min(listed.len());
        let body: Vec<&Value> = listed[start..end].iter().map(|s| &s.record).collect();
        let mut response = axum::Json(body).into_response();
        if end < listed.len() {
            let mut next = format!("{}/pages?", self.url);
            for name in ["updated_since", "updated_before"] {
                if let Some(value) = params.get(name) {
                    next.push_str(&format!("{name}={}&", encode_component(value)));
                }
            }
            next.push_str(&format!("page={}&per_page={per_page}", page + 1));
            let link = HeaderValue::from_str(&format!("<{next}>; rel=\"next\""))
                .expect("a Link header made of URL characters");
            response.headers_mut().insert(header::LINK, link);
        }
        Ok(response)
    }

    /// `GET /offset`: `{"items": [...], "total": N, "has_more": bool}`.
    fn offset(&self, params: &Params) -> Result<Response, Rejection> {
        let window = Window::parse(params)?;
        let offset = params.integer("offset", 0, 0, usize::MAX)?;
        let limit = params.integer("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)?;
        let listed = self.listing(&window);
        let start = offset.min(listed.len());
        let end = start.saturating_add(limit).min(listed.len());
        let items: Vec<&Value> = listed[start..end].iter().map(|s| &s.record).collect();
        let body = json!({ "items": items, "total": listed.len(), "has_more": end < listed.len() });
        Ok(axum::Json(body).into_response())
    }

    /// `GET /feed`: `{"results": [...], "next": absolute URL|null}`; the next URL carries a
    /// token holding the whole query, and nothing else may be sent with it.
    fn feed(&self, params: &Params) -> Result<Response, Rejection> {
        let (query, after) = match params.get("token") {
            Some(token) => {
                if params.0.len() > 1 {
                    return Err(bad_request(
                        "token cannot be combined with other parameters",
                    ));
                }
                let (query, after) =
                    FeedQuery::decode(token).ok_or_else(|| bad_request("invalid cursor"))?;
                (query, Some(after))
            }
            None => {
                let window = Window::parse(params)?;
                let limit = params.integer("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)?;
                (FeedQuery { window, limit }, None)
            }
        };
        let listed = self.listing(&query.window);
        let (page, more) = keyset_page(&listed, after.as_ref(), query.limit);
        let next = match page.last() {
            Some(last) if more => json!(format!(
                "{}/feed?token={}",
                self.url,
                query.encode(&last.key)
            )),
            _ => Value::Null,
        };
        let results: Vec<&Value> = page.iter().map(|s| &s.record).collect();
        Ok(axum::Json(json!({ "results": results, "next": next })).into_response())
    }
}

/// Up to `limit` records after `after`, and whether more follow them.
fn keyset_page<'a>(
    listed: &[&'a Stored],
    after: Option<&Key>,
    limit: usize,
) -> (Vec<&'a Stored>, bool) {
    let start = match after {
        Some(after) => listed.partition_point(|s| &s.key <= after),
        None => 0,
    };
    let end = start.saturating_add(limit).min(listed.len());
    (listed[start..end].to_vec(), end < listed.len())
}

/// The query parameters of one request, empty values dropped.
struct Params(BTreeMap<String, String>);

impl Params {
    fn parse(uri: &Uri, allowed: &[&str]) -> Result<Self, Rejection> {
        let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(uri)
            .map_err(|_| bad_request("invalid query string"))?;
        let mut params = BTreeMap::new();
        let mut seen = Vec::new();
        for (name, value) in pairs {
            if !allowed.contains(&name.as_str()) {
                return Err(bad_request(&format!("unknown parameter: {name}")));
            }
            if seen.contains(&name) {
                return Err(bad_request(&format!("duplicate parameter: {name}")));
            }
            seen.push(name.clone());
            if !value.is_empty() {
                params.insert(name, value);
            }
        }
        Ok(Self(params))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// An integer parameter, `default` when absent, 400 below `min` or above `max`.
    fn integer(
        &self,
        name: &str,
        default: usize,
        min: usize,
        max: usize,
    ) -> Result<usize, Rejection> {
        let Some(text) = self.get(name) else {
            return Ok(default);
        };
        match text.parse::<usize>() {
            Ok(n) if n > max => Err(bad_request(&format!("{name} must be at most {max}"))),
            Ok(n) if n >= min => Ok(n),
            _ => Err(bad_request(&format!("invalid {name}"))),
        }
    }

    fn time(&self, name: &str) -> Result<Option<DateTime<Utc>>, Rejection> {
        self.get(name)
            .map(|text| {
                DateTime::parse_from_rfc3339(text)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|_| bad_request(&format!("invalid {name}")))
            })
            .transpose()
    }
}

/// The `updated_at` range of a listing.
#[derive(Clone, Copy, PartialEq, Debug)]
struct Window {
    since: Option<DateTime<Utc>>,
    before: Option<DateTime<Utc>>,
}

impl Window {
    fn parse(params: &Params) -> Result<Self, Rejection> {
        Ok(Self {
            since: params.time("updated_since")?,
            before: params.time("updated_before")?,
        })
    }
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn optional_time(at: Option<DateTime<Utc>>) -> String {
    at.map_or_else(|| "-".to_owned(), rfc3339)
}

fn parse_optional_time(text: &str) -> Option<Option<DateTime<Utc>>> {
    if text == "-" {
        return Some(None);
    }
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| Some(t.with_timezone(&Utc)))
}

/// `records|<updated_at>|<id>`, base64url: the last key of the page.
fn encode_records_cursor(key: &Key) -> String {
    base64_encode(format!("records|{}|{}", rfc3339(key.0), key.1.text()).as_bytes())
}

fn decode_records_cursor(token: &str) -> Option<Key> {
    let text = String::from_utf8(base64_decode(token)?).ok()?;
    let mut parts = text.splitn(3, '|');
    if parts.next()? != "records" {
        return None;
    }
    decode_key(parts.next()?, parts.next()?)
}

fn decode_key(updated_at: &str, id: &str) -> Option<Key> {
    let updated_at = DateTime::parse_from_rfc3339(updated_at)
        .ok()?
        .with_timezone(&Utc);
    Some((updated_at, RecordId::parse(id)))
}

/// What a `/feed` next-URL token carries: the first request's query and the last key served.
#[derive(Debug)]
struct FeedQuery {
    window: Window,
    limit: usize,
}

impl FeedQuery {
    /// `feed|<since>|<before>|<limit>|<updated_at>|<id>`, base64url.
    fn encode(&self, after: &Key) -> String {
        let text = format!(
            "feed|{}|{}|{}|{}|{}",
            optional_time(self.window.since),
            optional_time(self.window.before),
            self.limit,
            rfc3339(after.0),
            after.1.text()
        );
        base64_encode(text.as_bytes())
    }

    fn decode(token: &str) -> Option<(Self, Key)> {
        let text = String::from_utf8(base64_decode(token)?).ok()?;
        let parts: Vec<&str> = text.splitn(6, '|').collect();
        let ["feed", since, before, limit, updated_at, id] = parts.as_slice() else {
            return None;
        };
        let limit = limit
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=MAX_LIMIT).contains(l))?;
        let window = Window {
            since: parse_optional_time(since)?,
            before: parse_optional_time(before)?,
        };
        Some((Self { window, limit }, decode_key(updated_at, id)?))
    }
}
