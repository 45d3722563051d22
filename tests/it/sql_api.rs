//! The public SQL interface: enqueue, plain INSERT, validation, idempotency, cancel/retry, views.

use serde_json::{Value, json};

use crate::helpers::{db_error, job_row, state_of, test_db};

async fn enqueue(pool: &sqlx::PgPool, kind: &str, payload: Value) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT timelines.enqueue($1, $2)")
        .bind(kind)
        .bind(payload)
        .fetch_one(pool)
        .await
}

#[tokio::test]
async fn enqueue_creates_a_queued_job_with_the_documented_defaults() {
    let db = test_db().await;
    let id = enqueue(
        &db.pool,
        "send_message",
        json!({"phone": "+14155550123", "text": "hi"}),
    )
    .await
    .unwrap();
    let row = job_row(&db.pool, id).await;
    assert_eq!(row["workspace"], "default");
    assert_eq!(row["state"], "queued");
    assert_eq!(row["priority"], 0);
    assert_eq!(row["attempts"], 0);
    assert_eq!(row["max_attempts"], 20);
    assert_eq!(row["idempotency_key"], Value::Null);
    assert!(
        row["run_at"].is_string() && row["created_at"].is_string() && row["updated_at"].is_string()
    );
    assert_eq!(row["finished_at"], Value::Null);
}

#[tokio::test]
async fn enqueue_accepts_named_arguments() {
    let db = test_db().await;
    let id: i64 = sqlx::query_scalar(
        "SELECT timelines.enqueue('add_note', '{\"chat_id\": 42, \"text\": \"called\"}',
                workspace => 'default', run_at => now() + interval '1 hour', priority => 7,
                idempotency_key => 'note-1', max_attempts => 3)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let row = job_row(&db.pool, id).await;
    assert_eq!(row["priority"], 7);
    assert_eq!(row["max_attempts"], 3);
    assert_eq!(row["idempotency_key"], "note-1");
    let future: bool = sqlx::query_scalar(
        "SELECT run_at > now() + interval '59 minutes' FROM timelines.jobs WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(future);
}

#[tokio::test]
async fn a_plain_insert_works_and_gets_the_defaults() {
    let db = test_db().await;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO timelines.jobs (kind, payload) VALUES ('add_labels', '{\"phone\": \"+447700900123\", \"labels\": [\"vip\"]}') RETURNING id",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(state_of(&db.pool, id).await, "queued");
    // Bulk inserts from the user's own tables work the same way.
    let n = sqlx::query(
        "INSERT INTO timelines.jobs (kind, payload, priority)
         SELECT 'send_message', jsonb_build_object('phone', '+1415555' || lpad(g::text, 4, '0'), 'text', 'hello ' || g), g % 3
           FROM generate_series(1, 500) g",
    )
    .execute(&db.pool)
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(n, 500);
}

#[tokio::test]
async fn an_unknown_kind_is_rejected_naming_it() {
    let db = test_db().await;
    let msg = db_error(enqueue(&db.pool, "send_fax", json!({})).await);
    assert_eq!(msg, "unknown job kind \"send_fax\"");
}

#[tokio::test]
async fn a_payload_that_is_not_an_object_is_rejected() {
    let db = test_db().await;
    let msg = db_error(enqueue(&db.pool, "send_message", json!(["+14155550123"])).await);
    assert_eq!(
        msg,
        "send_message: payload must be a JSON object, got array"
    );
    let msg = db_error(
        sqlx::query("INSERT INTO timelines.jobs (kind, payload) VALUES ('refresh_quota', 'null')")
            .execute(&db.pool)
            .await,
    );
    assert_eq!(
        msg,
        "refresh_quota: payload must be a JSON object, got null"
    );
}

#[tokio::test]
async fn missing_required_fields_are_named_per_kind() {
    let db = test_db().await;
    let cases: &[(&str, Value, &str)] = &[
        (
            "send_message",
            json!({"text": "hi"}),
            "send_message: \"phone\" or \"chat_id\" is required (or \"jid\")",
        ),
        (
            "send_message",
            json!({"phone": "+14155550123"}),
            "send_message: \"text\" or \"file_uid\" is required",
        ),
        (
            "send_file",
            json!({"chat_id": 5}),
            "send_file: \"file_url\" is required",
        ),
        (
            "send_voice",
            json!({"chat_id": 5}),
            "send_voice: \"audio_url\" is required",
        ),
        (
            "upload_file",
            json!({"filename": "a.pdf"}),
            "upload_file: \"download_url\" is required",
        ),
        (
            "add_labels",
            json!({"chat_id": 5}),
            "add_labels: \"labels\" is required",
        ),
        (
            "add_labels",
            json!({"labels": ["x"]}),
            "add_labels: \"chat_id\" or \"phone\" is required",
        ),
        (
            "add_note",
            json!({"chat_id": 5}),
            "add_note: \"text\" is required",
        ),
        (
            "update_chat",
            json!({"chat_id": 5}),
            "update_chat: one of \"name\", \"responsible\", \"closed\", \"read\" or \"chatgpt_autoresponse_enabled\" is required",
        ),
        (
            "set_reaction",
            json!({"message_uid": "m"}),
            "set_reaction: \"reaction\" is required (\"\" clears it)",
        ),
        (
            "refresh_message",
            json!({}),
            "refresh_message: \"message_uid\" is required",
        ),
        (
            "sync_chat_messages",
            json!({}),
            "sync_chat_messages: \"chat_id\" or \"phone\" is required",
        ),
    ];
    for (kind, payload, expected) in cases {
        let msg = db_error(enqueue(&db.pool, kind, payload.clone()).await);
        assert_eq!(&msg, expected, "{kind} {payload}");
    }
}

#[tokio::test]
async fn field_types_and_formats_are_checked() {
    let db = test_db().await;
    let cases: &[(&str, Value, &str)] = &[
        (
            "send_message",
            json!({"phone": "14155550123", "text": "hi"}),
            "\"phone\" must be an E.164 phone number",
        ),
        (
            "send_message",
            json!({"phone": "+1 415 555 0123", "text": "hi"}),
            "\"phone\" must be an E.164 phone number",
        ),
        (
            "send_message",
            json!({"chat_id": "abc", "text": "hi"}),
            "\"chat_id\" must be a positive integer chat id",
        ),
        (
            "send_message",
            json!({"chat_id": 1, "text": 5}),
            "\"text\" must be a string, got number",
        ),
        (
            "send_message",
            json!({"chat_id": 1, "text": "x".repeat(2001)}),
            "\"text\" is longer than 2000 characters",
        ),
        (
            "send_message",
            json!({"chat_id": 1, "tetx": "hi"}),
            "unknown field \"tetx\"",
        ),
        (
            "send_file",
            json!({"chat_id": 1, "file_url": "ftp://x/y"}),
            "\"file_url\" must be an http(s) URL",
        ),
        (
            "add_labels",
            json!({"chat_id": 1, "labels": "vip"}),
            "\"labels\" must be an array of strings",
        ),
        (
            "add_labels",
            json!({"chat_id": 1, "labels": []}),
            "\"labels\" must not be empty",
        ),
        (
            "add_labels",
            json!({"chat_id": 1, "labels": ["x".repeat(65)]}),
            "each label must be 1 to 64 characters",
        ),
        (
            "update_chat",
            json!({"chat_id": 1, "closed": "yes"}),
            "\"closed\" must be a boolean, got string",
        ),
        (
            "noop",
            json!({"metadata": 5}),
            "\"metadata\" must be a object, got number",
        ),
    ];
    for (kind, payload, expected) in cases {
        let msg = db_error(enqueue(&db.pool, kind, payload.clone()).await);
        assert!(
            msg.starts_with(&format!("{kind}: ")) && msg.contains(expected),
            "{kind} {payload}: {msg}"
        );
    }
}

#[tokio::test]
async fn every_kind_accepts_a_valid_payload() {
    let db = test_db().await;
    let cases: &[(&str, Value)] = &[
        (
            "send_message",
            json!({"phone": "+14155550123", "text": "hi", "label": "lead", "whatsapp_account_phone": "+972501111111"}),
        ),
        (
            "send_message",
            json!({"chat_id": "1000001", "text": "reply", "reply_to": "uid-1"}),
        ),
        (
            "send_message",
            json!({"jid": "14155550123@s.whatsapp.net", "file_uid": "f-1"}),
        ),
        (
            "send_file",
            json!({"phone": "+14155550123", "file_url": "https://example.com/a.pdf", "text": "your invoice"}),
        ),
        (
            "send_voice",
            json!({"chat_id": 7, "audio_url": "https://example.com/a.ogg"}),
        ),
        (
            "upload_file",
            json!({"download_url": "https://example.com/a.pdf", "filename": "a.pdf", "content_type": "application/pdf"}),
        ),
        (
            "add_labels",
            json!({"phone": "+14155550123", "labels": ["vip", "paid"]}),
        ),
        (
            "add_labels",
            json!({"chat_id": 7, "labels": [], "replace": true}),
        ),
        (
            "add_note",
            json!({"chat_id": 7, "text": "called", "is_private": false}),
        ),
        (
            "update_chat",
            json!({"chat_id": 7, "responsible": "", "closed": true}),
        ),
        (
            "set_reaction",
            json!({"message_uid": "m-1", "reaction": ""}),
        ),
        ("refresh_message", json!({"message_uid": "m-1"})),
        ("sync_chats", json!({"label": "vip", "closed": false})),
        (
            "sync_chat_messages",
            json!({"chat_id": 7, "after": "2024-01-01T00:00:00Z"}),
        ),
        ("sync_teammates", json!({})),
        ("sync_files", json!({})),
        ("sync_whatsapp_accounts", json!({})),
        (
            "refresh_quota",
            json!({"metadata": {"requested_by": "ops"}}),
        ),
        ("noop", json!({})),
    ];
    for (kind, payload) in cases {
        enqueue(&db.pool, kind, payload.clone())
            .await
            .unwrap_or_else(|e| panic!("{kind} {payload}: {e}"));
    }
}

#[tokio::test]
async fn a_job_for_an_unconfigured_workspace_is_rejected_naming_it() {
    let db = test_db().await;
    let msg = db_error(
        sqlx::query("SELECT timelines.enqueue('noop', '{}', workspace => 'marketing')")
            .execute(&db.pool)
            .await,
    );
    assert_eq!(msg, "workspace \"marketing\" is not configured");
}

#[tokio::test]
async fn an_existing_idempotency_key_returns_the_existing_job() {
    let db = test_db().await;
    let enqueue_keyed = |text: &'static str| {
        sqlx::query_scalar::<_, i64>(
            "SELECT timelines.enqueue('send_message', jsonb_build_object('phone', '+14155550123', 'text', $1::text), idempotency_key => 'deal-9-won')",
        )
        .bind(text)
        .fetch_one(&db.pool)
    };
    let first = enqueue_keyed("one").await.unwrap();
    let second = enqueue_keyed("two").await.unwrap();
    assert_eq!(first, second);
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM timelines.jobs")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(count, 1);
    assert_eq!(job_row(&db.pool, first).await["payload"]["text"], "one");
    // A plain INSERT with a duplicate key is refused by the unique index.
    let dup = sqlx::query("INSERT INTO timelines.jobs (kind, payload, idempotency_key) VALUES ('noop', '{}', 'deal-9-won')")
        .execute(&db.pool)
        .await;
    assert!(db_error(dup).contains("duplicate key"));
}

#[tokio::test]
async fn concurrent_enqueues_with_one_key_create_one_job() {
    let db = test_db().await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let pool = db.pool.clone();
        tasks.spawn(async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT timelines.enqueue('noop', '{}', idempotency_key => 'same')",
            )
            .fetch_one(&pool)
            .await
            .unwrap()
        });
    }
    let ids: std::collections::HashSet<i64> = tasks.join_all().await.into_iter().collect();
    assert_eq!(ids.len(), 1);
}

#[tokio::test]
async fn cancel_stops_unfinished_jobs_only() {
    let db = test_db().await;
    let id = enqueue(&db.pool, "noop", json!({})).await.unwrap();
    let cancel = |id: i64| {
        sqlx::query_scalar::<_, bool>("SELECT timelines.cancel($1)")
            .bind(id)
            .fetch_one(&db.pool)
    };
    assert!(cancel(id).await.unwrap());
    let row = job_row(&db.pool, id).await;
    assert_eq!(row["state"], "cancelled");
    assert!(row["finished_at"].is_string());
    assert!(!cancel(id).await.unwrap(), "already cancelled");
    assert!(!cancel(999_999).await.unwrap(), "no such job");
}

#[tokio::test]
async fn retry_requeues_failed_and_cancelled_jobs_with_fresh_attempts() {
    let db = test_db().await;
    let id = enqueue(&db.pool, "noop", json!({})).await.unwrap();
    sqlx::query("UPDATE timelines.jobs SET state = 'failed', attempts = 20, finished_at = now(), last_error = 'boom' WHERE id = $1")
        .bind(id)
        .execute(&db.pool)
        .await
        .unwrap();
    let retry = |id: i64| {
        sqlx::query_scalar::<_, bool>("SELECT timelines.retry($1)")
            .bind(id)
            .fetch_one(&db.pool)
    };
    assert!(retry(id).await.unwrap());
    let row = job_row(&db.pool, id).await;
    assert_eq!(
        (row["state"].as_str(), row["attempts"].as_i64()),
        (Some("queued"), Some(0))
    );
    assert_eq!(row["finished_at"], Value::Null);
    assert!(!retry(id).await.unwrap(), "a queued job is not retried");
    sqlx::query("SELECT timelines.cancel($1)")
        .bind(id)
        .execute(&db.pool)
        .await
        .unwrap();
    assert!(retry(id).await.unwrap(), "a cancelled job can be re-queued");
}

#[tokio::test]
async fn a_new_job_cannot_start_in_a_running_or_terminal_state() {
    let db = test_db().await;
    let msg = db_error(
        sqlx::query(
            "INSERT INTO timelines.jobs (kind, payload, state) VALUES ('noop', '{}', 'succeeded')",
        )
        .execute(&db.pool)
        .await,
    );
    assert_eq!(
        msg,
        "a new job must start in state queued or held, not succeeded"
    );
}

#[tokio::test]
async fn the_views_count_jobs_by_workspace_kind_and_state() {
    let db = test_db().await;
    for _ in 0..3 {
        enqueue(&db.pool, "noop", json!({})).await.unwrap();
    }
    let failed = enqueue(&db.pool, "refresh_quota", json!({})).await.unwrap();
    sqlx::query("UPDATE timelines.jobs SET state = 'failed', finished_at = now() WHERE id = $1")
        .bind(failed)
        .execute(&db.pool)
        .await
        .unwrap();
    let counts: Vec<(String, String, String, i64)> = sqlx::query_as(
        "SELECT workspace, kind, state, jobs FROM timelines.job_counts ORDER BY kind",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        counts,
        vec![
            ("default".into(), "noop".into(), "queued".into(), 3),
            ("default".into(), "refresh_quota".into(), "failed".into(), 1),
        ]
    );
    let health: (i64, i64, i64, i64, i64, i64, bool) = sqlx::query_as(
        "SELECT queued, running, retrying, held, failed_last_hour, succeeded_last_hour, oldest_queued_age IS NOT NULL
           FROM timelines.queue_health WHERE workspace = 'default'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(health, (3, 0, 0, 0, 1, 0, true));
}

#[tokio::test]
async fn workspaces_follow_the_configuration_and_default_always_exists() {
    let db = test_db().await;
    let text = "[workspaces.sales]\nrate_limit_per_minute = 20\n";
    let settings =
        timelines_sync::config::Settings::parse(text, std::path::Path::new("t.toml")).unwrap();
    timelines_sync::db::sync_workspaces(&db.pool, &settings, &[])
        .await
        .unwrap();
    let names: Vec<(String, i32)> = sqlx::query_as(
        "SELECT name, rate_limit_per_minute FROM timelines.workspaces ORDER BY name",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(names, vec![("default".into(), 50), ("sales".into(), 20)]);
    sqlx::query("SELECT timelines.enqueue('noop', '{}', workspace => 'sales')")
        .execute(&db.pool)
        .await
        .unwrap();

    let settings =
        timelines_sync::config::Settings::parse("", std::path::Path::new("t.toml")).unwrap();
    timelines_sync::db::sync_workspaces(&db.pool, &settings, &[])
        .await
        .unwrap();
    let names: Vec<String> = sqlx::query_scalar("SELECT name FROM timelines.workspaces")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(names, vec!["default".to_string()]);
}
