//! Logs: the format chosen for a terminal or a pipe, the JSON lines' shape, the spans of a
//! dispatch and a poll, and no secret in any line even at trace level.

use std::sync::{Arc, Mutex};

use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};
use timelines_sync::config::{LogFormat, ProcessEnv, Settings};
use timelines_sync::sources::Catalog;
use timelines_sync::sources::engine::{Mode, Poller};
use timelines_sync::telemetry::{self, Written};
use tracing_subscriber::EnvFilter;

use super::{Service, enqueue, simulator};
use crate::cli::{binary, output, write_config};
use crate::fakes::hubspot::HubSpot;
use crate::helpers::{test_db, wait_for_job};

const WS: &str = "ops_logs";
const API_TOKEN: &str = "ops-logs-api-token-61f0c2";
const HUBSPOT_TOKEN: &str = "pat-ops-logs-hubspot-93d1";
const WEBHOOK_SECRET: &str = "wh-ops-logs-2c7e91d0a4-never-logged";

#[test]
fn the_log_format_is_text_on_a_terminal_and_json_otherwise_unless_configured() {
    assert_eq!(Settings::default().log.format, LogFormat::Auto);
    assert_eq!(
        telemetry::resolve(LogFormat::Auto, true),
        Written::Text { ansi: true }
    );
    assert_eq!(telemetry::resolve(LogFormat::Auto, false), Written::Json);
    assert_eq!(
        telemetry::resolve(LogFormat::Text, false),
        Written::Text { ansi: false }
    );
    assert_eq!(telemetry::resolve(LogFormat::Json, true), Written::Json);
    let parsed = Settings::parse("[log]\nformat = \"auto\"\n", "t.toml".as_ref()).unwrap();
    assert_eq!(parsed.log.format, LogFormat::Auto);
}

#[tokio::test]
async fn piped_stderr_gets_json_lines_and_log_format_text_gets_plain_lines() {
    let db = test_db().await;
    let migrate = |format: Option<&str>| {
        let mut cmd = binary();
        cmd.env("DATABASE_URL", &db.url).env("RUST_LOG", "debug");
        if let Some(format) = format {
            cmd.args(["--log-format", format]);
        }
        let (out, _, stderr) = output(cmd.arg("migrate"));
        assert!(out.status.success(), "{stderr}");
        assert!(stderr.lines().count() > 3, "debug logging was on: {stderr}");
        stderr
    };

    // stderr is a pipe here: `auto` writes JSON.
    let json = migrate(None);
    let lines: Vec<Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for line in &lines {
        for field in ["timestamp", "level", "target"] {
            assert!(line[field].is_string(), "{field} in {line}");
        }
    }
    let text = migrate(Some("text"));
    for line in text.lines() {
        assert!(!line.starts_with('{'), "{line}");
        assert!(
            !line.contains('\u{1b}'),
            "no colour codes into a pipe: {line:?}"
        );
    }
    assert!(text.contains(" DEBUG "), "{text}");
}

/// A `MakeWriter` the test can read back.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buffer {
    type Writer = Buffer;
    fn make_writer(&'a self) -> Buffer {
        self.clone()
    }
}

impl Buffer {
    fn lines(&self) -> Vec<Value> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }
}

fn hubspot_config(url: &str) -> String {
    let start =
        (Utc::now() - chrono::Duration::hours(1)).to_rfc3339_opts(SecondsFormat::Secs, true);
    format!(
        r#"
[sources.hubspot_main]
preset = "hubspot.contacts"
base_url = "{url}"
token = "{HUBSPOT_TOKEN}"
initial = "{start}"
settle_seconds = 0
default_region = "US"

[[rules]]
name = "welcome"
source = "hubspot_main"
trigger = "created"
action = "send_message"
template = "Hi {{{{ firstname }}}}"
workspace = "default"
"#
    )
}

/// A poll of a fake HubSpot account through the real poller.
async fn poll_hubspot(pool: &sqlx::PgPool) -> u64 {
    let hubspot = HubSpot::start(HUBSPOT_TOKEN).await;
    let ago = |m| Utc::now() - chrono::Duration::minutes(m);
    hubspot.put_contact(
        1,
        json!({"firstname": "Ana", "phone": "+14155550123"}),
        ago(10),
        ago(10),
    );
    let settings = Settings::parse(&hubspot_config(&hubspot.url), "t.toml".as_ref()).unwrap();
    let catalog = Catalog::build(&settings, &ProcessEnv).unwrap();
    let poller = Poller::new(pool.clone(), Arc::new(catalog), "ops-logs");
    let report = poller
        .run("hubspot_main", Mode::Manual, false)
        .await
        .unwrap();
    report.jobs_created
}

/// The service's own JSON subscriber at trace level, for this thread (a current-thread runtime
/// runs every task of the test here).
#[tokio::test]
async fn spans_carry_job_and_source_and_no_secret_reaches_a_line_even_at_trace_level() {
    let buffer = Buffer::default();
    let subscriber = telemetry::subscriber(Written::Json, EnvFilter::new("trace"), buffer.clone());
    let _guard = tracing::subscriber::set_default(subscriber);

    let db = test_db().await;
    let sim = simulator(API_TOKEN, Default::default()).await;
    let service = Service::start(&db.pool, &sim, API_TOKEN, WS).await;
    let id = enqueue(
        &db.pool,
        WS,
        "send_message",
        r#"{"phone": "+14155550123", "text": "hi"}"#,
    )
    .await;
    wait_for_job(&db.pool, id, "succeeded").await;
    service.stop().await;
    assert_eq!(poll_hubspot(&db.pool).await, 1);
    tracing::info!(leak = API_TOKEN, "a careless line");

    let lines = buffer.lines();
    assert!(lines.len() > 20, "trace logging was on: {lines:#?}");
    let span = |name: &'static str| {
        move |line: &&Value| -> Option<Value> {
            line["spans"]
                .as_array()?
                .iter()
                .find(|s| s["name"] == name)
                .cloned()
        }
    };
    let jobs: Vec<Value> = lines.iter().filter_map(|l| span("job")(&l)).collect();
    let job = jobs
        .iter()
        .find(|s| s["job_id"] == id)
        .expect("lines inside the job's span");
    assert_eq!(job["kind"], "send_message");
    assert_eq!(job["workspace"], WS);
    assert_eq!(job["attempt"], 1);
    let poll = lines
        .iter()
        .find_map(|l| span("poll")(&l))
        .expect("lines inside the poll's span");
    assert_eq!(poll["source"], "hubspot_main");
    // Message and fields at the top level; a secret printed by mistake is caught by the writer.
    let careless = lines
        .iter()
        .find(|l| l["message"] == "a careless line")
        .unwrap();
    assert_eq!(careless["leak"], "[redacted]");

    let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    let password = reqwest::Url::parse(&db.url)
        .unwrap()
        .password()
        .unwrap()
        .to_owned();
    for secret in [API_TOKEN, HUBSPOT_TOKEN, password.as_str()] {
        assert!(!text.contains(secret), "{secret} reached the log");
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits (30 s at most) until the service's listener answers `/healthz`.
async fn wait_for_listener(base: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while reqwest::get(format!("{base}/healthz")).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the listener never came up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The binary at trace level with stderr piped: JSON lines, the job's span, a webhook received
/// and a scrape, and none of the API token, the webhook secret or the database password.
#[tokio::test]
async fn the_service_at_trace_level_logs_json_with_job_spans_and_no_secret() {
    let sim = simulator(API_TOKEN, Default::default()).await;
    let db = test_db().await;
    let (_dir, config) = write_config(&format!("[webhooks]\nsecret = \"{WEBHOOK_SECRET}\"\n"));
    let base = format!("http://127.0.0.1:{}", free_port());
    let child = binary()
        .env("DATABASE_URL", &db.url)
        .env("TIMELINES_API_URL", sim.base_url())
        .env("TIMELINES_API_TOKEN", API_TOKEN)
        .env(
            "TIMELINES_SYNC_HTTP_LISTEN",
            base.trim_start_matches("http://"),
        )
        .env("RUST_LOG", "trace")
        .arg("--config")
        .arg(&config)
        .arg("run")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let sent = enqueue(
        &db.pool,
        "default",
        "send_message",
        r#"{"phone": "+14155550123", "text": "hi"}"#,
    )
    .await;
    let missing = enqueue(
        &db.pool,
        "default",
        "refresh_message",
        r#"{"message_uid": "nope"}"#,
    )
    .await;
    wait_for_job(&db.pool, sent, "succeeded").await;
    wait_for_job(&db.pool, missing, "failed").await;
    wait_for_listener(&base).await;
    let client = reqwest::Client::new();
    let hook = client
        .post(format!(
            "{base}/webhooks/timelines/{WEBHOOK_SECRET}?workspace=default"
        ))
        .json(&json!({"event_type": "chat:new", "chat": {"id": 1000001}}))
        .send()
        .await
        .unwrap();
    assert_eq!(hook.status(), 200);
    let scrape = client.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(scrape.status(), 200);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);

    let lines: Vec<Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() > 20, "trace logging was on: {stderr}");
    let in_job = |l: &&Value| {
        l["spans"].as_array().is_some_and(|spans| {
            spans.iter().any(|s| {
                s["name"] == "job"
                    && s["job_id"] == sent
                    && s["kind"] == "send_message"
                    && s["workspace"] == "default"
            })
        })
    };
    assert!(
        lines.iter().any(|l| in_job(&l)),
        "no line in the job's span"
    );
    let password = reqwest::Url::parse(&db.url)
        .unwrap()
        .password()
        .unwrap()
        .to_owned();
    for secret in [API_TOKEN, WEBHOOK_SECRET, password.as_str()] {
        assert!(!stderr.contains(secret), "{secret} reached the log");
    }
    assert_eq!(sim.stats().messages_sent, 1, "the real token was used");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM timelines.webhook_events")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(stored, 1, "the webhook went through");
}
