//! Request bodies and query filters (reference §3). `None` fields are left out of the JSON so the
//! API applies its own defaults; multi-value filters are sent comma-separated in one parameter
//! (§2.4), and times as RFC 3339 UTC.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::time::format_query_timestamp;

/// `POST /messages`: send to a phone number, creating the chat if needed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SendToPhone {
    /// The recipient in E.164 with `+`, e.g. `+14155551234`.
    pub phone: String,
    /// The sending account's phone; `None` uses the most recently connected account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub whatsapp_account_phone: Option<String>,
    /// Plain text, `\n` for line breaks, at most 2000 characters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// An uploaded file to attach.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_uid: Option<String>,
    /// A label for the chat (created if missing, at most 64 characters).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Exact chat name (at most 256 characters).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chat_name: Option<String>,
    /// An existing attachment template.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attachment_template_id: Option<i64>,
}

/// `POST /chats/{id}/messages`: send or reply inside an existing chat (groups too).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SendInChat {
    /// Plain text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// An uploaded file to attach.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_uid: Option<String>,
    /// UID of the message to reply to (same workspace and account).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// A label for the chat.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Exact chat name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chat_name: Option<String>,
    /// An existing attachment template.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attachment_template_id: Option<i64>,
}

/// `POST /messages/to_jid`: send to a WhatsApp JID.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SendToJid {
    /// The JID, e.g. `14155551234@s.whatsapp.net` or `…@g.us`.
    pub jid: String,
    /// The sending account's phone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub whatsapp_account_phone: Option<String>,
    /// Plain text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// An uploaded file to attach.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_uid: Option<String>,
    /// A label for the chat.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// An existing attachment template.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attachment_template_id: Option<i64>,
    /// UID of the message to reply to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
}

/// `POST /messages/to_chat_name` (deprecated by the API): send by exact chat name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SendToChatName {
    /// The exact chat name.
    pub chat_name: String,
    /// Plain text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// An uploaded file to attach.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_uid: Option<String>,
    /// UID of the message to reply to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// A label for the chat.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// An existing attachment template.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attachment_template_id: Option<i64>,
}

/// `GET /chats` filters. Empty lists and `None` are not sent; list filters match any value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChatFilter {
    /// Chats with any of these labels.
    pub labels: Vec<String>,
    /// Chats owned by any of these accounts (JIDs, `…@s.whatsapp.net`).
    pub whatsapp_account_ids: Vec<String>,
    /// Only group (`true`) or only direct (`false`) chats.
    pub group: Option<bool>,
    /// Chats assigned to this teammate (email).
    pub responsible: Option<String>,
    /// Chats whose name contains any of these strings.
    pub names: Vec<String>,
    /// The direct chat with this contact phone (E.164 with `+`).
    pub phone: Option<String>,
    /// Read or unread chats.
    pub read: Option<bool>,
    /// Closed or open chats.
    pub closed: Option<bool>,
    /// Chats with the ChatGPT auto-responder on or off.
    pub chatgpt_autoresponse_enabled: Option<bool>,
    /// Chats created after this instant.
    pub created_after: Option<DateTime<Utc>>,
    /// Chats created before this instant.
    pub created_before: Option<DateTime<Utc>>,
    /// The page, from 1 (the API's default).
    pub page: Option<u32>,
}

/// Query pairs; values are URL-encoded by the HTTP layer.
pub(crate) type Query = Vec<(&'static str, String)>;

fn push_list(query: &mut Query, key: &'static str, values: &[String]) {
    if !values.is_empty() {
        query.push((key, values.join(",")));
    }
}

fn push<T: ToString>(query: &mut Query, key: &'static str, value: Option<&T>) {
    if let Some(value) = value {
        query.push((key, value.to_string()));
    }
}

fn push_time(query: &mut Query, key: &'static str, value: Option<DateTime<Utc>>) {
    if let Some(at) = value {
        query.push((key, format_query_timestamp(at)));
    }
}

impl ChatFilter {
    pub(crate) fn to_query(&self) -> Query {
        let mut q = Query::new();
        push_list(&mut q, "label", &self.labels);
        push_list(&mut q, "whatsapp_account_id", &self.whatsapp_account_ids);
        push(&mut q, "group", self.group.as_ref());
        push(&mut q, "responsible", self.responsible.as_ref());
        push_list(&mut q, "name", &self.names);
        push(&mut q, "phone", self.phone.as_ref());
        push(&mut q, "read", self.read.as_ref());
        push(&mut q, "closed", self.closed.as_ref());
        push(
            &mut q,
            "chatgpt_autoresponse_enabled",
            self.chatgpt_autoresponse_enabled.as_ref(),
        );
        push_time(&mut q, "created_after", self.created_after);
        push_time(&mut q, "created_before", self.created_before);
        push(&mut q, "page", self.page.as_ref());
        q
    }
}

/// Order of a message history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortOrder {
    /// Oldest first.
    Asc,
    /// Newest first.
    Desc,
}

impl SortOrder {
    fn as_str(self) -> &'static str {
        match self {
            Self::Asc => "asc",
            Self::Desc => "desc",
        }
    }
}

/// `GET /chats/{id}/messages` filters: a date window, a UID window, direction, order, page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageQuery {
    /// Only messages sent by the workspace (`true`) or received (`false`).
    pub from_me: Option<bool>,
    /// Messages after this instant.
    pub after: Option<DateTime<Utc>>,
    /// Messages before this instant.
    pub before: Option<DateTime<Utc>>,
    /// Messages after the message with this UID.
    pub after_message: Option<String>,
    /// Messages before the message with this UID.
    pub before_message: Option<String>,
    /// Order of the result.
    pub sorting_order: Option<SortOrder>,
    /// The page, from 1.
    pub page: Option<u32>,
}

impl MessageQuery {
    pub(crate) fn to_query(&self) -> Query {
        let mut q = Query::new();
        push(&mut q, "from_me", self.from_me.as_ref());
        push_time(&mut q, "after", self.after);
        push_time(&mut q, "before", self.before);
        push(&mut q, "after_message", self.after_message.as_ref());
        push(&mut q, "before_message", self.before_message.as_ref());
        if let Some(order) = self.sorting_order {
            q.push(("sorting_order", order.as_str().to_owned()));
        }
        push(&mut q, "page", self.page.as_ref());
        q
    }
}

/// `PATCH /chats/{id}`: fields to change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChatUpdate {
    /// New name (unique in the workspace).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Assignee's email; `Some("")` unassigns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub responsible: Option<String>,
    /// Close (`true`) or reopen (`false`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed: Option<bool>,
    /// Mark read or unread.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read: Option<bool>,
    /// Turn the ChatGPT auto-responder on or off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chatgpt_autoresponse_enabled: Option<bool>,
}

/// `POST /files`: have the API download a file from a public URL.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UploadFromUrl {
    /// A publicly reachable URL.
    pub download_url: String,
    /// File name to store it under.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// MIME type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
}

/// `POST /workspace/invitations`: invite a teammate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Invitation {
    /// The invitee's email.
    pub email: String,
    /// First name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    /// Last name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    /// Job title.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team_title: Option<String>,
    /// `admin`, `team_supervisor`, `teammate`, `agent` or `collaborator`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// `POST /webhooks`: a new subscription.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NewWebhook {
    /// One event type, e.g. `message:received:new`.
    pub event_type: String,
    /// The receiver (publicly reachable HTTPS).
    pub url: String,
    /// Whether deliveries start enabled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// `PUT /webhooks/{id}`: a partial update; `None` fields stay unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WebhookUpdate {
    /// New event type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    /// New receiver URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Enable or disable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn chat_filters_are_comma_joined_and_skip_unset_fields() {
        let filter = ChatFilter {
            labels: vec!["vip".into(), "enterprise".into()],
            phone: Some("+14155551234".into()),
            closed: Some(false),
            created_after: Some(Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap()),
            page: Some(3),
            ..ChatFilter::default()
        };
        assert_eq!(
            filter.to_query(),
            vec![
                ("label", "vip,enterprise".to_owned()),
                ("phone", "+14155551234".to_owned()),
                ("closed", "false".to_owned()),
                ("created_after", "2024-01-01T00:00:00Z".to_owned()),
                ("page", "3".to_owned()),
            ]
        );
    }

    #[test]
    fn message_queries_carry_windows_order_and_page() {
        let query = MessageQuery {
            from_me: Some(true),
            after_message: Some("u1".into()),
            sorting_order: Some(SortOrder::Asc),
            page: Some(2),
            ..MessageQuery::default()
        };
        assert_eq!(
            query.to_query(),
            vec![
                ("from_me", "true".to_owned()),
                ("after_message", "u1".to_owned()),
                ("sorting_order", "asc".to_owned()),
                ("page", "2".to_owned()),
            ]
        );
    }

    #[test]
    fn unset_body_fields_are_left_out() {
        let body = serde_json::to_value(SendToPhone {
            phone: "+1".into(),
            text: Some("hi".into()),
            ..SendToPhone::default()
        })
        .unwrap();
        assert_eq!(body, serde_json::json!({"phone": "+1", "text": "hi"}));
        let unassign = serde_json::to_value(ChatUpdate {
            responsible: Some(String::new()),
            ..ChatUpdate::default()
        })
        .unwrap();
        assert_eq!(unassign, serde_json::json!({"responsible": ""}));
    }
}
