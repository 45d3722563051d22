//! What the scenarios know of a preset and its fake vendor ([`Preset`], [`Enriched`]), the
//! people they seed ([`Person`]) and the configuration they run ([`Config`]).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{Harness, SOURCE, ago, rfc};
use crate::fakes::{Clock, Request};

/// A person as the scenarios seed it: a name, and values for the vendor's preferred phone field
/// and for its second one.
#[derive(Clone, Debug)]
pub struct Person {
    pub name: String,
    pub phone: Option<String>,
    pub other_phone: Option<String>,
}

impl Person {
    pub fn new(name: &str, phone: Option<&str>, other_phone: Option<&str>) -> Self {
        Self {
            name: name.to_owned(),
            phone: phone.map(str::to_owned),
            other_phone: other_phone.map(str::to_owned),
        }
    }

    /// Person `n`, with a London number of its own ([`phone_of`] is its E.164 form).
    pub fn numbered(n: u64) -> Self {
        let phone = format!("+44 20 7946 {n:04}");
        Self::new(&format!("P{n}"), Some(&phone), None)
    }
}

/// The E.164 phone of [`Person::numbered`].
pub fn phone_of(n: u64) -> String {
    format!("+44207946{n:04}")
}

/// Whether a vendor's change feed shows a deletion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deletion {
    /// The record comes back flagged (`is_deleted`, `IsDeleted`, `active: false`, status
    /// `deleted`): it is skipped and its queued jobs are cancelled.
    Flagged,
    /// The record leaves the list: it is never read again, so nothing can be cancelled.
    Hidden,
}

/// How a change reaches a run late.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lateness {
    /// It shows up after a run that should have read it, with its older time (search index
    /// lag): the next run's lookback reads it.
    IndexLag,
    /// The vendor holds back the last minute's changes (Zendesk's exports): they come once
    /// settled, after the vendor cursor.
    Settling,
}

/// What the vendor's rate-limit answer should do to a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttle {
    /// The vendor says when to come back (`Retry-After`, `x-ratelimit-reset`): the run waits
    /// exactly that long each time and finishes.
    WaitsOut { status: u16, wait: Duration },
    /// The vendor's budget is spent: after `tries` answers of `status` the run stops with
    /// `reason`, keeping what it read before.
    Stops {
        status: u16,
        reason: &'static str,
        tries: usize,
    },
}

/// One preset against its fake vendor: what the scenarios need to seed records and to make the
/// vendor answer as they need.
pub trait Preset {
    /// The preset's name, e.g. `pipedrive.persons`.
    fn name(&self) -> &'static str;
    /// Source keys that reach the fake (`base_url`, `token`, `auth`), as TOML values.
    fn connection(&self) -> Vec<(&'static str, String)>;
    /// The credential, which must never be stored anywhere.
    fn secret(&self) -> &'static str;
    /// The fake's clock, which the poller waits on.
    fn clock(&self) -> &Clock;
    /// Every request the fake received, oldest first.
    fn requests(&self) -> Vec<Request>;
    /// Inserts or replaces record `n`, changed at `at`: a contact with `person`'s phones, or a
    /// deal or ticket whose person (looked up or embedded) has them.
    fn put(&self, n: u64, person: &Person, at: DateTime<Utc>);
    /// The id the source gives record `n`.
    fn external_id(&self, n: u64) -> String {
        n.to_string()
    }
    /// Deletes record `n` at `at`.
    fn delete(&self, n: u64, at: DateTime<Utc>) -> Deletion;
    /// How a change can reach a run late.
    fn lateness(&self) -> Lateness {
        Lateness::IndexLag
    }
    /// The first answer that would hold record `n` fails with 500, once.
    fn fail_serving(&self, n: u64);
    /// Sets the records per page where the vendor decides it (Salesforce's batch size); the
    /// source's `page_size` is set too.
    fn set_page_size(&self, _records: usize) {}
    /// The largest page the vendor serves.
    fn max_page_size(&self) -> usize;
    /// Turns the vendor's rate limit on, low enough for a run of one record per page to hit it.
    fn throttle(&self) -> Throttle;
    /// Turns it off again.
    fn unthrottle(&self);
}

/// A preset whose records get their phone from a related person (deals, tickets).
pub trait Enriched: Preset {
    /// Inserts or replaces the person (or requester) `id` with `person`'s phones.
    fn put_person(&self, id: u64, person: &Person);
    /// Inserts or replaces record `n` linked to person `id` (or to none), changed at `at`.
    fn put_linked(&self, n: u64, person: Option<u64>, at: DateTime<Utc>);
}

/// The person of record `n` when [`Preset::put`] creates one.
pub fn person_of(n: u64) -> u64 {
    10_000 + n
}

/// A scenario's configuration: the preset with test settings, and one rule, `updated`, so
/// every version of a record is one job.
pub struct Config {
    preset: &'static str,
    source: BTreeMap<&'static str, String>,
    rule: BTreeMap<&'static str, String>,
    initial: DateTime<Utc>,
}

impl Config {
    pub fn new(preset: &impl Preset) -> Self {
        let initial = ago(60);
        let mut source: BTreeMap<&'static str, String> = preset.connection().into_iter().collect();
        for (key, value) in [
            ("initial", format!("\"{}\"", rfc(initial))),
            ("settle_seconds", "0".to_owned()),
            ("lookback_seconds", "600".to_owned()),
            ("default_region", "\"GB\"".to_owned()),
            // The vendor's limits are what the scenarios test, not the client's own pacing.
            ("requests_per_second", "1000".to_owned()),
            ("max_retries", "3".to_owned()),
        ] {
            source.insert(key, value);
        }
        Self {
            preset: preset.name(),
            source,
            rule: BTreeMap::new(),
            initial,
        }
    }

    /// Sets a source key (a TOML value).
    pub fn set(mut self, key: &'static str, value: impl ToString) -> Self {
        self.source.insert(key, value.to_string());
        self
    }

    /// Sets a key of the rule (a TOML value).
    pub fn rule(mut self, key: &'static str, value: impl ToString) -> Self {
        self.rule.insert(key, value.to_string());
        self
    }

    /// Where the source starts.
    pub fn initial(&self) -> DateTime<Utc> {
        self.initial
    }

    pub fn toml(&self) -> String {
        let lines = |keys: &BTreeMap<&str, String>| {
            keys.iter()
                .map(|(k, v)| format!("{k} = {v}\n"))
                .collect::<String>()
        };
        format!(
            "[workspaces.default]\ntoken = \"tl-token\"\n\n[sources.{SOURCE}]\npreset = \"{}\"\n{}\n\
             [[rules]]\nname = \"hello\"\nsource = \"{SOURCE}\"\ntrigger = \"updated\"\n\
             template = \"Hello {{{{ contact.name | default('there') }}}}\"\n{}",
            self.preset,
            lines(&self.source),
            lines(&self.rule),
        )
    }

    pub async fn start(&self, preset: &impl Preset) -> Harness {
        Harness::start(&self.toml(), preset.clock()).await
    }
}
