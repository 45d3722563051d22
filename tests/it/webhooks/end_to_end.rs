//! The whole loop: the service sends through the simulator, the simulator posts its webhooks to
//! the receiver, the processor lands them in SQL; once in-process (`startup::run_on`) and once
//! with the binary at trace level, whose logs must not hold the secret.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;
use timelines_sync::config::ProcessEnv;
use timelines_sync::shutdown::Shutdown;
use timelines_sync::simulator::SimulatorConfig;
use timelines_sync::webhooks::subscriptions;

use super::subscriptions::{config_for, simulator};
use super::{SECRET, settings};
use crate::helpers::{test_db, wait_for_job};

const ANA: &str = "+14155550123";

/// Waits (30 s at most) until `sql` (with `$1` = `arg`) returns a row; returns it.
async fn wait_for_row(pool: &PgPool, sql: &'static str, arg: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let row: Option<Value> = sqlx::query_scalar(sql)
            .bind(arg)
            .fetch_optional(pool)
            .await
            .unwrap();
        if let Some(row) = row {
            return row;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {sql} ({arg})"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn enqueue(pool: &PgPool, kind: &str, payload: Value) -> i64 {
    sqlx::query_scalar("SELECT timelines.enqueue($1, $2)")
        .bind(kind)
        .bind(payload)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_sent_message_comes_back_by_webhook_and_its_status_lands_linked_to_the_job() {
    let sim = simulator(SimulatorConfig {
        status_step: Duration::from_millis(200),
        ..SimulatorConfig::default()
    })
    .await;
    let db = test_db().await;
    let listener = timelines_sync::http::bind(&timelines_sync::config::HttpSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        enabled: true,
    })
    .await
    .unwrap();
    let public = format!("http://{}", listener.local_addr().unwrap());
    let settings = settings(&config_for(
        &sim,
        &public,
        "poll_interval_ms = 50\n[dispatcher]\npoll_interval_ms = 50\n\
         [[rules]]\nname = \"missed-call\"\non = \"call:incoming:missed\"\naction = \"add_labels\"\n\
         payload = { labels = [\"missed-call\"] }\n",
    ));
    timelines_sync::db::sync_workspaces(&db.pool, &settings, &[])
        .await
        .unwrap();
    let shutdown = Shutdown::new();
    let router = timelines_sync::webhooks::router(db.pool.clone(), &settings, &ProcessEnv);
    tokio::spawn(timelines_sync::http::serve(
        listener,
        router,
        shutdown.clone(),
    ));
    let clients = subscriptions::clients(&settings, &db.pool).unwrap();
    subscriptions::sync(&settings, &ProcessEnv, &clients)
        .await
        .unwrap();
    let service = tokio::spawn({
        let (pool, settings, shutdown) = (db.pool.clone(), settings.clone(), shutdown.clone());
        async move {
            timelines_sync::startup::run_on(pool, &settings, SimulatorConfig::default(), shutdown)
                .await
        }
    });

    // A send: the simulator posts message:new and message:sent:new once it is Sent.
    let job = enqueue(
        &db.pool,
        "send_message",
        json!({"phone": ANA, "text": "Your order shipped"}),
    )
    .await;
    let done = wait_for_job(&db.pool, job, "succeeded").await;
    let uid = done["result"]["message_uid"].as_str().unwrap().to_owned();
    let message = wait_for_row(
        &db.pool,
        "SELECT to_jsonb(m) FROM timelines.messages m WHERE message_uid = $1 AND status = 'Sent'",
        &uid,
    )
    .await;
    assert_eq!(
        message["job_id"], job,
        "linked to the job that sent it: {message}"
    );
    assert_eq!(message["text"], "Your order shipped");
    let history: Vec<String> = sqlx::query_scalar(
        "SELECT status FROM timelines.message_status_history WHERE message_uid = $1",
    )
    .bind(&uid)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(history.contains(&"Sent".to_owned()), "{history:?}");

    // The contact answers STOP: opted out.
    sim.receive_message(ANA, "STOP").unwrap();
    let opt_out = wait_for_row(
        &db.pool,
        "SELECT to_jsonb(o) FROM timelines.opt_outs o WHERE phone = $1",
        ANA,
    )
    .await;
    assert_eq!(opt_out["source"], "webhook");

    // The account drops: its status lands.
    assert!(sim.account_event("whatsapp:account:disconnected"));
    wait_for_row(
        &db.pool,
        "SELECT to_jsonb(a) FROM timelines.whatsapp_accounts a WHERE status = $1",
        "Disconnected",
    )
    .await;

    // A missed call: the inbound rule labels the chat, through the dispatcher and the API.
    sim.call("+14155550199", "call:incoming:missed", 0).unwrap();
    let label_job = wait_for_row(
        &db.pool,
        "SELECT to_jsonb(j) FROM timelines.jobs j WHERE kind = 'add_labels' AND payload->>'phone' = $1",
        "+14155550199",
    )
    .await;
    wait_for_job(&db.pool, label_job["id"].as_i64().unwrap(), "succeeded").await;

    shutdown.begin();
    service.await.unwrap().unwrap();
    let events: Vec<(String, String)> =
        sqlx::query_as("SELECT event_type, status FROM timelines.webhook_events ORDER BY id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert!(events.iter().all(|(_, s)| s == "processed"), "{events:?}");
    for expected in [
        "chat:new",
        "message:new",
        "whatsapp:account:disconnected",
        "call:incoming:missed",
    ] {
        assert!(
            events.iter().any(|(t, _)| t == expected),
            "{expected} missing: {events:?}"
        );
    }
}

/// The binary with `args`, the environment of `cli.rs`'s tests.
fn binary(db_url: &str, config: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_timelines-sync"));
    for var in [
        "TIMELINES_SYNC_CONFIG",
        "TIMELINES_API_URL",
        "TIMELINES_API_TOKEN",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("DATABASE_URL", db_url)
        .env("RUST_LOG", "trace")
        .env("TIMELINES_SYNC_HTTP_LISTEN", "127.0.0.1:0")
        .arg("--config")
        .arg(config);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_secret_appears_in_no_log_line_output_or_table_even_at_trace_level() {
    let sim = simulator(SimulatorConfig {
        status_step: Duration::from_millis(200),
        ..SimulatorConfig::default()
    })
    .await;
    let db = test_db().await;
    let dir = tempfile::tempdir().unwrap();
    let run_config = dir.path().join("run.toml");
    std::fs::write(
        &run_config,
        config_for(&sim, "http://unused.example", "poll_interval_ms = 50\n"),
    )
    .unwrap();
    let mut service = binary(&db.url, &run_config)
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The service's stderr, line by line; the listener's address is in one of them.
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    let stderr = service.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut logged = Vec::new();
    let addr = loop {
        let line = lines_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the service starts");
        let found = line.contains("HTTP listener ready").then(|| {
            let at = line.find("127.0.0.1:").expect("an address");
            line[at..]
                .split(|c: char| c.is_whitespace() || c == '"')
                .next()
                .unwrap()
                .to_owned()
        });
        logged.push(line);
        if let Some(addr) = found {
            break addr;
        }
    };

    // `webhooks sync` and `list` (their own processes) point the simulator at the service.
    let sync_config = dir.path().join("sync.toml");
    std::fs::write(
        &sync_config,
        config_for(&sim, &format!("http://{addr}"), ""),
    )
    .unwrap();
    let mut printed = String::new();
    for action in ["sync", "list"] {
        // (Off the runtime: the simulator answering it runs on this test's runtime.)
        let mut cmd = binary(&db.url, &sync_config);
        cmd.args(["webhooks", action]);
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .unwrap()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        printed.push_str(&String::from_utf8_lossy(&out.stdout));
        printed.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    assert!(
        printed.contains("7 created") && printed.contains("(this service)"),
        "{printed}"
    );

    let job = enqueue(
        &db.pool,
        "send_message",
        json!({"phone": ANA, "text": "hi"}),
    )
    .await;
    let uid = wait_for_job(&db.pool, job, "succeeded").await["result"]["message_uid"]
        .as_str()
        .unwrap()
        .to_owned();
    let message = wait_for_row(
        &db.pool,
        "SELECT to_jsonb(m) FROM timelines.messages m WHERE message_uid = $1 AND status = 'Sent'",
        &uid,
    )
    .await;
    assert_eq!(message["job_id"], job);
    // A wrong secret and a malformed body on the way.
    let client = reqwest::Client::new();
    let wrong = client
        .post(format!("http://{addr}/webhooks/timelines/not-{SECRET}"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 404);
    let bad = client
        .post(format!("http://{addr}/webhooks/timelines/{SECRET}"))
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 200);

    // SAFETY: signalling our own child.
    unsafe { libc::kill(service.id() as i32, libc::SIGTERM) };
    let status = tokio::task::spawn_blocking(move || service.wait())
        .await
        .unwrap()
        .unwrap();
    tokio::task::spawn_blocking(move || reader.join().unwrap())
        .await
        .unwrap();
    logged.extend(lines_rx.try_iter());
    assert!(status.success(), "{}", logged.join("\n"));
    assert!(
        logged.len() > 50,
        "trace logging was on: {}",
        logged.join("\n")
    );
    let leaked: Vec<&String> = logged.iter().filter(|l| l.contains(SECRET)).collect();
    assert!(
        leaked.is_empty(),
        "the secret leaked into the logs: {leaked:#?}"
    );
    assert!(
        !printed.contains(SECRET),
        "the secret was printed: {printed}"
    );
    let in_tables: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM timelines.webhook_events e
                  WHERE to_jsonb(e)::text LIKE '%' || $1 || '%'
                     OR position(convert_to($1, 'UTF8') IN coalesce(e.body, ''::bytea)) > 0)
              + (SELECT count(*) FROM timelines.api_requests r WHERE r.path LIKE '%' || $1 || '%')
              + (SELECT count(*) FROM timelines.jobs j WHERE to_jsonb(j)::text LIKE '%' || $1 || '%')",
    )
    .bind(SECRET)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(in_tables, 0);
}
