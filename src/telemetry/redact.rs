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

/// Most values kept: refreshed OAuth access tokens register one more each hour or so, and an
/// expired one no longer matters.
const MAX_SECRETS: usize = 1000;

static SECRETS: Mutex<VecDeque<String>> = Mutex::new(VecDeque::new());
static MATCHER: RwLock<Option<Arc<AhoCorasick>>> = RwLock::new(None);

/// Registers `value` (and, for a URL with a password, the password alone) to be redacted from
/// every log line from now on.
pub fn register(value: &str) {
    let mut added = add(value);
    if let Some(password) = url_password(value) {
        added |= add(&password);
    }
    if added {
        rebuild();
    }
}

fn add(value: &str) -> bool {
    if value.len() < MIN_LEN {
        return false;
    }
    let mut secrets = SECRETS.lock().unwrap_or_else(|e| e.into_inner());
    if secrets.iter().any(|s| s == value) {
        return false;
    }
    if secrets.len() == MAX_SECRETS {
        secrets.pop_front();
    }
    secrets.push_back(value.to_owned());
    true
}

/// The password of `postgres://user:password@host/db` and the like, raw and percent-decoded.
fn url_password(value: &str) -> Option<String> {
    let url = reqwest::Url::parse(value).ok()?;
    let raw = url.password()?;
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8_lossy()
        .into_owned();
    if decoded != raw {
        add(raw);
    }
    Some(decoded)
}

fn rebuild() {
    let secrets = SECRETS.lock().unwrap_or_else(|e| e.into_inner());
    // Longest first at each position: a URL is replaced whole, not just its password.
    let matcher = AhoCorasick::builder()
        .match_kind(MatchKind::LeftmostLongest)
        .build(secrets.iter())
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
    fn short_values_are_not_registered() {
        register("X");
        assert_eq!(scrub("X marks the spot"), "X marks the spot");
    }
}
