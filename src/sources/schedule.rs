//! Cron schedules for sources. Users write the usual 5-field crontab form (`*/5 * * * *`) or the
//! 6-field form with seconds first (`0 */5 * * * *`); the `cron` crate wants seconds first (and
//! accepts an optional 7th year field), so 5-field expressions get `0` seconds prepended.
//!
//! Day-of-week numbers differ: crontab counts 0-7 from Sunday (1 = Monday, 0 and 7 = Sunday),
//! the `cron` crate 1-7 from Sunday (1 = Sunday). A 5-field expression is crontab, so its numeric
//! weekdays are rewritten as names (`1-5` becomes `MON,TUE,WED,THU,FRI`). 6- and 7-field
//! expressions are read as the `cron` crate reads them; names (`MON-FRI`) mean the same in both.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use cron::Schedule;

/// Parses a 5- or 6-field cron expression (7 with a year). The error says what was expected.
pub fn parse(expression: &str) -> Result<Schedule, String> {
    let fields = expression.split_whitespace().count();
    let normalised = match fields {
        5 => {
            let parts: Vec<&str> = expression.split_whitespace().collect();
            let weekday = crontab_weekdays(parts[4])?;
            format!(
                "0 {} {} {} {} {weekday}",
                parts[0], parts[1], parts[2], parts[3]
            )
        }
        6 | 7 => expression.trim().to_owned(),
        n => {
            return Err(format!(
                "expected 5 fields (minute hour day month weekday) or 6 with seconds first, got {n}"
            ));
        }
    };
    Schedule::from_str(&normalised).map_err(|e| format!("invalid cron expression: {e}"))
}

const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// A crontab day-of-week field with numbers (0-7, Sunday = 0 or 7) as the equivalent list of day
/// names; fields without digits are returned as they are.
fn crontab_weekdays(field: &str) -> Result<String, String> {
    if !field.bytes().any(|b| b.is_ascii_digit()) {
        return Ok(field.to_owned());
    }
    let bad = || format!("invalid day-of-week field {field:?}: use 0-7 (0 or 7 = Sunday) or names");
    let mut days = [false; 7];
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => (range, step.parse::<usize>().map_err(|_| bad())?),
            None => (item, 1),
        };
        if step == 0 {
            return Err(bad());
        }
        let day = |s: &str| -> Result<usize, String> {
            match s.parse::<usize>() {
                Ok(n) if n <= 7 => Ok(n),
                _ => DAY_NAMES
                    .iter()
                    .position(|d| d.eq_ignore_ascii_case(s))
                    .ok_or_else(bad),
            }
        };
        let (from, to) = match range {
            "*" => (0, 6),
            r => match r.split_once('-') {
                Some((a, b)) => (day(a)?, day(b)?),
                None if step > 1 => (day(r)?, 6),
                None => (day(r)?, day(r)?),
            },
        };
        if from > to {
            return Err(bad());
        }
        for n in (from..=to).step_by(step) {
            days[n % 7] = true;
        }
    }
    Ok(DAY_NAMES
        .iter()
        .zip(days)
        .filter(|(_, on)| *on)
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(","))
}

/// The first time the schedule fires strictly after `after`.
pub fn next_after(schedule: &Schedule, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    schedule.after(&after).next()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn five_fields_fire_on_the_minute() {
        let every_five = parse("*/5 * * * *").unwrap();
        assert_eq!(
            next_after(&every_five, at("2026-01-01T10:02:30Z")),
            Some(at("2026-01-01T10:05:00Z"))
        );
        assert_eq!(
            next_after(&every_five, at("2026-01-01T10:05:00Z")),
            Some(at("2026-01-01T10:10:00Z"))
        );
        let weekdays_nine = parse("0 9 * * 1-5").unwrap();
        // 2026-01-03 is a Saturday: the next run is Monday 09:00.
        assert_eq!(
            next_after(&weekdays_nine, at("2026-01-03T12:00:00Z")),
            Some(at("2026-01-05T09:00:00Z"))
        );
    }

    #[test]
    fn crontab_weekday_numbers_keep_their_meaning() {
        assert_eq!(crontab_weekdays("1-5").unwrap(), "MON,TUE,WED,THU,FRI");
        assert_eq!(crontab_weekdays("0").unwrap(), "SUN");
        assert_eq!(crontab_weekdays("7").unwrap(), "SUN");
        assert_eq!(crontab_weekdays("5-7").unwrap(), "SUN,FRI,SAT");
        assert_eq!(crontab_weekdays("*/2").unwrap(), "SUN,TUE,THU,SAT");
        assert_eq!(crontab_weekdays("MON-FRI").unwrap(), "MON-FRI");
        assert!(crontab_weekdays("8").is_err());
        // Sunday 0 in crontab: the next run after Saturday noon is Sunday 09:00.
        let sundays = parse("0 9 * * 0").unwrap();
        assert_eq!(
            next_after(&sundays, at("2026-01-03T12:00:00Z")),
            Some(at("2026-01-04T09:00:00Z"))
        );
    }

    #[test]
    fn six_fields_take_seconds_first() {
        let every_ten_seconds = parse("*/10 * * * * *").unwrap();
        assert_eq!(
            next_after(&every_ten_seconds, at("2026-01-01T10:00:01Z")),
            Some(at("2026-01-01T10:00:10Z"))
        );
    }

    #[test]
    fn wrong_shapes_are_explained() {
        assert!(parse("* * *").unwrap_err().contains("expected 5 fields"));
        assert!(
            parse("61 * * * *")
                .unwrap_err()
                .contains("invalid cron expression")
        );
    }
}
