//! Graceful shutdown: stop claiming, let running jobs finish, release what is cut off.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use timelines_sync::db::queue as q;
use timelines_sync::queue::Worker;
use timelines_sync::shutdown::Shutdown;

use crate::helpers::{Recorder, fast_config, job_row, test_db, wait_for_state};

#[tokio::test]
async fn running_jobs_finish_and_nothing_new_is_claimed_after_shutdown_begins() {
    let db = test_db().await;
    q::enqueue_noops(&db.pool, 3, json!({})).await.unwrap();
    let recorder = Recorder::slow(Duration::from_millis(400));
    let config = timelines_sync::queue::WorkerConfig {
        concurrency: 3,
        ..fast_config()
    };
    let shutdown = Shutdown::new();
    let worker = tokio::spawn(
        Worker::new(db.pool.clone(), config, Arc::new(recorder.clone())).run(shutdown.clone()),
    );
    wait_for_state(&db.pool, "running", 3).await;
    shutdown.begin();
    q::enqueue_noops(&db.pool, 5, json!({})).await.unwrap();
    worker.await.unwrap().unwrap();
    let counts: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, count(*) FROM timelines.jobs GROUP BY state ORDER BY state")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(counts, vec![("queued".into(), 5), ("succeeded".into(), 3)]);
    assert_eq!(recorder.runs().len(), 3);
}

#[tokio::test]
async fn jobs_still_running_when_the_grace_period_ends_are_released_as_interrupted() {
    let db = test_db().await;
    q::enqueue_noops(&db.pool, 2, json!({})).await.unwrap();
    let recorder = Recorder::slow(Duration::from_secs(3600));
    let shutdown = Shutdown::new();
    let worker = tokio::spawn(
        Worker::new(db.pool.clone(), fast_config(), Arc::new(recorder)).run(shutdown.clone()),
    );
    wait_for_state(&db.pool, "running", 2).await;
    shutdown.begin();
    shutdown.abort();
    let stats = worker.await.unwrap().unwrap();
    assert_eq!(stats.released.load(std::sync::atomic::Ordering::Relaxed), 2);
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM timelines.jobs")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    for id in ids {
        let row = job_row(&db.pool, id).await;
        assert_eq!(row["state"], "retrying");
        assert_eq!(
            row["attempts"], 0,
            "shutting down does not use up an attempt"
        );
        assert_eq!(row["interrupted"], true);
        assert_eq!(row["locked_by"], serde_json::Value::Null);
    }
}

#[tokio::test]
async fn an_idle_worker_stops_promptly() {
    let db = test_db().await;
    let shutdown = Shutdown::new();
    let worker = tokio::spawn(
        Worker::new(
            db.pool.clone(),
            fast_config(),
            Arc::new(Recorder::default()),
        )
        .run(shutdown.clone()),
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    shutdown.begin();
    tokio::time::timeout(Duration::from_secs(10), worker)
        .await
        .expect("worker did not stop")
        .unwrap()
        .unwrap();
}
