//! Applying one stored event, inside the processor's transaction: the mirror tables (through the
//! dispatcher's upserts in [`crate::dispatcher::store`]), opt-out by reply, and inbound rules.
//! Every step is idempotent, so an event applied again (a retry after a crash) changes nothing.

use std::sync::Arc;

use serde_json::{Map, Value, json};
use sqlx::PgConnection;

use super::config::WebhookSettings;
use super::events::{Applied, Claimed, status};
use super::payload::{self, Group, str_at};
use crate::dispatcher::store;
use crate::sources::inbound::{Inbound, InboundEvent};
use crate::sources::spec::MESSAGE_KINDS;

/// What applying needs besides the event.
pub(super) struct Applier {
    pub(super) settings: Arc<WebhookSettings>,
    /// Inbound rules (the built-in `timelines` source of the catalog).
    pub(super) rules: Arc<Inbound>,
}

impl Applier {
    /// Applies `e` in `tx` and says how it went. A database error is returned (the caller
    /// decides whether to retry); anything wrong with the payload is an [`Applied`] status.
    pub(super) async fn apply(&self, tx: &mut PgConnection, e: &Claimed) -> sqlx::Result<Applied> {
        let Some(group) = payload::group(&e.event_type) else {
            // (The receiver marks these; a row edited by hand back to pending lands here.)
            return Ok(Applied::not_applied(status::UNKNOWN, "unknown event type"));
        };
        let p = &e.payload;
        let mut applied = match group {
            Group::Message | Group::WabaMessage => apply_message(tx, e, group).await?,
            Group::Reaction => apply_reaction(tx, e).await?,
            Group::Chat => apply_chat(tx, e).await?,
            Group::Account => apply_account(tx, e).await?,
            Group::Call => apply_call(tx, e).await?,
            Group::Waba => Applied::not_applied(
                status::IGNORED,
                "WABA chat, account and template events are stored, not applied (the API \
                 reference gives no payload shape for them)",
            ),
        };
        if applied.status != status::PROCESSED {
            return Ok(applied);
        }
        let (phone, name) = payload::contact(group, &e.event_type, p);
        if matches!(group, Group::Message | Group::WabaMessage)
            && payload::is_received(&e.event_type, p)
            && let (Some(phone), Some(text)) = (&phone, str_at(p, "message.text"))
            && self.settings.is_opt_out(text)
        {
            opt_out(tx, &e.workspace, phone, text, payload::chat_id(p)).await?;
        }
        let event = InboundEvent {
            id: e.id,
            workspace: &e.workspace,
            event_type: &e.event_type,
            implied: implied_types(group, &e.event_type, p),
            record_id: record_id(group, e),
            payload: p,
            phone: phone.as_deref(),
            name: name.as_deref(),
        };
        applied.jobs_created = self.rules.apply(tx, &event).await?;
        Ok(applied)
    }
}

/// The event types an event also counts as for inbound rules: `message:new` is either
/// `message:received:new` or `message:sent:new` by its direction (and each of those a
/// `message:new`); `chat:incoming:new` and `chat:outgoing:new` are `chat:new`s.
fn implied_types(group: Group, event_type: &str, p: &Value) -> Vec<&'static str> {
    match (group, event_type) {
        (Group::Message, _) if payload::is_received(event_type, p) => {
            vec!["message:new", "message:received:new"]
        }
        (Group::Message, _) => vec!["message:new", "message:sent:new"],
        (Group::Chat, "chat:incoming:new") => vec!["chat:new", "chat:incoming:new"],
        (Group::Chat, "chat:outgoing:new") => vec!["chat:new", "chat:outgoing:new"],
        _ => Vec::new(),
    }
}

/// What inbound rules key their jobs on: the message for message events (so `message:new` and
/// `message:received:new` deliveries of one message make one job), the chat for new-chat
/// events, the stored event otherwise (repeated deliveries are one stored event).
fn record_id(group: Group, e: &Claimed) -> String {
    let p = &e.payload;
    match (group, payload::message_uid(group, p), payload::chat_id(p)) {
        (Group::Message, Some(uid), _) => format!("message:{uid}"),
        (Group::Chat, _, Some(chat)) if e.event_type.ends_with(":new") => {
            format!("chat:{chat}:new")
        }
        _ => format!("event:{}", e.id),
    }
}

fn malformed(why: &str) -> Applied {
    Applied::not_applied(status::MALFORMED, why)
}

async fn apply_message(tx: &mut PgConnection, e: &Claimed, group: Group) -> sqlx::Result<Applied> {
    let p = &e.payload;
    let Some(uid) = payload::message_uid(group, p) else {
        return Ok(malformed("a message event without message.message_uid"));
    };
    if let Some(chat) = payload::chat_from_message(p) {
        merge_chat(tx, &e.workspace, chat).await?;
    }
    if let Some(message) = payload::rest_message(&e.event_type, p) {
        store::upsert_messages(
            &mut *tx,
            &e.workspace,
            payload::chat_id(p),
            &[message],
            None,
        )
        .await?;
    }
    if let Some(reported) = payload::reported_status(&e.event_type, p) {
        let at = match group {
            Group::WabaMessage => str_at(p, "timestamp"),
            _ => str_at(p, "message.timestamp"),
        };
        let mut entry = json!({"status": reported, "timestamp": at});
        if let Some(reason) = p.pointer("/message/failure_reason") {
            entry["failure_reason"] = reason.clone();
        }
        store::record_status_history(&mut *tx, &e.workspace, uid, &[entry]).await?;
    }
    Ok(Applied::processed(Some(uid)))
}

async fn apply_reaction(tx: &mut PgConnection, e: &Claimed) -> sqlx::Result<Applied> {
    let p = &e.payload;
    let Some(uid) = payload::message_uid(Group::Reaction, p) else {
        return Ok(malformed("a reaction event without reaction.message_uid"));
    };
    if let Some(chat) = payload::chat_from_message(p) {
        merge_chat(tx, &e.workspace, chat).await?;
    }
    let mut message = json!({"uid": uid});
    if let Some(reactions) = p.pointer("/reaction/reactions") {
        message["reactions"] = reactions.clone();
    }
    store::upsert_messages(
        &mut *tx,
        &e.workspace,
        payload::chat_id(p),
        &[message],
        None,
    )
    .await?;
    Ok(Applied::processed(Some(uid)))
}

async fn apply_chat(tx: &mut PgConnection, e: &Claimed) -> sqlx::Result<Applied> {
    let Some(chat) = payload::chat_from_chat_event(&e.payload) else {
        return Ok(malformed("a chat event without chat.id"));
    };
    merge_chat(tx, &e.workspace, chat).await?;
    if let Some(account) = payload::account(&e.event_type, &e.payload) {
        merge_account(tx, &e.workspace, account, false).await?;
    }
    Ok(Applied::processed(None))
}

async fn apply_account(tx: &mut PgConnection, e: &Claimed) -> sqlx::Result<Applied> {
    let Some(account) = payload::account(&e.event_type, &e.payload) else {
        return Ok(malformed("an account event without whatsapp_account.id"));
    };
    merge_account(tx, &e.workspace, account, true).await?;
    Ok(Applied::processed(None))
}

/// A call shows in the chat as a message (it has a `message_uid`, §6.3).
async fn apply_call(tx: &mut PgConnection, e: &Claimed) -> sqlx::Result<Applied> {
    let p = &e.payload;
    if let Some(chat) = payload::chat_from_message(p) {
        merge_chat(tx, &e.workspace, chat).await?;
    }
    let Some(uid) = payload::message_uid(Group::Call, p) else {
        return Ok(Applied::processed(None));
    };
    let message = json!({
        "uid": uid,
        "message_type": "call",
        "from_me": str_at(p, "call_details.direction").map(|d| d == "outgoing"),
        "timestamp": str_at(p, "call_details.timestamp"),
        "sender_phone": str_at(p, "call_details.caller.phone"),
        "recipient_phone": str_at(p, "call_details.recipient.phone"),
        "call_details": p.get("call_details"),
    });
    store::upsert_messages(
        &mut *tx,
        &e.workspace,
        payload::chat_id(p),
        &[message],
        None,
    )
    .await?;
    Ok(Applied::processed(Some(uid)))
}

/// `update`'s fields over the stored object's: an event tells part of an object, and what it
/// does not say must not be cleared by the upsert (which writes every column).
fn merged(stored: Option<Value>, update: Value) -> Value {
    let mut out = match stored {
        Some(Value::Object(map)) => map,
        _ => Map::new(),
    };
    if let Value::Object(fields) = update {
        out.extend(fields);
    }
    Value::Object(out)
}

/// Advisory lock classes of the objects events merge into: two instances merging events of one
/// chat (or account) at once would each read the stored object before the other wrote it, and
/// the later write would drop the earlier one's fields.
const CHAT_LOCK: i32 = 0x7768_6368; // "whch"
const ACCOUNT_LOCK: i32 = 0x7768_6163; // "whac"

/// Holds the object `key` of `class` until the transaction ends.
async fn lock(tx: &mut PgConnection, class: i32, workspace: &str, key: &str) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2 || ':' || $3))")
        .bind(class)
        .bind(workspace)
        .bind(key)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

async fn merge_chat(tx: &mut PgConnection, workspace: &str, chat: Value) -> sqlx::Result<()> {
    let id = chat.get("id").and_then(Value::as_i64);
    lock(
        tx,
        CHAT_LOCK,
        workspace,
        &id.unwrap_or_default().to_string(),
    )
    .await?;
    let stored: Option<Value> =
        sqlx::query_scalar("SELECT raw FROM timelines.chats WHERE workspace = $1 AND chat_id = $2")
            .bind(workspace)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    store::upsert_chats(&mut *tx, workspace, &[merged(stored, chat)]).await?;
    Ok(())
}

/// Merges `account` into the stored one. Only an account event's type says the account's
/// status (`by_type`); the `status` in other events' account block is not kept up to date (it
/// reads `Active` after a disconnection), so it only fills in an account not stored yet.
async fn merge_account(
    tx: &mut PgConnection,
    workspace: &str,
    mut account: Value,
    by_type: bool,
) -> sqlx::Result<()> {
    let id = account
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    lock(tx, ACCOUNT_LOCK, workspace, &id).await?;
    let stored: Option<Value> = sqlx::query_scalar(
        "SELECT raw FROM timelines.whatsapp_accounts WHERE workspace = $1 AND account_id = $2",
    )
    .bind(workspace)
    .bind(&id)
    .fetch_optional(&mut *tx)
    .await?;
    if !by_type
        && stored.is_some()
        && let Some(fields) = account.as_object_mut()
    {
        fields.remove("status");
    }
    store::upsert_whatsapp_accounts(&mut *tx, workspace, &[merged(stored, account)]).await?;
    Ok(())
}

/// Opts `phone` out and cancels its queued, retrying and held sends, by phone and (for its direct
/// chat) by chat id. (The `timelines.opt_outs` trigger cancels by phone only when the row is new;
/// a phone opted out before may have had sends enqueued directly since.)
async fn opt_out(
    tx: &mut PgConnection,
    workspace: &str,
    phone: &str,
    text: &str,
    chat_id: Option<i64>,
) -> sqlx::Result<()> {
    let reason = format!("replied {:?}", text.trim());
    sqlx::query(
        "INSERT INTO timelines.opt_outs (phone, reason, source) VALUES ($1, $2, 'webhook')
         ON CONFLICT (phone) DO NOTHING",
    )
    .bind(phone)
    .bind(&reason)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE timelines.jobs
            SET state = 'cancelled', finished_at = now(), updated_at = now(),
                last_error = 'cancelled: ' || $3 || ' opted out (' || $4 || ')'
          WHERE state IN ('queued', 'retrying', 'held') AND kind = ANY($5)
            AND (payload->>'phone' = $3
                 OR (workspace = $1 AND payload->>'chat_id' = $2::text
                     AND EXISTS (SELECT 1 FROM timelines.chats c
                                  WHERE c.workspace = $1 AND c.chat_id = $2
                                    AND NOT coalesce(c.is_group, false))))",
    )
    .bind(workspace)
    .bind(chat_id)
    .bind(phone)
    .bind(&reason)
    .bind(MESSAGE_KINDS)
    .execute(&mut *tx)
    .await?;
    tracing::info!(%workspace, "a contact opted out by reply");
    Ok(())
}
