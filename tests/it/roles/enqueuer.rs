//! `timelines_enqueuer`: the SQL API's functions and the views, nothing else.

use serde_json::json;
use sqlx::{AssertSqlSafe, Connection, PgConnection};

use super::{DENIED, Login, sqlstate};
use crate::helpers::{db_error, test_db};

/// The views an application watches, and the tables it may read besides them.
const READABLE: [&str; 10] = [
    "job_counts",
    "queue_health",
    "rate_limit_status",
    "source_status",
    "jobs",
    "job_kinds",
    "workspaces",
    "messages",
    "message_status_history",
    "api_requests",
];

#[tokio::test]
async fn an_enqueuer_enqueues_cancels_and_retries_and_its_jobs_are_still_validated() {
    let db = test_db().await;
    let app = Login::member_of(&db, "timelines_enqueuer").await;
    let pool = app.pool().await;

    let enqueue =
        "SELECT timelines.enqueue('send_message', $1, priority => 5, idempotency_key => 'crm-1')";
    let payload = json!({"phone": "+14155550123", "text": "Your order shipped"});
    let id: i64 = sqlx::query_scalar(enqueue)
        .bind(&payload)
        .fetch_one(&pool)
        .await
        .unwrap();
    let again: i64 = sqlx::query_scalar(enqueue)
        .bind(&payload)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(again, id, "an existing idempotency key returns its job");

    let refused = sqlx::query("SELECT timelines.enqueue('send_message', $1)")
        .bind(json!({"phone": "4155550123", "text": "hi"}))
        .execute(&pool)
        .await;
    assert!(db_error(refused).contains("E.164"));
    let refused = sqlx::query("SELECT timelines.enqueue('noop', '{}', workspace => 'marketing')")
        .execute(&pool)
        .await;
    assert!(db_error(refused).contains(r#"workspace "marketing" is not configured"#));

    let state = || async {
        sqlx::query_scalar::<_, String>("SELECT state FROM timelines.jobs WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let cancelled: bool = sqlx::query_scalar("SELECT timelines.cancel($1)")
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(cancelled);
    assert_eq!(state().await, "cancelled");
    let retried: bool = sqlx::query_scalar("SELECT timelines.retry($1)")
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(retried);
    assert_eq!(state().await, "queued");

    for relation in READABLE {
        sqlx::query(AssertSqlSafe(format!(
            "SELECT count(*) FROM timelines.{relation}"
        )))
        .execute(&pool)
        .await
        .unwrap_or_else(|e| panic!("the enqueuer cannot read timelines.{relation}: {e}"));
    }
    let queued: i64 =
        sqlx::query_scalar("SELECT queued FROM timelines.queue_health WHERE workspace = 'default'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(queued, 1);
    pool.close().await;
    app.drop_role(&db.pool).await;
}

#[tokio::test]
async fn an_enqueuer_can_change_no_table_create_nothing_and_call_no_internal_function() {
    let db = test_db().await;
    let app = Login::member_of(&db, "timelines_enqueuer").await;
    let pool = app.pool().await;
    crate::helpers::enqueue_noop(&pool, json!({})).await;

    // No table or sequence of the schema grants it any change, whatever is added later.
    let writable: Vec<String> = sqlx::query_scalar(
        "SELECT c.oid::regclass::text FROM pg_class c
          WHERE c.relnamespace = 'timelines'::regnamespace
            AND ((c.relkind IN ('r', 'p', 'v', 'm')
                  AND has_table_privilege(c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER'))
              OR (c.relkind = 'S' AND has_sequence_privilege(c.oid, 'USAGE, UPDATE')))",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(writable, Vec::<String>::new());

    for statement in [
        "INSERT INTO timelines.jobs (kind, payload) VALUES ('noop', '{}')",
        "UPDATE timelines.jobs SET state = 'succeeded'",
        "DELETE FROM timelines.jobs",
        "TRUNCATE timelines.jobs",
        "UPDATE timelines.workspaces SET rate_limit_per_minute = 100000",
        "INSERT INTO timelines.opt_outs (phone) VALUES ('+14155550123')",
        "DELETE FROM timelines.rate_limiter",
        "UPDATE timelines.quota_usage SET api_calls_used = 0",
        "UPDATE timelines.source_state SET cursor_value = now()",
        "SELECT nextval('timelines.jobs_id_seq')",
        "CREATE TABLE timelines.mine (x integer)",
        // Functions that change state with the caller's rights, and the owner's role set-up.
        "SELECT timelines.reserve_request('default', interval '1 second')",
        "SELECT timelines.reconcile_quota('default', '{}')",
        "SELECT timelines.setup_roles()",
        "SELECT timelines.create_role_if_missing('tl_never_created')",
    ] {
        let code = sqlstate(sqlx::query(statement).execute(&pool).await);
        assert_eq!(code, DENIED, "{statement}");
    }
    let state: String = sqlx::query_scalar("SELECT state FROM timelines.jobs")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(state, "queued");
    pool.close().await;
    app.drop_role(&db.pool).await;
}

#[tokio::test]
async fn setting_payloads_checked_does_not_let_an_enqueuer_skip_the_payload_check() {
    let db = test_db().await;
    let app = Login::member_of(&db, "timelines_enqueuer").await;
    let mut conn = PgConnection::connect(&app.url).await.unwrap();

    // For the session...
    sqlx::raw_sql("SET timelines.payloads_checked = on")
        .execute(&mut conn)
        .await
        .unwrap();
    let refused = sqlx::query("SELECT timelines.enqueue('send_message', $1)")
        .bind(json!({"phone": "+14155550123"}))
        .execute(&mut conn)
        .await;
    assert!(db_error(refused).contains(r#""text" or "file_uid" is required"#));

    // ...or for a transaction, as the pollers set it.
    let mut tx = conn.begin().await.unwrap();
    sqlx::raw_sql("SET LOCAL timelines.payloads_checked = on")
        .execute(&mut *tx)
        .await
        .unwrap();
    let refused = sqlx::query("SELECT timelines.enqueue('add_labels', $1)")
        .bind(json!({"phone": "+14155550123", "lables": ["vip"]}))
        .execute(&mut *tx)
        .await;
    assert!(db_error(refused).contains(r#"unknown field "lables""#));
    tx.rollback().await.unwrap();

    let mut tx = conn.begin().await.unwrap();
    sqlx::raw_sql("SET LOCAL timelines.payloads_checked = on")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("SELECT timelines.enqueue('noop', '{}')")
        .execute(&mut *tx)
        .await
        .unwrap();
    // enqueue put the caller's value back.
    let setting: String =
        sqlx::query_scalar("SELECT current_setting('timelines.payloads_checked')")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    assert_eq!(setting, "on");
    let direct =
        sqlx::query("INSERT INTO timelines.jobs (kind, payload) VALUES ('noop', '{\"x\": 1}')")
            .execute(&mut *tx)
            .await;
    assert_eq!(sqlstate(direct), DENIED);
    tx.rollback().await.unwrap();
    conn.close().await.unwrap();

    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM timelines.jobs")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(jobs, 0);
    app.drop_role(&db.pool).await;
}

#[tokio::test]
async fn the_pollers_trusted_insert_stays_open_to_the_service_role() {
    let db = test_db().await;
    let service = Login::member_of(&db, "timelines_service").await;
    let mut conn = PgConnection::connect(&service.url).await.unwrap();
    let insert =
        "INSERT INTO timelines.jobs (kind, payload) VALUES ('noop', '{\"rule_checked\": true}')";

    // Unchecked, the payload is refused...
    let refused = sqlx::query(insert).execute(&mut conn).await;
    assert!(db_error(refused).contains(r#"unknown field "rule_checked""#));
    // ...while a transaction that checked its payloads itself (as a poller does) skips the
    // per-row trigger: the bulk path keeps its speed.
    let mut tx = conn.begin().await.unwrap();
    sqlx::raw_sql("SET LOCAL timelines.payloads_checked = on")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(insert).execute(&mut *tx).await.unwrap();
    tx.rollback().await.unwrap();
    conn.close().await.unwrap();
    service.drop_role(&db.pool).await;
}

#[tokio::test]
async fn every_security_definer_function_pins_its_search_path_and_is_not_executable_by_public() {
    let db = test_db().await;
    let functions: Vec<(String, Vec<String>, bool)> = sqlx::query_as(
        "SELECT p.oid::regprocedure::text, coalesce(p.proconfig, '{}'),
                EXISTS (SELECT 1 FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
                         WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE')
           FROM pg_proc p
          WHERE p.pronamespace = 'timelines'::regnamespace AND p.prosecdef
          ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let names: Vec<&str> = functions.iter().map(|(name, ..)| name.as_str()).collect();
    for api in [
        "timelines.cancel(bigint)",
        "timelines.enqueue(",
        "timelines.retry(bigint)",
    ] {
        assert!(
            names.iter().any(|n| n.starts_with(api)),
            "{api} in {names:?}"
        );
    }
    for (name, config, public) in &functions {
        assert!(
            config.contains(&"search_path=pg_catalog, pg_temp".to_owned()),
            "{name}: {config:?}"
        );
        assert!(!public, "{name} is executable by PUBLIC");
    }
}
