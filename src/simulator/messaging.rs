//! Creating messages: outbound sends (#1–#5, §5.1) and simulated inbound messages, with chat
//! creation, credit charging (§8.4) and the webhook events they cause.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::inspect::SentMessage;
use super::lifecycle;
use super::reply::{ApiError, FieldError};
use super::state::{Attachment, Chat, FileRecord, Kind, Message, Shared, World, digits};
use super::targets::{Resolved, Target, pick_account, resolve};
use super::validate::check_phone;
use super::webhooks::{self, Event};
use axum::http::StatusCode;

/// A validated send request.
pub(crate) struct Outgoing {
    /// `"POST /messages"` etc., recorded in [`SentMessage::endpoint`].
    pub endpoint: &'static str,
    pub target: Target,
    pub text: String,
    pub file_uid: Option<String>,
    pub template_id: Option<i64>,
    pub reply_to: Option<String>,
    pub label: Option<String>,
    pub chat_name: Option<String>,
    /// #5: the voice note, stored as an unlisted file.
    pub voice: Option<FileRecord>,
}

/// A send that passed every check, ready to commit.
struct Plan {
    resolved: Resolved,
    account: usize,
    attachment: Option<Attachment>,
    credits: u64,
}

/// Accepts a send: validates references, charges credits, creates the chat if needed, records
/// the message, and schedules its webhooks. Returns the `message_uid`.
pub(crate) fn send(sim: &Shared, out: Outgoing) -> Result<String, ApiError> {
    let now = Utc::now();
    let (uid, events) = {
        let mut world = sim.world();
        let plan = check(sim, &world, &out, now)?;
        commit(sim, &mut world, out, plan, now)
    };
    webhooks::deliver(sim, events);
    webhooks::schedule_sent_event(sim, uid.clone());
    Ok(uid)
}

/// Everything that can refuse a send, before any change: target, attachment, `reply_to`,
/// then the messaging quota (§8.4).
fn check(
    sim: &Shared,
    world: &World,
    out: &Outgoing,
    now: DateTime<Utc>,
) -> Result<Plan, ApiError> {
    let resolved = resolve(world, &out.target)?;
    let account = match &resolved {
        Resolved::Existing(id) => world.chats[id].account,
        Resolved::New { account, .. } => *account,
    };
    let attachment = attachment(world, out)?;
    check_reply_to(world, out.reply_to.as_deref(), account)?;
    let credits = lifecycle::cost(&out.text, attachment.is_some());
    let used = lifecycle::credits_used(world, now, sim.config.status_step);
    if used + credits > sim.config.messaging_quota {
        // §8.4 / §8.1: 403 mentioning `quota_exceeded` / "mass sending quota".
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "quota_exceeded",
            "Mass sending quota exceeded: no messaging credits left for this period",
        ));
    }
    Ok(Plan {
        resolved,
        account,
        attachment,
        credits,
    })
}

/// Applies a checked send; returns the message uid and the chat events to deliver.
fn commit(
    sim: &Shared,
    world: &mut World,
    out: Outgoing,
    plan: Plan,
    now: DateTime<Utc>,
) -> (String, Vec<Event>) {
    let (chat_id, created) = match plan.resolved {
        Resolved::Existing(id) => (id, false),
        Resolved::New { account, phone } => (create_direct_chat(world, account, &phone), true),
    };
    if let Some(voice) = out.voice {
        world.files.push(voice);
    }
    let chat = world.chats.get_mut(&chat_id).expect("resolved by check");
    if let Some(label) = &out.label
        && !chat.labels.contains(label)
    {
        chat.labels.push(label.clone());
    }
    if let Some(name) = &out.chat_name {
        chat.name = name.clone();
    }
    chat.unattended = false;
    let fails =
        !chat.is_group && (sim.config.fail_phones.iter()).any(|p| digits(p) == digits(&chat.phone));
    let (recipient_name, recipient_phone, jid) =
        (chat.name.clone(), chat.phone.clone(), chat.jid.clone());
    let sender = &world.accounts[plan.account];
    let message = Message {
        uid: Uuid::new_v4().to_string(),
        chat_id,
        kind: Kind::Outbound { fails },
        created_at: now,
        text: out.text.clone(),
        origin: "Public API".to_owned(),
        sender_name: sender.owner_name.clone(),
        sender_phone: sender.phone.clone(),
        recipient_name,
        recipient_phone: recipient_phone.clone(),
        created_by: world.owner().display_name.clone(),
        attachment: plan.attachment,
        reply_to: out.reply_to.clone(),
        credits: plan.credits,
        reactions: Vec::new(),
    };
    let uid = message.uid.clone();
    let record = SentMessage {
        uid: uid.clone(),
        endpoint: out.endpoint.to_owned(),
        chat_id,
        phone: (!recipient_phone.is_empty()).then_some(recipient_phone),
        jid,
        whatsapp_account_phone: sender.phone.clone(),
        text: (!out.text.is_empty()).then_some(out.text),
        file_uid: out.file_uid,
        attachment_template_id: out.template_id,
        reply_to: out.reply_to,
        label: out.label,
        credits: plan.credits,
        created_at: now,
    };
    world.sent.push(record);
    world.push_message(message);
    let mut events = Vec::new();
    if created {
        events.push(chat_event(
            world,
            chat_id,
            &["chat:new", "chat:outgoing:new"],
        ));
    }
    (uid, events)
}

/// Simulates a contact writing to the workspace: creates the chat if needed, marks it unread
/// and unattended, and fires the `message:*` / `chat:*` events for received traffic.
pub(crate) fn receive(
    sim: &Shared,
    phone: &str,
    text: &str,
    account_phone: Option<&str>,
) -> Result<String, ApiError> {
    check_phone(phone).map_err(|msg| ApiError::invalid(FieldError::body("phone", msg)))?;
    let mut world = sim.world();
    let account = pick_account(&world, account_phone)?;
    let existing = world.direct_chat(account, &digits(phone));
    let chat_id = existing.unwrap_or_else(|| create_direct_chat(&mut world, account, phone));
    let chat = world
        .chats
        .get_mut(&chat_id)
        .expect("just found or created");
    chat.read = false;
    chat.unattended = true;
    let contact_name = chat.name.clone();
    let acc = &world.accounts[account];
    let message = Message {
        uid: Uuid::new_v4().to_string(),
        chat_id,
        kind: Kind::Inbound,
        created_at: Utc::now(),
        text: text.to_owned(),
        origin: "WhatsApp".to_owned(),
        sender_name: contact_name.clone(),
        sender_phone: phone.to_owned(),
        recipient_name: acc.owner_name.clone(),
        recipient_phone: acc.phone.clone(),
        created_by: contact_name,
        attachment: None,
        reply_to: None,
        credits: 0,
        reactions: Vec::new(),
    };
    let uid = message.uid.clone();
    world.push_message(message);
    let mut events = Vec::new();
    if existing.is_none() {
        events.push(chat_event(
            &world,
            chat_id,
            &["chat:new", "chat:incoming:new"],
        ));
    }
    let chat = &world.chats[&chat_id];
    let payload =
        webhooks::message_payload(sim, &world, chat, world.message(&uid).expect("pushed"));
    events.push(Event {
        names: &["message:new", "message:received:new"],
        payload,
    });
    drop(world);
    webhooks::deliver(sim, events);
    Ok(uid)
}

fn chat_event(world: &World, chat_id: i64, names: &'static [&'static str]) -> Event {
    Event {
        names,
        payload: webhooks::chat_payload(world, &world.chats[&chat_id], None),
    }
}

/// The attachment of a send: `file_uid` or the template's file (both must exist, §5.1).
fn attachment(world: &World, out: &Outgoing) -> Result<Option<Attachment>, ApiError> {
    let file_uid = match (&out.voice, &out.file_uid, out.template_id) {
        (Some(voice), _, _) => {
            return Ok(Some(Attachment {
                file_uid: voice.uid.clone(),
                filename: voice.filename.clone(),
                size: voice.size,
                mimetype: voice.mimetype.clone(),
            }));
        }
        (None, Some(uid), _) => {
            if world.file(uid).is_none() {
                return Err(ApiError::invalid(FieldError::body(
                    "file_uid",
                    "no uploaded file with this uid in the workspace",
                )));
            }
            uid.clone()
        }
        (None, None, Some(template)) => match world.templates.iter().find(|t| t.0 == template) {
            Some((_, uid)) => uid.clone(),
            None => {
                return Err(ApiError::invalid(FieldError::body(
                    "attachment_template_id",
                    "no attachment template with this id in the workspace",
                )));
            }
        },
        (None, None, None) => return Ok(None),
    };
    let f = world.file(&file_uid).expect("checked or seeded");
    Ok(Some(Attachment {
        file_uid,
        filename: f.filename.clone(),
        size: f.size,
        mimetype: f.mimetype.clone(),
    }))
}

/// `reply_to` must be a message of the same workspace and WhatsApp account (§5.1).
fn check_reply_to(world: &World, reply_to: Option<&str>, account: usize) -> Result<(), ApiError> {
    let Some(uid) = reply_to else { return Ok(()) };
    let same_account = world
        .message(uid)
        .and_then(|m| world.chats.get(&m.chat_id))
        .is_some_and(|c| c.account == account);
    if same_account {
        Ok(())
    } else {
        Err(ApiError::invalid(FieldError::body(
            "reply_to",
            "no message with this uid in the chat's WhatsApp account",
        )))
    }
}

/// Creates the direct chat of `account` with `phone`; named after the phone, as WhatsApp
/// shows unknown contacts.
pub(crate) fn create_direct_chat(world: &mut World, account: usize, phone: &str) -> i64 {
    let id = world.next_chat_id;
    world.next_chat_id += 1;
    let chat = Chat {
        id,
        name: phone.to_owned(),
        jid: format!("{}@s.whatsapp.net", digits(phone)),
        is_group: false,
        phone: phone.to_owned(),
        account,
        closed: false,
        read: true,
        unattended: false,
        labels: Vec::new(),
        chatgpt_autoresponse_enabled: false,
        responsible: None,
        created_at: Utc::now(),
        last_message: None,
        group_members: Vec::new(),
    };
    world.chats.insert(id, chat);
    id
}
