//! What a handler returns. The engine turns it into the job's next state.

use std::time::Duration;

use serde_json::Value;

/// The result of one attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Succeeded; the value is stored in `jobs.result`.
    Done(Option<Value>),
    /// Failed in a way worth trying again: counts as an attempt. `delay: None` uses the
    /// configured exponential backoff. When no attempts are left the job fails.
    Retry {
        /// Why, stored in `last_error`.
        error: String,
        /// When to try again; `None` for the backoff schedule.
        delay: Option<Duration>,
    },
    /// The attempt failed in a way that leaves its effect unknown (the request may have reached
    /// the server: a timeout or a dropped connection after sending). Counts as an attempt like
    /// `Retry`, and the next attempt sees `Job::interrupted`, so it checks before repeating.
    Uncertain {
        /// Why, stored in `last_error`.
        error: String,
        /// When to try again; `None` for the backoff schedule.
        delay: Option<Duration>,
    },
    /// Not now, but not a failure (rate limit, a resource not ready): run again after `delay`
    /// without using up an attempt.
    Snooze(Duration),
    /// Waiting for something outside the job (quota, a send window): the job moves to `held`
    /// without using up an attempt and is looked at again after `recheck_after`.
    Hold {
        /// Why, stored in `last_error`.
        reason: String,
        /// When to look again.
        recheck_after: Duration,
    },
    /// Will never succeed (bad request, not found): the job fails at once with this reason.
    Fail(String),
}

impl Outcome {
    /// Success without a result value.
    pub fn done() -> Self {
        Outcome::Done(None)
    }

    /// A retry on the backoff schedule.
    pub fn retry(error: impl Into<String>) -> Self {
        Outcome::Retry {
            error: error.into(),
            delay: None,
        }
    }

    /// A permanent failure.
    pub fn fail(error: impl Into<String>) -> Self {
        Outcome::Fail(error.into())
    }

    /// The variant's name, for metrics: `done`, `retry`, `uncertain`, `snooze`, `hold`, `fail`.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Done(_) => "done",
            Outcome::Retry { .. } => "retry",
            Outcome::Uncertain { .. } => "uncertain",
            Outcome::Snooze(_) => "snooze",
            Outcome::Hold { .. } => "hold",
            Outcome::Fail(_) => "fail",
        }
    }
}
