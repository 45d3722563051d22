//! An in-process simulator of the TimelinesAI Public API, strict to the contract in
//! `timelinesai-api.md` (section numbers below refer to it). Integration tests talk to it over
//! real HTTP; the zero-config demo serves it with `simulate --port N`.
//!
//! # Layout
//! - this file: [`SimulatorConfig`], [`Simulator`] (start, inspect, stop) and the router.
//! - `state`: the in-memory workspace; `seed`: its deterministic starting content.
//! - `limits`: auth, sliding-window rate limit, API-call quota, answer counting;
//!   `faults`: injected 5xx, 200-with-error, dropped connections.
//! - `routes_send` (#1–#5), `routes_messages` (#6–#9, #13), `routes_chats` (#10–#12, #14–#17),
//!   `routes_files` (#18–#22), `routes_workspace` (#23–#27), `routes_webhooks` (#28–#32);
//!   `messaging`: what a send or a received message does; `targets`: which chat a send goes
//!   to; `lifecycle`: statuses and credits.
//! - `render`: JSON shapes and the timestamp format; `reply`: envelopes and HTML pages;
//!   `validate`: body and query parsing; `webhooks`: outbound events; `activity`: account and
//!   call events a test asks for; `inspect`: `/_sim/…`.
//!
//! # Choices where the reference leaves room
//! - **One workspace.** Every configured token opens the same workspace (§1 says one token
//!   per workspace; several tokens behave like an old and a new token during rotation). The
//!   rate-limit window and both quotas are per workspace, so shared by all tokens.
//! - **Wrong method on a known path**: JSON 405 `method_not_allowed` after auth (the reference
//!   documents nothing). Unknown paths and trailing slashes: the branded HTML 404 without auth.
//! - **Ids**: chat `id` integer, `message.chat_id` string, webhook `id` integer (§10.1 #3).
//!   A non-integer `{chat_id}` or `{webhook_id}` is a JSON 404.
//! - **Timestamps** are in the workspace zone, +0300 like the examples (§2.5).
//! - **Statuses** (§5.3): `Queued` → `Sent` → `Delivered` → `Read` per `status_step`;
//!   `fail_phones` → `Failed` after one step with `failure_reason`, and the credits come back
//!   then. Inbound messages are `Delivered`, notes `Sent`. `message_type` is `"whatsapp"` or
//!   `"Note"` (§4.1).
//! - **`chat_name`** on #1/#2/#3 renames the chat (created or not; uniqueness is only enforced
//!   by PATCH); on #4 it only selects the chat.
//! - **Attachment templates** 101 and 102 exist (each attaches a seeded file) and count as an
//!   attachment for the 2-credit rule.
//! - **Webhooks** `message:new`/`message:sent:new` fire when a send reaches `Sent`, not at
//!   acceptance; `chat:new` + `chat:outgoing:new` at acceptance when the send created the chat.
//!   No retries (none documented). See `webhooks`.
//! - **API-call quota**: rate-limited, unauthenticated and fault-injected requests are not
//!   counted; everything else is (see `limits`).

mod activity;
mod faults;
mod inspect;
mod lifecycle;
mod limits;
mod messaging;
mod render;
mod reply;
mod routes_chats;
mod routes_files;
mod routes_messages;
mod routes_send;
mod routes_webhooks;
mod routes_workspace;
mod seed;
mod state;
mod targets;
mod validate;
mod webhooks;

#[cfg(test)]
mod tests_api;
#[cfg(test)]
mod tests_features;
#[cfg(test)]
mod tests_limits;
#[cfg(test)]
mod tests_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use faults::{Faults, FaultsJson};
pub use inspect::{SentMessage, SimStats, WebhookDelivery};
pub use seed::{DIRECT_CHATS, FIRST_CHAT_ID, GROUP_CHATS, LONG_CHAT_MESSAGES};

use reply::ApiError;
use state::{Shared, Sim};

/// The token accepted by [`SimulatorConfig::default`].
pub const DEFAULT_TOKEN: &str = "simulator-token";

/// How the simulator behaves. Every field has a default (see [`Default`]).
#[derive(Debug, Clone)]
pub struct SimulatorConfig {
    /// Accepted bearer tokens, all opening the one simulated workspace. Default:
    /// [`DEFAULT_TOKEN`].
    pub tokens: Vec<String>,
    /// Requests accepted per `rate_window`, for the whole workspace. Default 50 (§8.2, §10.1 #7).
    pub rate_limit: u32,
    /// The sliding window of the rate limit. Default 60 s.
    pub rate_window: Duration,
    /// Answer throttling with 403 `throttled` (no `Retry-After`) instead of 429 with
    /// `Retry-After` (§8.1, §8.2). Default false.
    pub throttle_as_403: bool,
    /// Monthly API calls (§8.3). Default 200 000.
    pub monthly_api_calls: u64,
    /// Monthly messaging credits (§8.4): 1 per message, 2 with text and an attachment. Default
    /// 10 000.
    pub messaging_quota: u64,
    /// Time per status step of a sent message (§5.3). Default 2 s.
    pub status_step: Duration,
    /// Phones (E.164) whose messages end `Failed` and give their credits back. Default none.
    pub fail_phones: Vec<String>,
    /// Largest accepted upload (#5, #19) in bytes. Default 16 MiB (the guide's media limit,
    /// §5.1).
    pub max_upload_bytes: usize,
    /// Faults injected from the start; change them with [`Simulator::set_faults`].
    pub faults: Faults,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        Self {
            tokens: vec![DEFAULT_TOKEN.to_owned()],
            rate_limit: 50,
            rate_window: Duration::from_secs(60),
            throttle_as_403: false,
            monthly_api_calls: 200_000,
            messaging_quota: 10_000,
            status_step: Duration::from_secs(2),
            fail_phones: Vec::new(),
            max_upload_bytes: 16 * 1024 * 1024,
            faults: Faults::default(),
        }
    }
}

/// A running simulator. Dropping it aborts the server task; [`Simulator::shutdown`] stops it
/// gracefully.
pub struct Simulator {
    sim: Shared,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Simulator {
    /// Binds `addr` (port 0 picks a free port) and serves in a background task.
    pub async fn start(config: SimulatorConfig, addr: SocketAddr) -> std::io::Result<Simulator> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let mut reachable = addr;
        if reachable.ip().is_unspecified() {
            reachable.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let world = seed::world(&config);
        let sim: Shared = Arc::new(Sim::new(config, format!("http://{reachable}"), world));
        let app = router(sim.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stopped.await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error.message = %e, "simulator server failed");
            }
        });
        tracing::info!(%addr, "TimelinesAI simulator listening");
        Ok(Simulator {
            sim,
            addr,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR/integrations/api`, the base URL clients use (the real one is
    /// `https://app.timelines.ai/integrations/api`).
    pub fn base_url(&self) -> String {
        format!("{}/integrations/api", self.sim.origin)
    }

    /// Replaces the injected faults; applies to requests arriving from now on.
    pub fn set_faults(&self, faults: Faults) {
        self.sim.world().faults = faults;
    }

    /// The injected faults now.
    pub fn faults(&self) -> Faults {
        self.sim.world().faults.clone()
    }

    /// Counters since start.
    pub fn stats(&self) -> SimStats {
        inspect::stats(&self.sim)
    }

    /// Every message accepted by a send endpoint (#1–#5), in order.
    pub fn sent_messages(&self) -> Vec<SentMessage> {
        self.sim.world().sent.clone()
    }

    /// The last 1000 webhook posts, oldest first.
    pub fn webhook_deliveries(&self) -> Vec<WebhookDelivery> {
        self.sim.world().deliveries.iter().cloned().collect()
    }

    /// Simulates the contact `phone` (E.164) writing `text` to the default account: creates the
    /// chat if needed and fires the received-message webhooks (call it inside a Tokio runtime).
    /// Returns the message uid, or `None` when `phone` is not E.164.
    pub fn receive_message(&self, phone: &str, text: &str) -> Option<String> {
        messaging::receive(&self.sim, phone, text, None).ok()
    }

    /// Fires an account event for the default account: `whatsapp:account:connected`,
    /// `disconnected`, `suspended` or `resumed` (call inside a Tokio runtime). False for another
    /// name.
    pub fn account_event(&self, event: &str) -> bool {
        activity::account_event(&self.sim, event)
    }

    /// Simulates a call with `phone` (E.164) ended as `event` (`call:incoming:missed`,
    /// `call:incoming:ended` or `call:outgoing:ended`), lasting `duration_s`: fires the call
    /// event (call inside a Tokio runtime). Returns the call's message uid, or `None` for a phone
    /// that is not E.164 or another event name.
    pub fn call(&self, phone: &str, event: &str, duration_s: u32) -> Option<String> {
        activity::call(&self.sim, phone, event, duration_s).ok()
    }

    /// Stops accepting connections, lets in-flight requests finish (at most 2 s), then stops.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(Duration::from_secs(2), &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// JSON 405 for a known path with the wrong method.
async fn method_not_allowed() -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "Method not allowed for this path",
    )
    .into_response()
}

/// Every API route (§3) behind the gate, `/_sim/…`, and the HTML 404 fallback.
fn router(sim: Shared) -> Router {
    use {routes_chats as chats, routes_files as files, routes_messages as messages};
    use {routes_send as send, routes_webhooks as hooks, routes_workspace as workspace};
    let upload_limit = DefaultBodyLimit::max(sim.config.max_upload_bytes + 1024 * 1024);
    let api = Router::new()
        .route("/messages", post(send::to_phone))
        .route("/messages/to_jid", post(send::to_jid))
        .route("/messages/to_chat_name", post(send::to_chat_name))
        .route("/messages/{message_uid}", get(messages::get))
        .route(
            "/messages/{message_uid}/status_history",
            get(messages::status_history),
        )
        .route(
            "/messages/{message_uid}/reactions",
            get(messages::reactions).patch(messages::set_reaction),
        )
        .route("/chats", get(chats::list))
        .route("/chats/{chat_id}", get(chats::get).patch(chats::update))
        .route(
            "/chats/{chat_id}/messages",
            get(messages::history).post(send::to_chat),
        )
        .route(
            "/chats/{chat_id}/voice_message",
            post(send::voice).layer(upload_limit),
        )
        .route(
            "/chats/{chat_id}/labels",
            get(chats::labels)
                .put(chats::add_labels)
                .post(chats::replace_labels),
        )
        .route("/chats/{chat_id}/notes", post(chats::add_note))
        .route("/files", get(files::list).post(files::upload_by_url))
        .route(
            "/files_upload",
            post(files::upload_multipart).layer(upload_limit),
        )
        .route("/files/{file_uid}", get(files::get).delete(files::delete))
        .route("/whatsapp_accounts", get(workspace::accounts))
        .route("/workspace", get(workspace::workspace))
        .route("/workspace/teammates", get(workspace::teammates))
        .route("/teammates", get(workspace::teammates))
        .route("/workspace/quotas", get(workspace::quotas))
        .route("/quotas", get(workspace::quotas))
        .route("/workspace/invitations", post(workspace::invite))
        .route("/webhooks", get(hooks::list).post(hooks::create))
        .route(
            "/webhooks/{webhook_id}",
            get(hooks::get).put(hooks::update).delete(hooks::delete),
        )
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(from_fn_with_state(sim.clone(), limits::gate));
    Router::new()
        .nest("/integrations/api", api)
        .merge(inspect::router())
        .fallback(reply::html_not_found)
        .layer(from_fn_with_state(sim.clone(), limits::observe))
        .with_state(sim)
}
