//! Webhook payloads of every documented shape (API reference §6.3), with the values a test
//! chooses.

use serde_json::{Value, json};

/// The team's account in these payloads.
pub const ACCOUNT_WID: &str = "972540000001@s.whatsapp.net";
pub const ACCOUNT_PHONE: &str = "+972540000001";

fn account_short() -> Value {
    json!({"full_name": "Team Owner", "email": "owner@example.com", "phone": ACCOUNT_PHONE,
           "whatsapp_account_wid": ACCOUNT_WID})
}

fn account_full(status: &str) -> Value {
    json!({"id": ACCOUNT_WID, "phone": ACCOUNT_PHONE, "connected_on": "2023-06-18 15:19:23 +0300",
           "disconnected_on": null, "status": status, "account_name": "Sales line",
           "owner_name": "Team Owner", "owner_email": "owner@example.com"})
}

fn message_chat(chat_id: i64, phone: &str) -> Value {
    json!({"full_name": "Ana Lima", "chat_url": format!("https://app.timelines.ai/chat/{chat_id}/messages/"),
           "chat_id": chat_id, "is_group": false, "phone": phone,
           "responsible_name": null, "responsible_email": null})
}

/// `message:new`, `message:received:new` or `message:sent:new`: a message between `phone`
/// (the contact) and the team, `received` from the contact or sent to them.
pub fn message(
    event_type: &str,
    uid: &str,
    chat_id: i64,
    phone: &str,
    received: bool,
    text: &str,
) -> Value {
    let contact = json!({"full_name": "Ana Lima", "phone": phone});
    let team = json!({"full_name": "Team Owner", "phone": ACCOUNT_PHONE});
    let (sender, recipient) = if received {
        (contact, team)
    } else {
        (team, contact)
    };
    json!({
        "event_type": event_type,
        "chat": message_chat(chat_id, phone),
        "whatsapp_account": account_short(),
        "message": {
            "text": text, "direction": if received { "received" } else { "sent" },
            "origin": "WhatsApp", "timestamp": "2024-03-01 10:00:00 +0300",
            "message_uid": uid, "sender": sender, "recipient": recipient,
            "attachments": [{"temporary_download_url": "https://files.example/x?sig=1",
                             "filename": "invoice.pdf", "size": 2048, "mimetype": "application/pdf"}]
        }
    })
}

/// `message:reaction` (§6.3: `chat.phone` without `+`).
pub fn reaction(uid: &str, chat_id: i64, phone: &str, emoji: &str) -> Value {
    let mut chat = message_chat(chat_id, phone.trim_start_matches('+'));
    chat["chat_type"] = json!("direct");
    chat["platform"] = json!("whatsapp");
    json!({
        "event_type": "message:reaction",
        "chat": chat,
        "whatsapp_account": account_short(),
        "reaction": {"message_uid": uid, "action": "set", "emoji": emoji,
                     "timestamp": "2024-03-01 10:05:00 +0300",
                     "reactor": {"full_name": "Ana Lima", "phone": phone},
                     "reactions": {emoji: 1}}
    })
}

/// A `chat:*` event (§6.3, from the Java model).
pub fn chat(event_type: &str, chat_id: i64, phone: &str, responsible: Option<&str>) -> Value {
    json!({
        "event_type": event_type,
        "chat": {"id": chat_id, "name": "Ana Lima", "phone": phone,
                 "jid": format!("{}@s.whatsapp.net", phone.trim_start_matches('+')),
                 "is_group": false, "closed": false, "read": false, "labels": ["lead", "vip"],
                 "unattended_customer": true, "chatgpt_autoresponse_enabled": false,
                 "whatsapp_account_id": ACCOUNT_WID,
                 "chat_url": format!("https://app.timelines.ai/chat/{chat_id}/messages/"),
                 "created_timestamp": "2024-03-01 09:00:00 +0300",
                 "last_message_uuid": "last-1", "last_message_timestamp": "2024-03-01 10:00:00 +0300",
                 "responsible_name": responsible.map(|_| "Rita Agent"),
                 "responsible_email": responsible,
                 "previous_responsible_name": null, "previous_responsible_email": null},
        "whatsapp_account": account_full("Active"),
    })
}

/// A `whatsapp:account:*` event.
pub fn account(event_type: &str, status: &str) -> Value {
    json!({"event_type": event_type, "whatsapp_account": account_full(status)})
}

/// A `call:*` event.
pub fn call(event_type: &str, uid: &str, chat_id: i64, phone: &str) -> Value {
    let incoming = event_type.starts_with("call:incoming");
    let contact = json!({"full_name": "Ana Lima", "phone": phone});
    let team = json!({"full_name": "Team Owner", "phone": ACCOUNT_PHONE});
    let (caller, recipient) = if incoming {
        (contact, team)
    } else {
        (team, contact)
    };
    json!({
        "event_type": event_type,
        "chat": message_chat(chat_id, phone),
        "whatsapp_account": account_short(),
        "call_details": {"duration": 42, "direction": if incoming { "incoming" } else { "outgoing" },
                         "is_video": false, "status": "ended", "timestamp": "2024-03-01 11:00:00 +0300",
                         "message_uid": uid, "caller": caller, "recipient": recipient}
    })
}

/// A `waba:message:*` event (shape not in the reference: the message events' shape is
/// assumed).
pub fn waba_message(event_type: &str, uid: &str, chat_id: i64, phone: &str) -> Value {
    let mut event = message(
        event_type,
        uid,
        chat_id,
        phone,
        event_type.ends_with("received"),
        "hi",
    );
    event["timestamp"] = json!("2024-03-01 10:30:00 +0300");
    event
}
