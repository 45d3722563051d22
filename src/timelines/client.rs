//! The HTTP machinery under every endpoint: URL building, the bearer header, one request, its
//! classification, its [`RequestRecord`] and its trace event.
//!
//! Deliberately absent: retries and rate limiting. The dispatcher decides what to retry from the
//! [`ErrorClass`], and a limiter shared by all workers sits in front of the client.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use reqwest::Url;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use tracing::Instrument;

use super::envelope::interpret;
use super::error::{ApiError, BuildError, ErrorClass, HttpMethod};
use super::record::{RequestObserver, RequestRecord, RequestTag};
use super::reply::{Payload, Reply};
use crate::config::Secret;

/// Transport settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// Limit on a whole request, from connecting to the last body byte.
    pub timeout: Duration,
    /// Limit on establishing the connection (TCP and TLS). A connect failure is always
    /// [`ErrorClass::Transient`]: the request never left.
    pub connect_timeout: Duration,
    /// The `User-Agent` header.
    pub user_agent: String,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            user_agent: concat!("timelines-sync/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// A client of the TimelinesAI Public API for one workspace token. Cheap to clone: the
/// connection pool and settings are shared.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    observer: Option<RequestObserver>,
    tag: Option<Arc<RequestTag>>,
    gate: Option<Arc<dyn Gate>>,
}

/// Paces a client's requests: the workspace's shared rate limiter. `before` is awaited before
/// every request goes out; `throttled` is told when the API answers "too many requests".
pub trait Gate: Send + Sync {
    /// Waits until the next request may be sent, or, when that is too far away to wait for,
    /// says how long (the request is then not sent and fails as rate-limited locally).
    fn before(&self) -> futures_util::future::BoxFuture<'_, Result<(), std::time::Duration>>;
    /// The API throttled a request; `retry_after` is what it asked for, if anything.
    fn throttled(
        &self,
        retry_after: Option<std::time::Duration>,
    ) -> futures_util::future::BoxFuture<'_, ()>;
}

struct Inner {
    http: reqwest::Client,
    base: Url,
    /// `base.path()` without a trailing `/`: cut from request paths for records and errors.
    base_path: String,
    /// `Bearer <token>`, marked sensitive so `Debug` of headers never shows it.
    auth: HeaderValue,
    /// Kept only to scrub the token out of any text that echoes it back.
    token: Secret,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.inner.base.as_str())
            .field("token", &self.inner.token)
            .field("tag", &self.tag)
            .field("observer", &self.observer.is_some())
            .field("gate", &self.gate.is_some())
            .finish()
    }
}

impl Client {
    /// A client for `base_url` (e.g. `https://app.timelines.ai/integrations/api`, no trailing
    /// slash) authenticated with `token`.
    ///
    /// Redirects are not followed: a redirected POST would silently become a GET, and a
    /// redirect to another host would drop the token; a 3xx is reported as
    /// [`ErrorClass::InvalidRequest`] so the base URL gets fixed instead.
    pub fn new(base_url: &str, token: Secret, options: ClientOptions) -> Result<Self, BuildError> {
        let bad = |reason| BuildError::BaseUrl {
            url: base_url.to_owned(),
            reason,
        };
        let base = Url::parse(base_url).map_err(|_| bad("not an absolute URL"))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(bad("the scheme must be http or https"));
        }
        if base_url.ends_with('/') {
            return Err(bad("must not end with '/'"));
        }
        if base.query().is_some() || base.fragment().is_some() || base.cannot_be_a_base() {
            return Err(bad("must not have a query or fragment"));
        }
        if token.expose().trim().is_empty() {
            return Err(BuildError::Token("is empty"));
        }
        let mut auth = HeaderValue::try_from(format!("Bearer {}", token.expose()))
            .map_err(|_| BuildError::Token("has characters an HTTP header cannot carry"))?;
        auth.set_sensitive(true);
        let http = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.connect_timeout)
            .user_agent(options.user_agent)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| BuildError::Http(e.to_string()))?;
        let base_path = base.path().trim_end_matches('/').to_owned();
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base,
                base_path,
                auth,
                token,
            }),
            observer: None,
            tag: None,
            gate: None,
        })
    }

    /// This client, reporting every request to `observer`.
    pub fn with_observer(mut self, observer: RequestObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    /// This client, pacing every request through `gate`.
    pub fn with_gate(mut self, gate: Arc<dyn Gate>) -> Self {
        self.gate = Some(gate);
        self
    }

    /// A clone whose requests carry `tag` in their records (same pool, same observer).
    pub fn tagged(&self, tag: RequestTag) -> Self {
        Self {
            tag: Some(Arc::new(tag)),
            ..self.clone()
        }
    }

    /// The base URL requests go to.
    pub fn base_url(&self) -> &str {
        self.inner.base.as_str().trim_end_matches('/')
    }

    /// The tag set with [`Client::tagged`].
    pub fn tag(&self) -> Option<&RequestTag> {
        self.tag.as_deref()
    }

    /// The endpoint URL for `segments` below the base URL. Each segment is percent-encoded, so
    /// an id can never add a path level; empty, `.` and `..` segments are refused because they
    /// would reach another endpoint (or the HTML 404 of a trailing slash).
    fn url(&self, verb: HttpMethod, segments: &[&str]) -> Result<(Url, String), ApiError> {
        let mut url = self.inner.base.clone();
        {
            let Ok(mut path) = url.path_segments_mut() else {
                unreachable!("Client::new refuses cannot-be-a-base URLs");
            };
            path.pop_if_empty();
            for segment in segments {
                if segment.is_empty() || *segment == "." || *segment == ".." {
                    let shown = format!("/{}", segments.join("/"));
                    return Err(ApiError::new(
                        ErrorClass::InvalidRequest,
                        verb,
                        shown,
                        format!("refused to send: path segment {segment:?} is not an id"),
                    ));
                }
                path.push(segment);
            }
        }
        let path = url.path()[self.inner.base_path.len()..].to_owned();
        Ok((url, path))
    }

    /// Sends one request and classifies the answer. Every request that reaches the network
    /// produces one record and one debug event, success or not.
    pub(crate) async fn call(
        &self,
        verb: HttpMethod,
        segments: &[&str],
        query: &[(&'static str, String)],
        payload: Payload,
    ) -> Result<Reply, ApiError> {
        let (url, path) = self.url(verb, segments)?;
        let mut request = self
            .inner
            .http
            .request(verb.to_reqwest(), url)
            .header(AUTHORIZATION, self.inner.auth.clone());
        if !query.is_empty() {
            request = request.query(query);
        }
        request = match payload {
            Payload::None => request,
            Payload::Json(body) => request.json(&body),
            Payload::Form(form) => request.multipart(form),
        };

        if let Some(gate) = &self.gate
            && let Err(wait) = gate.before().await
        {
            return Err(ApiError {
                class: ErrorClass::RateLimited,
                status: None,
                message: format!(
                    "held back by the workspace's rate limiter: the next free request slot is {:.1} s away",
                    wait.as_secs_f64()
                ),
                error_code: None,
                retry_after: Some(wait),
                field_errors: Box::new([]),
                method: verb,
                path,
            });
        }
        let span = tracing::debug_span!("timelines_request", method = verb.as_str(), path = %path);
        let started_at = Utc::now();
        let start = Instant::now();
        let (status, result) = async {
            let response = match request.send().await {
                Ok(response) => response,
                Err(e) => return (None, Err(self.transport_error(verb, &path, None, &e))),
            };
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let result = match response.bytes().await {
                Ok(bytes) => interpret(verb, &path, status, &headers, &bytes),
                Err(e) => Err(self.transport_error(verb, &path, Some(status), &e)),
            };
            (Some(status), result)
        }
        .instrument(span.clone())
        .await;
        let duration = start.elapsed();

        let result = result.map_err(|e| scrub(e, self.inner.token.expose()));
        let error_class = result.as_ref().err().map(|e| e.class);
        if let (Some(gate), Err(e)) = (&self.gate, &result)
            && e.class == ErrorClass::RateLimited
            && status.is_some()
        {
            gate.throttled(e.retry_after).await;
        }
        span.in_scope(|| {
            tracing::debug!(
                status,
                duration_ms = duration.as_secs_f64() * 1000.0,
                error_class = error_class.map(ErrorClass::as_str),
                "TimelinesAI request finished"
            );
        });
        if let Some(observer) = &self.observer {
            observer(RequestRecord {
                method: verb.as_str(),
                path: path.clone(),
                status,
                error_class,
                duration,
                started_at,
                tag: self.tag.as_deref().cloned(),
            });
        }
        let data = result?;
        Ok(Reply::new(verb, path, status.unwrap_or_default(), data))
    }

    /// An error for a request that got no (complete) response.
    fn transport_error(
        &self,
        verb: HttpMethod,
        path: &str,
        status: Option<u16>,
        error: &reqwest::Error,
    ) -> ApiError {
        let class = if error.is_builder() {
            ErrorClass::InvalidRequest
        } else {
            transport_class(verb == HttpMethod::Get, error.is_connect())
        };
        let what = if error.is_timeout() {
            "timed out"
        } else if error.is_connect() {
            "could not connect"
        } else {
            "connection failed"
        };
        let mut err = ApiError::new(class, verb, path, format!("{what}: {}", chain(error)));
        err.status = status;
        err
    }
}

/// The class of a failure without a complete response. A connect failure means nothing was
/// sent, so it is always Transient. Anything later (a timeout waiting for or reading the
/// response, a reset connection) may come after the server acted: harmless to repeat for a GET,
/// but for every other method the outcome is unknown — Ambiguous, so a send is never repeated
/// blindly. This is conservative: it also covers a total timeout that fired during connecting,
/// which reqwest cannot tell apart.
pub(crate) fn transport_class(read_only: bool, connect_failed: bool) -> ErrorClass {
    if connect_failed || read_only {
        ErrorClass::Transient
    } else {
        ErrorClass::Ambiguous
    }
}

/// The error and its causes on one line, without the URL (its query may hold phone numbers).
fn chain(error: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(error);
    while let Some(e) = source {
        let text = e.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        source = e.source();
    }
    if parts.is_empty() {
        parts.push("request failed".to_owned());
    }
    parts.join(": ")
}

/// Removes the token from every text of an error, in case a server or proxy echoes it back.
fn scrub(mut err: ApiError, token: &str) -> ApiError {
    if token.is_empty() {
        return err;
    }
    let clean = |s: &mut String| {
        if s.contains(token) {
            *s = s.replace(token, "[redacted]");
        }
    };
    clean(&mut err.message);
    if let Some(code) = &mut err.error_code {
        clean(code);
    }
    for field in &mut err.field_errors {
        clean(&mut field.msg);
    }
    err
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(base: &str) -> Result<Client, BuildError> {
        Client::new(base, Secret::new("tok-123"), ClientOptions::default())
    }

    #[test]
    fn base_urls_must_be_absolute_http_without_a_trailing_slash() {
        assert!(client("https://app.timelines.ai/integrations/api").is_ok());
        assert!(client("http://127.0.0.1:9/integrations/api").is_ok());
        assert!(client("http://127.0.0.1:9").is_ok());
        for bad in [
            "https://app.timelines.ai/integrations/api/",
            "app.timelines.ai",
            "ftp://x/y",
            "https://x/api?x=1",
        ] {
            assert!(
                matches!(client(bad), Err(BuildError::BaseUrl { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn tokens_must_be_usable_in_a_header_and_are_never_echoed() {
        let err = Client::new(
            "http://x",
            Secret::new("bad\ntok-secret"),
            ClientOptions::default(),
        )
        .unwrap_err();
        assert!(!err.to_string().contains("tok-secret"), "{err}");
        assert!(matches!(
            Client::new("http://x", Secret::new("  "), ClientOptions::default()),
            Err(BuildError::Token(_))
        ));
    }

    #[test]
    fn paths_are_cut_below_the_base_and_segments_are_encoded() {
        let c = client("http://127.0.0.1:9/integrations/api").unwrap();
        let (url, path) = c.url(HttpMethod::Get, &["messages", "a/b c"]).unwrap();
        assert_eq!(path, "/messages/a%2Fb%20c");
        assert_eq!(url.path(), "/integrations/api/messages/a%2Fb%20c");
        let root = client("http://127.0.0.1:9").unwrap();
        assert_eq!(root.url(HttpMethod::Get, &["chats"]).unwrap().1, "/chats");
        for bad in ["", ".", ".."] {
            let err = c.url(HttpMethod::Delete, &["files", bad]).unwrap_err();
            assert_eq!(err.class, ErrorClass::InvalidRequest);
        }
    }

    #[test]
    fn transport_failures_are_transient_unless_a_write_may_have_arrived() {
        assert_eq!(transport_class(true, true), ErrorClass::Transient);
        assert_eq!(transport_class(false, true), ErrorClass::Transient);
        assert_eq!(transport_class(true, false), ErrorClass::Transient);
        assert_eq!(transport_class(false, false), ErrorClass::Ambiguous);
    }

    #[test]
    fn debug_output_hides_the_token() {
        let c = client("http://127.0.0.1:9").unwrap().tagged(RequestTag {
            workspace: "w".into(),
            job_id: Some(1),
        });
        let dump = format!("{c:?}");
        assert!(!dump.contains("tok-123"), "{dump}");
        assert!(dump.contains("w"), "{dump}");
    }

    #[test]
    fn scrub_removes_an_echoed_token() {
        let err = ApiError::new(ErrorClass::Auth, HttpMethod::Get, "/x", "bad token tok-123");
        assert_eq!(scrub(err, "tok-123").message, "bad token [redacted]");
    }
}
