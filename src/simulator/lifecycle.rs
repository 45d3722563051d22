//! Message status timelines and messaging-credit accounting, both computed lazily from the
//! creation time, so no timer has to advance them.
//!
//! Outbound messages go `Queued` → `Sent` → `Delivered` → `Read`, one step per
//! `status_step` of wall time (§5.3, capitalised like the `"Read"` example). Messages to a
//! `fail_phones` number go `Queued` → `Failed` after one step, and their credits come back at
//! that moment (§8.4: "failed messages restore quota units"; the real service takes up to a couple
//! of hours, the simulator one step).

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::state::{Kind, Message, World};

/// Outbound statuses in order.
const PROGRESSION: [&str; 4] = ["Queued", "Sent", "Delivered", "Read"];

/// One entry of a status timeline (#7).
pub(crate) struct StatusEntry {
    pub status: &'static str,
    pub at: DateTime<Utc>,
    pub failed: bool,
}

/// The timeline of `message` as seen at `now`, oldest first; the last entry is the current status.
pub(crate) fn timeline(message: &Message, now: DateTime<Utc>, step: Duration) -> Vec<StatusEntry> {
    let entry = |status, at, failed| StatusEntry { status, at, failed };
    match message.kind {
        // Inbound messages arrived; notes are never sent. Both have a single fixed status.
        Kind::Inbound => vec![entry("Delivered", message.created_at, false)],
        Kind::Note { .. } => vec![entry("Sent", message.created_at, false)],
        Kind::Outbound { fails } => {
            let reached = steps_elapsed(message.created_at, now, step);
            let at = |k: u32| message.created_at + chrono_step(step) * k as i32;
            if fails {
                let mut out = vec![entry("Queued", at(0), false)];
                if reached >= 1 {
                    out.push(entry("Failed", at(1), true));
                }
                out
            } else {
                (0..=reached.min(3))
                    .map(|k| entry(PROGRESSION[k as usize], at(k), false))
                    .collect()
            }
        }
    }
}

/// The current status of `message` at `now`.
pub(crate) fn status(message: &Message, now: DateTime<Utc>, step: Duration) -> &'static str {
    timeline(message, now, step)
        .last()
        .map(|e| e.status)
        .unwrap_or("Queued")
}

/// Whether `message` has reached `Failed` at `now`.
pub(crate) fn has_failed(message: &Message, now: DateTime<Utc>, step: Duration) -> bool {
    matches!(message.kind, Kind::Outbound { fails: true })
        && steps_elapsed(message.created_at, now, step) >= 1
}

/// Messaging credits in use at `now`: charged at acceptance, given back once a message failed.
pub(crate) fn credits_used(world: &World, now: DateTime<Utc>, step: Duration) -> u64 {
    world
        .messages
        .iter()
        .filter(|m| m.credits > 0 && !has_failed(m, now, step))
        .map(|m| m.credits)
        .sum()
}

/// The credit cost of a message (§8.4): 2 with non-empty text *and* an attachment, else 1.
pub(crate) fn cost(text: &str, has_attachment: bool) -> u64 {
    if !text.is_empty() && has_attachment {
        2
    } else {
        1
    }
}

/// Whole steps from `created` to `now`; a zero step means every step has already happened.
fn steps_elapsed(created: DateTime<Utc>, now: DateTime<Utc>, step: Duration) -> u32 {
    if step.is_zero() {
        return 3;
    }
    let elapsed = (now - created).to_std().unwrap_or_default();
    (elapsed.as_nanos() / step.as_nanos()).min(3) as u32
}

fn chrono_step(step: Duration) -> chrono::Duration {
    chrono::Duration::from_std(step).unwrap_or(chrono::Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbound(created: DateTime<Utc>, fails: bool) -> Message {
        Message {
            uid: "u".into(),
            chat_id: 1,
            kind: Kind::Outbound { fails },
            created_at: created,
            text: "hi".into(),
            origin: "Public API".into(),
            sender_name: String::new(),
            sender_phone: String::new(),
            recipient_name: String::new(),
            recipient_phone: String::new(),
            created_by: String::new(),
            attachment: None,
            reply_to: None,
            credits: 1,
            reactions: Vec::new(),
        }
    }

    #[test]
    fn outbound_status_advances_one_step_per_interval_and_stops_at_read() {
        let t0 = Utc::now();
        let m = outbound(t0, false);
        let step = Duration::from_secs(2);
        let at = |s: i64| t0 + chrono::Duration::seconds(s);
        assert_eq!(status(&m, at(0), step), "Queued");
        assert_eq!(status(&m, at(2), step), "Sent");
        assert_eq!(status(&m, at(5), step), "Delivered");
        assert_eq!(status(&m, at(600), step), "Read");
        assert_eq!(timeline(&m, at(600), step).len(), 4);
    }

    #[test]
    fn failing_message_fails_after_one_step_and_only_then_returns_its_credit() {
        let t0 = Utc::now();
        let m = outbound(t0, true);
        let step = Duration::from_secs(1);
        assert!(!has_failed(&m, t0, step));
        let later = t0 + chrono::Duration::seconds(1);
        assert!(has_failed(&m, later, step));
        let history = timeline(&m, later, step);
        assert_eq!(history.len(), 2);
        assert!(history[1].failed);
        assert_eq!(history[1].status, "Failed");
    }

    #[test]
    fn text_with_attachment_costs_two_credits() {
        assert_eq!(cost("hello", true), 2);
        assert_eq!(cost("", true), 1);
        assert_eq!(cost("hello", false), 1);
    }
}
