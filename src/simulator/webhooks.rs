//! Outbound webhooks (§6): payload shapes (§6.3) and delivery (§6.1).
//!
//! Delivery follows what §6.1 documents: one HTTP POST of a JSON body per matching enabled
//! subscription, no authentication and no custom headers, a 5 s deadline for a 2xx answer.
//! Retries are not documented, so there are none: a failure (non-2xx, timeout, refused
//! connection) increments the subscription's `errors_counter` and is kept in the delivery log
//! (last 1000, like the app's execution log); the subscription stays enabled. Deliveries run in
//! spawned tasks and never delay the API answer; they use no API-call quota (§6.1).
//!
//! The payload's `event_type` is the subscribed name (*INFERRED* in §6.3: `message:new` and
//! `message:sent:new` subscribers each get their own name).

use chrono::Utc;
use serde_json::{Value, json};

use super::inspect::WebhookDelivery;
use super::lifecycle;
use super::render::{self, ts};
use super::state::{Account, Chat, Message, Shared, World};

/// Every `event_type` a subscription may use (§6.2 canonical names; the `chat:created` family
/// is L and refused, §10.1 #6).
pub(crate) const EVENT_TYPES: &[&str] = &[
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

/// Subscriptions allowed per workspace (§6.1).
pub(crate) const MAX_WEBHOOKS: usize = 10;

/// Deliveries kept in the log (§6.1).
const LOG_LEN: usize = 1000;

/// Something that happened; delivered to subscriptions of any of `names`.
pub(crate) struct Event {
    pub names: &'static [&'static str],
    pub payload: Value,
}

/// One webhook post to make.
struct Post {
    webhook_id: i64,
    event_type: String,
    url: String,
    body: Value,
}

/// Posts `events` to every matching enabled subscription, each in its own task. Must run
/// inside a Tokio runtime.
pub(crate) fn deliver(sim: &Shared, events: Vec<Event>) {
    let posts = matching_posts(&sim.world(), &events);
    for post in posts {
        tokio::spawn(post_once(sim.clone(), post));
    }
}

fn matching_posts(world: &World, events: &[Event]) -> Vec<Post> {
    let mut posts = Vec::new();
    for event in events {
        for hook in world.webhooks.values() {
            if !hook.enabled || !event.names.contains(&hook.event_type.as_str()) {
                continue;
            }
            let mut body = json!({ "event_type": hook.event_type });
            if let (Some(out), Some(fields)) = (body.as_object_mut(), event.payload.as_object()) {
                out.extend(fields.clone());
            }
            posts.push(Post {
                webhook_id: hook.id,
                event_type: hook.event_type.clone(),
                url: hook.url.clone(),
                body,
            });
        }
    }
    posts
}

/// One attempt (§6.1 documents no retries); the outcome goes to the log and the counters.
async fn post_once(sim: Shared, post: Post) {
    let result = sim.http.post(&post.url).json(&post.body).send().await;
    let (status, error) = match result {
        Ok(r) if r.status().is_success() => (Some(r.status().as_u16()), None),
        Ok(r) => (
            Some(r.status().as_u16()),
            Some(format!("HTTP {}", r.status())),
        ),
        // (Without the URL: a receiver's URL holds its secret.)
        Err(e) => (None, Some(e.without_url().to_string())),
    };
    if let Some(e) = &error {
        tracing::debug!(webhook_id = post.webhook_id, error.message = %e, "webhook delivery failed");
    }
    let mut world = sim.world();
    if error.is_some() {
        world.counters.webhook_failures += 1;
        if let Some(hook) = world.webhooks.get_mut(&post.webhook_id) {
            hook.errors_counter += 1;
        }
    } else {
        world.counters.webhooks_delivered += 1;
    }
    if world.deliveries.len() == LOG_LEN {
        world.deliveries.pop_front();
    }
    world.deliveries.push_back(WebhookDelivery {
        webhook_id: post.webhook_id,
        event_type: post.event_type,
        url: post.url,
        status,
        error,
        at: Utc::now(),
        payload: post.body,
    });
}

/// Fires `message:new` + `message:sent:new` once the message reaches `Sent` (one status step
/// after acceptance, §5.1: "delivery progresses later"); failing messages never fire.
pub(crate) fn schedule_sent_event(sim: &Shared, uid: String) {
    let sim = sim.clone();
    tokio::spawn(async move {
        tokio::time::sleep(sim.config.status_step).await;
        let event = {
            let world = sim.world();
            let Some(message) = world.message(&uid) else {
                return;
            };
            if lifecycle::has_failed(message, Utc::now(), sim.config.status_step) {
                return;
            }
            let chat = &world.chats[&message.chat_id];
            Event {
                names: &["message:new", "message:sent:new"],
                payload: message_payload(&sim, &world, chat, message),
            }
        };
        deliver(&sim, vec![event]);
    });
}

/// The chat block of message, reaction and call events (§6.3).
pub(super) fn message_chat(world: &World, chat: &Chat) -> Value {
    let (email, name) = render::responsible(world, chat);
    json!({
        "full_name": chat.name,
        "chat_url": render::chat_url(chat.id),
        "chat_id": chat.id,
        "is_group": chat.is_group,
        "phone": chat.phone,
        "responsible_name": name,
        "responsible_email": email,
    })
}

pub(super) fn party(name: &str, phone: &str) -> Value {
    json!({ "full_name": name, "phone": phone })
}

pub(super) fn short_account(account: &Account) -> Value {
    json!({
        "full_name": account.owner_name,
        "email": account.owner_email,
        "phone": account.phone,
        "whatsapp_account_wid": account.wid,
    })
}

/// `message:new`, `message:received:new`, `message:sent:new` payload (§6.3).
pub(crate) fn message_payload(sim: &Shared, world: &World, chat: &Chat, m: &Message) -> Value {
    let attachments: Vec<Value> = m
        .attachment
        .iter()
        .map(|a| {
            json!({
                "temporary_download_url": render::download_url(sim, &a.file_uid),
                "filename": a.filename,
                "size": a.size,
                "mimetype": a.mimetype,
            })
        })
        .collect();
    let mut message = json!({
        "text": m.text,
        "direction": if m.is_from_me() { "sent" } else { "received" },
        "origin": m.origin,
        "timestamp": ts(m.created_at),
        "message_uid": m.uid,
        "sender": party(&m.sender_name, &m.sender_phone),
        "recipient": party(&m.recipient_name, &m.recipient_phone),
        "attachments": attachments,
    });
    if let Some(reply_to) = &m.reply_to {
        message["reply_to_uid"] = json!(reply_to);
    }
    json!({
        "chat": message_chat(world, chat),
        "whatsapp_account": short_account(&world.accounts[chat.account]),
        "message": message,
    })
}

/// `message:reaction` payload (§6.3); `chat.phone` without `+`, as in the official example.
pub(crate) fn reaction_payload(
    world: &World,
    chat: &Chat,
    m: &Message,
    emoji: &str,
    reactor: (&str, &str),
) -> Value {
    let mut chat_block = message_chat(world, chat);
    chat_block["phone"] = json!(chat.phone.trim_start_matches('+'));
    chat_block["chat_type"] = json!(if chat.is_group { "group" } else { "direct" });
    chat_block["platform"] = json!("whatsapp");
    json!({
        "chat": chat_block,
        "whatsapp_account": short_account(&world.accounts[chat.account]),
        "reaction": {
            "message_uid": m.uid,
            "action": if emoji.is_empty() { "clear" } else { "set" },
            "emoji": emoji,
            "timestamp": ts(Utc::now()),
            "reactor": party(reactor.0, reactor.1),
            "reactions": render::reaction_counts(m),
        },
    })
}

/// `chat:*` payload (§6.3, from the Java model): note `last_message_uuid` and
/// `unattended_customer`, unlike the REST chat object.
pub(crate) fn chat_payload(world: &World, chat: &Chat, previous: Option<&str>) -> Value {
    let (email, name) = render::responsible(world, chat);
    let previous_name = previous
        .and_then(|e| world.teammate_by_email(e))
        .map(|t| t.display_name.clone());
    let account = &world.accounts[chat.account];
    json!({
        "chat": {
            "id": chat.id,
            "name": chat.name,
            "phone": chat.phone,
            "jid": chat.jid,
            "is_group": chat.is_group,
            "closed": chat.closed,
            "read": chat.read,
            "labels": chat.labels,
            "unattended_customer": chat.unattended,
            "chatgpt_autoresponse_enabled": chat.chatgpt_autoresponse_enabled,
            "whatsapp_account_id": account.wid,
            "chat_url": render::chat_url(chat.id),
            "created_timestamp": ts(chat.created_at),
            "last_message_uuid": chat.last_message.as_ref().map(|(uid, _)| uid),
            "last_message_timestamp": chat.last_message.as_ref().map(|(_, t)| ts(*t)),
            "responsible_name": name,
            "responsible_email": email,
            "previous_responsible_name": previous_name,
            "previous_responsible_email": previous,
        },
        "whatsapp_account": {
            "id": account.wid,
            "phone": account.phone,
            "connected_on": ts(account.connected_on),
            "disconnected_on": null,
            "status": "Active",
            "account_name": account.account_name,
            "owner_name": account.owner_name,
            "owner_email": account.owner_email,
        },
    })
}
