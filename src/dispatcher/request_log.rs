//! The request log: every API request the service makes lands in `timelines.api_requests`.
//!
//! The client reports each request to an observer (a plain callback, called on the request's
//! task); the observer hands it to a channel, and one writer task inserts whatever has
//! accumulated in one statement. The log never holds the token or a message body.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::mpsc;

/// One logged request.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedRequest {
    /// The workspace whose token was used.
    pub workspace: String,
    /// The job it was made for, if any.
    pub job_id: Option<i64>,
    /// HTTP method.
    pub method: String,
    /// Endpoint path, without base URL and query string.
    pub path: String,
    /// HTTP status, when an answer arrived.
    pub status: Option<u16>,
    /// The failure class (`rate_limited`, `transient`, ...), none on success.
    pub error_class: Option<&'static str>,
    /// How long it took.
    pub duration: Duration,
    /// When it was sent.
    pub requested_at: DateTime<Utc>,
}

/// Where requests are reported; cheap to clone.
#[derive(Clone)]
pub struct RequestLog {
    tx: mpsc::Sender<LoggedRequest>,
    dropped: Arc<AtomicU64>,
}

/// Most rows written per statement.
const BATCH: usize = 500;

impl RequestLog {
    /// Starts the writer task on `pool`. The task ends when every `RequestLog` clone is dropped
    /// and the channel is drained; await the handle to flush at shutdown.
    pub fn start(pool: PgPool) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(10_000);
        let dropped = Arc::new(AtomicU64::new(0));
        let handle = tokio::spawn(write(pool, rx, dropped.clone()));
        (Self { tx, dropped }, handle)
    }

    /// Queues one record. Never blocks a request: if the writer is 10,000 rows behind (the
    /// database is down), the record is counted as dropped and a warning is logged on the next
    /// write.
    pub fn record(&self, request: LoggedRequest) {
        if self.tx.try_send(request).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn write(pool: PgPool, mut rx: mpsc::Receiver<LoggedRequest>, dropped: Arc<AtomicU64>) {
    let mut batch = Vec::with_capacity(BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        if let Err(error) = insert(&pool, &batch).await {
            tracing::warn!(%error, rows = batch.len(), "writing the API request log failed; rows lost");
        }
        batch.clear();
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            tracing::warn!(
                lost,
                "API request log records dropped: the writer fell behind"
            );
        }
    }
}

async fn insert(pool: &PgPool, batch: &[LoggedRequest]) -> sqlx::Result<()> {
    let workspaces: Vec<&str> = batch.iter().map(|r| r.workspace.as_str()).collect();
    let jobs: Vec<Option<i64>> = batch.iter().map(|r| r.job_id).collect();
    let methods: Vec<&str> = batch.iter().map(|r| r.method.as_str()).collect();
    let paths: Vec<&str> = batch.iter().map(|r| r.path.as_str()).collect();
    let statuses: Vec<Option<i32>> = batch.iter().map(|r| r.status.map(i32::from)).collect();
    let classes: Vec<Option<&str>> = batch.iter().map(|r| r.error_class).collect();
    let durations: Vec<f64> = batch
        .iter()
        .map(|r| r.duration.as_secs_f64() * 1000.0)
        .collect();
    let times: Vec<DateTime<Utc>> = batch.iter().map(|r| r.requested_at).collect();
    sqlx::query(
        "INSERT INTO timelines.api_requests (workspace, job_id, method, path, status, error_class, duration_ms,
                                             requested_at)
         SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::int[], $6::text[],
                              $7::float8[], $8::timestamptz[])",
    )
    .bind(&workspaces)
    .bind(&jobs)
    .bind(&methods)
    .bind(&paths)
    .bind(&statuses)
    .bind(&classes)
    .bind(&durations)
    .bind(&times)
    .execute(pool)
    .await?;
    Ok(())
}
