//! JSON shapes of the REST objects (§4) and the response timestamp format (§2.5).

use chrono::{DateTime, Datelike, FixedOffset, TimeZone, Utc};
use serde_json::{Value, json};

use super::lifecycle;
use super::state::{Account, Chat, FileRecord, Kind, Message, Sim, Teammate, Webhook, World};

/// The workspace's time zone. +03:00 like the reference examples (§2.5), so a client that
/// ignores the offset gets times visibly wrong instead of accidentally right.
pub(crate) const WORKSPACE_OFFSET_SECS: i32 = 3 * 3600;

fn workspace_tz() -> FixedOffset {
    FixedOffset::east_opt(WORKSPACE_OFFSET_SECS).expect("offset is within a day")
}

/// `"YYYY-MM-DD HH:MM:SS ±HHMM"`, e.g. `"2023-06-18 15:19:23 +0300"` (§2.5; not RFC 3339).
pub(crate) fn ts(t: DateTime<Utc>) -> String {
    t.with_timezone(&workspace_tz())
        .format("%Y-%m-%d %H:%M:%S %z")
        .to_string()
}

/// `https://app.timelines.ai/chat/<id>/messages/` (§4.2).
pub(crate) fn chat_url(id: i64) -> String {
    format!("https://app.timelines.ai/chat/{id}/messages/")
}

/// The temporary download URL of a file; served by the simulator itself (`/_sim/files/…`).
pub(crate) fn download_url(sim: &Sim, file_uid: &str) -> String {
    format!("{}/_sim/files/{file_uid}/download", sim.origin)
}

/// Responsible teammate's `(email, name)`, both null when unassigned.
pub(crate) fn responsible(world: &World, chat: &Chat) -> (Value, Value) {
    match &chat.responsible {
        Some(email) => {
            let name = world
                .teammate_by_email(email)
                .map(|t| t.display_name.clone())
                .unwrap_or_default();
            (json!(email), json!(name))
        }
        None => (Value::Null, Value::Null),
    }
}

/// The Chat object (§4.2). `id` is an integer (§10.1 #3).
pub(crate) fn chat(world: &World, chat: &Chat) -> Value {
    let (responsible_email, responsible_name) = responsible(world, chat);
    let mut out = json!({
        "id": chat.id,
        "name": chat.name,
        "jid": chat.jid,
        "is_group": chat.is_group,
        "closed": chat.closed,
        "read": chat.read,
        "labels": chat.labels,
        "chatgpt_autoresponse_enabled": chat.chatgpt_autoresponse_enabled,
        "whatsapp_account_id": world.accounts[chat.account].wid,
        "chat_url": chat_url(chat.id),
        "created_timestamp": ts(chat.created_at),
        "last_message_timestamp": chat.last_message.as_ref().map(|(_, t)| ts(*t)),
        "last_message_uid": chat.last_message.as_ref().map(|(uid, _)| uid),
        "unattended": chat.unattended,
        "photo": format!("https://app.timelines.ai/static/avatars/{}.png", chat.id),
        "phone": chat.phone,
        "responsible_email": responsible_email,
        "responsible_name": responsible_name,
        "is_allowed_to_message": true,
    });
    if chat.is_group {
        out["group_members"] = chat
            .group_members
            .iter()
            .map(|m| json!({"name": m.name, "phone": m.phone, "role": m.role, "chat_id": chat.id}))
            .collect();
    }
    out
}

/// The Message object (§4.1). `chat_id` is a string like the examples (§10.1 #3); reactions use
/// the newer `{users, reactions, total}` shape (§10.1 #4).
pub(crate) fn message(sim: &Sim, m: &Message, now: DateTime<Utc>) -> Value {
    let message_type = match m.kind {
        Kind::Note { .. } => "Note",
        _ => "whatsapp",
    };
    let mut data = serde_json::Map::new();
    if let Kind::Note { is_private } = m.kind {
        data.insert("is_private".into(), json!(is_private.to_string()));
    }
    json!({
        "uid": m.uid,
        "chat_id": m.chat_id.to_string(),
        "timestamp": ts(m.created_at),
        "sender_phone": m.sender_phone,
        "sender_name": m.sender_name,
        "recipient_phone": m.recipient_phone,
        "recipient_name": m.recipient_name,
        "from_me": m.is_from_me(),
        "status": lifecycle::status(m, now, sim.config.status_step),
        "origin": m.origin,
        "has_attachment": m.attachment.is_some(),
        "message_type": message_type,
        "data": data,
        "created_by": m.created_by,
        "text": m.text,
        "attachment_url": m.attachment.as_ref().map(|a| download_url(sim, &a.file_uid)),
        "attachment_filename": m.attachment.as_ref().map(|a| a.filename.clone()),
        "reactions": reactions(m),
    })
}

/// The reactions map of #8 (§4.8): every reaction ever set, `current` on those still set;
/// counts and total cover the current ones only.
pub(crate) fn reactions(m: &Message) -> Value {
    let users: Vec<Value> = m
        .reactions
        .iter()
        .map(|r| json!({"name": r.name, "phone": r.phone, "reaction": r.emoji, "current": r.current}))
        .collect();
    json!({ "users": users, "reactions": reaction_counts(m), "total": m.reactions.iter().filter(|r| r.current).count() })
}

pub(crate) fn reaction_counts(m: &Message) -> Value {
    let mut counts = serde_json::Map::new();
    for r in m.reactions.iter().filter(|r| r.current) {
        let n = counts.get(&r.emoji).and_then(Value::as_u64).unwrap_or(0);
        counts.insert(r.emoji.clone(), json!(n + 1));
    }
    Value::Object(counts)
}

/// The File object (§4.3); list items (#20) leave out `temporary_download_url`.
pub(crate) fn file(sim: &Sim, f: &FileRecord, with_url: bool) -> Value {
    let mut out = json!({
        "uid": f.uid,
        "filename": f.filename,
        "size": f.size,
        "mimetype": f.mimetype,
        "uploaded_by_email": f.uploaded_by_email,
        "uploaded_at": ts(f.uploaded_at),
    });
    if with_url {
        out["temporary_download_url"] = json!(download_url(sim, &f.uid));
    }
    out
}

/// The WhatsApp account object (§4.4).
pub(crate) fn account(a: &Account) -> Value {
    json!({
        "id": a.wid,
        "phone": a.phone,
        "connected_on": ts(a.connected_on),
        "status": "Active",
        "owner_name": a.owner_name,
        "owner_email": a.owner_email,
        "account_name": a.account_name,
        "is_visible": true,
    })
}

/// The Teammate object (§4.5) with the accounts the teammate owns.
pub(crate) fn teammate(world: &World, t: &Teammate) -> Value {
    let accounts: Vec<Value> = world
        .accounts
        .iter()
        .filter(|a| a.owner_email.eq_ignore_ascii_case(&t.email))
        .map(account)
        .collect();
    let status = if t.invitation_status.is_some() {
        "invited"
    } else {
        "active"
    };
    let mut out = json!({
        "user_id": t.user_id,
        "display_name": t.display_name,
        "email": t.email,
        "status": status,
        "created_at": ts(t.created_at),
        "role": t.role,
        "whatsapp_accounts": accounts,
    });
    if let Some(team) = &t.team {
        out["team"] = json!(team);
    }
    if let Some(inv) = &t.invitation_status {
        out["invitation_status"] = json!(inv);
    }
    out
}

/// The four quota blocks of §4.6, with live usage.
pub(crate) fn quotas(sim: &Sim, world: &World, now: DateTime<Utc>) -> Value {
    let (start, end) = month_bounds(now);
    let block = |total: u64, used: u64| json!({"total": total, "used": used, "period_start": ts(start), "period_end": ts(end)});
    let credits = lifecycle::credits_used(world, now, sim.config.status_step);
    json!({
        "messaging_quota": block(sim.config.messaging_quota, credits),
        "api_calls_quota": block(sim.config.monthly_api_calls, world.api_calls_used),
        "seats": block(world.workspace.seats_total, world.teammates.len() as u64),
        "non_recurring_quota": {
            "remaining_balance": 0,
            "last_updated_at": ts(world.workspace.created_at),
        },
    })
}

/// The Webhook subscription object (§4.7); ids are integers.
pub(crate) fn webhook(w: &Webhook) -> Value {
    json!({
        "id": w.id,
        "event_type": w.event_type,
        "enabled": w.enabled,
        "url": w.url,
        "errors_counter": w.errors_counter,
    })
}

/// The current calendar month in the workspace's time zone: quotas reset monthly (§8.3, §8.4).
/// Usage is not reset when the simulator runs across a month boundary.
fn month_bounds(now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let tz = workspace_tz();
    let local = now.with_timezone(&tz);
    let (y, m) = (local.year(), local.month());
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    let at = |y, m| {
        tz.with_ymd_and_hms(y, m, 1, 0, 0, 0)
            .single()
            .expect("midnight at a fixed offset is unambiguous")
            .with_timezone(&Utc)
    };
    (at(y, m), at(ny, nm))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_use_a_space_and_an_offset_without_colon() {
        let t = DateTime::parse_from_rfc3339("2023-06-18T12:19:23Z").unwrap();
        assert_eq!(ts(t.with_timezone(&Utc)), "2023-06-18 15:19:23 +0300");
    }
}
