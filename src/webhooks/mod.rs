//! Inbound webhooks from TimelinesAI (reference §6): a receiver on the service's HTTP listener,
//! a processor that applies the stored events, and the subscriptions that point TimelinesAI at
//! the receiver.
//!
//! - [`config`]: `[webhooks]` (secret, public URL, limits, events, opt-out by reply).
//! - [`receiver`]: `POST /webhooks/timelines/{secret}`: authenticates by the secret in the path,
//!   stores every delivery in `timelines.webhook_events` and answers at once.
//! - [`events`]: the statements on `timelines.webhook_events`.
//! - [`processor`]: the loop applying stored events (`FOR UPDATE SKIP LOCKED`, LISTEN/NOTIFY);
//!   `apply`: what each event type changes; [`payload`]: reading the payloads.
//! - [`subscriptions`]: `webhooks sync` and `webhooks list`.
//!
//! Inbound rules (webhook events turned into jobs) live with the poll rules, in
//! [`crate::sources::inbound`].

mod apply;
pub mod config;
pub mod events;
pub mod payload;
pub mod processor;
pub mod receiver;
pub mod subscriptions;

use std::collections::HashSet;
use std::sync::Arc;

use axum::Router;
use axum::routing::any;
use sqlx::PgPool;

pub use processor::{Processor, ProcessorRunResult};

use crate::config::{Env, Settings};

/// Every event type of the reference (§6.2: the canonical names; WABA types are M-confidence,
/// S8 only). The `chat:created` family of the guide pages is L and not accepted (§10.1 #6).
pub const EVENT_TYPES: &[&str] = &[
    "message:new",
    "message:received:new",
    "message:sent:new",
    "message:reaction",
    "chat:new",
    "chat:incoming:new",
    "chat:outgoing:new",
    "chat:responsible:assigned",
    "chat:responsible:unassigned",
    "whatsapp:account:connected",
    "whatsapp:account:disconnected",
    "whatsapp:account:suspended",
    "whatsapp:account:resumed",
    "call:incoming:missed",
    "call:incoming:ended",
    "call:outgoing:ended",
    "waba:message:received",
    "waba:message:delivered",
    "waba:message:failed",
    "waba:message:read",
    "waba:chat:incoming",
    "waba:chat:outgoing",
    "waba:chat:assigned",
    "waba:chat:unassigned",
    "waba:chat:closed",
    "waba:chat:reopened",
    "waba:account:active",
    "waba:account:disabled",
    "waba:account:disconnected",
    "waba:template:approved",
    "waba:template:rejected",
    "waba:template:disabled",
];

/// The receiver's route, to merge into the service's HTTP router. Without a configured secret
/// every request is 404. The secret comes from `[webhooks]` (`secret_env` read from `env`).
pub fn router(pool: PgPool, settings: &Settings, env: &dyn Env) -> Router {
    let receiver = receiver::Receiver {
        pool,
        secret: settings.webhooks.resolved_secret(env).map(Arc::new),
        workspaces: Arc::new(settings.workspaces.keys().cloned().collect::<HashSet<_>>()),
        max_body_bytes: settings.webhooks.max_body_bytes,
    };
    Router::new()
        .route(
            &format!("{}{{secret}}", receiver::PATH_PREFIX),
            // Any method: a wrong secret is 404 whatever the method (405 only with the right one).
            any(receiver::receive),
        )
        .with_state(receiver)
}

/// The processor of `settings`' webhook events, with the inbound rules of `catalog`.
pub fn processor(
    pool: PgPool,
    settings: &Settings,
    catalog: Arc<crate::sources::Catalog>,
) -> Processor {
    Processor::new(
        pool,
        Arc::new(settings.webhooks.clone()),
        Arc::new(crate::sources::inbound::Inbound::new(catalog)),
    )
}
