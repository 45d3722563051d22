//! Account and call activity a test can tell the simulator about: it fires the account events
//! (`whatsapp:account:*`) and call events (`call:*`) of §6.2 with the §6.3 shapes (both M, from
//! the Java models). Nothing else changes: the simulator has no calls in its chat histories and
//! keeps serving a disconnected account.

use chrono::Utc;
use serde_json::{Value, json};
use uuid::Uuid;

use super::messaging::create_direct_chat;
use super::render::ts;
use super::reply::{ApiError, FieldError};
use super::state::{Account, Shared, digits};
use super::validate::check_phone;
use super::webhooks::{self, Event, message_chat, party, short_account};

/// The account events (§6.2).
pub(crate) const ACCOUNT_EVENTS: &[&str] = &[
    "whatsapp:account:connected",
    "whatsapp:account:disconnected",
    "whatsapp:account:suspended",
    "whatsapp:account:resumed",
];

/// The call events (§6.2).
pub(crate) const CALL_EVENTS: &[&str] = &[
    "call:incoming:missed",
    "call:incoming:ended",
    "call:outgoing:ended",
];

/// The account block of chat and account events (§6.3).
fn account_block(account: &Account, status: &str, disconnected: bool) -> Value {
    json!({
        "id": account.wid,
        "phone": account.phone,
        "connected_on": ts(account.connected_on),
        "disconnected_on": if disconnected { json!(ts(Utc::now())) } else { Value::Null },
        "status": status,
        "account_name": account.account_name,
        "owner_name": account.owner_name,
        "owner_email": account.owner_email,
    })
}

/// Fires `event` (one of [`ACCOUNT_EVENTS`]) for the default account. False for another name.
pub(crate) fn account_event(sim: &Shared, event: &str) -> bool {
    let Some(name) = ACCOUNT_EVENTS.iter().find(|e| **e == event) else {
        return false;
    };
    let (status, disconnected) = match *name {
        "whatsapp:account:disconnected" => ("Disconnected", true),
        "whatsapp:account:suspended" => ("Suspended", false),
        _ => ("Active", false),
    };
    let payload = {
        let world = sim.world();
        let account = &world.accounts[world.default_account()];
        json!({ "whatsapp_account": account_block(account, status, disconnected) })
    };
    webhooks::deliver(
        sim,
        vec![Event {
            names: std::slice::from_ref(name),
            payload,
        }],
    );
    true
}

/// A call between the default account and `phone` (E.164), ended as `event` (one of
/// [`CALL_EVENTS`]); creates the direct chat if needed. Returns the call's message uid.
pub(crate) fn call(
    sim: &Shared,
    phone: &str,
    event: &str,
    duration_s: u32,
) -> Result<String, ApiError> {
    check_phone(phone).map_err(|msg| ApiError::invalid(FieldError::body("phone", msg)))?;
    let Some(name) = CALL_EVENTS.iter().find(|e| **e == event) else {
        return Err(ApiError::invalid(FieldError::body(
            "event",
            "not a call event",
        )));
    };
    let uid = Uuid::new_v4().to_string();
    let payload = {
        let mut world = sim.world();
        let account = world.default_account();
        let chat_id = match world.direct_chat(account, &digits(phone)) {
            Some(id) => id,
            None => create_direct_chat(&mut world, account, phone),
        };
        let chat = &world.chats[&chat_id];
        let acc = &world.accounts[account];
        let contact = party(&chat.name, &chat.phone);
        let team = party(&acc.owner_name, &acc.phone);
        let incoming = name.starts_with("call:incoming");
        let (caller, recipient) = if incoming {
            (contact, team)
        } else {
            (team, contact)
        };
        json!({
            "chat": message_chat(&world, chat),
            "whatsapp_account": short_account(acc),
            "call_details": {
                "duration": if *name == "call:incoming:missed" { 0 } else { duration_s },
                "direction": if incoming { "incoming" } else { "outgoing" },
                "is_video": false,
                "status": if *name == "call:incoming:missed" { "missed" } else { "ended" },
                "timestamp": ts(Utc::now()),
                "message_uid": uid,
                "caller": caller,
                "recipient": recipient,
            },
        })
    };
    webhooks::deliver(
        sim,
        vec![Event {
            names: std::slice::from_ref(name),
            payload,
        }],
    );
    Ok(uid)
}
