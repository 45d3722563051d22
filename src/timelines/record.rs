//! What the request log gets for every HTTP request: method, path, outcome and timing, never the
//! token, the query string or a body.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::error::ErrorClass;

/// Who a request was made for, copied into its [`RequestRecord`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestTag {
    /// The workspace name from the configuration.
    pub workspace: String,
    /// The queue job the request serves, if any.
    pub job_id: Option<i64>,
}

/// One HTTP request as the request log sees it: never the token, the query string or a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// The HTTP method.
    pub method: &'static str,
    /// The endpoint path below the base URL, without the query, e.g. `/chats/42/messages`.
    pub path: String,
    /// The HTTP status, when a response arrived.
    pub status: Option<u16>,
    /// The failure class; `None` on success.
    pub error_class: Option<ErrorClass>,
    /// From just before sending to the end of the body (or the failure).
    pub duration: Duration,
    /// When the request started.
    pub started_at: DateTime<Utc>,
    /// The tag of the [`Client`] that made it (see [`Client::tagged`]).
    pub tag: Option<RequestTag>,
}

/// Receives a [`RequestRecord`] after every request. Called on the requesting task, so it should
/// only hand the record on (e.g. into a channel), not block.
pub type RequestObserver = Arc<dyn Fn(RequestRecord) + Send + Sync>;
