//! Sending policies that depend only on time: quiet hours.

use chrono::{DateTime, Duration, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

use super::spec::QuietHours;

/// When a job due at `due` may run under `quiet`, for a contact in `zone` (None: the window's
/// fixed zone or its fallback): `due` itself outside the window, else the window's end (local
/// time; across a DST change, the first valid instant at or after it).
pub fn after_quiet_hours(
    due: DateTime<Utc>,
    quiet: &QuietHours,
    zone: Option<Tz>,
) -> DateTime<Utc> {
    let tz = quiet.timezone.or(zone).unwrap_or(quiet.fallback);
    let local = due.with_timezone(&tz);
    let time = local.time();
    let inside = if quiet.start < quiet.end {
        time >= quiet.start && time < quiet.end
    } else {
        // Crosses midnight, e.g. 21:00-08:00.
        time >= quiet.start || time < quiet.end
    };
    if !inside {
        return due;
    }
    let mut end_date = local.date_naive();
    if quiet.start > quiet.end && time >= quiet.start {
        end_date = end_date.succ_opt().unwrap_or(end_date);
    }
    let end = end_date.and_time(quiet.end);
    let at = first_valid(end, tz);
    if at > due {
        return at;
    }
    // The end falls in an hour the clocks repeat, and its first pass is already over.
    tz.from_local_datetime(&end)
        .latest()
        .map(|t| t.with_timezone(&Utc))
        .filter(|t| *t > due)
        .unwrap_or(due)
}

/// The instant of local time `at` in `tz`; a time skipped by a DST jump moves forward to the
/// first one that exists.
fn first_valid(at: NaiveDateTime, tz: Tz) -> DateTime<Utc> {
    let mut candidate = at;
    for _ in 0..180 {
        if let Some(t) = tz.from_local_datetime(&candidate).earliest() {
            return t.with_timezone(&Utc);
        }
        candidate += Duration::minutes(1);
    }
    Utc.from_utc_datetime(&at)
}

#[cfg(test)]
mod tests {
    use chrono::NaiveTime;

    use super::*;

    fn window(start: &str, end: &str, tz: Option<Tz>) -> QuietHours {
        QuietHours {
            start: NaiveTime::parse_from_str(start, "%H:%M").unwrap(),
            end: NaiveTime::parse_from_str(end, "%H:%M").unwrap(),
            timezone: tz,
            fallback: Tz::UTC,
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn outside_the_window_nothing_moves() {
        let q = window("21:00", "08:00", Some(Tz::UTC));
        assert_eq!(
            after_quiet_hours(at("2026-03-02T12:00:00Z"), &q, None),
            at("2026-03-02T12:00:00Z")
        );
    }

    #[test]
    fn a_window_across_midnight_ends_next_morning() {
        let q = window("21:00", "08:00", Some(Tz::UTC));
        assert_eq!(
            after_quiet_hours(at("2026-03-02T22:30:00Z"), &q, None),
            at("2026-03-03T08:00:00Z")
        );
        assert_eq!(
            after_quiet_hours(at("2026-03-03T03:00:00Z"), &q, None),
            at("2026-03-03T08:00:00Z")
        );
    }

    #[test]
    fn the_contacts_zone_is_used_when_the_window_has_none() {
        let q = window("21:00", "08:00", None);
        // 02:00 UTC is 23:00 in São Paulo (UTC-3): quiet until 08:00 there = 11:00 UTC.
        assert_eq!(
            after_quiet_hours(
                at("2026-03-03T02:00:00Z"),
                &q,
                Some(chrono_tz::America::Sao_Paulo)
            ),
            at("2026-03-03T11:00:00Z")
        );
        // The same instant is 03:00 in Madrid (UTC+1): also quiet, until 08:00 = 07:00 UTC.
        assert_eq!(
            after_quiet_hours(
                at("2026-03-03T02:00:00Z"),
                &q,
                Some(chrono_tz::Europe::Madrid)
            ),
            at("2026-03-03T07:00:00Z")
        );
    }

    #[test]
    fn an_end_in_a_repeated_hour_uses_its_second_pass() {
        // New York repeats 01:00-02:00 on 2026-11-01; 06:10 UTC is 01:10 EST, the second pass.
        let q = window("00:30", "01:30", Some(chrono_tz::America::New_York));
        assert_eq!(
            after_quiet_hours(at("2026-11-01T06:10:00Z"), &q, None),
            at("2026-11-01T06:30:00Z")
        );
    }

    #[test]
    fn an_end_skipped_by_a_dst_jump_moves_to_the_first_valid_minute() {
        // Europe/Madrid jumps from 02:00 to 03:00 on 2026-03-29.
        let q = window("23:00", "02:30", Some(chrono_tz::Europe::Madrid));
        let moved = after_quiet_hours(at("2026-03-28T23:30:00Z"), &q, None);
        assert_eq!(moved, at("2026-03-29T01:00:00Z")); // 03:00 CEST
    }
}
