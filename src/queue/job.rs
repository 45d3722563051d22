//! A claimed job, as a handler sees it.

use chrono::{DateTime, Utc};
use serde_json::Value;

/// A job the worker has claimed (its state is `running` and it holds the lease).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Job {
    /// `timelines.jobs.id`.
    pub id: i64,
    /// The TimelinesAI workspace it runs against.
    pub workspace: String,
    /// What to do (`send_message`, ...).
    pub kind: String,
    /// The arguments, validated by the database at insert time.
    pub payload: Value,
    /// Higher runs first.
    pub priority: i32,
    /// This attempt's number, starting at 1.
    pub attempts: i32,
    /// After this many failed attempts the job fails for good.
    pub max_attempts: i32,
    /// The user's deduplication key, if any.
    pub idempotency_key: Option<String>,
    /// True when the previous attempt was cut off (crash, kill, shutdown) and may or may not have
    /// had its effect: a handler with side effects must check before repeating them.
    pub interrupted: bool,
    /// When the job was created.
    pub created_at: DateTime<Utc>,
    /// What earlier attempts recorded as progress (see `db::queue::checkpoint`), e.g. the uid of
    /// a file uploaded before the send that failed.
    pub result: Option<Value>,
}

impl Job {
    /// Whether this is the last attempt the job gets.
    pub fn is_last_attempt(&self) -> bool {
        self.attempts >= self.max_attempts
    }
}

/// The states of `timelines.jobs.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    /// Waiting to run at `run_at`.
    Queued,
    /// Claimed by a worker that holds its lease.
    Running,
    /// Waiting for another attempt after a failed or interrupted one.
    Retrying,
    /// Waiting for quota or a send window.
    Held,
    /// Done (terminal).
    Succeeded,
    /// Gave up (terminal).
    Failed,
    /// Cancelled by a user (terminal).
    Cancelled,
}

impl JobState {
    /// Every state, in lifecycle order.
    pub const ALL: [JobState; 7] = [
        JobState::Queued,
        JobState::Running,
        JobState::Retrying,
        JobState::Held,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
    ];

    /// The name used in SQL.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Retrying => "retrying",
            JobState::Held => "held",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Whether the job is finished for good.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

impl std::str::FromStr for JobState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| format!("unknown job state {s:?}"))
    }
}
