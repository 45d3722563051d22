//! A fake HubSpot: CRM v3 search over contacts and deals, v4 deal→contact association reads and
//! v3 contact batch reads, with HubSpot's paging (`after` offsets, the 10,000-result cap), request
//! limits, index lag, secondly rate limit and error bodies (`crm-sources.md` §2.1).

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

use super::{Faults, Incoming, RateWindow, Rejection, Server, Vendor, fields_object};

/// Search never pages past this many results: `after` must stay below it.
const MAX_RESULTS: usize = 10_000;
/// Largest search request body, in characters.
const MAX_SEARCH_BODY_CHARS: usize = 3_000;
/// Largest search page.
const MAX_LIMIT: usize = 200;
const DEFAULT_LIMIT: usize = 10;
const MAX_FILTER_GROUPS: usize = 5;
const MAX_FILTERS_PER_GROUP: usize = 6;
const MAX_FILTERS: usize = 18;
/// Inputs accepted by one v3 object batch read.
const MAX_BATCH_READ_INPUTS: usize = 100;
/// Inputs accepted by one v4 association batch read.
const MAX_ASSOCIATION_INPUTS: usize = 1_000;

/// Properties compared as epoch milliseconds.
const DATE_PROPERTIES: [&str; 3] = ["createdate", "lastmodifieddate", "hs_lastmodifieddate"];
const CONTACT_DEFAULTS: &[&str] = &[
    "createdate",
    "email",
    "firstname",
    "hs_object_id",
    "lastmodifieddate",
    "lastname",
];
const DEAL_DEFAULTS: &[&str] = &[
    "dealname",
    "amount",
    "closedate",
    "pipeline",
    "dealstage",
    "createdate",
    "hs_lastmodifieddate",
    "hs_object_id",
];
/// What a batch read returns besides the requested properties.
const BATCH_READ_ALWAYS: &[&str] = &["createdate", "hs_object_id", "lastmodifieddate"];

/// A running fake HubSpot account; the server stops when this is dropped.
pub type HubSpot = Server<State>;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Contacts,
    Deals,
}

impl Kind {
    fn parse(object: &str) -> Option<Self> {
        match object {
            "contacts" => Some(Self::Contacts),
            "deals" => Some(Self::Deals),
            _ => None,
        }
    }

    fn modified_property(self) -> &'static str {
        match self {
            Self::Contacts => "lastmodifieddate",
            Self::Deals => "hs_lastmodifieddate",
        }
    }

    fn defaults(self) -> &'static [&'static str] {
        match self {
            Self::Contacts => CONTACT_DEFAULTS,
            Self::Deals => DEAL_DEFAULTS,
        }
    }
}

/// A stored CRM object; every property value is a string, as HubSpot returns them.
struct Object {
    id: u64,
    properties: BTreeMap<String, String>,
    created: DateTime<Utc>,
    modified: DateTime<Utc>,
    archived: bool,
    contact_ids: Vec<u64>,
}

impl Object {
    fn new(
        kind: Kind,
        id: u64,
        props: Value,
        created: DateTime<Utc>,
        modified: DateTime<Utc>,
    ) -> Self {
        let props = fields_object("HubSpot properties", props);
        let mut properties = BTreeMap::new();
        for (name, value) in props {
            let text = match value {
                Value::Null => continue,
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => panic!("HubSpot property {name} must be a scalar, got {other}"),
            };
            properties.insert(name, text);
        }
        properties.insert("createdate".into(), iso(created));
        properties.insert(kind.modified_property().into(), iso(modified));
        properties.insert("hs_object_id".into(), id.to_string());
        Self {
            id,
            properties,
            created,
            modified,
            archived: false,
            contact_ids: Vec::new(),
        }
    }

    /// The API representation: the `requested` properties (null when absent) plus those of
    /// `always` the object has.
    fn to_json(&self, requested: &[String], always: &[&str]) -> Value {
        let mut properties = Map::new();
        for name in requested {
            let value = self
                .properties
                .get(name)
                .cloned()
                .map_or(Value::Null, Value::String);
            properties.insert(name.clone(), value);
        }
        for &name in always {
            if let Some(value) = self.properties.get(name) {
                properties.insert(name.to_owned(), Value::String(value.clone()));
            }
        }
        json!({
            "id": self.id.to_string(),
            "properties": properties,
            "createdAt": iso(self.created),
            "updatedAt": iso(self.modified),
            "archived": false,
        })
    }
}

/// HubSpot's timestamp format: ISO 8601 UTC with milliseconds and `Z`.
fn iso(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The account's objects, rate window and scripted failures.
pub struct State {
    token: String,
    contacts: BTreeMap<u64, Object>,
    deals: BTreeMap<u64, Object>,
    /// Search hides objects modified after `now - lag`; `None` hides nothing.
    lag: Option<Duration>,
    rate: RateWindow,
    faults: Faults,
    searches: usize,
    correlations: u64,
}

#[allow(dead_code)] // The fake's whole test API; each test uses only part of it.
impl HubSpot {
    /// Starts a fake account that accepts `Authorization: Bearer <token>`.
    pub async fn start(token: &str) -> HubSpot {
        Server::serve(|_| State {
            token: token.to_owned(),
            contacts: BTreeMap::new(),
            deals: BTreeMap::new(),
            lag: None,
            rate: RateWindow::sliding(Duration::from_secs(1)),
            faults: Faults::default(),
            searches: 0,
            correlations: 0,
        })
        .await
    }

    /// Inserts or replaces contact `id`; `props` values are stored as strings (null ones are
    /// dropped) and `createdate`, `lastmodifieddate`, `hs_object_id` come from the arguments.
    pub fn put_contact(
        &self,
        id: u64,
        props: Value,
        created: DateTime<Utc>,
        modified: DateTime<Utc>,
    ) {
        let contact = Object::new(Kind::Contacts, id, props, created, modified);
        self.state().contacts.insert(id, contact);
    }

    /// Inserts or replaces deal `id` (modified time in `hs_lastmodifieddate`), associated with
    /// `contact_ids`.
    pub fn put_deal(
        &self,
        id: u64,
        props: Value,
        created: DateTime<Utc>,
        modified: DateTime<Utc>,
        contact_ids: &[u64],
    ) {
        let mut deal = Object::new(Kind::Deals, id, props, created, modified);
        deal.contact_ids = contact_ids.to_vec();
        deal.contact_ids.sort_unstable();
        deal.contact_ids.dedup();
        self.state().deals.insert(id, deal);
    }

    /// Archives `object` ("contacts" or "deals") `id`: it disappears from searches and reads.
    pub fn archive(&self, object: &str, id: u64) {
        let mut state = self.state();
        let kind = Kind::parse(object).expect("archive takes \"contacts\" or \"deals\"");
        let object = state
            .objects_mut(kind)
            .get_mut(&id)
            .unwrap_or_else(|| panic!("archive: no {object} with id {id}"));
        object.archived = true;
    }

    /// Simulates index lag: search omits objects modified later than (real now − `lag`).
    pub fn hide_newer_than(&self, lag: Duration) {
        self.state().lag = Some(lag);
    }

    /// Limits search to `n` requests in any one-second window (429 SECONDLY beyond); `None` lifts it.
    pub fn set_rate_limit_per_second(&self, n: Option<u32>) {
        self.state().rate.set_limit(n);
    }

    /// How many `POST …/search` requests arrived, whatever they were answered.
    pub fn search_requests(&self) -> usize {
        self.state().searches
    }
}

/// Scripted failures (`fail_next`) hit authenticated requests to known endpoints, with
/// HubSpot's body for the status.
impl Vendor for State {
    fn respond(&mut self, request: &Incoming<'_>) -> Response {
        let path = request.uri.path();
        let answer = self.reply(
            request.method,
            path,
            request.headers,
            request.body,
            request.now,
        );
        match answer {
            Ok(body) => axum::Json(body).into_response(),
            Err(rejection) => rejection.into_response(),
        }
    }

    fn faults(&mut self) -> &mut Faults {
        &mut self.faults
    }
}

#[derive(Clone, Copy)]
enum Route {
    Search(Kind),
    Associations,
    ContactsBatchRead,
}

impl Route {
    fn parse(path: &str) -> Option<Self> {
        match path {
            "/crm/v4/associations/deals/contacts/batch/read" => Some(Self::Associations),
            "/crm/v3/objects/contacts/batch/read" => Some(Self::ContactsBatchRead),
            _ => {
                let object = path
                    .strip_prefix("/crm/v3/objects/")?
                    .strip_suffix("/search")?;
                Kind::parse(object).map(Self::Search)
            }
        }
    }
}

/// A request HubSpot refuses with 400 `VALIDATION_ERROR` and this message.
struct Invalid(String);

fn invalid<T>(message: impl Into<String>) -> Result<T, Invalid> {
    Err(Invalid(message.into()))
}

impl State {
    fn objects(&self, kind: Kind) -> &BTreeMap<u64, Object> {
        match kind {
            Kind::Contacts => &self.contacts,
            Kind::Deals => &self.deals,
        }
    }

    fn objects_mut(&mut self, kind: Kind) -> &mut BTreeMap<u64, Object> {
        match kind {
            Kind::Contacts => &mut self.contacts,
            Kind::Deals => &mut self.deals,
        }
    }

    fn correlation_id(&mut self) -> String {
        self.correlations += 1;
        format!("5e1d0c9a-0000-4000-8000-{:012x}", self.correlations)
    }

    /// HubSpot's error envelope: `fields` plus `status` and a `correlationId`.
    fn rejection(&mut self, status: StatusCode, fields: Value) -> Rejection {
        let mut body = fields;
        body["status"] = json!("error");
        body["correlationId"] = json!(self.correlation_id());
        Rejection::new(status, body)
    }

    fn unauthorized(&mut self) -> Rejection {
        let message = "Authentication credentials not found. This API supports OAuth 2.0 \
            authentication and you can find more details at \
            https://developers.hubspot.com/docs/methods/auth/oauth-overview";
        let fields = json!({ "message": message, "category": "INVALID_AUTHENTICATION" });
        self.rejection(StatusCode::UNAUTHORIZED, fields)
    }

    fn secondly_limit(&mut self) -> Rejection {
        let fields = json!({
            "message": "You have reached your secondly limit.",
            "errorType": "RATE_LIMIT",
            "policyName": "SECONDLY",
        });
        self.rejection(StatusCode::TOO_MANY_REQUESTS, fields)
    }

    fn validation_error(&mut self, Invalid(message): Invalid) -> Rejection {
        let fields = json!({ "message": message, "category": "VALIDATION_ERROR" });
        self.rejection(StatusCode::BAD_REQUEST, fields)
    }

    /// HubSpot's answer to an injected fault.
    fn fault(&mut self, status: StatusCode, retry_after: Option<String>) -> Rejection {
        let mut rejection = match status {
            StatusCode::UNAUTHORIZED => self.unauthorized(),
            StatusCode::TOO_MANY_REQUESTS => self.secondly_limit(),
            _ => {
                let message = status.canonical_reason().unwrap_or("error");
                let fields = json!({ "message": message, "category": "INTERNAL_ERROR" });
                self.rejection(status, fields)
            }
        };
        rejection.retry_after = retry_after;
        rejection
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return false;
        };
        let Some((scheme, token)) = value.to_str().ok().and_then(|v| v.split_once(' ')) else {
            return false;
        };
        scheme.eq_ignore_ascii_case("bearer") && token == self.token
    }

    fn reply(
        &mut self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        body: &Bytes,
        now: DateTime<Utc>,
    ) -> Result<Value, Rejection> {
        let route = Route::parse(path);
        if matches!(route, Some(Route::Search(_))) && method == Method::POST {
            self.searches += 1;
        }
        if !self.authorized(headers) {
            return Err(self.unauthorized());
        }
        let Some(route) = route else {
            let fields = json!({ "message": format!("No route found for {method} {path}") });
            return Err(self.rejection(StatusCode::NOT_FOUND, fields));
        };
        if method != Method::POST {
            let fields = json!({ "message": format!("HTTP method {method} is not supported") });
            return Err(self.rejection(StatusCode::METHOD_NOT_ALLOWED, fields));
        }
        if let Some((status, retry_after)) = self.faults.take() {
            return Err(self.fault(status, retry_after));
        }
        if matches!(route, Route::Search(_)) && self.rate.admit(now).is_err() {
            return Err(self.secondly_limit());
        }
        let json = self.json_body(route, headers, body)?;
        let answer = match route {
            Route::Search(kind) => self.search(kind, &json),
            Route::Associations => self.associations(&json),
            Route::ContactsBatchRead => self.batch_read(&json),
        };
        answer.map_err(|invalid| self.validation_error(invalid))
    }

    /// The request body as a JSON object, refusing what HubSpot refuses before reading it.
    fn json_body(
        &mut self,
        route: Route,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Result<Value, Rejection> {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let media_type = content_type.split(';').next().unwrap_or("").trim();
        if !media_type.eq_ignore_ascii_case("application/json") {
            let message = format!("Content type '{content_type}' not supported");
            let fields = json!({ "message": message });
            return Err(self.rejection(StatusCode::UNSUPPORTED_MEDIA_TYPE, fields));
        }
        let text = String::from_utf8_lossy(body);
        let chars = text.chars().count();
        if matches!(route, Route::Search(_)) && chars > MAX_SEARCH_BODY_CHARS {
            let message = format!(
                "Request body of {chars} characters exceeds the search limit of \
                 {MAX_SEARCH_BODY_CHARS} characters"
            );
            return Err(self.validation_error(Invalid(message)));
        }
        match serde_json::from_str::<Value>(&text) {
            Ok(value @ Value::Object(_)) => Ok(value),
            Ok(_) => {
                Err(self.validation_error(Invalid("Invalid input JSON: expected an object".into())))
            }
            Err(e) => Err(self.validation_error(Invalid(format!("Invalid input JSON: {e}")))),
        }
    }

    fn search(&self, kind: Kind, body: &Value) -> Result<Value, Invalid> {
        let query = SearchQuery::parse(body)?;
        let hidden_after = self.lag.map(|lag| {
            let lag = chrono::Duration::from_std(lag).expect("index lag fits chrono");
            (Utc::now() - lag).timestamp_millis()
        });
        let mut matches: Vec<&Object> = self
            .objects(kind)
            .values()
            .filter(|o| !o.archived)
            .filter(|o| hidden_after.is_none_or(|limit| o.modified.timestamp_millis() <= limit))
            .filter(|o| query.matches(o))
            .collect();
        if let Some(sort) = &query.sort {
            matches.sort_by(|a, b| sort.compare(a, b).then(a.id.cmp(&b.id)));
        }
        let total = matches.len();
        let end = (query.after + query.limit).min(total).min(MAX_RESULTS);
        let results: Vec<Value> = matches
            .get(query.after..end)
            .unwrap_or_default()
            .iter()
            .map(|o| o.to_json(&query.properties, kind.defaults()))
            .collect();
        let mut answer = json!({ "total": total, "results": results });
        let next = query.after + results.len();
        if next < total {
            answer["paging"] = json!({
                "next": { "after": next.to_string(), "link": format!("?after={next}") }
            });
        }
        Ok(answer)
    }

    fn associations(&self, body: &Value) -> Result<Value, Invalid> {
        known_fields(body, &["inputs"])?;
        let started = Utc::now();
        let ids = input_ids(body, MAX_ASSOCIATION_INPUTS)?;
        let mut results = Vec::new();
        for id in ids {
            let Some(deal) = self.deals.get(&id).filter(|d| !d.archived) else {
                continue;
            };
            let to: Vec<Value> = deal
                .contact_ids
                .iter()
                .filter(|c| self.contacts.get(c).is_some_and(|c| !c.archived))
                .map(|c| {
                    json!({
                        "toObjectId": c,
                        "associationTypes": [
                            { "category": "HUBSPOT_DEFINED", "typeId": 3, "label": null }
                        ],
                    })
                })
                .collect();
            if !to.is_empty() {
                results.push(json!({ "from": { "id": id.to_string() }, "to": to }));
            }
        }
        Ok(batch_answer(results, started))
    }

    fn batch_read(&self, body: &Value) -> Result<Value, Invalid> {
        known_fields(
            body,
            &[
                "properties",
                "propertiesWithHistory",
                "idProperty",
                "inputs",
            ],
        )?;
        let started = Utc::now();
        let requested = string_list(body, "properties")?;
        let always = if requested.is_empty() {
            CONTACT_DEFAULTS
        } else {
            BATCH_READ_ALWAYS
        };
        let id_property = match body.get("idProperty") {
            None | Some(Value::Null) => None,
            Some(Value::String(name)) if name == "hs_object_id" => None,
            Some(Value::String(name)) => Some(name.as_str()),
            Some(other) => return invalid(format!("idProperty must be a string, got {other}")),
        };
        let inputs = input_strings(body, MAX_BATCH_READ_INPUTS)?;
        let mut seen = Vec::new();
        let mut results = Vec::new();
        for input in inputs {
            let found = self.contacts.values().find(|c| {
                !c.archived
                    && match id_property {
                        None => c.id.to_string() == input,
                        Some(name) => c.properties.get(name) == Some(&input),
                    }
            });
            if let Some(contact) = found.filter(|c| !seen.contains(&c.id)) {
                seen.push(contact.id);
                results.push(contact.to_json(&requested, always));
            }
        }
        Ok(batch_answer(results, started))
    }
}

fn batch_answer(results: Vec<Value>, started: DateTime<Utc>) -> Value {
    json!({
        "status": "COMPLETE",
        "results": results,
        "startedAt": iso(started),
        "completedAt": iso(Utc::now()),
    })
}

/// Refuses fields HubSpot's request classes do not declare, as its JSON binding does.
fn known_fields(body: &Value, known: &[&str]) -> Result<(), Invalid> {
    let Value::Object(fields) = body else {
        return invalid("Invalid input JSON: expected an object");
    };
    match fields.keys().find(|k| !known.contains(&k.as_str())) {
        Some(unknown) => invalid(format!(
            "Invalid input JSON: Unrecognized field \"{unknown}\", not marked as ignorable"
        )),
        None => Ok(()),
    }
}

/// `body[field]` as a list of strings; absent or null is empty.
fn string_list(body: &Value, field: &str) -> Result<Vec<String>, Invalid> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(s.clone()),
                other => invalid(format!("{field} must hold strings, got {other}")),
            })
            .collect(),
        Some(other) => invalid(format!("{field} must be an array, got {other}")),
    }
}

/// The `inputs[].id` values of a batch request, as strings.
fn input_strings(body: &Value, max: usize) -> Result<Vec<String>, Invalid> {
    let Some(Value::Array(inputs)) = body.get("inputs") else {
        return invalid("inputs is required and must be an array");
    };
    if inputs.len() > max {
        return invalid(format!(
            "Too many inputs: {} (the limit is {max})",
            inputs.len()
        ));
    }
    inputs
        .iter()
        .map(|input| match input.get("id") {
            Some(Value::String(id)) => Ok(id.clone()),
            Some(Value::Number(id)) => Ok(id.to_string()),
            _ => invalid(format!("Each input needs an id, got {input}")),
        })
        .collect()
}

/// The `inputs[].id` values of a batch request as object ids, duplicates and non-ids dropped.
fn input_ids(body: &Value, max: usize) -> Result<Vec<u64>, Invalid> {
    let mut ids: Vec<u64> = Vec::new();
    for id in input_strings(body, max)? {
        if let Ok(id) = id.parse::<u64>()
            && !ids.contains(&id)
        {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// A parsed search request.
struct SearchQuery {
    /// ORed groups of ANDed filters; empty matches everything.
    groups: Vec<Vec<Filter>>,
    sort: Option<Sort>,
    properties: Vec<String>,
    limit: usize,
    after: usize,
}

impl SearchQuery {
    fn parse(body: &Value) -> Result<Self, Invalid> {
        known_fields(
            body,
            &[
                "filterGroups",
                "sorts",
                "query",
                "properties",
                "limit",
                "after",
            ],
        )?;
        if body
            .get("query")
            .is_some_and(|q| !q.is_null() && q.as_str() != Some(""))
        {
            return invalid("query (free-text search) is not implemented by the fake HubSpot");
        }
        let query = Self {
            groups: parse_groups(body.get("filterGroups"))?,
            sort: Sort::parse(body.get("sorts"))?,
            properties: string_list(body, "properties")?,
            limit: parse_limit(body.get("limit"))?,
            after: parse_after(body.get("after"))?,
        };
        Ok(query)
    }

    fn matches(&self, object: &Object) -> bool {
        self.groups.is_empty()
            || self
                .groups
                .iter()
                .any(|group| group.iter().all(|filter| filter.matches(object)))
    }
}

fn parse_limit(value: Option<&Value>) -> Result<usize, Invalid> {
    let limit = match value {
        None | Some(Value::Null) => return Ok(DEFAULT_LIMIT),
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.parse::<u64>().ok(),
        Some(_) => None,
    };
    match limit {
        Some(n @ 1..) if n as usize <= MAX_LIMIT => Ok(n as usize),
        Some(n @ 1..) => invalid(format!("limit must be at most {MAX_LIMIT}, got {n}")),
        _ => invalid(format!(
            "limit must be an integer between 1 and {MAX_LIMIT}"
        )),
    }
}

fn parse_after(value: Option<&Value>) -> Result<usize, Invalid> {
    let after = match value {
        None | Some(Value::Null) => return Ok(0),
        Some(Value::String(s)) => s.parse::<usize>().ok(),
        Some(Value::Number(n)) => n.as_u64().map(|n| n as usize),
        Some(_) => None,
    };
    match after {
        Some(after) if after >= MAX_RESULTS => invalid(format!(
            "The search API is limited to {MAX_RESULTS} total results for any given query; \
             after={after} pages beyond {MAX_RESULTS}"
        )),
        Some(after) => Ok(after),
        None => invalid(format!(
            "after must be formatted as an integer, got {}",
            value.unwrap_or(&Value::Null)
        )),
    }
}

fn parse_groups(value: Option<&Value>) -> Result<Vec<Vec<Filter>>, Invalid> {
    let groups = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(groups)) => groups,
        Some(other) => return invalid(format!("filterGroups must be an array, got {other}")),
    };
    if groups.len() > MAX_FILTER_GROUPS {
        return invalid(format!(
            "Too many filter groups: {} (the limit is {MAX_FILTER_GROUPS})",
            groups.len()
        ));
    }
    let mut parsed = Vec::with_capacity(groups.len());
    let mut total = 0;
    for group in groups {
        let filters = match group.get("filters") {
            None | Some(Value::Null) => &Vec::new(),
            Some(Value::Array(filters)) => filters,
            Some(other) => return invalid(format!("filters must be an array, got {other}")),
        };
        if filters.len() > MAX_FILTERS_PER_GROUP {
            return invalid(format!(
                "Too many filters in a filter group: {} (the limit is {MAX_FILTERS_PER_GROUP})",
                filters.len()
            ));
        }
        total += filters.len();
        parsed.push(
            filters
                .iter()
                .map(Filter::parse)
                .collect::<Result<Vec<_>, _>>()?,
        );
    }
    if total > MAX_FILTERS {
        return invalid(format!(
            "Too many filters: {total} (the limit is {MAX_FILTERS})"
        ));
    }
    Ok(parsed)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Comparison {
    Lt,
    Lte,
    Gt,
    Gte,
    Eq,
    Neq,
}

/// What a filter asks of a property value; operands are kept as strings, dates already checked.
enum Test {
    Compare(Comparison, String),
    Between(String, String),
    In(Vec<String>),
    NotIn(Vec<String>),
    HasProperty,
    NotHasProperty,
}

struct Filter {
    property: String,
    test: Test,
}

impl Filter {
    fn parse(filter: &Value) -> Result<Self, Invalid> {
        let Some(Value::String(property)) = filter.get("propertyName") else {
            return invalid(format!("Each filter needs a propertyName, got {filter}"));
        };
        let Some(Value::String(operator)) = filter.get("operator") else {
            return invalid(format!("Each filter needs an operator, got {filter}"));
        };
        let is_date = DATE_PROPERTIES.contains(&property.as_str());
        let operand = |field: &str| match filter.get(field) {
            Some(value) => operand_value(value, is_date, property),
            None => invalid(format!("Operator {operator} needs {field}, got {filter}")),
        };
        let operands = || -> Result<Vec<String>, Invalid> {
            let Some(Value::Array(values)) = filter.get("values") else {
                return invalid(format!(
                    "Operator {operator} needs a values array, got {filter}"
                ));
            };
            values
                .iter()
                .map(|v| operand_value(v, is_date, property))
                .collect()
        };
        let compare = |op| operand("value").map(|v| Test::Compare(op, v));
        let test = match operator.as_str() {
            "LT" => compare(Comparison::Lt)?,
            "LTE" => compare(Comparison::Lte)?,
            "GT" => compare(Comparison::Gt)?,
            "GTE" => compare(Comparison::Gte)?,
            "EQ" => compare(Comparison::Eq)?,
            "NEQ" => compare(Comparison::Neq)?,
            "BETWEEN" => Test::Between(operand("value")?, operand("highValue")?),
            "IN" => Test::In(operands()?),
            "NOT_IN" => Test::NotIn(operands()?),
            "HAS_PROPERTY" => Test::HasProperty,
            "NOT_HAS_PROPERTY" => Test::NotHasProperty,
            "CONTAINS_TOKEN" | "NOT_CONTAINS_TOKEN" => {
                return invalid(format!(
                    "Operator {operator} is not implemented by the fake HubSpot"
                ));
            }
            other => return invalid(format!("Unknown filter operator {other}")),
        };
        Ok(Self {
            property: property.clone(),
            test,
        })
    }

    /// Whether `object` passes. A missing property fails every test but NEQ, NOT_IN and
    /// NOT_HAS_PROPERTY.
    fn matches(&self, object: &Object) -> bool {
        let Some(value) = object.properties.get(&self.property) else {
            return matches!(
                self.test,
                Test::Compare(Comparison::Neq, _) | Test::NotIn(_) | Test::NotHasProperty
            );
        };
        let cmp = |operand: &str| compare_values(&self.property, value, operand);
        match &self.test {
            Test::Compare(op, operand) => {
                let order = cmp(operand);
                match op {
                    Comparison::Lt => order.is_lt(),
                    Comparison::Lte => order.is_le(),
                    Comparison::Gt => order.is_gt(),
                    Comparison::Gte => order.is_ge(),
                    Comparison::Eq => order.is_eq(),
                    Comparison::Neq => order.is_ne(),
                }
            }
            Test::Between(low, high) => cmp(low).is_ge() && cmp(high).is_le(),
            Test::In(operands) => operands.iter().any(|o| cmp(o).is_eq()),
            Test::NotIn(operands) => operands.iter().all(|o| cmp(o).is_ne()),
            Test::HasProperty => true,
            Test::NotHasProperty => false,
        }
    }
}

fn operand_value(value: &Value, is_date: bool, property: &str) -> Result<String, Invalid> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => return invalid(format!("Filter values must be scalars, got {other}")),
    };
    if is_date && text.parse::<i64>().is_err() {
        return invalid(format!(
            "{text} is not a valid value for date property {property}: use epoch milliseconds"
        ));
    }
    Ok(text)
}

/// Epoch milliseconds of a stored date property (ISO 8601 as the fake stores it, or epoch ms).
fn date_millis(value: &str) -> Option<i64> {
    value.parse::<i64>().ok().or_else(|| {
        DateTime::parse_from_rfc3339(value)
            .ok()
            .map(|t| t.timestamp_millis())
    })
}

/// Compares a stored value with a filter operand: dates as epoch ms, numbers numerically when
/// both sides are numbers, anything else as strings.
fn compare_values(property: &str, stored: &str, operand: &str) -> Ordering {
    if DATE_PROPERTIES.contains(&property)
        && let (Some(a), Ok(b)) = (date_millis(stored), operand.parse::<i64>())
    {
        return a.cmp(&b);
    }
    match (number(stored), number(operand)) {
        (Some(a), Some(b)) => a.total_cmp(&b),
        _ => stored.cmp(operand),
    }
}

fn number(text: &str) -> Option<f64> {
    text.parse::<f64>().ok().filter(|n| n.is_finite())
}

/// The one sort rule HubSpot honours.
struct Sort {
    property: String,
    descending: bool,
}

/// A sort position: numbers (and dates) before other strings, so the order is total.
#[derive(PartialEq, PartialOrd)]
enum SortKey<'a> {
    Number(f64),
    Text(&'a str),
}

impl Sort {
    fn parse(value: Option<&Value>) -> Result<Option<Self>, Invalid> {
        let sorts = match value {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Array(sorts)) => sorts,
            Some(other) => return invalid(format!("sorts must be an array, got {other}")),
        };
        let sort = match sorts.as_slice() {
            [] => return Ok(None),
            [sort] => sort,
            _ => {
                return invalid(format!(
                    "Only one sort rule is supported, got {}",
                    sorts.len()
                ));
            }
        };
        let Some(Value::String(property)) = sort.get("propertyName") else {
            return invalid(format!("A sort needs a propertyName, got {sort}"));
        };
        let descending = match sort.get("direction") {
            None | Some(Value::Null) => false,
            Some(Value::String(d)) if d == "ASCENDING" => false,
            Some(Value::String(d)) if d == "DESCENDING" => true,
            Some(other) => {
                return invalid(format!(
                    "Sort direction must be ASCENDING or DESCENDING, got {other}"
                ));
            }
        };
        Ok(Some(Self {
            property: property.clone(),
            descending,
        }))
    }

    fn key<'a>(&self, object: &'a Object) -> Option<SortKey<'a>> {
        let value = object.properties.get(&self.property)?;
        let date = DATE_PROPERTIES
            .contains(&self.property.as_str())
            .then(|| date_millis(value))
            .flatten();
        Some(match date {
            Some(ms) => SortKey::Number(ms as f64),
            None => number(value).map_or(SortKey::Text(value), SortKey::Number),
        })
    }

    /// Orders two objects by the sort property; objects lacking it come last either way.
    fn compare(&self, a: &Object, b: &Object) -> Ordering {
        match (self.key(a), self.key(b)) {
            (Some(x), Some(y)) => {
                let order = x.partial_cmp(&y).unwrap_or(Ordering::Equal);
                if self.descending {
                    order.reverse()
                } else {
                    order
                }
            }
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        }
    }
}
