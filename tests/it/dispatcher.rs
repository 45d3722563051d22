//! The dispatcher end to end: jobs inserted by SQL become real HTTP calls to the strict
//! simulator, results land in `jobs.result` and the mirror tables, failures in the right state.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;
use timelines_sync::apis::Apis;
use timelines_sync::config::{Secret, Settings};
use timelines_sync::dispatcher::Dispatcher;
use timelines_sync::dispatcher::request_log::RequestLog;
use timelines_sync::queue::{Worker, WorkerStats};
use timelines_sync::shutdown::Shutdown;
use timelines_sync::simulator::{Faults, Simulator, SimulatorConfig};

use crate::helpers::{TestDb, fast_config, job_row, test_db, wait_for_state};

const TOKEN: &str = "e2e-secret-token-7f3a";

struct Env {
    db: TestDb,
    sim: Simulator,
    shutdown: Shutdown,
    worker: tokio::task::JoinHandle<anyhow::Result<Arc<WorkerStats>>>,
    log_writer: tokio::task::JoinHandle<()>,
}

impl Env {
    async fn start(config: SimulatorConfig) -> Self {
        Self::start_with(config, TOKEN, 60_000).await
    }

    async fn start_with_token(config: SimulatorConfig, token: &str) -> Self {
        Self::start_with(config, token, 60_000).await
    }

    async fn start_with(config: SimulatorConfig, token: &str, per_minute: u32) -> Self {
        let db = test_db().await;
        let sim = Simulator::start(
            SimulatorConfig {
                tokens: vec![TOKEN.into()],
                ..config
            },
            ([127, 0, 0, 1], 0).into(),
        )
        .await
        .unwrap();
        let mut settings = Settings::default();
        let ws = settings.workspaces.get_mut("default").unwrap();
        ws.api_url = sim.base_url();
        ws.token = Some(Secret::new(token));
        // Tests of behaviour, not of pacing: the shared limiter stays out of the way unless a
        // test sets a limit itself.
        ws.rate_limit_per_minute = per_minute;
        timelines_sync::db::sync_workspaces(&db.pool, &settings, &[])
            .await
            .unwrap();
        let (log, log_writer) = RequestLog::start(db.pool.clone());
        let apis = Apis::build(&settings, &db.pool, Some(log), SimulatorConfig::default())
            .await
            .unwrap();
        assert!(
            apis.simulated.is_empty(),
            "a workspace with a token talks to its api_url"
        );
        let dispatcher = Dispatcher::new(db.pool.clone(), apis.clients);
        let shutdown = Shutdown::new();
        let worker = tokio::spawn(
            Worker::new(db.pool.clone(), fast_config(), dispatcher).run(shutdown.clone()),
        );
        Self {
            db,
            sim,
            shutdown,
            worker,
            log_writer,
        }
    }

    fn pool(&self) -> &PgPool {
        &self.db.pool
    }

    async fn enqueue(&self, kind: &str, payload: Value) -> i64 {
        sqlx::query_scalar("SELECT timelines.enqueue($1, $2)")
            .bind(kind)
            .bind(payload)
            .fetch_one(self.pool())
            .await
            .unwrap()
    }

    /// Waits until job `id` is in `state` (30 s at most).
    async fn wait_job(&self, id: i64, state: &str) -> Value {
        crate::helpers::wait_for_job(self.pool(), id, state).await
    }

    async fn run(&self, kind: &str, payload: Value) -> Value {
        let id = self.enqueue(kind, payload).await;
        self.wait_job(id, "succeeded").await["result"].clone()
    }

    async fn stop(self) -> (TestDb, Simulator) {
        self.shutdown.begin();
        self.worker.await.unwrap().unwrap();
        self.log_writer.await.unwrap();
        (self.db, self.sim)
    }
}

async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[tokio::test]
async fn a_message_to_a_phone_is_sent_recorded_and_logged() {
    let env = Env::start(SimulatorConfig::default()).await;
    let result = env
        .run(
            "send_message",
            json!({"phone": "+14155550123", "text": "Your order shipped"}),
        )
        .await;
    let uid = result["message_uid"].as_str().unwrap().to_owned();
    let sent = env.sim.sent_messages();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        (sent[0].uid.as_str(), sent[0].text.as_deref()),
        (uid.as_str(), Some("Your order shipped"))
    );
    let (db, _sim) = env.stop().await;
    let (job_id, text): (Option<i64>, Option<String>) =
        sqlx::query_as("SELECT job_id, text FROM timelines.messages WHERE message_uid = $1")
            .bind(&uid)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(job_id.is_some());
    assert_eq!(text.as_deref(), Some("Your order shipped"));
    let logged: Vec<(String, String, Option<i32>, Option<i64>)> = sqlx::query_as(
        "SELECT method, path, status, job_id FROM timelines.api_requests ORDER BY id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        logged,
        vec![("POST".into(), "/messages".into(), Some(200), job_id)]
    );
}

#[tokio::test]
async fn every_job_kind_succeeds_and_stores_its_result() {
    let env = Env::start(SimulatorConfig {
        status_step: Duration::from_millis(50),
        ..SimulatorConfig::default()
    })
    .await;
    let audio = audio_server().await;

    let synced = env.run("sync_chats", json!({})).await;
    assert!(
        synced["chats"].as_i64().unwrap() > 50,
        "paging reads past the first 50: {synced}"
    );
    assert!(synced["pages"].as_i64().unwrap() >= 2);
    let chat_id: i64 =
        sqlx::query_scalar("SELECT min(chat_id) FROM timelines.chats WHERE NOT is_group")
            .fetch_one(env.pool())
            .await
            .unwrap();

    let sent = env
        .run("send_message", json!({"chat_id": chat_id, "text": "hello"}))
        .await;
    let uid = sent["message_uid"].as_str().unwrap().to_owned();
    assert_eq!(sent["chat_id"], chat_id);
    let file = env
        .run("send_file", json!({"phone": "+14155550199", "file_url": "https://files.example/invoice.pdf", "text": "invoice"}))
        .await;
    assert!(
        file["file_uid"].is_string() && file["message_uid"].is_string(),
        "{file}"
    );
    let voice = env
        .run(
            "send_voice",
            json!({"chat_id": chat_id, "audio_url": format!("{audio}/note.ogg")}),
        )
        .await;
    assert!(voice["message_uid"].is_string(), "{voice}");
    let upload = env
        .run(
            "upload_file",
            json!({"download_url": "https://files.example/menu.pdf"}),
        )
        .await;
    assert!(upload["file_uid"].is_string(), "{upload}");
    let labels = env
        .run("add_labels", json!({"chat_id": chat_id, "labels": ["vip"]}))
        .await;
    assert!(
        labels["labels"].as_array().unwrap().contains(&json!("vip")),
        "{labels}"
    );
    let replaced = env
        .run(
            "add_labels",
            json!({"chat_id": chat_id, "labels": ["gold"], "replace": true}),
        )
        .await;
    assert_eq!(replaced["labels"], json!(["gold"]));
    let note = env
        .run(
            "add_note",
            json!({"chat_id": chat_id, "text": "called back"}),
        )
        .await;
    assert!(note["message_uid"].is_string());
    env.run("update_chat", json!({"chat_id": chat_id, "closed": true}))
        .await;
    env.run(
        "set_reaction",
        json!({"message_uid": uid, "reaction": "👍"}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refreshed = env
        .run("refresh_message", json!({"message_uid": uid}))
        .await;
    assert!(refreshed["history"].as_i64().unwrap() >= 1, "{refreshed}");
    let history = env
        .run("sync_chat_messages", json!({"chat_id": chat_id}))
        .await;
    assert!(history["messages"].as_i64().unwrap() >= 3, "{history}");
    assert!(
        env.run("sync_teammates", json!({})).await["teammates"]
            .as_i64()
            .unwrap()
            >= 1
    );
    assert!(
        env.run("sync_files", json!({})).await["files"]
            .as_i64()
            .unwrap()
            >= 2
    );
    assert!(
        env.run("sync_whatsapp_accounts", json!({})).await["whatsapp_accounts"]
            .as_i64()
            .unwrap()
            >= 1
    );
    let quota = env.run("refresh_quota", json!({})).await;
    assert!(quota["api_calls_used"].as_i64().unwrap() > 10, "{quota}");

    let (db, _sim) = env.stop().await;
    let pool = &db.pool;
    assert_eq!(
        count(
            pool,
            "SELECT count(*) FROM timelines.jobs WHERE state <> 'succeeded'"
        )
        .await,
        0
    );
    let closed: bool = sqlx::query_scalar("SELECT closed FROM timelines.chats WHERE chat_id = $1")
        .bind(chat_id)
        .fetch_one(pool)
        .await
        .unwrap();
    assert!(closed);
    let status: String =
        sqlx::query_scalar("SELECT status FROM timelines.messages WHERE message_uid = $1")
            .bind(&uid)
            .fetch_one(pool)
            .await
            .unwrap();
    assert_ne!(status, "Queued", "refresh_message updates the status");
    assert!(
        count(
            pool,
            "SELECT count(*) FROM timelines.message_status_history"
        )
        .await
            >= 1
    );
    assert!(count(pool, "SELECT count(*) FROM timelines.teammates").await >= 1);
    assert!(count(pool, "SELECT count(*) FROM timelines.whatsapp_accounts").await >= 1);
    assert_eq!(
        count(pool, "SELECT count(*) FROM timelines.quota_snapshots").await,
        1
    );
    assert!(
        count(
            pool,
            "SELECT count(*) FROM timelines.messages WHERE job_id IS NOT NULL"
        )
        .await
            >= 4
    );
}

/// Serves a few bytes of "audio" for send_voice.
async fn audio_server() -> String {
    let app = axum::Router::new().route(
        "/note.ogg",
        axum::routing::get(|| async { vec![0x4fu8, 0x67, 0x67, 0x53, 0, 2] }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test]
async fn api_refusals_fail_the_job_with_the_apis_message() {
    let env = Env::start(SimulatorConfig::default()).await;
    // 404: no such message.
    let missing = env
        .enqueue(
            "refresh_message",
            json!({"message_uid": "00000000-0000-0000-0000-000000000000"}),
        )
        .await;
    let row = env.wait_job(missing, "failed").await;
    assert_eq!(row["attempts"], 1);
    assert!(row["last_error"].as_str().unwrap().contains("404"), "{row}");
    // 400: the assignee is not a teammate.
    env.run("sync_chats", json!({})).await;
    let chat_id: i64 = sqlx::query_scalar("SELECT min(chat_id) FROM timelines.chats")
        .fetch_one(env.pool())
        .await
        .unwrap();
    let bad = env
        .enqueue(
            "update_chat",
            json!({"chat_id": chat_id, "responsible": "stranger@nowhere.example"}),
        )
        .await;
    let row = env.wait_job(bad, "failed").await;
    assert!(row["last_error"].as_str().unwrap().contains("400"), "{row}");
    // A phone with no chat cannot take a note yet: the job waits for the chat (its first message
    // may still be queued), a bounded number of times.
    let orphan = env
        .enqueue("add_note", json!({"phone": "+19995550000", "text": "x"}))
        .await;
    let row = env.wait_job(orphan, "retrying").await;
    assert_eq!(row["attempts"], 1);
    assert!(
        row["last_error"]
            .as_str()
            .unwrap()
            .contains("no chat with +19995550000"),
        "{row}"
    );
    env.stop().await;
}

#[tokio::test]
async fn a_rejected_token_fails_the_job_and_never_shows_up_anywhere() {
    let wrong = "wrong-token-never-print-me";
    let env = Env::start_with_token(SimulatorConfig::default(), wrong).await;
    let id = env.enqueue("sync_teammates", json!({})).await;
    let row = env.wait_job(id, "failed").await;
    assert!(row["last_error"].as_str().unwrap().contains("401"), "{row}");
    let (db, _sim) = env.stop().await;
    let leaked: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM timelines.jobs j WHERE to_jsonb(j)::text LIKE '%' || $1 || '%')
              + (SELECT count(*) FROM timelines.api_requests r WHERE to_jsonb(r)::text LIKE '%' || $1 || '%')",
    )
    .bind(wrong)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(leaked, 0);
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff() {
    let env = Env::start(SimulatorConfig::default()).await;
    env.sim.set_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    });
    let id = env.enqueue("sync_teammates", json!({})).await;
    let row = env.wait_job(id, "retrying").await;
    assert_eq!(row["attempts"], 1);
    assert!(
        row["last_error"].as_str().unwrap().contains("transient"),
        "{row}"
    );
    env.stop().await;
}

#[tokio::test]
async fn rate_limited_jobs_are_snoozed_without_using_an_attempt() {
    let env = Env::start(SimulatorConfig {
        rate_limit: 2,
        ..SimulatorConfig::default()
    })
    .await;
    for _ in 0..4 {
        env.enqueue("sync_teammates", json!({})).await;
    }
    wait_for_state(env.pool(), "succeeded", 2).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let snoozed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM timelines.jobs WHERE state = 'queued' AND attempts = 0 AND run_at > now()",
        )
        .fetch_one(env.pool())
        .await
        .unwrap();
        if snoozed == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rate-limited jobs were not snoozed"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (db, sim) = env.stop().await;
    // The first 429 pauses the workspace for its Retry-After: a job that comes later is held
    // back by the limiter without sending anything, so the API sees one or two refusals.
    let refused = sim.stats().rate_limited;
    assert!((1..=2).contains(&refused), "{refused}");
    let logged: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM timelines.api_requests WHERE error_class = 'rate_limited'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(logged as u64, refused);
    let paused: bool = sqlx::query_scalar(
        "SELECT paused_until > now() + interval '30 seconds' FROM timelines.rate_limiter WHERE workspace = 'default'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(paused, "the Retry-After pauses the whole workspace");
}

#[tokio::test]
async fn a_send_beyond_the_messaging_quota_is_held() {
    let env = Env::start(SimulatorConfig {
        messaging_quota: 1,
        ..SimulatorConfig::default()
    })
    .await;
    env.run(
        "send_message",
        json!({"phone": "+14155550123", "text": "one"}),
    )
    .await;
    let id = env
        .enqueue(
            "send_message",
            json!({"phone": "+14155550124", "text": "two"}),
        )
        .await;
    let row = env.wait_job(id, "held").await;
    assert_eq!(row["attempts"], 0, "{row}");
    assert!(
        row["last_error"].as_str().unwrap().contains("quota"),
        "{row}"
    );
    env.stop().await;
}

#[tokio::test]
async fn a_connection_dropped_after_a_send_does_not_produce_a_duplicate() {
    let env = Env::start(SimulatorConfig::default()).await;
    env.sim.set_faults(Faults {
        drop_after_side_effect_rate: 1.0,
        ..Faults::default()
    });
    let id = env
        .enqueue(
            "send_message",
            json!({"phone": "+14155550123", "text": "exactly once"}),
        )
        .await;
    let row = env.wait_job(id, "retrying").await;
    assert_eq!(
        row["interrupted"], true,
        "an ambiguous send marks the next attempt: {row}"
    );
    env.sim.set_faults(Faults::default());
    // The backoff of fast_config is a minute: bring the retry forward.
    sqlx::query("UPDATE timelines.jobs SET run_at = now() WHERE id = $1")
        .bind(id)
        .execute(env.pool())
        .await
        .unwrap();
    let row = env.wait_job(id, "succeeded").await;
    assert_eq!(row["result"]["deduplicated"], true, "{row}");
    let (_db, sim) = env.stop().await;
    let sent: Vec<_> = sim
        .sent_messages()
        .into_iter()
        .filter(|m| m.text.as_deref() == Some("exactly once"))
        .collect();
    assert_eq!(sent.len(), 1, "the message was sent twice");
    assert_eq!(
        row["result"]["message_uid"].as_str(),
        Some(sent[0].uid.as_str())
    );
}

#[tokio::test]
async fn a_phone_is_resolved_to_its_chat_once_and_then_cached() {
    let env = Env::start(SimulatorConfig::default()).await;
    env.run(
        "send_message",
        json!({"phone": "+14155550123", "text": "first"}),
    )
    .await;
    for text in ["a", "b"] {
        env.run("add_note", json!({"phone": "+14155550123", "text": text}))
            .await;
    }
    let (db, _sim) = env.stop().await;
    let lookups: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM timelines.api_requests WHERE method = 'GET' AND path = '/chats'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(lookups, 1);
}

#[tokio::test]
async fn a_dispatcher_claims_only_jobs_of_the_workspaces_it_has_a_client_for() {
    let env = Env::start(SimulatorConfig::default()).await;
    sqlx::query("INSERT INTO timelines.workspaces (name, api_url, rate_limit_per_minute, monthly_api_calls) VALUES ('other', 'https://x.example', 50, 200000)")
        .execute(env.pool())
        .await
        .unwrap();
    let foreign: i64 = sqlx::query_scalar(
        "SELECT timelines.enqueue('sync_teammates', '{}', workspace => 'other')",
    )
    .fetch_one(env.pool())
    .await
    .unwrap();
    env.run("sync_teammates", json!({})).await;
    let (db, _sim) = env.stop().await;
    let row = job_row(&db.pool, foreign).await;
    assert_eq!(
        (row["state"].as_str(), row["attempts"].as_i64()),
        (Some("queued"), Some(0))
    );
}

#[tokio::test]
async fn a_sync_cut_short_by_the_rate_limit_resumes_at_the_page_it_stopped_on() {
    let config = SimulatorConfig {
        rate_limit: 1,
        rate_window: Duration::from_millis(1500),
        ..SimulatorConfig::default()
    };
    let env = Env::start(config).await;
    let id = env.enqueue("sync_chats", json!({})).await;
    let row = env.wait_job(id, "succeeded").await;
    assert_eq!(row["attempts"], 1, "snoozes use no attempt: {row}");
    assert_eq!(row["result"]["pages"], 2, "{row}");
    assert_eq!(row["result"]["truncated"], false);
    let (db, _sim) = env.stop().await;
    let requests: Vec<(Option<i32>,)> = sqlx::query_as(
        "SELECT status FROM timelines.api_requests WHERE path = '/chats' ORDER BY id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    // page 1, page 2 refused (429), page 2 again: never page 1 twice.
    assert_eq!(requests, vec![(Some(200),), (Some(429),), (Some(200),)]);
    let chats: i64 = sqlx::query_scalar("SELECT count(*) FROM timelines.chats")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(row["result"]["chats"], chats);
}

#[tokio::test]
async fn the_shared_limiter_keeps_every_window_within_the_limit_with_no_429() {
    // A strict server window of 10 requests per second; the workspace configured at 600/min.
    let config = SimulatorConfig {
        rate_limit: 10,
        rate_window: Duration::from_secs(1),
        ..SimulatorConfig::default()
    };
    let env = Env::start_with(config, TOKEN, 600).await;
    for _ in 0..30 {
        env.enqueue("sync_teammates", json!({})).await;
    }
    wait_for_state(env.pool(), "succeeded", 30).await;
    let (db, sim) = env.stop().await;
    let stats = sim.stats();
    assert_eq!(stats.rate_limited, 0);
    assert!(
        stats.max_accepted_in_window <= 10,
        "{}",
        stats.max_accepted_in_window
    );
    let (limit, last_minute, throttles): (i32, i64, i64) = sqlx::query_as(
        "SELECT rate_limit_per_minute, requests_last_minute, throttle_pauses_last_hour
           FROM timelines.rate_limit_status WHERE workspace = 'default'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((limit, last_minute, throttles), (600, 30, 0));
}

#[tokio::test]
async fn jobs_held_for_the_api_call_quota_resume_when_a_reading_shows_room() {
    let env = Env::start(SimulatorConfig::default()).await;
    // The ledger believes the month is used up (say, counted before the plan was upgraded).
    sqlx::query("SELECT timelines.count_usage('default', 200000, 0)")
        .execute(env.pool())
        .await
        .unwrap();
    let bulk = env.enqueue("sync_teammates", json!({})).await;
    let row = env.wait_job(bulk, "held").await;
    assert_eq!(row["attempts"], 0);
    assert!(
        row["last_error"]
            .as_str()
            .unwrap()
            .contains("API-call quota"),
        "{row}"
    );
    // A reading always runs; the simulator's figures show room, so held jobs look again at once.
    env.run("refresh_quota", json!({})).await;
    timelines_sync::maintenance::Rescuer::new(env.pool().clone(), Default::default())
        .run_once()
        .await
        .unwrap();
    let row = env.wait_job(bulk, "succeeded").await;
    assert_eq!(row["attempts"], 1);
    let (db, _sim) = env.stop().await;
    // The view shows the reconciled period: the simulator's limit, and calls left.
    let (limit, left, reconciled): (Option<i64>, Option<i64>, bool) = sqlx::query_as(
        "SELECT api_calls_limit, api_calls_left, reconciled_at IS NOT NULL
           FROM timelines.rate_limit_status WHERE workspace = 'default'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(limit, Some(200_000));
    assert!(left.is_some_and(|l| l > 199_000), "{left:?}");
    assert!(reconciled);
}

#[tokio::test]
async fn sends_use_one_or_two_credits_and_a_failed_message_gives_them_back() {
    let config = SimulatorConfig {
        fail_phones: vec!["+14155550666".into()],
        status_step: Duration::from_millis(50),
        ..SimulatorConfig::default()
    };
    let env = Env::start(config).await;
    let used = |pool: PgPool| async move {
        sqlx::query_scalar::<_, i64>(
            "SELECT coalesce(sum(messages_used), 0)::bigint FROM timelines.quota_usage",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    let failing = env
        .run(
            "send_message",
            json!({"phone": "+14155550666", "text": "to a dead number"}),
        )
        .await;
    env.run("send_file", json!({"phone": "+14155550123", "file_url": "https://files.example/a.pdf", "text": "with text"}))
        .await;
    assert_eq!(
        used(env.pool().clone()).await,
        3,
        "1 credit, then 2 for text with a file"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    env.run(
        "refresh_message",
        json!({"message_uid": failing["message_uid"]}),
    )
    .await;
    assert_eq!(
        used(env.pool().clone()).await,
        2,
        "the failed message's credit came back"
    );
    // Seeing the failure again gives nothing back twice.
    env.run(
        "refresh_message",
        json!({"message_uid": failing["message_uid"]}),
    )
    .await;
    assert_eq!(used(env.pool().clone()).await, 2);
    env.stop().await;
}
