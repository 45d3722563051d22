//! A fake Freshdesk helpdesk: `GET /api/v2/contacts` and `GET /api/v2/tickets` with Freshdesk's
//! change filters, page numbers over a bare JSON array with a `Link: rel="next"` header, a page
//! cap, the per-minute credit limit and Freshdesk's error bodies (`crm-sources.md` §2.5).
//!
//! Behaviour follows Freshdesk's docs and, where they are silent, its Rails source (helpkit):
//! - Contacts filter on `_updated_since` (`updated_at >=`); plain `updated_since` is an unknown
//!   field there. Without `state`, deleted and blocked contacts are left out; `state=deleted`
//!   lists only deleted ones, so a poller of the default list never sees a deletion.
//! - Real Freshdesk orders contacts by name (helpkit: `order('users.name')`), which breaks any
//!   poller that checkpoints per page. The fake sorts by (`updated_at`, `id`) unless
//!   `sort_contacts_by_name(true)`, which sorts by (lower-cased name, `id`).
//! - Tickets filter on `updated_since` (`updated_at >=`) and sort by `order_by`/`order_type`,
//!   default `created_at` `desc`, ties by id in the same direction. Without `updated_since` only
//!   tickets created in the last 30 days (by the real clock) are listed. Spam and deleted tickets
//!   are listed only with `filter=spam` or `filter=deleted`.
//! - Times have whole seconds (`put_*` drops sub-seconds); `per_page` defaults to 30.
//! - Every request the host receives counts against the rate limit, whatever its answer, since
//!   Freshdesk throttles before authenticating and counts invalid requests. The window is a fixed
//!   minute of the fake's clock that opens at its first request; a request is refused once the credits used reach the
//!   limit, so the last one admitted may overshoot it (each `include` costs a credit more).
//! - Unknown parameters are 400 `invalid_field`; repeated ones are 400 too (Rails would keep the
//!   last); `include` values other than `requester` and the `filter`s that need an agent
//!   (`new_and_my_open`, `watching`) are 400 because the fake does not implement them.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::Query;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, SecondsFormat, TimeDelta, Utc};
use serde_json::{Map, Value, json};

use super::{
    Faults, Incoming, RateWindow, Rejection, Server, Vendor, base64_standard_decode,
    encode_component, fields_object, seconds_up, whole_seconds,
};

const DEFAULT_PER_PAGE: usize = 30;
const MAX_PER_PAGE: usize = 100;
/// How far back tickets are listed when no `updated_since` is given.
const DEFAULT_TICKET_DAYS: i64 = 30;
/// Freshdesk's rate limit is per minute.
const RATE_WINDOW: Duration = Duration::from_secs(60);
/// The total the headers report while no limit is set: the legacy Enterprise plan's 700/min.
const UNSET_RATE_LIMIT: u32 = 700;
const CONTACT_STATES: [&str; 4] = ["blocked", "deleted", "unverified", "verified"];
const TICKET_FILTERS: [&str; 4] = ["new_and_my_open", "watching", "spam", "deleted"];
const TICKET_INCLUDES: [&str; 4] = ["requester", "stats", "description", "company"];
const ORDER_BY: [&str; 4] = ["created_at", "due_by", "updated_at", "status"];
const ORDER_TYPES: [&str; 2] = ["asc", "desc"];

/// A running fake Freshdesk helpdesk (the API is under `/api/v2/`); the server stops when this
/// is dropped.
pub type Freshdesk = Server<State>;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Route {
    Contacts,
    Tickets,
}

impl Route {
    fn parse(path: &str) -> Option<Self> {
        match path {
            "/api/v2/contacts" => Some(Self::Contacts),
            "/api/v2/tickets" => Some(Self::Tickets),
            _ => None,
        }
    }

    /// Every query parameter the endpoint documents.
    fn parameters(self) -> &'static [&'static str] {
        match self {
            Self::Contacts => &[
                "email",
                "mobile",
                "phone",
                "company_id",
                "state",
                "_updated_since",
                "page",
                "per_page",
            ],
            Self::Tickets => &[
                "filter",
                "requester_id",
                "email",
                "company_id",
                "updated_since",
                "order_by",
                "order_type",
                "include",
                "page",
                "per_page",
            ],
        }
    }

    /// The fields a record has when `put_*` does not set them.
    fn defaults(self) -> Map<String, Value> {
        let defaults = match self {
            Self::Contacts => json!({
                "name": null, "email": null, "phone": null, "mobile": null, "other_emails": [],
                "company_id": null, "active": true, "deleted": false,
                "time_zone": "Eastern Time (US & Canada)", "language": "en", "job_title": null,
                "tags": [], "custom_fields": {},
            }),
            Self::Tickets => json!({
                "subject": null, "status": 2, "priority": 1, "source": 2, "type": null,
                "requester_id": null, "responder_id": null, "group_id": null, "company_id": null,
                "due_by": null, "fr_due_by": null, "is_escalated": false, "spam": false,
                "tags": [], "custom_fields": {},
            }),
        };
        let Value::Object(defaults) = defaults else {
            unreachable!("defaults are JSON objects")
        };
        defaults
    }
}

/// A stored contact or ticket: its API representation and the times the listing uses.
struct Record {
    id: u64,
    json: Map<String, Value>,
    created: DateTime<Utc>,
    updated: DateTime<Utc>,
}

impl Record {
    fn new(
        route: Route,
        id: u64,
        fields: Value,
        created: DateTime<Utc>,
        updated: DateTime<Utc>,
    ) -> Self {
        let fields = fields_object("Freshdesk", fields);
        let (created, updated) = (whole_seconds(created), whole_seconds(updated));
        let mut json = route.defaults();
        json.extend(fields);
        json.insert("id".into(), json!(id));
        json.insert("created_at".into(), json!(iso(created)));
        json.insert("updated_at".into(), json!(iso(updated)));
        Self {
            id,
            json,
            created,
            updated,
        }
    }

    fn flag(&self, name: &str) -> bool {
        self.json.get(name).and_then(Value::as_bool) == Some(true)
    }

    fn text(&self, name: &str) -> Option<&str> {
        self.json.get(name).and_then(Value::as_str)
    }

    fn integer(&self, name: &str) -> Option<i64> {
        self.json.get(name).and_then(Value::as_i64)
    }

    /// Whether `email` is the contact's primary or one of its other emails (case-insensitive).
    fn has_email(&self, email: &str) -> bool {
        let others = self.json.get("other_emails").and_then(Value::as_array);
        self.text("email")
            .into_iter()
            .chain(others.into_iter().flatten().filter_map(Value::as_str))
            .any(|e| e.eq_ignore_ascii_case(email))
    }

    /// What `include=requester` embeds for a ticket of this contact.
    fn requester(&self) -> Value {
        let field = |name: &str| self.json.get(name).cloned().unwrap_or(Value::Null);
        json!({
            "id": self.id,
            "name": field("name"),
            "email": field("email"),
            "mobile": field("mobile"),
            "phone": field("phone"),
        })
    }
}

/// Freshdesk's timestamp format: ISO 8601 UTC in whole seconds with `Z`.
fn iso(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The helpdesk's data, credits and scripted failures.
pub struct State {
    api_key: String,
    url: String,
    contacts: BTreeMap<u64, Record>,
    tickets: BTreeMap<u64, Record>,
    contacts_by_name: bool,
    page_cap: Option<u32>,
    credits: RateWindow,
    faults: Faults,
}

#[allow(dead_code)] // The fake's whole test API; each test uses only part of it.
impl Freshdesk {
    /// Starts a fake helpdesk that accepts HTTP Basic auth with `api_key` as the user name and
    /// any password (Freshdesk's clients send `X`).
    pub async fn start(api_key: &str) -> Freshdesk {
        Server::serve(|url| State {
            api_key: api_key.to_owned(),
            url: url.to_owned(),
            contacts: BTreeMap::new(),
            tickets: BTreeMap::new(),
            contacts_by_name: false,
            page_cap: None,
            credits: RateWindow::fixed(RATE_WINDOW),
            faults: Faults::default(),
        })
        .await
    }

    /// Inserts or replaces contact `id`: `fields` (`name`, `email`, `phone`, `mobile`, `active`,
    /// `deleted`, ...) over the defaults, with `id`, `created_at`, `updated_at` from the arguments.
    /// A `"blocked": true` field makes the contact blocked.
    pub fn put_contact(
        &self,
        id: u64,
        fields: Value,
        created: DateTime<Utc>,
        updated: DateTime<Utc>,
    ) {
        let contact = Record::new(Route::Contacts, id, fields, created, updated);
        self.state().contacts.insert(id, contact);
    }

    /// Inserts or replaces ticket `id` (`subject`, `status`, `priority`, `requester_id`, ... over
    /// the defaults; `"spam": true` or `"deleted": true` hide it from the default list).
    pub fn put_ticket(
        &self,
        id: u64,
        fields: Value,
        created: DateTime<Utc>,
        updated: DateTime<Utc>,
    ) {
        let ticket = Record::new(Route::Tickets, id, fields, created, updated);
        self.state().tickets.insert(id, ticket);
    }

    /// Soft-deletes contact `id` at `at`: `deleted` becomes true and `updated_at` becomes `at`.
    pub fn delete_contact(&self, id: u64, at: DateTime<Utc>) {
        let mut state = self.state();
        let contact = state
            .contacts
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no Freshdesk contact with id {id}"));
        contact.updated = whole_seconds(at);
        let updated = iso(contact.updated);
        contact.json.insert("deleted".into(), json!(true));
        contact.json.insert("updated_at".into(), json!(updated));
    }

    /// Orders contacts by name, as real Freshdesk does, instead of by (`updated_at`, `id`).
    pub fn sort_contacts_by_name(&self, by_name: bool) {
        self.state().contacts_by_name = by_name;
    }

    /// Refuses pages beyond `pages` with 400 (`field: page`, `invalid_value`), as Freshdesk's
    /// list endpoints stop at a page limit; `None` lifts the cap.
    pub fn set_page_cap(&self, pages: Option<u32>) {
        self.state().page_cap = pages;
    }

    /// Allows `n` credits per minute, answering 429 with `Retry-After` beyond them; `None`
    /// lifts the limit.
    pub fn set_rate_limit_per_minute(&self, n: Option<u32>) {
        self.state().credits.set_limit(n);
    }
}

/// Scripted failures (`fail_next`) hit authenticated requests to the list endpoints, with
/// Freshdesk's body for the status.
impl Vendor for State {
    fn respond(&mut self, request: &Incoming<'_>) -> Response {
        self.reply(request.method, request.uri, request.headers, request.now)
    }

    fn faults(&mut self) -> &mut Faults {
        &mut self.faults
    }
}

fn unauthorized() -> Rejection {
    let body = json!({
        "code": "invalid_credentials",
        "message": "You have to be logged in to perform this action.",
    });
    Rejection::new(StatusCode::UNAUTHORIZED, body)
}

fn rate_limited() -> Rejection {
    let body = json!({ "message": "You have exceeded the limit of requests per minute" });
    Rejection::new(StatusCode::TOO_MANY_REQUESTS, body)
}

/// Freshdesk's answer to an injected fault.
fn fault(status: StatusCode, retry_after: Option<String>) -> Rejection {
    let mut rejection = match status {
        StatusCode::UNAUTHORIZED => unauthorized(),
        StatusCode::TOO_MANY_REQUESTS => rate_limited(),
        _ => {
            let reason = status.canonical_reason().unwrap_or("error");
            let code = reason.to_lowercase().replace(' ', "_");
            Rejection::new(status, json!({ "code": code, "message": reason }))
        }
    };
    rejection.retry_after = retry_after;
    rejection
}

/// One entry of a validation failure's `errors`.
fn field_error(field: &str, message: &str, code: &str) -> Value {
    json!({ "field": field, "message": message, "code": code })
}

fn validation_failed(errors: Vec<Value>) -> Rejection {
    let body = json!({ "description": "Validation failed", "errors": errors });
    Rejection::new(StatusCode::BAD_REQUEST, body)
}

fn invalid_value(field: &str, message: &str) -> Rejection {
    validation_failed(vec![field_error(field, message, "invalid_value")])
}

fn one_of_message(values: &[&str]) -> String {
    format!("It should be one of these values: '{}'", values.join(","))
}

/// A list answer: the records of one page, the next page's URL, and credits beyond the first.
struct Page {
    records: Vec<Value>,
    next: Option<String>,
    extra_credits: u32,
}

impl State {
    /// Charges the request, then authenticates and answers it; every answer but a 429 carries
    /// the credits it cost in the `X-RateLimit-*` headers.
    fn reply(
        &mut self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        now: DateTime<Utc>,
    ) -> Response {
        let (mut response, charged) = if self.credits.check(now).is_ok() {
            let (response, credits) = match self.answer(method, uri, headers) {
                Ok(page) => (
                    self.page_response(page.records, page.next),
                    1 + page.extra_credits,
                ),
                Err(rejection) => (rejection.into_response(), 1),
            };
            self.credits.charge(now, credits);
            (response, credits)
        } else {
            let mut rejection = rate_limited();
            rejection.retry_after = Some(seconds_up(self.credits.wait(now)).to_string());
            (rejection.into_response(), 0)
        };
        let total = self.credits.limit().unwrap_or(UNSET_RATE_LIMIT);
        let remaining = self.credits.remaining(now, UNSET_RATE_LIMIT);
        let headers = [
            ("x-ratelimit-total", total),
            ("x-ratelimit-remaining", remaining),
            ("x-ratelimit-used-currentrequest", charged),
        ];
        for (name, value) in headers {
            response
                .headers_mut()
                .insert(name, HeaderValue::from(value));
        }
        response
    }

    fn page_response(&self, records: Vec<Value>, next: Option<String>) -> Response {
        let mut response = axum::Json(records).into_response();
        if let Some(next) = next {
            let link = HeaderValue::from_str(&format!("<{next}>; rel=\"next\""))
                .expect("a Link header made of URL characters");
            response.headers_mut().insert(header::LINK, link);
        }
        response
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some((scheme, encoded)) = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split_once(' '))
        else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case("basic") {
            return false;
        }
        let Some(credentials) =
            base64_standard_decode(encoded.trim()).and_then(|bytes| String::from_utf8(bytes).ok())
        else {
            return false;
        };
        credentials
            .split_once(':')
            .is_some_and(|(user, _password)| user == self.api_key)
    }

    fn answer(
        &mut self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Result<Page, Rejection> {
        if !self.authorized(headers) {
            return Err(unauthorized());
        }
        let Some(route) = Route::parse(uri.path()) else {
            let body = json!({ "code": "invalid_url", "message": "This URL is not supported" });
            return Err(Rejection::new(StatusCode::NOT_FOUND, body));
        };
        if method != Method::GET {
            let message =
                format!("{method} method is not allowed. It should be one of these values: 'GET'");
            return Err(Rejection::new(
                StatusCode::METHOD_NOT_ALLOWED,
                json!({ "message": message }),
            ));
        }
        if let Some((status, retry_after)) = self.faults.take() {
            return Err(fault(status, retry_after));
        }
        let params = Params::parse(uri, route.parameters())?;
        let paging = Paging::parse(&params, self.page_cap)?;
        let (listed, extra_credits) = match route {
            Route::Contacts => (self.contacts(&params)?, 0),
            Route::Tickets => self.tickets(&params)?,
        };
        let start = paging.start().min(listed.len());
        let end = start.saturating_add(paging.per_page).min(listed.len());
        let next = (end < listed.len()).then(|| {
            let query = params.query_with_page(paging.page + 1);
            format!("{}{}?{query}", self.url, uri.path())
        });
        if let Some(status) = self.faults.take_poisoned(&listed[start..end], "id") {
            return Err(fault(status, None));
        }
        Ok(Page {
            records: listed[start..end].to_vec(),
            next,
            extra_credits,
        })
    }

    /// `GET /api/v2/contacts`: every matching contact, in listing order.
    fn contacts(&self, params: &Params) -> Result<Vec<Value>, Rejection> {
        let since = params.time("_updated_since")?;
        let state = params.one_of("state", &CONTACT_STATES)?;
        let company_id = params.integer("company_id")?;
        let (email, phone, mobile) = (
            params.get("email"),
            params.get("phone"),
            params.get("mobile"),
        );
        let mut listed: Vec<&Record> = self
            .contacts
            .values()
            .filter(|c| contact_in_state(c, state))
            .filter(|c| since.is_none_or(|since| c.updated >= since))
            .filter(|c| company_id.is_none_or(|id| c.integer("company_id") == Some(id)))
            .filter(|c| email.is_none_or(|email| c.has_email(email)))
            .filter(|c| phone.is_none_or(|phone| c.text("phone") == Some(phone)))
            .filter(|c| mobile.is_none_or(|mobile| c.text("mobile") == Some(mobile)))
            .collect();
        if self.contacts_by_name {
            listed.sort_by_cached_key(|c| (c.text("name").unwrap_or("").to_lowercase(), c.id));
        } else {
            listed.sort_by_key(|c| (c.updated, c.id));
        }
        Ok(listed
            .iter()
            .map(|c| Value::Object(c.json.clone()))
            .collect())
    }

    /// `GET /api/v2/tickets`: every matching ticket in the asked order, and the credits its
    /// includes cost.
    fn tickets(&self, params: &Params) -> Result<(Vec<Value>, u32), Rejection> {
        let since = params.time("updated_since")?;
        let filter = params.one_of("filter", &TICKET_FILTERS)?;
        if let Some(name @ ("new_and_my_open" | "watching")) = filter {
            return Err(invalid_value(
                "filter",
                &format!("filter={name} is not implemented by the fake Freshdesk"),
            ));
        }
        let requester_id = params.integer("requester_id")?;
        let company_id = params.integer("company_id")?;
        let order_by = params
            .one_of("order_by", &ORDER_BY)?
            .unwrap_or("created_at");
        let descending = params.one_of("order_type", &ORDER_TYPES)? != Some("asc");
        let includes = params.includes()?;
        // Without `updated_since` Freshdesk lists only tickets created in the last 30 days.
        let created_after = Utc::now() - TimeDelta::days(DEFAULT_TICKET_DAYS);
        let requesters: Option<Vec<u64>> = params.get("email").map(|email| {
            let matching = self.contacts.values().filter(|c| c.has_email(email));
            matching.map(|c| c.id).collect()
        });
        let mut listed: Vec<&Record> = self
            .tickets
            .values()
            .filter(|t| match filter {
                Some("spam") => t.flag("spam"),
                Some(_) => t.flag("deleted") && !t.flag("spam"),
                None => !t.flag("deleted") && !t.flag("spam"),
            })
            .filter(|t| match since {
                Some(since) => t.updated >= since,
                None => t.created >= created_after,
            })
            .filter(|t| requester_id.is_none_or(|id| t.integer("requester_id") == Some(id)))
            .filter(|t| company_id.is_none_or(|id| t.integer("company_id") == Some(id)))
            .filter(|t| {
                requesters.as_ref().is_none_or(|ids| {
                    let requester = t
                        .integer("requester_id")
                        .and_then(|id| u64::try_from(id).ok());
                    requester.is_some_and(|id| ids.contains(&id))
                })
            })
            .collect();
        listed.sort_by_cached_key(|t| (ticket_sort_value(t, order_by), t.id));
        if descending {
            listed.reverse();
        }
        let with_requester = includes.contains(&"requester");
        let tickets = listed
            .iter()
            .map(|t| {
                let mut json = t.json.clone();
                if with_requester {
                    let requester = t
                        .integer("requester_id")
                        .and_then(|id| u64::try_from(id).ok())
                        .and_then(|id| self.contacts.get(&id))
                        .map_or(Value::Null, Record::requester);
                    json.insert("requester".into(), requester);
                }
                Value::Object(json)
            })
            .collect();
        let extra_credits = u32::try_from(includes.len()).unwrap_or(u32::MAX);
        Ok((tickets, extra_credits))
    }
}

/// Freshdesk's contact states (helpkit `contact_filter`): without one, deleted and blocked
/// contacts are left out; its `blocked` state also holds the deleted ones.
fn contact_in_state(contact: &Record, state: Option<&str>) -> bool {
    let deleted = contact.flag("deleted");
    let blocked = contact.flag("blocked");
    let active = contact.flag("active");
    match state {
        None => !deleted && !blocked,
        Some("deleted") => deleted,
        Some("blocked") => blocked || deleted,
        Some("verified") => !deleted && !blocked && active,
        Some(_) => !deleted && !blocked && !active,
    }
}

/// The value a ticket sorts by: times as Unix seconds, `status` as its number; a ticket without
/// a `due_by` sorts after those with one when ascending.
fn ticket_sort_value(ticket: &Record, order_by: &str) -> i64 {
    match order_by {
        "updated_at" => ticket.updated.timestamp(),
        "status" => ticket.integer("status").unwrap_or(0),
        "due_by" => ticket
            .text("due_by")
            .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
            .map_or(i64::MAX, |t| t.timestamp()),
        _ => ticket.created.timestamp(),
    }
}

/// `page` and `per_page`.
struct Paging {
    page: usize,
    per_page: usize,
}

impl Paging {
    fn parse(params: &Params, cap: Option<u32>) -> Result<Self, Rejection> {
        let positive = |name: &str, default: usize| match params.get(name) {
            None => Ok(default),
            Some(text) => match text.parse::<usize>() {
                Ok(n) if n >= 1 => Ok(n),
                _ => Err(invalid_value(name, "It should be a Positive Integer")),
            },
        };
        let page = positive("page", 1)?;
        let per_page = positive("per_page", DEFAULT_PER_PAGE)?;
        if per_page > MAX_PER_PAGE {
            let message =
                format!("It should be a Positive Integer less than or equal to {MAX_PER_PAGE}");
            return Err(invalid_value("per_page", &message));
        }
        if let Some(cap) = cap
            && page > cap as usize
        {
            let message = format!("It should be a Positive Integer less than or equal to {cap}");
            return Err(invalid_value("page", &message));
        }
        Ok(Self { page, per_page })
    }

    fn start(&self) -> usize {
        (self.page - 1).saturating_mul(self.per_page)
    }
}

/// The query parameters of one request in arrival order, empty values dropped.
struct Params(Vec<(String, String)>);

impl Params {
    /// Refuses unknown parameters (all of them in one answer, as Freshdesk lists every invalid
    /// field) and repeated ones.
    fn parse(uri: &Uri, allowed: &[&str]) -> Result<Self, Rejection> {
        let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(uri)
            .map_err(|_| validation_failed(Vec::new()))?;
        let unknown: Vec<Value> = pairs
            .iter()
            .filter(|(name, _)| !allowed.contains(&name.as_str()))
            .map(|(name, _)| {
                field_error(name, "Unexpected/invalid field in request", "invalid_field")
            })
            .collect();
        if !unknown.is_empty() {
            return Err(validation_failed(unknown));
        }
        let mut seen: Vec<&str> = Vec::new();
        for (name, _) in &pairs {
            if seen.contains(&name.as_str()) {
                return Err(invalid_value(name, "It should be given only once"));
            }
            seen.push(name);
        }
        Ok(Self(
            pairs.into_iter().filter(|(_, v)| !v.is_empty()).collect(),
        ))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, value)| value.as_str())
    }

    fn integer(&self, name: &str) -> Result<Option<i64>, Rejection> {
        let Some(text) = self.get(name) else {
            return Ok(None);
        };
        match text.parse::<i64>() {
            Ok(n) if n >= 1 => Ok(Some(n)),
            _ => Err(invalid_value(name, "It should be a Positive Integer")),
        }
    }

    /// A parameter that must be one of `values`.
    fn one_of<'a>(&self, name: &str, values: &[&'a str]) -> Result<Option<&'a str>, Rejection> {
        let Some(text) = self.get(name) else {
            return Ok(None);
        };
        match values.iter().find(|v| **v == text) {
            Some(value) => Ok(Some(value)),
            None => Err(invalid_value(name, &one_of_message(values))),
        }
    }

    /// An ISO 8601 date-time, or a date taken as midnight UTC.
    fn time(&self, name: &str) -> Result<Option<DateTime<Utc>>, Rejection> {
        let Some(text) = self.get(name) else {
            return Ok(None);
        };
        let parsed = DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&Utc))
            .ok()
            .or_else(|| {
                let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
                Some(date.and_hms_opt(0, 0, 0)?.and_utc())
            });
        match parsed {
            Some(at) => Ok(Some(at)),
            None => Err(validation_failed(vec![field_error(
                name,
                "It should be in the 'valid date time' format",
                "invalid_date",
            )])),
        }
    }

    /// The `include` list; only `requester` is implemented.
    fn includes(&self) -> Result<Vec<&'static str>, Rejection> {
        let Some(text) = self.get("include") else {
            return Ok(Vec::new());
        };
        let mut includes = Vec::new();
        for item in text.split(',').map(str::trim) {
            let Some(&include) = TICKET_INCLUDES.iter().find(|i| **i == item) else {
                return Err(invalid_value("include", &one_of_message(&TICKET_INCLUDES)));
            };
            if include != "requester" {
                let message = format!("include={include} is not implemented by the fake Freshdesk");
                return Err(invalid_value("include", &message));
            }
            if !includes.contains(&include) {
                includes.push(include);
            }
        }
        Ok(includes)
    }

    /// This request's query with `page` set to `page` (appended when absent).
    fn query_with_page(&self, page: usize) -> String {
        let page = page.to_string();
        let mut pairs: Vec<(&str, &str)> = self
            .0
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        match pairs.iter_mut().find(|(name, _)| *name == "page") {
            Some(pair) => pair.1 = &page,
            None => pairs.push(("page", &page)),
        }
        let encoded: Vec<String> = pairs
            .iter()
            .map(|(name, value)| format!("{}={}", encode_component(name), encode_component(value)))
            .collect();
        encoded.join("&")
    }
}
