//! Messages (reference §4.1), their reactions (§4.8) and status history (§4.9).

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::{lenient, opt_bool, opt_i64, opt_text, required_text};
use crate::timelines::time::lenient_timestamp;

mirrored! {
    /// A message (`GET /messages/{uid}`, items of `GET /chats/{id}/messages`). Notes added with
    /// `add_note` are messages too (`message_type` "Note").
    pub struct Message {
        /// The message UID (webhooks call it `message_uid`).
        #[serde(alias = "message_uid", deserialize_with = "required_text")]
        pub uid: String,
        /// The chat id; the reference example sends it as a string, normalised here.
        #[serde(default, deserialize_with = "opt_i64")]
        pub chat_id: Option<i64>,
        /// When it was sent or received.
        #[serde(default, deserialize_with = "lenient_timestamp")]
        pub timestamp: Option<DateTime<FixedOffset>>,
        /// Sender's phone (the team's own number on outbound messages).
        #[serde(default, deserialize_with = "opt_text")]
        pub sender_phone: Option<String>,
        /// Sender's name.
        #[serde(default, deserialize_with = "opt_text")]
        pub sender_name: Option<String>,
        /// Recipient's phone.
        #[serde(default, deserialize_with = "opt_text")]
        pub recipient_phone: Option<String>,
        /// Recipient's name.
        #[serde(default, deserialize_with = "opt_text")]
        pub recipient_name: Option<String>,
        /// Whether the workspace sent it: the only reliable direction flag.
        #[serde(default, deserialize_with = "opt_bool")]
        pub from_me: Option<bool>,
        /// Delivery status, e.g. `"Read"`; the set is undocumented, so it stays a string.
        #[serde(default, deserialize_with = "opt_text")]
        pub status: Option<String>,
        /// Where it came from, e.g. `"Public API"`.
        #[serde(default, deserialize_with = "opt_text")]
        pub origin: Option<String>,
        /// Whether it has an attachment.
        #[serde(default, deserialize_with = "opt_bool")]
        pub has_attachment: Option<bool>,
        /// E.g. `"Note"` or `"whatsapp"`; undocumented, so a string.
        #[serde(default, deserialize_with = "opt_text")]
        pub message_type: Option<String>,
        /// Free-form key/values the API attaches.
        #[serde(default, deserialize_with = "lenient")]
        pub data: Option<serde_json::Map<String, Value>>,
        /// Display name of the teammate who created it.
        #[serde(default, deserialize_with = "opt_text")]
        pub created_by: Option<String>,
        /// The text.
        #[serde(default, deserialize_with = "opt_text")]
        pub text: Option<String>,
        /// A temporary link to the attachment.
        #[serde(default, deserialize_with = "opt_text")]
        pub attachment_url: Option<String>,
        /// The attachment's file name.
        #[serde(default, deserialize_with = "opt_text")]
        pub attachment_filename: Option<String>,
        /// Reactions, in either of the API's two shapes (see [`Reactions`]).
        #[serde(default, deserialize_with = "opt_reactions")]
        pub reactions: Option<Reactions>,
    }
}

/// The acknowledgement of a send or a note: the message was accepted for asynchronous sending.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MessageAccepted {
    /// The new message's UID, for status polling and mirroring.
    #[serde(alias = "uid", deserialize_with = "required_text")]
    pub message_uid: String,
}

/// One page of `GET /chats/{id}/messages` (50 per page).
#[derive(Debug, Clone, PartialEq)]
pub struct MessagePage {
    /// The messages on this page.
    pub messages: Vec<Message>,
    /// Whether a next page exists; a missing flag reads as `false`.
    pub has_more_pages: bool,
}

/// A message's reactions, normalised from both shapes the API has used:
/// the older map of emoji to count-as-string (`{"👍":"2"}`) and the newer
/// `{users:[…], reactions:{"👍":2}, total:2}` (also the body of `GET …/reactions`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reactions {
    /// Count per emoji.
    pub counts: BTreeMap<String, u64>,
    /// Who reacted (newer shape only; empty for the older one).
    pub users: Vec<ReactionUser>,
    /// All reactions; the sum of `counts` when the API does not say.
    pub total: u64,
}

/// Someone who reacted to a message.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ReactionUser {
    /// Display name.
    #[serde(default, deserialize_with = "opt_text")]
    pub name: Option<String>,
    /// Phone number.
    #[serde(default, deserialize_with = "opt_text")]
    pub phone: Option<String>,
    /// The emoji.
    #[serde(default, deserialize_with = "opt_text")]
    pub reaction: Option<String>,
    /// Whether this reaction is the one currently set.
    #[serde(default, deserialize_with = "opt_bool")]
    pub current: Option<bool>,
}

fn count(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

impl Reactions {
    /// Reads either shape; entries whose count is unreadable are left out.
    pub fn from_value(value: &Value) -> Self {
        let Value::Object(map) = value else {
            return Self::default();
        };
        // The newer shape is recognised by its `reactions` object or `users` list; an emoji
        // key can never be either word.
        let newer = map.get("reactions").is_some_and(Value::is_object)
            || map.get("users").is_some_and(Value::is_array);
        let counts_of = |m: &serde_json::Map<String, Value>| -> BTreeMap<String, u64> {
            m.iter()
                .filter_map(|(emoji, n)| Some((emoji.clone(), count(n)?)))
                .collect()
        };
        let (counts, users, total) = if newer {
            let counts = map
                .get("reactions")
                .and_then(Value::as_object)
                .map(counts_of)
                .unwrap_or_default();
            let users = map
                .get("users")
                .and_then(Value::as_array)
                .map(|users| {
                    users
                        .iter()
                        .filter_map(|u| ReactionUser::deserialize(u).ok())
                        .collect()
                })
                .unwrap_or_default();
            (counts, users, map.get("total").and_then(count))
        } else {
            (counts_of(map), Vec::new(), None)
        };
        let total = total.unwrap_or_else(|| counts.values().sum());
        Self {
            counts,
            users,
            total,
        }
    }
}

impl<'de> Deserialize<'de> for Reactions {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        Ok(Self::from_value(&Value::deserialize(de)?))
    }
}

fn opt_reactions<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Reactions>, D::Error> {
    Ok(match Value::deserialize(de)? {
        value @ Value::Object(_) => Some(Reactions::from_value(&value)),
        _ => None,
    })
}

mirrored! {
    /// One entry of a message's delivery history (`GET /messages/{uid}/status_history`).
    pub struct StatusEntry {
        /// The status reached, e.g. `"Sent"`, `"Read"`, `"Failed"`.
        #[serde(default, deserialize_with = "opt_text")]
        pub status: Option<String>,
        /// When it was reached.
        #[serde(default, deserialize_with = "lenient_timestamp")]
        pub timestamp: Option<DateTime<FixedOffset>>,
        /// Why sending failed (newer API versions, failed entries only).
        #[serde(default, deserialize_with = "lenient")]
        pub failure_reason: Option<FailureReason>,
    }
}

/// Why a message failed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FailureReason {
    /// A code, numeric or textual.
    #[serde(default, deserialize_with = "opt_text")]
    pub code: Option<String>,
    /// A short title.
    #[serde(default, deserialize_with = "opt_text")]
    pub title: Option<String>,
    /// Details.
    #[serde(default, deserialize_with = "opt_text")]
    pub details: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_older_reactions_map_with_string_counts_is_read() {
        let r = Reactions::from_value(&json!({"👍": "2", "❤️": 1, "🤷": "many"}));
        assert_eq!(r.counts.get("👍"), Some(&2));
        assert_eq!(r.counts.get("❤️"), Some(&1));
        assert!(!r.counts.contains_key("🤷"));
        assert_eq!(r.total, 3);
        assert!(r.users.is_empty());
    }

    #[test]
    fn the_newer_reactions_object_is_read() {
        let r = Reactions::from_value(&json!({
            "users": [{"name": "Ann", "phone": "+1", "reaction": "👍", "current": true}],
            "reactions": {"👍": 2},
            "total": 2
        }));
        assert_eq!(r.counts.get("👍"), Some(&2));
        assert_eq!(r.total, 2);
        assert_eq!(r.users[0].name.as_deref(), Some("Ann"));
        assert_eq!(r.users[0].current, Some(true));
    }

    #[test]
    fn a_message_accepts_both_reaction_shapes_and_a_string_chat_id() {
        let old: Message = serde_json::from_value(json!({
            "uid": "u1", "chat_id": "1000001", "timestamp": "2023-06-18 15:19:23 +0300",
            "from_me": true, "status": "Read", "reactions": {"👍": "2"},
            "data": {"k": "v"}
        }))
        .unwrap();
        assert_eq!(old.chat_id, Some(1000001));
        assert_eq!(old.reactions.unwrap().counts["👍"], 2);
        assert_eq!(old.data.unwrap()["k"], "v");
        assert!(old.timestamp.is_some());

        let new: Message = serde_json::from_value(json!({
            "uid": "u2", "chat_id": 1000001,
            "reactions": {"users": [], "reactions": {"🎉": 1}, "total": 1}
        }))
        .unwrap();
        assert_eq!(new.chat_id, Some(1000001));
        assert_eq!(new.reactions.unwrap().total, 1);
    }

    #[test]
    fn a_message_without_a_uid_is_an_error_but_odd_fields_are_not() {
        assert!(serde_json::from_value::<Message>(json!({"text": "hi"})).is_err());
        let m: Message = serde_json::from_value(json!({
            "uid": "u", "timestamp": "garbage", "reactions": "none", "data": "x"
        }))
        .unwrap();
        assert_eq!((m.timestamp, m.reactions, m.data), (None, None, None));
    }

    #[test]
    fn status_entries_read_an_optional_failure_reason() {
        let e: StatusEntry = serde_json::from_value(json!({
            "status": "Failed", "timestamp": "2023-06-18 15:19:23 +0300",
            "failure_reason": {"code": 131026, "title": "Undeliverable"}
        }))
        .unwrap();
        let reason = e.failure_reason.unwrap();
        assert_eq!(reason.code.as_deref(), Some("131026"));
        assert_eq!(reason.title.as_deref(), Some("Undeliverable"));
    }

    #[test]
    fn an_acknowledgement_reads_message_uid() {
        let a: MessageAccepted = serde_json::from_value(json!({"message_uid": "m1"})).unwrap();
        assert_eq!(a.message_uid, "m1");
    }
}
