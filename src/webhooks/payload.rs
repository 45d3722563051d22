//! Reading webhook payloads (§6.3): which kind of event a type is, what identifies one event
//! across repeated deliveries, the contact it concerns, and the REST-shaped objects (§4) the
//! mirror tables are written from. Pure functions; nothing here touches the database.

use serde_json::{Map, Value, json};

use crate::sources::phone;

/// What an event type is about (§6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// `message:new`, `message:received:new`, `message:sent:new`.
    Message,
    /// `message:reaction`.
    Reaction,
    /// `chat:*`.
    Chat,
    /// `whatsapp:account:*`.
    Account,
    /// `call:*`.
    Call,
    /// `waba:message:*` (shapes undocumented: applied when they carry a message uid).
    WabaMessage,
    /// Other `waba:*` events: stored, nothing to apply.
    Waba,
}

/// The group of a documented event type; None for a type the reference does not list.
pub fn group(event_type: &str) -> Option<Group> {
    if !super::EVENT_TYPES.contains(&event_type) {
        return None;
    }
    Some(match event_type {
        "message:reaction" => Group::Reaction,
        t if t.starts_with("message:") => Group::Message,
        t if t.starts_with("chat:") => Group::Chat,
        t if t.starts_with("whatsapp:account:") => Group::Account,
        t if t.starts_with("call:") => Group::Call,
        t if t.starts_with("waba:message:") => Group::WabaMessage,
        _ => Group::Waba,
    })
}

/// A string at a dotted path.
pub fn str_at<'a>(payload: &'a Value, path: &str) -> Option<&'a str> {
    path.split('.')
        .try_fold(payload, |v, part| v.get(part))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// The message uid of a message, WABA message or call event (§6.3: webhooks say
/// `message_uid`; a top-level one is accepted for the undocumented WABA shapes).
pub fn message_uid(group: Group, payload: &Value) -> Option<&str> {
    match group {
        Group::Message | Group::WabaMessage => {
            str_at(payload, "message.message_uid").or_else(|| str_at(payload, "message_uid"))
        }
        Group::Reaction => str_at(payload, "reaction.message_uid"),
        Group::Call => str_at(payload, "call_details.message_uid"),
        _ => None,
    }
}

/// What identifies one event across repeated deliveries, when the payload names it: the event
/// type with its message (a message's signed download URLs may differ between deliveries).
/// None: the caller uses a hash of the whole payload.
pub fn natural_key(event_type: &str, payload: &Value) -> Option<String> {
    let group = group(event_type)?;
    let uid = message_uid(group, payload)?;
    Some(match group {
        Group::Reaction => {
            let part = |p: &str| str_at(payload, p).unwrap_or("");
            format!(
                "{event_type}:{uid}:{}:{}:{}:{}",
                part("reaction.action"),
                part("reaction.emoji"),
                part("reaction.reactor.phone"),
                part("reaction.timestamp")
            )
        }
        _ => format!("{event_type}:{uid}"),
    })
}

/// The object an event changes, for applying one object's events in arrival order (and telling
/// a repeated delivery from the same body sent again later): `chat:ID` for events of a chat,
/// its messages and calls, `account:ID` for account events; None for the others.
pub fn object_key(group: Group, payload: &Value) -> Option<String> {
    match group {
        Group::Account => account_id(payload).map(|id| format!("account:{id}")),
        Group::Waba => None,
        _ => chat_id(payload).map(|id| format!("chat:{id}")),
    }
}

/// The id of a payload's WhatsApp account: `id` (chat and account events), else the
/// `whatsapp_account_wid` of message-shaped events.
fn account_id(payload: &Value) -> Option<&str> {
    let account = payload.get("whatsapp_account")?;
    account
        .get("id")
        .or_else(|| account.get("whatsapp_account_wid"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// A phone from a payload as E.164: the reference's examples omit the `+` at times (§9).
pub fn e164(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let with_plus = if raw.chars().all(|c| c.is_ascii_digit()) && !raw.is_empty() {
        format!("+{raw}")
    } else {
        raw.to_owned()
    };
    phone::normalize(&with_plus, None).ok()
}

/// Whether a message event is inbound: `direction`, else the event's name.
pub fn is_received(event_type: &str, payload: &Value) -> bool {
    match str_at(payload, "message.direction") {
        Some(direction) => direction == "received",
        None => matches!(event_type, "message:received:new" | "waba:message:received"),
    }
}

/// The contact an event concerns (E.164) and their name: the other party of a message, the
/// chat's phone otherwise. None for account events and group chats without a sender.
pub fn contact(
    group: Group,
    event_type: &str,
    payload: &Value,
) -> (Option<String>, Option<String>) {
    let party = match group {
        Group::Message | Group::WabaMessage if is_received(event_type, payload) => {
            Some("message.sender")
        }
        Group::Message | Group::WabaMessage => Some("message.recipient"),
        Group::Reaction => Some("reaction.reactor"),
        _ => None,
    };
    // (The team's own account is never the contact: a reaction may be the team's.)
    let team = str_at(payload, "whatsapp_account.phone").and_then(e164);
    let from_party = party.and_then(|p| {
        let phone = str_at(payload, &format!("{p}.phone"))
            .and_then(e164)
            .filter(|phone| Some(phone) != team.as_ref())?;
        Some((
            phone,
            str_at(payload, &format!("{p}.full_name")).map(str::to_owned),
        ))
    });
    if let Some((phone, name)) = from_party {
        return (Some(phone), name);
    }
    let chat_phone = str_at(payload, "chat.phone").and_then(e164);
    let chat_name = str_at(payload, "chat.full_name")
        .or_else(|| str_at(payload, "chat.name"))
        .map(str::to_owned);
    (chat_phone, chat_name)
}

/// The chat id of a payload's chat block: `chat_id` in message-shaped events, `id` in chat
/// events; an integer or a string of digits.
pub fn chat_id(payload: &Value) -> Option<i64> {
    let chat = payload.get("chat")?;
    let id = chat.get("chat_id").or_else(|| chat.get("id"))?;
    id.as_i64()
        .or_else(|| id.as_str().and_then(|s| s.trim().parse().ok()))
}

/// A message event's message as the REST message object (§4.1) the mirror is written from,
/// with the webhook's own fields kept (`raw` merges them).
pub fn rest_message(event_type: &str, payload: &Value) -> Option<Value> {
    let group = group(event_type)?;
    let uid = message_uid(group, payload)?;
    let m = payload.get("message").cloned().unwrap_or(json!({}));
    let attachments = m.get("attachments").and_then(Value::as_array).cloned();
    let mut out = match m {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    out.insert("uid".into(), json!(uid));
    if let Some(id) = chat_id(payload) {
        out.insert("chat_id".into(), json!(id.to_string()));
    }
    out.insert("from_me".into(), json!(!is_received(event_type, payload)));
    if let Some(phone) = str_at(payload, "message.sender.phone") {
        out.insert("sender_phone".into(), json!(phone));
    }
    if let Some(phone) = str_at(payload, "message.recipient.phone") {
        out.insert("recipient_phone".into(), json!(phone));
    }
    if let Some(list) = attachments {
        out.insert("has_attachment".into(), json!(!list.is_empty()));
        if let Some(name) = list.first().and_then(|a| a.get("filename")) {
            out.insert("attachment_filename".into(), name.clone());
        }
    }
    // A status is only known from the event itself (not documented; a `status` field is taken).
    out.remove("status");
    Some(Value::Object(out))
}

/// The status a message event reports: a `status` field if present, else `Sent` for an
/// outbound `message:*` event (it fires once the message went out, §5.1) and the WABA name.
pub fn reported_status(event_type: &str, payload: &Value) -> Option<String> {
    if let Some(status) = str_at(payload, "message.status").or_else(|| str_at(payload, "status")) {
        return Some(status.to_owned());
    }
    match event_type {
        "waba:message:delivered" => Some("Delivered".into()),
        "waba:message:read" => Some("Read".into()),
        "waba:message:failed" => Some("Failed".into()),
        "waba:message:received" => None,
        t if t.starts_with("message:") && !is_received(t, payload) => Some("Sent".into()),
        _ => None,
    }
}

/// The chat block of a message, reaction or call event as the part of a REST chat (§4.2) it
/// tells: only the fields present, so nothing it does not say is cleared.
pub fn chat_from_message(payload: &Value) -> Option<Value> {
    let id = chat_id(payload)?;
    let chat = payload.get("chat")?;
    let mut out = Map::new();
    out.insert("id".into(), json!(id));
    for (from, to) in [
        ("full_name", "name"),
        ("phone", "phone"),
        ("is_group", "is_group"),
        ("chat_url", "chat_url"),
        ("responsible_name", "responsible_name"),
        ("responsible_email", "responsible_email"),
    ] {
        if let Some(value) = chat.get(from).filter(|v| !v.is_null()) {
            out.insert(to.into(), value.clone());
        }
    }
    if let Some(phone) = out.get("phone").and_then(Value::as_str).and_then(e164) {
        out.insert("phone".into(), json!(phone));
    }
    Some(Value::Object(out))
}

/// A chat event's chat as a REST chat (§4.2): `last_message_uuid` and `unattended_customer`
/// renamed, every other field kept.
pub fn chat_from_chat_event(payload: &Value) -> Option<Value> {
    let id = chat_id(payload)?;
    let Value::Object(mut out) = payload.get("chat")?.clone() else {
        return None;
    };
    out.insert("id".into(), json!(id));
    for (from, to) in [
        ("last_message_uuid", "last_message_uid"),
        ("unattended_customer", "unattended"),
    ] {
        if let Some(value) = out.remove(from) {
            out.insert(to.into(), value);
        }
    }
    Some(Value::Object(out))
}

/// The account of a chat or account event (§6.3) as a REST WhatsApp account (§4.4); an
/// account event's type says its status.
pub fn account(event_type: &str, payload: &Value) -> Option<Value> {
    let id = account_id(payload)?.to_owned();
    let Value::Object(mut out) = payload.get("whatsapp_account")?.clone() else {
        return None;
    };
    out.insert("id".into(), json!(id));
    let status = match event_type {
        "whatsapp:account:connected" | "whatsapp:account:resumed" => Some("Active"),
        "whatsapp:account:disconnected" => Some("Disconnected"),
        "whatsapp:account:suspended" => Some("Suspended"),
        _ => None,
    };
    if let Some(status) = status {
        out.insert("status".into(), json!(status));
    }
    Some(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received() -> Value {
        json!({
            "event_type": "message:received:new",
            "chat": {"full_name": "Ana", "chat_id": 1000001, "is_group": false, "phone": "+14155550123"},
            "whatsapp_account": {"full_name": "Team", "email": "t@x", "phone": "+972540000001"},
            "message": {"text": "STOP", "direction": "received", "origin": "WhatsApp",
                        "timestamp": "2023-06-18 15:19:23 +0300", "message_uid": "m-1",
                        "sender": {"full_name": "Ana", "phone": "+14155550123"},
                        "recipient": {"full_name": "Team", "phone": "+972540000001"},
                        "attachments": []}
        })
    }

    #[test]
    fn every_documented_type_has_a_group_and_others_none() {
        for t in super::super::EVENT_TYPES {
            assert!(group(t).is_some(), "{t}");
        }
        assert_eq!(group("chat:created"), None);
        assert_eq!(group("message:reaction"), Some(Group::Reaction));
    }

    #[test]
    fn a_received_message_concerns_its_sender_and_maps_to_the_rest_shape() {
        let p = received();
        let (phone, name) = contact(Group::Message, "message:received:new", &p);
        assert_eq!(phone.as_deref(), Some("+14155550123"));
        assert_eq!(name.as_deref(), Some("Ana"));
        let m = rest_message("message:received:new", &p).unwrap();
        assert_eq!(m["uid"], "m-1");
        assert_eq!(m["chat_id"], "1000001");
        assert_eq!(m["from_me"], false);
        assert_eq!(m["has_attachment"], false);
        assert_eq!(reported_status("message:received:new", &p), None);
        assert_eq!(
            natural_key("message:received:new", &p).as_deref(),
            Some("message:received:new:m-1")
        );
    }

    #[test]
    fn phones_without_a_plus_are_read_as_international() {
        assert_eq!(e164("380739833532").as_deref(), Some("+380739833532"));
        assert_eq!(e164("not a phone"), None);
    }

    #[test]
    fn a_chat_event_renames_the_fields_the_rest_object_calls_otherwise() {
        let p =
            json!({"chat": {"id": "42", "last_message_uuid": "u", "unattended_customer": true}});
        let c = chat_from_chat_event(&p).unwrap();
        assert_eq!(c["id"], 42);
        assert_eq!(c["last_message_uid"], "u");
        assert_eq!(c["unattended"], true);
    }
}
