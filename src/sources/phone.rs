//! Phone numbers from CRM records, normalised to E.164 with libphonenumber's rules (the
//! `rlibphonenumber` port: about 1 us a number where the older `phonenumber` crate took 14 us,
//! which made phone parsing the largest cost of a large import).

use rlibphonenumber::{PHONE_NUMBER_UTIL, PhoneNumberFormat, enums::Region};

/// Why a record's phone could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    /// None of the phone fields had a value.
    #[error("no phone number")]
    Missing,
    /// The value is not a valid number (for the default region when it has no country code).
    #[error("invalid phone number {0:?}")]
    Invalid(String),
}

/// Normalises `raw` to E.164 (`+14155550123`). Numbers written without a country code are read
/// in `default_region` (ISO 3166 alpha-2, e.g. `US`); `00` and `+` prefixes, spaces, dots,
/// dashes, brackets and extensions are handled as libphonenumber does. A number that is not
/// valid for its region is rejected rather than guessed at.
pub fn normalize(raw: &str, default_region: Option<Region>) -> Result<String, PhoneError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(PhoneError::Missing);
    }
    let invalid = || PhoneError::Invalid(shorten(trimmed));
    let number = PHONE_NUMBER_UTIL
        .parse(trimmed, default_region)
        .map_err(|_| invalid())?;
    if !number.is_valid() {
        return Err(invalid());
    }
    Ok(number.format_as(PhoneNumberFormat::E164).into_owned())
}

/// Parses a region code such as `US` or `br` for [`normalize`]: a region libphonenumber has
/// numbering rules for.
pub fn region(code: &str) -> Option<Region> {
    let region: Region = code.trim().to_ascii_uppercase().parse().ok()?;
    PHONE_NUMBER_UTIL
        .get_country_code_for_region(region)
        .is_some()
        .then_some(region)
}

/// The first usable phone among `candidates` (in order); the error of the first non-empty one
/// when none is usable, or [`PhoneError::Missing`] when all are empty.
pub fn first_valid<'a>(
    candidates: impl IntoIterator<Item = &'a str>,
    default_region: Option<Region>,
) -> Result<String, PhoneError> {
    let mut first_error = None;
    for raw in candidates {
        match normalize(raw, default_region) {
            Ok(phone) => return Ok(phone),
            Err(PhoneError::Missing) => {}
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    Err(first_error.unwrap_or(PhoneError::Missing))
}

/// Keeps error messages short when a field holds something long that is not a phone.
fn shorten(value: &str) -> String {
    const MAX: usize = 40;
    match value.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}…", &value[..at]),
        None => value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_seen_in_crms_become_e164() {
        let us = region("US");
        let br = region("br");
        for (raw, region, expected) in [
            ("+1 (415) 555-0123", None, "+14155550123"),
            ("415.555.0123", us, "+14155550123"),
            ("(415) 555-0123 ext. 12", us, "+14155550123"),
            ("+5511999999999", None, "+5511999999999"),
            ("11 99999-9999", br, "+5511999999999"),
            // From Spain, 00 dials abroad (from the US it would be 011).
            ("0044 20 7946 0958", region("ES"), "+442079460958"),
            ("+34 600 000 000", None, "+34600000000"),
        ] {
            assert_eq!(normalize(raw, region).as_deref(), Ok(expected), "{raw}");
        }
    }

    #[test]
    fn unusable_values_are_told_apart() {
        assert_eq!(normalize("  ", region("US")), Err(PhoneError::Missing));
        assert!(matches!(
            normalize("n/a", region("US")),
            Err(PhoneError::Invalid(_))
        ));
        // Without a country code and without a default region there is nothing to go on.
        assert!(matches!(
            normalize("415 555 0123", None),
            Err(PhoneError::Invalid(_))
        ));
        // Codes without numbering rules are not regions.
        assert_eq!(region("XX"), None);
        assert_eq!(region("ZZ"), None);
        // Too short to be a number anywhere.
        assert!(matches!(
            normalize("+1 555", None),
            Err(PhoneError::Invalid(_))
        ));
    }

    #[test]
    fn the_first_usable_candidate_wins() {
        let us = region("US");
        assert_eq!(
            first_valid(["", "not a phone", "+14155550123"], us).as_deref(),
            Ok("+14155550123")
        );
        assert!(matches!(
            first_valid(["", "bad"], us),
            Err(PhoneError::Invalid(_))
        ));
        assert_eq!(first_valid(["", " "], us), Err(PhoneError::Missing));
    }
}
