//! Reading: every page, equal times at a page and a run boundary, late changes, and the last
//! second of a window.

use std::time::Duration;

use chrono::{DateTime, Utc};
use timelines_sync::sources::engine::RunError;

use super::{once_each, seconds};
use crate::vendors::ago;
use crate::vendors::preset::{Config, Lateness, Person, Preset, phone_of};

/// Full paging: eleven records over pages of three are each messaged once; the run's row
/// counts them, the cursor passes them, and a second run adds nothing.
pub async fn full_paging(preset: &impl Preset) {
    const RECORDS: u64 = 11;
    let base = ago(50);
    for n in 1..=RECORDS {
        preset.put(n, &Person::numbered(n), base + seconds(n));
    }
    preset.set_page_size(3);
    let h = Config::new(preset).set("page_size", 3).start(preset).await;

    let report = h.run().await;

    assert_eq!(report.jobs_created, RECORDS);
    assert!(report.pages >= 4, "{} pages", report.pages);
    assert_eq!(h.phones_by_record().await, once_each(preset, 1..=RECORDS));
    let run = &h.runs().await[0];
    assert_eq!(
        (run.status.as_str(), run.records_seen, run.jobs_created),
        ("succeeded", RECORDS as i32, RECORDS as i32)
    );
    assert_eq!(run.pages, report.pages as i32);
    assert!(h.state().await.cursor_value >= base + seconds(RECORDS));

    let again = h.run().await;
    assert_eq!(
        again.jobs_created, 0,
        "a rerun re-reads and creates nothing"
    );
    assert_eq!(
        h.count("SELECT count(*) FROM timelines.rule_events").await,
        RECORDS as i64
    );
    h.assert_never_stored(preset.secret()).await;
}

/// Seven records share one time over pages of three; the page holding the seventh fails, so
/// the run ends between records of that time. Without a lookback only the ids kept with the
/// cursor stop the next run from repeating the six: it adds the seventh alone.
pub async fn equal_timestamps(preset: &impl Preset) {
    let t = ago(20);
    for n in 1..=7 {
        preset.put(n, &Person::numbered(n), t);
    }
    preset.set_page_size(3);
    let config = Config::new(preset)
        .set("page_size", 3)
        .set("lookback_seconds", 0)
        .set("max_retries", 0);
    let h = config.start(preset).await;
    preset.fail_serving(7);

    let error = h.try_run().await.unwrap_err();

    assert!(matches!(error, RunError::Failed { .. }), "{error}");
    assert_eq!(h.phones_by_record().await, once_each(preset, 1..=6));
    let state = h.state().await;
    let (sorted, resumes) = h.checkpoints();
    if sorted {
        let mut read: Vec<String> = (1..=6).map(|n| preset.external_id(n)).collect();
        read.sort();
        let mut boundary = state.boundary_ids.clone();
        boundary.sort();
        assert_eq!(
            (state.cursor_value, boundary),
            (t, read),
            "the cursor stopped at the shared time, with the ids read at it"
        );
    } else {
        assert_eq!(
            state.cursor_value,
            config.initial(),
            "an unsorted read keeps its cursor"
        );
    }
    if resumes {
        assert!(state.vendor_token.is_some(), "the vendor's cursor was kept");
    }
    assert_eq!(h.runs().await[0].status, "failed");

    let report = h.run().await;

    assert_eq!(report.jobs_created, 1);
    assert_eq!(h.phones_by_record().await, once_each(preset, 1..=7));
    assert_eq!(
        h.count("SELECT count(*) FROM timelines.rule_events WHERE outcome = 'enqueued'")
            .await,
        7
    );
    h.assert_never_stored(preset.secret()).await;
}

/// A new record and a new version of a read one reach the API late; the next run picks each
/// up once and the one after adds nothing.
pub async fn late_change(preset: &impl Preset) {
    let clock = preset.clock();
    clock.freeze();
    let base = ago(30);
    for n in 1..=3 {
        preset.put(n, &Person::numbered(n), base + seconds(n));
    }
    let h = Config::new(preset).start(preset).await;
    assert_eq!(h.run().await.jobs_created, 3);

    match preset.lateness() {
        Lateness::IndexLag => {
            // Older than the cursor (the end of the window just read), inside the lookback.
            preset.put(4, &Person::numbered(4), ago(5));
            preset.put(1, &Person::numbered(1), ago(4));
        }
        Lateness::Settling => {
            let now = clock.now();
            preset.put(4, &Person::numbered(4), now - chrono::Duration::seconds(30));
            preset.put(1, &Person::numbered(1), now - chrono::Duration::seconds(20));
            assert_eq!(h.run().await.jobs_created, 0, "the vendor holds them back");
            clock.advance(Duration::from_secs(61));
        }
    }

    assert_eq!(h.run().await.jobs_created, 2);
    assert_eq!(h.run().await.jobs_created, 0);
    let mut expected = once_each(preset, 1..=4);
    expected.insert(preset.external_id(1), vec![phone_of(1), phone_of(1)]);
    assert_eq!(
        h.phones_by_record().await,
        expected,
        "record 1 twice: two versions"
    );
}

/// A window ends with milliseconds where vendors' filters have whole seconds. Without a
/// lookback, and with the vendor's clock ahead (so its `Date` does not move the window's end),
/// a record changed in every second around the window's end: each one before the cursor is read
/// by the first run or the second, and none twice.
pub async fn window_end(preset: &impl Preset) {
    preset.clock().advance(Duration::from_secs(90));
    let h = Config::new(preset)
        .set("lookback_seconds", 0)
        .set("settle_seconds", 2)
        .start(preset)
        .await;
    let now = ago(0);
    let records: Vec<(u64, DateTime<Utc>)> = (1..)
        .zip(-6i64..=1)
        .map(|(n, s)| (n, now + chrono::Duration::seconds(s)))
        .collect();
    for (n, at) in &records {
        preset.put(*n, &Person::numbered(*n), *at);
    }

    h.run().await;
    h.run().await;

    let cursor = h.state().await.cursor_value;
    let read = h.phones_by_record().await;
    for (n, at) in &records {
        let phones = read.get(&preset.external_id(*n));
        if *at < cursor {
            assert_eq!(
                phones,
                Some(&vec![phone_of(*n)]),
                "record {n} at {at}, cursor {cursor}"
            );
        } else {
            assert!(
                phones.is_none_or(|p| p.len() == 1),
                "record {n}: {phones:?}"
            );
        }
    }
}
