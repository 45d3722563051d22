//! The shared rate limiter: GCRA spacing in Postgres with an injected clock, throttle pauses
//! shared by every process of a workspace.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::PgPool;
use timelines_sync::limiter::{WorkspaceLimiter, spacing};

use crate::helpers::test_db;

async fn reserve(
    pool: &PgPool,
    period: Duration,
    max_wait_s: f64,
    at: DateTime<Utc>,
) -> DateTime<Utc> {
    sqlx::query_scalar(
        "SELECT timelines.reserve_request('default', make_interval(secs => $1), make_interval(secs => $2), $3)",
    )
    .bind(period.as_secs_f64())
    .bind(max_wait_s)
    .bind(at)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn reservations_never_put_more_than_the_limit_in_any_window() {
    let db = test_db().await;
    let per_minute = 50;
    let period = spacing(per_minute);
    let start: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
    // 200 requests asking at once (any number of workers), then a few stragglers later.
    let mut slots = Vec::new();
    for _ in 0..200 {
        slots.push(reserve(&db.pool, period, 1e9, start).await);
    }
    for offset in [30, 500, 501] {
        slots.push(reserve(&db.pool, period, 1e9, start + TimeDelta::seconds(offset)).await);
    }
    slots.sort();
    for (i, first) in slots.iter().enumerate() {
        let in_window = slots[i..]
            .iter()
            .take_while(|t| **t < *first + TimeDelta::seconds(60))
            .count();
        assert!(
            in_window <= per_minute as usize,
            "{in_window} requests in the minute from {first}"
        );
    }
    // And the allowance is used: 200 back-to-back requests take about 200 / 49 minutes.
    let span = (slots[199] - slots[0]).as_seconds_f64();
    assert!((span - 199.0 * period.as_secs_f64()).abs() < 0.01, "{span}");
}

#[tokio::test]
async fn a_pause_moves_every_later_slot_past_it_and_backs_off_without_retry_after() {
    let db = test_db().await;
    let at: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
    let period = Duration::from_secs(1);
    reserve(&db.pool, period, 1e9, at).await;
    let until: DateTime<Utc> =
        sqlx::query_scalar("SELECT timelines.pause_requests('default', 30, $1)")
            .bind(at)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(until, at + TimeDelta::seconds(30));
    assert_eq!(
        reserve(&db.pool, period, 1e9, at + TimeDelta::seconds(1)).await,
        until
    );
    // No Retry-After: 5 s after the first throttle of the last five minutes... doubling.
    let pause = |seconds: i64| {
        let pool = db.pool.clone();
        async move {
            let t = at + TimeDelta::seconds(seconds);
            let until: DateTime<Utc> =
                sqlx::query_scalar("SELECT timelines.pause_requests('default', NULL, $1)")
                    .bind(t)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            (until - t).num_seconds()
        }
    };
    assert_eq!(pause(100).await, 10);
    assert_eq!(pause(101).await, 20);
    assert_eq!(
        pause(1000).await,
        5,
        "throttles older than five minutes are forgotten"
    );
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM timelines.throttle_events")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(events, 4);
}

#[tokio::test]
async fn a_slot_further_away_than_max_wait_is_not_reserved() {
    let db = test_db().await;
    let at: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
    sqlx::query("SELECT timelines.pause_requests('default', 60, $1)")
        .bind(at)
        .execute(&db.pool)
        .await
        .unwrap();
    let period = Duration::from_secs(1);
    for _ in 0..3 {
        assert_eq!(
            reserve(&db.pool, period, 30.0, at).await,
            at + TimeDelta::seconds(60)
        );
    }
    // Nothing was reserved meanwhile: the first request after the pause goes at its end.
    assert_eq!(
        reserve(&db.pool, period, 1e9, at + TimeDelta::seconds(61)).await,
        at + TimeDelta::seconds(61)
    );
}

#[tokio::test]
async fn a_throttle_seen_by_one_process_holds_back_the_others() {
    let db = test_db().await;
    // Two pools stand for two worker processes.
    let other = timelines_sync::db::connect(&db.url, 2).await.unwrap();
    let a = WorkspaceLimiter::new(db.pool.clone(), "default", 6000);
    let b = WorkspaceLimiter::new(other, "default", 6000);
    a.acquire().await.unwrap();
    b.acquire().await.unwrap();
    a.pause(Some(Duration::from_secs(45))).await;
    let wait = b
        .acquire()
        .await
        .expect_err("b must not send during a's pause");
    assert!(
        wait > Duration::from_secs(40) && wait <= Duration::from_secs(45),
        "{wait:?}"
    );
}
