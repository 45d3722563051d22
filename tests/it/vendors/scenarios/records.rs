//! Records: deletions, odd phone formats, and phones from related persons.

use std::collections::BTreeMap;

use super::{once_each, seconds};
use crate::vendors::ago;
use crate::vendors::preset::{Config, Deletion, Enriched, Person, Preset};

/// A record deleted before any run is never messaged; one deleted while its job waits (an
/// hour's delay) has the job cancelled where the vendor shows deletions.
pub async fn deletions(preset: &impl Preset) {
    let base = ago(30);
    for n in 1..=4 {
        preset.put(n, &Person::numbered(n), base + seconds(n));
    }
    let shown = preset.delete(2, ago(20));
    let h = Config::new(preset)
        .rule("delay_seconds", 3600)
        .start(preset)
        .await;

    let report = h.run().await;

    assert_eq!(h.phones_by_record().await, once_each(preset, [1, 3, 4]));
    let deleted_skip = vec![(preset.external_id(2), "deleted".to_owned())];
    match shown {
        Deletion::Flagged => {
            assert_eq!(report.skipped.get("deleted"), Some(&1));
            assert_eq!(h.skips().await, deleted_skip);
        }
        Deletion::Hidden => assert_eq!(h.skips().await, vec![]),
    }

    let shown = preset.delete(3, ago(2));
    let report = h.run().await;

    assert_eq!(report.jobs_created, 0);
    let states: BTreeMap<String, (String, bool)> = h
        .jobs()
        .await
        .into_iter()
        .map(|job| {
            let says_deleted = job.last_error.is_some_and(|e| e.contains("deleted"));
            (job.record, (job.state, says_deleted))
        })
        .collect();
    let queued = ("queued".to_owned(), false);
    let third = match shown {
        Deletion::Flagged => ("cancelled".to_owned(), true),
        // The list never shows the deletion: there is nothing to cancel it by.
        Deletion::Hidden => queued.clone(),
    };
    let expected = BTreeMap::from([
        (preset.external_id(1), queued.clone()),
        (preset.external_id(3), third),
        (preset.external_id(4), queued),
    ]);
    assert_eq!(states, expected);
}

/// Phones as people type them become E.164 (national numbers in `default_region`, spaces,
/// dashes, brackets, dots, the `00` prefix); the preferred field wins when both are usable and
/// the second is used when the first is not; invalid and missing phones are recorded as
/// skipped and never enqueued.
pub async fn odd_phones(preset: &impl Preset) {
    let cases: [(Person, Result<&str, &str>); 10] = [
        (
            Person::new("National", Some("020 7946 0101"), None),
            Ok("+442079460101"),
        ),
        (
            Person::new("Brackets", Some("(020) 7946-0102"), None),
            Ok("+442079460102"),
        ),
        (
            Person::new("Double zero", Some("0044 20 7946 0103"), None),
            Ok("+442079460103"),
        ),
        (
            Person::new("Dots", Some("+44.20.7946.0104"), None),
            Ok("+442079460104"),
        ),
        (
            Person::new("Spaces", Some(" +44  20 7946 0105 "), None),
            Ok("+442079460105"),
        ),
        (
            Person::new("Short", Some("12345"), None),
            Err("invalid_phone"),
        ),
        (Person::new("None", None, None), Err("missing_phone")),
        (
            Person::new("Second", Some("not a phone"), Some("+44 20 7946 0108")),
            Ok("+442079460108"),
        ),
        (
            Person::new("Both", Some("+44 20 7946 0109"), Some("+44 20 7946 0999")),
            Ok("+442079460109"),
        ),
        (
            Person::new("Only second", None, Some("020-7946-0110")),
            Ok("+442079460110"),
        ),
    ];
    let base = ago(30);
    for (n, (person, _)) in (1..).zip(&cases) {
        preset.put(n, person, base + seconds(n));
    }
    let h = Config::new(preset).start(preset).await;

    let report = h.run().await;

    let mut phones = BTreeMap::new();
    let mut skips = Vec::new();
    for (n, (_, outcome)) in (1..).zip(&cases) {
        match outcome {
            Ok(phone) => {
                phones.insert(preset.external_id(n), vec![(*phone).to_owned()]);
            }
            Err(reason) => skips.push((preset.external_id(n), (*reason).to_owned())),
        }
    }
    assert_eq!(h.phones_by_record().await, phones);
    assert_eq!(h.skips().await, skips);
    assert_eq!(report.skipped.get("invalid_phone"), Some(&1));
    assert_eq!(report.skipped.get("missing_phone"), Some(&1));
    assert_eq!(h.runs().await[0].records_skipped, 2);
    assert_eq!(
        h.count("SELECT count(*) FROM timelines.contacts").await,
        phones.len() as i64,
        "only records with a usable phone are contacts"
    );
}

/// Records take their phone from their person: two share one, one has none, one names a
/// person that does not exist (both skipped as missing a phone). The person's new phone is used
/// for the record's next version: persons are read afresh every run, never cached.
pub async fn enrichment(preset: &impl Enriched) {
    preset.put_person(501, &Person::new("Ana", Some("+44 20 7946 0501"), None));
    preset.put_person(502, &Person::new("Bo", Some("+44 20 7946 0502"), None));
    let base = ago(30);
    for (n, person) in [
        (1, Some(501)),
        (2, Some(501)),
        (3, Some(502)),
        (4, None),
        (5, Some(599)),
    ] {
        preset.put_linked(n, person, base + seconds(n));
    }
    let h = Config::new(preset).start(preset).await;

    let report = h.run().await;

    assert_eq!(report.jobs_created, 3);
    let phones = |pairs: &[(u64, &str)]| -> BTreeMap<String, Vec<String>> {
        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (n, phone) in pairs {
            map.entry(preset.external_id(*n))
                .or_default()
                .push((*phone).to_owned());
        }
        map
    };
    assert_eq!(
        h.phones_by_record().await,
        phones(&[
            (1, "+442079460501"),
            (2, "+442079460501"),
            (3, "+442079460502")
        ])
    );
    let missing = |n: u64| (preset.external_id(n), "missing_phone".to_owned());
    assert_eq!(h.skips().await, vec![missing(4), missing(5)]);

    preset.put_person(501, &Person::new("Ana", Some("+44 20 7946 0511"), None));
    preset.put_linked(1, Some(501), ago(3));
    let report = h.run().await;

    assert_eq!(report.jobs_created, 1);
    assert_eq!(
        h.phones_by_record().await,
        phones(&[
            (1, "+442079460501"),
            (1, "+442079460511"),
            (2, "+442079460501"),
            (3, "+442079460502")
        ])
    );
}
