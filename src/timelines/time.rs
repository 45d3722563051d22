//! The API's timestamps, in and out.
//!
//! Responses use `"YYYY-MM-DD HH:MM:SS ±HHMM"` (reference §2.5), which is not RFC 3339: a space
//! instead of `T` and no colon in the offset. Webhooks of other API families use RFC 3339, and
//! newer API versions may too, so both are read. Query filters (`after`, `created_after`, …) are
//! sent as RFC 3339 in UTC with a `Z`, the form the reference's examples use.
//!
//! Decision: a timestamp that matches none of the formats becomes `None` instead of failing the
//! whole response. One odd field must not stop a sync page of 50 chats, and the original text
//! is never lost because every mirrored object keeps its `raw` JSON.

use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// Formats with an explicit offset, tried in order. `%.f` also matches no fraction at all.
const FORMATS: &[&str] = &[
    // The documented form: "2023-06-18 15:19:23 +0300".
    "%Y-%m-%d %H:%M:%S%.f %z",
    // Same with a colon in the offset ("+03:00"); `%z` rejects it, `%:z` accepts it.
    "%Y-%m-%d %H:%M:%S%.f %:z",
    // `T` separator with a colon-less offset ("2023-06-18T15:19:23+0300"), not RFC 3339.
    "%Y-%m-%dT%H:%M:%S%.f%z",
];

/// Parses an API timestamp: the documented `"2023-06-18 15:19:23 +0300"` form, RFC 3339
/// (`"2023-06-18T12:19:23Z"`), and their close variants. Text without an offset is rejected
/// (`None`): guessing a zone would shift times silently by hours.
pub fn parse_timestamp(text: &str) -> Option<DateTime<FixedOffset>> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t);
    }
    FORMATS
        .iter()
        .find_map(|format| DateTime::parse_from_str(text, format).ok())
}

/// Formats a query-filter instant (`after`, `before`, `created_after`, `created_before`) as
/// RFC 3339 in UTC, e.g. `2024-01-01T00:00:00Z`.
pub fn format_query_timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Serde helper for optional timestamp fields: accepts any JSON, yields `None` for null,
/// non-strings and unparseable text (see the module docs for why this never fails).
pub(crate) fn lenient_timestamp<'de, D>(de: D) -> Result<Option<DateTime<FixedOffset>>, D::Error>
where
    D: Deserializer<'de>,
{
    Ok(match Value::deserialize(de)? {
        Value::String(text) => {
            let parsed = parse_timestamp(&text);
            if parsed.is_none() {
                tracing::debug!(value = %text, "unreadable TimelinesAI timestamp, kept only in raw");
            }
            parsed
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_documented_format_keeps_its_offset() {
        let t = parse_timestamp("2023-06-18 15:19:23 +0300").unwrap();
        assert_eq!(t.offset().local_minus_utc(), 3 * 3600);
        assert_eq!(
            t.with_timezone(&Utc),
            Utc.with_ymd_and_hms(2023, 6, 18, 12, 19, 23).unwrap()
        );
    }

    #[test]
    fn negative_offsets_and_fractions_are_read() {
        let t = parse_timestamp("2023-06-18 15:19:23.250 -0430").unwrap();
        assert_eq!(t.offset().local_minus_utc(), -(4 * 3600 + 30 * 60));
        assert_eq!(t.timestamp_subsec_millis(), 250);
    }

    #[test]
    fn rfc3339_is_read() {
        let t = parse_timestamp("2024-01-01T00:00:00Z").unwrap();
        assert_eq!(
            t.with_timezone(&Utc),
            Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap()
        );
        let t = parse_timestamp("2024-01-01T02:00:00.5+02:00").unwrap();
        assert_eq!(t.offset().local_minus_utc(), 7200);
    }

    #[test]
    fn close_variants_are_read() {
        assert!(parse_timestamp("2023-06-18 15:19:23 +03:00").is_some());
        assert!(parse_timestamp("2023-06-18T15:19:23+0300").is_some());
        assert!(parse_timestamp("  2023-06-18 15:19:23 +0300 ").is_some());
    }

    #[test]
    fn garbage_and_zone_less_text_give_none() {
        for text in [
            "",
            "yesterday",
            "2023-06-18",
            "2023-06-18 15:19:23",
            "2023-13-45 99:99:99 +0300",
            "1687090763",
        ] {
            assert_eq!(parse_timestamp(text), None, "{text:?}");
        }
    }

    #[test]
    fn the_serde_helper_never_fails() {
        #[derive(Deserialize)]
        struct T {
            #[serde(default, deserialize_with = "lenient_timestamp")]
            at: Option<DateTime<FixedOffset>>,
        }
        let read = |json: &str| serde_json::from_str::<T>(json).unwrap().at;
        assert!(read(r#"{"at":"2023-06-18 15:19:23 +0300"}"#).is_some());
        assert_eq!(read(r#"{"at":"garbage"}"#), None);
        assert_eq!(read(r#"{"at":12345}"#), None);
        assert_eq!(read(r#"{"at":null}"#), None);
        assert_eq!(read("{}"), None);
    }

    #[test]
    fn query_timestamps_are_rfc3339_utc_with_z() {
        let at = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(format_query_timestamp(at), "2024-01-01T00:00:00Z");
    }
}
