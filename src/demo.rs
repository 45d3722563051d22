//! `timelines-sync demo`: the whole flow on one machine with nothing configured. It starts (or
//! reuses) the embedded Postgres and the built-in API simulator, enqueues a small batch of varied
//! jobs through the SQL API, runs the dispatcher with a progress bar until they finish, and prints
//! a summary and the SQL to look at them. It never talks to the real API, whatever is configured.

use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::config::{Settings, WorkspaceSettings};

/// The workspace the demo's jobs belong to.
const DEMO_WORKSPACE: &str = "demo";
/// Requests per minute of the demo workspace (and of its simulator).
const DEMO_RATE: u32 = 300;
use crate::shutdown::Shutdown;
use crate::simulator::SimulatorConfig;
use crate::startup;

/// One demo job: kind, payload, seconds after the start it may run (follow-ups wait for the
/// chat their first message creates).
fn jobs() -> Vec<(&'static str, Value, i64)> {
    vec![
        (
            "send_message",
            json!({"phone": "+14155550101", "text": "Hi Ana, your order #1042 has shipped."}),
            0,
        ),
        (
            "send_message",
            json!({"phone": "+14155550102", "text": "Hi Ben, your appointment is tomorrow at 10:00."}),
            0,
        ),
        (
            "send_message",
            json!({"phone": "+14155550103", "text": "Hi Cleo, your invoice is ready.", "label": "billing"}),
            0,
        ),
        (
            "send_file",
            json!({"phone": "+14155550104", "file_url": "https://files.example/welcome.pdf", "text": "Welcome pack"}),
            0,
        ),
        ("sync_whatsapp_accounts", json!({}), 0),
        ("sync_teammates", json!({}), 0),
        (
            "add_labels",
            json!({"phone": "+14155550101", "labels": ["shipped", "vip"]}),
            3,
        ),
        (
            "add_note",
            json!({"phone": "+14155550102", "text": "Confirmed by phone"}),
            3,
        ),
        (
            "update_chat",
            json!({"phone": "+14155550103", "responsible": "alice@acme.example"}),
            3,
        ),
        // Fails at the API: the assignee is not a teammate. Shows a failed job with its reason.
        (
            "update_chat",
            json!({"phone": "+14155550104", "responsible": "nobody@acme.example"}),
            3,
        ),
        ("sync_chats", json!({}), 4),
        ("refresh_quota", json!({}), 6),
    ]
}

/// Runs the demo.
pub async fn run(settings: &Settings) -> anyhow::Result<()> {
    if settings.database.url.is_some() {
        println!(
            "(the demo uses the embedded cluster under {}; the configured database is left alone)",
            settings.database.data_dir.display()
        );
    }
    // The demo's jobs live in a workspace of their own, run by a worker that claims nothing
    // else: jobs of the user's workspaces in the same database are left alone.
    // Paced at DEMO_RATE requests a minute so the demo takes seconds; the simulator allows as much.
    let workspace = WorkspaceSettings {
        simulator: true,
        rate_limit_per_minute: DEMO_RATE,
        ..WorkspaceSettings::default()
    };
    let mut with_demo = settings.clone();
    with_demo.database.url = None;
    with_demo
        .workspaces
        .insert(DEMO_WORKSPACE.to_owned(), workspace.clone());
    let (pool, embedded) = startup::open_database(&with_demo).await?;
    let demo_only = Settings {
        workspaces: [(DEMO_WORKSPACE.to_owned(), workspace)].into(),
        ..with_demo
    };
    let result = run_on(&pool, &demo_only).await;
    pool.close().await;
    if let Some(embedded) = embedded {
        embedded.stop().await?;
    }
    result
}

async fn run_on(pool: &PgPool, settings: &Settings) -> anyhow::Result<()> {
    // Refuse bad input at the door: the database itself rejects a malformed job.
    let refused = sqlx::query(
        "SELECT timelines.enqueue('send_message', '{\"phone\": \"4155550100\", \"text\": \"hi\"}')",
    )
    .execute(pool)
    .await
    .expect_err("the database accepted an invalid phone");
    let refused = match refused {
        sqlx::Error::Database(e) => e.message().to_owned(),
        other => other.to_string(),
    };
    println!("A malformed job is refused at insert time:\n  ERROR: {refused}\n");

    let batch = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let mut ids = Vec::new();
    for (i, (kind, payload, delay)) in jobs().into_iter().enumerate() {
        let id: i64 = sqlx::query_scalar(
            "SELECT timelines.enqueue($1, $2, workspace => $5, run_at => now() + make_interval(secs => $3),
                                      idempotency_key => $4)",
        )
        .bind(kind)
        .bind(&payload)
        .bind(delay as f64)
        .bind(format!("demo-{batch}-{i}"))
        .bind(DEMO_WORKSPACE)
        .fetch_one(pool)
        .await
        .with_context(|| format!("enqueueing demo job {kind}"))?;
        ids.push(id);
    }
    println!(
        "Enqueued {} jobs (idempotency keys demo-{batch}-*); running them against the built-in simulator:",
        ids.len()
    );

    let shutdown = Shutdown::new();
    let simulator = SimulatorConfig {
        status_step: Duration::from_secs(1),
        rate_limit: DEMO_RATE,
        ..SimulatorConfig::default()
    };
    let service = {
        let (pool, settings, shutdown) = (pool.clone(), settings.clone(), shutdown.clone());
        tokio::spawn(async move { startup::run_on(pool, &settings, simulator, shutdown).await })
    };

    let bar = ProgressBar::new(ids.len() as u64);
    bar.set_style(ProgressStyle::with_template(
        "{bar:40.green/white} {pos}/{len} finished  {msg}",
    )?);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        let (finished, detail) = progress(pool, &ids).await?;
        bar.set_position(finished);
        bar.set_message(detail);
        if finished == ids.len() as u64
            || tokio::time::Instant::now() > deadline
            || service.is_finished()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bar.finish();
    shutdown.begin();
    shutdown.abort();
    service.await??;
    summary(pool, &ids).await
}

async fn progress(pool: &PgPool, ids: &[i64]) -> anyhow::Result<(u64, String)> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, count(*) FROM timelines.jobs WHERE id = ANY($1) GROUP BY state ORDER BY state")
            .bind(ids)
            .fetch_all(pool)
            .await?;
    let finished = rows
        .iter()
        .filter(|(s, _)| matches!(s.as_str(), "succeeded" | "failed" | "cancelled"))
        .map(|(_, n)| *n)
        .sum::<i64>();
    let detail = rows
        .iter()
        .map(|(s, n)| format!("{s}: {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    Ok((finished as u64, detail))
}

async fn summary(pool: &PgPool, ids: &[i64]) -> anyhow::Result<()> {
    type Row = (i64, String, String, i32, Option<Value>, Option<String>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, kind, state, attempts, result, last_error FROM timelines.jobs WHERE id = ANY($1) ORDER BY id",
    )
    .bind(ids)
    .fetch_all(pool)
    .await?;
    println!(
        "\n{:>6}  {:<22} {:<10} {:>8}  outcome",
        "job", "kind", "state", "attempts"
    );
    for (id, kind, state, attempts, result, error) in rows {
        let outcome = match (state.as_str(), result, error) {
            ("succeeded", Some(result), _) => result.to_string(),
            (_, _, Some(error)) => error,
            _ => String::new(),
        };
        let outcome: String = outcome.chars().take(90).collect();
        println!("{id:>6}  {kind:<22} {state:<10} {attempts:>8}  {outcome}");
    }
    let requests: i64 =
        sqlx::query_scalar("SELECT count(*) FROM timelines.api_requests WHERE job_id = ANY($1)")
            .bind(ids)
            .fetch_one(pool)
            .await?;
    println!(
        "\n{requests} API requests were made for these jobs. Look around with psql \"$(timelines-sync db url)\":"
    );
    println!("  SELECT * FROM timelines.queue_health;");
    println!(
        "  SELECT id, kind, state, attempts, result, last_error FROM timelines.jobs ORDER BY id DESC LIMIT 20;"
    );
    println!(
        "  SELECT message_uid, chat_id, status, text FROM timelines.messages WHERE job_id IS NOT NULL;"
    );
    println!(
        "  SELECT method, path, status, error_class, duration_ms FROM timelines.api_requests ORDER BY id DESC LIMIT 20;"
    );
    println!(
        "  SELECT chat_id, name, phone, labels, responsible_email FROM timelines.chats ORDER BY synced_at DESC LIMIT 10;"
    );
    Ok(())
}
