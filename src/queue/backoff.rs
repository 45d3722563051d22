//! Retry delays: capped exponential backoff with jitter, as a pure function.
//!
//! Attempt 1 waits about `base`, attempt 2 about `2·base`, doubling up to `max`; each delay is
//! spread by ±`jitter` so jobs that failed together (an outage) do not retry together.

use std::time::Duration;

/// The schedule's parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay after the first failed attempt.
    pub base: Duration,
    /// Longest delay.
    pub max: Duration,
    /// Relative spread, 0.0..=1.0 (0.2 means ±20 %).
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(2),
            max: Duration::from_secs(3600),
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// The delay after failed attempt `attempt` (1-based). `unit` is a uniform sample in
    /// `[0, 1)` (pass `rand::random()`; tests pass fixed values), mapped to `[-jitter, +jitter]`.
    /// The result never exceeds `max`.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let exponent = attempt.saturating_sub(1).min(62) as i32;
        let raw = self.base.as_secs_f64() * 2f64.powi(exponent);
        let capped = raw.min(self.max.as_secs_f64());
        let spread = (unit.clamp(0.0, 1.0) * 2.0 - 1.0) * self.jitter.clamp(0.0, 1.0);
        let jittered = (capped * (1.0 + spread))
            .min(self.max.as_secs_f64())
            .max(0.0);
        Duration::from_secs_f64(jittered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(d: Duration) -> f64 {
        d.as_secs_f64()
    }

    #[test]
    fn without_jitter_the_delay_doubles_per_attempt() {
        let b = Backoff {
            base: Duration::from_secs(2),
            max: Duration::from_secs(1000),
            jitter: 0.0,
        };
        let delays: Vec<f64> = (1..=5).map(|a| secs(b.delay(a, 0.5))).collect();
        assert_eq!(delays, vec![2.0, 4.0, 8.0, 16.0, 32.0]);
    }

    #[test]
    fn the_delay_is_capped_even_for_huge_attempt_numbers() {
        let b = Backoff {
            base: Duration::from_secs(2),
            max: Duration::from_secs(60),
            jitter: 0.2,
        };
        for attempt in [7, 50, 1000, u32::MAX] {
            for unit in [0.0, 0.5, 0.999] {
                assert!(b.delay(attempt, unit) <= Duration::from_secs(60));
            }
        }
        assert_eq!(b.delay(u32::MAX, 0.999), Duration::from_secs(60));
    }

    #[test]
    fn jitter_spreads_the_delay_symmetrically_within_bounds() {
        let b = Backoff {
            base: Duration::from_secs(10),
            max: Duration::from_secs(1000),
            jitter: 0.2,
        };
        assert!((secs(b.delay(1, 0.0)) - 8.0).abs() < 1e-9);
        assert!((secs(b.delay(1, 0.5)) - 10.0).abs() < 1e-9);
        assert!((secs(b.delay(1, 1.0)) - 12.0).abs() < 1e-9);
        for i in 0..100 {
            let d = secs(b.delay(3, i as f64 / 100.0));
            assert!((32.0..=48.0).contains(&d), "{d}");
        }
    }

    #[test]
    fn attempt_zero_is_treated_as_the_first() {
        let b = Backoff {
            jitter: 0.0,
            ..Backoff::default()
        };
        assert_eq!(b.delay(0, 0.5), b.delay(1, 0.5));
    }
}
