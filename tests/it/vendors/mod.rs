//! The vendor presets (Pipedrive, Salesforce, Zendesk, Freshdesk, Zoho) against their fakes over
//! real HTTP and a real database. Every check issue 6 asks of a preset is written once, in
//! [`scenarios`], and run for each preset by its vendor's module, which also holds the
//! vendor's own tests (auth headers, paging tokens, OAuth).
//!
//! The pollers here wait on the fake vendor's clock ([`crate::fakes::Clock`]): a `Retry-After`
//! of a minute moves that clock a minute and takes no time.

mod freshdesk;
mod pipedrive;
mod preset;
mod salesforce;
mod scenarios;
mod zendesk;
mod zoho;

use std::collections::BTreeMap;

use chrono::{DateTime, SubsecRound, Utc};
use sqlx::PgPool;
use timelines_sync::sources::engine::{Mode, Poller, RunError, RunReport};

use crate::fakes::Clock;
use crate::helpers::{TestDb, test_db};

/// The source every scenario configures.
pub const SOURCE: &str = "crm";

/// A time `minutes` ago, in whole seconds (the vendors keep no fractions).
pub fn ago(minutes: i64) -> DateTime<Utc> {
    (Utc::now() - chrono::Duration::minutes(minutes)).trunc_subsecs(0)
}

/// `text` as a TOML string.
pub fn quoted(text: &str) -> String {
    format!("{text:?}")
}

/// RFC 3339 with milliseconds, for the config's `initial`.
pub fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A database and a poller whose HTTP sources wait on a fake vendor's clock.
pub struct Harness {
    pub db: TestDb,
    pub poller: Poller,
}

/// One job with the record and rule event it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub record: String,
    pub phone: String,
    pub state: String,
    pub last_error: Option<String>,
}

/// A `source_runs` row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Run {
    pub status: String,
    pub requests: i32,
    pub pages: i32,
    pub records_seen: i32,
    pub jobs_created: i32,
    pub records_skipped: i32,
    pub error: Option<String>,
}

/// The `source_state` row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct State {
    pub cursor_value: DateTime<Utc>,
    pub boundary_ids: Vec<String>,
    pub vendor_token: Option<String>,
}

impl Harness {
    /// A poller of `toml` on a fresh database; its HTTP sources wait on `clock`.
    pub async fn start(toml: &str, clock: &Clock) -> Self {
        let db = test_db().await;
        let poller = crate::sources::poller_waiting(&db.pool, toml, Some(clock)).await;
        Self { db, poller }
    }

    pub fn pool(&self) -> &PgPool {
        &self.db.pool
    }

    /// A run of the source that must succeed.
    pub async fn run(&self) -> RunReport {
        self.try_run()
            .await
            .unwrap_or_else(|e| panic!("the run failed: {e}"))
    }

    /// A run of the source.
    pub async fn try_run(&self) -> Result<RunReport, RunError> {
        self.poller.run(SOURCE, Mode::Manual, false).await
    }

    /// Whether the source checkpoints per page (sorted) and keeps a vendor token.
    pub fn checkpoints(&self) -> (bool, bool) {
        let source = &self.poller.catalog().sources[SOURCE];
        (source.sorted, source.resume_token)
    }

    /// Every job, oldest first, with the record it is for.
    pub async fn jobs(&self) -> Vec<Job> {
        let rows: Vec<(String, String, String, Option<String>)> = sqlx::query_as(
            "SELECT e.external_id, j.payload->>'phone', j.state, j.last_error
               FROM timelines.jobs j JOIN timelines.rule_events e ON e.job_id = j.id
              ORDER BY j.id",
        )
        .fetch_all(self.pool())
        .await
        .unwrap();
        assert_eq!(
            rows.len() as i64,
            self.count("SELECT count(*) FROM timelines.jobs").await,
            "every job has its rule event"
        );
        rows.into_iter()
            .map(|(record, phone, state, last_error)| Job {
                record,
                phone,
                state,
                last_error,
            })
            .collect()
    }

    /// The phones messaged per record.
    pub async fn phones_by_record(&self) -> BTreeMap<String, Vec<String>> {
        let mut by_record: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for job in self.jobs().await {
            by_record.entry(job.record).or_default().push(job.phone);
        }
        by_record
    }

    /// (record, reason) of every skip recorded, in order.
    pub async fn skips(&self) -> Vec<(String, String)> {
        sqlx::query_as(
            "SELECT coalesce(external_id, ''), reason FROM timelines.source_skips ORDER BY id",
        )
        .fetch_all(self.pool())
        .await
        .unwrap()
    }

    /// Every run, oldest first.
    pub async fn runs(&self) -> Vec<Run> {
        sqlx::query_as(
            "SELECT status, requests, pages, records_seen, jobs_created, records_skipped, error
               FROM timelines.source_runs ORDER BY id",
        )
        .fetch_all(self.pool())
        .await
        .unwrap()
    }

    /// The source's state.
    pub async fn state(&self) -> State {
        sqlx::query_as(
            "SELECT cursor_value, boundary_ids, vendor_token FROM timelines.source_state
              WHERE source = $1",
        )
        .bind(SOURCE)
        .fetch_one(self.pool())
        .await
        .unwrap()
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_one(self.pool())
            .await
            .unwrap()
    }

    /// The credential is nowhere in what the service stored: run errors, skips, states, jobs,
    /// rule events, contacts.
    pub async fn assert_never_stored(&self, secret: &str) {
        let stored: String = sqlx::query_scalar(
            "SELECT concat_ws(' ',
                 (SELECT string_agg(coalesce(error, ''), ' ') FROM timelines.source_runs),
                 (SELECT string_agg(detail, ' ') FROM timelines.source_skips),
                 (SELECT string_agg(coalesce(last_error, '') || coalesce(vendor_token, ''), ' ')
                    FROM timelines.source_state),
                 (SELECT string_agg(payload::text || coalesce(last_error, ''), ' ') FROM timelines.jobs),
                 (SELECT string_agg(coalesce(detail, ''), ' ') FROM timelines.rule_events),
                 (SELECT string_agg(fields::text, ' ') FROM timelines.contacts))",
        )
        .fetch_one(self.pool())
        .await
        .unwrap();
        assert!(
            !stored.contains(secret),
            "the credential was stored: {stored}"
        );
    }
}
