//! Reading pages of records from a source: HTTP APIs (templated requests, five pagination
//! styles, rate limits, `Retry-After`, re-anchoring at result caps) and SQL queries (keyset pages).

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use chrono::{DateTime, SecondsFormat, Utc};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::header::{HeaderMap, LINK, RETRY_AFTER};
use serde_json::{Value, json};
use sqlx::PgPool;

use super::record::{lookup, text};
use super::spec::{Auth, HttpSpec, Pagination, Source, SqlSpec};
use super::template::{Templates, context};

/// Why a page could not be read. Never contains a credential.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct FetchError {
    /// What went wrong, for people.
    pub message: String,
    /// Worth another try (429, 5xx, network).
    pub retryable: bool,
    /// The server's `Retry-After`.
    pub retry_after: Option<Duration>,
    /// The HTTP status, when there was an answer.
    pub status: Option<u16>,
}

impl FetchError {
    fn fatal(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
            retry_after: None,
            status: None,
        }
    }
}

/// One page of raw records.
#[derive(Debug, Default)]
pub struct Page {
    /// The records, as the source returned them.
    pub records: Vec<Value>,
    /// The server's clock (`Date` header), when it sent one.
    pub server_time: Option<DateTime<Utc>>,
}

/// The time window of a run: `[lower, upper)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Inclusive.
    pub lower: DateTime<Utc>,
    /// Exclusive.
    pub upper: DateTime<Utc>,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// How a source's requests wait before a retry (the backoff's pause, `Retry-After`,
/// `x-ratelimit-reset`). The service waits on tokio's timer ([`TokioSleep`]); tests give a
/// source a virtual clock, so a vendor's minute-long `Retry-After` is honoured without taking a
/// minute and the fake vendor sees that minute pass.
pub trait Sleep: Send + Sync + std::fmt::Debug {
    /// Waits `duration`.
    fn sleep(&self, duration: Duration) -> futures_util::future::BoxFuture<'static, ()>;
}

/// A source's [`Sleep`] as backon's sleeper.
struct Waits(Arc<dyn Sleep>);

impl backon::Sleeper for Waits {
    type Sleep = futures_util::future::BoxFuture<'static, ()>;

    fn sleep(&self, duration: Duration) -> Self::Sleep {
        self.0.sleep(duration)
    }
}

/// Waits on tokio's timer.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioSleep;

impl Sleep for TokioSleep {
    fn sleep(&self, duration: Duration) -> futures_util::future::BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// Makes HTTP requests for one source: auth, rate limit, retries. Shared by the page reader and
/// the enrichment lookups.
pub struct HttpClient {
    client: reqwest::Client,
    spec: HttpSpec,
    limiter: Option<DefaultDirectRateLimiter>,
    /// Requests made (including retries).
    pub requests: u32,
    /// Pause before the first retry (tests shorten it).
    pub retry_base: Duration,
    /// The current OAuth access token (OAuth sources).
    access: Option<crate::config::Secret>,
}

impl HttpClient {
    /// A client for `spec`.
    pub fn new(client: reqwest::Client, spec: &HttpSpec) -> Self {
        let limiter = spec.requests_per_second.map(|rps| {
            let period = Duration::from_secs_f64(1.0 / rps);
            let quota = Quota::with_period(period)
                .expect("a positive rate has a positive period")
                .allow_burst(NonZeroU32::MIN);
            RateLimiter::direct(quota)
        });
        Self {
            client,
            spec: spec.clone(),
            limiter,
            requests: 0,
            retry_base: Duration::from_secs(1),
            access: None,
        }
    }

    /// Gets a new OAuth access token with the refresh token. The error never holds a secret.
    async fn refresh(&mut self) -> Result<(), FetchError> {
        let Auth::OAuth2 {
            token_url,
            client_id,
            client_secret,
            refresh_token,
            ..
        } = &self.spec.auth
        else {
            return Ok(());
        };
        self.requests += 1;
        let answer = self
            .client
            .post(token_url)
            .timeout(self.spec.timeout)
            .form(&[
                ("grant_type", "refresh_token"),
                ("client_id", client_id.as_str()),
                ("client_secret", client_secret.expose()),
                ("refresh_token", refresh_token.expose()),
            ])
            .send()
            .await
            .map_err(|e| FetchError {
                message: format!("refreshing the access token failed: {}", e.without_url()),
                retryable: true,
                retry_after: None,
                status: None,
            })?;
        let status = answer.status().as_u16();
        let body: Value = answer.json().await.unwrap_or(Value::Null);
        match body.get("access_token").and_then(Value::as_str) {
            Some(token) if status < 300 => {
                self.access = Some(crate::config::Secret::rotating(token));
                Ok(())
            }
            _ => Err(FetchError::fatal(format!(
                "refreshing the access token failed: HTTP {status}, {}",
                body.get("error")
                    .or_else(|| body.get("error_description"))
                    .map(Value::to_string)
                    .unwrap_or_else(|| "no access_token in the answer".to_owned())
            ))),
        }
    }

    /// Sends one request (retrying 429, 5xx and network errors per the source's settings) and
    /// returns the JSON answer and its headers.
    pub async fn send(
        &mut self,
        method: reqwest::Method,
        url: &str,
        query: &[(String, String)],
        headers: &[(String, String)],
        body: Option<&str>,
    ) -> Result<(Value, HeaderMap), FetchError> {
        let oauth = matches!(self.spec.auth, Auth::OAuth2 { .. });
        if oauth && self.access.is_none() {
            self.refresh().await?;
        }
        let first = self
            .send_retrying(method.clone(), url, query, headers, body)
            .await;
        match first {
            // An expired access token: one refresh, one more try.
            Err(FetchError {
                status: Some(401), ..
            }) if oauth => {
                self.refresh().await?;
                self.send_retrying(method, url, query, headers, body).await
            }
            other => other,
        }
    }

    async fn send_retrying(
        &mut self,
        method: reqwest::Method,
        url: &str,
        query: &[(String, String)],
        headers: &[(String, String)],
        body: Option<&str>,
    ) -> Result<(Value, HeaderMap), FetchError> {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.retry_base)
            .with_max_delay(Duration::from_secs(120))
            .with_max_times(self.spec.max_retries as usize)
            .with_jitter();
        let sleep = Waits(Arc::clone(&self.spec.sleep));
        let attempt = || async {
            if let Some(limiter) = &self.limiter {
                limiter.until_ready().await;
            }
            self.once(method.clone(), url, query, headers, body).await
        };
        let mut requests = 0u32;
        let counted = || {
            requests += 1;
            attempt()
        };
        let result = counted
            .retry(backoff)
            .sleep(sleep)
            .when(|e: &FetchError| e.retryable)
            // Retry-After sets the length of a retry that the budget still allows; it never
            // adds retries (backon passes None once they are used up), and never goes below the
            // backoff's own pause.
            .adjust(|e: &FetchError, delay| {
                delay.map(|d| e.retry_after.map_or(d, |after| after.max(d)))
            })
            .notify(|e: &FetchError, delay| {
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "source request failed; retrying");
            })
            .await;
        self.requests += requests;
        result
    }

    async fn once(
        &self,
        method: reqwest::Method,
        url: &str,
        query: &[(String, String)],
        headers: &[(String, String)],
        body: Option<&str>,
    ) -> Result<(Value, HeaderMap), FetchError> {
        let mut request = self
            .client
            .request(method, url)
            .timeout(self.spec.timeout)
            .header(reqwest::header::ACCEPT, "application/json")
            .query(query);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        request = match &self.spec.auth {
            Auth::None => request,
            Auth::Bearer(token) => request.bearer_auth(token.expose()),
            Auth::Header { name, value } => request.header(name, value.expose()),
            Auth::Query { name, value } => request.query(&[(name, value.expose())]),
            Auth::Basic { username, password } => {
                request.basic_auth(username.expose(), Some(password.expose()))
            }
            Auth::OAuth2 { header, prefix, .. } => match &self.access {
                Some(token) => request.header(header, format!("{prefix}{}", token.expose())),
                None => request,
            },
        };
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_owned());
        }
        let response = request.send().await.map_err(|e| FetchError {
            // Without the URL: a query-string credential would be in it.
            message: format!("request failed: {}", e.without_url()),
            retryable: true,
            retry_after: None,
            status: None,
        })?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.map_err(|e| FetchError {
            message: format!("reading the answer failed: {}", e.without_url()),
            retryable: true,
            retry_after: None,
            status: None,
        })?;
        // 304 to a conditional request (Zoho's If-Modified-Since): nothing changed.
        if status == reqwest::StatusCode::NOT_MODIFIED {
            return Ok((Value::Null, headers));
        }
        if !status.is_success() {
            // `Retry-After`, else the rate-limit window's reset (Pipedrive: `x-ratelimit-reset`,
            // seconds until the window resets) on a 429.
            let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
            let retry_after = header(RETRY_AFTER.as_str())
                .and_then(parse_retry_after)
                .or_else(|| {
                    (status.as_u16() == 429)
                        .then(|| header("x-ratelimit-reset"))
                        .flatten()
                        .and_then(parse_retry_after)
                });
            let snippet = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned();
            return Err(FetchError {
                message: format!("HTTP {} from {}: {snippet}", status.as_u16(), path_of(url)),
                retryable: status.as_u16() == 429 || status.is_server_error(),
                retry_after,
                status: Some(status.as_u16()),
            });
        }
        if bytes.is_empty() {
            return Ok((Value::Null, headers));
        }
        let value = serde_json::from_slice(&bytes).map_err(|e| {
            FetchError::fatal(format!("the answer from {} is not JSON: {e}", path_of(url)))
        })?;
        Ok((value, headers))
    }
}

/// The path of a URL, for messages (no host-embedded or query credentials).
fn path_of(url: &str) -> String {
    reqwest::Url::parse(url)
        .map(|u| u.path().to_owned())
        .unwrap_or_else(|_| "the source".to_owned())
}

/// `Retry-After` as seconds or an HTTP date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0)
            .then(|| Duration::from_secs_f64(seconds.min(3600.0)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default()
            .min(Duration::from_secs(3600)),
    )
}

/// The `rel="next"` URL of a `Link` header.
fn next_link(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|part| {
            let (url, params) = part.split_once(';')?;
            let rel_next = params.split(';').any(|p| {
                let p = p.trim().replace(' ', "");
                p == "rel=\"next\"" || p == "rel=next"
            });
            rel_next.then(|| {
                url.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_owned()
            })
        })
}

fn server_time(headers: &HeaderMap) -> Option<DateTime<Utc>> {
    let value = headers.get(reqwest::header::DATE)?.to_str().ok()?;
    httpdate::parse_http_date(value)
        .ok()
        .map(DateTime::<Utc>::from)
}

/// Where the reader is in the result set.
#[derive(Debug, Clone, Default)]
struct Cursor {
    token: Option<String>,
    next_url: Option<String>,
    number: u32,
    offset: u64,
    done: bool,
    /// Results read in the current query (for result caps).
    in_query: u64,
    /// The latest token the vendor gave (kept at the end of its stream too).
    resume: Option<String>,
}

/// Reads pages of an HTTP source.
pub struct HttpPages {
    /// The request maker (its `requests` count is the run's).
    pub http: HttpClient,
    source: Arc<Source>,
    templates: Arc<Templates>,
    window: Window,
    cursor: Cursor,
}

impl HttpPages {
    /// A reader of `window`.
    pub fn new(
        client: reqwest::Client,
        source: Arc<Source>,
        spec: &HttpSpec,
        templates: Arc<Templates>,
        window: Window,
    ) -> Self {
        let first = match spec.pagination {
            Pagination::Page { first } => first,
            _ => 1,
        };
        Self {
            http: HttpClient::new(client, spec),
            source,
            templates,
            window,
            cursor: Cursor {
                number: first,
                ..Cursor::default()
            },
        }
    }

    fn spec(&self) -> &HttpSpec {
        &self.http.spec
    }

    /// Whether the next page would pass the source's result cap, so the query should be
    /// re-anchored at the last cursor value read.
    pub fn near_cap(&self) -> bool {
        match self.spec().result_cap {
            Some(cap) => {
                !self.cursor.done
                    && self.cursor.in_query + u64::from(self.source.page_size) > u64::from(cap)
            }
            None => false,
        }
    }

    /// Starts the query again from `lower` (inclusive).
    pub fn reanchor(&mut self, lower: DateTime<Utc>) {
        self.window.lower = lower;
        let first = match self.spec().pagination {
            Pagination::Page { first } => first,
            _ => 1,
        };
        self.cursor = Cursor {
            number: first,
            ..Cursor::default()
        };
    }

    /// Whether the last page was the last.
    pub fn is_done(&self) -> bool {
        self.cursor.done
    }

    /// Starts from a vendor token saved by an earlier run.
    pub fn resume_from(&mut self, token: String) {
        self.cursor.token = Some(token);
    }

    /// The vendor token to resume from after the pages read so far.
    pub fn resume_token(&self) -> Option<String> {
        self.cursor.resume.clone()
    }

    /// Narrows the window's upper bound (once the server's clock is known).
    pub fn set_upper(&mut self, upper: DateTime<Utc>) {
        self.window.upper = upper;
    }

    fn render(&self, part: &str, ctx: &minijinja::Value) -> Result<String, FetchError> {
        self.templates
            .render(&self.source.template(part), ctx)
            .map_err(|e| FetchError::fatal(format!("rendering `{part}`: {e}")))
    }

    fn context(&self, spec: &HttpSpec) -> minijinja::Value {
        context(&json!({
            "cursor": {"lower": rfc3339(self.window.lower), "upper": rfc3339(self.window.upper)},
            "page": {
                "token": self.cursor.token,
                "number": self.cursor.number,
                "offset": self.cursor.offset,
                "size": self.source.page_size,
            },
            "properties": spec.properties,
        }))
    }

    /// The configured headers, rendered (sent on every page, next-URL pages too).
    fn headers(
        &self,
        spec: &HttpSpec,
        ctx: &minijinja::Value,
    ) -> Result<Vec<(String, String)>, FetchError> {
        let mut headers = Vec::new();
        for name in &spec.headers {
            let value = self.render(&format!("header:{name}"), ctx)?;
            if !value.is_empty() {
                headers.push((name.clone(), value));
            }
        }
        Ok(headers)
    }

    /// The next page, or None at the end.
    pub async fn next_page(&mut self) -> Result<Option<Page>, FetchError> {
        if self.cursor.done {
            return Ok(None);
        }
        let spec = self.spec().clone();
        let (value, headers) = match self.cursor.next_url.clone() {
            Some(url) => {
                let url = self.absolute(&url)?;
                let ctx = self.context(&spec);
                let headers = self.headers(&spec, &ctx)?;
                self.http
                    .send(reqwest::Method::GET, &url, &[], &headers, None)
                    .await?
            }
            None => {
                let ctx = self.context(&spec);
                let path = self.render("path", &ctx)?;
                let url = format!("{}{}", spec.base_url, path);
                let mut query = Vec::new();
                for param in &spec.query {
                    let value = self.render(&format!("query:{param}"), &ctx)?;
                    if !value.is_empty() {
                        query.push((param.clone(), value));
                    }
                }
                let headers = self.headers(&spec, &ctx)?;
                let body = if spec.body {
                    Some(self.render("body", &ctx)?)
                } else {
                    None
                };
                self.http
                    .send(spec.method.clone(), &url, &query, &headers, body.as_deref())
                    .await?
            }
        };
        let records = match lookup(&value, &spec.records_path) {
            Some(Value::Array(items)) => items.clone(),
            Some(Value::Null) | None if spec.records_path.is_empty() => Vec::new(),
            // Some APIs leave the list out of an empty answer.
            None => Vec::new(),
            Some(other) => {
                return Err(FetchError::fatal(format!(
                    "`records_path` {:?} is a {} in the answer, not a list",
                    spec.records_path,
                    kind_of(other)
                )));
            }
        };
        self.advance(&spec, &value, &headers, records.len());
        Ok(Some(Page {
            records,
            server_time: server_time(&headers),
        }))
    }

    fn advance(&mut self, spec: &HttpSpec, body: &Value, headers: &HeaderMap, count: usize) {
        let c = &mut self.cursor;
        c.in_query += count as u64;
        if let Pagination::Token { path } = &spec.pagination
            && let Some(token) = lookup(body, path).and_then(text).filter(|t| !t.is_empty())
        {
            c.resume = Some(token);
        }
        let flag = |path: &Option<String>| {
            path.as_deref()
                .and_then(|p| lookup(body, p))
                .and_then(Value::as_bool)
        };
        if flag(&spec.stop_path) == Some(true) || flag(&spec.more_path) == Some(false) {
            c.done = true;
            return;
        }
        // With an explicit "more" or "stop" flag, the flag decides; without one, a short page
        // ends page/offset paging.
        let flagged = spec.stop_path.is_some() || spec.more_path.is_some();
        let short = !flagged && count < self.source.page_size as usize;
        match &spec.pagination {
            Pagination::None => c.done = true,
            Pagination::Token { path } => {
                let next = lookup(body, path).and_then(text).filter(|t| !t.is_empty());
                // A token that does not move would loop forever.
                if next.is_none() || next == c.token {
                    c.done = true;
                }
                c.token = next;
            }
            Pagination::NextUrl { path } => {
                let next = lookup(body, path).and_then(text).filter(|t| !t.is_empty());
                if next.is_none() || next == c.next_url {
                    c.done = true;
                }
                c.next_url = next;
            }
            Pagination::LinkHeader => {
                let next = next_link(headers);
                if next.is_none() || next == c.next_url || count == 0 {
                    c.done = true;
                }
                c.next_url = next;
            }
            Pagination::Page { .. } => {
                if short || count == 0 {
                    c.done = true;
                }
                c.number += 1;
            }
            Pagination::Offset => {
                if short || count == 0 {
                    c.done = true;
                }
                c.offset += count as u64;
            }
        }
    }

    fn absolute(&self, url: &str) -> Result<String, FetchError> {
        if url.starts_with("http://") || url.starts_with("https://") {
            // Never send the credentials to another host than the configured one.
            let base = reqwest::Url::parse(&self.spec().base_url)
                .map_err(|e| FetchError::fatal(format!("base_url: {e}")))?;
            let next = reqwest::Url::parse(url)
                .map_err(|e| FetchError::fatal(format!("next page URL: {e}")))?;
            if next.origin() != base.origin() {
                return Err(FetchError::fatal(format!(
                    "the next page is on another host ({}); refusing to send credentials there",
                    next.host_str().unwrap_or("?")
                )));
            }
            Ok(url.to_owned())
        } else {
            let base = self.spec().base_url.trim_end_matches('/');
            let origin = reqwest::Url::parse(base)
                .map(|u| u.origin().ascii_serialization())
                .map_err(|e| FetchError::fatal(format!("base_url: {e}")))?;
            // A path from the server (Salesforce `nextRecordsUrl`) is relative to the host.
            Ok(if url.starts_with('/') {
                format!("{origin}{url}")
            } else {
                format!("{base}/{url}")
            })
        }
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "object",
    }
}

/// Looks up related records for a page (`enrich` steps) and stores each under its name.
pub async fn enrich(
    http: &mut HttpClient,
    source: &Source,
    spec: &HttpSpec,
    templates: &Templates,
    records: &mut [super::record::Record],
) -> Result<(), FetchError> {
    for (i, step) in spec.enrich.iter().enumerate() {
        let mut ids: Vec<String> = records
            .iter()
            .filter_map(|r| lookup(&r.variables, &step.ids_from).and_then(text))
            .collect();
        ids.sort();
        ids.dedup();
        let mut found = std::collections::HashMap::new();
        for batch in ids.chunks(step.batch_size) {
            let ctx = context(&json!({ "ids": batch }));
            let render = |part: &str| {
                templates
                    .render(&source.template(&format!("enrich:{i}:{part}")), &ctx)
                    .map_err(|e| FetchError::fatal(format!("rendering enrich[{i}].{part}: {e}")))
            };
            let url = format!("{}{}", spec.base_url, render("path")?);
            let mut query = Vec::new();
            for param in step.query.keys() {
                let value = render(&format!("query:{param}"))?;
                if !value.is_empty() {
                    query.push((param.clone(), value));
                }
            }
            let body = match &step.body {
                Some(_) => Some(render("body")?),
                None => None,
            };
            let method = if step.method == "POST" {
                reqwest::Method::POST
            } else {
                reqwest::Method::GET
            };
            let (answer, _) = http
                .send(method, &url, &query, &[], body.as_deref())
                .await?;
            if let Some(Value::Array(items)) = lookup(&answer, &step.records_path) {
                for item in items {
                    if let Some(key) = lookup(item, &step.key_field).and_then(text) {
                        found.insert(key, item.clone());
                    }
                }
            }
        }
        for record in records.iter_mut() {
            let item = lookup(&record.variables, &step.ids_from)
                .and_then(text)
                .and_then(|id| found.get(&id).cloned());
            if let (Some(item), Some(vars)) = (item, record.variables.as_object_mut()) {
                vars.insert(step.name.clone(), item);
            }
        }
    }
    Ok(())
}

/// Reads pages of a SQL source: the user's query, wrapped for keyset paging on
/// (cursor column, id as text), so pages never repeat or skip rows.
pub struct SqlPages {
    pool: PgPool,
    wrapped: String,
    window: Window,
    after: Option<(DateTime<Utc>, String)>,
    page_size: i64,
    done: bool,
    /// Queries run.
    pub requests: u32,
}

impl SqlPages {
    /// A reader of `window` on `pool`.
    pub fn new(
        pool: PgPool,
        source: &Source,
        spec: &SqlSpec,
        window: Window,
    ) -> Result<Self, FetchError> {
        let column = |path: &str, what: &str| {
            let ok = !path.is_empty()
                && path.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !path.starts_with(|c: char| c.is_ascii_digit());
            if ok {
                Ok(path.to_owned())
            } else {
                Err(FetchError::fatal(format!(
                    "{what} {path:?} must be a plain column name of the query's result"
                )))
            }
        };
        let cursor = column(&source.cursor_field, "cursor_field")?;
        let id = column(&source.id_field, "id_field")?;
        let sql = spec.sql.trim().trim_end_matches(';');
        let wrapped = format!(
            "SELECT to_jsonb(s) AS record, s.\"{cursor}\"::timestamptz AS cursor, s.\"{id}\"::text AS id
               FROM ({sql}) AS s
              WHERE $3::timestamptz IS NULL
                 OR (s.\"{cursor}\" >= $3
                     AND (s.\"{cursor}\" > $3 OR s.\"{id}\"::text > $4))
              ORDER BY s.\"{cursor}\", s.\"{id}\"::text
              LIMIT $5"
        );
        Ok(Self {
            pool,
            wrapped,
            window,
            after: None,
            page_size: i64::from(source.page_size),
            done: false,
            requests: 0,
        })
    }

    /// Narrows the window's upper bound.
    pub fn set_upper(&mut self, upper: DateTime<Utc>) {
        self.window.upper = upper;
    }

    /// Whether the last page was the last.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The next page, or None at the end.
    pub async fn next_page(&mut self) -> Result<Option<Page>, FetchError> {
        if self.done {
            return Ok(None);
        }
        let (after_cursor, after_id) = match &self.after {
            Some((c, i)) => (Some(*c), Some(i.clone())),
            None => (None, None),
        };
        self.requests += 1;
        let rows: Vec<(Value, Option<DateTime<Utc>>, Option<String>)> =
            sqlx::query_as(sqlx::AssertSqlSafe(self.wrapped.clone()))
                .bind(self.window.lower)
                .bind(self.window.upper)
                .bind(after_cursor)
                .bind(after_id)
                .bind(self.page_size)
                .fetch_all(&self.pool)
                .await
                .map_err(|e| FetchError {
                    message: format!("source query failed: {e}"),
                    retryable: crate::db::is_transient(&e),
                    retry_after: None,
                    status: None,
                })?;
        if (rows.len() as i64) < self.page_size {
            self.done = true;
        }
        if let Some((_, Some(cursor), Some(id))) = rows.last() {
            self.after = Some((*cursor, id.clone()));
        } else if !rows.is_empty() {
            return Err(FetchError::fatal(
                "the query returned a row with a NULL cursor or id column",
            ));
        }
        Ok(Some(Page {
            records: rows.into_iter().map(|(r, _, _)| r).collect(),
            server_time: None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    #[test]
    fn link_headers_yield_the_next_url() {
        let mut headers = HeaderMap::new();
        headers.insert(
            LINK,
            HeaderValue::from_static(
                r#"<https://x.example/api/v2/tickets?page=1>; rel="prev", <https://x.example/api/v2/tickets?page=3>; rel="next""#,
            ),
        );
        assert_eq!(
            next_link(&headers).as_deref(),
            Some("https://x.example/api/v2/tickets?page=3")
        );
        assert_eq!(next_link(&HeaderMap::new()), None);
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
