//! A fake Zendesk Support account: the cursor-based incremental exports of users and tickets
//! (`start_time`, then `after_cursor` to the end of the stream and beyond), `show_many` to read
//! ticket requesters, the exports' 10-a-minute rate limit with `Retry-After`, and Zendesk's error
//! bodies (`crm-sources.md` §2.4).
//!
//! Exports leave out anything changed within the minute before the request, measured on the
//! fake's clock ([`Zendesk::set_now`], [`super::Server::clock`]), so late-arriving changes are
//! deterministic. Deleted users stay in the user export with `active: false`, as in Zendesk.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::Query;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

use super::{
    Faults, Incoming, RateWindow, Rejection, Server, Vendor, base64_decode, base64_encode,
    base64_standard_encode, fields_object, seconds_up, whole_seconds,
};

const USERS_EXPORT_PATH: &str = "/api/v2/incremental/users/cursor.json";
const TICKETS_EXPORT_PATH: &str = "/api/v2/incremental/tickets/cursor.json";
const SHOW_MANY_PATH: &str = "/api/v2/users/show_many.json";
/// The default and largest export page.
const DEFAULT_PER_PAGE: usize = 1_000;
const DEFAULT_EXPORTS_PER_MINUTE: u32 = 10;
/// Exports leave out what changed within this many seconds before the request, and refuse a
/// `start_time` that recent.
const SETTLE_SECONDS: i64 = 60;
const MAX_SHOW_MANY_IDS: usize = 100;

/// A running fake Zendesk account; the server stops when this is dropped.
pub type Zendesk = Server<State>;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stream {
    Users,
    Tickets,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Self::Users => "users",
            Self::Tickets => "tickets",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Self::Users => USERS_EXPORT_PATH,
            Self::Tickets => TICKETS_EXPORT_PATH,
        }
    }
}

/// A user or a ticket. Times are whole seconds, as Zendesk shows them.
struct Item {
    id: u64,
    fields: Map<String, Value>,
    created: DateTime<Utc>,
    updated: DateTime<Utc>,
    /// Unix seconds of the last change of any kind: the export order of tickets. For users it
    /// equals `updated`.
    generated: i64,
    deleted: bool,
}

/// An item's position in its export: (`updated_at` or `generated_timestamp`, id).
type Key = (i64, u64);

impl Item {
    fn key(&self) -> Key {
        (self.generated, self.id)
    }

    /// The API representation: the fixture's fields, defaults for the ones it left out, and
    /// the fields the fake maintains.
    fn to_json(&self, stream: Stream, base_url: &str) -> Value {
        let mut out = self.fields.clone();
        let defaults = match stream {
            Stream::Users => json!({
                "name": null, "email": null, "phone": null, "shared_phone_number": null,
                "active": true, "suspended": false, "time_zone": "UTC",
            }),
            Stream::Tickets => json!({ "requester_id": null, "status": "open", "subject": null }),
        };
        if let Value::Object(defaults) = defaults {
            for (name, value) in defaults {
                out.entry(name).or_insert(value);
            }
        }
        out.insert("id".into(), json!(self.id));
        let url = format!("{base_url}/api/v2/{}/{}.json", stream.name(), self.id);
        out.insert("url".into(), json!(url));
        out.insert("created_at".into(), json!(zendesk_time(self.created)));
        out.insert("updated_at".into(), json!(zendesk_time(self.updated)));
        if stream == Stream::Tickets {
            out.insert("generated_timestamp".into(), json!(self.generated));
            if self.deleted {
                out.insert("status".into(), json!("deleted"));
            }
        }
        Value::Object(out)
    }
}

/// Zendesk's timestamp format: UTC seconds with `Z`, e.g. `2011-05-05T10:38:52Z`.
fn zendesk_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The account's data, export rate window and scripted failures.
pub struct State {
    url: String,
    /// The expected `Authorization: Basic` credential, base64 of `{email}/token:{api_token}`.
    basic: String,
    oauth_token: Option<String>,
    users: BTreeMap<u64, Item>,
    tickets: BTreeMap<u64, Item>,
    per_page_max: usize,
    exports: RateWindow,
    faults: Faults,
}

#[allow(dead_code)] // The fake's whole test API; each test uses only part of it.
impl Zendesk {
    /// Starts a fake account that accepts `Authorization: Basic` with
    /// `base64("{email}/token:{api_token}")`.
    pub async fn start(email: &str, api_token: &str) -> Zendesk {
        let mut exports = RateWindow::sliding(Duration::from_secs(SETTLE_SECONDS as u64));
        exports.set_limit(Some(DEFAULT_EXPORTS_PER_MINUTE));
        Server::serve(|url| State {
            url: url.to_owned(),
            basic: base64_standard_encode(format!("{email}/token:{api_token}").as_bytes()),
            oauth_token: None,
            users: BTreeMap::new(),
            tickets: BTreeMap::new(),
            per_page_max: DEFAULT_PER_PAGE,
            exports,
            faults: Faults::default(),
        })
        .await
    }

    /// Also accepts `Authorization: Bearer <token>`, an OAuth access token.
    pub fn set_oauth_token(&self, token: &str) {
        self.state().oauth_token = Some(token.to_owned());
    }

    /// Inserts or replaces user `id` (≥ 1). `fields` holds `name`, `email`, `phone`,
    /// `shared_phone_number`, `active`, `suspended`, `time_zone` and any others; those left out
    /// get Zendesk's defaults. Times are truncated to whole seconds.
    pub fn put_user(&self, id: u64, fields: Value, created: DateTime<Utc>, updated: DateTime<Utc>) {
        let item = new_item(id, fields, created, updated);
        self.state().users.insert(id, item);
    }

    /// Inserts or replaces ticket `id` (≥ 1). `fields` holds `requester_id`, `status` (default
    /// "open"; never "deleted", see [`Zendesk::delete_ticket`]), `subject` and any others, and may
    /// set `generated_timestamp` (unix seconds, not before `updated`) for a change that left
    /// `updated_at` alone; it is `updated` otherwise.
    pub fn put_ticket(
        &self,
        id: u64,
        fields: Value,
        created: DateTime<Utc>,
        updated: DateTime<Utc>,
    ) {
        let mut item = new_item(id, fields, created, updated);
        assert!(
            item.fields.get("status") != Some(&json!("deleted")),
            "use delete_ticket to delete a ticket"
        );
        if let Some(generated) = item.fields.remove("generated_timestamp") {
            let generated = generated
                .as_i64()
                .expect("generated_timestamp must be unix seconds");
            assert!(
                generated >= item.generated,
                "generated_timestamp is never before updated_at"
            );
            item.generated = generated;
        }
        self.state().tickets.insert(id, item);
    }

    /// Deletes user `id` at `at`: it stays in the user export with `active: false` and
    /// `updated_at` becomes `at`.
    pub fn delete_user(&self, id: u64, at: DateTime<Utc>) {
        let mut state = self.state();
        let user = state
            .users
            .get_mut(&id)
            .unwrap_or_else(|| panic!("delete_user: no user with id {id}"));
        user.fields.insert("active".into(), json!(false));
        user.updated = whole_seconds(at);
        user.generated = user.updated.timestamp();
    }

    /// Deletes ticket `id` at `at`: its status becomes "deleted" and `updated_at` and
    /// `generated_timestamp` become `at`; exports include it unless `exclude_deleted=true`.
    pub fn delete_ticket(&self, id: u64, at: DateTime<Utc>) {
        let mut state = self.state();
        let ticket = state
            .tickets
            .get_mut(&id)
            .unwrap_or_else(|| panic!("delete_ticket: no ticket with id {id}"));
        ticket.deleted = true;
        ticket.updated = whole_seconds(at);
        ticket.generated = ticket.updated.timestamp();
    }

    /// Freezes the fake's clock at `now` (it follows real time until first set). The clock
    /// decides the one-minute exclusion, `start_time` checks and the export rate window.
    pub fn set_now(&self, now: DateTime<Utc>) {
        self.clock().set(now);
    }

    /// Caps export pages at `n` items (default and maximum 1,000); a larger `per_page` is
    /// lowered to it.
    pub fn set_per_page_max(&self, n: usize) {
        assert!(
            (1..=DEFAULT_PER_PAGE).contains(&n),
            "per_page max must be 1..=1000"
        );
        self.state().per_page_max = n;
    }

    /// Allows `n` export requests in any minute of the fake's clock (default 10), answering 429
    /// with `Retry-After` beyond; `None` lifts the limit. `show_many` is not limited.
    pub fn set_rate_limit_per_minute(&self, n: Option<u32>) {
        self.state().exports.set_limit(n);
    }
}

/// Scripted failures (`fail_next`) hit authenticated requests to known endpoints, with
/// Zendesk's body for the status.
impl Vendor for State {
    fn respond(&mut self, request: &Incoming<'_>) -> Response {
        self.reply(request)
            .unwrap_or_else(IntoResponse::into_response)
    }

    fn faults(&mut self) -> &mut Faults {
        &mut self.faults
    }
}

fn new_item(id: u64, fields: Value, created: DateTime<Utc>, updated: DateTime<Utc>) -> Item {
    assert!(id >= 1, "Zendesk ids start at 1");
    let fields = fields_object("Zendesk", fields);
    for reserved in ["id", "url", "created_at", "updated_at"] {
        assert!(
            !fields.contains_key(reserved),
            "{reserved} comes from the arguments, not the fields"
        );
    }
    let updated = whole_seconds(updated);
    Item {
        id,
        fields,
        created: whole_seconds(created),
        updated,
        generated: updated.timestamp(),
        deleted: false,
    }
}

#[derive(Clone, Copy)]
enum Route {
    Export(Stream),
    ShowMany,
}

impl Route {
    fn parse(path: &str) -> Option<Self> {
        match path {
            USERS_EXPORT_PATH => Some(Self::Export(Stream::Users)),
            TICKETS_EXPORT_PATH => Some(Self::Export(Stream::Tickets)),
            SHOW_MANY_PATH => Some(Self::ShowMany),
            _ => None,
        }
    }
}

fn unauthorized() -> Rejection {
    let body = json!({ "error": "Couldn't authenticate you" });
    Rejection::new(StatusCode::UNAUTHORIZED, body)
}

/// Zendesk's `{"error", "description"}` body.
fn error(status: StatusCode, code: &str, description: &str) -> Rejection {
    Rejection::new(status, json!({ "error": code, "description": description }))
}

fn invalid(description: &str) -> Rejection {
    error(StatusCode::BAD_REQUEST, "InvalidValue", description)
}

fn export_rate_limited(retry_after: Option<String>) -> Rejection {
    let mut rejection = error(
        StatusCode::TOO_MANY_REQUESTS,
        "APIRateLimitExceeded",
        "Number of allowed incremental export API requests per minute exceeded",
    );
    rejection.retry_after = retry_after;
    rejection
}

/// An export position: items after `key` in `stream`, base64url of `<stream>|<seconds>|<id>`.
fn encode_cursor(stream: Stream, key: Key) -> String {
    base64_encode(format!("{}|{}|{}", stream.name(), key.0, key.1).as_bytes())
}

fn decode_cursor(stream: Stream, cursor: &str) -> Option<Key> {
    let text = String::from_utf8(base64_decode(cursor)?).ok()?;
    let mut parts = text.splitn(3, '|');
    if parts.next()? != stream.name() {
        return None;
    }
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

impl State {
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return false;
        };
        let Some((scheme, credential)) = value.to_str().ok().and_then(|v| v.split_once(' ')) else {
            return false;
        };
        if scheme.eq_ignore_ascii_case("basic") {
            credential == self.basic
        } else {
            scheme.eq_ignore_ascii_case("bearer") && self.oauth_token.as_deref() == Some(credential)
        }
    }

    /// Zendesk's answer to an injected fault.
    fn fault(status: StatusCode, retry_after: Option<String>) -> Rejection {
        let mut rejection = match status {
            StatusCode::UNAUTHORIZED => unauthorized(),
            StatusCode::TOO_MANY_REQUESTS => export_rate_limited(None),
            _ => {
                let reason = status.canonical_reason().unwrap_or("error");
                error(status, &reason.replace(' ', ""), reason)
            }
        };
        rejection.retry_after = retry_after;
        rejection
    }

    fn reply(&mut self, request: &Incoming<'_>) -> Result<Response, Rejection> {
        let (method, uri, headers) = (request.method, request.uri, request.headers);
        if !self.authorized(headers) {
            return Err(unauthorized());
        }
        let Some(route) = Route::parse(uri.path()) else {
            return Err(error(StatusCode::NOT_FOUND, "InvalidEndpoint", "Not found"));
        };
        if method != Method::GET {
            let status = StatusCode::METHOD_NOT_ALLOWED;
            return Err(error(status, "InvalidEndpoint", "Method not allowed"));
        }
        if let Some((status, retry_after)) = self.faults.take() {
            return Err(Self::fault(status, retry_after));
        }
        let body = match route {
            Route::Export(stream) => {
                let now = request.now;
                if let Err(wait) = self.exports.admit(now) {
                    let seconds = seconds_up(wait).min(SETTLE_SECONDS as u64);
                    return Err(export_rate_limited(Some(seconds.to_string())));
                }
                let answer = self.export(stream, uri, now)?;
                let page = answer[stream.name()]
                    .as_array()
                    .map_or(&[][..], Vec::as_slice);
                if let Some(status) = self.faults.take_poisoned(page, "id") {
                    return Err(Self::fault(status, None));
                }
                answer
            }
            Route::ShowMany => self.show_many(uri)?,
        };
        Ok(axum::Json(body).into_response())
    }

    fn items(&self, stream: Stream) -> &BTreeMap<u64, Item> {
        match stream {
            Stream::Users => &self.users,
            Stream::Tickets => &self.tickets,
        }
    }

    /// `GET /api/v2/incremental/{users,tickets}/cursor.json`.
    fn export(&self, stream: Stream, uri: &Uri, now: DateTime<Utc>) -> Result<Value, Rejection> {
        let allowed: &[&str] = match stream {
            Stream::Users => &["start_time", "cursor", "per_page"],
            Stream::Tickets => &["start_time", "cursor", "per_page", "exclude_deleted"],
        };
        let params = params(uri, allowed)?;
        let param = |name: &str| params.get(name).map(String::as_str);
        // Changes at or before this second are settled and exported.
        let settled = now.timestamp() - SETTLE_SECONDS;
        let after = start_position(stream, param("start_time"), param("cursor"), settled)?;
        let per_page = match param("per_page") {
            None => self.per_page_max,
            Some(text) => text
                .parse::<usize>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| invalid("per_page must be a positive integer"))?
                .min(self.per_page_max),
        };
        let exclude_deleted = match param("exclude_deleted") {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => return Err(invalid("exclude_deleted must be true or false")),
        };
        let mut candidates: Vec<&Item> = self
            .items(stream)
            .values()
            .filter(|item| item.key() > after && item.generated <= settled)
            .collect();
        candidates.sort_by_key(|item| item.key());
        // At the end of the stream the cursor also passes trailing excluded (deleted) tickets.
        let mut page = Vec::new();
        let mut position = after;
        let mut rest = candidates
            .iter()
            .filter(|item| !(exclude_deleted && item.deleted));
        for item in rest.by_ref().take(per_page) {
            page.push(item.to_json(stream, &self.url));
            position = item.key();
        }
        let end_of_stream = rest.next().is_none();
        if end_of_stream && let Some(last) = candidates.last() {
            position = position.max(last.key());
        }
        let cursor = encode_cursor(stream, position);
        let mut after_url = format!("{}{}?cursor={cursor}", self.url, stream.path());
        if let Some(per_page) = param("per_page") {
            after_url.push_str(&format!("&per_page={per_page}"));
        }
        if exclude_deleted {
            after_url.push_str("&exclude_deleted=true");
        }
        Ok(json!({
            stream.name(): page,
            "after_url": after_url,
            "after_cursor": cursor,
            "before_url": null,
            "before_cursor": null,
            "end_of_stream": end_of_stream,
        }))
    }

    /// `GET /api/v2/users/show_many.json?ids=1,2`: the users that exist, by ascending id.
    fn show_many(&self, uri: &Uri) -> Result<Value, Rejection> {
        let params = params(uri, &["ids"])?;
        let text = params
            .get("ids")
            .ok_or_else(|| invalid("ids is required"))?;
        let mut ids = Vec::new();
        for id in text.split(',') {
            let id = id
                .trim()
                .parse::<u64>()
                .map_err(|_| invalid("ids must be comma-separated user ids"))?;
            ids.push(id);
        }
        if ids.len() > MAX_SHOW_MANY_IDS {
            return Err(invalid("ids accepts at most 100 ids"));
        }
        ids.sort_unstable();
        ids.dedup();
        let users: Vec<Value> = ids
            .iter()
            .filter_map(|id| self.users.get(id))
            .map(|user| user.to_json(Stream::Users, &self.url))
            .collect();
        Ok(json!({
            "users": users,
            "next_page": null,
            "previous_page": null,
            "count": users.len(),
        }))
    }
}

/// Where an export request starts: after its `cursor`, or at its `start_time`, which must be
/// settled (at least a minute old).
fn start_position(
    stream: Stream,
    start_time: Option<&str>,
    cursor: Option<&str>,
    settled: i64,
) -> Result<Key, Rejection> {
    match (start_time, cursor) {
        (Some(_), Some(_)) => Err(invalid("start_time and cursor cannot be used together")),
        (None, None) => Err(invalid("start_time or cursor is required")),
        (Some(start), None) => {
            let start = start
                .parse::<i64>()
                .ok()
                .filter(|s| *s >= 0)
                .ok_or_else(|| invalid("start_time must be unix seconds"))?;
            if start > settled {
                return Err(invalid(
                    "Too recent start_time. Use a start_time older than 1 minute",
                ));
            }
            // Ids start at 1, so this is every item changed at `start` or later.
            Ok((start, 0))
        }
        (None, Some(cursor)) => {
            decode_cursor(stream, cursor).ok_or_else(|| invalid("cursor is invalid"))
        }
    }
}

/// The query parameters of a request: `allowed` names only, each at most once; empty values
/// count as absent.
fn params(uri: &Uri, allowed: &[&str]) -> Result<BTreeMap<String, String>, Rejection> {
    let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map_err(|_| invalid("invalid query string"))?;
    let mut params = BTreeMap::new();
    let mut seen = Vec::new();
    for (name, value) in pairs {
        if !allowed.contains(&name.as_str()) {
            return Err(invalid(&format!("unknown parameter: {name}")));
        }
        if seen.contains(&name) {
            return Err(invalid(&format!("duplicate parameter: {name}")));
        }
        seen.push(name.clone());
        if !value.is_empty() {
            params.insert(name, value);
        }
    }
    Ok(params)
}
