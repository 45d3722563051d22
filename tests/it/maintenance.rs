//! Leases, heartbeats, the rescuer and the pruner.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use timelines_sync::db::queue as q;
use timelines_sync::maintenance::{Pruner, PrunerConfig, Rescuer, RescuerConfig};
use timelines_sync::queue::{Worker, WorkerConfig};
use timelines_sync::shutdown::Shutdown;

use crate::helpers::{
    Recorder, enqueue_noop, fast_config, job_row, state_of, test_db, wait_for_state,
};

async fn expire_lease(pool: &sqlx::PgPool, id: i64) {
    sqlx::query(
        "UPDATE timelines.jobs SET locked_until = now() - interval '1 second' WHERE id = $1",
    )
    .bind(id)
    .execute(pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn the_rescuer_returns_an_expired_job_marked_interrupted_and_the_next_attempt_sees_it() {
    let db = test_db().await;
    let id = enqueue_noop(&db.pool, json!({})).await;
    let kinds = vec!["noop".to_string()];
    let first = q::claim(&db.pool, "crashed", 1, Duration::from_secs(30), &kinds)
        .await
        .unwrap()
        .remove(0);
    assert!(!first.interrupted);
    let rescuer = Rescuer::new(db.pool.clone(), RescuerConfig::default());
    assert_eq!(
        rescuer.run_once().await.unwrap(),
        0,
        "a live lease is left alone"
    );
    expire_lease(&db.pool, id).await;
    assert_eq!(rescuer.run_once().await.unwrap(), 1);
    let row = job_row(&db.pool, id).await;
    assert_eq!(row["state"], "retrying");
    assert_eq!(row["interrupted"], true);
    assert!(
        row["last_error"]
            .as_str()
            .unwrap()
            .contains("lease of worker crashed expired"),
        "{row}"
    );
    let second = q::claim(&db.pool, "healthy", 1, Duration::from_secs(30), &kinds)
        .await
        .unwrap()
        .remove(0);
    assert!(second.interrupted);
    assert_eq!(second.attempts, 2);
}

#[tokio::test]
async fn a_rescued_job_without_attempts_left_fails() {
    let db = test_db().await;
    let id: i64 = sqlx::query_scalar("SELECT timelines.enqueue('noop', '{}', max_attempts => 1)")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    q::claim(
        &db.pool,
        "crashed",
        1,
        Duration::from_secs(30),
        &["noop".to_string()],
    )
    .await
    .unwrap();
    expire_lease(&db.pool, id).await;
    Rescuer::new(db.pool.clone(), RescuerConfig::default())
        .run_once()
        .await
        .unwrap();
    let row = job_row(&db.pool, id).await;
    assert_eq!(row["state"], "failed");
    assert!(row["finished_at"].is_string());
}

#[tokio::test]
async fn the_rescuer_works_through_more_jobs_than_one_batch() {
    let db = test_db().await;
    q::enqueue_noops(&db.pool, 25, json!({})).await.unwrap();
    q::claim(
        &db.pool,
        "crashed",
        25,
        Duration::from_secs(30),
        &["noop".to_string()],
    )
    .await
    .unwrap();
    sqlx::query("UPDATE timelines.jobs SET locked_until = now() - interval '1 second'")
        .execute(&db.pool)
        .await
        .unwrap();
    let rescuer = Rescuer::new(
        db.pool.clone(),
        RescuerConfig {
            batch_size: 10,
            ..RescuerConfig::default()
        },
    );
    assert_eq!(rescuer.run_once().await.unwrap(), 25);
}

#[tokio::test]
async fn the_heartbeat_keeps_a_long_job_leased_past_its_lease() {
    let db = test_db().await;
    let id = enqueue_noop(&db.pool, json!({})).await;
    // A 1 s lease renewed every 333 ms, for a job that takes 2.5 s.
    let config = WorkerConfig {
        lease: Duration::from_secs(1),
        ..fast_config()
    };
    let recorder = Recorder::slow(Duration::from_millis(2500));
    let shutdown = Shutdown::new();
    let worker = tokio::spawn(
        Worker::new(db.pool.clone(), config, Arc::new(recorder.clone())).run(shutdown.clone()),
    );
    let rescuer = Rescuer::new(db.pool.clone(), RescuerConfig::default());
    wait_for_state(&db.pool, "running", 1).await;
    while state_of(&db.pool, id).await == "running" {
        assert_eq!(
            rescuer.run_once().await.unwrap(),
            0,
            "a renewed lease was rescued"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.begin();
    worker.await.unwrap().unwrap();
    assert_eq!(state_of(&db.pool, id).await, "succeeded");
    assert_eq!(recorder.runs().len(), 1);
}

#[tokio::test]
async fn a_crashed_workers_job_is_rescued_and_run_again_by_another_worker() {
    let db = test_db().await;
    let id = enqueue_noop(&db.pool, json!({})).await;
    let slow = Recorder::slow(Duration::from_secs(3600));
    let config = WorkerConfig {
        lease: Duration::from_secs(1),
        ..fast_config()
    };
    let crashing = tokio::spawn(
        Worker::new(db.pool.clone(), config.clone(), Arc::new(slow)).run(Shutdown::new()),
    );
    wait_for_state(&db.pool, "running", 1).await;
    // Aborting the task drops the worker with no chance to clean up: its heartbeat stops as if
    // the process had been killed.
    crashing.abort();
    let _ = crashing.await;

    let healthy = Recorder::default();
    let shutdown = Shutdown::new();
    let worker = tokio::spawn(
        Worker::new(
            db.pool.clone(),
            WorkerConfig {
                id: "healthy".into(),
                ..config
            },
            Arc::new(healthy.clone()),
        )
        .run(shutdown.clone()),
    );
    let rescuer = Rescuer::new(db.pool.clone(), RescuerConfig::default());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while state_of(&db.pool, id).await != "succeeded" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the job was never rescued"
        );
        rescuer.run_once().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.begin();
    worker.await.unwrap().unwrap();
    let runs = healthy.runs();
    assert_eq!(runs.len(), 1);
    assert!(
        runs[0].interrupted,
        "the second attempt must know the first was cut off"
    );
    assert_eq!(runs[0].attempts, 2);
}

#[tokio::test]
async fn the_pruner_deletes_only_finished_jobs_past_retention_in_batches() {
    let db = test_db().await;
    q::enqueue_noops(&db.pool, 30, json!({})).await.unwrap();
    // 10 old succeeded, 5 old failed, 5 old cancelled, 5 recent succeeded, 5 still queued.
    sqlx::query(
        "UPDATE timelines.jobs SET
             state = CASE WHEN id % 30 < 10 THEN 'succeeded' WHEN id % 30 < 15 THEN 'failed'
                          WHEN id % 30 < 20 THEN 'cancelled' WHEN id % 30 < 25 THEN 'succeeded' ELSE 'queued' END,
             finished_at = CASE WHEN id % 30 < 20 THEN now() - interval '8 days'
                                WHEN id % 30 < 25 THEN now() - interval '1 hour' END",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let pruner = Pruner::new(
        db.pool.clone(),
        PrunerConfig {
            retention: Duration::from_secs(7 * 24 * 3600),
            batch_size: 3,
            ..PrunerConfig::default()
        },
    );
    assert_eq!(pruner.run_once().await.unwrap(), 20);
    let left: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, count(*) FROM timelines.jobs GROUP BY state ORDER BY state")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(left, vec![("queued".into(), 5), ("succeeded".into(), 5)]);
    assert_eq!(pruner.run_once().await.unwrap(), 0);
}

#[tokio::test]
async fn the_pruner_trims_the_request_log_to_its_retention() {
    let db = test_db().await;
    sqlx::query(
        "INSERT INTO timelines.api_requests (workspace, method, path, status, duration_ms, requested_at)
         SELECT 'default', 'GET', '/chats', 200, 12.5, now() - make_interval(days => g)
           FROM generate_series(0, 39) g",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let pruner = Pruner::new(
        db.pool.clone(),
        PrunerConfig {
            request_log_retention: Duration::from_secs(30 * 24 * 3600),
            batch_size: 4,
            ..PrunerConfig::default()
        },
    );
    pruner.run_once().await.unwrap();
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM timelines.api_requests")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(left, 30);
}
