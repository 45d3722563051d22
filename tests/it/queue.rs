//! The queue engine: claiming, outcomes, concurrency, notify wake-up.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use timelines_sync::db::queue as q;
use timelines_sync::queue::{Outcome, Worker, WorkerConfig};
use timelines_sync::shutdown::Shutdown;

use crate::helpers::{
    Recorder, enqueue_noop, fast_config, job_row, state_of, test_db, wait_for_state,
};

fn noop_kinds() -> Vec<String> {
    vec!["noop".into()]
}

/// Starts a worker in the background; returns its shutdown handle and task.
fn spawn_worker(
    pool: &sqlx::PgPool,
    config: WorkerConfig,
    handler: Recorder,
) -> (
    Shutdown,
    tokio::task::JoinHandle<anyhow::Result<Arc<timelines_sync::queue::WorkerStats>>>,
) {
    let shutdown = Shutdown::new();
    let worker = Worker::new(pool.clone(), config, Arc::new(handler));
    (shutdown.clone(), tokio::spawn(worker.run(shutdown)))
}

#[tokio::test]
async fn claims_follow_priority_then_run_at_then_id() {
    let db = test_db().await;
    let low_old: i64 = sqlx::query_scalar(
        "SELECT timelines.enqueue('noop', '{}', run_at => now() - interval '1 hour')",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let high: i64 = sqlx::query_scalar("SELECT timelines.enqueue('noop', '{}', priority => 5)")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let low_a = enqueue_noop(&db.pool, json!({})).await;
    let low_b = enqueue_noop(&db.pool, json!({})).await;
    sqlx::query("UPDATE timelines.jobs SET run_at = (SELECT run_at FROM timelines.jobs WHERE id = $1) WHERE id = $2")
        .bind(low_a)
        .bind(low_b)
        .execute(&db.pool)
        .await
        .unwrap();
    let future: i64 = sqlx::query_scalar(
        "SELECT timelines.enqueue('noop', '{}', priority => 9, run_at => now() + interval '1 day')",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();

    let claimed = q::claim(&db.pool, "w", 10, Duration::from_secs(30), &noop_kinds())
        .await
        .unwrap();
    let mut ids: Vec<i64> = claimed.iter().map(|j| j.id).collect();
    // RETURNING order is not guaranteed; claim one at a time to check the order itself.
    ids.sort();
    assert_eq!(ids.len(), 4);
    assert!(!ids.contains(&future), "a job due tomorrow is not claimed");
    sqlx::query("UPDATE timelines.jobs SET state = 'queued', attempts = 0, locked_by = NULL, locked_until = NULL WHERE state = 'running'")
        .execute(&db.pool)
        .await
        .unwrap();
    let mut order = Vec::new();
    for _ in 0..4 {
        let job = q::claim(&db.pool, "w", 1, Duration::from_secs(30), &noop_kinds())
            .await
            .unwrap()
            .remove(0);
        order.push(job.id);
    }
    assert_eq!(order, vec![high, low_old, low_a, low_b]);
}

#[tokio::test]
async fn a_claim_takes_only_the_kinds_the_worker_handles() {
    let db = test_db().await;
    sqlx::query("SELECT timelines.enqueue('refresh_quota', '{}')")
        .execute(&db.pool)
        .await
        .unwrap();
    let noop = enqueue_noop(&db.pool, json!({})).await;
    let claimed = q::claim(&db.pool, "w", 10, Duration::from_secs(30), &noop_kinds())
        .await
        .unwrap();
    assert_eq!(claimed.iter().map(|j| j.id).collect::<Vec<_>>(), vec![noop]);
    let row = job_row(&db.pool, noop).await;
    assert_eq!(
        (
            row["state"].as_str(),
            row["attempts"].as_i64(),
            row["locked_by"].as_str()
        ),
        (Some("running"), Some(1), Some("w"))
    );
    assert!(row["locked_until"].is_string());
}

#[tokio::test]
async fn a_successful_job_stores_its_result() {
    let db = test_db().await;
    let id = enqueue_noop(&db.pool, json!({})).await;
    let (shutdown, handle) = spawn_worker(&db.pool, fast_config(), Recorder::default());
    wait_for_state(&db.pool, "succeeded", 1).await;
    shutdown.begin();
    handle.await.unwrap().unwrap();
    let row = job_row(&db.pool, id).await;
    assert_eq!(row["result"], json!({"ran": id}));
    assert_eq!(row["attempts"], 1);
    assert!(row["finished_at"].is_string());
    assert_eq!(row["locked_by"], Value::Null);
}

#[tokio::test]
async fn a_retry_uses_an_attempt_records_the_error_and_waits_the_backoff() {
    let db = test_db().await;
    let id = enqueue_noop(&db.pool, json!({})).await;
    let recorder = Recorder::default();
    recorder.script(id, vec![Outcome::retry("connection reset")]);
    let (shutdown, handle) = spawn_worker(&db.pool, fast_config(), recorder.clone());
    wait_for_state(&db.pool, "retrying", 1).await;
    shutdown.begin();
    handle.await.unwrap().unwrap();
    let row = job_row(&db.pool, id).await;
    assert_eq!(row["attempts"], 1);
    assert_eq!(row["last_error"], "connection reset");
    assert_eq!(row["errors"][0]["attempt"], 1);
    assert_eq!(row["errors"][0]["error"], "connection reset");
    // fast_config's backoff: 60 s after the first attempt, no jitter.
    let wait: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM run_at - now())::float8 FROM timelines.jobs WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!((55.0..=60.5).contains(&wait), "{wait}");
    assert_eq!(recorder.runs().len(), 1);
}

#[tokio::test]
async fn a_job_fails_for_good_when_its_attempts_are_used_up() {
    let db = test_db().await;
    let id: i64 = sqlx::query_scalar("SELECT timelines.enqueue('noop', '{}', max_attempts => 3)")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let recorder = Recorder::default();
    let retry_now = || Outcome::Retry {
        error: "503 from upstream".into(),
        delay: Some(Duration::ZERO),
    };
    recorder.script(id, vec![retry_now(), retry_now(), retry_now(), retry_now()]);
    let (shutdown, handle) = spawn_worker(&db.pool, fast_config(), recorder.clone());
    wait_for_state(&db.pool, "failed", 1).await;
    shutdown.begin();
    handle.await.unwrap().unwrap();
    let row = job_row(&db.pool, id).await;
    assert_eq!(row["attempts"], 3);
    assert_eq!(row["errors"].as_array().unwrap().len(), 3);
    assert!(row["finished_at"].is_string());
    assert_eq!(recorder.runs().len(), 3);
}

#[tokio::test]
async fn a_snooze_reschedules_without_using_an_attempt() {
    let db = test_db().await;
    let id = enqueue_noop(&db.pool, json!({})).await;
    let recorder = Recorder::default();
    recorder.script(
        id,
        vec![
            Outcome::Snooze(Duration::ZERO),
            Outcome::Snooze(Duration::ZERO),
            Outcome::done(),
        ],
    );
    let (shutdown, handle) = spawn_worker(&db.pool, fast_config(), recorder.clone());
    wait_for_state(&db.pool, "succeeded", 1).await;
    shutdown.begin();
    handle.await.unwrap().unwrap();
    let row = job_row(&db.pool, id).await;
    assert_eq!(recorder.runs().len(), 3);
    assert_eq!(
        recorder
            .runs()
            .iter()
            .map(|j| j.attempts)
            .collect::<Vec<_>>(),
        vec![1, 1, 1]
    );
    assert_eq!(row["attempts"], 1);
    assert_eq!(row["last_error"], Value::Null);
}

#[tokio::test]
async fn a_long_snooze_leaves_the_job_queued_for_later() {
    let db = test_db().await;
    let id = enqueue_noop(&db.pool, json!({})).await;
    let recorder = Recorder::default();
    recorder.script(id, vec![Outcome::Snooze(Duration::from_secs(120))]);
    let (shutdown, handle) = spawn_worker(&db.pool, fast_config(), recorder.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while recorder.runs().is_empty() || state_of(&db.pool, id).await != "queued" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the snooze was not written"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.begin();
    handle.await.unwrap().unwrap();
    let row = job_row(&db.pool, id).await;
    assert_eq!(row["attempts"], 0);
    let wait: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM run_at - now())::float8 FROM timelines.jobs WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(wait > 100.0, "{wait}");
}

#[tokio::test]
async fn a_permanent_failure_fails_at_once_with_the_reason() {
    let db = test_db().await;
    let id = enqueue_noop(&db.pool, json!({})).await;
    let recorder = Recorder::default();
    recorder.script(
        id,
        vec![Outcome::fail("400: phone is not a WhatsApp number")],
    );
    let (shutdown, handle) = spawn_worker(&db.pool, fast_config(), recorder);
    wait_for_state(&db.pool, "failed", 1).await;
    shutdown.begin();
    handle.await.unwrap().unwrap();
    let row = job_row(&db.pool, id).await;
    assert_eq!(row["last_error"], "400: phone is not a WhatsApp number");
    assert_eq!(row["attempts"], 1);
}

#[tokio::test]
async fn a_panicking_handler_costs_an_attempt_not_the_worker() {
    let db = test_db().await;
    let id = enqueue_noop(&db.pool, json!({})).await;
    let other = enqueue_noop(&db.pool, json!({})).await;
    let recorder = Recorder::default();
    recorder.script(id, vec![Outcome::fail("panic")]);
    let (shutdown, handle) = spawn_worker(&db.pool, fast_config(), recorder);
    wait_for_state(&db.pool, "retrying", 1).await;
    wait_for_state(&db.pool, "succeeded", 1).await;
    shutdown.begin();
    handle.await.unwrap().unwrap();
    assert_eq!(
        job_row(&db.pool, id).await["last_error"],
        "the handler panicked: scripted panic"
    );
    assert_eq!(state_of(&db.pool, other).await, "succeeded");
}

#[tokio::test]
async fn an_attempt_that_runs_too_long_times_out_as_a_failed_attempt() {
    let db = test_db().await;
    let id = enqueue_noop(&db.pool, json!({})).await;
    let recorder = Recorder::slow(Duration::from_secs(60));
    let config = WorkerConfig {
        job_timeout: Duration::from_millis(200),
        ..fast_config()
    };
    let (shutdown, handle) = spawn_worker(&db.pool, config, recorder);
    wait_for_state(&db.pool, "retrying", 1).await;
    shutdown.begin();
    handle.await.unwrap().unwrap();
    assert_eq!(
        job_row(&db.pool, id).await["last_error"],
        "attempt timed out after 0 s"
    );
}

#[tokio::test]
async fn several_workers_share_the_queue_and_run_every_job_exactly_once() {
    let db = test_db().await;
    q::enqueue_noops(&db.pool, 3000, json!({})).await.unwrap();
    let recorder = Recorder::default();
    let mut workers = Vec::new();
    for _ in 0..4 {
        let config = WorkerConfig {
            concurrency: 16,
            claim_batch_size: 25,
            ..fast_config()
        };
        workers.push(spawn_worker(&db.pool, config, recorder.clone()));
    }
    wait_for_state(&db.pool, "succeeded", 3000).await;
    for (shutdown, handle) in workers {
        shutdown.begin();
        handle.await.unwrap().unwrap();
    }
    let counts = recorder.counts();
    assert_eq!(counts.len(), 3000);
    assert!(counts.values().all(|&n| n == 1), "a job ran twice");
    let attempts: i64 = sqlx::query_scalar("SELECT sum(attempts) FROM timelines.jobs")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(attempts, 3000);
}

#[tokio::test]
async fn a_notify_wakes_an_idle_worker_without_waiting_for_the_poll() {
    let db = test_db().await;
    // A poll interval of an hour: only the NOTIFY can get the job run inside the wait below.
    let config = WorkerConfig {
        poll_interval: Duration::from_secs(3600),
        ..fast_config()
    };
    let recorder = Recorder::default();
    let (shutdown, handle) = spawn_worker(&db.pool, config, recorder.clone());
    // Let the worker find the queue empty and go to sleep.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let id = enqueue_noop(&db.pool, json!({})).await;
    wait_for_state(&db.pool, "succeeded", 1).await;
    // A second one, inserted by plain SQL.
    sqlx::query("INSERT INTO timelines.jobs (kind, payload) VALUES ('noop', '{}')")
        .execute(&db.pool)
        .await
        .unwrap();
    wait_for_state(&db.pool, "succeeded", 2).await;
    shutdown.begin();
    handle.await.unwrap().unwrap();
    assert_eq!(recorder.runs()[0].id, id);
}

#[tokio::test]
async fn a_job_cancelled_while_running_stays_cancelled() {
    let db = test_db().await;
    let id = enqueue_noop(&db.pool, json!({})).await;
    let recorder = Recorder::slow(Duration::from_millis(500));
    let (shutdown, handle) = spawn_worker(&db.pool, fast_config(), recorder);
    wait_for_state(&db.pool, "running", 1).await;
    let cancelled: bool = sqlx::query_scalar("SELECT timelines.cancel($1)")
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(cancelled);
    shutdown.begin();
    let stats = handle.await.unwrap().unwrap();
    assert_eq!(
        stats.discarded.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(state_of(&db.pool, id).await, "cancelled");
}

#[tokio::test]
async fn a_worker_that_lost_its_lease_cannot_overwrite_the_next_attempt() {
    let db = test_db().await;
    let id = enqueue_noop(&db.pool, json!({})).await;
    let kinds = noop_kinds();
    let stale = q::claim(&db.pool, "old-worker", 1, Duration::from_secs(30), &kinds)
        .await
        .unwrap()
        .remove(0);
    // The old worker's lease runs out and the job is rescued and claimed again.
    sqlx::query(
        "UPDATE timelines.jobs SET locked_until = now() - interval '1 second' WHERE id = $1",
    )
    .bind(id)
    .execute(&db.pool)
    .await
    .unwrap();
    assert_eq!(q::rescue_expired(&db.pool, 100).await.unwrap(), 1);
    let fresh = q::claim(&db.pool, "new-worker", 1, Duration::from_secs(30), &kinds)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(fresh.attempts, 2);
    let done = |job: &timelines_sync::queue::Job| q::Finished {
        id: job.id,
        attempt: job.attempts,
        completion: q::Completion::Failed {
            error: "late".into(),
        },
    };
    let written = q::complete(&db.pool, "old-worker", &[done(&stale)])
        .await
        .unwrap();
    assert!(written.is_empty());
    assert_eq!(state_of(&db.pool, id).await, "running");
    let written = q::complete(
        &db.pool,
        "new-worker",
        &[q::Finished {
            completion: q::Completion::Succeeded(None),
            ..done(&fresh)
        }],
    )
    .await
    .unwrap();
    assert_eq!(written, vec![id]);
    assert_eq!(state_of(&db.pool, id).await, "succeeded");
}

#[tokio::test]
async fn a_held_job_uses_no_attempt_and_comes_back_when_its_recheck_time_comes() {
    let db = test_db().await;
    let id = enqueue_noop(&db.pool, json!({})).await;
    let recorder = Recorder::default();
    recorder.script(
        id,
        vec![Outcome::Hold {
            reason: "messaging quota used up".into(),
            recheck_after: Duration::ZERO,
        }],
    );
    let (shutdown, handle) = spawn_worker(&db.pool, fast_config(), recorder.clone());
    wait_for_state(&db.pool, "held", 1).await;
    let row = job_row(&db.pool, id).await;
    assert_eq!(row["attempts"], 0);
    assert_eq!(row["last_error"], "messaging quota used up");
    let rescuer = timelines_sync::maintenance::Rescuer::new(db.pool.clone(), Default::default());
    rescuer.run_once().await.unwrap();
    wait_for_state(&db.pool, "succeeded", 1).await;
    shutdown.begin();
    handle.await.unwrap().unwrap();
    assert_eq!(recorder.runs().len(), 2);
    assert_eq!(job_row(&db.pool, id).await["attempts"], 1);
}

#[tokio::test]
async fn after_an_uncertain_attempt_every_later_one_is_marked_interrupted_until_success() {
    let db = test_db().await;
    let id = enqueue_noop(&db.pool, json!({})).await;
    let recorder = Recorder::default();
    recorder.script(
        id,
        vec![
            Outcome::Uncertain {
                error: "connection dropped after sending".into(),
                delay: Some(Duration::ZERO),
            },
            // the checking attempt itself fails plainly: the mark must survive it
            Outcome::Retry {
                error: "502 while checking".into(),
                delay: Some(Duration::ZERO),
            },
        ],
    );
    let (shutdown, handle) = spawn_worker(&db.pool, fast_config(), recorder.clone());
    wait_for_state(&db.pool, "succeeded", 1).await;
    shutdown.begin();
    handle.await.unwrap().unwrap();
    let runs = recorder.runs();
    assert_eq!(
        runs.iter()
            .map(|j| (j.attempts, j.interrupted))
            .collect::<Vec<_>>(),
        vec![(1, false), (2, true), (3, true)]
    );
    assert_eq!(job_row(&db.pool, id).await["interrupted"], false);
}

#[tokio::test]
async fn an_attempt_whose_job_was_cancelled_is_stopped_at_the_next_heartbeat() {
    let db = test_db().await;
    let id = enqueue_noop(&db.pool, json!({})).await;
    // An attempt that would run for an hour, with leases renewed every 333 ms.
    let config = WorkerConfig {
        lease: Duration::from_secs(1),
        ..fast_config()
    };
    let (shutdown, handle) =
        spawn_worker(&db.pool, config, Recorder::slow(Duration::from_secs(3600)));
    wait_for_state(&db.pool, "running", 1).await;
    let cancelled: bool = sqlx::query_scalar("SELECT timelines.cancel($1)")
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(cancelled);
    tokio::time::sleep(Duration::from_millis(800)).await;
    // Stage one only: the worker can stop only if the hour-long attempt is already gone.
    shutdown.begin();
    let stats = tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .expect("the cancelled attempt kept running")
        .unwrap()
        .unwrap();
    assert_eq!(stats.released.load(std::sync::atomic::Ordering::Relaxed), 0);
    let row = job_row(&db.pool, id).await;
    assert_eq!(
        (row["state"].as_str(), row["interrupted"].as_bool()),
        (Some("cancelled"), Some(true))
    );
}

/// Adds workspaces `names` (the jobs table accepts configured workspaces only).
async fn add_workspaces(pool: &sqlx::PgPool, names: &[&str]) {
    for name in names {
        sqlx::query("INSERT INTO timelines.workspaces (name, api_url, rate_limit_per_minute, monthly_api_calls) VALUES ($1, 'https://x.example', 50, 200000)")
            .bind(name)
            .execute(pool)
            .await
            .unwrap();
    }
}

/// Enqueues `count` no-op jobs in `workspace` with `priority`, due `age_minutes` ago.
async fn enqueue_in(
    pool: &sqlx::PgPool,
    workspace: &str,
    count: i64,
    priority: i32,
    age_minutes: i32,
) {
    sqlx::query(
        "INSERT INTO timelines.jobs (kind, payload, workspace, priority, run_at)
         SELECT 'noop', '{}', $1, $3, now() - make_interval(mins => $4) FROM generate_series(1, $2)",
    )
    .bind(workspace)
    .bind(count)
    .bind(priority)
    .bind(age_minutes)
    .execute(pool)
    .await
    .unwrap();
}

fn workspaces(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn a_claim_over_several_workspaces_takes_them_in_turn() {
    let db = test_db().await;
    add_workspaces(&db.pool, &["bulk", "small"]).await;
    // A mass send queued an hour ago in one workspace, three newer jobs in another.
    enqueue_in(&db.pool, "bulk", 200, 0, 60).await;
    enqueue_in(&db.pool, "small", 3, 0, 1).await;
    let kinds = noop_kinds();
    let scope_names = workspaces(&["bulk", "small"]);
    let scope = q::ClaimScope {
        kinds: &kinds,
        workspaces: Some(&scope_names),
    };
    let lease = Duration::from_secs(30);

    let count = |jobs: &[timelines_sync::queue::Job], ws: &str| {
        jobs.iter().filter(|j| j.workspace == ws).count()
    };
    let first = q::claim_scoped(&db.pool, "w", 4, lease, scope)
        .await
        .unwrap();
    assert_eq!((count(&first, "bulk"), count(&first, "small")), (2, 2));
    let second = q::claim_scoped(&db.pool, "w", 4, lease, scope)
        .await
        .unwrap();
    assert_eq!((count(&second, "bulk"), count(&second, "small")), (3, 1));
    // With the small workspace drained, a claim fills up from the other.
    let third = q::claim_scoped(&db.pool, "w", 10, lease, scope)
        .await
        .unwrap();
    assert_eq!((count(&third, "bulk"), count(&third, "small")), (10, 0));
    // An unscoped claim keeps the plain order: the oldest first, whatever the workspace.
    enqueue_in(&db.pool, "small", 1, 0, 1).await;
    let plain = q::claim(&db.pool, "w", 5, lease, &kinds).await.unwrap();
    assert_eq!(count(&plain, "bulk"), 5);
}

#[tokio::test]
async fn within_its_turn_each_workspace_keeps_priority_order() {
    let db = test_db().await;
    add_workspaces(&db.pool, &["a", "b"]).await;
    enqueue_in(&db.pool, "a", 5, 0, 60).await;
    enqueue_in(&db.pool, "b", 5, 0, 60).await;
    let urgent_a: i64 = sqlx::query_scalar(
        "SELECT timelines.enqueue('noop', '{}', workspace => 'a', priority => 10)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let urgent_b: i64 = sqlx::query_scalar(
        "SELECT timelines.enqueue('noop', '{}', workspace => 'b', priority => 10)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let kinds = noop_kinds();
    let names = workspaces(&["a", "b"]);
    let scope = q::ClaimScope {
        kinds: &kinds,
        workspaces: Some(&names),
    };
    let claimed = q::claim_scoped(&db.pool, "w", 2, Duration::from_secs(30), scope)
        .await
        .unwrap();
    let mut ids: Vec<i64> = claimed.iter().map(|j| j.id).collect();
    ids.sort();
    assert_eq!(ids, vec![urgent_a, urgent_b]);
}

#[tokio::test]
async fn concurrent_fair_claims_take_every_job_exactly_once() {
    let db = test_db().await;
    add_workspaces(&db.pool, &["a", "b", "c"]).await;
    for ws in ["a", "b", "c"] {
        enqueue_in(&db.pool, ws, 400, 0, 5).await;
    }
    let mut claimers = Vec::new();
    for n in 0..6 {
        let pool = db.pool.clone();
        claimers.push(tokio::spawn(async move {
            let kinds = noop_kinds();
            let names = workspaces(&["a", "b", "c"]);
            let scope = q::ClaimScope {
                kinds: &kinds,
                workspaces: Some(&names),
            };
            let mut mine = Vec::new();
            loop {
                let jobs =
                    q::claim_scoped(&pool, &format!("w{n}"), 7, Duration::from_secs(30), scope)
                        .await
                        .unwrap();
                if jobs.is_empty() {
                    break mine;
                }
                mine.extend(jobs.into_iter().map(|j| j.id));
            }
        }));
    }
    let mut all = Vec::new();
    for claimer in claimers {
        all.extend(claimer.await.unwrap());
    }
    let total = all.len();
    all.sort();
    all.dedup();
    assert_eq!(
        (total, all.len()),
        (1200, 1200),
        "every job claimed, none twice"
    );
    let attempts: i64 =
        sqlx::query_scalar("SELECT sum(attempts) FROM timelines.jobs WHERE state = 'running'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(attempts, 1200);
}
