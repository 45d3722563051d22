//! Response objects (reference §4), read tolerantly.
//!
//! The API's documentation and its live behaviour disagree in places (§10.1), so reading never
//! trusts a field's type: unknown fields are ignored, every field but an object's key is an
//! `Option` (or an empty list) that is `None` when absent, null or of an unexpected type, chat
//! ids are accepted as integers or strings, and timestamps that cannot be read become `None`
//! ([`super::time`]). Objects that are mirrored into the database keep the whole JSON in `raw`,
//! so a field this crate does not name is never lost.

use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// Declares a response type whose `Deserialize` also keeps the whole object in `raw`.
///
/// The fields are read by a private twin struct from the captured JSON value, so the public
/// type's `Deserialize` works anywhere (nested lists, `serde_json::from_str`), not only through
/// the client. Field attributes must be doc comments first, then `#[serde(...)]`.
macro_rules! mirrored {
    (
        $(#[doc = $doc:literal])*
        pub struct $name:ident {
            $(
                $(#[doc = $fdoc:literal])*
                $(#[serde($($serde:tt)*)])*
                pub $field:ident : $ty:ty,
            )*
        }
    ) => {
        $(#[doc = $doc])*
        #[derive(Debug, Clone, PartialEq)]
        pub struct $name {
            $( $(#[doc = $fdoc])* pub $field: $ty, )*
            /// The object exactly as the API sent it (for mirroring fields this type leaves out).
            pub raw: serde_json::Value,
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
                #[derive(serde::Deserialize)]
                struct Fields {
                    $( $(#[serde($($serde)*)])* $field: $ty, )*
                }
                let raw = serde_json::Value::deserialize(de)?;
                let fields = Fields::deserialize(&raw).map_err(serde::de::Error::custom)?;
                Ok($name { $($field: fields.$field,)* raw })
            }
        }
    };
}

mod chat;
mod message;
mod workspace;

pub use chat::{Chat, ChatPage, GroupMember};
pub use message::{
    FailureReason, Message, MessageAccepted, MessagePage, ReactionUser, Reactions, StatusEntry,
};
pub use workspace::{
    FileInfo, NonRecurringQuota, QuotaBlock, Quotas, Teammate, Webhook, WhatsappAccount, Workspace,
};

pub(crate) use chat::parse_labels;

/// An integer id from a JSON integer or a string of digits (chat ids are both, §10.1 item 3).
fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64().or_else(|| {
            // 1.0e3 style floats are still whole numbers; anything else is not an id.
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| f as i64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Text from a string, or a number or boolean written out (ids that are sometimes numeric).
fn text(value: Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A required integer id, e.g. a chat's `id`: integer or digit string, else an error.
pub(crate) fn id<'de, D: Deserializer<'de>>(de: D) -> Result<i64, D::Error> {
    let value = Value::deserialize(de)?;
    integer(&value)
        .ok_or_else(|| serde::de::Error::custom(format!("expected an integer id, got {value}")))
}

/// A required identifier kept as text (UIDs, account JIDs, webhook ids that may be numbers).
pub(crate) fn required_text<'de, D: Deserializer<'de>>(de: D) -> Result<String, D::Error> {
    let value = Value::deserialize(de)?;
    match text(value) {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(serde::de::Error::custom("expected a non-empty string id")),
    }
}

/// An optional integer: integer or digit string, `None` for anything else.
pub(crate) fn opt_i64<'de, D: Deserializer<'de>>(de: D) -> Result<Option<i64>, D::Error> {
    Ok(integer(&Value::deserialize(de)?))
}

/// An optional text field; numbers and booleans are written out, other types give `None`.
pub(crate) fn opt_text<'de, D: Deserializer<'de>>(de: D) -> Result<Option<String>, D::Error> {
    Ok(text(Value::deserialize(de)?))
}

/// An optional flag: a boolean, `"true"`/`"false"`, or 0/1.
pub(crate) fn opt_bool<'de, D: Deserializer<'de>>(de: D) -> Result<Option<bool>, D::Error> {
    Ok(match Value::deserialize(de)? {
        Value::Bool(b) => Some(b),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Some(true),
            "false" | "0" | "no" => Some(false),
            _ => None,
        },
        Value::Number(n) => n.as_i64().filter(|n| *n == 0 || *n == 1).map(|n| n == 1),
        _ => None,
    })
}

/// Any optional value of type `T`; a value of the wrong shape gives `None`, not an error.
pub(crate) fn lenient<'de, D, T>(de: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    Ok(serde_json::from_value(Value::deserialize(de)?).ok())
}

/// A list whose unreadable items are dropped; a non-list gives an empty list.
pub(crate) fn lenient_vec<'de, D, T>(de: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    Ok(match Value::deserialize(de)? {
        Value::Array(items) => items
            .into_iter()
            .filter_map(|item| serde_json::from_value(item).ok())
            .collect(),
        _ => Vec::new(),
    })
}

/// The items of a list response: `data` itself when it is an array (`/files`, `/webhooks`),
/// else `data[key]` (`/chats` → `chats`). Both shapes are accepted for every list so a server
/// that wraps or unwraps a list does not break the client. `None` when neither is a list.
pub(crate) fn list_items(data: Value, key: &str) -> Option<Vec<Value>> {
    match data {
        Value::Array(items) => Some(items),
        Value::Object(mut map) => match map.remove(key) {
            Some(Value::Array(items)) => Some(items),
            Some(Value::Null) | None if map.is_empty() => Some(Vec::new()),
            _ => None,
        },
        Value::Null => Some(Vec::new()),
        _ => None,
    }
}

/// Decodes list items one by one. An item that cannot be read (no id, say) is logged and
/// skipped, so one odd object does not cost the other 49 on the page; it never holds a secret,
/// but its content is not logged either (message texts, phone numbers).
pub(crate) fn decode_items<T: serde::de::DeserializeOwned>(
    items: Vec<Value>,
    path: &str,
) -> Vec<T> {
    items
        .into_iter()
        .filter_map(|item| match serde_json::from_value(item) {
            Ok(value) => Some(value),
            Err(error) => {
                tracing::warn!(path, %error, "skipped an unreadable TimelinesAI list item");
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn integers_come_from_numbers_and_digit_strings() {
        assert_eq!(integer(&json!(1000001)), Some(1000001));
        assert_eq!(integer(&json!("1000001")), Some(1000001));
        assert_eq!(integer(&json!(" 42 ")), Some(42));
        assert_eq!(integer(&json!(42.0)), Some(42));
        assert_eq!(integer(&json!(42.5)), None);
        assert_eq!(integer(&json!("abc")), None);
        assert_eq!(integer(&json!(null)), None);
    }

    #[test]
    fn list_items_accepts_flat_and_wrapped_lists() {
        assert_eq!(list_items(json!([1]), "x"), Some(vec![json!(1)]));
        assert_eq!(list_items(json!({"x": [1]}), "x"), Some(vec![json!(1)]));
        assert_eq!(list_items(json!({}), "x"), Some(vec![]));
        assert_eq!(list_items(json!(null), "x"), Some(vec![]));
        assert_eq!(list_items(json!({"y": 1}), "x"), None);
        assert_eq!(list_items(json!("nope"), "x"), None);
    }

    #[test]
    fn flags_accept_booleans_strings_and_bits() {
        #[derive(Deserialize)]
        struct T {
            #[serde(default, deserialize_with = "opt_bool")]
            f: Option<bool>,
        }
        let read = |j: Value| serde_json::from_value::<T>(j).unwrap().f;
        assert_eq!(read(json!({"f": true})), Some(true));
        assert_eq!(read(json!({"f": "false"})), Some(false));
        assert_eq!(read(json!({"f": 1})), Some(true));
        assert_eq!(read(json!({"f": 7})), None);
        assert_eq!(read(json!({})), None);
    }
}
