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
    /// Not now, but not a failure (rate limit, a resource not ready): run again after `delay`
    /// without using up an attempt.
    Snooze(Duration),
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
}
