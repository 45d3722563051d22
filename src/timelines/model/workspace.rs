//! Workspace-level objects: files (§4.3), WhatsApp accounts (§4.4), teammates (§4.5), quotas and
//! workspace identity (§4.6), webhook subscriptions (§4.7).

use chrono::{DateTime, FixedOffset};
use serde::Deserialize;

use super::{lenient, lenient_vec, opt_bool, opt_i64, opt_text, required_text};
use crate::timelines::time::lenient_timestamp;

mirrored! {
    /// An uploaded file. List items (`GET /files`) have no `temporary_download_url`.
    pub struct FileInfo {
        /// The file UID, what sends take as `file_uid`.
        #[serde(deserialize_with = "required_text")]
        pub uid: String,
        /// File name.
        #[serde(default, deserialize_with = "opt_text")]
        pub filename: Option<String>,
        /// Size in bytes (an integer in the docs, a string in one client: both are read).
        #[serde(default, deserialize_with = "opt_i64")]
        pub size: Option<i64>,
        /// MIME type.
        #[serde(default, deserialize_with = "opt_text")]
        pub mimetype: Option<String>,
        /// Who uploaded it.
        #[serde(default, deserialize_with = "opt_text")]
        pub uploaded_by_email: Option<String>,
        /// When it was uploaded.
        #[serde(default, deserialize_with = "lenient_timestamp")]
        pub uploaded_at: Option<DateTime<FixedOffset>>,
        /// A short-lived download link (`GET /files/{uid}` and uploads only).
        #[serde(default, deserialize_with = "opt_text")]
        pub temporary_download_url: Option<String>,
    }
}

mirrored! {
    /// A connected WhatsApp number.
    pub struct WhatsappAccount {
        /// The account's JID, e.g. `972540000001@s.whatsapp.net`.
        #[serde(deserialize_with = "required_text")]
        pub id: String,
        /// Its phone, e.g. `+972540000001` (what sends take as `whatsapp_account_phone`).
        #[serde(default, deserialize_with = "opt_text")]
        pub phone: Option<String>,
        /// When it was connected.
        #[serde(default, deserialize_with = "lenient_timestamp")]
        pub connected_on: Option<DateTime<FixedOffset>>,
        /// E.g. `"Active"`; undocumented set, so a string.
        #[serde(default, deserialize_with = "opt_text")]
        pub status: Option<String>,
        /// Owner's name.
        #[serde(default, deserialize_with = "opt_text")]
        pub owner_name: Option<String>,
        /// Owner's email.
        #[serde(default, deserialize_with = "opt_text")]
        pub owner_email: Option<String>,
        /// The account's name.
        #[serde(default, deserialize_with = "opt_text")]
        pub account_name: Option<String>,
        /// Whether it is visible to the workspace (one client only).
        #[serde(default, deserialize_with = "opt_bool")]
        pub is_visible: Option<bool>,
    }
}

mirrored! {
    /// A member of the workspace, or an invitation.
    pub struct Teammate {
        /// The user id.
        #[serde(default, deserialize_with = "opt_i64")]
        pub user_id: Option<i64>,
        /// Display name.
        #[serde(default, deserialize_with = "opt_text")]
        pub display_name: Option<String>,
        /// Email: what `responsible` in a chat update takes.
        #[serde(default, deserialize_with = "opt_text")]
        pub email: Option<String>,
        /// E.g. `"active"`.
        #[serde(default, deserialize_with = "opt_text")]
        pub status: Option<String>,
        /// When the user was created.
        #[serde(default, deserialize_with = "lenient_timestamp")]
        pub created_at: Option<DateTime<FixedOffset>>,
        /// E.g. `"owner"`, `"admin"`, `"teammate"`.
        #[serde(default, deserialize_with = "opt_text")]
        pub role: Option<String>,
        /// Team name.
        #[serde(default, deserialize_with = "opt_text")]
        pub team: Option<String>,
        /// E.g. `"Expired"` for a lapsed invitation.
        #[serde(default, deserialize_with = "opt_text")]
        pub invitation_status: Option<String>,
        /// The WhatsApp accounts the teammate owns.
        #[serde(default, deserialize_with = "lenient_vec")]
        pub whatsapp_accounts: Vec<WhatsappAccount>,
    }
}

/// A periodic quota: total, used, and the period it covers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct QuotaBlock {
    /// Units per period.
    #[serde(default, deserialize_with = "opt_i64")]
    pub total: Option<i64>,
    /// Units used in this period.
    #[serde(default, deserialize_with = "opt_i64")]
    pub used: Option<i64>,
    /// Period start.
    #[serde(default, deserialize_with = "lenient_timestamp")]
    pub period_start: Option<DateTime<FixedOffset>>,
    /// Period end: when the quota renews.
    #[serde(default, deserialize_with = "lenient_timestamp")]
    pub period_end: Option<DateTime<FixedOffset>>,
}

impl QuotaBlock {
    /// Units left (never negative), when both numbers are known.
    pub fn remaining(&self) -> Option<i64> {
        Some((self.total? - self.used?).max(0))
    }
}

/// Bought units that do not renew.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NonRecurringQuota {
    /// Units left.
    #[serde(default, deserialize_with = "opt_i64")]
    pub remaining_balance: Option<i64>,
    /// When the balance last changed.
    #[serde(default, deserialize_with = "lenient_timestamp")]
    pub last_updated_at: Option<DateTime<FixedOffset>>,
}

mirrored! {
    /// Quotas and utilisation (`GET /workspace/quotas`, or the quota part of `GET /workspace`).
    pub struct Quotas {
        /// Messages sent through the API (1 unit per message, 2 with text and attachment).
        #[serde(default, deserialize_with = "lenient")]
        pub messaging_quota: Option<QuotaBlock>,
        /// API calls per month.
        #[serde(default, deserialize_with = "lenient")]
        pub api_calls_quota: Option<QuotaBlock>,
        /// Seats.
        #[serde(default, deserialize_with = "lenient")]
        pub seats: Option<QuotaBlock>,
        /// Bought units that do not renew.
        #[serde(default, deserialize_with = "lenient")]
        pub non_recurring_quota: Option<NonRecurringQuota>,
    }
}

mirrored! {
    /// Workspace identity plus the quota blocks (`GET /workspace`).
    pub struct Workspace {
        /// The workspace slug, e.g. `"acme-inc"`.
        #[serde(default, deserialize_with = "opt_text")]
        pub workspace_id: Option<String>,
        /// Display name.
        #[serde(default, deserialize_with = "opt_text")]
        pub display_name: Option<String>,
        /// Plan, e.g. `"Business"`.
        #[serde(default, deserialize_with = "opt_text")]
        pub plan: Option<String>,
        /// As in [`Quotas`].
        #[serde(default, deserialize_with = "lenient")]
        pub messaging_quota: Option<QuotaBlock>,
        /// As in [`Quotas`].
        #[serde(default, deserialize_with = "lenient")]
        pub api_calls_quota: Option<QuotaBlock>,
        /// As in [`Quotas`].
        #[serde(default, deserialize_with = "lenient")]
        pub seats: Option<QuotaBlock>,
        /// As in [`Quotas`].
        #[serde(default, deserialize_with = "lenient")]
        pub non_recurring_quota: Option<NonRecurringQuota>,
    }
}

mirrored! {
    /// A webhook subscription: one event type delivered to one URL.
    pub struct Webhook {
        /// The id: an integer in responses, a string in paths (and UUID-like in some examples),
        /// so it is kept as text.
        #[serde(deserialize_with = "required_text")]
        pub id: String,
        /// E.g. `message:received:new`.
        #[serde(default, deserialize_with = "opt_text")]
        pub event_type: Option<String>,
        /// Where deliveries go.
        #[serde(default, deserialize_with = "opt_text")]
        pub url: Option<String>,
        /// Whether deliveries are on.
        #[serde(default, deserialize_with = "opt_bool")]
        pub enabled: Option<bool>,
        /// Failed deliveries so far.
        #[serde(default, deserialize_with = "opt_i64")]
        pub errors_counter: Option<i64>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quotas_are_read_with_remaining_units() {
        let q: Quotas = serde_json::from_value(json!({
            "messaging_quota": {"total": 50, "used": 12,
                                "period_start": "2024-01-01 00:00:00 +0000",
                                "period_end": "2024-02-01 00:00:00 +0000"},
            "api_calls_quota": {"total": "200000", "used": 300000},
            "seats": "n/a",
            "non_recurring_quota": {"remaining_balance": 5, "last_updated_at": null}
        }))
        .unwrap();
        let m = q.messaging_quota.unwrap();
        assert_eq!(m.remaining(), Some(38));
        assert!(m.period_end.is_some());
        assert_eq!(q.api_calls_quota.unwrap().remaining(), Some(0));
        assert_eq!(q.seats, None);
        assert_eq!(q.non_recurring_quota.unwrap().remaining_balance, Some(5));
    }

    #[test]
    fn a_webhook_id_is_kept_as_text_from_an_integer() {
        let w: Webhook = serde_json::from_value(json!({
            "id": 789456, "event_type": "message:new", "url": "https://x", "enabled": true,
            "errors_counter": 0
        }))
        .unwrap();
        assert_eq!(w.id, "789456");
        assert_eq!(w.enabled, Some(true));
    }

    #[test]
    fn a_file_size_is_read_from_a_number_or_a_string() {
        let f: FileInfo =
            serde_json::from_value(json!({"uid": "f", "size": "2048", "extra": 1})).unwrap();
        assert_eq!(f.size, Some(2048));
        assert_eq!(f.raw["extra"], 1);
    }

    #[test]
    fn a_teammate_keeps_its_nested_accounts_with_their_raw_json() {
        let t: Teammate = serde_json::from_value(json!({
            "user_id": 3, "email": "a@b.c", "created_at": "2023-06-18 15:19:23 +0300",
            "whatsapp_accounts": [{"id": "1@s.whatsapp.net", "phone": "+1"}, {"phone": "no id"}]
        }))
        .unwrap();
        assert_eq!(t.user_id, Some(3));
        assert_eq!(t.whatsapp_accounts.len(), 1);
        assert_eq!(t.whatsapp_accounts[0].raw["phone"], "+1");
    }
}
