//! The monthly quota ledger: counting, holding, the reserve for urgent jobs, period rollover,
//! reconciliation, and credits given back for failed messages. Clock injected where it matters.

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;
use sqlx::PgPool;

use crate::helpers::test_db;

async fn block(pool: &PgPool, priority: i32, sends: bool, at: DateTime<Utc>) -> Option<String> {
    sqlx::query_scalar("SELECT timelines.quota_block('default', $1, $2, $3)")
        .bind(priority)
        .bind(sends)
        .bind(at)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn count(pool: &PgPool, calls: i32, credits: i32, at: DateTime<Utc>) {
    sqlx::query("SELECT timelines.count_usage('default', $1, $2, $3)")
        .bind(calls)
        .bind(credits)
        .bind(at)
        .execute(pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn the_reserve_keeps_the_last_calls_for_urgent_jobs_and_the_new_period_frees_everything() {
    let db = test_db().await;
    sqlx::query("UPDATE timelines.workspaces SET monthly_api_calls = 100 WHERE name = 'default'")
        .execute(&db.pool)
        .await
        .unwrap();
    let at: DateTime<Utc> = "2026-03-14T12:00:00Z".parse().unwrap();
    count(&db.pool, 94, 0, at).await;
    assert_eq!(block(&db.pool, 0, false, at).await, None);
    count(&db.pool, 1, 0, at).await;
    // 95 of 100 used: bulk jobs (priority 0) stop at the 5 % reserve, urgent ones go on.
    let reason = block(&db.pool, 0, false, at)
        .await
        .expect("bulk jobs are held");
    assert!(
        reason.contains("95 of 100") && reason.contains("priority >= 10"),
        "{reason}"
    );
    assert_eq!(block(&db.pool, 10, false, at).await, None);
    count(&db.pool, 5, 0, at).await;
    assert!(
        block(&db.pool, 10, false, at).await.is_some(),
        "the reserve is used up too"
    );
    // April: a new calendar period with nothing used.
    let april: DateTime<Utc> = "2026-04-01T00:00:00Z".parse().unwrap();
    assert!(
        block(&db.pool, 0, false, april - TimeDelta::seconds(1))
            .await
            .is_some(),
        "still March: held"
    );
    assert_eq!(block(&db.pool, 0, false, april).await, None);
    let periods: Vec<(DateTime<Utc>, i64)> = sqlx::query_as(
        "SELECT period_start, api_calls_used FROM timelines.quota_usage ORDER BY period_start",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        periods,
        vec![("2026-03-01T00:00:00Z".parse().unwrap(), 100), (april, 0)]
    );
}

#[tokio::test]
async fn a_quota_reading_replaces_the_guess_and_blocks_sends_when_credits_run_out() {
    let db = test_db().await;
    let now = Utc::now();
    count(&db.pool, 7, 0, now).await;
    let reading = json!({
        "api_calls_quota": {"total": 200000, "used": 3, "period_start": (now - TimeDelta::days(3)).to_rfc3339(),
                            "period_end": (now + TimeDelta::days(27)).to_rfc3339()},
        "messaging_quota": {"total": 50, "used": 50}
    });
    sqlx::query("SELECT timelines.reconcile_quota('default', $1)")
        .bind(&reading)
        .execute(&db.pool)
        .await
        .unwrap();
    let (used, limit, messages): (i64, i64, i64) = sqlx::query_as(
        "SELECT api_calls_used, api_calls_limit, messages_used FROM timelines.quota_usage WHERE reconciled_at IS NOT NULL",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((limit, messages), (200000, 50));
    assert_eq!(
        used, 3,
        "the API's period replaced the calendar guess (its 7 calls lived in that guess)"
    );
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM timelines.quota_usage")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(rows, 1);
    let reason = block(&db.pool, 0, true, now).await.expect("sends are held");
    assert!(reason.starts_with("messaging quota: 50 of 50"), "{reason}");
    assert_eq!(
        block(&db.pool, 0, false, now).await,
        None,
        "reads still run"
    );
}
