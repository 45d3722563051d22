//! A fake Salesforce org: REST `query` and `queryAll` over Contact and Lead with just enough SOQL
//! for an incremental poll, batches continued through a relative `nextRecordsUrl`, the daily API
//! request allocation reported in `Sforce-Limit-Info`, the OAuth refresh-token flow and
//! Salesforce's array-shaped error bodies (`crm-sources.md` §2.3).
//!
//! The SOQL understood is `SELECT <fields> FROM Contact|Lead [WHERE <cond> [AND <cond>]…]
//! [ORDER BY <field> [ASC|DESC][, …]] [LIMIT n]`, where a condition compares `SystemModstamp`,
//! `LastModifiedDate` or `CreatedDate` with an unquoted datetime literal and ordering is by those
//! fields or `Id`. Whatever else real SOQL allows is refused with `MALFORMED_QUERY`, so a poller
//! cannot come to depend on something the fake never checked.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use axum::body::Bytes;
use axum::extract::Query;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::{
    Faults, Incoming, OAuthClient, Rejection, Server, Vendor, fields_object, form_pairs,
    whole_seconds,
};

const API_PREFIX: &str = "/services/data/v61.0";
const TOKEN_PATH: &str = "/services/oauth2/token";
/// Records per batch unless lowered; also the most `Sforce-Query-Options` may ask for.
const MAX_BATCH_SIZE: usize = 2_000;
/// The least `Sforce-Query-Options: batchSize=` may ask for; smaller requests are raised to it.
const MIN_BATCH_SIZE: usize = 200;
/// An Enterprise org's daily API request allocation.
const DEFAULT_DAILY_LIMIT: u64 = 100_000;
const LIMIT_INFO_HEADER: &str = "sforce-limit-info";
const QUERY_OPTIONS_HEADER: &str = "sforce-query-options";

const CONTACT_FIELDS: &[&str] = &[
    "Id",
    "Name",
    "FirstName",
    "LastName",
    "Salutation",
    "Email",
    "Phone",
    "MobilePhone",
    "HomePhone",
    "OtherPhone",
    "AssistantPhone",
    "Fax",
    "Title",
    "Department",
    "AccountId",
    "OwnerId",
    "DoNotCall",
    "HasOptedOutOfEmail",
    "CreatedDate",
    "LastModifiedDate",
    "SystemModstamp",
    "IsDeleted",
];
/// Leads have no `HomePhone`, `OtherPhone` or `AssistantPhone`.
const LEAD_FIELDS: &[&str] = &[
    "Id",
    "Name",
    "FirstName",
    "LastName",
    "Salutation",
    "Email",
    "Phone",
    "MobilePhone",
    "Fax",
    "Title",
    "Company",
    "Status",
    "OwnerId",
    "DoNotCall",
    "HasOptedOutOfEmail",
    "CreatedDate",
    "LastModifiedDate",
    "SystemModstamp",
    "IsDeleted",
];
/// Fields `put` takes from its arguments (or computes), never from its JSON.
const SYSTEM_FIELDS: &[&str] = &["Id", "Name", "CreatedDate", "SystemModstamp", "IsDeleted"];
/// The fields a `WHERE` condition or an `ORDER BY` may use.
const DATE_FIELDS: &[&str] = &["CreatedDate", "LastModifiedDate", "SystemModstamp"];

/// A running fake Salesforce org (its base URL is also the OAuth `instance_url`); the server
/// stops when this is dropped.
pub type Salesforce = Server<State>;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum SObject {
    Contact,
    Lead,
}

impl SObject {
    /// Object names are case-insensitive in SOQL, as in Salesforce.
    fn parse(name: &str) -> Option<Self> {
        if name.eq_ignore_ascii_case("Contact") {
            Some(Self::Contact)
        } else if name.eq_ignore_ascii_case("Lead") {
            Some(Self::Lead)
        } else {
            None
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Contact => "Contact",
            Self::Lead => "Lead",
        }
    }

    /// The first three characters of every id of this object.
    fn key_prefix(self) -> &'static str {
        match self {
            Self::Contact => "003",
            Self::Lead => "00Q",
        }
    }

    fn standard_fields(self) -> &'static [&'static str] {
        match self {
            Self::Contact => CONTACT_FIELDS,
            Self::Lead => LEAD_FIELDS,
        }
    }
}

/// A stored record. Datetimes are whole seconds, as Salesforce stores them.
struct Record {
    object: SObject,
    id: String,
    /// Every field the fixture set except the system ones and `LastModifiedDate`.
    fields: Map<String, Value>,
    created: DateTime<Utc>,
    last_modified: DateTime<Utc>,
    modstamp: DateTime<Utc>,
    deleted: bool,
}

impl Record {
    /// The value of `field`, a canonical field name of this record's object.
    fn value(&self, field: &str) -> Value {
        match field {
            "Id" => json!(self.id),
            "Name" => self.name(),
            "CreatedDate" => json!(sf_time(self.created)),
            "LastModifiedDate" => json!(sf_time(self.last_modified)),
            "SystemModstamp" => json!(sf_time(self.modstamp)),
            "IsDeleted" => json!(self.deleted),
            _ => self.fields.get(field).cloned().unwrap_or(Value::Null),
        }
    }

    /// The compound `Name`: first and last name joined by a space, null when both are empty.
    fn name(&self) -> Value {
        let parts: Vec<&str> = ["FirstName", "LastName"]
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

    fn date(&self, field: &str) -> DateTime<Utc> {
        match field {
            "CreatedDate" => self.created,
            "LastModifiedDate" => self.last_modified,
            "SystemModstamp" => self.modstamp,
            other => unreachable!("{other} is not a date field"),
        }
    }

    /// The API representation: `attributes` plus exactly the selected fields.
    fn to_json(&self, fields: &[String]) -> Value {
        let mut out = Map::new();
        out.insert(
            "attributes".into(),
            json!({
                "type": self.object.name(),
                "url": format!("{API_PREFIX}/sobjects/{}/{}", self.object.name(), self.id),
            }),
        );
        for field in fields {
            out.insert(field.clone(), self.value(field));
        }
        Value::Object(out)
    }
}

/// Salesforce's datetime format: UTC with milliseconds and a `+0000` offset.
fn sf_time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.3f%z").to_string()
}

/// An open query: the rows it matched when it ran, served `batch` at a time.
struct Cursor {
    records: Vec<Value>,
    batch: usize,
}

/// The org's data, open queries, API budget and scripted failures.
pub struct State {
    url: String,
    /// The access tokens currently accepted.
    tokens: Vec<String>,
    first_token: String,
    refreshes: u64,
    oauth: Option<OAuthClient>,
    records: BTreeMap<(SObject, String), Record>,
    /// `__c` fields some fixture set; they exist on their object from then on.
    custom_fields: BTreeSet<(SObject, String)>,
    batch_size: usize,
    cursors: BTreeMap<String, Cursor>,
    locators: u64,
    api_used: u64,
    api_max: u64,
    faults: Faults,
}

#[allow(dead_code)] // The fake's whole test API; each test uses only part of it.
impl Salesforce {
    /// Starts a fake org that accepts `Authorization: Bearer <access_token>`.
    pub async fn start(access_token: &str) -> Salesforce {
        Server::serve(|url| State {
            url: url.to_owned(),
            tokens: vec![access_token.to_owned()],
            first_token: access_token.to_owned(),
            refreshes: 0,
            oauth: None,
            records: BTreeMap::new(),
            custom_fields: BTreeSet::new(),
            batch_size: MAX_BATCH_SIZE,
            cursors: BTreeMap::new(),
            locators: 0,
            api_used: 0,
            api_max: DEFAULT_DAILY_LIMIT,
            faults: Faults::default(),
        })
        .await
    }

    /// A valid 18-character id for the `n`th record of `object` ("Contact" or "Lead").
    pub fn record_id(object: &str, n: u32) -> String {
        let object = SObject::parse(object).expect("record_id takes \"Contact\" or \"Lead\"");
        format!("{}{n:012}AAA", object.key_prefix())
    }

    /// Inserts or replaces (and undeletes) `object` ("Contact" or "Lead") `id`, which must be 15
    /// or 18 alphanumerics starting with the object's key prefix (see [`Salesforce::record_id`]).
    /// `fields` holds the object's other fields by API name; custom fields end in `__c`.
    /// `LastModifiedDate` may be given to back-date it (it never exceeds `modstamp`) and is
    /// `modstamp` otherwise; `Name` is computed. Times are truncated to whole seconds.
    pub fn put(
        &self,
        object: &str,
        id: &str,
        fields: Value,
        created: DateTime<Utc>,
        modstamp: DateTime<Utc>,
    ) {
        let object = SObject::parse(object).expect("put takes \"Contact\" or \"Lead\"");
        check_id(object, id);
        let mut fields = fields_object("Salesforce", fields);
        let modstamp = whole_seconds(modstamp);
        let last_modified = match fields.remove("LastModifiedDate") {
            None | Some(Value::Null) => modstamp,
            Some(Value::String(text)) => {
                let at = DateTime::parse_from_rfc3339(&text)
                    .unwrap_or_else(|_| panic!("LastModifiedDate {text:?} is not RFC 3339"));
                whole_seconds(at.with_timezone(&Utc))
            }
            Some(other) => panic!("LastModifiedDate must be an RFC 3339 string, got {other}"),
        };
        assert!(
            last_modified <= modstamp,
            "LastModifiedDate is never later than SystemModstamp"
        );
        let mut state = self.state();
        for name in fields.keys() {
            assert!(
                !SYSTEM_FIELDS.contains(&name.as_str()),
                "{name} comes from put's arguments, not its fields"
            );
            if name.ends_with("__c") {
                state.custom_fields.insert((object, name.clone()));
            } else {
                assert!(
                    object.standard_fields().contains(&name.as_str()),
                    "{name} is not a {} field (custom fields end in __c)",
                    object.name()
                );
            }
        }
        let record = Record {
            object,
            id: id.to_owned(),
            fields,
            created: whole_seconds(created),
            last_modified,
            modstamp,
            deleted: false,
        };
        state.records.insert((object, id.to_owned()), record);
    }

    /// Moves `object` `id` to the recycle bin at `at`: `IsDeleted` becomes true and both
    /// `SystemModstamp` and `LastModifiedDate` become `at`; only `queryAll` still returns it.
    pub fn delete(&self, object: &str, id: &str, at: DateTime<Utc>) {
        let kind = SObject::parse(object).expect("delete takes \"Contact\" or \"Lead\"");
        let mut state = self.state();
        let record = state
            .records
            .get_mut(&(kind, id.to_owned()))
            .unwrap_or_else(|| panic!("delete: no {object} with id {id}"));
        record.deleted = true;
        record.modstamp = whole_seconds(at);
        record.last_modified = record.modstamp;
    }

    /// Caps every batch at `n` records (default and maximum 2,000); a query's batch size is fixed
    /// when it runs.
    pub fn set_batch_size(&self, n: usize) {
        assert!(
            (1..=MAX_BATCH_SIZE).contains(&n),
            "batch size must be 1..=2000"
        );
        self.state().batch_size = n;
    }

    /// Sets the daily API request allocation (default 100,000): once `max` requests have been
    /// counted, further ones answer 403 `REQUEST_LIMIT_EXCEEDED` and are not counted.
    pub fn set_daily_limit(&self, max: u64) {
        self.state().api_max = max;
    }

    /// The API requests counted against the daily allocation so far.
    pub fn api_used(&self) -> u64 {
        self.state().api_used
    }

    /// Accepts refreshes from this connected app and refresh token from now on.
    pub fn configure_oauth(&self, client_id: &str, client_secret: &str, refresh_token: &str) {
        self.state().oauth = Some(OAuthClient::new(client_id, client_secret, refresh_token));
    }

    /// Invalidates every access token issued so far: API requests answer 401
    /// `INVALID_SESSION_ID` until a refresh issues a new one.
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
    format!("{first}!refreshed{n}")
}

fn check_id(object: SObject, id: &str) {
    assert!(
        matches!(id.len(), 15 | 18) && id.bytes().all(|b| b.is_ascii_alphanumeric()),
        "a Salesforce id is 15 or 18 alphanumerics, got {id:?}"
    );
    assert!(
        id.starts_with(object.key_prefix()),
        "{} ids start with {}, got {id}",
        object.name(),
        object.key_prefix()
    );
}

/// Scripted failures (`fail_next`) hit authenticated API requests to known endpoints, with
/// Salesforce's body for the status; token requests are not affected. Form bodies are logged
/// as `Null`.
impl Vendor for State {
    fn respond(&mut self, request: &Incoming<'_>) -> Response {
        let (method, uri, headers) = (request.method, request.uri, request.headers);
        let route = Route::parse(uri.path());
        if let Some(Route::Token) = route {
            return self.token(method, headers, request.body);
        }
        let mut response = self
            .reply(route, method, uri, headers)
            .unwrap_or_else(IntoResponse::into_response);
        let usage = format!("api-usage={}/{}", self.api_used, self.api_max);
        let usage = HeaderValue::from_str(&usage).expect("digits and a slash");
        response.headers_mut().insert(LIMIT_INFO_HEADER, usage);
        response
    }

    fn faults(&mut self) -> &mut Faults {
        &mut self.faults
    }
}

enum Route {
    Token,
    /// `/query` or, when `all`, `/queryAll`.
    Query {
        all: bool,
    },
    /// A `nextRecordsUrl`: `/query/<locator>-<offset>`.
    More {
        locator: String,
        offset: usize,
    },
}

impl Route {
    fn parse(path: &str) -> Option<Self> {
        if path == TOKEN_PATH {
            return Some(Self::Token);
        }
        match path.strip_prefix(API_PREFIX)? {
            "/query" => Some(Self::Query { all: false }),
            "/queryAll" => Some(Self::Query { all: true }),
            rest => {
                let (locator, offset) = rest.strip_prefix("/query/")?.rsplit_once('-')?;
                let offset = offset.parse().ok()?;
                Some(Self::More {
                    locator: locator.to_owned(),
                    offset,
                })
            }
        }
    }
}

/// Salesforce's REST error body: an array holding one `{message, errorCode}`.
fn error(status: StatusCode, code: &str, message: &str) -> Rejection {
    Rejection::new(status, json!([{ "message": message, "errorCode": code }]))
}

fn malformed(message: &str) -> Rejection {
    error(StatusCode::BAD_REQUEST, "MALFORMED_QUERY", message)
}

/// The OAuth endpoint's error body.
fn oauth_error(code: &str, description: &str) -> Response {
    let body = json!({ "error": code, "error_description": description });
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

impl State {
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return false;
        };
        let Some((scheme, token)) = value.to_str().ok().and_then(|v| v.split_once(' ')) else {
            return false;
        };
        scheme.eq_ignore_ascii_case("bearer") && self.tokens.iter().any(|t| t == token)
    }

    /// Salesforce's answer to an injected fault.
    fn fault(status: StatusCode, retry_after: Option<String>) -> Rejection {
        let (code, message) = match status {
            StatusCode::UNAUTHORIZED => ("INVALID_SESSION_ID", "Session expired or invalid"),
            StatusCode::FORBIDDEN => ("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."),
            StatusCode::SERVICE_UNAVAILABLE => ("SERVER_UNAVAILABLE", "Server unavailable"),
            _ => (
                "UNKNOWN_EXCEPTION",
                status.canonical_reason().unwrap_or("error"),
            ),
        };
        let mut rejection = error(status, code, message);
        rejection.retry_after = retry_after;
        rejection
    }

    fn reply(
        &mut self,
        route: Option<Route>,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Result<Response, Rejection> {
        if !self.authorized(headers) {
            let status = StatusCode::UNAUTHORIZED;
            return Err(error(
                status,
                "INVALID_SESSION_ID",
                "Session expired or invalid",
            ));
        }
        let Some(route) = route else {
            let message = "The requested resource does not exist";
            return Err(error(StatusCode::NOT_FOUND, "NOT_FOUND", message));
        };
        if method != Method::GET {
            let message = format!("HTTP Method '{method}' not allowed. Allowed are GET,HEAD");
            return Err(error(
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                &message,
            ));
        }
        if let Some((status, retry_after)) = self.faults.take() {
            return Err(Self::fault(status, retry_after));
        }
        if self.api_used >= self.api_max {
            let message = "TotalRequests Limit exceeded.";
            return Err(error(
                StatusCode::FORBIDDEN,
                "REQUEST_LIMIT_EXCEEDED",
                message,
            ));
        }
        self.api_used += 1;
        let body = match route {
            Route::Query { all } => self.query(all, uri, headers)?,
            Route::More { locator, offset } => self.more(&locator, offset, uri)?,
            Route::Token => unreachable!("token requests are answered by State::token"),
        };
        let page = body["records"].as_array().map_or(&[][..], Vec::as_slice);
        if let Some(status) = self.faults.take_poisoned(page, "Id") {
            return Err(Self::fault(status, None));
        }
        Ok(axum::Json(body).into_response())
    }

    /// The batch size for a new query: the org's, lowered by `Sforce-Query-Options` when it asks
    /// for less. Salesforce does not guarantee the size asked for, so values outside 200..=2000 are
    /// clamped into it and a header the fake cannot read is ignored.
    fn batch_for(&self, headers: &HeaderMap) -> usize {
        let asked = headers
            .get(QUERY_OPTIONS_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().split_once('='))
            .filter(|(name, _)| name.trim().eq_ignore_ascii_case("batchSize"))
            .and_then(|(_, value)| value.trim().parse::<usize>().ok());
        match asked {
            Some(n) => n.clamp(MIN_BATCH_SIZE, MAX_BATCH_SIZE).min(self.batch_size),
            None => self.batch_size,
        }
    }

    /// The canonical name of `field` on `object`, matched case-insensitively.
    fn field(&self, object: SObject, field: &str) -> Option<String> {
        let standard = object
            .standard_fields()
            .iter()
            .find(|f| f.eq_ignore_ascii_case(field))
            .map(|f| (*f).to_owned());
        standard.or_else(|| {
            self.custom_fields
                .iter()
                .find(|(o, f)| *o == object && f.eq_ignore_ascii_case(field))
                .map(|(_, f)| f.clone())
        })
    }

    /// `GET /query?q=` (`all`: `/queryAll`): runs the query and answers its first batch.
    fn query(&mut self, all: bool, uri: &Uri, headers: &HeaderMap) -> Result<Value, Rejection> {
        let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(uri)
            .map_err(|_| malformed("invalid query string"))?;
        let mut text = None;
        for (name, value) in pairs {
            if name != "q" {
                return Err(malformed(&format!("unexpected parameter: {name}")));
            }
            if text.replace(value).is_some() {
                return Err(malformed("the q parameter was given twice"));
            }
        }
        let text = text
            .filter(|q| !q.trim().is_empty())
            .ok_or_else(|| malformed("A query string has to be specified"))?;
        let soql = Soql::parse(&text, |object, field| self.field(object, field))
            .map_err(SoqlError::into_rejection)?;
        let mut rows: Vec<&Record> = self
            .records
            .values()
            .filter(|r| r.object == soql.object && (all || !r.deleted))
            .filter(|r| soql.conditions.iter().all(|c| c.matches(r)))
            .collect();
        rows.sort_by(|a, b| soql.compare(a, b).then_with(|| a.id.cmp(&b.id)));
        if let Some(limit) = soql.limit {
            rows.truncate(limit);
        }
        let records: Vec<Value> = rows.iter().map(|r| r.to_json(&soql.fields)).collect();
        let cursor = Cursor {
            records,
            batch: self.batch_for(headers),
        };
        self.locators += 1;
        let locator = format!("01gFA{:013}", self.locators);
        let answer = batch_answer(&locator, &cursor, 0);
        if answer["done"] == json!(false) {
            self.cursors.insert(locator, cursor);
        }
        Ok(answer)
    }

    /// `GET <nextRecordsUrl>`: the batch of an open query starting at `offset`.
    fn more(&self, locator: &str, offset: usize, uri: &Uri) -> Result<Value, Rejection> {
        if uri.query().is_some() {
            return Err(malformed("a nextRecordsUrl takes no parameters"));
        }
        match self.cursors.get(locator) {
            Some(cursor) if (1..cursor.records.len()).contains(&offset) => {
                Ok(batch_answer(locator, cursor, offset))
            }
            _ => Err(error(
                StatusCode::BAD_REQUEST,
                "INVALID_QUERY_LOCATOR",
                "invalid query locator",
            )),
        }
    }

    /// `POST /services/oauth2/token` with a form-encoded `grant_type=refresh_token` request.
    fn token(&mut self, method: &Method, headers: &HeaderMap, body: &Bytes) -> Response {
        if method != Method::POST {
            return oauth_error("invalid_request", "must use HTTP POST");
        }
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let media_type = content_type.split(';').next().unwrap_or("").trim();
        if !media_type.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            return oauth_error("invalid_request", "the body must be form-encoded");
        }
        let Some(pairs) = form_pairs(body) else {
            return oauth_error("invalid_request", "the body must be form-encoded");
        };
        let mut form = BTreeMap::new();
        for (name, value) in pairs {
            if form.insert(name.clone(), value).is_some() {
                return oauth_error("invalid_request", &format!("duplicate parameter: {name}"));
            }
        }
        let param = |name: &str| form.get(name).map(String::as_str);
        if param("grant_type") != Some("refresh_token") {
            return oauth_error("unsupported_grant_type", "grant type not supported");
        }
        let Some(client) = self
            .oauth
            .as_ref()
            .filter(|c| param("client_id") == Some(c.client_id.as_str()))
        else {
            return oauth_error("invalid_client_id", "client identifier invalid");
        };
        if param("client_secret") != Some(client.client_secret.as_str()) {
            return oauth_error("invalid_client", "invalid client credentials");
        }
        if param("refresh_token") != Some(client.refresh_token.as_str()) {
            return oauth_error("invalid_grant", "expired access/refresh token");
        }
        self.refreshes += 1;
        let token = issued_token(&self.first_token, self.refreshes);
        self.tokens.push(token.clone());
        let body = json!({
            "access_token": token,
            "instance_url": self.url,
            "id": format!("{}/id/00DFA0000000001AAA/005FA0000000001AAA", self.url),
            "token_type": "Bearer",
            "issued_at": Utc::now().timestamp_millis().to_string(),
            "signature": super::base64_encode(format!("signature-{}", self.refreshes).as_bytes()),
        });
        axum::Json(body).into_response()
    }
}

/// The answer for the batch of `cursor` starting at `offset`.
fn batch_answer(locator: &str, cursor: &Cursor, offset: usize) -> Value {
    let total = cursor.records.len();
    let end = offset.saturating_add(cursor.batch).min(total);
    let mut answer = json!({
        "totalSize": total,
        "done": end == total,
        "records": cursor.records[offset..end],
    });
    if end < total {
        answer["nextRecordsUrl"] = json!(format!("{API_PREFIX}/query/{locator}-{end}"));
    }
    answer
}

/// Why a query was refused.
enum SoqlError {
    Malformed(String),
    InvalidField(String),
    InvalidType(String),
}

impl SoqlError {
    fn into_rejection(self) -> Rejection {
        let (code, message) = match self {
            Self::Malformed(message) => ("MALFORMED_QUERY", message),
            Self::InvalidField(message) => ("INVALID_FIELD", message),
            Self::InvalidType(message) => ("INVALID_TYPE", message),
        };
        error(StatusCode::BAD_REQUEST, code, &message)
    }
}

fn unexpected<T>(token: Option<&Token>) -> Result<T, SoqlError> {
    Err(SoqlError::Malformed(match token {
        Some(token) => format!("unexpected token: '{}'", token.text()),
        None => "unexpected end of query".to_owned(),
    }))
}

#[derive(Clone, PartialEq, Debug)]
enum Token {
    Word(String),
    Quoted(String),
    Operator(String),
    Punct(char),
}

impl Token {
    fn text(&self) -> String {
        match self {
            Self::Word(s) | Self::Operator(s) => s.clone(),
            Self::Quoted(s) => format!("'{s}'"),
            Self::Punct(c) => c.to_string(),
        }
    }

    fn is_keyword(&self, keyword: &str) -> bool {
        matches!(self, Self::Word(w) if w.eq_ignore_ascii_case(keyword))
    }
}

/// Splits SOQL into words, quoted strings, comparison operators and `,()`.
fn tokenize(text: &str) -> Result<Vec<Token>, SoqlError> {
    const PUNCT: &[char] = &[',', '(', ')'];
    const OPERATOR: &[char] = &['<', '>', '=', '!'];
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if PUNCT.contains(&c) {
            chars.next();
            tokens.push(Token::Punct(c));
        } else if c == '\'' {
            chars.next();
            let mut quoted = String::new();
            loop {
                match chars.next() {
                    Some('\\') => quoted.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => quoted.push(c),
                    None => return Err(SoqlError::Malformed("unterminated string".into())),
                }
            }
            tokens.push(Token::Quoted(quoted));
        } else if OPERATOR.contains(&c) {
            let mut op = String::new();
            while let Some(c) = chars.next_if(|c| OPERATOR.contains(c)) {
                op.push(c);
            }
            tokens.push(Token::Operator(op));
        } else {
            let mut word = String::new();
            while let Some(c) = chars.next_if(|c| {
                !c.is_whitespace() && !PUNCT.contains(c) && !OPERATOR.contains(c) && *c != '\''
            }) {
                word.push(c);
            }
            tokens.push(Token::Word(word));
        }
    }
    Ok(tokens)
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

/// `<date field> <op> <datetime>`.
struct Condition {
    field: String,
    op: Op,
    value: DateTime<Utc>,
}

impl Condition {
    fn matches(&self, record: &Record) -> bool {
        let order = record.date(&self.field).cmp(&self.value);
        match self.op {
            Op::Lt => order.is_lt(),
            Op::Le => order.is_le(),
            Op::Gt => order.is_gt(),
            Op::Ge => order.is_ge(),
            Op::Eq => order.is_eq(),
            Op::Ne => order.is_ne(),
        }
    }
}

/// A parsed query.
struct Soql {
    object: SObject,
    fields: Vec<String>,
    conditions: Vec<Condition>,
    /// `(field, descending)`, each a date field or `Id`.
    order: Vec<(String, bool)>,
    limit: Option<usize>,
}

/// A cursor over the tokens of one query.
struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        token
    }

    fn keyword(&mut self, keyword: &str) -> bool {
        let found = self.peek().is_some_and(|t| t.is_keyword(keyword));
        if found {
            self.at += 1;
        }
        found
    }

    fn expect_keyword(&mut self, keyword: &str) -> Result<(), SoqlError> {
        if self.keyword(keyword) {
            Ok(())
        } else {
            unexpected(self.peek())
        }
    }

    fn punct(&mut self, c: char) -> bool {
        let found = self.peek() == Some(&Token::Punct(c));
        if found {
            self.at += 1;
        }
        found
    }

    /// A field name: letters, digits and `_`, starting with a letter.
    fn identifier(&mut self) -> Result<String, SoqlError> {
        match self.next() {
            Some(Token::Word(word)) if word.contains('.') => Err(SoqlError::InvalidField(format!(
                "Didn't understand relationship in field path {word}: the fake Salesforce has none"
            ))),
            Some(Token::Word(word))
                if word.starts_with(|c: char| c.is_ascii_alphabetic())
                    && word.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
            {
                Ok(word)
            }
            other => unexpected(other.as_ref()),
        }
    }
}

/// Resolves a field name of the queried object to its canonical spelling.
type Resolve<'a> = &'a dyn Fn(&str) -> Result<String, SoqlError>;

impl Parser {
    fn object(&mut self) -> Result<SObject, SoqlError> {
        match self.next() {
            Some(Token::Word(name)) => SObject::parse(&name).ok_or_else(|| {
                SoqlError::InvalidType(format!("sObject type '{name}' is not supported."))
            }),
            other => unexpected(other.as_ref()),
        }
    }

    /// A field the fake can filter or order on: a date field, or `Id` when `id_too`.
    fn date_field(
        &mut self,
        resolve: Resolve<'_>,
        clause: &str,
        id_too: bool,
    ) -> Result<String, SoqlError> {
        let canonical = resolve(&self.identifier()?)?;
        if DATE_FIELDS.contains(&canonical.as_str()) || (id_too && canonical == "Id") {
            Ok(canonical)
        } else {
            Err(SoqlError::Malformed(format!(
                "the fake Salesforce cannot use {canonical} in {clause}"
            )))
        }
    }

    /// `<date field> <op> <unquoted datetime>`.
    fn condition(&mut self, resolve: Resolve<'_>) -> Result<Condition, SoqlError> {
        let field = self.date_field(resolve, "WHERE", false)?;
        let op = match self.next() {
            Some(Token::Operator(op)) => match op.as_str() {
                "<" => Op::Lt,
                "<=" => Op::Le,
                ">" => Op::Gt,
                ">=" => Op::Ge,
                "=" => Op::Eq,
                "!=" => Op::Ne,
                _ => return unexpected(Some(&Token::Operator(op))),
            },
            other => return unexpected(other.as_ref()),
        };
        let value = match self.next() {
            Some(Token::Word(literal)) => parse_datetime(&literal),
            Some(Token::Quoted(_)) => None,
            other => return unexpected(other.as_ref()),
        };
        let value = value.ok_or_else(|| {
            SoqlError::InvalidField(format!(
                "value of filter criterion for field '{field}' must be of type dateTime and \
                 should not be enclosed in quotes"
            ))
        })?;
        Ok(Condition { field, op, value })
    }

    /// `<date field or Id> [ASC|DESC]`, as `(field, descending)`.
    fn order_item(&mut self, resolve: Resolve<'_>) -> Result<(String, bool), SoqlError> {
        let field = self.date_field(resolve, "ORDER BY", true)?;
        let descending = self.keyword("DESC");
        if !descending {
            self.keyword("ASC");
        }
        Ok((field, descending))
    }

    fn integer(&mut self) -> Result<usize, SoqlError> {
        let token = self.next();
        match &token {
            Some(Token::Word(n)) => n.parse().or_else(|_| unexpected(token.as_ref())),
            _ => unexpected(token.as_ref()),
        }
    }
}

fn no_such_column(field: &str, object: SObject) -> SoqlError {
    SoqlError::InvalidField(format!(
        "No such column '{field}' on entity '{}'. If you are attempting to use a custom field, \
         be sure to append the '__c' after the custom field name.",
        object.name()
    ))
}

impl Soql {
    /// Parses `text`; `field(object, name)` gives a field's canonical name if it exists.
    fn parse(
        text: &str,
        field: impl Fn(SObject, &str) -> Option<String>,
    ) -> Result<Self, SoqlError> {
        let mut p = Parser {
            tokens: tokenize(text)?,
            at: 0,
        };
        p.expect_keyword("SELECT")?;
        let mut selected = vec![p.identifier()?];
        while p.punct(',') {
            selected.push(p.identifier()?);
        }
        p.expect_keyword("FROM")?;
        let object = p.object()?;
        let resolve = |name: &str| field(object, name).ok_or_else(|| no_such_column(name, object));
        let mut fields: Vec<String> = Vec::new();
        for name in &selected {
            let canonical = resolve(name)?;
            if fields.contains(&canonical) {
                let message = format!("duplicate field selected: {canonical}");
                return Err(SoqlError::Malformed(message));
            }
            fields.push(canonical);
        }
        let mut conditions = Vec::new();
        if p.keyword("WHERE") {
            conditions.push(p.condition(&resolve)?);
            while p.keyword("AND") {
                conditions.push(p.condition(&resolve)?);
            }
        }
        let mut order = Vec::new();
        if p.keyword("ORDER") {
            p.expect_keyword("BY")?;
            order.push(p.order_item(&resolve)?);
            while p.punct(',') {
                order.push(p.order_item(&resolve)?);
            }
        }
        let limit = if p.keyword("LIMIT") {
            Some(p.integer()?)
        } else {
            None
        };
        if let Some(token) = p.peek() {
            return unexpected(Some(token));
        }
        Ok(Self {
            object,
            fields,
            conditions,
            order,
            limit,
        })
    }

    /// Orders two records by the `ORDER BY` fields; equal when there are none.
    fn compare(&self, a: &Record, b: &Record) -> Ordering {
        self.order
            .iter()
            .map(|(field, descending)| {
                let order = if field == "Id" {
                    a.id.cmp(&b.id)
                } else {
                    a.date(field).cmp(&b.date(field))
                };
                if *descending { order.reverse() } else { order }
            })
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
    }
}

/// A SOQL datetime literal: `YYYY-MM-DDThh:mm:ss[.fff]` then `Z`, `±hh:mm` or `±hhmm`.
fn parse_datetime(text: &str) -> Option<DateTime<Utc>> {
    let (local, offset) = match text.strip_suffix('Z') {
        Some(local) => (local, "+0000".to_owned()),
        None => {
            let (local, offset) = text.split_at(text.rfind(['+', '-'])?);
            let offset = match offset.as_bytes() {
                [_, _, _, b':', _, _] => offset.replace(':', ""),
                [_, _, _, _, _] => offset.to_owned(),
                _ => return None,
            };
            (local, offset)
        }
    };
    if !local.contains('T') || !offset[1..].bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    DateTime::parse_from_str(&format!("{local}{offset}"), "%Y-%m-%dT%H:%M:%S%.f%z")
        .ok()
        .map(|t| t.with_timezone(&Utc))
}
