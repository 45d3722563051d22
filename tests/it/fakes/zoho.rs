//! A fake Zoho CRM: `GET /crm/v8/Contacts` with the `If-Modified-Since` change filter, `page`
//! numbers that reach only the first 2,000 records and `page_token` beyond them, 304 when nothing
//! changed, API credits exhausted as 429 without `Retry-After`, the OAuth refresh-token flow and
//! Zoho's error bodies (`crm-sources.md` §2.6).
//!
//! Timestamps are whole seconds shown in the account's zone, +05:30. `If-Modified-Since` keeps
//! records modified strictly after it (HTTP's meaning): whether Zoho includes a record modified
//! at that very second is unverified, and the stricter reading is the one a poller must survive.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::Query;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, FixedOffset, Utc};
use serde_json::{Map, Value, json};

use super::{
    Faults, Incoming, OAuthClient, Rejection, Server, Vendor, base64_decode, base64_encode,
    fields_object, form_pairs, whole_seconds,
};

const CONTACTS_PATH: &str = "/crm/v8/Contacts";
const MODULE_PREFIX: &str = "/crm/v8/";
const TOKEN_PATH: &str = "/oauth/v2/token";
const MAX_PER_PAGE: usize = 200;
const MAX_FIELDS: usize = 50;
/// `page` reaches records 1..=2,000 only; `page_token` continues beyond.
const PAGE_RECORD_LIMIT: usize = 2_000;
const PAGE_TOKEN_VALIDITY: chrono::TimeDelta = chrono::TimeDelta::hours(24);
const ACCESS_TOKEN_SECONDS: u64 = 3_600;
/// The account's zone, in which every timestamp is shown: +05:30.
const ACCOUNT_OFFSET_SECONDS: i32 = 5 * 3_600 + 30 * 60;
const CREDITS_HEADER: &str = "x-api-credits-remaining";

/// Contact fields every account has; a field a fixture sets exists from then on.
const CONTACT_FIELDS: &[&str] = &[
    "id",
    "First_Name",
    "Last_Name",
    "Full_Name",
    "Salutation",
    "Email",
    "Secondary_Email",
    "Email_Opt_Out",
    "Phone",
    "Mobile",
    "Home_Phone",
    "Other_Phone",
    "Asst_Phone",
    "Fax",
    "Title",
    "Department",
    "Account_Name",
    "Owner",
    "Created_Time",
    "Modified_Time",
];
/// Fields `put_contact` takes from its arguments (or computes), never from its JSON.
const SYSTEM_FIELDS: &[&str] = &["id", "Full_Name", "Created_Time", "Modified_Time"];

/// A running fake Zoho CRM account (its base URL is also the OAuth `api_domain`); the server
/// stops when this is dropped.
pub type Zoho = Server<State>;

/// A stored contact. Times are whole seconds, as Zoho keeps them.
struct Contact {
    id: u64,
    fields: Map<String, Value>,
    created: DateTime<Utc>,
    modified: DateTime<Utc>,
}

impl Contact {
    fn value(&self, field: &str) -> Value {
        match field {
            "id" => json!(self.id.to_string()),
            "Created_Time" => json!(zoho_time(self.created)),
            "Modified_Time" => json!(zoho_time(self.modified)),
            "Full_Name" => {
                let parts: Vec<&str> = ["First_Name", "Last_Name"]
                    .iter()
                    .filter_map(|f| self.fields.get(*f).and_then(Value::as_str))
                    .filter(|s| !s.is_empty())
                    .collect();
                if parts.is_empty() {
                    Value::Null
                } else {
                    json!(parts.join(" "))
                }
            }
            _ => self.fields.get(field).cloned().unwrap_or(Value::Null),
        }
    }

    /// The API representation: `id` plus the requested fields (null when unset).
    fn to_json(&self, fields: &[String]) -> Value {
        let mut out = Map::new();
        out.insert("id".into(), self.value("id"));
        for field in fields {
            out.insert(field.clone(), self.value(field));
        }
        Value::Object(out)
    }

    /// The contact's position under `sort_by`, ascending; the id breaks ties.
    fn key(&self, sort_by: SortBy) -> Key {
        let value = match sort_by {
            SortBy::Id => i128::from(self.id),
            SortBy::CreatedTime => i128::from(self.created.timestamp()),
            SortBy::ModifiedTime => i128::from(self.modified.timestamp()),
        };
        (value, self.id)
    }
}

type Key = (i128, u64);

fn account_zone() -> FixedOffset {
    FixedOffset::east_opt(ACCOUNT_OFFSET_SECONDS).expect("+05:30 is a valid offset")
}

/// Zoho's timestamp format: seconds and the account's offset, e.g. `2024-05-02T10:00:00+05:30`.
fn zoho_time(at: DateTime<Utc>) -> String {
    at.with_timezone(&account_zone())
        .format("%Y-%m-%dT%H:%M:%S%:z")
        .to_string()
}

/// API credits: `remaining` of `total` when a limit is set.
struct Credits {
    total: u32,
    remaining: u32,
}

/// The account's data, credits and scripted failures.
pub struct State {
    url: String,
    /// The access tokens currently accepted.
    tokens: Vec<String>,
    first_token: String,
    refreshes: u64,
    oauth: Option<OAuthClient>,
    contacts: BTreeMap<u64, Contact>,
    /// Fields some fixture set that are not in `CONTACT_FIELDS`.
    custom_fields: Vec<String>,
    credits: Option<Credits>,
    faults: Faults,
}

#[allow(dead_code)] // The fake's whole test API; each test uses only part of it.
impl Zoho {
    /// Starts a fake account that accepts `Authorization: Zoho-oauthtoken <access_token>`.
    pub async fn start(access_token: &str) -> Zoho {
        Server::serve(|url| State {
            url: url.to_owned(),
            tokens: vec![access_token.to_owned()],
            first_token: access_token.to_owned(),
            refreshes: 0,
            oauth: None,
            contacts: BTreeMap::new(),
            custom_fields: Vec::new(),
            credits: None,
            faults: Faults::default(),
        })
        .await
    }

    /// Inserts or replaces contact `id` (returned as a string of digits). `fields` holds the
    /// other fields by API name (`First_Name`, `Mobile`, …; any other name becomes a custom
    /// field); `Full_Name` is computed and the times are truncated to whole seconds.
    pub fn put_contact(
        &self,
        id: u64,
        fields: Value,
        created: DateTime<Utc>,
        modified: DateTime<Utc>,
    ) {
        let fields = fields_object("Zoho", fields);
        let mut state = self.state();
        for name in fields.keys() {
            assert!(
                !SYSTEM_FIELDS.contains(&name.as_str()),
                "{name} comes from put_contact's arguments, not its fields"
            );
            if !CONTACT_FIELDS.contains(&name.as_str()) && !state.custom_fields.contains(name) {
                state.custom_fields.push(name.clone());
            }
        }
        let contact = Contact {
            id,
            fields,
            created: whole_seconds(created),
            modified: whole_seconds(modified),
        };
        state.contacts.insert(id, contact);
    }

    /// Deletes contact `id`: it leaves every listing (Zoho lists deletions elsewhere).
    pub fn delete_contact(&self, id: u64) {
        let removed = self.state().contacts.remove(&id);
        assert!(removed.is_some(), "delete_contact: no contact with id {id}");
    }

    /// Leaves `n` API credits: data requests beyond them answer 429 `TOO_MANY_REQUESTS` without
    /// `Retry-After`; once half are used, answers carry `X-API-CREDITS-REMAINING`. `None` lifts
    /// the limit.
    pub fn set_limit(&self, n: Option<u32>) {
        self.state().credits = n.map(|n| Credits {
            total: n,
            remaining: n,
        });
    }

    /// Accepts refreshes from this client and refresh token from now on.
    pub fn configure_oauth(&self, client_id: &str, client_secret: &str, refresh_token: &str) {
        self.state().oauth = Some(OAuthClient::new(client_id, client_secret, refresh_token));
    }

    /// Invalidates every access token issued so far: data requests answer 401 `INVALID_TOKEN`
    /// until a refresh issues a new one.
    pub fn expire_token(&self) {
        self.state().tokens.clear();
    }

    /// The access token the most recent refresh issued (the starting token before any).
    pub fn access_token(&self) -> String {
        let state = self.state();
        match state.refreshes {
            0 => state.first_token.clone(),
            n => issued_token(&state.first_token, n),
        }
    }
}

/// The token the `n`th refresh issues.
fn issued_token(first: &str, n: u64) -> String {
    format!("{first}.refreshed{n}")
}

/// Scripted failures (`fail_next`) hit authenticated requests to known data endpoints, with
/// Zoho's body for the status; token requests are not affected. Form bodies are logged as
/// `Null`.
impl Vendor for State {
    fn respond(&mut self, request: &Incoming<'_>) -> Response {
        let (method, uri, headers) = (request.method, request.uri, request.headers);
        if uri.path() == TOKEN_PATH {
            return self.token(method, uri, headers, request.body);
        }
        self.reply(method, uri, headers)
            .unwrap_or_else(IntoResponse::into_response)
    }

    fn faults(&mut self) -> &mut Faults {
        &mut self.faults
    }
}

/// Zoho's error body.
fn error(status: StatusCode, code: &str, message: &str, details: Value) -> Rejection {
    let body = json!({ "code": code, "details": details, "message": message, "status": "error" });
    Rejection::new(status, body)
}

fn invalid_token() -> Rejection {
    let status = StatusCode::UNAUTHORIZED;
    error(status, "INVALID_TOKEN", "invalid oauth token", json!({}))
}

fn invalid_data(message: &str, details: Value) -> Rejection {
    error(StatusCode::BAD_REQUEST, "INVALID_DATA", message, details)
}

fn invalid_param(name: &str) -> Rejection {
    invalid_data("invalid data", json!({ "param_name": name }))
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum SortBy {
    Id,
    CreatedTime,
    ModifiedTime,
}

impl SortBy {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "id" => Some(Self::Id),
            "Created_Time" => Some(Self::CreatedTime),
            "Modified_Time" => Some(Self::ModifiedTime),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Id => "id",
            Self::CreatedTime => "Created_Time",
            Self::ModifiedTime => "Modified_Time",
        }
    }
}

/// What a listing is over: the change filter and the order. A `page_token` carries it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Listing {
    /// `If-Modified-Since` as unix seconds.
    since: Option<i64>,
    sort_by: SortBy,
    descending: bool,
}

impl Listing {
    /// The listing a request asks for: `sort_by` (default `id`), `sort_order` (default `desc`)
    /// and the `If-Modified-Since` header.
    fn parse(
        sort_by: Option<&str>,
        sort_order: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<Self, Rejection> {
        let sort_by = match sort_by {
            None => SortBy::Id,
            Some(text) => SortBy::parse(text).ok_or_else(|| invalid_param("sort_by"))?,
        };
        let descending = match sort_order {
            None | Some("desc") => true,
            Some("asc") => false,
            Some(_) => return Err(invalid_param("sort_order")),
        };
        let since = match headers.get(header::IF_MODIFIED_SINCE) {
            None => None,
            Some(value) => {
                let since = value.to_str().ok().and_then(parse_if_modified_since);
                let details = json!({ "header_name": "If-Modified-Since" });
                Some(since.ok_or_else(|| invalid_data("invalid data", details))?)
            }
        };
        Ok(Self {
            since,
            sort_by,
            descending,
        })
    }

    fn keeps(&self, contact: &Contact) -> bool {
        self.since
            .is_none_or(|since| contact.modified.timestamp() > since)
    }

    /// Whether `key` comes after `after` in this listing's order.
    fn is_after(&self, key: Key, after: Key) -> bool {
        if self.descending {
            key < after
        } else {
            key > after
        }
    }
}

/// A `page_token`: the listing, the page it leads to and the last key served.
struct PageToken {
    listing: Listing,
    page: usize,
    after: Key,
}

impl PageToken {
    /// `zoho|<since or ->|<sort_by>|<asc|desc>|<page>|<value>|<id>`, base64url.
    fn encode(&self) -> String {
        let since = self
            .listing
            .since
            .map_or_else(|| "-".to_owned(), |s| s.to_string());
        let order = if self.listing.descending {
            "desc"
        } else {
            "asc"
        };
        let text = format!(
            "zoho|{since}|{}|{order}|{}|{}|{}",
            self.listing.sort_by.name(),
            self.page,
            self.after.0,
            self.after.1
        );
        base64_encode(text.as_bytes())
    }

    /// The token a request sent, which must continue the listing the request asks for.
    fn resume(token: &str, listing: Listing) -> Result<Self, Rejection> {
        let token = Self::decode(token).ok_or_else(|| invalid_param("page_token"))?;
        if token.listing != listing {
            let message = "the page_token belongs to another sort order or If-Modified-Since";
            return Err(invalid_data(message, json!({ "param_name": "page_token" })));
        }
        Ok(token)
    }

    fn decode(token: &str) -> Option<Self> {
        let text = String::from_utf8(base64_decode(token)?).ok()?;
        let parts: Vec<&str> = text.split('|').collect();
        let ["zoho", since, sort_by, order, page, value, id] = parts.as_slice() else {
            return None;
        };
        let since = match *since {
            "-" => None,
            s => Some(s.parse().ok()?),
        };
        let descending = match *order {
            "asc" => false,
            "desc" => true,
            _ => return None,
        };
        let listing = Listing {
            since,
            sort_by: SortBy::parse(sort_by)?,
            descending,
        };
        Some(Self {
            listing,
            page: page.parse().ok()?,
            after: (value.parse().ok()?, id.parse().ok()?),
        })
    }
}

/// Parses `If-Modified-Since` as Zoho documents it: `YYYY-MM-DDThh:mm:ss±hh:mm`, nothing else.
fn parse_if_modified_since(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    if bytes.len() != 25 || !matches!(bytes[19], b'+' | b'-') {
        return None;
    }
    DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%:z")
        .ok()
        .map(|t| t.timestamp())
}

const LIST_PARAMETERS: &[&str] = &[
    "fields",
    "per_page",
    "page",
    "page_token",
    "sort_by",
    "sort_order",
];

impl State {
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return false;
        };
        let Some((scheme, token)) = value.to_str().ok().and_then(|v| v.split_once(' ')) else {
            return false;
        };
        scheme.eq_ignore_ascii_case("Zoho-oauthtoken") && self.tokens.iter().any(|t| t == token)
    }

    /// Zoho's answer to an injected fault.
    fn fault(status: StatusCode, retry_after: Option<String>) -> Rejection {
        let mut rejection = match status {
            StatusCode::UNAUTHORIZED => invalid_token(),
            StatusCode::TOO_MANY_REQUESTS => too_many_requests(),
            StatusCode::INTERNAL_SERVER_ERROR => {
                error(status, "INTERNAL_ERROR", "Internal Server Error", json!({}))
            }
            _ => {
                let reason = status.canonical_reason().unwrap_or("error");
                let code = reason.to_uppercase().replace([' ', '-'], "_");
                error(status, &code, reason, json!({}))
            }
        };
        rejection.retry_after = retry_after;
        rejection
    }

    fn reply(
        &mut self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Result<Response, Rejection> {
        if !self.authorized(headers) {
            return Err(invalid_token());
        }
        let path = uri.path();
        if path != CONTACTS_PATH {
            return Err(match path.strip_prefix(MODULE_PREFIX) {
                Some(module) if !module.is_empty() && !module.contains('/') => error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_MODULE",
                    "the module name given seems to be invalid",
                    json!({ "resource_path_index": 0 }),
                ),
                _ => error(
                    StatusCode::NOT_FOUND,
                    "INVALID_URL_PATTERN",
                    "Please check if the URL trying to access is a correct one",
                    json!({}),
                ),
            });
        }
        if method != Method::GET {
            return Err(error(
                StatusCode::METHOD_NOT_ALLOWED,
                "INVALID_REQUEST_METHOD",
                "The http request method type is not a valid one",
                json!({}),
            ));
        }
        if let Some((status, retry_after)) = self.faults.take() {
            return Err(Self::fault(status, retry_after));
        }
        let remaining = match &mut self.credits {
            Some(credits) if credits.remaining == 0 => return Err(too_many_requests()),
            Some(credits) => {
                credits.remaining -= 1;
                (credits.remaining <= credits.total / 2).then_some(credits.remaining)
            }
            None => None,
        };
        let mut response = self.list(uri, headers)?;
        if let Some(remaining) = remaining {
            let value = HeaderValue::from(remaining);
            response.headers_mut().insert(CREDITS_HEADER, value);
        }
        Ok(response)
    }

    /// Whether Contacts has a field of this API name (names are case-sensitive).
    fn has_field(&self, name: &str) -> bool {
        CONTACT_FIELDS.contains(&name) || self.custom_fields.iter().any(|f| f == name)
    }

    /// `GET /crm/v8/Contacts`.
    fn list(&mut self, uri: &Uri, headers: &HeaderMap) -> Result<Response, Rejection> {
        let params = params(uri)?;
        let param = |name: &str| params.get(name).map(String::as_str);
        let fields = self.fields(param("fields"))?;
        let per_page = per_page(param("per_page"))?;
        let listing = Listing::parse(param("sort_by"), param("sort_order"), headers)?;
        let mut listed: Vec<&Contact> = self
            .contacts
            .values()
            .filter(|c| listing.keeps(c))
            .collect();
        listed.sort_by_key(|c| c.key(listing.sort_by));
        if listing.descending {
            listed.reverse();
        }
        let (page, start) = match (param("page"), param("page_token")) {
            (Some(_), Some(_)) => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_REQUEST",
                    "page and page_token cannot be used together",
                    json!({ "param_names": ["page", "page_token"] }),
                ));
            }
            (_, Some(token)) => {
                let token = PageToken::resume(token, listing)?;
                let sort_by = listing.sort_by;
                let start =
                    listed.partition_point(|c| !listing.is_after(c.key(sort_by), token.after));
                (token.page, start)
            }
            (page, None) => {
                let page = page_number(page, per_page)?;
                (page, (page - 1) * per_page)
            }
        };
        let start = start.min(listed.len());
        let end = start.saturating_add(per_page).min(listed.len());
        let Some(last) = listed[start..end].last() else {
            // Zoho answers an empty listing with no body: 304 to a conditional request, else 204.
            let status = if listing.since.is_some() {
                StatusCode::NOT_MODIFIED
            } else {
                StatusCode::NO_CONTENT
            };
            return Ok(status.into_response());
        };
        let more = end < listed.len();
        let (next_token, expiry) = if more {
            let token = PageToken {
                listing,
                page: page + 1,
                after: last.key(listing.sort_by),
            };
            let expiry = zoho_time(Utc::now() + PAGE_TOKEN_VALIDITY);
            (json!(token.encode()), json!(expiry))
        } else {
            (Value::Null, Value::Null)
        };
        let data: Vec<Value> = listed[start..end]
            .iter()
            .map(|c| c.to_json(&fields))
            .collect();
        if let Some(status) = self.faults.take_poisoned(&data, "id") {
            return Err(Self::fault(status, None));
        }
        let body = json!({
            "data": data,
            "info": {
                "per_page": per_page,
                "count": data.len(),
                "page": page,
                "sort_by": listing.sort_by.name(),
                "sort_order": if listing.descending { "desc" } else { "asc" },
                "more_records": more,
                "next_page_token": next_token,
                "previous_page_token": null,
                "page_token_expiry": expiry,
            },
        });
        Ok(axum::Json(body).into_response())
    }

    /// The mandatory `fields` parameter: at most 50 known API names, no repeats.
    fn fields(&self, param: Option<&str>) -> Result<Vec<String>, Rejection> {
        let Some(text) = param else {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "REQUIRED_PARAM_MISSING",
                "One of the expected parameter is missing",
                json!({ "param_name": "fields" }),
            ));
        };
        let mut fields: Vec<String> = Vec::new();
        for name in text.split(',').map(str::trim) {
            if !self.has_field(name) {
                return Err(invalid_data("invalid data", json!({ "api_name": name })));
            }
            if !fields.iter().any(|f| f == name) {
                fields.push(name.to_owned());
            }
        }
        if fields.len() > MAX_FIELDS {
            let details = json!({ "param_name": "fields", "maximum_length": MAX_FIELDS });
            return Err(invalid_data("too many fields", details));
        }
        Ok(fields)
    }

    /// `POST /oauth/v2/token?grant_type=refresh_token&…` (a form body is read too). Zoho answers
    /// a refused refresh with 200 and `{"error": …}`, which is what the fake does.
    fn token(&mut self, method: &Method, uri: &Uri, headers: &HeaderMap, body: &Bytes) -> Response {
        let refused = |code: &str| axum::Json(json!({ "error": code })).into_response();
        if method != Method::POST {
            let body = axum::Json(json!({ "error": "invalid_request" }));
            return (StatusCode::METHOD_NOT_ALLOWED, body).into_response();
        }
        let Ok(Query(mut pairs)) = Query::<Vec<(String, String)>>::try_from_uri(uri) else {
            return refused("invalid_request");
        };
        let is_form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                v.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        if is_form {
            let Some(form) = form_pairs(body) else {
                return refused("invalid_request");
            };
            pairs.extend(form);
        }
        let mut params = BTreeMap::new();
        for (name, value) in pairs {
            if params.insert(name, value).is_some() {
                return refused("invalid_request");
            }
        }
        let param = |name: &str| params.get(name).map(String::as_str);
        if param("grant_type") != Some("refresh_token") {
            return refused("unsupported_grant_type");
        }
        let Some(client) = self.oauth.as_ref().filter(|c| {
            param("client_id") == Some(c.client_id.as_str())
                && param("client_secret") == Some(c.client_secret.as_str())
        }) else {
            return refused("invalid_client");
        };
        if param("refresh_token") != Some(client.refresh_token.as_str()) {
            return refused("invalid_code");
        }
        self.refreshes += 1;
        let token = issued_token(&self.first_token, self.refreshes);
        self.tokens.push(token.clone());
        axum::Json(json!({
            "access_token": token,
            "api_domain": self.url,
            "token_type": "Bearer",
            "expires_in": ACCESS_TOKEN_SECONDS,
        }))
        .into_response()
    }
}

/// `per_page`: 1..=200, default 200.
fn per_page(param: Option<&str>) -> Result<usize, Rejection> {
    match param {
        None => Ok(MAX_PER_PAGE),
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PER_PAGE).contains(n))
            .ok_or_else(|| invalid_param("per_page")),
    }
}

/// `page` (default 1), refused with `LIMIT_REACHED` when it ends beyond the 2,000th record.
fn page_number(param: Option<&str>, per_page: usize) -> Result<usize, Rejection> {
    let page = match param {
        None => 1,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| invalid_param("page"))?,
    };
    if page.saturating_mul(per_page) > PAGE_RECORD_LIMIT {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "LIMIT_REACHED",
            "maximum limit reached: page reaches only the first 2000 records, use page_token \
             beyond them",
            json!({ "limit": PAGE_RECORD_LIMIT }),
        ));
    }
    Ok(page)
}

fn too_many_requests() -> Rejection {
    error(
        StatusCode::TOO_MANY_REQUESTS,
        "TOO_MANY_REQUESTS",
        "The number of API credits for the last 24 hours has been exhausted",
        json!({}),
    )
}

/// The query parameters of a listing: known names only, each at most once; empty values count
/// as absent.
fn params(uri: &Uri) -> Result<BTreeMap<String, String>, Rejection> {
    let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(uri).map_err(|_| {
        error(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "invalid query string",
            json!({}),
        )
    })?;
    let mut params = BTreeMap::new();
    let mut seen = Vec::new();
    for (name, value) in pairs {
        if !LIST_PARAMETERS.contains(&name.as_str()) || seen.contains(&name) {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST",
                "unknown or repeated parameter",
                json!({ "param_name": name }),
            ));
        }
        seen.push(name.clone());
        if !value.is_empty() {
            params.insert(name, value);
        }
    }
    Ok(params)
}
