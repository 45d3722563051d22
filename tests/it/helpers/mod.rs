//! Shared test fixtures: databases, a recording handler, and queue shortcuts.

pub mod postgres;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;
use timelines_sync::queue::backoff::Backoff;
use timelines_sync::queue::{Handler, Job, Outcome, WorkerConfig, new_worker_id};

pub use postgres::{TestDb, test_db};

/// A handler for `noop` jobs whose outcome each test scripts, and which records every attempt.
#[derive(Clone, Default)]
pub struct Recorder {
    runs: Arc<Mutex<Vec<Job>>>,
    script: Arc<Mutex<HashMap<i64, Vec<Outcome>>>>,
    /// How long every attempt takes.
    pub delay: Duration,
}

impl Recorder {
    /// A recorder whose every attempt takes `delay`.
    pub fn slow(delay: Duration) -> Self {
        Self {
            delay,
            ..Self::default()
        }
    }
    /// Each attempt of `job` returns the next outcome in `outcomes` (then `Done`).
    pub fn script(&self, job: i64, outcomes: Vec<Outcome>) {
        self.script.lock().unwrap().insert(job, outcomes);
    }
    /// Every attempt seen, in order.
    pub fn runs(&self) -> Vec<Job> {
        self.runs.lock().unwrap().clone()
    }
    /// Attempts seen per job id.
    pub fn counts(&self) -> HashMap<i64, usize> {
        let mut counts = HashMap::new();
        for job in self.runs() {
            *counts.entry(job.id).or_default() += 1;
        }
        counts
    }
}

impl Handler for Recorder {
    fn kinds(&self) -> Vec<String> {
        vec!["noop".into()]
    }
    async fn handle(&self, job: Job) -> Outcome {
        let id = job.id;
        self.runs.lock().unwrap().push(job);
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let next = {
            let mut script = self.script.lock().unwrap();
            script
                .get_mut(&id)
                .and_then(|list| (!list.is_empty()).then(|| list.remove(0)))
        };
        match next {
            Some(Outcome::Fail(reason)) if reason == "panic" => panic!("scripted panic"),
            Some(outcome) => outcome,
            None => Outcome::Done(Some(json!({ "ran": id }))),
        }
    }
}

/// A worker config for tests: quick polls, short leases, no jitter in retry delays.
pub fn fast_config() -> WorkerConfig {
    WorkerConfig {
        id: new_worker_id(),
        concurrency: 8,
        claim_batch_size: 10,
        completion_batch_size: 100,
        poll_interval: Duration::from_millis(50),
        lease: Duration::from_secs(5),
        job_timeout: Duration::from_secs(30),
        backoff: Backoff {
            base: Duration::from_secs(60),
            max: Duration::from_secs(600),
            jitter: 0.0,
        },
    }
}

/// Enqueues a `noop` job through `timelines.enqueue`.
pub async fn enqueue_noop(pool: &PgPool, payload: Value) -> i64 {
    sqlx::query_scalar("SELECT timelines.enqueue('noop', $1)")
        .bind(payload)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// A job's row as JSON, for assertions on any column.
pub async fn job_row(pool: &PgPool, id: i64) -> Value {
    sqlx::query_scalar("SELECT to_jsonb(j) FROM timelines.jobs j WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// A job's state.
pub async fn state_of(pool: &PgPool, id: i64) -> String {
    sqlx::query_scalar("SELECT state FROM timelines.jobs WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Waits (up to 30 s) until `count(*)` of jobs in `state` reaches `n`.
pub async fn wait_for_state(pool: &PgPool, state: &str, n: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM timelines.jobs WHERE state = $1")
            .bind(state)
            .fetch_one(pool)
            .await
            .unwrap();
        if count >= n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {n} jobs in state {state} (have {count})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (up to 30 s) until job `id` is in `state`; returns its row.
pub async fn wait_for_job(pool: &PgPool, id: i64, state: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let row = job_row(pool, id).await;
        if row["state"] == state {
            return row;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job {id} never reached {state}: {row}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The error text of a failed statement.
pub fn db_error(result: Result<impl std::fmt::Debug, sqlx::Error>) -> String {
    match result {
        Ok(v) => panic!("expected the database to reject this, got {v:?}"),
        Err(sqlx::Error::Database(e)) => e.message().to_owned(),
        Err(e) => panic!("expected a database error, got {e}"),
    }
}
