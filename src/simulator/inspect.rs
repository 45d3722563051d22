//! Inspection for tests and other processes: the records behind [`super::Simulator::stats`] and
//! friends, and the same data over HTTP under `/_sim/` (outside the API base path, no token,
//! no rate limit, no latency, not counted):
//!
//! | Method | Path | Answer |
//! |---|---|---|
//! | GET | `/_sim/stats` | [`SimStats`] |
//! | GET | `/_sim/messages` | `[SentMessage]`, in send order |
//! | GET | `/_sim/faults` | [`FaultsJson`] |
//! | PUT | `/_sim/faults` | replace the faults with a [`FaultsJson`] body (absent fields are 0) |
//! | POST | `/_sim/inbound` | `{"phone","text","whatsapp_account_phone"?}` → `{"message_uid"}`: a contact writes |
//! | GET | `/_sim/webhook_deliveries` | `[WebhookDelivery]`, the last 1000 |
//! | GET | `/_sim/files/{uid}/download` | a file's bytes (the temporary download URLs point here) |

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::faults::FaultsJson;
use super::lifecycle;
use super::messaging;
use super::routes_files;
use super::state::Shared;

/// Counters since start. Every request to a non-`/_sim/` path is counted once its answer is
/// ready.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimStats {
    /// Requests answered (or dropped), including 401s and HTML 404s.
    pub requests_total: u64,
    /// Answers by HTTP status; dropped connections are not in here.
    pub by_status: BTreeMap<u16, u64>,
    /// Requests refused by the rate limit (429, or 403 with `throttle_as_403`).
    pub rate_limited: u64,
    /// The most requests the rate limiter accepted in any window of `rate_window` length; exact,
    /// from the accepted requests' timestamps. Never above `rate_limit`.
    pub max_accepted_in_window: u64,
    /// API calls counted against the monthly quota (§8.3).
    pub api_calls_used: u64,
    /// Messaging credits in use now (failed messages gave theirs back, §8.4).
    pub credits_used: u64,
    /// Messages accepted by the send endpoints.
    pub messages_sent: u64,
    /// Injected 5xx and 200-with-error answers.
    pub faults_injected: u64,
    /// Connections dropped after the side effect.
    pub connections_dropped: u64,
    /// Webhook posts answered 2xx.
    pub webhooks_delivered: u64,
    /// Webhook posts that failed (non-2xx, timeout, connection error).
    pub webhook_failures: u64,
}

/// A message accepted by a send endpoint (#1–#5), recorded so tests can count duplicates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentMessage {
    /// The `message_uid` answered.
    pub uid: String,
    /// The endpoint, e.g. `"POST /messages"` or `"POST /chats/{chat_id}/messages"`.
    pub endpoint: String,
    /// The chat it went to (created by this send or not).
    pub chat_id: i64,
    /// The contact's E.164 phone; `None` for group chats.
    pub phone: Option<String>,
    /// The chat's JID.
    pub jid: String,
    /// The sending account's phone.
    pub whatsapp_account_phone: String,
    /// The text, if not empty.
    pub text: Option<String>,
    /// The `file_uid` sent, if any.
    pub file_uid: Option<String>,
    /// The `attachment_template_id` sent, if any.
    pub attachment_template_id: Option<i64>,
    /// The `reply_to` uid, if any.
    pub reply_to: Option<String>,
    /// The `label` sent, if any.
    pub label: Option<String>,
    /// Messaging credits charged (1, or 2 for text plus attachment).
    pub credits: u64,
    /// When it was accepted.
    pub created_at: DateTime<Utc>,
}

/// One webhook post and its outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookDelivery {
    /// The subscription's id.
    pub webhook_id: i64,
    /// The subscribed event type (also the payload's `event_type`).
    pub event_type: String,
    /// Where it was posted.
    pub url: String,
    /// The receiver's HTTP status, if it answered.
    pub status: Option<u16>,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// When the attempt finished.
    pub at: DateTime<Utc>,
    /// The JSON body posted.
    pub payload: Value,
}

/// Current statistics of `sim`.
pub(crate) fn stats(sim: &Shared) -> SimStats {
    let world = sim.world();
    let c = &world.counters;
    SimStats {
        requests_total: c.requests_total,
        by_status: c.by_status.clone(),
        rate_limited: c.rate_limited,
        max_accepted_in_window: world.window.max_in_window() as u64,
        api_calls_used: world.api_calls_used,
        credits_used: lifecycle::credits_used(&world, Utc::now(), sim.config.status_step),
        messages_sent: world.sent.len() as u64,
        faults_injected: c.faults_injected,
        connections_dropped: c.connections_dropped,
        webhooks_delivered: c.webhooks_delivered,
        webhook_failures: c.webhook_failures,
    }
}

/// The `/_sim/…` routes.
pub(crate) fn router() -> Router<Shared> {
    Router::new()
        .route(
            "/_sim/stats",
            get(|State(sim): State<Shared>| async move { Json(stats(&sim)) }),
        )
        .route(
            "/_sim/messages",
            get(|State(sim): State<Shared>| async move { Json(sim.world().sent.clone()) }),
        )
        .route("/_sim/faults", get(get_faults).put(put_faults))
        .route("/_sim/inbound", axum::routing::post(inbound))
        .route(
            "/_sim/webhook_deliveries",
            get(|State(sim): State<Shared>| async move {
                Json(sim.world().deliveries.iter().cloned().collect::<Vec<_>>())
            }),
        )
        .route("/_sim/files/{uid}/download", get(routes_files::download))
}

async fn get_faults(State(sim): State<Shared>) -> Json<FaultsJson> {
    Json(FaultsJson::from_faults(&sim.world().faults))
}

async fn put_faults(State(sim): State<Shared>, body: axum::body::Bytes) -> Response {
    let parsed = serde_json::from_slice::<FaultsJson>(&body)
        .map_err(|e| e.to_string())
        .and_then(FaultsJson::into_faults);
    match parsed {
        Ok(faults) => {
            sim.world().faults = faults.clone();
            Json(FaultsJson::from_faults(&faults)).into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, Json(json!({ "error": e }))).into_response(),
    }
}

#[derive(Deserialize)]
struct InboundBody {
    phone: String,
    text: String,
    whatsapp_account_phone: Option<String>,
}

async fn inbound(State(sim): State<Shared>, Json(body): Json<InboundBody>) -> Response {
    let account = body.whatsapp_account_phone.as_deref();
    match messaging::receive(&sim, &body.phone, &body.text, account) {
        Ok(uid) => Json(json!({ "message_uid": uid })).into_response(),
        Err(e) => e.into_response(),
    }
}
