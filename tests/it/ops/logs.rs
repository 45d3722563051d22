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
use crate::cli::{binary, output};
use crate::fakes::hubspot::HubSpot;
use crate::helpers::{test_db, wait_for_job};

const WS: &str = "ops_logs";
const API_TOKEN: &str = "ops-logs-api-token-61f0c2";
const HUBSPOT_TOKEN: &str = "pat-ops-logs-hubspot-93d1";

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
