//! A typed client of the TimelinesAI Public API (the contract: `shared/timelinesai-api.md`).
//!
//! # Layout
//! - [`client`]: [`Client`] and [`ClientOptions`]; the one function every request goes through.
//! - `endpoints/`: one `Client` method per endpoint of the reference's table (#1–#32).
//! - [`request`]: request bodies and query filters.
//! - [`model`]: response objects, read tolerantly, with the raw JSON kept for mirroring.
//! - [`record`]: [`RequestRecord`]s for the request log, and [`RequestTag`].
//! - [`error`]: [`ApiError`], [`ErrorClass`], [`BuildError`].
//! - `classify`: the pure classification of responses and `Retry-After`.
//! - `envelope`: the `{"status":"ok"|"error", …}` envelope, including HTTP 200 errors and HTML.
//! - `reply`: request payloads and the typed decoding of replies.
//! - [`time`]: the API's `"2023-06-18 15:19:23 +0300"` timestamps.
//!
//! The client never retries and never rate-limits: it sends one request per call and says what
//! happened; the dispatcher and the limiter decide the rest. The token lives in a
//! [`crate::config::Secret`] and a sensitive header value, and is never logged, recorded or put
//! into an error.

mod classify;
pub mod client;
mod endpoints;
mod envelope;
pub mod error;
pub mod model;
pub mod record;
mod reply;
pub mod request;
pub mod time;

#[cfg(test)]
mod http_tests;

pub use client::{Client, ClientOptions, Gate};
pub use error::{ApiError, BuildError, ErrorClass, FieldError, HttpMethod};
pub use model::{
    Chat, ChatPage, FailureReason, FileInfo, GroupMember, Message, MessageAccepted, MessagePage,
    NonRecurringQuota, QuotaBlock, Quotas, ReactionUser, Reactions, StatusEntry, Teammate, Webhook,
    WhatsappAccount, Workspace,
};
pub use record::{RequestObserver, RequestRecord, RequestTag};
pub use request::{
    ChatFilter, ChatUpdate, Invitation, MessageQuery, NewWebhook, SendInChat, SendToChatName,
    SendToJid, SendToPhone, SortOrder, UploadFromUrl, WebhookUpdate,
};
pub use time::{format_query_timestamp, parse_timestamp};
