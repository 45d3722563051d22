//! The configuration of sources and rules, resolved and checked: presets applied, templates and
//! expressions compiled, schedules parsed, secrets read. Built once at start-up; every problem is
//! reported with its key.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveTime, Utc};
use chrono_tz::Tz;

use super::config::{
    AuthSettings, EnrichSettings, FrequencyCapSettings, QuietHoursSettings, RuleSettings,
    SourceSettings, Trigger,
};
use super::fetch::{Sleep, TokioSleep};
use super::template::Templates;
use super::{phone, presets, schedule};
use crate::config::{ConfigError, Env, Secret, Settings};

/// Where a new source starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Initial {
    /// The time of its first run: nothing from before is sent.
    Now,
    /// A fixed time.
    At(DateTime<Utc>),
}

/// How the next page is found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pagination {
    /// One request.
    None,
    /// An opaque token at `path` in the answer, passed back as `page.token`.
    Token {
        /// Where the token is.
        path: String,
    },
    /// The next request's URL at `path` in the answer (absolute or relative to `base_url`).
    NextUrl {
        /// Where the URL is.
        path: String,
    },
    /// The `Link: <url>; rel="next"` header.
    LinkHeader,
    /// Page numbers from `first` (`page.number`), until a short page.
    Page {
        /// The first page's number.
        first: u32,
    },
    /// Offsets (`page.offset`), until a short page.
    Offset,
}

/// How the token is sent.
#[derive(Debug, Clone)]
pub enum Auth {
    /// No credentials.
    None,
    /// `Authorization: Bearer`.
    Bearer(Secret),
    /// A named header with a prefix.
    Header {
        /// Header name.
        name: String,
        /// `prefix + token`.
        value: Secret,
    },
    /// A query parameter.
    Query {
        /// Parameter name.
        name: String,
        /// The token.
        value: Secret,
    },
    /// HTTP Basic.
    Basic {
        /// User.
        username: Secret,
        /// Password.
        password: Secret,
    },
    /// OAuth 2 refresh-token flow.
    OAuth2 {
        /// Absolute token endpoint.
        token_url: String,
        /// Client id.
        client_id: String,
        /// Client secret.
        client_secret: Secret,
        /// Refresh token.
        refresh_token: Secret,
        /// Header name.
        header: String,
        /// Text before the access token.
        prefix: String,
    },
}

/// An HTTP source.
#[derive(Debug, Clone)]
pub struct HttpSpec {
    /// Base URL without a trailing slash.
    pub base_url: String,
    /// `GET` or `POST`.
    pub method: reqwest::Method,
    /// Whether query values, headers and the body are templates (names in [`Source::templates`]).
    pub query: Vec<String>,
    /// Header names with templates.
    pub headers: Vec<String>,
    /// Whether there is a body template.
    pub body: bool,
    /// Credentials.
    pub auth: Auth,
    /// Where the records are.
    pub records_path: String,
    /// Next-page rule.
    pub pagination: Pagination,
    /// Stop when true.
    pub stop_path: Option<String>,
    /// Stop when false.
    pub more_path: Option<String>,
    /// Most results per query before re-anchoring.
    pub result_cap: Option<u32>,
    /// Requests per second.
    pub requests_per_second: Option<f64>,
    /// Retries per request.
    pub max_retries: u32,
    /// Timeout per request.
    pub timeout: Duration,
    /// Values for `{{ properties }}`.
    pub properties: Vec<String>,
    /// Lookups per page.
    pub enrich: Vec<EnrichSettings>,
    /// How retries wait (tokio's timer; tests substitute a virtual clock).
    pub sleep: Arc<dyn Sleep>,
}

/// A SQL source.
#[derive(Debug, Clone)]
pub struct SqlSpec {
    /// The query (`$1` lower bound, `$2` upper bound).
    pub sql: String,
    /// Its database; None: the service's own.
    pub database_url: Option<Secret>,
}

/// HTTP or SQL.
#[derive(Debug, Clone)]
pub enum SourceKind {
    /// An HTTP API.
    Http(Box<HttpSpec>),
    /// A Postgres query.
    Sql(SqlSpec),
    /// Webhook events from TimelinesAI: the built-in [`INBOUND_SOURCE`], fed by the webhook
    /// processor, never polled.
    Webhook,
}

/// The built-in source of inbound rules (`[[rules]] on = "message:received:new"`): its records
/// are webhook events, its rules' jobs are keyed `webhook:timelines:RULE:RECORD:event`.
pub const INBOUND_SOURCE: &str = "timelines";

/// The built-in source: a record is one webhook event, with the payload's fields, `phone` (the
/// contact, E.164) and `name` (see [`crate::sources::inbound`]).
fn inbound_source() -> Source {
    Source {
        name: INBOUND_SOURCE.to_owned(),
        preset: None,
        kind: SourceKind::Webhook,
        schedule: None,
        schedule_text: None,
        enabled: true,
        initial: Initial::Now,
        lookback: Duration::ZERO,
        settle: Duration::ZERO,
        region: None,
        timezone_field: None,
        max_records_per_run: None,
        id_field: "id".to_owned(),
        cursor_field: "received_at".to_owned(),
        created_field: None,
        fields_path: None,
        phone_fields: vec!["phone".to_owned()],
        name_fields: vec!["name".to_owned()],
        skip_if: false,
        opted_out_if: false,
        page_size: 1,
        sorted: true,
        keyset_paging: false,
        resume_token: false,
        watched: Vec::new(),
    }
}

/// One configured source, ready to poll.
#[derive(Debug, Clone)]
pub struct Source {
    /// Its name (`[sources.NAME]`), part of every idempotency key.
    pub name: String,
    /// The preset it came from.
    pub preset: Option<String>,
    /// HTTP or SQL.
    pub kind: SourceKind,
    /// Cron schedule, if scheduled.
    pub schedule: Option<cron::Schedule>,
    /// The schedule as written.
    pub schedule_text: Option<String>,
    /// Scheduled at all.
    pub enabled: bool,
    /// Where a new source starts.
    pub initial: Initial,
    /// Re-read before the cursor.
    pub lookback: Duration,
    /// Wait this long after a change (server time) before reading it.
    pub settle: Duration,
    /// Default region for phones.
    pub region: Option<rlibphonenumber::enums::Region>,
    /// Field with the contact's time zone.
    pub timezone_field: Option<String>,
    /// Records per run at most.
    pub max_records_per_run: Option<u64>,
    /// Id path.
    pub id_field: String,
    /// Cursor path.
    pub cursor_field: String,
    /// Creation time path.
    pub created_field: Option<String>,
    /// Object merged into the variables.
    pub fields_path: Option<String>,
    /// Phone paths, best first.
    pub phone_fields: Vec<String>,
    /// Name paths.
    pub name_fields: Vec<String>,
    /// Has a `skip_if` expression (template `source:NAME:skip_if`).
    pub skip_if: bool,
    /// Has an `opted_out_if` expression (template `source:NAME:opted_out_if`).
    pub opted_out_if: bool,
    /// Records per page.
    pub page_size: u32,
    /// Ascending cursor order: checkpoint per page.
    pub sorted: bool,
    /// Each page a new query from the last time read.
    pub keyset_paging: bool,
    /// The vendor's token is the durable cursor.
    pub resume_token: bool,
    /// The fields the rules watch (`field_changed`, `field_equals`), kept per record.
    pub watched: Vec<String>,
}

impl Source {
    /// The template name of one of this source's templates.
    pub fn template(&self, part: &str) -> String {
        template_name(&self.name, part)
    }

    /// The first part of its jobs' idempotency keys: `poll`, or `webhook` for the built-in
    /// source of webhook events.
    pub fn key_prefix(&self) -> &'static str {
        match self.kind {
            SourceKind::Webhook => "webhook",
            _ => "poll",
        }
    }
}

fn template_name(source: &str, part: &str) -> String {
    format!("source:{source}:{part}")
}

/// A daily quiet window.
#[derive(Debug, Clone, PartialEq)]
pub struct QuietHours {
    /// Window start (local).
    pub start: NaiveTime,
    /// Window end (local).
    pub end: NaiveTime,
    /// Fixed zone, or None for the contact's.
    pub timezone: Option<Tz>,
    /// For contacts without a zone.
    pub fallback: Tz,
}

/// A per-contact message cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrequencyCap {
    /// Messages allowed in the window.
    pub max: u32,
    /// The window.
    pub window: Duration,
}

/// One rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Its stable name.
    pub name: String,
    /// Index in the file (for template names).
    pub index: usize,
    /// Its source.
    pub source: String,
    /// Trigger.
    pub trigger: Trigger,
    /// Webhook event types (inbound rules: [`Trigger::Event`]).
    pub on: Vec<String>,
    /// Watched field.
    pub field: Option<String>,
    /// Wanted value (JSON).
    pub value: Option<serde_json::Value>,
    /// Has a filter expression (template `rule:INDEX:filter`).
    pub filter: bool,
    /// Job kind.
    pub action: String,
    /// Has a text template (template `rule:INDEX:text`).
    pub text: bool,
    /// Payload: constant values, and string templates by field (template `rule:INDEX:payload:F`).
    pub payload: serde_json::Map<String, serde_json::Value>,
    /// Payload fields that are templates.
    pub payload_templates: Vec<String>,
    /// Workspace.
    pub workspace: String,
    /// Priority.
    pub priority: i32,
    /// Attempts.
    pub max_attempts: Option<i32>,
    /// Delay after the event.
    pub delay: Duration,
    /// Quiet hours in force.
    pub quiet_hours: Option<QuietHours>,
    /// Frequency cap in force (for kinds that message the contact).
    pub frequency_cap: Option<FrequencyCap>,
    /// Sends to opted-out contacts too.
    pub ignore_opt_out: bool,
}

impl Rule {
    /// The template name of one of this rule's templates.
    pub fn template(&self, part: &str) -> String {
        format!("rule:{}:{part}", self.index)
    }

    /// Whether the job messages the contact (frequency caps and quiet hours apply).
    pub fn messages_contact(&self) -> bool {
        MESSAGE_KINDS.contains(&self.action.as_str())
    }
}

/// Job kinds that send something to the contact.
pub const MESSAGE_KINDS: &[&str] = &["send_message", "send_file", "send_voice"];

/// Every source and rule, with their compiled templates.
#[derive(Debug, Clone)]
pub struct Catalog {
    /// Sources by name.
    pub sources: BTreeMap<String, Arc<Source>>,
    /// Rules in file order.
    pub rules: Vec<Rule>,
    /// Templates and expressions of both.
    pub templates: Arc<Templates>,
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

impl Catalog {
    /// Resolves and checks `settings.sources`, `settings.rules` and `settings.policies`.
    pub fn build(settings: &Settings, env: &dyn Env) -> Result<Self, ConfigError> {
        let mut templates = Templates::new();
        let mut sources = BTreeMap::new();
        for (name, raw) in &settings.sources {
            if name == INBOUND_SOURCE {
                return Err(invalid(
                    format!("sources.{name}"),
                    "the name is reserved for the built-in source of webhook events (rules \
                     with `on`); choose another",
                ));
            }
            let source = resolve_source(name, raw.clone(), env, &mut templates)?;
            sources.insert(name.clone(), source);
        }
        if settings
            .rules
            .iter()
            .any(|r| r.on.is_some() || r.source.as_deref() == Some(INBOUND_SOURCE))
        {
            sources.insert(INBOUND_SOURCE.to_owned(), inbound_source());
        }
        let mut rules = Vec::new();
        let mut names = HashSet::new();
        for (index, raw) in settings.rules.iter().enumerate() {
            let rule = resolve_rule(index, raw, settings, &sources, &mut templates)?;
            if !names.insert(rule.name.clone()) {
                return Err(invalid(
                    format!("rules[{index}].name"),
                    format!(
                        "another rule is also called {:?}; give each rule a distinct `name`",
                        rule.name
                    ),
                ));
            }
            rules.push(rule);
        }
        // Rules watch fields: the source keeps their last values per record.
        for rule in &rules {
            if let Some(field) = &rule.field {
                let source = sources
                    .get_mut(&rule.source)
                    .expect("rules name existing sources");
                if !source.watched.contains(field) {
                    source.watched.push(field.clone());
                }
            }
        }
        Ok(Self {
            sources: sources.into_iter().map(|(k, v)| (k, Arc::new(v))).collect(),
            rules,
            templates: Arc::new(templates),
        })
    }

    /// The rules of `source`.
    pub fn rules_of<'a>(&'a self, source: &'a str) -> impl Iterator<Item = &'a Rule> + 'a {
        self.rules.iter().filter(move |r| r.source == source)
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

fn resolve_source(
    name: &str,
    raw: SourceSettings,
    env: &dyn Env,
    templates: &mut Templates,
) -> Result<Source, ConfigError> {
    let key = |field: &str| format!("sources.{name}.{field}");
    if !valid_name(name) {
        return Err(invalid(
            format!("sources.{name}"),
            "source names are 1-64 letters, digits, '_', '-' or '.'",
        ));
    }
    let settings = match &raw.preset {
        Some(preset) => {
            let base = presets::preset(preset).ok_or_else(|| {
                invalid(
                    key("preset"),
                    format!(
                        "unknown preset {preset:?}; known presets: {}",
                        presets::NAMES.join(", ")
                    ),
                )
            })?;
            presets::merge(raw, base)
        }
        None => raw,
    };
    let mut compile = |part: &str, text: &str, what: &str| {
        templates
            .add(&template_name(name, part), text)
            .map_err(|e| invalid(key(what), format!("invalid template: {e}")))
    };

    let kind = if let Some(sql) = &settings.sql {
        if settings.base_url.is_some() || settings.path.is_some() {
            return Err(invalid(
                key("sql"),
                "a source is either SQL (`sql`) or HTTP (`base_url`, `path`), not both",
            ));
        }
        let database_url = match (&settings.database_url, &settings.database_url_env) {
            (Some(url), _) => Some(url.clone()),
            (None, Some(var)) => Some(Secret::new(env.var(var).ok_or_else(|| {
                invalid(
                    key("database_url_env"),
                    format!("environment variable {var} is not set"),
                )
            })?)),
            (None, None) => None,
        };
        if let Some(url) = &database_url
            && !(url.expose().starts_with("postgres://")
                || url.expose().starts_with("postgresql://"))
        {
            return Err(invalid(
                key("database_url"),
                "must start with postgres:// or postgresql://",
            ));
        }
        SourceKind::Sql(SqlSpec {
            sql: sql.clone(),
            database_url,
        })
    } else {
        let base_url = settings.base_url.clone().ok_or_else(|| {
            invalid(
                key("base_url"),
                "required for an HTTP source (or set `preset`, or `sql` for a SQL source)",
            )
        })?;
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(invalid(
                key("base_url"),
                "must start with http:// or https://",
            ));
        }
        let path = settings
            .path
            .clone()
            .ok_or_else(|| invalid(key("path"), "required for an HTTP source"))?;
        compile("path", &path, "path")?;
        let method = match settings
            .method
            .as_deref()
            .unwrap_or("GET")
            .to_ascii_uppercase()
            .as_str()
        {
            "GET" => reqwest::Method::GET,
            "POST" => reqwest::Method::POST,
            other => {
                return Err(invalid(
                    key("method"),
                    format!("must be GET or POST, not {other:?}"),
                ));
            }
        };
        let mut query = Vec::new();
        for (param, text) in settings.query.clone().unwrap_or_default() {
            compile(&format!("query:{param}"), &text, &format!("query.{param}"))?;
            query.push(param);
        }
        let mut headers = Vec::new();
        for (header, text) in settings.headers.clone().unwrap_or_default() {
            if reqwest::header::HeaderName::from_bytes(header.as_bytes()).is_err() {
                return Err(invalid(
                    key(&format!("headers.{header}")),
                    "not a valid header name",
                ));
            }
            compile(
                &format!("header:{header}"),
                &text,
                &format!("headers.{header}"),
            )?;
            headers.push(header);
        }
        let body = match &settings.body {
            Some(text) => {
                compile("body", text, "body")?;
                true
            }
            None => false,
        };
        let token = match (&settings.token, &settings.token_env) {
            (Some(token), _) => Some(token.clone()),
            (None, Some(var)) => Some(Secret::new(env.var(var).ok_or_else(|| {
                invalid(
                    key("token_env"),
                    format!("environment variable {var} is not set"),
                )
            })?)),
            (None, None) => None,
        };
        let auth_settings = settings.auth.clone().unwrap_or(if token.is_some() {
            AuthSettings::Bearer
        } else {
            AuthSettings::None
        });
        let need_token = || {
            token
                .clone()
                .ok_or_else(|| invalid(key("token"), "required by `auth` (or set `token_env`)"))
        };
        let auth = match auth_settings {
            AuthSettings::None => Auth::None,
            AuthSettings::Bearer => Auth::Bearer(need_token()?),
            AuthSettings::Header {
                name: header,
                prefix,
            } => {
                if reqwest::header::HeaderName::from_bytes(header.as_bytes()).is_err() {
                    return Err(invalid(key("auth.name"), "not a valid header name"));
                }
                Auth::Header {
                    name: header,
                    value: Secret::new(format!("{prefix}{}", need_token()?.expose())),
                }
            }
            AuthSettings::Query { name: param } => Auth::Query {
                name: param,
                value: need_token()?,
            },
            AuthSettings::Oauth2Refresh {
                token_url,
                client_id,
                client_secret,
                client_secret_env,
                refresh_token,
                refresh_token_env,
                header,
                prefix,
            } => {
                let secret = |inline: Option<Secret>, var: Option<String>, field: &str| match (
                    inline, var,
                ) {
                    (Some(v), _) => Ok(v),
                    (None, Some(var)) => env.var(&var).map(Secret::new).ok_or_else(|| {
                        invalid(
                            key(&format!("auth.{field}_env")),
                            format!("environment variable {var} is not set"),
                        )
                    }),
                    (None, None) => Err(invalid(
                        key(&format!("auth.{field}")),
                        "required by the oauth2_refresh auth",
                    )),
                };
                let token_url =
                    if token_url.starts_with("http://") || token_url.starts_with("https://") {
                        token_url
                    } else {
                        format!("{}{}", base_url.trim_end_matches('/'), token_url)
                    };
                Auth::OAuth2 {
                    token_url,
                    client_id,
                    client_secret: secret(client_secret, client_secret_env, "client_secret")?,
                    refresh_token: secret(refresh_token, refresh_token_env, "refresh_token")?,
                    header: header.unwrap_or_else(|| "Authorization".to_owned()),
                    prefix: prefix.unwrap_or_else(|| "Bearer ".to_owned()),
                }
            }
            AuthSettings::Basic { username, password } => match username {
                Some(user) => Auth::Basic {
                    username: Secret::new(user),
                    password: match password {
                        Some(p) => p,
                        None => need_token()?,
                    },
                },
                None => Auth::Basic {
                    username: need_token()?,
                    password: password.unwrap_or_else(|| Secret::new("")),
                },
            },
        };
        let paging = settings.pagination.clone().unwrap_or_default();
        let need = |value: &Option<String>, field: &str| {
            value.clone().ok_or_else(|| {
                invalid(
                    key(&format!("pagination.{field}")),
                    format!("required for pagination type {:?}", paging.kind),
                )
            })
        };
        let pagination = match paging.kind.as_str() {
            "" | "none" => Pagination::None,
            "token" => Pagination::Token {
                path: need(&paging.token_path, "token_path")?,
            },
            "next_url" => Pagination::NextUrl {
                path: need(&paging.url_path, "url_path")?,
            },
            "link_header" => Pagination::LinkHeader,
            "page" => Pagination::Page {
                first: paging.first_page.unwrap_or(1),
            },
            "offset" => Pagination::Offset,
            other => {
                return Err(invalid(
                    key("pagination.type"),
                    format!(
                        "unknown pagination type {other:?}; use token, next_url, link_header, page, offset or none"
                    ),
                ));
            }
        };
        let mut enrich = settings.enrich.clone().unwrap_or_default();
        for (i, step) in enrich.iter_mut().enumerate() {
            let k = |f: &str| format!("enrich[{i}].{f}");
            if !valid_name(&step.name)
                || ["record", "contact", "source"].contains(&step.name.as_str())
            {
                return Err(invalid(
                    key(&k("name")),
                    "a variable name other than record, contact or source",
                ));
            }
            step.method = step.method.to_ascii_uppercase();
            if step.method != "GET" && step.method != "POST" {
                return Err(invalid(key(&k("method")), "must be GET or POST"));
            }
            if step.batch_size == 0 {
                return Err(invalid(key(&k("batch_size")), "must be at least 1"));
            }
            compile(&format!("enrich:{i}:path"), &step.path, &k("path"))?;
            for (param, text) in &step.query {
                compile(
                    &format!("enrich:{i}:query:{param}"),
                    text,
                    &k(&format!("query.{param}")),
                )?;
            }
            if let Some(body) = &step.body {
                compile(&format!("enrich:{i}:body"), body, &k("body"))?;
            }
        }
        if let Some(rps) = settings.requests_per_second
            && !(0.001..=1000.0).contains(&rps)
        {
            return Err(invalid(
                key("requests_per_second"),
                "must be between 0.001 and 1000",
            ));
        }
        SourceKind::Http(Box::new(HttpSpec {
            base_url: base_url.trim_end_matches('/').to_owned(),
            method,
            query,
            headers,
            body,
            auth,
            records_path: settings.records_path.clone().unwrap_or_default(),
            pagination,
            stop_path: paging.stop_path.clone(),
            more_path: paging.more_path.clone(),
            result_cap: settings.result_cap,
            requests_per_second: settings.requests_per_second,
            max_retries: settings.max_retries.unwrap_or(5),
            timeout: Duration::from_secs(settings.timeout_seconds.unwrap_or(30).max(1)),
            properties: settings.properties.clone().unwrap_or_default(),
            enrich,
            sleep: Arc::new(TokioSleep),
        }))
    };

    let schedule = match &settings.schedule {
        Some(text) => Some(schedule::parse(text).map_err(|e| invalid(key("schedule"), e))?),
        None => None,
    };
    let initial = match settings.initial.as_deref().map(str::trim) {
        None | Some("now") => Initial::Now,
        Some(text) => Initial::At(
            DateTime::parse_from_rfc3339(text)
                .map_err(|e| {
                    invalid(
                        key("initial"),
                        format!("must be \"now\" or an RFC 3339 time: {e}"),
                    )
                })?
                .with_timezone(&Utc),
        ),
    };
    let region = match &settings.default_region {
        Some(code) => Some(phone::region(code).ok_or_else(|| {
            invalid(
                key("default_region"),
                format!("{code:?} is not an ISO 3166 region code such as US or BR"),
            )
        })?),
        None => None,
    };
    let cursor_field = settings.cursor_field.clone().ok_or_else(|| {
        invalid(
            key("cursor_field"),
            "required: the record field holding its modification time",
        )
    })?;
    let id_field = settings
        .id_field
        .clone()
        .ok_or_else(|| invalid(key("id_field"), "required: the record field holding its id"))?;
    let phone_fields = settings.phone_fields.clone().unwrap_or_default();
    if phone_fields.is_empty() {
        return Err(invalid(
            key("phone_fields"),
            "required: at least one field holding the contact's phone",
        ));
    }
    if let Some(expr) = &settings.skip_if {
        templates
            .add_expression(&template_name(name, "skip_if"), expr)
            .map_err(|e| invalid(key("skip_if"), format!("invalid expression: {e}")))?;
    }
    if let Some(expr) = &settings.opted_out_if {
        templates
            .add_expression(&template_name(name, "opted_out_if"), expr)
            .map_err(|e| invalid(key("opted_out_if"), format!("invalid expression: {e}")))?;
    }
    let sorted = settings
        .sorted
        .unwrap_or(matches!(kind, SourceKind::Sql(_)));
    if !sorted && matches!(&kind, SourceKind::Http(spec) if spec.result_cap.is_some()) {
        return Err(invalid(
            key("result_cap"),
            "re-anchoring at a result cap needs results in ascending cursor order (`sorted = true`)",
        ));
    }
    if !sorted && settings.keyset_paging == Some(true) {
        return Err(invalid(key("keyset_paging"), "needs `sorted = true`"));
    }
    if !sorted && settings.max_records_per_run.is_some() {
        // An unsorted source is checkpointed only once its whole window is read: a run stopped
        // early would start over at the same records every time and never reach the others.
        return Err(invalid(
            key("max_records_per_run"),
            "needs `sorted = true` (an unsorted source is checkpointed only at the end of its \
             window, so a run stopped early would start over at the same records)",
        ));
    }
    let page_size = settings.page_size.unwrap_or(100);
    if page_size == 0 || page_size > 10_000 {
        return Err(invalid(key("page_size"), "must be between 1 and 10000"));
    }
    let lookback = settings.lookback_seconds.unwrap_or(600);
    let settle = settings.settle_seconds.unwrap_or(60);
    if lookback > 30 * 86_400 || settle > 86_400 {
        return Err(invalid(
            key("lookback_seconds"),
            "lookback at most 30 days and settle at most 1 day",
        ));
    }
    Ok(Source {
        name: name.to_owned(),
        preset: settings.preset.clone(),
        sorted,
        keyset_paging: settings.keyset_paging.unwrap_or(false)
            && matches!(kind, SourceKind::Http(_)),
        resume_token: settings.resume_token.unwrap_or(false)
            && matches!(&kind, SourceKind::Http(spec) if matches!(spec.pagination, Pagination::Token { .. })),
        kind,
        schedule,
        schedule_text: settings.schedule.clone(),
        enabled: settings.enabled.unwrap_or(true),
        initial,
        lookback: Duration::from_secs(lookback),
        settle: Duration::from_secs(settle),
        region,
        timezone_field: settings.timezone_field.clone(),
        max_records_per_run: settings.max_records_per_run,
        id_field,
        cursor_field,
        created_field: settings.created_field.clone(),
        fields_path: settings.fields_path.clone(),
        phone_fields,
        name_fields: settings.name_fields.clone().unwrap_or_default(),
        skip_if: settings.skip_if.is_some(),
        opted_out_if: settings.opted_out_if.is_some(),
        page_size,
        watched: Vec::new(),
    })
}

fn resolve_rule(
    index: usize,
    raw: &RuleSettings,
    settings: &Settings,
    sources: &BTreeMap<String, Source>,
    templates: &mut Templates,
) -> Result<Rule, ConfigError> {
    let key = |field: &str| format!("rules[{index}].{field}");
    let (source, trigger, on) = source_and_trigger(index, raw)?;
    if !sources.contains_key(&source) {
        return Err(invalid(
            key("source"),
            format!(
                "no source called {:?} (configured: {})",
                source,
                sources.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    if !settings.workspaces.contains_key(&raw.workspace) {
        return Err(invalid(
            key("workspace"),
            format!("no workspace called {:?}", raw.workspace),
        ));
    }
    let value = raw.value.as_ref().map(toml_to_json);
    match trigger {
        Trigger::FieldChanged | Trigger::FieldEquals if raw.field.is_none() => {
            return Err(invalid(
                key("field"),
                format!("required by trigger {:?}", trigger.as_str()),
            ));
        }
        Trigger::FieldEquals if value.is_none() => {
            return Err(invalid(
                key("value"),
                "required by trigger \"field_equals\"",
            ));
        }
        Trigger::Created | Trigger::Updated if raw.field.is_some() || value.is_some() => {
            return Err(invalid(
                key("field"),
                format!(
                    "not used by trigger {:?}; use `filter` to narrow it",
                    trigger.as_str()
                ),
            ));
        }
        _ => {}
    }
    if trigger == Trigger::Created && sources[&source].created_field.is_none() {
        return Err(invalid(
            key("trigger"),
            format!(
                "\"created\" needs `created_field` on source {:?} (the record's creation time); \
                 use \"updated\" with a `filter` otherwise",
                source
            ),
        ));
    }
    if raw.delay_seconds > 366 * 86_400 {
        return Err(invalid(key("delay_seconds"), "at most one year"));
    }
    let name = match &raw.name {
        Some(name) if valid_name(name) => name.clone(),
        Some(_) => {
            return Err(invalid(
                key("name"),
                "rule names are 1-64 letters, digits, '_', '-' or '.'",
            ));
        }
        None => {
            let what = match trigger {
                Trigger::Event => on.join(","),
                other => other.as_str().to_owned(),
            };
            let mut parts = vec![source.clone(), what];
            parts.extend(raw.field.clone());
            if let Some(v) = &value {
                parts.push(match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                });
            }
            parts.push(raw.action.clone());
            parts.join(":")
        }
    };
    let template = |part: &str| format!("rule:{index}:{part}");
    let filter = match &raw.filter {
        Some(expr) => {
            templates
                .add_expression(&template("filter"), expr)
                .map_err(|e| invalid(key("filter"), format!("invalid expression: {e}")))?;
            true
        }
        None => false,
    };
    let text = match &raw.template {
        Some(text) => {
            templates
                .add(&template("text"), text)
                .map_err(|e| invalid(key("template"), format!("invalid template: {e}")))?;
            true
        }
        None => false,
    };
    if raw.action == "send_message"
        && !text
        && !raw
            .payload
            .as_ref()
            .is_some_and(|p| p.contains_key("text") || p.contains_key("file_uid"))
    {
        return Err(invalid(
            key("template"),
            "a send_message rule needs a `template` (the message text)",
        ));
    }
    let mut payload = serde_json::Map::new();
    let mut payload_templates = Vec::new();
    for (field, value) in raw.payload.clone().unwrap_or_default() {
        if ["phone", "chat_id", "jid"].contains(&field.as_str()) {
            return Err(invalid(
                key(&format!("payload.{field}")),
                "the contact's phone is filled in by the rule; do not set it",
            ));
        }
        if let toml::Value::String(text) = &value {
            templates
                .add(&template(&format!("payload:{field}")), text)
                .map_err(|e| {
                    invalid(
                        key(&format!("payload.{field}")),
                        format!("invalid template: {e}"),
                    )
                })?;
            payload_templates.push(field.clone());
        }
        payload.insert(field, toml_to_json(&value));
    }
    if let Some(attempts) = raw.max_attempts
        && !(1..=100).contains(&attempts)
    {
        return Err(invalid(key("max_attempts"), "must be between 1 and 100"));
    }
    let quiet = raw
        .quiet_hours
        .as_ref()
        .or(settings.policies.quiet_hours.as_ref());
    let quiet_key = if raw.quiet_hours.is_some() {
        key("quiet_hours")
    } else {
        "policies.quiet_hours".to_owned()
    };
    let quiet_hours = match quiet {
        Some(q) if q.enabled => Some(resolve_quiet_hours(q, &quiet_key)?),
        _ => None,
    };
    let cap = raw
        .frequency_cap
        .as_ref()
        .or(settings.policies.frequency_cap.as_ref());
    let cap_key = if raw.frequency_cap.is_some() {
        key("frequency_cap")
    } else {
        "policies.frequency_cap".to_owned()
    };
    let frequency_cap = match cap {
        Some(FrequencyCapSettings { max: 0, .. }) | None => None,
        Some(FrequencyCapSettings { max, hours }) => {
            if *hours == 0 || *hours > 24 * 366 {
                return Err(invalid(
                    format!("{cap_key}.hours"),
                    "must be between 1 and 8784",
                ));
            }
            Some(FrequencyCap {
                max: *max,
                window: Duration::from_secs(u64::from(*hours) * 3600),
            })
        }
    };
    if let Some(q) = &quiet_hours
        && q.timezone.is_none()
        && sources[&source].timezone_field.is_none()
        && raw
            .quiet_hours
            .as_ref()
            .or(settings.policies.quiet_hours.as_ref())
            .is_some_and(|s| s.fallback_timezone.is_none())
    {
        return Err(invalid(
            format!("{quiet_key}.timezone"),
            format!(
                "\"contact\" needs `timezone_field` on source {:?} or a `fallback_timezone`",
                source
            ),
        ));
    }
    Ok(Rule {
        name,
        index,
        source: source.clone(),
        trigger,
        on,
        field: raw.field.clone(),
        value,
        filter,
        action: raw.action.clone(),
        text,
        payload,
        payload_templates,
        workspace: raw.workspace.clone(),
        priority: raw.priority,
        max_attempts: raw.max_attempts,
        delay: Duration::from_secs(raw.delay_seconds),
        quiet_hours,
        frequency_cap,
        ignore_opt_out: raw.ignore_opt_out,
    })
}

/// The rule's source and trigger: `on` makes an inbound rule of the built-in source (its
/// trigger is the event); a poll rule names both.
fn source_and_trigger(
    index: usize,
    raw: &RuleSettings,
) -> Result<(String, Trigger, Vec<String>), ConfigError> {
    let key = |field: &str| format!("rules[{index}].{field}");
    let Some(on) = &raw.on else {
        let source = raw.source.clone().ok_or_else(|| {
            invalid(
                key("source"),
                "required: the source whose records the rule looks at (or `on` with webhook \
                 event types for an inbound rule)",
            )
        })?;
        if source == INBOUND_SOURCE {
            return Err(invalid(
                key("on"),
                "rules of the built-in source \"timelines\" need `on`: the webhook event types \
                 they react to, e.g. on = \"message:received:new\"",
            ));
        }
        let trigger = raw.trigger.ok_or_else(|| {
            invalid(
                key("trigger"),
                "required: created, updated, field_changed or field_equals",
            )
        })?;
        return Ok((source, trigger, Vec::new()));
    };
    if raw.source.as_deref().is_some_and(|s| s != INBOUND_SOURCE) {
        return Err(invalid(
            key("source"),
            "a rule with `on` reacts to webhook events (the built-in source \"timelines\"); \
             leave `source` out",
        ));
    }
    if raw.trigger.is_some() || raw.field.is_some() || raw.value.is_some() {
        return Err(invalid(
            key("trigger"),
            "not used with `on` (the webhook event is the trigger); narrow it with `filter`",
        ));
    }
    let on = on.to_vec();
    if on.is_empty() {
        return Err(invalid(key("on"), "name at least one webhook event type"));
    }
    for event in &on {
        if !crate::webhooks::EVENT_TYPES.contains(&event.as_str()) {
            return Err(invalid(
                key("on"),
                format!(
                    "unknown webhook event type {event:?} (known: {})",
                    crate::webhooks::EVENT_TYPES.join(", ")
                ),
            ));
        }
    }
    Ok((INBOUND_SOURCE.to_owned(), Trigger::Event, on))
}

fn resolve_quiet_hours(q: &QuietHoursSettings, key: &str) -> Result<QuietHours, ConfigError> {
    let time = |text: &str, field: &str| {
        NaiveTime::parse_from_str(text.trim(), "%H:%M").map_err(|_| {
            invalid(
                format!("{key}.{field}"),
                format!("{text:?} is not a time of day like 21:00"),
            )
        })
    };
    let start = time(&q.start, "start")?;
    let end = time(&q.end, "end")?;
    if start == end {
        return Err(invalid(format!("{key}.end"), "must differ from start"));
    }
    let zone = |text: &str, field: &str| {
        text.parse::<Tz>().map_err(|_| {
            invalid(
                format!("{key}.{field}"),
                format!("{text:?} is not an IANA time zone such as Europe/Madrid"),
            )
        })
    };
    let timezone = match q.timezone.as_str() {
        "contact" => None,
        other => Some(zone(other, "timezone")?),
    };
    let fallback = match &q.fallback_timezone {
        Some(text) => zone(text, "fallback_timezone")?,
        None => timezone.unwrap_or(Tz::UTC),
    };
    Ok(QuietHours {
        start,
        end,
        timezone,
        fallback,
    })
}

/// A TOML value as JSON (dates become strings).
pub fn toml_to_json(value: &toml::Value) -> serde_json::Value {
    match value {
        toml::Value::String(s) => serde_json::Value::String(s.clone()),
        toml::Value::Integer(i) => serde_json::Value::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Null),
        toml::Value::Boolean(b) => serde_json::Value::Bool(*b),
        toml::Value::Datetime(d) => serde_json::Value::String(d.to_string()),
        toml::Value::Array(items) => {
            serde_json::Value::Array(items.iter().map(toml_to_json).collect())
        }
        toml::Value::Table(table) => serde_json::Value::Object(
            table
                .iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
        ),
    }
}
