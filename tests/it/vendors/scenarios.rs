//! The checks of issue 6, each written once against [`Preset`] and run for every preset by
//! [`preset_scenarios!`]: full paging, equal timestamps at a page and a run boundary, late
//! changes inside the lookback, deletions, the vendor's rate-limit answer, odd phone formats,
//! enrichment, and a crash mid-run. Every check asserts what the database holds afterwards.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use timelines_sync::sources::engine::RunError;

use super::{Harness, SOURCE, ago, rfc};
use crate::fakes::{Clock, Request};

/// A person as the scenarios seed it: a name, and values for the vendor's preferred phone field
/// and for its second one.
#[derive(Clone, Debug)]
pub struct Person {
    pub name: String,
    pub phone: Option<String>,
    pub other_phone: Option<String>,
}

impl Person {
    pub fn new(name: &str, phone: Option<&str>, other_phone: Option<&str>) -> Self {
        Self {
            name: name.to_owned(),
            phone: phone.map(str::to_owned),
            other_phone: other_phone.map(str::to_owned),
        }
    }

    /// Person `n`, with a London number of its own ([`phone_of`] is its E.164 form).
    pub fn numbered(n: u64) -> Self {
        let phone = format!("+44 20 7946 {n:04}");
        Self::new(&format!("P{n}"), Some(&phone), None)
    }
}

/// The E.164 phone of [`Person::numbered`].
pub fn phone_of(n: u64) -> String {
    format!("+44207946{n:04}")
}

/// Whether a vendor's change feed shows a deletion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deletion {
    /// The record comes back flagged (`is_deleted`, `IsDeleted`, `active: false`, status
    /// `deleted`): it is skipped and its queued jobs are cancelled.
    Flagged,
    /// The record leaves the list: it is never read again, so nothing can be cancelled.
    Hidden,
}

/// How a change reaches a run late.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lateness {
    /// It shows up after a run that should have read it, with its older time (search index
    /// lag): the next run's lookback reads it.
    IndexLag,
    /// The vendor holds back the last minute's changes (Zendesk's exports): they come once
    /// settled, after the vendor cursor.
    Settling,
}

/// What the vendor's rate-limit answer should do to a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttle {
    /// The vendor says when to come back (`Retry-After`, `x-ratelimit-reset`): the run waits
    /// exactly that long each time and finishes.
    WaitsOut { status: u16, wait: Duration },
    /// The vendor's budget is spent: after `tries` answers of `status` the run stops with
    /// `reason`, keeping what it read before.
    Stops {
        status: u16,
        reason: &'static str,
        tries: usize,
    },
}

/// One preset against its fake vendor: what the scenarios need to seed records and to make the
/// vendor answer as they need.
pub trait Preset {
    /// The preset's name, e.g. `pipedrive.persons`.
    fn name(&self) -> &'static str;
    /// Source keys that reach the fake (`base_url`, `token`, `auth`), as TOML values.
    fn connection(&self) -> Vec<(&'static str, String)>;
    /// The credential, which must never be stored anywhere.
    fn secret(&self) -> &'static str;
    /// The fake's clock, which the poller waits on.
    fn clock(&self) -> &Clock;
    /// Every request the fake received, oldest first.
    fn requests(&self) -> Vec<Request>;
    /// Inserts or replaces record `n`, changed at `at`: a contact with `person`'s phones, or a
    /// deal or ticket whose person (looked up or embedded) has them.
    fn put(&self, n: u64, person: &Person, at: DateTime<Utc>);
    /// The id the source gives record `n`.
    fn external_id(&self, n: u64) -> String {
        n.to_string()
    }
    /// Deletes record `n` at `at`.
    fn delete(&self, n: u64, at: DateTime<Utc>) -> Deletion;
    /// How a change can reach a run late.
    fn lateness(&self) -> Lateness {
        Lateness::IndexLag
    }
    /// The first answer that would hold record `n` fails with 500, once.
    fn fail_serving(&self, n: u64);
    /// Sets the records per page where the vendor decides it (Salesforce's batch size); the
    /// source's `page_size` is set too.
    fn set_page_size(&self, _records: usize) {}
    /// The largest page the vendor serves.
    fn max_page_size(&self) -> usize;
    /// Turns the vendor's rate limit on, low enough for a run of one record per page to hit it.
    fn throttle(&self) -> Throttle;
    /// Turns it off again.
    fn unthrottle(&self);
}

/// A preset whose records get their phone from a related person (deals, tickets).
pub trait Enriched: Preset {
    /// Inserts or replaces the person (or requester) `id` with `person`'s phones.
    fn put_person(&self, id: u64, person: &Person);
    /// Inserts or replaces record `n` linked to person `id` (or to none), changed at `at`.
    fn put_linked(&self, n: u64, person: Option<u64>, at: DateTime<Utc>);
}

/// The person of record `n` when [`Preset::put`] creates one.
pub fn person_of(n: u64) -> u64 {
    10_000 + n
}

/// A scenario's configuration: the preset with test settings, and one rule, `updated`, so
/// every version of a record is one job.
pub struct Config {
    preset: &'static str,
    source: BTreeMap<&'static str, String>,
    rule: BTreeMap<&'static str, String>,
    initial: DateTime<Utc>,
}

impl Config {
    pub fn new(preset: &impl Preset) -> Self {
        let initial = ago(60);
        let mut source: BTreeMap<&'static str, String> = preset.connection().into_iter().collect();
        for (key, value) in [
            ("initial", format!("\"{}\"", rfc(initial))),
            ("settle_seconds", "0".to_owned()),
            ("lookback_seconds", "600".to_owned()),
            ("default_region", "\"GB\"".to_owned()),
            // The vendor's limits are what the scenarios test, not the client's own pacing.
            ("requests_per_second", "1000".to_owned()),
            ("max_retries", "3".to_owned()),
        ] {
            source.insert(key, value);
        }
        Self {
            preset: preset.name(),
            source,
            rule: BTreeMap::new(),
            initial,
        }
    }

    /// Sets a source key (a TOML value).
    pub fn set(mut self, key: &'static str, value: impl ToString) -> Self {
        self.source.insert(key, value.to_string());
        self
    }

    /// Sets a key of the rule (a TOML value).
    pub fn rule(mut self, key: &'static str, value: impl ToString) -> Self {
        self.rule.insert(key, value.to_string());
        self
    }

    /// Where the source starts.
    pub fn initial(&self) -> DateTime<Utc> {
        self.initial
    }

    pub fn toml(&self) -> String {
        let lines = |keys: &BTreeMap<&str, String>| {
            keys.iter()
                .map(|(k, v)| format!("{k} = {v}\n"))
                .collect::<String>()
        };
        format!(
            "[workspaces.default]\ntoken = \"tl-token\"\n\n[sources.{SOURCE}]\npreset = \"{}\"\n{}\n\
             [[rules]]\nname = \"hello\"\nsource = \"{SOURCE}\"\ntrigger = \"updated\"\n\
             template = \"Hello {{{{ contact.name | default('there') }}}}\"\n{}",
            self.preset,
            lines(&self.source),
            lines(&self.rule),
        )
    }

    pub async fn start(&self, preset: &impl Preset) -> Harness {
        Harness::start(&self.toml(), preset.clock()).await
    }
}

fn seconds(n: u64) -> chrono::Duration {
    chrono::Duration::seconds(n as i64)
}

/// Record id → the phones of its jobs, for records `numbers` each messaged once as seeded.
fn once_each(
    preset: &impl Preset,
    numbers: impl IntoIterator<Item = u64>,
) -> BTreeMap<String, Vec<String>> {
    numbers
        .into_iter()
        .map(|n| (preset.external_id(n), vec![phone_of(n)]))
        .collect()
}

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

/// Twelve records, one per page, against the vendor's rate limit: the run waits out what the
/// vendor asks and finishes, or stops where the vendor's budget ends and the next run (budget
/// back) reads the rest; no record is lost or messaged twice.
pub async fn rate_limit(preset: &impl Preset) {
    const RECORDS: u64 = 12;
    let clock = preset.clock();
    clock.freeze();
    let base = ago(40);
    for n in 1..=RECORDS {
        preset.put(n, &Person::numbered(n), base + seconds(n));
    }
    preset.set_page_size(1);
    let h = Config::new(preset).set("page_size", 1).start(preset).await;
    let throttle = preset.throttle();
    let answered = |status: u16| {
        preset
            .requests()
            .iter()
            .filter(|r| r.status == status)
            .count()
    };

    match throttle {
        Throttle::WaitsOut { status, wait } => {
            let report = h.run().await;

            let throttled = answered(status);
            assert!(throttled >= 1, "the vendor's limit was reached");
            assert_eq!(
                clock.waits(),
                vec![wait; throttled],
                "each {status} was waited out as the vendor asked"
            );
            assert_eq!(report.jobs_created, RECORDS);
            let run = &h.runs().await[0];
            assert_eq!(run.status, "succeeded");
            assert_eq!(run.requests as usize, preset.requests().len());
        }
        Throttle::Stops {
            status,
            reason,
            tries,
        } => {
            let error = h.try_run().await.unwrap_err();

            assert!(error.to_string().contains(reason), "{error}");
            assert_eq!(answered(status), tries);
            let waits = clock.waits();
            assert_eq!(waits.len(), tries - 1, "only the retries paused");
            assert!(
                waits.windows(2).all(|pair| pair[0] < pair[1]),
                "without a time from the vendor the pauses back off: {waits:?}"
            );
            let run = &h.runs().await[0];
            assert_eq!(run.status, "failed");
            assert!(run.error.as_deref().unwrap_or("").contains(reason));
            let kept = h.jobs().await.len() as u64;
            assert!((1..RECORDS).contains(&kept), "{kept} jobs kept");
            assert_eq!(h.phones_by_record().await, once_each(preset, 1..=kept));
            assert_eq!(h.state().await.cursor_value, base + seconds(kept));

            preset.unthrottle();
            let report = h.run().await;

            assert_eq!(report.jobs_created, RECORDS - kept);
        }
    }
    assert_eq!(h.phones_by_record().await, once_each(preset, 1..=RECORDS));
    h.assert_never_stored(preset.secret()).await;
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

/// The commit of the batch fails after its rows were written (as when the process dies
/// between fetching pages and committing them): jobs, events, contacts and cursor are rolled
/// back together, and the next run creates each job once.
pub async fn failed_commit(preset: &impl Preset) {
    for n in 1..=5 {
        preset.put(n, &Person::numbered(n), ago(30) + seconds(n));
    }
    let config = Config::new(preset).set("page_size", 2);
    preset.set_page_size(2);
    let h = config.start(preset).await;
    let crash = format!(
        "CREATE FUNCTION public.crash() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.external_id = '{}' THEN RAISE EXCEPTION 'simulated crash'; END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER crash BEFORE INSERT ON timelines.rule_events
             FOR EACH ROW EXECUTE FUNCTION public.crash();",
        preset.external_id(3)
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(crash))
        .execute(h.pool())
        .await
        .unwrap();

    let error = h.try_run().await.unwrap_err();

    assert!(error.to_string().contains("simulated crash"), "{error}");
    let written = "SELECT (SELECT count(*) FROM timelines.jobs) + (SELECT count(*) FROM timelines.rule_events)
                        + (SELECT count(*) FROM timelines.contacts)";
    assert_eq!(h.count(written).await, 0);
    let state = h.state().await;
    assert_eq!(
        (state.cursor_value, state.boundary_ids, state.vendor_token),
        (config.initial(), vec![], None)
    );
    assert_eq!(h.runs().await[0].status, "failed");

    sqlx::raw_sql("DROP TRIGGER crash ON timelines.rule_events")
        .execute(h.pool())
        .await
        .unwrap();
    let report = h.run().await;

    assert_eq!(report.jobs_created, 5);
    assert_eq!(h.phones_by_record().await, once_each(preset, 1..=5));
    h.assert_never_stored(preset.secret()).await;
}

/// 1,300 records make two write batches. The second batch's write waits on a lock the test
/// holds, and the run is dropped there, as when the process dies: the first batch stays
/// committed, the dead run is marked interrupted, and the next run adds the rest, no job twice.
pub async fn dying_between_batches(preset: &impl Preset) {
    const RECORDS: u64 = 1_300;
    let base = ago(50);
    for n in 1..=RECORDS {
        preset.put(n, &Person::numbered(n), base + seconds(n));
    }
    let size = preset.max_page_size().min(250);
    preset.set_page_size(size);
    let h = Config::new(preset)
        .set("page_size", size)
        .start(preset)
        .await;
    let mut holder = h.pool().acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock(7, 7)")
        .execute(&mut *holder)
        .await
        .unwrap();
    let hang = format!(
        "CREATE FUNCTION public.hang() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.external_id = '{}' THEN PERFORM pg_advisory_xact_lock(7, 7); END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER hang BEFORE INSERT ON timelines.rule_events
             FOR EACH ROW EXECUTE FUNCTION public.hang();",
        preset.external_id(RECORDS)
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(hang))
        .execute(h.pool())
        .await
        .unwrap();
    // (Advisory locks are per database, and other tests share the cluster.)
    let waiting = "SELECT count(*) FROM pg_locks
                    WHERE locktype = 'advisory' AND classid = 7 AND objid = 7 AND NOT granted
                      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())";

    let committed = {
        let run = h.try_run();
        tokio::pin!(run);
        loop {
            tokio::select! {
                result = &mut run => panic!("the run ended instead of waiting: {result:?}"),
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
            if h.count(waiting).await > 0 {
                break;
            }
        }
        h.count("SELECT count(*) FROM timelines.jobs").await
        // The run is dropped here: the process died in the middle of its second batch.
    };
    sqlx::query("SELECT pg_advisory_unlock_all()")
        .execute(&mut *holder)
        .await
        .unwrap();
    drop(holder);

    assert!(
        (1..RECORDS as i64).contains(&committed),
        "{committed} jobs committed before the crash"
    );
    // The dead run's session goes away a moment after it: until then the source is busy.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let report = loop {
        match h.try_run().await {
            Err(RunError::Busy(_)) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => break other.unwrap_or_else(|e| panic!("the rerun failed: {e}")),
        }
    };

    assert_eq!(report.jobs_created as i64, RECORDS as i64 - committed);
    assert_eq!(h.phones_by_record().await, once_each(preset, 1..=RECORDS));
    let statuses: Vec<String> = h.runs().await.into_iter().map(|r| r.status).collect();
    assert_eq!(statuses, ["interrupted", "succeeded"]);
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

/// One test per scenario for the preset `$preset` (an expression, awaited in each test), and
/// with `enriched` the enrichment scenario too.
macro_rules! preset_scenarios {
    ($preset:expr) => {
        #[tokio::test]
        async fn full_paging_reads_every_page_and_a_rerun_adds_nothing() {
            $crate::vendors::scenarios::full_paging(&$preset).await;
        }

        #[tokio::test]
        async fn equal_timestamps_at_a_page_and_a_run_boundary_lose_and_repeat_nothing() {
            $crate::vendors::scenarios::equal_timestamps(&$preset).await;
        }

        #[tokio::test]
        async fn a_late_change_inside_the_lookback_is_picked_up_exactly_once() {
            $crate::vendors::scenarios::late_change(&$preset).await;
        }

        #[tokio::test]
        async fn deleted_records_are_never_messaged_and_seen_deletions_cancel_queued_jobs() {
            $crate::vendors::scenarios::deletions(&$preset).await;
        }

        #[tokio::test]
        async fn a_change_in_the_last_second_of_a_window_is_read_by_this_run_or_the_next() {
            $crate::vendors::scenarios::window_end(&$preset).await;
        }

        #[tokio::test]
        async fn the_vendors_rate_limit_answer_ends_the_run_right_and_loses_nothing() {
            $crate::vendors::scenarios::rate_limit(&$preset).await;
        }

        #[tokio::test]
        async fn odd_phone_formats_become_e164_and_unusable_ones_are_skipped_with_the_reason() {
            $crate::vendors::scenarios::odd_phones(&$preset).await;
        }

        #[tokio::test]
        async fn a_failed_commit_rolls_the_batch_back_and_the_rerun_creates_each_job_once() {
            $crate::vendors::scenarios::failed_commit(&$preset).await;
        }

        #[tokio::test]
        async fn a_process_dying_between_batches_keeps_the_first_and_repeats_nothing() {
            $crate::vendors::scenarios::dying_between_batches(&$preset).await;
        }
    };
    ($preset:expr, enriched) => {
        $crate::vendors::scenarios::preset_scenarios!($preset);

        #[tokio::test]
        async fn each_record_takes_its_persons_phone_read_afresh_every_run() {
            $crate::vendors::scenarios::enrichment(&$preset).await;
        }
    };
}

pub(crate) use preset_scenarios;
