//! Pollers against fake vendor servers and a real database: HubSpot presets, a custom HTTP
//! source in every pagination style, a SQL source; the pitfalls of incremental polling; rules,
//! policies, single-flight, crashes and dry runs.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::json;
use sqlx::PgPool;
use timelines_sync::config::{ProcessEnv, Settings};
use timelines_sync::sources::Catalog;
use timelines_sync::sources::engine::{Mode, Poller, RunError, RunReport};
use timelines_sync::sources::spec::SourceKind;

use crate::fakes::Clock;
use crate::fakes::generic::GenericApi;
use crate::fakes::hubspot::HubSpot;
use crate::helpers::{TestDb, test_db};

const TOKEN: &str = "pat-na1-secret-token";

pub(crate) fn ago(minutes: i64) -> DateTime<Utc> {
    Utc::now() - chrono::Duration::minutes(minutes)
}

pub(crate) fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A poller for `toml` on a fresh database with its workspaces in place.
pub(crate) async fn poller(toml: &str) -> (TestDb, Poller) {
    let db = test_db().await;
    let p = poller_on(&db.pool, toml).await;
    (db, p)
}

pub(crate) async fn poller_on(pool: &PgPool, toml: &str) -> Poller {
    poller_waiting(pool, toml, None).await
}

/// A poller for `toml` on `pool` whose HTTP sources, given a `clock`, wait on it (advancing it)
/// instead of sleeping.
pub(crate) async fn poller_waiting(pool: &PgPool, toml: &str, clock: Option<&Clock>) -> Poller {
    let settings = Settings::parse(toml, std::path::Path::new("t.toml")).expect("config parses");
    settings.validate(&ProcessEnv).expect("config is valid");
    timelines_sync::db::sync_workspaces(pool, &settings, &[])
        .await
        .unwrap();
    let mut catalog = Catalog::build(&settings, &ProcessEnv).unwrap();
    if let Some(clock) = clock {
        for source in catalog.sources.values_mut() {
            if let SourceKind::Http(spec) = &mut Arc::make_mut(source).kind {
                spec.sleep = Arc::new(clock.clone());
            }
        }
    }
    let mut poller = Poller::new(pool.clone(), Arc::new(catalog), "test-instance");
    poller.retry_base = Duration::from_millis(20);
    poller
}

pub(crate) async fn run(poller: &Poller, source: &str) -> RunReport {
    poller
        .run(source, Mode::Manual, false)
        .await
        .unwrap_or_else(|e| panic!("run of {source} failed: {e}"))
}

/// (phone, text) of every job, ordered by phone.
pub(crate) async fn sends(pool: &PgPool) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT payload->>'phone', coalesce(payload->>'text', '') FROM timelines.jobs ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

pub(crate) async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(pool)
        .await
        .unwrap()
}

fn hubspot_contacts_config(url: &str, start: DateTime<Utc>, extra: &str) -> String {
    format!(
        r#"
[workspaces.default]
token = "tl-token"

[sources.hubspot_main]
preset = "hubspot.contacts"
base_url = "{url}"
token = "{TOKEN}"
initial = "{start}"
lookback_seconds = 600
settle_seconds = 0
default_region = "US"
{extra}

[[rules]]
source = "hubspot_main"
trigger = "created"
action = "send_message"
template = "Hi {{{{ firstname }}}}, welcome!"
workspace = "default"
"#,
        start = rfc(start)
    )
}

#[tokio::test]
async fn hubspot_contacts_become_one_welcome_per_new_contact() {
    let hubspot = HubSpot::start(TOKEN).await;
    let start = ago(60);
    // Created before the source started: never messaged, even though it changed since.
    hubspot.put_contact(
        1,
        json!({"firstname": "Old", "phone": "+14155550101"}),
        ago(600),
        ago(30),
    );
    hubspot.put_contact(
        2,
        json!({"firstname": "Ana", "mobilephone": "(415) 555-0102"}),
        ago(40),
        ago(40),
    );
    hubspot.put_contact(3, json!({"firstname": "Bo", "hs_whatsapp_phone_number": "+44 20 7946 0958", "phone": "+14155550103"}), ago(20), ago(10));
    hubspot.put_contact(
        4,
        json!({"firstname": "Cy", "phone": "not a phone"}),
        ago(20),
        ago(10),
    );
    hubspot.put_contact(5, json!({"firstname": "Di"}), ago(20), ago(10));
    // Archived: HubSpot search never returns it.
    hubspot.put_contact(
        6,
        json!({"firstname": "Gone", "phone": "+14155550106"}),
        ago(20),
        ago(10),
    );
    hubspot.archive("contacts", 6);
    let (db, poller) = poller(&hubspot_contacts_config(&hubspot.url, start, "")).await;

    let report = run(&poller, "hubspot_main").await;
    assert_eq!(report.records_seen, 5);
    assert_eq!(report.jobs_created, 2);
    assert_eq!(report.skipped.get("invalid_phone"), Some(&1));
    assert_eq!(report.skipped.get("missing_phone"), Some(&1));
    assert_eq!(
        sends(&db.pool).await,
        vec![
            ("+14155550102".to_owned(), "Hi Ana, welcome!".to_owned()),
            // hs_whatsapp_phone_number is preferred over phone.
            ("+442079460958".to_owned(), "Hi Bo, welcome!".to_owned()),
        ]
    );
    // Every record with a usable phone is a contact; the others are recorded as skipped.
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM timelines.contacts").await,
        3
    );
    let skipped: Vec<(String, String)> = sqlx::query_as(
        "SELECT external_id, reason FROM timelines.source_skips ORDER BY external_id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        skipped,
        vec![
            ("4".into(), "invalid_phone".into()),
            ("5".into(), "missing_phone".into())
        ]
    );
    let run_row: (String, i32, i32, i32) = sqlx::query_as(
        "SELECT status, records_seen, jobs_created, records_skipped FROM timelines.source_runs",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(run_row, ("succeeded".into(), 5, 2, 2));
    // The token went in the header and nowhere else.
    let request = &hubspot.requests()[0];
    assert!(
        request
            .headers
            .iter()
            .any(|(k, v)| k == "authorization" && v == &format!("Bearer {TOKEN}"))
    );
    let stored: String = sqlx::query_scalar(
        "SELECT coalesce(string_agg(error, ''), '') || (SELECT string_agg(detail, '') FROM timelines.source_skips) FROM timelines.source_runs",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(!stored.contains(TOKEN));

    // Polling again (and again) creates nothing new: the lookback re-reads, the keys dedupe.
    let again = run(&poller, "hubspot_main").await;
    assert_eq!(again.jobs_created, 0);
    run(&poller, "hubspot_main").await;
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM timelines.jobs").await,
        2
    );
}

#[tokio::test]
async fn a_new_source_starts_from_now_and_backfill_goes_back_explicitly() {
    let hubspot = HubSpot::start(TOKEN).await;
    hubspot.put_contact(
        1,
        json!({"firstname": "Early", "phone": "+14155550111"}),
        ago(30),
        ago(30),
    );
    let config = hubspot_contacts_config(&hubspot.url, ago(0), "")
        .replace(&format!("initial = \"{}\"", rfc(ago(0))), "");
    // No `initial`: the source starts now; a contact created half an hour ago is history.
    let config = config.replace("initial = \"\"\n", "");
    let (db, poller) = poller(&config).await;
    let report = run(&poller, "hubspot_main").await;
    assert_eq!(report.jobs_created, 0);

    // A dry backfill shows the job and writes nothing.
    let tables = "SELECT (SELECT count(*) FROM timelines.jobs) + (SELECT count(*) FROM timelines.contacts)
                       + (SELECT count(*) FROM timelines.rule_events) + (SELECT count(*) FROM timelines.source_runs)";
    let before = count(&db.pool, tables).await;
    let cursor_before: DateTime<Utc> =
        sqlx::query_scalar("SELECT cursor_value FROM timelines.source_state")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let dry = poller
        .run("hubspot_main", Mode::Backfill { since: ago(120) }, true)
        .await
        .unwrap();
    assert_eq!(dry.jobs_created, 1);
    assert_eq!(dry.planned[0].payload["text"], "Hi Early, welcome!");
    assert_eq!(
        count(&db.pool, tables).await,
        before,
        "a dry run writes nothing"
    );
    let cursor_after: DateTime<Utc> =
        sqlx::query_scalar("SELECT cursor_value FROM timelines.source_state")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(cursor_before, cursor_after);

    let backfill = poller
        .run("hubspot_main", Mode::Backfill { since: ago(120) }, false)
        .await
        .unwrap();
    assert_eq!(backfill.jobs_created, 1);
    assert_eq!(
        sends(&db.pool).await,
        vec![("+14155550111".into(), "Hi Early, welcome!".into())]
    );
    // Backfilling again repeats nothing.
    let again = poller
        .run("hubspot_main", Mode::Backfill { since: ago(120) }, false)
        .await
        .unwrap();
    assert_eq!(again.jobs_created, 0);
}

#[tokio::test]
async fn equal_timestamps_across_pages_and_runs_and_late_updates_lose_nothing() {
    let hubspot = HubSpot::start(TOKEN).await;
    let same = ago(5);
    for id in 1..=7 {
        hubspot.put_contact(
            id,
            json!({"firstname": format!("C{id}"), "phone": format!("+1415555{:04}", 200 + id)}),
            same,
            same,
        );
    }
    // Pages of 3: the seven equal timestamps straddle two page boundaries.
    let (db, poller) = poller(&hubspot_contacts_config(
        &hubspot.url,
        ago(60),
        "page_size = 3",
    ))
    .await;
    let first = run(&poller, "hubspot_main").await;
    assert_eq!(first.jobs_created, 7);
    assert!(first.pages >= 3, "{} pages", first.pages);

    // A contact with the same timestamp shows up late (search index lag), and one with an older
    // timestamp: both are inside the lookback (10 minutes) and picked up, once.
    hubspot.put_contact(
        8,
        json!({"firstname": "Late", "phone": "+14155550208"}),
        same,
        same,
    );
    hubspot.put_contact(
        9,
        json!({"firstname": "Older", "phone": "+14155550209"}),
        ago(7),
        ago(7),
    );
    let second = run(&poller, "hubspot_main").await;
    assert_eq!(second.jobs_created, 2);
    let phones: Vec<String> = sends(&db.pool).await.into_iter().map(|(p, _)| p).collect();
    assert_eq!(phones.len(), 9);
    let mut unique = phones.clone();
    unique.dedup();
    assert_eq!(unique.len(), 9, "no contact messaged twice");
}

#[tokio::test]
async fn records_changed_inside_the_settle_delay_wait_for_the_next_run() {
    let hubspot = HubSpot::start(TOKEN).await;
    hubspot.put_contact(
        1,
        json!({"firstname": "Fresh", "phone": "+14155550301"}),
        ago(0),
        Utc::now(),
    );
    let config = hubspot_contacts_config(&hubspot.url, ago(60), "")
        .replace("settle_seconds = 0", "settle_seconds = 120");
    let (db, poller) = poller(&config).await;
    let report = run(&poller, "hubspot_main").await;
    assert_eq!(report.jobs_created, 0);
    // The cursor stopped before it, so it is read once it has settled.
    let cursor: DateTime<Utc> =
        sqlx::query_scalar("SELECT cursor_value FROM timelines.source_state")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(cursor < Utc::now() - chrono::Duration::seconds(100));
}

#[tokio::test]
async fn the_ten_thousand_result_cap_is_re_anchored_without_losing_or_repeating() {
    let hubspot = HubSpot::start(TOKEN).await;
    let base = ago(50);
    // 10,150 contacts, pairs sharing a millisecond, so the re-anchor point has equal neighbours.
    for id in 0..10_150u64 {
        let t = base + chrono::Duration::milliseconds((id / 2) as i64 * 100);
        hubspot.put_contact(id + 1, json!({"firstname": "X", "phone": format!("+1212555{:04}", id % 10_000), "email": format!("{id}@x")}), t, t);
    }
    let config = hubspot_contacts_config(&hubspot.url, ago(60), "")
        .replace("trigger = \"created\"", "trigger = \"updated\"");
    let (db, poller) = poller(&config).await;
    let report = run(&poller, "hubspot_main").await;
    assert_eq!(report.records_seen, 10_150);
    assert_eq!(report.jobs_created, 10_150);
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(DISTINCT idempotency_key) FROM timelines.jobs"
        )
        .await,
        10_150
    );
    // No request went past the cap (the fake answers 400 there).
    assert!(hubspot.requests().iter().all(|r| r.status == 200));
}

#[tokio::test]
async fn rate_limits_are_waited_out_with_and_without_retry_after() {
    let hubspot = HubSpot::start(TOKEN).await;
    hubspot.put_contact(
        1,
        json!({"firstname": "A", "phone": "+14155550401"}),
        ago(20),
        ago(20),
    );
    let db = test_db().await;
    let config = hubspot_contacts_config(&hubspot.url, ago(60), "");
    // The poller waits on the fake's clock: the waits are recorded, not slept.
    let clock = hubspot.clock();
    let poller = poller_waiting(&db.pool, &config, Some(clock)).await;
    hubspot.fail_next(429, Some("1"), 1);
    let report = run(&poller, "hubspot_main").await;
    assert_eq!(
        clock.waits(),
        [Duration::from_secs(1)],
        "Retry-After was honoured"
    );
    assert_eq!((report.requests, report.jobs_created), (2, 1));

    // Without Retry-After: exponential backoff (from the test's 20 ms).
    hubspot.fail_next(429, None, 2);
    let report = run(&poller, "hubspot_main").await;
    assert_eq!(report.requests, 3);
    let waits = clock.waits();
    assert!(
        waits.len() == 3 && waits[1] >= Duration::from_millis(20) && waits[2] > waits[1],
        "{waits:?}"
    );
    // A bad gateway is retried too.
    hubspot.fail_next(502, None, 1);
    let report = run(&poller, "hubspot_main").await;
    assert_eq!(report.requests, 2);
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM timelines.jobs").await,
        1
    );
}

#[tokio::test]
async fn a_failure_mid_run_keeps_the_committed_pages_and_the_rerun_adds_no_duplicates() {
    let hubspot = HubSpot::start(TOKEN).await;
    for id in 1..=6u64 {
        let t = ago(40 - id as i64);
        hubspot.put_contact(
            id,
            json!({"firstname": "P", "phone": format!("+1415555{:04}", 500 + id)}),
            t,
            t,
        );
    }
    let config = hubspot_contacts_config(&hubspot.url, ago(60), "page_size = 2\nmax_retries = 0");
    let (db, poller) = poller(&config).await;
    // Page 1 is read and committed; page 2's request fails for good.
    let fail_after_first = async {
        while hubspot.search_requests() < 1 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        hubspot.fail_next(500, None, 1);
    };
    let (result, ()) = tokio::join!(
        poller.run("hubspot_main", Mode::Manual, false),
        fail_after_first
    );
    let error = result.unwrap_err();
    assert!(matches!(error, RunError::Failed { .. }), "{error}");
    let status: (String, Option<String>) =
        sqlx::query_as("SELECT status, error FROM timelines.source_runs")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(status.0, "failed");
    assert!(status.1.unwrap().contains("HTTP 500"));
    let jobs_after_failure = count(&db.pool, "SELECT count(*) FROM timelines.jobs").await;
    assert!((2..6).contains(&jobs_after_failure), "{jobs_after_failure}");

    let report = run(&poller, "hubspot_main").await;
    assert_eq!(report.jobs_created as i64, 6 - jobs_after_failure);
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM timelines.jobs").await,
        6
    );
}

#[tokio::test]
async fn only_one_run_of_a_source_at_a_time_and_one_per_tick_across_instances() {
    let hubspot = HubSpot::start(TOKEN).await;
    hubspot.put_contact(
        1,
        json!({"firstname": "A", "phone": "+14155550601"}),
        ago(20),
        ago(20),
    );
    let config = hubspot_contacts_config(&hubspot.url, ago(60), "");
    let (db, first) = poller(&config).await;
    let second = poller_on(&db.pool, &config).await;

    // Another instance holds the source's lock.
    let mut holder = db.pool.acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock(1953066341, hashtext('hubspot_main'))")
        .execute(&mut *holder)
        .await
        .unwrap();
    assert!(matches!(
        second.run("hubspot_main", Mode::Manual, false).await,
        Err(RunError::Busy(_))
    ));
    sqlx::query("SELECT pg_advisory_unlock_all()")
        .execute(&mut *holder)
        .await
        .unwrap();
    drop(holder);

    // Two instances fire the same cron tick: it runs once.
    let tick = Utc::now();
    let (a, b) = tokio::join!(
        first.run("hubspot_main", Mode::Scheduled { tick }, false),
        second.run("hubspot_main", Mode::Scheduled { tick }, false)
    );
    let ran = [&a, &b].iter().filter(|r| r.is_ok()).count();
    assert_eq!(ran, 1, "{a:?} {b:?}");
    assert!(
        [&a, &b]
            .iter()
            .any(|r| matches!(r, Err(RunError::Busy(_)) | Err(RunError::TickTaken(_))))
    );
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM timelines.source_runs").await,
        1
    );
    assert!(matches!(
        first
            .run("hubspot_main", Mode::Scheduled { tick }, false)
            .await,
        Err(RunError::TickTaken(_))
    ));
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM timelines.jobs").await,
        1
    );
}

#[tokio::test]
async fn deals_are_enriched_with_their_contact_and_stage_changes_fire_once() {
    let hubspot = HubSpot::start(TOKEN).await;
    hubspot.put_contact(
        10,
        json!({"firstname": "Eva", "lastname": "Lund", "mobilephone": "+46 70 123 45 67"}),
        ago(500),
        ago(500),
    );
    hubspot.put_deal(
        100,
        json!({"dealname": "Big", "dealstage": "appointmentscheduled"}),
        ago(30),
        ago(30),
        &[10],
    );
    hubspot.put_deal(
        101,
        json!({"dealname": "Orphan", "dealstage": "closedwon"}),
        ago(30),
        ago(30),
        &[],
    );
    let config = format!(
        r#"
[workspaces.default]
token = "tl-token"
[sources.deals]
preset = "hubspot.deals"
base_url = "{url}"
token = "{TOKEN}"
initial = "{start}"
settle_seconds = 0
[[rules]]
name = "won"
source = "deals"
trigger = "field_changed"
field = "dealstage"
value = "closedwon"
template = "Congratulations {{{{ contact.name }}}} on {{{{ dealname }}}}!"
[[rules]]
name = "stage-note"
source = "deals"
trigger = "field_changed"
field = "dealstage"
action = "add_note"
template = "Deal {{{{ dealname }}}} is now {{{{ dealstage }}}}"
"#,
        url = hubspot.url,
        start = rfc(ago(60))
    );
    let (db, poller) = poller(&config).await;
    let first = run(&poller, "deals").await;
    // The new deal: a note for its first stage; the orphan has no contact, so no phone.
    assert_eq!(first.jobs_created, 1);
    assert_eq!(first.skipped.get("missing_phone"), Some(&1));

    hubspot.put_deal(
        100,
        json!({"dealname": "Big", "dealstage": "closedwon"}),
        ago(30),
        ago(5),
        &[10],
    );
    let second = run(&poller, "deals").await;
    assert_eq!(second.jobs_created, 2);
    let jobs: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT kind, payload->>'phone', payload->>'text' FROM timelines.jobs ORDER BY id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        jobs,
        vec![
            (
                "add_note".into(),
                "+46701234567".into(),
                "Deal Big is now appointmentscheduled".into()
            ),
            (
                "send_message".into(),
                "+46701234567".into(),
                "Congratulations Eva Lund on Big!".into()
            ),
            (
                "add_note".into(),
                "+46701234567".into(),
                "Deal Big is now closedwon".into()
            ),
        ]
    );
    // Polling again changes nothing; a later move away and back fires again.
    assert_eq!(run(&poller, "deals").await.jobs_created, 0);
    hubspot.put_deal(
        100,
        json!({"dealname": "Big", "dealstage": "contractsent"}),
        ago(30),
        ago(3),
        &[10],
    );
    run(&poller, "deals").await;
    hubspot.put_deal(
        100,
        json!({"dealname": "Big", "dealstage": "closedwon"}),
        ago(30),
        ago(1),
        &[10],
    );
    run(&poller, "deals").await;
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM timelines.jobs WHERE kind = 'send_message'"
        )
        .await,
        2
    );
}

/// A custom source on the generic fake, with `pagination` and the endpoint given.
pub(crate) fn generic_config(
    url: &str,
    endpoint: &str,
    query: &str,
    records: &str,
    pagination: &str,
    extra: &str,
) -> String {
    format!(
        r#"
[workspaces.default]
token = "tl-token"
[sources.internal]
base_url = "{url}"
path = "{endpoint}"
token = "key-123"
auth = {{ type = "header", name = "X-Api-Key" }}
query = {query}
records_path = "{records}"
id_field = "id"
cursor_field = "updated_at"
pagination = {pagination}
sorted = true
initial = "{start}"
settle_seconds = 0
phone_fields = ["phone"]
name_fields = ["name"]
{extra}
[[rules]]
source = "internal"
trigger = "updated"
template = "Hello {{{{ name }}}}"
"#,
        start = rfc(ago(60))
    )
}

fn fill_generic(api: &GenericApi, n: u64) {
    for id in 1..=n {
        api.put(json!({
            "id": id,
            "name": format!("N{id}"),
            "phone": format!("+1 212 555 {:04}", 700 + id),
            "updated_at": rfc(ago(50) + chrono::Duration::seconds((id / 2) as i64)),
        }));
    }
}

#[tokio::test]
async fn a_custom_http_source_pages_in_every_style() {
    let api = GenericApi::start("key-123").await;
    fill_generic(&api, 7);
    let styles = [
        (
            "/records",
            r#"{ updated_since = "{{ cursor.lower }}", cursor = "{{ page.token | default('') }}", limit = "{{ page.size }}" }"#,
            "data",
            r#"{ type = "token", token_path = "next_cursor" }"#,
        ),
        (
            "/pages",
            r#"{ updated_since = "{{ cursor.lower | rfc3339 }}", page = "{{ page.number }}", per_page = "{{ page.size }}" }"#,
            "",
            r#"{ type = "link_header" }"#,
        ),
        (
            "/offset",
            r#"{ updated_since = "{{ cursor.lower }}", offset = "{{ page.offset }}", limit = "{{ page.size }}" }"#,
            "items",
            r#"{ type = "offset", more_path = "has_more" }"#,
        ),
        (
            "/feed",
            r#"{ updated_since = "{{ cursor.lower }}", limit = "{{ page.size }}" }"#,
            "results",
            r#"{ type = "next_url", url_path = "next" }"#,
        ),
    ];
    for (endpoint, query, records, pagination) in styles {
        let (db, poller) = poller(&generic_config(
            &api.url,
            endpoint,
            query,
            records,
            pagination,
            "page_size = 2",
        ))
        .await;
        let report = run(&poller, "internal").await;
        assert_eq!(
            (report.records_seen, report.jobs_created),
            (7, 7),
            "{endpoint}"
        );
        assert!(report.pages >= 4, "{endpoint}: {} pages", report.pages);
        assert_eq!(
            sends(&db.pool).await[0],
            ("+12125550701".into(), "Hello N1".into())
        );
        assert_eq!(
            run(&poller, "internal").await.jobs_created,
            0,
            "{endpoint}: repeat"
        );
    }
}

#[tokio::test]
async fn a_page_cap_is_re_anchored_and_deletions_cancel_queued_jobs() {
    let api = GenericApi::start("key-123").await;
    fill_generic(&api, 9);
    api.set_page_cap(Some(2));
    let config = generic_config(
        &api.url,
        "/pages",
        r#"{ updated_since = "{{ cursor.lower | rfc3339 }}", page = "{{ page.number }}", per_page = "{{ page.size }}" }"#,
        "",
        r#"{ type = "link_header" }"#,
        "page_size = 2\nresult_cap = 4\nskip_if = \"deleted\"",
    );
    let (db, poller) = poller(&config).await;
    let report = run(&poller, "internal").await;
    assert_eq!(report.jobs_created, 9);
    assert!(
        api.requests().iter().all(|r| r.status == 200),
        "never asked past the page cap"
    );

    // Record 3 is deleted in the CRM: its queued job is cancelled with a reason.
    api.put(json!({"id": 3, "name": "N3", "phone": "+1 212 555 0703", "deleted": true, "updated_at": rfc(ago(2))}));
    let report = run(&poller, "internal").await;
    assert_eq!(report.skipped.get("deleted"), Some(&1));
    let (state, error): (String, String) = sqlx::query_as(
        "SELECT state, last_error FROM timelines.jobs WHERE payload->>'phone' = '+12125550703'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(state, "cancelled");
    assert!(error.contains("deleted"), "{error}");
}

#[tokio::test]
async fn a_sql_source_reads_an_internal_table_with_the_cursor_bound() {
    let db = test_db().await;
    sqlx::raw_sql(
        "CREATE TABLE public.customers (id int PRIMARY KEY, first_name text, phone text, plan text,
                                         updated_at timestamptz NOT NULL);
         INSERT INTO public.customers
         SELECT i, 'Name' || i, '+5511 9' || lpad((10000000 + i)::text, 8, '0'), CASE WHEN i % 2 = 0 THEN 'pro' ELSE 'free' END,
                now() - interval '30 minutes' + (i / 3) * interval '1 second'
           FROM generate_series(1, 10) i;",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let config = format!(
        r#"
[workspaces.default]
token = "tl-token"
[sources.app_db]
sql = "SELECT id, first_name, phone, plan, updated_at FROM public.customers WHERE updated_at >= $1 AND updated_at < $2"
cursor_field = "updated_at"
id_field = "id"
phone_fields = ["phone"]
page_size = 4
initial = "{start}"
settle_seconds = 0
[[rules]]
source = "app_db"
trigger = "updated"
filter = "plan == 'pro'"
template = "Thanks for going pro, {{{{ first_name }}}}"
"#,
        start = rfc(ago(60))
    );
    let poller = poller_on(&db.pool, &config).await;
    let report = run(&poller, "app_db").await;
    assert_eq!((report.records_seen, report.jobs_created), (10, 5));
    assert_eq!(
        sends(&db.pool).await[0],
        (
            "+5511910000002".into(),
            "Thanks for going pro, Name2".into()
        )
    );
    // An update is a new version: one more job for it, none for the others.
    sqlx::query(
        "UPDATE public.customers SET updated_at = now() - interval '1 minute' WHERE id = 4",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    assert_eq!(run(&poller, "app_db").await.jobs_created, 1);
}

#[tokio::test]
async fn opt_outs_quiet_hours_and_the_frequency_cap_are_honoured() {
    let hubspot = HubSpot::start(TOKEN).await;
    hubspot.put_contact(
        1,
        json!({"firstname": "Opted", "phone": "+14155550801"}),
        ago(20),
        ago(20),
    );
    hubspot.put_contact(2, json!({"firstname": "Consent", "phone": "+14155550802", "hs_whatsapp_consent_status": "OPT_OUT"}), ago(20), ago(20));
    hubspot.put_contact(
        3,
        json!({"firstname": "Ok", "phone": "+14155550803"}),
        ago(20),
        ago(20),
    );
    // Quiet hours that always include now (a window of 23 h 58 min ending 1 minute from now).
    let now = Utc::now();
    let end = now + chrono::Duration::minutes(1);
    let start = end + chrono::Duration::minutes(2);
    let config = format!(
        r#"
[workspaces.default]
token = "tl-token"
[policies]
quiet_hours = {{ start = "{qs}", end = "{qe}", timezone = "UTC" }}
frequency_cap = {{ max = 1, hours = 24 }}
[sources.hubspot_main]
preset = "hubspot.contacts"
base_url = "{url}"
token = "{TOKEN}"
initial = "{initial}"
settle_seconds = 0
opted_out_if = "hs_whatsapp_consent_status == 'OPT_OUT'"
properties = ["hs_whatsapp_consent_status"]
[[rules]]
name = "welcome"
source = "hubspot_main"
trigger = "created"
template = "Welcome {{{{ firstname }}}}"
[[rules]]
name = "second-message"
source = "hubspot_main"
trigger = "updated"
template = "Another message"
[[rules]]
name = "label"
source = "hubspot_main"
trigger = "created"
action = "add_labels"
payload = {{ labels = ["new"] }}
"#,
        url = hubspot.url,
        initial = rfc(ago(60)),
        qs = start.format("%H:%M"),
        qe = end.format("%H:%M"),
    );
    let (db, poller) = poller(&config).await;
    sqlx::query("INSERT INTO timelines.opt_outs (phone, reason) VALUES ('+14155550801', 'asked')")
        .execute(&db.pool)
        .await
        .unwrap();
    let report = run(&poller, "hubspot_main").await;
    // Contact 3 gets the welcome and its label; the second message is over the cap; contacts 1
    // (opt_outs table) and 2 (consent field) get nothing.
    let jobs: Vec<(String, String, DateTime<Utc>)> =
        sqlx::query_as("SELECT kind, payload->>'phone', run_at FROM timelines.jobs ORDER BY kind")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        jobs.iter()
            .map(|(k, p, _)| (k.as_str(), p.as_str()))
            .collect::<Vec<_>>(),
        vec![
            ("add_labels", "+14155550803"),
            ("send_message", "+14155550803")
        ]
    );
    assert_eq!(report.skipped.get("opted_out"), Some(&6));
    assert_eq!(report.skipped.get("frequency_cap"), Some(&1));
    // The message waits for the end of the quiet hours; the label (not a message) does not.
    let send_at = jobs.iter().find(|j| j.0 == "send_message").unwrap().2;
    let label_at = jobs.iter().find(|j| j.0 == "add_labels").unwrap().2;
    assert!(
        send_at > now && (send_at - end).num_seconds().abs() <= 60,
        "{send_at} vs {end}"
    );
    assert!(label_at <= Utc::now());
    let outcomes: Vec<(String, i64)> =
        sqlx::query_as("SELECT outcome, count(*) FROM timelines.rule_events GROUP BY 1 ORDER BY 1")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        outcomes,
        vec![
            ("capped".into(), 1),
            ("enqueued".into(), 2),
            ("opted_out".into(), 6)
        ]
    );
}

#[tokio::test]
async fn a_template_naming_a_missing_field_skips_that_record_with_the_reason() {
    let hubspot = HubSpot::start(TOKEN).await;
    hubspot.put_contact(1, json!({"phone": "+14155550901"}), ago(20), ago(20));
    hubspot.put_contact(
        2,
        json!({"firstname": "Named", "phone": "+14155550902"}),
        ago(20),
        ago(20),
    );
    let (db, poller) = poller(&hubspot_contacts_config(&hubspot.url, ago(60), "")).await;
    let report = run(&poller, "hubspot_main").await;
    assert_eq!(report.jobs_created, 1);
    assert_eq!(report.skipped.get("template_error"), Some(&1));
    let detail: String = sqlx::query_scalar(
        "SELECT detail FROM timelines.source_skips WHERE reason = 'template_error'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(
        detail.contains("record 1") && detail.contains("undefined"),
        "{detail}"
    );
}

#[test]
fn config_mistakes_stop_start_up_with_the_key() {
    let check = |toml: &str| match Settings::parse(toml, std::path::Path::new("t.toml")) {
        Ok(settings) => settings.validate(&ProcessEnv).unwrap_err().to_string(),
        Err(error) => error.to_string(),
    };
    let source = "[sources.s]\npreset = \"hubspot.contacts\"\ntoken = \"t\"\n";
    assert!(check("[sources.s]\npreset = \"hubspot.people\"").contains("sources.s.preset"));
    assert!(check(&format!("{source}schedule = \"every minute\"")).contains("sources.s.schedule"));
    assert!(
        check(&format!(
            "{source}[[rules]]\nsource = \"s\"\ntrigger = \"created\"\ntemplate = \"Hi {{{{ x\""
        ))
        .contains("rules[0].template")
    );
    assert!(
        check(&format!(
            "{source}[[rules]]\nsource = \"nope\"\ntrigger = \"created\"\ntemplate = \"x\""
        ))
        .contains("rules[0].source")
    );
    assert!(check(&format!("{source}[[rules]]\nsource = \"s\"\ntrigger = \"field_equals\"\nfield = \"a\"\ntemplate = \"x\"")).contains("rules[0].value"));
    assert!(
        check(&format!("{source}default_region = \"XX\"")).contains("sources.s.default_region")
    );
    assert!(check(&format!("{source}[policies]\nquiet_hours = {{ start = \"25:00\", end = \"08:00\" }}\n[[rules]]\nsource = \"s\"\ntrigger = \"created\"\ntemplate = \"x\"")).contains("policies.quiet_hours.start"));
    let error = check(&format!("{source}bogus = 1"));
    assert!(error.contains("bogus"), "{error}");
    // The token never shows in an error.
    assert!(
        !check(
            "[sources.s]\npreset = \"hubspot.contacts\"\ntoken = \"sekrit-token\"\nschedule = \"x\""
        )
        .contains("sekrit")
    );
}

#[tokio::test]
async fn a_crash_between_fetching_a_page_and_committing_it_repeats_the_page_once() {
    let hubspot = HubSpot::start(TOKEN).await;
    for id in 1..=6u64 {
        let t = ago(40 - id as i64);
        hubspot.put_contact(
            id,
            json!({"firstname": "P", "phone": format!("+1415555{:04}", 950 + id)}),
            t,
            t,
        );
    }
    let config = hubspot_contacts_config(&hubspot.url, ago(60), "page_size = 2");
    let (db, poller) = poller(&config).await;
    // The commit of the page holding record 4 fails after its jobs were inserted: the whole
    // page's transaction (jobs, events, contacts, cursor) is rolled back, as after a crash.
    sqlx::raw_sql(
        "CREATE FUNCTION public.crash() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.external_id = '4' THEN RAISE EXCEPTION 'simulated crash'; END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER crash BEFORE INSERT ON timelines.rule_events
             FOR EACH ROW EXECUTE FUNCTION public.crash();",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let error = poller
        .run("hubspot_main", Mode::Manual, false)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("simulated crash"), "{error}");
    // The pages are written together (up to 1,000 records per transaction): the failure
    // rolled back the whole batch, jobs, events, contacts and cursor alike.
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM timelines.jobs").await,
        0
    );
    let cursor: DateTime<Utc> =
        sqlx::query_scalar("SELECT cursor_value FROM timelines.source_state")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(
        cursor < ago(36),
        "the cursor stayed at the last committed page"
    );

    sqlx::raw_sql("DROP TRIGGER crash ON timelines.rule_events")
        .execute(&db.pool)
        .await
        .unwrap();
    let report = run(&poller, "hubspot_main").await;
    assert_eq!(report.jobs_created, 6);
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(DISTINCT payload->>'phone') FROM timelines.jobs"
        )
        .await,
        6
    );
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM timelines.jobs").await,
        6
    );
}

#[tokio::test]
async fn two_instances_on_one_schedule_run_each_tick_once_and_never_overlap() {
    let hubspot = HubSpot::start(TOKEN).await;
    hubspot.put_contact(
        1,
        json!({"firstname": "A", "phone": "+14155551001"}),
        ago(20),
        ago(20),
    );
    // Every second (6 fields, seconds first).
    let config = hubspot_contacts_config(&hubspot.url, ago(60), "schedule = \"* * * * * *\"");
    let (db, first) = poller(&config).await;
    let second = poller_on(&db.pool, &config).await;
    let shutdown = timelines_sync::shutdown::Shutdown::new();
    let a = tokio::spawn(timelines_sync::sources::scheduler::run(
        Arc::new(first),
        shutdown.clone(),
    ));
    let b = tokio::spawn(timelines_sync::sources::scheduler::run(
        Arc::new(second),
        shutdown.clone(),
    ));
    // Wait for a few ticks' worth of runs.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while count(
        &db.pool,
        "SELECT count(*) FROM timelines.source_runs WHERE status = 'succeeded'",
    )
    .await
        < 3
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the schedule did not run"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.begin();
    a.await.unwrap();
    b.await.unwrap();

    let runs: Vec<(String, DateTime<Utc>, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT mode, started_at, finished_at FROM timelines.source_runs ORDER BY started_at",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(runs.iter().all(|r| r.0 == "scheduled"));
    for pair in runs.windows(2) {
        if let Some(finished) = pair[0].2 {
            assert!(pair[1].1 >= finished, "runs overlapped: {pair:?}");
        }
    }
    // Two instances, the same ticks: each tick ran once.
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(DISTINCT tick) FROM timelines.source_runs"
        )
        .await,
        runs.len() as i64
    );
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM timelines.jobs").await,
        1
    );
    let status = timelines_sync::status::report(&db.pool)
        .await
        .unwrap()
        .render();
    assert!(
        status.contains("hubspot_main") && status.contains("succeeded"),
        "{status}"
    );
}

#[tokio::test]
async fn a_rule_whose_payload_the_kind_refuses_records_each_job_as_refused() {
    let hubspot = HubSpot::start(TOKEN).await;
    hubspot.put_contact(
        1,
        json!({"firstname": "A", "phone": "+14155551101"}),
        ago(20),
        ago(20),
    );
    // add_labels wants a list of labels; a template gives a string. The per-run shape check
    // fails, so every row is checked by the table and refused with its reason.
    let config = hubspot_contacts_config(&hubspot.url, ago(60), "").replace(
        "action = \"send_message\"\ntemplate = \"Hi {{ firstname }}, welcome!\"",
        "action = \"add_labels\"\npayload = { labels = \"{{ firstname }}\" }",
    );
    assert!(config.contains("add_labels"));
    let (db, poller) = poller(&config).await;
    let report = run(&poller, "hubspot_main").await;
    assert_eq!(report.jobs_created, 0);
    assert_eq!(report.skipped.get("job_refused"), Some(&1));
    let detail: String = sqlx::query_scalar(
        "SELECT detail FROM timelines.source_skips WHERE reason = 'job_refused'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(detail.contains("labels"), "{detail}");
}
