//! Secrets never reach a log line. Every [`crate::config::Secret`] registers its value here when
//! it is made (API tokens, CRM keys and OAuth tokens, the webhook secret, database URLs and their
//! passwords), and the log writer replaces any of them found in a formatted line with
//! `[redacted]`. `Secret` already prints as `[redacted]`; this is the second line of defence for
//! a value that escaped its wrapper (an error message of another crate, a URL, a header dump).

use std::borrow::Cow;
use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex, RwLock};

use aho_corasick::{AhoCorasick, MatchKind};
use tracing_subscriber::fmt::MakeWriter;

/// What a secret is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Shorter values are not registered: a basic-auth password of `X` (Freshdesk) must not blank
/// every X of every line.
const MIN_LEN: usize = 4;

/// Most rotating values kept: a refreshed OAuth access token registers one more at every poll
/// run of its source, and an expired one no longer matters. The configuration's secrets are
/// kept apart and never dropped: otherwise a day of refreshes would push out the API tokens,
/// the webhook secret and the database password.
const MAX_ROTATING: usize = 1000;

/// The registered values: the configuration's (a fixed set) and the rotating ones, oldest first.
struct Registered {
    fixed: Vec<String>,
    rotating: VecDeque<String>,
}

static SECRETS: Mutex<Registered> = Mutex::new(Registered {
    fixed: Vec::new(),
    rotating: VecDeque::new(),
});
static MATCHER: RwLock<Option<Arc<AhoCorasick>>> = RwLock::new(None);

/// Registers `value` (and, for a URL with a password, the password alone) to be redacted from
/// every log line from now on.
pub fn register(value: &str) {
    register_as(value, false);
}

/// Registers a value that is replaced from time to time (a refreshed access token): only the
/// latest [`MAX_ROTATING`] of these are kept.
pub fn register_rotating(value: &str) {
    register_as(value, true);
}

fn register_as(value: &str, rotating: bool) {
    let mut added = add(value, rotating);
    if let Some(password) = url_password(value, rotating) {
        added |= add(&password, rotating);
    }
    if added {
        rebuild();
    }
}

fn add(value: &str, rotating: bool) -> bool {
    if value.len() < MIN_LEN {
        return false;
    }
    let mut secrets = SECRETS.lock().unwrap_or_else(|e| e.into_inner());
    let known = |s: &String| s == value;
    if secrets.fixed.iter().any(known) {
        return false;
    }
    if let Some(at) = secrets.rotating.iter().position(known) {
        if rotating {
            return false;
        }
        secrets.rotating.remove(at); // now a configured value: kept for good
    }
    if !rotating {
        secrets.fixed.push(value.to_owned());
        return true;
    }
    if secrets.rotating.len() == MAX_ROTATING {
        secrets.rotating.pop_front();
    }
    secrets.rotating.push_back(value.to_owned());
    true
}

/// The password of `postgres://user:password@host/db` and the like, raw and percent-decoded.
fn url_password(value: &str, rotating: bool) -> Option<String> {
    let url = reqwest::Url::parse(value).ok()?;
    let raw = url.password()?;
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8_lossy()
        .into_owned();
    if decoded != raw {
        add(raw, rotating);
    }
    Some(decoded)
}

fn rebuild() {
    let secrets = SECRETS.lock().unwrap_or_else(|e| e.into_inner());
    // Longest first at each position: a URL is replaced whole, not just its password.
    let matcher = AhoCorasick::builder()
        .match_kind(MatchKind::LeftmostLongest)
        .build(secrets.fixed.iter().chain(&secrets.rotating))
        .ok()
        .map(Arc::new);
    *MATCHER.write().unwrap_or_else(|e| e.into_inner()) = matcher;
}

fn matcher() -> Option<Arc<AhoCorasick>> {
    MATCHER.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// `bytes` with every registered secret replaced by [`REDACTED`].
pub fn scrub_bytes(bytes: &[u8]) -> Cow<'_, [u8]> {
    match matcher() {
        Some(m) if m.is_match(bytes) => {
            let mut out = Vec::with_capacity(bytes.len());
            m.replace_all_with_bytes(bytes, &mut out, |_, _, dst| {
                dst.extend_from_slice(REDACTED.as_bytes());
                true
            });
            Cow::Owned(out)
        }
        _ => Cow::Borrowed(bytes),
    }
}

/// `text` with every registered secret replaced by [`REDACTED`] (for messages printed outside
/// the log, such as the final error).
pub fn scrub(text: &str) -> Cow<'_, str> {
    match scrub_bytes(text.as_bytes()) {
        Cow::Borrowed(_) => Cow::Borrowed(text),
        Cow::Owned(bytes) => Cow::Owned(String::from_utf8_lossy(&bytes).into_owned()),
    }
}

/// A log writer that scrubs what it writes. The fmt layer formats each event completely, then
/// writes it with one call, so a secret is never split between two writes.
#[derive(Debug, Clone)]
pub struct Redacting<M>(pub M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Redacting<M> {
    type Writer = RedactingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter(self.0.make_writer())
    }
}

/// See [`Redacting`].
#[derive(Debug)]
pub struct RedactingWriter<W>(W);

impl<W: io::Write> io::Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_all(&scrub_bytes(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_values_and_url_passwords_are_scrubbed() {
        register("tok-unit-7d1c0e2b");
        register("postgres://svc:pa%24s-unit-42@db.internal:5432/app");
        let line = "token tok-unit-7d1c0e2b, url postgres://svc:pa%24s-unit-42@db.internal:5432/app, \
                    password pa$s-unit-42";
        let scrubbed = scrub(line);
        assert!(!scrubbed.contains("tok-unit"), "{scrubbed}");
        assert!(!scrubbed.contains("pa$s-unit-42"), "{scrubbed}");
        assert!(!scrubbed.contains("pa%24s-unit-42"), "{scrubbed}");
        assert_eq!(scrubbed.matches(REDACTED).count(), 3, "{scrubbed}");
    }

    #[test]
    fn configured_values_outlive_any_number_of_rotated_tokens() {
        register("cfg-unit-webhook-secret-91f3");
        for n in 0..MAX_ROTATING + 5 {
            register_rotating(&format!("rot-unit-access-{n:05}"));
        }
        assert_eq!(scrub("cfg-unit-webhook-secret-91f3"), REDACTED);
        assert_eq!(scrub("rot-unit-access-01004"), REDACTED);
        assert_eq!(scrub("rot-unit-access-00000"), "rot-unit-access-00000");
    }

    #[test]
    fn short_values_are_not_registered() {
        register("X");
        assert_eq!(scrub("X marks the spot"), "X marks the spot");
    }
}
