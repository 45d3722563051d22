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
        // A gateway's 502/504 can come after the origin acted on the request: for a call that
        // creates something, check before repeating it (one history read) rather than risk it.
        ErrorClass::Transient
            if effect == Effect::Creates && matches!(error.status, Some(502 | 504)) =>
        {
            Outcome::Uncertain {
                error: message,
                delay: None,
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timelines::HttpMethod;

    fn error(class: ErrorClass, status: Option<u16>, retry_after: Option<Duration>) -> ApiError {
        ApiError {
            class,
            status,
            message: "boom".into(),
            error_code: None,
            retry_after,
            field_errors: Box::new([]),
            method: HttpMethod::Post,
            path: "/messages".into(),
        }
    }

    #[test]
    fn each_failure_class_maps_to_its_outcome() {
        use ErrorClass::*;
        let retry = |o: &Outcome| matches!(o, Outcome::Retry { delay: None, .. });
        assert!(retry(&outcome_for(
            &error(Transient, Some(500), None),
            Effect::Creates
        )));
        assert!(
            matches!(outcome_for(&error(QuotaExhausted, Some(403), None), Effect::Creates),
            Outcome::Hold { recheck_after, .. } if recheck_after == QUOTA_RECHECK)
        );
        for class in [Auth, NotFound, InvalidRequest] {
            assert!(matches!(
                outcome_for(&error(class, Some(400), None), Effect::Repeatable),
                Outcome::Fail(_)
            ));
        }
        assert!(retry(&outcome_for(
            &error(Ambiguous, None, None),
            Effect::Repeatable
        )));
        assert!(matches!(
            outcome_for(&error(Ambiguous, None, None), Effect::Creates),
            Outcome::Uncertain { .. }
        ));
    }

    #[test]
    fn a_gateway_error_on_a_send_is_uncertain_but_on_a_read_a_plain_retry() {
        let e = error(ErrorClass::Transient, Some(504), None);
        assert!(matches!(
            outcome_for(&e, Effect::Creates),
            Outcome::Uncertain { .. }
        ));
        assert!(matches!(
            outcome_for(&e, Effect::Repeatable),
            Outcome::Retry { .. }
        ));
        let e = error(ErrorClass::Transient, Some(503), None);
        assert!(matches!(
            outcome_for(&e, Effect::Creates),
            Outcome::Retry { .. }
        ));
    }

    #[test]
    fn rate_limits_snooze_for_retry_after_clamped_or_a_default() {
        let snooze = |retry_after| {
            outcome_for(
                &error(ErrorClass::RateLimited, Some(429), retry_after),
                Effect::Creates,
            )
        };
        assert_eq!(
            snooze(Some(Duration::from_secs(7))),
            Outcome::Snooze(Duration::from_secs(7))
        );
        assert_eq!(
            snooze(Some(Duration::ZERO)),
            Outcome::Snooze(Duration::from_secs(1))
        );
        assert_eq!(
            snooze(Some(Duration::from_secs(86_400))),
            Outcome::Snooze(Duration::from_secs(900))
        );
        assert_eq!(snooze(None), Outcome::Snooze(DEFAULT_RATE_LIMIT_PAUSE));
    }
}
