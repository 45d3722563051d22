//! From an API failure to a job outcome: the one place that decides what each failure class does.

use std::time::Duration;

use crate::queue::Outcome;
use crate::timelines::{ApiError, ErrorClass};

/// How long a rate-limited job waits when the API gives no `Retry-After`. The window is a
/// minute; a quarter of it lets the limit recover without leaving the workspace idle long.
pub const DEFAULT_RATE_LIMIT_PAUSE: Duration = Duration::from_secs(15);
/// Bounds on a `Retry-After`: at least a second (no hot loop), at most 15 minutes (a bogus value
/// must not park a job for a day).
const RETRY_AFTER_RANGE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(900));
/// When a held job (quota used up) is looked at again.
pub const QUOTA_RECHECK: Duration = Duration::from_secs(3600);

/// What kind of call failed, which decides what an ambiguous failure means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Reads and calls that give the same result when repeated (labels PUT/POST, chat PATCH,
    /// reactions, file lookups): an ambiguous failure is simply retried.
    Repeatable,
    /// Calls that create something each time (messages, notes, uploads): after an ambiguous
    /// failure the next attempt must look for the result before calling again.
    Creates,
}

/// The outcome for a job whose call failed with `error`.
pub fn outcome_for(error: &ApiError, effect: Effect) -> Outcome {
    let message = error.to_string();
    match error.class {
        ErrorClass::Transient => Outcome::Retry {
            error: message,
            delay: None,
        },
        ErrorClass::RateLimited => {
            let pause = error
                .retry_after
                .map(|d| d.clamp(RETRY_AFTER_RANGE.0, RETRY_AFTER_RANGE.1))
                .unwrap_or(DEFAULT_RATE_LIMIT_PAUSE);
            Outcome::Snooze(pause)
        }
        ErrorClass::QuotaExhausted => Outcome::Hold {
            reason: message,
            recheck_after: QUOTA_RECHECK,
        },
        ErrorClass::Auth | ErrorClass::NotFound | ErrorClass::InvalidRequest => {
            Outcome::Fail(message)
        }
        ErrorClass::Ambiguous => match effect {
            Effect::Repeatable => Outcome::Retry {
                error: message,
                delay: None,
            },
            Effect::Creates => Outcome::Uncertain {
                error: message,
                delay: None,
            },
        },
    }
}
