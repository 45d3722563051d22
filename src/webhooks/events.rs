//! Every statement on `timelines.webhook_events`: storing a delivery, claiming the next due event,
//! recording how it was applied, and pruning old rows.

use std::time::Duration;

use serde_json::Value;
use sqlx::{PgConnection, PgExecutor, PgPool};

/// Event statuses (the table's CHECK lists the same).
pub mod status {
    /// Stored, waiting for the processor.
    pub const PENDING: &str = "pending";
    /// Applied.
    pub const PROCESSED: &str = "processed";
    /// A documented type with nothing to apply.
    pub const IGNORED: &str = "ignored";
    /// Not JSON, or a documented type missing what it needs.
    pub const MALFORMED: &str = "malformed";
    /// Valid JSON of a type the reference does not list.
    pub const UNKNOWN: &str = "unknown";
    /// Applying it failed for good.
    pub const FAILED: &str = "failed";
}

/// A delivery, classified by the receiver.
#[derive(Debug, Clone)]
pub struct Delivery<'a> {
    /// The workspace of the subscription.
    pub workspace: &'a str,
    /// The payload's `event_type`.
    pub event_type: Option<&'a str>,
    /// The body as JSON, when it is.
    pub payload: Option<&'a Value>,
    /// The body's bytes, kept when it is not JSON or was cleaned to be stored.
    pub body: Option<&'a [u8]>,
    /// `pending`, or `malformed` / `unknown` at once.
    pub status: &'static str,
    /// Why it is malformed or unknown.
    pub error: Option<String>,
    /// What identifies the event across deliveries, when the payload names it (else a hash of
    /// the payload is used; a body that is not JSON is never a duplicate).
    pub natural_key: Option<String>,
    /// The object it changes (see [`super::payload::object_key`]).
    pub object_key: Option<String>,
}

/// A stored delivery: its row, and whether the event was already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// The `webhook_events` id.
    pub id: i64,
    /// The same event was stored before (a repeated delivery): only counted.
    pub duplicate: bool,
}

/// Stores a delivery; a repeated one only increments `deliveries` of the first.
///
/// An event known by a hash of its body (chat and account events carry no id) is a repeat only
/// while no later event of its object was stored: a chat assigned, unassigned and assigned again
/// to the same person sends the first body a second time, and that one must be applied.
pub async fn store(pool: &PgPool, d: &Delivery<'_>) -> sqlx::Result<Stored> {
    if d.natural_key.is_none()
        && let (Some(payload), Some(object)) = (d.payload, &d.object_key)
    {
        // The earlier event's key is dropped, so the insert below makes a row of its own.
        sqlx::query(
            "UPDATE timelines.webhook_events e SET dedupe_key = NULL
              WHERE e.workspace = $1 AND e.dedupe_key = coalesce($2, '') || ':' || md5($3::jsonb::text)
                AND EXISTS (SELECT 1 FROM timelines.webhook_events x
                             WHERE x.workspace = $1 AND x.object_key = $4 AND x.id > e.id)",
        )
        .bind(d.workspace)
        .bind(d.event_type)
        .bind(payload)
        .bind(object)
        .execute(pool)
        .await?;
    }
    let (id, duplicate) = sqlx::query_as::<_, (i64, bool)>(
        "INSERT INTO timelines.webhook_events AS e
             (workspace, event_type, payload, body, status, error, dedupe_key, object_key)
         VALUES ($1, $2, $3, $4, $5, $6,
                 CASE WHEN $3::jsonb IS NOT NULL
                      THEN coalesce($7, coalesce($2, '') || ':' || md5($3::jsonb::text)) END, $8)
         ON CONFLICT (workspace, dedupe_key) WHERE dedupe_key IS NOT NULL
         DO UPDATE SET deliveries = e.deliveries + 1, last_delivery_at = now()
         RETURNING id, deliveries > 1",
    )
    .bind(d.workspace)
    .bind(d.event_type)
    .bind(d.payload)
    .bind(d.body)
    .bind(d.status)
    .bind(&d.error)
    .bind(&d.natural_key)
    .bind(&d.object_key)
    .fetch_one(pool)
    .await?;
    Ok(Stored { id, duplicate })
}

/// An event to apply, claimed (row-locked) by the caller's transaction.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    /// Its id.
    pub id: i64,
    /// Its workspace.
    pub workspace: String,
    /// Its type (pending events always have one).
    pub event_type: String,
    /// Its payload.
    pub payload: Value,
    /// Attempts before this one.
    pub attempts: i32,
}

/// Locks the next due pending event for the caller's transaction; other instances skip it. An
/// event waits while an earlier event of its object is pending (another instance is applying it,
/// or it waits for a retry), so one chat's or account's events are applied in arrival order.
pub async fn claim_next(conn: &mut PgConnection) -> sqlx::Result<Option<Claimed>> {
    sqlx::query_as(
        "SELECT e.id, e.workspace, e.event_type, e.payload, e.attempts FROM timelines.webhook_events e
          WHERE e.status = 'pending' AND e.next_attempt_at <= now()
            AND e.event_type IS NOT NULL AND e.payload IS NOT NULL
            AND NOT EXISTS (SELECT 1 FROM timelines.webhook_events p
                             WHERE p.status = 'pending' AND p.object_key IS NOT NULL
                               AND p.workspace = e.workspace AND p.object_key = e.object_key
                               AND p.id < e.id)
          ORDER BY e.next_attempt_at, e.id
          LIMIT 1 FOR UPDATE OF e SKIP LOCKED",
    )
    .fetch_optional(conn)
    .await
}

/// How applying an event ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// `processed`, `ignored`, `malformed` (or `failed` for a refused write).
    pub status: &'static str,
    /// Why not processed, for people.
    pub error: Option<String>,
    /// The message it concerned.
    pub message_uid: Option<String>,
    /// Jobs its inbound rules created.
    pub jobs_created: u64,
}

impl Applied {
    /// Applied, concerning `message_uid`.
    pub fn processed(message_uid: Option<&str>) -> Self {
        Self {
            status: status::PROCESSED,
            error: None,
            message_uid: message_uid.map(str::to_owned),
            jobs_created: 0,
        }
    }

    /// Not applied, with the reason.
    pub fn not_applied(status: &'static str, error: impl Into<String>) -> Self {
        Self {
            status,
            error: Some(error.into()),
            message_uid: None,
            jobs_created: 0,
        }
    }
}

/// Records the outcome of an attempt.
pub async fn finish(conn: &mut PgConnection, id: i64, applied: &Applied) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE timelines.webhook_events
            SET status = $2, error = $3, message_uid = coalesce($4, message_uid), jobs_created = $5,
                attempts = attempts + 1, processed_at = now()
          WHERE id = $1",
    )
    .bind(id)
    .bind(applied.status)
    .bind(&applied.error)
    .bind(&applied.message_uid)
    .bind(applied.jobs_created as i32)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records a failed attempt: the event is tried again after `delay`, or is `failed` once it
/// has had `max_attempts`. Returns whether it gave up.
pub async fn retry_later(
    db: impl PgExecutor<'_>,
    id: i64,
    error: &str,
    delay: Duration,
    max_attempts: u32,
) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "UPDATE timelines.webhook_events
            SET attempts = attempts + 1, error = $2,
                next_attempt_at = now() + make_interval(secs => $3),
                status = CASE WHEN attempts + 1 >= $4 THEN 'failed' ELSE 'pending' END,
                processed_at = CASE WHEN attempts + 1 >= $4 THEN now() END
          WHERE id = $1 AND status = 'pending'
          RETURNING status = 'failed'",
    )
    .bind(id)
    .bind(error)
    .bind(delay.as_secs_f64())
    .bind(max_attempts as i32)
    .fetch_optional(db)
    .await
    .map(|gave_up| gave_up.unwrap_or(false))
}

/// Deletes up to `batch` events past `retention` that are no longer pending; returns how many.
pub async fn prune(db: impl PgExecutor<'_>, retention: Duration, batch: i64) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "DELETE FROM timelines.webhook_events WHERE id IN (
             SELECT id FROM timelines.webhook_events
              WHERE status <> 'pending' AND received_at < now() - make_interval(secs => $1)
              ORDER BY received_at LIMIT $2)",
    )
    .bind(retention.as_secs_f64())
    .bind(batch)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}
