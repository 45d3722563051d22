//! Pitfalls of incremental polling found in review, each reproduced: retries, paging flags, duplicate
//! ids, NUL bytes, rules added later, missing phones, run limits, dry runs, redirects, backfills,
//! opt-outs and offsets shifting under an update.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgPool;
use timelines_sync::sources::engine::Mode;

use crate::fakes::generic::GenericApi;
use crate::helpers::test_db;
use crate::sources::{ago, count, generic_config as generic, poller_on, rfc, run};

/// F1: a server that keeps answering 503 with `Retry-After: 0` is retried far beyond
/// `max_retries` (forever while it keeps answering so), with no pause between tries.
#[tokio::test]
async fn retry_after_never_adds_retries_beyond_max_retries() {
    let api = GenericApi::start("key-123").await;
    api.put(json!({"id": 1, "name": "A", "phone": "+1 212 555 0701", "updated_at": rfc(ago(30))}));
    api.fail_next(503, Some("0"), 40);
    let db = test_db().await;
    let config = generic(
        &api.url,
        "/records",
        r#"{ updated_since = "{{ cursor.lower }}", cursor = "{{ page.token | default('') }}", limit = "{{ page.size }}" }"#,
        "data",
        r#"{ type = "token", token_path = "next_cursor" }"#,
        "max_retries = 2\npage_size = 10",
    );
    let poller = poller_on(&db.pool, &config).await;
    let result = poller.run("internal", Mode::Manual, false).await;
    let requests = api.requests().len();
    assert!(
        result.is_err() && requests <= 3,
        "max_retries = 2 but {requests} requests were made (result ok: {})",
        result.is_ok()
    );
}

/// F2: offset paging stops at the first page shorter than `page_size`, even though the API
/// says `has_more = true`; the cursor then moves past everything not read.
#[tokio::test]
async fn a_short_page_with_has_more_keeps_paging() {
    let api = GenericApi::start("key-123").await;
    for id in 1..=120u64 {
        api.put(json!({"id": id, "name": format!("N{id}"), "phone": format!("+1 212 555 {:04}", 1000 + id),
                        "updated_at": rfc(ago(50) + chrono::Duration::seconds(id as i64))}));
    }
    let db = test_db().await;
    // The API returns at most its default of 50 per page (the limit parameter is not mapped).
    let config = generic(
        &api.url,
        "/offset",
        r#"{ updated_since = "{{ cursor.lower }}", offset = "{{ page.offset }}" }"#,
        "items",
        r#"{ type = "offset", more_path = "has_more" }"#,
        "page_size = 100",
    );
    let poller = poller_on(&db.pool, &config).await;
    run(&poller, "internal").await;
    run(&poller, "internal").await;
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM timelines.jobs").await,
        120
    );
}

/// F3: a SQL source whose query returns one id twice with different times in one page
/// (e.g. orders joined to customers) fails the page on every run, forever.
#[tokio::test]
async fn the_same_id_twice_in_a_page_is_read_once() {
    let db = test_db().await;
    sqlx::raw_sql(
        "CREATE TABLE public.orders (order_id int PRIMARY KEY, customer_id int, phone text, placed_at timestamptz);
         INSERT INTO public.orders VALUES
           (1, 7, '+14155550107', now() - interval '20 minutes'),
           (2, 7, '+14155550107', now() - interval '19 minutes'),
           (3, 8, '+14155550108', now() - interval '18 minutes');",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let config = format!(
        r#"
[workspaces.default]
token = "tl-token"
[sources.orders]
sql = "SELECT customer_id AS id, phone, placed_at FROM public.orders WHERE placed_at >= $1 AND placed_at < $2"
cursor_field = "placed_at"
id_field = "id"
phone_fields = ["phone"]
initial = "{start}"
settle_seconds = 0
[[rules]]
source = "orders"
trigger = "updated"
template = "Thanks for your order"
"#,
        start = rfc(ago(60))
    );
    let poller = poller_on(&db.pool, &config).await;
    let result = poller.run("orders", Mode::Manual, false).await;
    assert!(result.is_ok(), "{:?}", result.err().map(|e| e.to_string()));
}

/// F4: one record with a NUL character in any field fails its page on every run.
#[tokio::test]
async fn a_nul_character_in_a_field_does_not_stop_the_source() {
    let api = GenericApi::start("key-123").await;
    api.put(
        json!({"id": 1, "name": "A\u{0}B", "phone": "+1 212 555 0701", "updated_at": rfc(ago(30))}),
    );
    api.put(json!({"id": 2, "name": "C", "phone": "+1 212 555 0702", "updated_at": rfc(ago(29))}));
    let db = test_db().await;
    let config = generic(
        &api.url,
        "/records",
        r#"{ updated_since = "{{ cursor.lower }}", cursor = "{{ page.token | default('') }}", limit = "{{ page.size }}" }"#,
        "data",
        r#"{ type = "token", token_path = "next_cursor" }"#,
        "page_size = 10",
    );
    let poller = poller_on(&db.pool, &config).await;
    let result = poller.run("internal", Mode::Manual, false).await;
    assert!(result.is_ok(), "{:?}", result.err().map(|e| e.to_string()));
}

fn sql_config(start: DateTime<Utc>, extra_source: &str, rules: &str) -> String {
    format!(
        r#"
[workspaces.default]
token = "tl-token"
[sources.app_db]
sql = "SELECT id, first_name, phone, plan, updated_at FROM public.customers WHERE updated_at >= $1 AND updated_at < $2"
cursor_field = "updated_at"
id_field = "id"
phone_fields = ["phone"]
initial = "{start}"
settle_seconds = 0
{extra_source}
{rules}
"#,
        start = rfc(start)
    )
}

const UPDATED_RULE: &str = r#"
[[rules]]
name = "any_update"
source = "app_db"
trigger = "updated"
action = "add_note"
payload = { text = "updated" }
"#;

const TO_PRO_RULE: &str = r#"
[[rules]]
name = "to_pro"
source = "app_db"
trigger = "field_changed"
field = "plan"
value = "pro"
template = "Welcome to Pro, {{ first_name }}!"
"#;

async fn customers(pool: &PgPool) {
    sqlx::raw_sql(
        "CREATE TABLE public.customers (id int PRIMARY KEY, first_name text, phone text, plan text, updated_at timestamptz NOT NULL);
         INSERT INTO public.customers VALUES
           (1, 'Ann', '+14155550101', 'pro',  now() - interval '20 minutes'),
           (2, 'Bob', '+14155550102', 'free', now() - interval '19 minutes');",
    )
    .execute(pool)
    .await
    .unwrap();
}

/// F5: a field_changed rule added to a source that already has snapshot rows fires for every
/// record that already had the value, at its next (unrelated) update.
#[tokio::test]
async fn a_field_changed_rule_added_later_does_not_fire_for_unchanged_records() {
    let db = test_db().await;
    customers(&db.pool).await;
    let start = ago(60);
    let before = poller_on(&db.pool, &sql_config(start, "", UPDATED_RULE)).await;
    run(&before, "app_db").await;
    // A week later the user adds the "became pro" rule. Ann (pro all along) edits her name.
    let after = poller_on(
        &db.pool,
        &sql_config(start, "", &format!("{UPDATED_RULE}{TO_PRO_RULE}")),
    )
    .await;
    sqlx::query("UPDATE public.customers SET first_name = 'Anna', updated_at = now() - interval '1 minute' WHERE id = 1")
        .execute(&db.pool).await.unwrap();
    run(&after, "app_db").await;
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM timelines.rule_events WHERE rule = 'to_pro'"
        )
        .await,
        0,
        "Ann's plan did not change, yet she is welcomed to Pro"
    );
}

/// F6: a change seen while the record has no usable phone is absorbed into the snapshot, so
/// the event never fires once the phone is there.
#[tokio::test]
async fn a_change_seen_while_the_phone_is_missing_fires_once_it_is_there() {
    let db = test_db().await;
    customers(&db.pool).await;
    let poller = poller_on(&db.pool, &sql_config(ago(60), "", TO_PRO_RULE)).await;
    run(&poller, "app_db").await; // baseline: Bob is free
    sqlx::query("UPDATE public.customers SET plan = 'pro', phone = NULL, updated_at = now() - interval '5 minutes' WHERE id = 2")
        .execute(&db.pool).await.unwrap();
    run(&poller, "app_db").await; // skipped: missing_phone; snapshot now says pro
    sqlx::query("UPDATE public.customers SET phone = '+14155550102', updated_at = now() - interval '1 minute' WHERE id = 2")
        .execute(&db.pool).await.unwrap();
    run(&poller, "app_db").await;
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM timelines.jobs WHERE payload->>'phone' = '+14155550102'"
        )
        .await,
        1,
        "Bob became pro but was never welcomed"
    );
}

/// F7: with max_records_per_run smaller than the records inside the lookback, the cursor
/// stops moving for good.
#[tokio::test]
async fn max_records_per_run_makes_progress_past_the_lookback() {
    let db = test_db().await;
    sqlx::raw_sql(
        "CREATE TABLE public.customers (id int PRIMARY KEY, first_name text, phone text, plan text, updated_at timestamptz NOT NULL);
         INSERT INTO public.customers
         SELECT i, 'N' || i, '+1415555' || lpad((1000 + i)::text, 4, '0'), 'free', now() - interval '5 minutes' + i * interval '1 second'
           FROM generate_series(1, 30) i;",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let poller = poller_on(
        &db.pool,
        &sql_config(
            ago(60),
            "page_size = 5\nmax_records_per_run = 10",
            UPDATED_RULE,
        ),
    )
    .await;
    for _ in 0..8 {
        run(&poller, "app_db").await;
    }
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM timelines.jobs").await,
        30
    );
}

/// F8: a dry run kept one transaction open for its whole run, holding the row lock its
/// per-page checkpoint took on source_state: a real run of the same source waited for it. Now a
/// dry run keeps its cursor in memory and writes each batch in a short rolled-back transaction.
#[tokio::test]
async fn a_dry_run_does_not_block_a_real_run() {
    let api = GenericApi::start("key-123").await;
    for id in 1..=3u64 {
        api.put(json!({"id": id, "name": "N", "phone": format!("+1 212 555 {:04}", 700 + id), "updated_at": rfc(ago(30 - id as i64))}));
    }
    let db = test_db().await;
    let config = generic(
        &api.url,
        "/records",
        r#"{ updated_since = "{{ cursor.lower }}", cursor = "{{ page.token | default('') }}", limit = "{{ page.size }}" }"#,
        "data",
        r#"{ type = "token", token_path = "next_cursor" }"#,
        "page_size = 1",
    );
    let poller = Arc::new(poller_on(&db.pool, &config).await);
    // The source exists (one real run), then a dry run that pauses on its second page.
    run(&poller, "internal").await;
    for id in 4..=6u64 {
        api.put(json!({"id": id, "name": "N", "phone": format!("+1 212 555 {:04}", 700 + id), "updated_at": rfc(Utc::now() - chrono::Duration::milliseconds(900 - 100 * id as i64))}));
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // The dry run's first request is answered 503 with Retry-After 3: it pauses mid-run.
    api.fail_next(503, Some("3"), 1);
    let dry = {
        let p = poller.clone();
        tokio::spawn(async move { p.run("internal", Mode::Manual, true).await })
    };
    while !api.requests().iter().any(|r| r.status == 503) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = std::time::Instant::now();
    run(&poller, "internal").await;
    let waited = started.elapsed();
    dry.await.unwrap().unwrap();
    assert!(
        waited < Duration::from_secs(1),
        "the real run waited {waited:?} for the dry run"
    );
}

/// F9 (performance): every keyset page of a SQL source re-scans the window from its start.
#[tokio::test]
async fn header_credentials_never_follow_a_redirect_to_another_host() {
    let other = GenericApi::start("key-123").await; // "another host": a different origin
    let target = other.url.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let target = target.clone();
        async move {
            axum::response::Redirect::temporary(&format!(
                "{target}/records?{}",
                uri.query().unwrap_or("")
            ))
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let db = test_db().await;
    let config = generic(
        &api_url,
        "/records",
        r#"{ updated_since = "{{ cursor.lower }}", limit = "{{ page.size }}" }"#,
        "data",
        r#"{ type = "token", token_path = "next_cursor" }"#,
        "page_size = 10",
    );
    let poller = poller_on(&db.pool, &config).await;
    let _ = poller.run("internal", Mode::Manual, false).await;
    let leaked = other.requests().iter().any(|r| {
        r.headers
            .iter()
            .any(|(k, v)| k == "x-api-key" && v == "key-123")
    });
    assert!(!leaked, "the API key was sent to {}", other.url);
}

/// F11: `backfill --since` later than the cursor skips [cursor - lookback, since) for good.
#[tokio::test]
async fn a_backfill_starting_after_the_cursor_still_covers_the_gap() {
    let db = test_db().await;
    sqlx::raw_sql(
        "CREATE TABLE public.customers (id int PRIMARY KEY, first_name text, phone text, plan text, updated_at timestamptz NOT NULL);",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let poller = poller_on(
        &db.pool,
        &sql_config(ago(120), "lookback_seconds = 60", UPDATED_RULE),
    )
    .await;
    run(&poller, "app_db").await;
    // The source was failing for a while: its cursor is 40 minutes old.
    sqlx::query("UPDATE timelines.source_state SET cursor_value = now() - interval '40 minutes'")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::raw_sql(
        "INSERT INTO public.customers VALUES
           (1, 'A', '+14155550101', 'free', now() - interval '35 minutes'),
           (2, 'B', '+14155550102', 'free', now() - interval '10 minutes');",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    // The operator catches up "from 20 minutes ago".
    poller
        .run("app_db", Mode::Backfill { since: ago(20) }, false)
        .await
        .unwrap();
    run(&poller, "app_db").await;
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM timelines.jobs").await,
        2
    );
}

/// F12: an opt-out recorded after a job was queued (e.g. deferred by quiet hours or a delay)
/// does not stop that job: nothing cancels it and the dispatcher does not check.
#[tokio::test]
async fn an_opt_out_cancels_already_queued_messages() {
    let db = test_db().await;
    customers(&db.pool).await;
    let rule = r#"
[[rules]]
name = "hello"
source = "app_db"
trigger = "updated"
template = "Hi {{ first_name }}"
delay_seconds = 3600
"#;
    let poller = poller_on(
        &db.pool,
        &sql_config(ago(60), "opted_out_if = \"plan == 'stop'\"", rule),
    )
    .await;
    run(&poller, "app_db").await;
    // The contact opts out in the CRM, and the operator also records it in opt_outs.
    sqlx::raw_sql(
        "UPDATE public.customers SET plan = 'stop', updated_at = now() - interval '1 minute' WHERE id = 1;
         INSERT INTO timelines.opt_outs (phone, reason) VALUES ('+14155550101', 'STOP');",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    run(&poller, "app_db").await;
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM timelines.jobs WHERE payload->>'phone' = '+14155550101' AND state = 'queued'").await,
        0,
        "a message to an opted-out contact is still queued"
    );
}

/// F13: HubSpot's `after` is an offset: a record updated while a run pages leaves the
/// result set (its new time is past `upper`), every later record shifts down one place and
/// the one at the page boundary is never read; the cursor then moves past it.
#[tokio::test]
async fn an_update_while_paging_hubspot_skips_no_record() {
    use crate::fakes::hubspot::HubSpot;
    let hubspot = HubSpot::start("tok").await;
    for id in 1..=6u64 {
        let t = ago(40 - id as i64);
        hubspot.put_contact(
            id,
            json!({"firstname": "P", "phone": format!("+1415555{:04}", 950 + id)}),
            t,
            t,
        );
    }
    let config = format!(
        r#"
[workspaces.default]
token = "tl-token"
[sources.hubspot_main]
preset = "hubspot.contacts"
base_url = "{url}"
token = "tok"
initial = "{start}"
settle_seconds = 0
page_size = 2
default_region = "US"
[[rules]]
source = "hubspot_main"
trigger = "created"
template = "Hi {{{{ firstname }}}}"
"#,
        url = hubspot.url,
        start = rfc(ago(60))
    );
    let db = test_db().await;
    let poller = Arc::new(poller_on(&db.pool, &config).await);
    let task = {
        let p = poller.clone();
        tokio::spawn(async move { p.run("hubspot_main", Mode::Manual, false).await })
    };
    while hubspot.search_requests() < 1 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Contact 1 (already read on page 1) is edited in HubSpot while the run pages.
    hubspot.put_contact(
        1,
        json!({"firstname": "P", "phone": "+14155550951"}),
        ago(39),
        Utc::now(),
    );
    task.await.unwrap().unwrap();
    run(&poller, "hubspot_main").await;
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM timelines.jobs").await,
        6
    );
}
