//! A fake Pipedrive company: the v2 lists `GET /api/v2/persons` and `GET /api/v2/deals` with
//! Pipedrive's change filter, sorting, opaque `next_cursor` paging, per-token burst limit and
//! `{"success": false, ...}` error bodies (`crm-sources.md` §2.2).
//!
//! Where the documentation leaves room, the fake takes the strict or documented reading:
//! - `updated_since` is `update_time >=`, `updated_until` is `update_time <`; times have whole
//!   seconds, as Pipedrive stores them, so `put_*` drops sub-seconds.
//! - Sort ties are broken by id in the sort direction. A cursor is the last (sort value, id)
//!   served, valid only with the endpoint, `sort_by` and `sort_direction` that produced it, so a
//!   record updated while a poller pages by `update_time` moves past the cursor and is served
//!   again.
//! - Deleted persons stay in `/persons` with `is_deleted: true`. `/deals` follows its own docs:
//!   without `status` it lists deals that are not deleted, and `status=deleted` (alone or in the
//!   comma list) adds the deleted ones. Archived deals never appear (they have `/deals/archived`).
//! - The burst limit is a fixed 2-second window on the fake's clock that opens at its first
//!   admitted request.
//! - Unknown or repeated parameters are 400, as are `filter_id` and `include_fields`, which the
//!   fake does not implement; empty parameters count as absent.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::Query;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

use super::{
    Faults, Incoming, RateWindow, Rejection, Server, Vendor, base64_decode, base64_encode,
    fields_object, seconds_up, whole_seconds,
};

const TOKEN_HEADER: &str = "x-api-token";
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 500;
/// Most ids one `ids` filter may name.
const MAX_IDS: usize = 100;
/// Most keys one `custom_fields` selection may name.
const MAX_CUSTOM_FIELDS: usize = 15;
/// Pipedrive counts its burst limit per token over 2-second windows.
const BURST_WINDOW: Duration = Duration::from_secs(2);
/// The limit the headers report while none is set: a Professional plan's api_token allowance.
const UNSET_BURST_LIMIT: u32 = 80;
const DEAL_STATUSES: [&str; 4] = ["open", "won", "lost", "deleted"];
const ERROR_INFO: &str =
    "Please check developers.pipedrive.com for more information about Pipedrive API.";

/// A running fake Pipedrive company (the API is under `/api/v2/`); the server stops when this is
/// dropped.
pub type Pipedrive = Server<State>;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Persons,
    Deals,
}

impl Kind {
    fn parse(path: &str) -> Option<Self> {
        match path {
            "/api/v2/persons" => Some(Self::Persons),
            "/api/v2/deals" => Some(Self::Deals),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Persons => "persons",
            Self::Deals => "deals",
        }
    }

    /// Every query parameter the endpoint documents.
    fn parameters(self) -> &'static [&'static str] {
        match self {
            Self::Persons => &[
                "filter_id",
                "ids",
                "owner_id",
                "org_id",
                "updated_since",
                "updated_until",
                "sort_by",
                "sort_direction",
                "include_fields",
                "custom_fields",
                "limit",
                "cursor",
            ],
            Self::Deals => &[
                "filter_id",
                "ids",
                "owner_id",
                "person_id",
                "org_id",
                "pipeline_id",
                "stage_id",
                "status",
                "updated_since",
                "updated_until",
                "sort_by",
                "sort_direction",
                "include_fields",
                "custom_fields",
                "limit",
                "cursor",
            ],
        }
    }

    /// Integer parameters that keep the records whose field of the same name equals them.
    fn equality_filters(self) -> &'static [&'static str] {
        match self {
            Self::Persons => &["owner_id", "org_id"],
            Self::Deals => &["owner_id", "person_id", "org_id", "pipeline_id", "stage_id"],
        }
    }

    /// The fields a record has when `put_*` does not set them.
    fn defaults(self) -> Map<String, Value> {
        let defaults = match self {
            Self::Persons => json!({
                "name": null, "first_name": null, "last_name": null,
                "owner_id": null, "org_id": null, "phones": [], "emails": [],
                "is_deleted": false, "visible_to": 3, "label_ids": [], "custom_fields": {},
            }),
            Self::Deals => json!({
                "title": null, "person_id": null, "org_id": null, "owner_id": null,
                "pipeline_id": 1, "stage_id": 1, "status": "open", "value": 0, "currency": "USD",
                "stage_change_time": null, "won_time": null, "lost_time": null,
                "is_deleted": false, "is_archived": false, "custom_fields": {},
            }),
        };
        let Value::Object(defaults) = defaults else {
            unreachable!("defaults are JSON objects")
        };
        defaults
    }
}

/// A stored person or deal: its API representation and the times the listing sorts on.
struct Record {
    id: u64,
    json: Map<String, Value>,
    add_time: DateTime<Utc>,
    update_time: DateTime<Utc>,
}

impl Record {
    fn new(
        kind: Kind,
        id: u64,
        fields: Value,
        add_time: DateTime<Utc>,
        update_time: DateTime<Utc>,
    ) -> Self {
        let fields = fields_object(&format!("Pipedrive {}", kind.name()), fields);
        let mut json = kind.defaults();
        json.extend(fields);
        json.insert("id".into(), json!(id));
        let mut record = Self {
            id,
            json,
            add_time: whole_seconds(add_time),
            update_time: whole_seconds(update_time),
        };
        record
            .json
            .insert("add_time".into(), json!(rfc3339(record.add_time)));
        record.touch(update_time);
        record
    }

    fn touch(&mut self, at: DateTime<Utc>) {
        self.update_time = whole_seconds(at);
        let text = rfc3339(self.update_time);
        self.json.insert("update_time".into(), json!(text));
    }

    fn flag(&self, name: &str) -> bool {
        self.json.get(name).and_then(Value::as_bool) == Some(true)
    }

    /// The API representation, `custom_fields` cut down to `selected` when given.
    fn to_json(&self, selected: Option<&[String]>) -> Value {
        let mut json = self.json.clone();
        if let Some(keys) = selected
            && let Some(Value::Object(fields)) = json.get_mut("custom_fields")
        {
            fields.retain(|key, _| keys.contains(key));
        }
        Value::Object(json)
    }
}

/// Pipedrive's v2 timestamp format: RFC 3339 UTC in whole seconds with `Z`.
fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The company's data, burst window and scripted failures.
pub struct State {
    token: String,
    persons: BTreeMap<u64, Record>,
    deals: BTreeMap<u64, Record>,
    burst: RateWindow,
    faults: Faults,
}

#[allow(dead_code)] // The fake's whole test API; each test uses only part of it.
impl Pipedrive {
    /// Starts a fake company that accepts `x-api-token: <api_token>` or, as an OAuth app would
    /// send it, `Authorization: Bearer <api_token>`.
    pub async fn start(api_token: &str) -> Pipedrive {
        Server::serve(|_| State {
            token: api_token.to_owned(),
            persons: BTreeMap::new(),
            deals: BTreeMap::new(),
            burst: RateWindow::fixed(BURST_WINDOW),
            faults: Faults::default(),
        })
        .await
    }

    /// Inserts or replaces person `id`: `fields` (a JSON object such as `{"name": ..,
    /// "phones": [{"value": .., "primary": true, "label": "work"}]}`) over the v2 defaults, with
    /// `id`, `add_time` and `update_time` from the arguments.
    pub fn put_person(
        &self,
        id: u64,
        fields: Value,
        add_time: DateTime<Utc>,
        update_time: DateTime<Utc>,
    ) {
        let person = Record::new(Kind::Persons, id, fields, add_time, update_time);
        self.state().persons.insert(id, person);
    }

    /// Inserts or replaces deal `id` (`title`, `person_id`, `stage_id`, `status`, ... over the
    /// v2 defaults), with `id`, `add_time` and `update_time` from the arguments.
    pub fn put_deal(
        &self,
        id: u64,
        fields: Value,
        add_time: DateTime<Utc>,
        update_time: DateTime<Utc>,
    ) {
        let deal = Record::new(Kind::Deals, id, fields, add_time, update_time);
        self.state().deals.insert(id, deal);
    }

    /// Deletes person `id` at `at`: `is_deleted` becomes true and `update_time` becomes `at`.
    pub fn delete_person(&self, id: u64, at: DateTime<Utc>) {
        self.delete(Kind::Persons, id, at);
    }

    /// Deletes deal `id` at `at`; `/deals` then lists it only when `status` names `deleted`.
    pub fn delete_deal(&self, id: u64, at: DateTime<Utc>) {
        self.delete(Kind::Deals, id, at);
    }

    fn delete(&self, kind: Kind, id: u64, at: DateTime<Utc>) {
        let mut state = self.state();
        let records = match kind {
            Kind::Persons => &mut state.persons,
            Kind::Deals => &mut state.deals,
        };
        let record = records
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no Pipedrive {} with id {id}", kind.name()));
        record.json.insert("is_deleted".into(), json!(true));
        record.touch(at);
    }

    /// Admits `per_2s` requests per 2-second window and answers 429 beyond it, with
    /// `x-ratelimit-reset` and no `Retry-After`; `None` lifts the limit.
    pub fn set_burst_limit(&self, per_2s: Option<u32>) {
        self.state().burst.set_limit(per_2s);
    }
}

/// Scripted failures (`fail_next`) hit authenticated requests to the list endpoints, with
/// Pipedrive's error body; they do not count against the burst limit.
impl Vendor for State {
    fn respond(&mut self, request: &Incoming<'_>) -> Response {
        self.reply(request.method, request.uri, request.headers, request.now)
    }

    fn faults(&mut self) -> &mut Faults {
        &mut self.faults
    }
}

/// Pipedrive's error envelope.
fn error(status: StatusCode, message: &str) -> Rejection {
    let body = json!({
        "success": false,
        "error": message,
        "errorCode": status.as_u16(),
        "error_info": ERROR_INFO,
        "data": null,
        "additional_data": null,
    });
    Rejection::new(status, body)
}

fn bad_request(message: impl Into<String>) -> Rejection {
    error(StatusCode::BAD_REQUEST, &message.into())
}

/// Pipedrive's answer to an injected fault.
fn fault(status: StatusCode, retry_after: Option<String>) -> Rejection {
    let message = match status {
        StatusCode::UNAUTHORIZED => "unauthorized access",
        StatusCode::TOO_MANY_REQUESTS => "Too many requests",
        _ => status.canonical_reason().unwrap_or("error"),
    };
    let mut rejection = error(status, message);
    rejection.retry_after = retry_after;
    rejection
}

impl State {
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let token = headers.get(TOKEN_HEADER).map(HeaderValue::as_bytes);
        if token == Some(self.token.as_bytes()) {
            return true;
        }
        headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split_once(' '))
            .is_some_and(|(scheme, token)| {
                scheme.eq_ignore_ascii_case("bearer") && token == self.token
            })
    }

    /// Authenticates, answers, and puts the `x-ratelimit-*` headers on every answer to the token.
    fn reply(
        &mut self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        now: DateTime<Utc>,
    ) -> Response {
        if !self.authorized(headers) {
            return error(StatusCode::UNAUTHORIZED, "unauthorized access").into_response();
        }
        let mut response = match self.answer(method, uri, now) {
            Ok(body) => axum::Json(body).into_response(),
            Err(rejection) => rejection.into_response(),
        };
        let exhausted = response.status() == StatusCode::TOO_MANY_REQUESTS;
        for (name, value) in self.burst_headers(now, exhausted) {
            response
                .headers_mut()
                .insert(name, HeaderValue::from(value));
        }
        response
    }

    /// `x-ratelimit-limit`, `-remaining` (0 when `exhausted`) and `-reset`: whole seconds until
    /// the window closes, at least 1.
    fn burst_headers(&mut self, now: DateTime<Utc>, exhausted: bool) -> [(&'static str, u64); 3] {
        let limit = self.burst.limit().unwrap_or(UNSET_BURST_LIMIT);
        let remaining = if exhausted {
            0
        } else {
            self.burst.remaining(now, UNSET_BURST_LIMIT)
        };
        [
            ("x-ratelimit-limit", limit.into()),
            ("x-ratelimit-remaining", remaining.into()),
            ("x-ratelimit-reset", seconds_up(self.burst.wait(now))),
        ]
    }

    fn answer(
        &mut self,
        method: &Method,
        uri: &Uri,
        now: DateTime<Utc>,
    ) -> Result<Value, Rejection> {
        let Some(kind) = Kind::parse(uri.path()) else {
            return Err(error(StatusCode::NOT_FOUND, "Not found"));
        };
        if method != Method::GET {
            return Err(error(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed"));
        }
        if let Some((status, retry_after)) = self.faults.take() {
            return Err(fault(status, retry_after));
        }
        if self.burst.admit(now).is_err() {
            return Err(error(StatusCode::TOO_MANY_REQUESTS, "Too many requests"));
        }
        let params = Params::parse(uri, kind.parameters())?;
        let query = ListQuery::parse(kind, &params)?;
        let answer = self.list(kind, &query);
        let page = answer["data"].as_array().map_or(&[][..], Vec::as_slice);
        if let Some(status) = self.faults.take_poisoned(page, "id") {
            return Err(fault(status, None));
        }
        Ok(answer)
    }

    fn list(&self, kind: Kind, query: &ListQuery) -> Value {
        let records = match kind {
            Kind::Persons => &self.persons,
            Kind::Deals => &self.deals,
        };
        let mut listed: Vec<(Key, &Record)> = records
            .values()
            .filter(|record| query.matches(kind, record))
            .map(|record| (query.order.key(record), record))
            .collect();
        listed.sort_by(|a, b| query.order.compare(&a.0, &b.0));
        let start = query.after.map_or(0, |after| {
            listed.partition_point(|(key, _)| query.order.compare(key, &after).is_le())
        });
        let end = start.saturating_add(query.limit).min(listed.len());
        let page = &listed[start..end];
        let next_cursor = match page.last() {
            Some((last, _)) if end < listed.len() => json!(query.order.cursor(kind, last)),
            _ => Value::Null,
        };
        let data: Vec<Value> = page
            .iter()
            .map(|(_, record)| record.to_json(query.custom_fields.as_deref()))
            .collect();
        json!({
            "success": true,
            "data": data,
            "additional_data": { "next_cursor": next_cursor },
        })
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum SortBy {
    Id,
    UpdateTime,
    AddTime,
}

impl SortBy {
    const ALL: [Self; 3] = [Self::Id, Self::UpdateTime, Self::AddTime];

    fn name(self) -> &'static str {
        match self {
            Self::Id => "id",
            Self::UpdateTime => "update_time",
            Self::AddTime => "add_time",
        }
    }
}

/// A record's place in a listing: (sort value, id); times as Unix seconds.
type Key = (i64, u64);

struct Order {
    by: SortBy,
    descending: bool,
}

impl Order {
    fn key(&self, record: &Record) -> Key {
        let value = match self.by {
            SortBy::Id => i64::try_from(record.id).unwrap_or(i64::MAX),
            SortBy::UpdateTime => record.update_time.timestamp(),
            SortBy::AddTime => record.add_time.timestamp(),
        };
        (value, record.id)
    }

    fn compare(&self, a: &Key, b: &Key) -> Ordering {
        let order = a.cmp(b);
        if self.descending {
            order.reverse()
        } else {
            order
        }
    }

    fn direction(&self) -> &'static str {
        if self.descending { "desc" } else { "asc" }
    }

    /// `<kind>|<sort_by>|<direction>|<value>|<id>` of the last record served, base64url.
    fn cursor(&self, kind: Kind, last: &Key) -> String {
        let text = format!(
            "{}|{}|{}|{}|{}",
            kind.name(),
            self.by.name(),
            self.direction(),
            last.0,
            last.1
        );
        base64_encode(text.as_bytes())
    }

    fn decode_cursor(&self, kind: Kind, token: &str) -> Option<Key> {
        let text = String::from_utf8(base64_decode(token)?).ok()?;
        let parts: Vec<&str> = text.split('|').collect();
        let [name, by, direction, value, id] = parts.as_slice() else {
            return None;
        };
        if *name != kind.name() || *by != self.by.name() || *direction != self.direction() {
            return None;
        }
        Some((value.parse().ok()?, id.parse().ok()?))
    }
}

/// A parsed list request.
struct ListQuery {
    ids: Option<Vec<u64>>,
    equal: Vec<(&'static str, i64)>,
    /// Deal statuses asked for; `None` lists every deal that is not deleted.
    statuses: Option<Vec<String>>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    order: Order,
    custom_fields: Option<Vec<String>>,
    limit: usize,
    after: Option<Key>,
}

impl ListQuery {
    fn parse(kind: Kind, params: &Params) -> Result<Self, Rejection> {
        for name in ["filter_id", "include_fields"] {
            if params.get(name).is_some() {
                return Err(bad_request(format!(
                    "{name} is not implemented by the fake Pipedrive"
                )));
            }
        }
        let by = match params.get("sort_by") {
            None => SortBy::Id,
            Some(text) => SortBy::ALL
                .into_iter()
                .find(|by| by.name() == text)
                .ok_or_else(|| {
                    bad_request(
                        "Validation failed: sort_by: Must be one of: id, update_time, add_time",
                    )
                })?,
        };
        let descending = match params.get("sort_direction") {
            None | Some("asc") => false,
            Some("desc") => true,
            Some(_) => {
                return Err(bad_request(
                    "Validation failed: sort_direction: Must be one of: asc, desc",
                ));
            }
        };
        let order = Order { by, descending };
        let mut equal = Vec::new();
        for &name in kind.equality_filters() {
            if let Some(value) = params.integer(name)? {
                equal.push((name, value));
            }
        }
        let statuses = match kind {
            Kind::Deals => params.list("status", usize::MAX)?,
            Kind::Persons => None,
        };
        if let Some(unknown) = statuses
            .iter()
            .flatten()
            .find(|s| !DEAL_STATUSES.contains(&s.as_str()))
        {
            return Err(bad_request(format!(
                "Validation failed: status: {unknown} is not one of: open, won, lost, deleted"
            )));
        }
        let after = match params.get("cursor") {
            Some(token) => Some(
                order
                    .decode_cursor(kind, token)
                    .ok_or_else(|| bad_request("Invalid cursor"))?,
            ),
            None => None,
        };
        Ok(Self {
            ids: params.ids()?,
            equal,
            statuses,
            since: params.time("updated_since")?,
            until: params.time("updated_until")?,
            order,
            custom_fields: params.list("custom_fields", MAX_CUSTOM_FIELDS)?,
            limit: params.limit()?,
            after,
        })
    }

    fn matches(&self, kind: Kind, record: &Record) -> bool {
        self.visible(kind, record)
            && self.ids.as_ref().is_none_or(|ids| ids.contains(&record.id))
            && self
                .equal
                .iter()
                .all(|&(name, value)| record.json.get(name).and_then(Value::as_i64) == Some(value))
            && self.since.is_none_or(|since| record.update_time >= since)
            && self.until.is_none_or(|until| record.update_time < until)
    }

    /// Persons are always listed; deals per `status` and never when archived.
    fn visible(&self, kind: Kind, record: &Record) -> bool {
        if kind == Kind::Persons {
            return true;
        }
        if record.flag("is_archived") {
            return false;
        }
        let deleted = record.flag("is_deleted");
        let Some(statuses) = &self.statuses else {
            return !deleted;
        };
        let wanted = |status: &str| statuses.iter().any(|s| s == status);
        if deleted {
            return wanted("deleted");
        }
        record
            .json
            .get("status")
            .and_then(Value::as_str)
            .is_some_and(wanted)
    }
}

/// The query parameters of one request, empty values dropped.
struct Params(BTreeMap<String, String>);

impl Params {
    fn parse(uri: &Uri, allowed: &[&str]) -> Result<Self, Rejection> {
        let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(uri)
            .map_err(|_| bad_request("Validation failed: invalid query string"))?;
        let mut params = BTreeMap::new();
        let mut seen: Vec<String> = Vec::new();
        for (name, value) in pairs {
            if !allowed.contains(&name.as_str()) {
                return Err(bad_request(format!(
                    "Validation failed: {name}: Unknown query parameter"
                )));
            }
            if seen.contains(&name) {
                return Err(bad_request(format!(
                    "Validation failed: {name}: Must be given at most once"
                )));
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

    /// A positive integer parameter.
    fn integer(&self, name: &str) -> Result<Option<i64>, Rejection> {
        let Some(text) = self.get(name) else {
            return Ok(None);
        };
        match text.parse::<i64>() {
            Ok(n) if n >= 1 => Ok(Some(n)),
            _ => Err(bad_request(format!(
                "Validation failed: {name}: Must be a positive integer"
            ))),
        }
    }

    fn limit(&self) -> Result<usize, Rejection> {
        let Some(text) = self.get("limit") else {
            return Ok(DEFAULT_LIMIT);
        };
        match text.parse::<usize>() {
            Ok(n @ 1..=MAX_LIMIT) => Ok(n),
            Ok(n) if n > MAX_LIMIT => Err(bad_request(format!(
                "Validation failed: limit: Must be less than or equal to {MAX_LIMIT}"
            ))),
            _ => Err(bad_request(
                "Validation failed: limit: Must be a positive integer",
            )),
        }
    }

    /// An RFC 3339 time parameter.
    fn time(&self, name: &str) -> Result<Option<DateTime<Utc>>, Rejection> {
        self.get(name)
            .map(|text| {
                DateTime::parse_from_rfc3339(text)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|_| {
                        bad_request(format!(
                            "Validation failed: {name}: Must be an RFC 3339 date-time, \
                             e.g. 2025-01-01T10:20:00Z"
                        ))
                    })
            })
            .transpose()
    }

    /// A comma-separated list of at most `max` non-empty items.
    fn list(&self, name: &str, max: usize) -> Result<Option<Vec<String>>, Rejection> {
        let Some(text) = self.get(name) else {
            return Ok(None);
        };
        let items: Vec<String> = text.split(',').map(|s| s.trim().to_owned()).collect();
        if items.iter().any(String::is_empty) {
            return Err(bad_request(format!(
                "Validation failed: {name}: Must be a comma separated list"
            )));
        }
        if items.len() > max {
            return Err(bad_request(format!(
                "Validation failed: {name}: Must have at most {max} items"
            )));
        }
        Ok(Some(items))
    }

    fn ids(&self) -> Result<Option<Vec<u64>>, Rejection> {
        let Some(items) = self.list("ids", MAX_IDS)? else {
            return Ok(None);
        };
        items
            .iter()
            .map(|item| {
                item.parse::<u64>().map_err(|_| {
                    bad_request(format!("Validation failed: ids: {item} is not an integer"))
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}
