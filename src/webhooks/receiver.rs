//! `POST /webhooks/timelines/{secret}?workspace=NAME`: TimelinesAI's webhooks carry no signature
//! (§6.1), so the unguessable secret in the path is the authentication. Anything but the right
//! secret is 404 before the body is read. An accepted delivery is stored in
//! `timelines.webhook_events` (bad input too, marked) and answered 200 well within the 5 s the
//! sender allows; it is applied afterwards by the processor.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::PgPool;
use subtle::ConstantTimeEq;

use super::events::{self, Delivery, Stored, status};
use super::payload;
use crate::config::{DEFAULT_WORKSPACE, Secret};

/// The route's path below which the secret follows.
pub const PATH_PREFIX: &str = "/webhooks/timelines/";

/// Storing must finish within this, so the answer leaves well inside the sender's 5 s (§6.1).
const STORE_TIMEOUT: Duration = Duration::from_secs(4);

/// The receiver's shared state.
#[derive(Clone)]
pub struct Receiver {
    pub(super) pool: PgPool,
    pub(super) secret: Option<Arc<Secret>>,
    pub(super) workspaces: Arc<HashSet<String>>,
    pub(super) max_body_bytes: usize,
}

#[derive(Deserialize)]
struct Target {
    workspace: Option<String>,
}

/// The handler.
pub(super) async fn receive(
    State(r): State<Receiver>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !r.authorised(&uri) {
        return StatusCode::NOT_FOUND.into_response();
    }
    if method != Method::POST {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > r.max_body_bytes as u64) {
        return too_large(r.max_body_bytes);
    }
    let bytes = match axum::body::to_bytes(body, r.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(error) => {
            let too_long = error
                .into_inner()
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            return if too_long {
                too_large(r.max_body_bytes)
            } else {
                (StatusCode::BAD_REQUEST, "the body could not be read\n").into_response()
            };
        }
    };
    let workspace = Query::<Target>::try_from_uri(&uri)
        .ok()
        .and_then(|q| q.0.workspace)
        .unwrap_or_else(|| DEFAULT_WORKSPACE.to_owned());
    match tokio::time::timeout(STORE_TIMEOUT, r.store(&workspace, &bytes)).await {
        Ok(Ok(stored)) => {
            tracing::debug!(id = stored.id, %workspace, duplicate = stored.duplicate, "webhook stored");
            (
                StatusCode::OK,
                axum::Json(json!({"status": "ok", "id": stored.id, "duplicate": stored.duplicate})),
            )
                .into_response()
        }
        Ok(Err(error)) => {
            tracing::warn!(%error, %workspace, "storing a webhook failed");
            unavailable()
        }
        Err(_) => {
            tracing::warn!(%workspace, "storing a webhook took too long");
            unavailable()
        }
    }
}

fn too_large(limit: usize) -> Response {
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the body is larger than {limit} bytes (config key webhooks.max_body_bytes)\n"),
    )
        .into_response()
}

/// The database did not take the event: not the sender's fault, and worth a retry.
fn unavailable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "the event could not be stored now; try again\n",
    )
        .into_response()
}

impl Receiver {
    /// Whether the path's secret is the configured one, compared in constant time.
    fn authorised(&self, uri: &Uri) -> bool {
        let Some(secret) = &self.secret else {
            return false;
        };
        let Some(candidate) = uri.path().strip_prefix(PATH_PREFIX) else {
            return false;
        };
        candidate
            .as_bytes()
            .ct_eq(secret.expose().as_bytes())
            .into()
    }

    /// Classifies and stores the body (the insert's NOTIFY wakes the processors).
    async fn store(&self, workspace: &str, bytes: &[u8]) -> sqlx::Result<Stored> {
        let parsed = serde_json::from_slice::<Value>(bytes);
        let mut delivery = classify(workspace, bytes, parsed.as_ref());
        if !self.workspaces.contains(workspace) {
            delivery.status = status::MALFORMED;
            delivery.error = Some(format!(
                "workspace {:?} is not configured (the receiver URL's ?workspace=)",
                short(workspace)
            ));
        }
        let stored = match events::store(&self.pool, &delivery).await {
            // A value Postgres refuses (a \u0000 escape in the JSON, the event type or the
            // `?workspace=`): kept as bytes, marked, with nothing of the request in a text column.
            Err(sqlx::Error::Database(e)) if e.code().is_some_and(|c| c.starts_with("22")) => {
                let fallback = Delivery {
                    workspace: &workspace.replace('\0', "\u{fffd}"),
                    event_type: None,
                    payload: None,
                    body: Some(bytes),
                    status: status::MALFORMED,
                    error: Some(format!(
                        "the event cannot be stored as sent (its bytes are kept): {}",
                        e.message()
                    )),
                    natural_key: None,
                    object_key: None,
                };
                events::store(&self.pool, &fallback).await?
            }
            other => other?,
        };
        Ok(stored)
    }
}

/// What a body is: a documented event (pending), an unknown one, or not an event at all.
fn classify<'a>(
    workspace: &'a str,
    bytes: &'a [u8],
    parsed: Result<&'a Value, &serde_json::Error>,
) -> Delivery<'a> {
    let mut d = Delivery {
        workspace,
        event_type: None,
        payload: None,
        body: None,
        status: status::PENDING,
        error: None,
        natural_key: None,
        object_key: None,
    };
    let value = match parsed {
        Ok(value) => value,
        Err(e) => {
            d.body = Some(bytes);
            d.status = status::MALFORMED;
            d.error = Some(format!("the body is not JSON: {e}"));
            return d;
        }
    };
    d.payload = Some(value);
    if !value.is_object() {
        d.status = status::MALFORMED;
        d.error = Some("the body is JSON but not an object".to_owned());
        return d;
    }
    d.event_type = value.get("event_type").and_then(Value::as_str);
    match d.event_type {
        None => {
            d.status = status::UNKNOWN;
            d.error = Some("the payload has no event_type".to_owned());
        }
        Some(t) if payload::group(t).is_none() => {
            d.status = status::UNKNOWN;
            d.error = Some(format!(
                "unknown event type {:?} (not in the API reference §6.2)",
                short(t)
            ));
        }
        Some(t) => {
            d.natural_key = payload::natural_key(t, value);
            d.object_key = payload::group(t).and_then(|g| payload::object_key(g, value));
        }
    }
    d
}

/// A value from the request, cut for an error message.
fn short(text: &str) -> &str {
    &text[..text.floor_char_boundary(100)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_classified_without_being_lost() {
        let not_json = classify(
            "default",
            b"{oops",
            Err(&serde_json::from_slice::<Value>(b"{oops").unwrap_err()),
        );
        assert_eq!(not_json.status, status::MALFORMED);
        assert_eq!(not_json.body, Some(&b"{oops"[..]));

        let unknown = json!({"event_type": "chat:created"});
        let d = classify("default", b"", Ok(&unknown));
        assert_eq!(d.status, status::UNKNOWN);
        assert!(d.error.unwrap().contains("chat:created"));

        let list = json!([1]);
        assert_eq!(
            classify("default", b"", Ok(&list)).status,
            status::MALFORMED
        );

        let known = json!({"event_type": "message:new", "message": {"message_uid": "u"}});
        let d = classify("default", b"", Ok(&known));
        assert_eq!(d.status, status::PENDING);
        assert_eq!(d.natural_key.as_deref(), Some("message:new:u"));
    }
}
