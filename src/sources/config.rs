//! `[sources.NAME]`, `[[rules]]` and `[policies]`: what to poll, and what to do with it.
//!
//! A source is either an HTTP API (a vendor preset, a fully described custom API, or a preset with
//! some keys overridden) or a SQL query. Every key is optional in the file; presets fill what the
//! user left out and [`crate::sources::http::HttpSpec::resolve`] reports what is still missing.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::config::Secret;

/// `[sources.NAME]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSettings {
    /// A vendor preset, e.g. `hubspot.contacts`; see `timelines-sync sources presets`.
    pub preset: Option<String>,
    /// `false` keeps the source configured but never scheduled (`poll` still runs it).
    pub enabled: Option<bool>,
    /// Cron schedule: 5 fields (`*/5 * * * *`) or 6 with seconds first. None: manual only.
    pub schedule: Option<String>,
    /// Where a new source starts: `now` (default) or an RFC 3339 time.
    pub initial: Option<String>,
    /// Each run re-reads this much before the saved cursor, for late-arriving changes.
    pub lookback_seconds: Option<u64>,
    /// Records changed in the last `settle_seconds` (by the server's clock) wait for the next run.
    pub settle_seconds: Option<u64>,
    /// Region for phones written without a country code (ISO 3166 alpha-2, e.g. `US`).
    pub default_region: Option<String>,
    /// A record field holding the contact's IANA time zone, for quiet hours.
    pub timezone_field: Option<String>,
    /// Most records one run reads before it stops (and continues at the next run).
    pub max_records_per_run: Option<u64>,

    /// HTTP: the API's base URL.
    pub base_url: Option<String>,
    /// HTTP: the API token or key, inline. Prefer `token_env`.
    pub token: Option<Secret>,
    /// HTTP: the environment variable holding the token.
    pub token_env: Option<String>,
    /// HTTP: how the token is sent (default: `Authorization: Bearer`).
    pub auth: Option<AuthSettings>,
    /// HTTP: `GET` or `POST`.
    pub method: Option<String>,
    /// HTTP: the path (template) below `base_url`.
    pub path: Option<String>,
    /// HTTP: query parameters (values are templates; an empty result drops the parameter).
    pub query: Option<BTreeMap<String, String>>,
    /// HTTP: extra headers (values are templates).
    pub headers: Option<BTreeMap<String, String>>,
    /// HTTP: the JSON request body (a template).
    pub body: Option<String>,
    /// HTTP: where the records are in the answer (dotted path; empty: the answer is the list).
    pub records_path: Option<String>,
    /// The record's id (dotted path).
    pub id_field: Option<String>,
    /// The record's modification time (dotted path).
    pub cursor_field: Option<String>,
    /// The record's creation time (dotted path), for the `created` trigger.
    pub created_field: Option<String>,
    /// An object inside the record whose keys become top-level variables (HubSpot: `properties`).
    pub fields_path: Option<String>,
    /// Fields holding phone numbers, best first (dotted paths into the variables).
    pub phone_fields: Option<Vec<String>>,
    /// Fields that make up the contact's name, joined with spaces.
    pub name_fields: Option<Vec<String>>,
    /// An expression; records for which it is true are skipped (deleted, archived).
    pub skip_if: Option<String>,
    /// An expression; contacts for which it is true are opted out and get nothing.
    pub opted_out_if: Option<String>,
    /// HTTP: how to get the next page.
    pub pagination: Option<PaginationSettings>,
    /// HTTP: records per page asked for.
    pub page_size: Option<u32>,
    /// The API returns records in ascending cursor order, so each page can be checkpointed.
    pub sorted: Option<bool>,
    /// Sorted sources whose page token is an offset into a live result (HubSpot `after`): start
    /// each page as a new query from the last modification time read, so a record edited while
    /// the run pages does not shift the offsets and make another one skipped.
    pub keyset_paging: Option<bool>,
    /// The vendor's page token is a durable cursor (Zendesk's incremental exports): it is saved
    /// with each batch and the next run resumes from it instead of from a time; the vendor
    /// decides what is new, so no lookback or window filter applies.
    pub resume_token: Option<bool>,
    /// The most results one query can page through (HubSpot: 10,000); the query is re-anchored
    /// at the last cursor value before reaching it.
    pub result_cap: Option<u32>,
    /// HTTP: requests per second this source may make.
    pub requests_per_second: Option<f64>,
    /// HTTP: retries of one request on 429, 5xx and network errors.
    pub max_retries: Option<u32>,
    /// HTTP: timeout of one request.
    pub timeout_seconds: Option<u64>,
    /// Properties to ask for (presets put them into the request as `properties`).
    pub properties: Option<Vec<String>>,
    /// Second requests that add related records (deal → contact), per page.
    pub enrich: Option<Vec<EnrichSettings>>,

    /// SQL: the query. `$1` is the window's lower bound (timestamptz, inclusive), `$2` the upper
    /// bound (exclusive). Return one row per record, ordered by the cursor column.
    pub sql: Option<String>,
    /// SQL: the database to query (default: the service's own database).
    pub database_url: Option<Secret>,
    /// SQL: the environment variable holding `database_url`.
    pub database_url_env: Option<String>,
}

/// `auth = { type = "...", ... }`: how the token goes into each request.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthSettings {
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// `<name>: <prefix><token>` (Pipedrive `x-api-token`, Zoho `Authorization: Zoho-oauthtoken `).
    Header {
        /// Header name.
        name: String,
        /// Text before the token.
        #[serde(default)]
        prefix: String,
    },
    /// `?<name>=<token>`.
    Query {
        /// Parameter name.
        name: String,
    },
    /// HTTP Basic. Username defaults to the token; password defaults to empty (Freshdesk: `X`).
    Basic {
        /// The user name (a template may not be used here).
        username: Option<String>,
        /// The password; when `username` is given and this is not, the token is the password.
        password: Option<Secret>,
    },
    /// No authentication.
    None,
    /// OAuth 2 with a refresh token (Salesforce, Zoho): an access token is fetched from
    /// `token_url` before the first request and again when the API answers 401, and sent as
    /// `<header>: <prefix><access token>`.
    Oauth2Refresh {
        /// The token endpoint: a URL, or a path on `base_url`.
        token_url: String,
        /// The app's client id.
        client_id: String,
        /// The app's client secret.
        client_secret: Option<Secret>,
        /// The environment variable holding it.
        client_secret_env: Option<String>,
        /// The refresh token.
        refresh_token: Option<Secret>,
        /// The environment variable holding it.
        refresh_token_env: Option<String>,
        /// The header (default `Authorization`).
        header: Option<String>,
        /// Text before the token (default `Bearer `; Zoho: `Zoho-oauthtoken `).
        prefix: Option<String>,
    },
}

/// `pagination = { type = "...", ... }`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PaginationSettings {
    /// `token` (opaque token from the body), `next_url` (URL from the body), `link_header`,
    /// `page` (page numbers), `offset`, or `none`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `token`: where the next token is in the answer.
    pub token_path: Option<String>,
    /// `next_url`: where the next URL is in the answer.
    pub url_path: Option<String>,
    /// Stop when this answer field is true (`end_of_stream`, `done`).
    pub stop_path: Option<String>,
    /// Stop when this answer field is false (`info.more_records`, `has_more`).
    pub more_path: Option<String>,
    /// `page`: the first page number (default 1).
    pub first_page: Option<u32>,
}

/// `[[sources.NAME.enrich]]`: look up related records for each page, by id, in batches.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EnrichSettings {
    /// The variable the matched item is stored under.
    pub name: String,
    /// Where the id to look up is in each record's variables (dotted path).
    pub ids_from: String,
    /// `GET` or `POST`.
    #[serde(default = "get")]
    pub method: String,
    /// Path template; `ids` is the list of ids of the batch.
    pub path: String,
    /// Query templates.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// Body template.
    pub body: Option<String>,
    /// Where the items are in the answer.
    #[serde(default)]
    pub records_path: String,
    /// The item's field matched against the looked-up id.
    pub key_field: String,
    /// Ids per request.
    #[serde(default = "hundred")]
    pub batch_size: usize,
}

fn get() -> String {
    "GET".to_owned()
}

fn hundred() -> usize {
    100
}

/// What makes a record an event for a rule.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// The record was created in the polled window (by `created_field`; without one: first seen).
    Created,
    /// Every new version of the record (each new cursor value).
    Updated,
    /// `field` changed since the last poll (to `value`, when given).
    FieldChanged,
    /// `field` equals `value`: fires when a record is first seen so, or changes to it.
    FieldEquals,
    /// A webhook event of the rule's `on` types (rules of the built-in `timelines` source; set
    /// by `on`, not written as a trigger).
    #[serde(skip)]
    Event,
}

impl Trigger {
    /// The name used in config and idempotency keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Created => "created",
            Trigger::Updated => "updated",
            Trigger::FieldChanged => "field_changed",
            Trigger::FieldEquals => "field_equals",
            Trigger::Event => "event",
        }
    }
}

/// `[[rules]]`: records of a source that match become jobs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSettings {
    /// A stable name; part of every job's idempotency key. Default: derived from the rule.
    pub name: Option<String>,
    /// The source whose records it looks at (`timelines`, implied by `on`: webhook events).
    pub source: Option<String>,
    /// What makes a record an event (poll rules).
    pub trigger: Option<Trigger>,
    /// Webhook event types the rule reacts to (`message:received:new`, or a list): an inbound
    /// rule, on the built-in `timelines` source.
    pub on: Option<OneOrMany>,
    /// The watched field (`field_changed`, `field_equals`).
    pub field: Option<String>,
    /// The value (`field_equals`; for `field_changed`, the new value to react to).
    pub value: Option<toml::Value>,
    /// An expression over the record's variables; the rule applies only where it is true.
    pub filter: Option<String>,
    /// The job kind (default `send_message`).
    #[serde(default = "send_message")]
    pub action: String,
    /// The message text (a template over the record's variables).
    pub template: Option<String>,
    /// More payload fields; string values are templates.
    pub payload: Option<toml::Table>,
    /// The TimelinesAI workspace.
    #[serde(default = "default_workspace")]
    pub workspace: String,
    /// Job priority.
    #[serde(default)]
    pub priority: i32,
    /// Attempts per job.
    pub max_attempts: Option<i32>,
    /// Run the job this long after the event.
    #[serde(default)]
    pub delay_seconds: u64,
    /// Overrides `[policies] quiet_hours` for this rule.
    pub quiet_hours: Option<QuietHoursSettings>,
    /// Overrides `[policies] frequency_cap` for this rule.
    pub frequency_cap: Option<FrequencyCapSettings>,
    /// Send even to opted-out contacts (for transactional messages the contact asked for).
    #[serde(default)]
    pub ignore_opt_out: bool,
}

/// A string or a list of strings.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One value.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The values.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(one) => vec![one.clone()],
            OneOrMany::Many(many) => many.clone(),
        }
    }
}

fn send_message() -> String {
    "send_message".to_owned()
}

fn default_workspace() -> String {
    crate::config::DEFAULT_WORKSPACE.to_owned()
}

/// `[policies]`: defaults for every rule.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySettings {
    /// No messages inside this daily window; jobs due in it run at its end.
    pub quiet_hours: Option<QuietHoursSettings>,
    /// At most `max` messages per contact (phone) per `hours`.
    pub frequency_cap: Option<FrequencyCapSettings>,
}

/// A daily window without messages.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct QuietHoursSettings {
    /// `false` turns a `[policies]` window off for one rule.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Start, `HH:MM` local time.
    #[serde(default)]
    pub start: String,
    /// End, `HH:MM` local time (may be earlier than `start`: the window crosses midnight).
    #[serde(default)]
    pub end: String,
    /// An IANA time zone, or `contact` for the source's `timezone_field`.
    #[serde(default = "utc")]
    pub timezone: String,
    /// With `timezone = "contact"`: the zone for contacts without one.
    pub fallback_timezone: Option<String>,
}

fn yes() -> bool {
    true
}

fn utc() -> String {
    "UTC".to_owned()
}

/// A per-contact limit on messages.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FrequencyCapSettings {
    /// Messages allowed in the window (0 turns a `[policies]` cap off for one rule).
    pub max: u32,
    /// The window, in hours.
    pub hours: u32,
}
