//! `timelines_service`: the whole service runs as a login granted it (neither superuser nor
//! owner) against the simulator, a fake CRM and a webhook delivery; afterwards no secret is
//! stored anywhere, and the enqueuer reads nothing that could hold one.

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use sqlx::{AssertSqlSafe, PgPool};
use timelines_sync::config::{ProcessEnv, Settings};
use timelines_sync::maintenance::{Pruner, PrunerConfig, Rescuer, RescuerConfig};
use timelines_sync::shutdown::Shutdown;
use timelines_sync::simulator::{Simulator, SimulatorConfig};

use super::{DENIED, Login, sqlstate};
use crate::fakes::hubspot::HubSpot;
use crate::helpers::{TestDb, test_db, wait_for_job};
use crate::sources::{ago, rfc};

const API_TOKEN: &str = "tl-roles-api-token-5d17c0";
const CRM_TOKEN: &str = "pat-roles-crm-token-93ae41";
const WEBHOOK_SECRET: &str = "whsec-roles-5f0c2a9e41b7d3c8e6a1";

/// The service's configuration: the database as `service_url`, the simulator's workspace, a
/// HubSpot source polled every second with a welcome rule, and the webhook receiver.
fn config(service_url: &str, sim: &Simulator, hubspot: &HubSpot) -> Settings {
    let toml = format!(
        r#"
[database]
url = "{service_url}"
max_connections = 8

[http]
listen = "127.0.0.1:0"

[webhooks]
secret = "{WEBHOOK_SECRET}"

[workspaces.default]
api_url = "{api}"
token = "{API_TOKEN}"
rate_limit_per_minute = 60000

[sources.crm]
preset = "hubspot.contacts"
base_url = "{crm}"
token = "{CRM_TOKEN}"
schedule = "* * * * * *"
initial = "{start}"
settle_seconds = 0
default_region = "US"

[[rules]]
name = "welcome"
source = "crm"
trigger = "created"
action = "send_message"
template = "Hi {{{{ firstname }}}}, welcome!"
workspace = "default"
"#,
        api = sim.base_url(),
        crm = hubspot.url,
        start = rfc(ago(60)),
    );
    let settings = Settings::parse(&toml, Path::new("roles.toml")).unwrap();
    settings.validate(&ProcessEnv).unwrap();
    settings
}

/// Waits (30 s at most) until `sql` (a count) is positive.
async fn wait_until(pool: &PgPool, sql: &'static str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while sqlx::query_scalar::<_, i64>(sql)
        .fetch_one(pool)
        .await
        .unwrap()
        == 0
    {
        assert!(tokio::time::Instant::now() < deadline, "never: {sql}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_service_runs_enqueue_to_dispatch_and_a_poll_as_a_login_granted_timelines_service() {
    let db = test_db().await;
    let service = Login::member_of(&db, "timelines_service").await;
    let app = Login::member_of(&db, "timelines_enqueuer").await;
    let sim = Simulator::start(
        SimulatorConfig {
            tokens: vec![API_TOKEN.into()],
            ..SimulatorConfig::default()
        },
        ([127, 0, 0, 1], 0).into(),
    )
    .await
    .unwrap();
    let hubspot = HubSpot::start(CRM_TOKEN).await;
    hubspot.put_contact(
        1,
        json!({"firstname": "Ana", "phone": "+14155550102"}),
        ago(5),
        ago(5),
    );
    let settings = config(&service.url, &sim, &hubspot);

    // Start-up as `run` does it: the migrations found current, the workspaces recorded...
    let (pool, embedded) = timelines_sync::startup::open_database(&settings)
        .await
        .unwrap();
    assert!(embedded.is_none());
    let (user, superuser, owner): (String, bool, String) = sqlx::query_as(
        "SELECT current_user::text, (SELECT rolsuper FROM pg_roles WHERE rolname = current_user),
                pg_get_userbyid((SELECT relowner FROM pg_class WHERE oid = 'timelines.jobs'::regclass))::text",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(user, service.name);
    assert!(!superuser);
    assert_ne!(owner, service.name);
    // ...ready by its own health check...
    let shutdown = Shutdown::new();
    let listener = timelines_sync::http::bind(&settings.http).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = timelines_sync::http::router(pool.clone()).merge(
        timelines_sync::webhooks::router(pool.clone(), &settings, &ProcessEnv),
    );
    tokio::spawn(timelines_sync::http::serve(
        listener,
        router,
        shutdown.clone(),
    ));
    let ready = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
    assert_eq!(
        ready.status().as_u16(),
        200,
        "{}",
        ready.text().await.unwrap()
    );
    // ...and its loops: dispatcher, pollers, maintenance.
    let running = {
        let (pool, settings, shutdown) = (pool.clone(), settings.clone(), shutdown.clone());
        tokio::spawn(async move {
            timelines_sync::startup::run_on(pool, &settings, SimulatorConfig::default(), shutdown)
                .await
        })
    };

    // An application enqueues; the service sends it.
    let app_pool = app.pool().await;
    let id: i64 = sqlx::query_scalar("SELECT timelines.enqueue('send_message', $1)")
        .bind(json!({"phone": "+14155550123", "text": "Your order shipped"}))
        .fetch_one(&app_pool)
        .await
        .unwrap();
    let sent = wait_for_job(&db.pool, id, "succeeded").await;
    assert!(sent["result"]["message_uid"].is_string(), "{sent}");
    // A poll ran and its job was sent too; the scheduled quota reading was enqueued and ran.
    wait_until(
        &db.pool,
        "SELECT count(*) FROM timelines.source_runs WHERE status = 'succeeded' AND jobs_created = 1",
    )
    .await;
    wait_until(
        &db.pool,
        "SELECT count(*) FROM timelines.jobs
          WHERE idempotency_key LIKE 'poll:crm:welcome:%' AND state = 'succeeded'",
    )
    .await;
    wait_until(
        &db.pool,
        "SELECT count(*) FROM timelines.jobs WHERE kind = 'refresh_quota' AND state = 'succeeded'",
    )
    .await;
    assert_eq!(sim.sent_messages().len(), 2);
    // A contact answers STOP: the webhook is stored, applied, and the phone opted out.
    let delivered = reqwest::Client::new()
        .post(format!(
            "http://{addr}/webhooks/timelines/{WEBHOOK_SECRET}?workspace=default"
        ))
        .json(&stop_reply("+14155550199"))
        .send()
        .await
        .unwrap();
    assert_eq!(delivered.status().as_u16(), 200);
    wait_until(
        &db.pool,
        "SELECT count(*) FROM timelines.webhook_events e JOIN timelines.opt_outs o
             ON o.phone = '+14155550199' WHERE e.status = 'processed'",
    )
    .await;
    shutdown.begin();
    running.await.unwrap().unwrap();

    assert_no_secret_is_stored(
        &db,
        &[API_TOKEN, CRM_TOKEN, &service.password, &app.password],
    )
    .await;
    assert_the_enqueuer_reads_no_secret(&app_pool, &[API_TOKEN, CRM_TOKEN]).await;

    // The maintenance statements, once each with nothing spared.
    let rescued = Rescuer::new(pool.clone(), RescuerConfig::default())
        .run_once()
        .await;
    assert_eq!(rescued.unwrap(), 0);
    let pruner = PrunerConfig {
        retention: Duration::ZERO,
        request_log_retention: Duration::ZERO,
        ..PrunerConfig::default()
    };
    assert!(Pruner::new(pool.clone(), pruner).run_once().await.unwrap() >= 3);

    pool.close().await;
    app_pool.close().await;
    sim.shutdown().await;
    service.drop_role(&db.pool).await;
    app.drop_role(&db.pool).await;
}

/// `message:received:new` (API reference §6.3): `phone` answers "STOP".
fn stop_reply(phone: &str) -> serde_json::Value {
    let contact = json!({"full_name": "Ana Lima", "phone": phone});
    json!({
        "event_type": "message:received:new",
        "chat": {"full_name": "Ana Lima", "chat_id": 7001, "is_group": false, "phone": phone,
                 "chat_url": "https://app.timelines.ai/chat/7001/messages/",
                 "responsible_name": null, "responsible_email": null},
        "whatsapp_account": {"full_name": "Team", "email": "team@example.com",
                             "phone": "+972540000001",
                             "whatsapp_account_wid": "972540000001@s.whatsapp.net"},
        "message": {"text": "STOP", "direction": "received", "origin": "WhatsApp",
                    "timestamp": "2024-03-01 10:00:00 +0300", "message_uid": "roles-stop-1",
                    "sender": contact, "recipient": {"full_name": "Team", "phone": "+972540000001"},
                    "attachments": []}
    })
}

/// No table of the database, in any schema, holds any of `secrets`.
async fn assert_no_secret_is_stored(db: &TestDb, secrets: &[&str]) {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
            AND n.nspname NOT LIKE 'pg_toast%'",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(tables.iter().any(|t| t == "timelines.jobs"), "{tables:?}");
    for table in &tables {
        for secret in secrets {
            let found: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT count(*) FROM {table} x WHERE strpos(to_jsonb(x)::text, $1) > 0"
            )))
            .bind(secret)
            .fetch_one(&db.pool)
            .await
            .unwrap();
            assert_eq!(found, 0, "a secret is stored in {table}");
        }
    }
}

/// The enqueuer (on `pool`) reads the views and its allowed tables, finds no secret in them,
/// may read no column named like a secret, and is refused every other table.
async fn assert_the_enqueuer_reads_no_secret(pool: &PgPool, secrets: &[&str]) {
    let relations: Vec<(String, bool)> = sqlx::query_as(
        "SELECT c.oid::regclass::text, has_table_privilege(c.oid, 'SELECT') FROM pg_class c
          WHERE c.relnamespace = 'timelines'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')
          ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let readable: Vec<&str> = relations
        .iter()
        .filter(|(_, can)| *can)
        .map(|(r, _)| r.as_str())
        .collect();
    for expected in [
        "timelines.jobs",
        "timelines.messages",
        "timelines.queue_health",
    ] {
        assert!(readable.contains(&expected), "{readable:?}");
    }
    for (relation, can) in &relations {
        let read = sqlx::query_scalar::<_, String>(AssertSqlSafe(format!(
            "SELECT coalesce(string_agg(to_jsonb(x)::text, ''), '') FROM {relation} x"
        )))
        .fetch_one(pool)
        .await;
        match can {
            true => {
                let text = read.unwrap();
                for secret in secrets {
                    assert!(!text.contains(secret), "a secret is readable in {relation}");
                }
            }
            false => assert_eq!(sqlstate(read), DENIED, "{relation}"),
        }
    }
    for unreadable in [
        "timelines.contacts",
        "timelines.source_state",
        "timelines.chats",
    ] {
        assert!(!readable.contains(&unreadable), "{unreadable} is readable");
    }
    let secret_columns: Vec<String> = sqlx::query_scalar(
        "SELECT a.attrelid::regclass::text || '.' || a.attname FROM pg_attribute a
           JOIN pg_class c ON c.oid = a.attrelid
          WHERE c.relnamespace = 'timelines'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
            AND a.attname ~* '(secret|token|password|credential|api_?key)'
            AND has_column_privilege(a.attrelid, a.attnum, 'SELECT')",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(secret_columns, Vec::<String>::new());
}
