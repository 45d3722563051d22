//! `/metrics`: every name the README documents, with the figures of jobs that went through the
//! simulator; the database's gauges equal to SQL; a scrape with the database gone.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use prometheus_parse::{Sample, Scrape, Value};
use sqlx::PgPool;
use timelines_sync::simulator::{Faults, SimulatorConfig};

use super::{Service, enqueue, serve_http, simulator};
use crate::helpers::{test_db, wait_for_job};

/// A workspace only this test uses: the process-wide counters labelled with it are this test's.
const WS: &str = "ops_metrics";
const TOKEN: &str = "ops-metrics-token-5b0e91";

async fn fetch(addr: SocketAddr) -> (String, Scrape) {
    let response = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    let parsed = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    (text, parsed)
}

/// The samples of `name` whose labels include every pair of `labels`.
fn series<'a>(scrape: &'a Scrape, name: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .collect()
}

/// The sum of the matching series (a histogram counts its observations).
fn total(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    series(scrape, name, labels)
        .iter()
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(buckets) => buckets.iter().map(|b| b.count).fold(0.0, f64::max),
            Value::Summary(_) => panic!("{name} is a summary"),
        })
        .sum()
}

/// The metric names of the README's tables (rows starting with "| `timelines_sync_").
fn documented_names() -> Vec<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let names: Vec<String> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `timelines_sync_"))
        .map(|rest| format!("timelines_sync_{}", &rest[..rest.find('`').unwrap()]))
        .collect();
    assert!(
        names.len() >= 15,
        "the README documents the metrics: {names:?}"
    );
    names
}

async fn sql_f64(pool: &PgPool, sql: &'static str) -> f64 {
    sqlx::query_scalar::<_, f64>(sql)
        .bind(WS)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Jobs through the simulator: sends (some throttled first), a 404, a 5xx, a dropped send.
async fn run_jobs(pool: &PgPool) {
    // Three requests per second: the first burst of sends meets 429s.
    let sim = simulator(
        TOKEN,
        SimulatorConfig {
            rate_limit: 3,
            rate_window: std::time::Duration::from_secs(1),
            ..SimulatorConfig::default()
        },
    )
    .await;
    let service = Service::start(pool, &sim, TOKEN, WS).await;
    let mut sends = Vec::new();
    for i in 0..6 {
        let payload = format!(r#"{{"phone": "+1415555010{i}", "text": "hi {i}"}}"#);
        sends.push(enqueue(pool, WS, "send_message", &payload).await);
    }
    let missing = enqueue(pool, WS, "refresh_message", r#"{"message_uid": "nope"}"#).await;
    for id in sends {
        wait_for_job(pool, id, "succeeded").await;
    }
    wait_for_job(pool, missing, "failed").await;
    // The quota reading enqueued at start-up gives the messaging credits' limit.
    let reading: i64 = sqlx::query_scalar(
        "SELECT id FROM timelines.jobs WHERE workspace = $1 AND kind = 'refresh_quota'",
    )
    .bind(WS)
    .fetch_one(pool)
    .await
    .unwrap();
    wait_for_job(pool, reading, "succeeded").await;

    sim.set_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    });
    let server_error = enqueue(pool, WS, "sync_teammates", "{}").await;
    wait_for_job(pool, server_error, "retrying").await;
    sim.set_faults(Faults {
        drop_after_side_effect_rate: 1.0,
        ..Faults::default()
    });
    let dropped = enqueue(
        pool,
        WS,
        "send_message",
        r#"{"phone": "+14155550199", "text": "x"}"#,
    )
    .await;
    wait_for_job(pool, dropped, "retrying").await;
    sim.set_faults(Faults::default());
    service.stop().await;
}

#[tokio::test]
async fn metrics_expose_every_documented_name_with_the_figures_of_jobs_run_through_the_simulator() {
    let db = test_db().await;
    run_jobs(&db.pool).await;
    add_poll_runs_and_webhook_events(&db.pool).await;
    let (addr, http) = serve_http(&db.pool).await;

    let (text, scrape) = fetch(addr).await;
    for name in documented_names() {
        assert!(
            scrape.samples.iter().any(|s| s.metric == name),
            "{name} is documented but not exposed:\n{text}"
        );
    }
    assert_eq!(
        total(&scrape, "timelines_sync_scrape_database_error", &[]),
        0.0
    );
    assert_process_metrics_match_the_request_log(&db.pool, &scrape).await;
    assert_database_gauges_match_sql(&db.pool, &scrape).await;

    // The database gone: the process's figures and the error gauge, still a 200.
    db.pool.close().await;
    let (text, scrape) = fetch(addr).await;
    assert_eq!(
        total(&scrape, "timelines_sync_scrape_database_error", &[]),
        1.0,
        "{text}"
    );
    assert!(
        total(
            &scrape,
            "timelines_sync_api_requests_total",
            &[("workspace", WS)]
        ) > 0.0
    );
    assert!(
        series(&scrape, "timelines_sync_jobs", &[]).is_empty(),
        "{text}"
    );
    http.begin();
}

/// The in-process counters against what the request log and the jobs table recorded.
async fn assert_process_metrics_match_the_request_log(pool: &PgPool, scrape: &Scrape) {
    let logged: Vec<(String, f64)> = sqlx::query_as(
        "SELECT CASE WHEN status IS NULL THEN 'transport_error'
                     ELSE (status / 100)::text || 'xx' END, count(*)::float8
           FROM timelines.api_requests WHERE workspace = $1 GROUP BY 1",
    )
    .bind(WS)
    .fetch_all(pool)
    .await
    .unwrap();
    let logged: BTreeMap<String, f64> = logged.into_iter().collect();
    for class in ["2xx", "4xx", "5xx", "transport_error"] {
        assert!(
            logged.get(class).is_some_and(|n| *n > 0.0),
            "no {class} in {logged:?}"
        );
    }
    for (class, n) in &logged {
        let exposed = total(
            scrape,
            "timelines_sync_api_requests_total",
            &[("workspace", WS), ("status_class", class)],
        );
        assert_eq!(exposed, *n, "{class}");
    }
    let sends = series(
        scrape,
        "timelines_sync_api_requests_total",
        &[("workspace", WS), ("endpoint", "POST /messages")],
    );
    assert!(!sends.is_empty(), "sends by endpoint");
    let lookups = [
        ("workspace", WS),
        ("endpoint", "GET /messages/:id"),
        ("status_class", "4xx"),
    ];
    assert_eq!(
        total(scrape, "timelines_sync_api_requests_total", &lookups),
        1.0,
        "ids replaced"
    );

    let throttled = sql_f64(
        pool,
        "SELECT count(*)::float8 FROM timelines.api_requests WHERE workspace = $1 AND status = 429",
    )
    .await;
    assert!(throttled > 0.0, "the simulator throttled the burst");
    assert_eq!(
        total(
            scrape,
            "timelines_sync_api_throttled_total",
            &[("workspace", WS)]
        ),
        throttled
    );
    // Every request that reached the network waited for its slot once.
    let requests = logged.values().sum::<f64>();
    assert_eq!(
        total(
            scrape,
            "timelines_sync_rate_limiter_wait_seconds",
            &[("workspace", WS)]
        ),
        requests
    );
    assert_eq!(
        total(
            scrape,
            "timelines_sync_rate_limiter_deferred_total",
            &[("workspace", WS)]
        ),
        0.0
    );

    let dispatch = |kind: &'static str, outcome: &'static str| {
        total(
            scrape,
            "timelines_sync_dispatch_duration_seconds",
            &[("workspace", WS), ("kind", kind), ("outcome", outcome)],
        )
    };
    let sent = sql_f64(
        pool,
        "SELECT count(*)::float8 FROM timelines.jobs
          WHERE workspace = $1 AND kind = 'send_message' AND state = 'succeeded'",
    )
    .await;
    assert!(sent >= 6.0);
    assert_eq!(dispatch("send_message", "done"), sent);
    assert!(
        dispatch("send_message", "snooze") > 0.0,
        "throttled sends step aside"
    );
    assert_eq!(
        dispatch("send_message", "uncertain"),
        1.0,
        "the dropped send"
    );
    assert_eq!(dispatch("refresh_message", "fail"), 1.0);
    assert!(dispatch("sync_teammates", "retry") >= 1.0);
}

/// Rows a poller and the webhook receiver would have written; one old run outside the window.
async fn add_poll_runs_and_webhook_events(pool: &PgPool) {
    sqlx::query(
        "INSERT INTO timelines.source_state (source, cursor_value, start_from, last_success_at)
         VALUES ('crm_a', now(), now(), '2026-01-02T03:04:05Z')",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO timelines.source_runs (source, mode, instance, status, started_at, records_seen, jobs_created)
         VALUES ('crm_a', 'scheduled', 'i', 'succeeded', now() - interval '1 hour', 10, 3),
                ('crm_a', 'scheduled', 'i', 'succeeded', now() - interval '2 hours', 5, 1),
                ('crm_a', 'scheduled', 'i', 'failed', now() - interval '3 hours', 2, 0),
                ('crm_a', 'scheduled', 'i', 'succeeded', now() - interval '2 days', 100, 100)",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO timelines.webhook_events (workspace, event_type, payload, status)
         VALUES ('default', 'message:received:new', '{}', 'processed'),
                ('default', 'message:received:new', '{}', 'processed'),
                ('default', 'chat:new', '{}', 'pending'),
                ('default', NULL, NULL, 'malformed')",
    )
    .execute(pool)
    .await
    .unwrap();
}

/// The gauges read at scrape time against the same figures read by SQL.
async fn assert_database_gauges_match_sql(pool: &PgPool, scrape: &Scrape) {
    let jobs: Vec<(String, String, String, f64)> = sqlx::query_as(
        "SELECT workspace, kind, state, count(*)::float8 FROM timelines.jobs GROUP BY 1, 2, 3",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(series(scrape, "timelines_sync_jobs", &[]).len(), jobs.len());
    for (workspace, kind, state, n) in &jobs {
        let labels = [
            ("workspace", &**workspace),
            ("kind", &**kind),
            ("state", &**state),
        ];
        assert_eq!(
            total(scrape, "timelines_sync_jobs", &labels),
            *n,
            "{labels:?}"
        );
    }

    let used = sql_f64(
        pool,
        "SELECT api_calls_used::float8 FROM timelines.rate_limit_status WHERE workspace = $1",
    )
    .await;
    assert!(used > 0.0);
    let ws = [("workspace", WS)];
    assert_eq!(
        total(scrape, "timelines_sync_quota_api_calls_used", &ws),
        used
    );
    let left = sql_f64(
        pool,
        "SELECT api_calls_left::float8 FROM timelines.rate_limit_status WHERE workspace = $1",
    )
    .await;
    assert_eq!(
        total(scrape, "timelines_sync_quota_api_calls_left", &ws),
        left
    );
    let credits = sql_f64(
        pool,
        "SELECT messages_used::float8 FROM timelines.rate_limit_status WHERE workspace = $1",
    )
    .await;
    // (Not exactly one per send: the quota reading takes over the API's own count, which may
    // not include a send still in flight.)
    assert!(credits > 0.0, "messages used credits");
    assert_eq!(
        total(scrape, "timelines_sync_quota_message_credits_used", &ws),
        credits
    );

    let crm = [("source", "crm_a")];
    let runs = |status| {
        total(
            scrape,
            "timelines_sync_poll_runs_24h",
            &[("source", "crm_a"), ("status", status)],
        )
    };
    assert_eq!((runs("succeeded"), runs("failed")), (2.0, 1.0));
    assert_eq!(total(scrape, "timelines_sync_poll_records_24h", &crm), 17.0);
    assert_eq!(
        total(scrape, "timelines_sync_poll_jobs_created_24h", &crm),
        4.0
    );
    assert_eq!(
        total(
            scrape,
            "timelines_sync_poll_last_success_timestamp_seconds",
            &crm
        ),
        1_767_323_045.0
    );

    let events = |event_type, status| {
        total(
            scrape,
            "timelines_sync_webhook_events_24h",
            &[("event_type", event_type), ("status", status)],
        )
    };
    assert_eq!(events("message:received:new", "processed"), 2.0);
    assert_eq!(events("none", "malformed"), 1.0);
    assert_eq!(
        total(scrape, "timelines_sync_webhook_events_pending", &[]),
        1.0
    );
}

#[tokio::test]
async fn webhook_event_types_the_reference_does_not_list_share_one_label_value() {
    let db = test_db().await;
    // Whoever holds the secret chooses `event_type`: a label of each would grow without bound.
    sqlx::query(
        "INSERT INTO timelines.webhook_events (workspace, event_type, payload, status)
         SELECT 'default', 'made-up:' || n || repeat('x', 200), '{}'::jsonb, 'unknown'
           FROM generate_series(1, 50) n
         UNION ALL SELECT 'default', 'chat:new', '{}'::jsonb, 'processed'",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let (addr, shutdown) = serve_http(&db.pool).await;
    let (text, scrape) = fetch(addr).await;
    shutdown.begin();
    let events = series(&scrape, "timelines_sync_webhook_events_24h", &[]);
    assert_eq!(events.len(), 2, "{text}");
    let count = |event_type, status| {
        total(
            &scrape,
            "timelines_sync_webhook_events_24h",
            &[("event_type", event_type), ("status", status)],
        )
    };
    assert_eq!(count("other", "unknown"), 50.0);
    assert_eq!(count("chat:new", "processed"), 1.0);
    assert!(!text.contains("made-up"), "{text}");
}
