//! Chats (reference §4.2) and chat labels.

use chrono::{DateTime, FixedOffset};
use serde::Deserialize;
use serde_json::Value;

use super::{id, lenient_vec, opt_bool, opt_i64, opt_text};
use crate::timelines::time::lenient_timestamp;

mirrored! {
    /// A chat (`GET /chats`, `GET /chats/{id}`), direct or group.
    pub struct Chat {
        /// The chat id, also in the app's URL `…/chat/<id>/messages/`. The reference example
        /// sends it as a string; it is normalised to an integer.
        #[serde(deserialize_with = "id")]
        pub id: i64,
        /// The chat's name.
        #[serde(default, deserialize_with = "opt_text")]
        pub name: Option<String>,
        /// The WhatsApp JID, e.g. `14840000000@s.whatsapp.net` or `…@g.us` for groups.
        #[serde(default, deserialize_with = "opt_text")]
        pub jid: Option<String>,
        /// Whether this is a group chat.
        #[serde(default, deserialize_with = "opt_bool")]
        pub is_group: Option<bool>,
        /// Whether the chat is closed.
        #[serde(default, deserialize_with = "opt_bool")]
        pub closed: Option<bool>,
        /// Whether the chat is marked read.
        #[serde(default, deserialize_with = "opt_bool")]
        pub read: Option<bool>,
        /// The chat's labels (strings; `{name}` objects are accepted too, §10.1 item 5).
        #[serde(default, deserialize_with = "labels")]
        pub labels: Vec<String>,
        /// Whether the ChatGPT auto-responder is on.
        #[serde(default, deserialize_with = "opt_bool")]
        pub chatgpt_autoresponse_enabled: Option<bool>,
        /// The owning WhatsApp account's JID, e.g. `972502222222@s.whatsapp.net`.
        #[serde(default, deserialize_with = "opt_text")]
        pub whatsapp_account_id: Option<String>,
        /// The chat's page in the app.
        #[serde(default, deserialize_with = "opt_text")]
        pub chat_url: Option<String>,
        /// When the chat was created.
        #[serde(default, deserialize_with = "lenient_timestamp")]
        pub created_timestamp: Option<DateTime<FixedOffset>>,
        /// When its last message was sent or received.
        #[serde(default, deserialize_with = "lenient_timestamp")]
        pub last_message_timestamp: Option<DateTime<FixedOffset>>,
        /// The UID of its last message (chat webhooks call it `last_message_uuid`).
        #[serde(default, alias = "last_message_uuid", deserialize_with = "opt_text")]
        pub last_message_uid: Option<String>,
        /// Whether a customer message waits for an answer.
        #[serde(default, deserialize_with = "opt_bool")]
        pub unattended: Option<bool>,
        /// The chat photo's URL.
        #[serde(default, deserialize_with = "opt_text")]
        pub photo: Option<String>,
        /// The contact's phone, usually `+`-prefixed E.164 (direct chats).
        #[serde(default, deserialize_with = "opt_text")]
        pub phone: Option<String>,
        /// The assignee's email (what `PATCH /chats/{id}` `responsible` takes).
        #[serde(default, deserialize_with = "opt_text")]
        pub responsible_email: Option<String>,
        /// The assignee's name.
        #[serde(default, deserialize_with = "opt_text")]
        pub responsible_name: Option<String>,
        /// Group members (newer API versions).
        #[serde(default, deserialize_with = "lenient_vec")]
        pub group_members: Vec<GroupMember>,
        /// Whether the workspace may message this chat (newer API versions).
        #[serde(default, deserialize_with = "opt_bool")]
        pub is_allowed_to_message: Option<bool>,
        /// Unread messages; seen only in third-party notes, so usually `None`.
        #[serde(default, deserialize_with = "opt_i64")]
        pub unread_count: Option<i64>,
    }
}

/// A member of a group chat.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct GroupMember {
    /// Display name.
    #[serde(default, deserialize_with = "opt_text")]
    pub name: Option<String>,
    /// Phone number.
    #[serde(default, deserialize_with = "opt_text")]
    pub phone: Option<String>,
    /// Role in the group, e.g. `admin`.
    #[serde(default, deserialize_with = "opt_text")]
    pub role: Option<String>,
    /// The member's direct chat id, when there is one.
    #[serde(default, deserialize_with = "opt_i64")]
    pub chat_id: Option<i64>,
}

/// One page of `GET /chats` (50 chats per page, fixed by the API).
#[derive(Debug, Clone, PartialEq)]
pub struct ChatPage {
    /// The chats on this page.
    pub chats: Vec<Chat>,
    /// Whether a next page exists; a missing flag reads as `false`, so paging always ends.
    pub has_more_pages: bool,
}

/// Label names from a list of strings or of `{name}` objects.
fn label_names(items: Vec<Value>) -> Vec<String> {
    items
        .into_iter()
        .filter_map(|item| match item {
            Value::String(s) => Some(s),
            Value::Object(mut map) => match map.remove("name") {
                Some(Value::String(s)) => Some(s),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

fn labels<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Vec<String>, D::Error> {
    Ok(match Value::deserialize(de)? {
        Value::Array(items) => label_names(items),
        _ => Vec::new(),
    })
}

/// The labels of a labels response: `{labels: [...]}` or a bare list, items strings or
/// `{name}` objects. `None` when the data has no list at all.
pub(crate) fn parse_labels(data: Value) -> Option<Vec<String>> {
    super::list_items(data, "labels").map(label_names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reference_chat(id: Value) -> Value {
        json!({
            "id": id, "name": "Jane", "jid": "972501111111@s.whatsapp.net",
            "is_group": false, "closed": false, "read": true, "labels": ["vip"],
            "chatgpt_autoresponse_enabled": false,
            "whatsapp_account_id": "972502222222@s.whatsapp.net",
            "chat_url": "https://app.timelines.ai/chat/1000001/messages/",
            "created_timestamp": "2023-06-18 15:19:23 +0300",
            "last_message_timestamp": "not a date",
            "last_message_uid": "de919486-0c93-409d-ae66-c2bbb544faca",
            "unattended": false, "photo": "https://x/p.png", "phone": "+972501111111",
            "responsible_email": null, "responsible_name": null,
            "group_members": [{"name": "A", "phone": "+1", "role": "admin", "chat_id": "7"}],
            "brand_new_field": {"nested": true}
        })
    }

    #[test]
    fn a_chat_id_is_read_from_an_integer() {
        let chat: Chat = serde_json::from_value(reference_chat(json!(1000001))).unwrap();
        assert_eq!(chat.id, 1000001);
    }

    #[test]
    fn a_chat_id_is_read_from_a_string() {
        let chat: Chat = serde_json::from_value(reference_chat(json!("1000001"))).unwrap();
        assert_eq!(chat.id, 1000001);
        assert_eq!(chat.labels, vec!["vip"]);
        assert_eq!(chat.read, Some(true));
        assert_eq!(chat.responsible_email, None);
        assert_eq!(chat.group_members[0].chat_id, Some(7));
        assert!(chat.created_timestamp.is_some());
        // An unreadable timestamp is None, and still in raw.
        assert_eq!(chat.last_message_timestamp, None);
        assert_eq!(chat.raw["last_message_timestamp"], "not a date");
        // Unknown fields are ignored by the typed side and kept in raw.
        assert_eq!(chat.raw["brand_new_field"]["nested"], true);
    }

    #[test]
    fn a_chat_without_a_usable_id_is_an_error() {
        assert!(serde_json::from_value::<Chat>(json!({"name": "x"})).is_err());
        assert!(serde_json::from_value::<Chat>(json!({"id": "abc"})).is_err());
    }

    #[test]
    fn wrongly_typed_fields_become_none_instead_of_failing() {
        let chat: Chat = serde_json::from_value(json!({
            "id": 5, "name": 12, "closed": "yes?", "labels": "vip", "group_members": {}
        }))
        .unwrap();
        assert_eq!(chat.name.as_deref(), Some("12"));
        assert_eq!(chat.closed, None);
        assert!(chat.labels.is_empty() && chat.group_members.is_empty());
    }

    #[test]
    fn labels_are_read_from_strings_or_objects() {
        assert_eq!(
            parse_labels(json!({"labels": ["a", {"name": "b"}]})),
            Some(vec!["a".to_owned(), "b".to_owned()])
        );
        assert_eq!(parse_labels(json!(["c"])), Some(vec!["c".to_owned()]));
        assert_eq!(parse_labels(json!("nope")), None);
    }
}
