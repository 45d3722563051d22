//! Inbound rules: a webhook event is a record of the built-in source `timelines`
//! ([`INBOUND_SOURCE`]) and goes through the poll rules' own machinery ([`super::write`]):
//! filters and templates, idempotency keys (`webhook:timelines:RULE:RECORD:event`),
//! `timelines.rule_events`, opt-outs, frequency caps and quiet hours. The record's variables are
//! the payload's fields (`message`, `chat`, `whatsapp_account`, ...) with `event_type`,
//! `workspace`, `phone` (the contact, E.164) and `name`.

use std::sync::Arc;

use chrono::Utc;
use serde_json::{Value, json};
use sqlx::PgConnection;

use super::engine::RunReport;
use super::record::Record;
use super::spec::{Catalog, INBOUND_SOURCE, Rule};
use super::write::{prepare, write_batch};

/// The advisory lock class of inbound rule events (the key is `hashtext(record id)`): two
/// deliveries of one message (`message:new` and `message:received:new`) applied at once by two
/// instances must not both find its rule events new.
const LOCK_CLASS: i32 = 0x696e_626e; // "inbn"

/// One webhook event, as the rules see it.
#[derive(Debug, Clone)]
pub struct InboundEvent<'a> {
    /// Its `webhook_events` id.
    pub id: i64,
    /// The workspace it came from: rules of that workspace apply.
    pub workspace: &'a str,
    /// Its type.
    pub event_type: &'a str,
    /// Types it also counts as (a received `message:new` is a `message:received:new`).
    pub implied: Vec<&'static str>,
    /// What the rules' idempotency keys name: one message, one new chat, one event.
    pub record_id: String,
    /// The payload.
    pub payload: &'a Value,
    /// The contact (E.164), when the event has one; rules need it.
    pub phone: Option<&'a str>,
    /// The contact's name.
    pub name: Option<&'a str>,
}

/// The inbound rules of a catalog.
pub struct Inbound {
    catalog: Arc<Catalog>,
}

impl Inbound {
    /// The inbound rules of `catalog` (none when no rule has `on`).
    pub fn new(catalog: Arc<Catalog>) -> Self {
        Self { catalog }
    }

    /// The rules `event` triggers.
    fn rules_for<'a>(&'a self, event: &InboundEvent<'_>) -> Vec<&'a Rule> {
        self.catalog
            .rules_of(INBOUND_SOURCE)
            .filter(|r| r.workspace == event.workspace)
            .filter(|r| {
                r.on.iter()
                    .any(|t| t == event.event_type || event.implied.contains(&t.as_str()))
            })
            .collect()
    }

    /// Runs the rules `event` triggers in `tx`; returns the jobs created. An event without a
    /// contact phone triggers nothing; a repeated event finds its rule events and does nothing.
    pub async fn apply(
        &self,
        tx: &mut PgConnection,
        event: &InboundEvent<'_>,
    ) -> sqlx::Result<u64> {
        let rules = self.rules_for(event);
        if rules.is_empty() {
            return Ok(0);
        }
        let source = &self.catalog.sources[INBOUND_SOURCE];
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind(LOCK_CLASS)
            .bind(&event.record_id)
            .execute(&mut *tx)
            .await?;
        let now = Utc::now();
        let mut variables = match event.payload {
            Value::Object(map) => map.clone(),
            _ => Default::default(),
        };
        variables.insert("event_type".into(), json!(event.event_type));
        variables.insert("workspace".into(), json!(event.workspace));
        variables.insert("phone".into(), json!(event.phone));
        variables.insert("name".into(), json!(event.name));
        let record = Record {
            id: event.record_id.clone(),
            cursor: now,
            created: Some(now),
            variables: Value::Object(variables),
        };
        let mut skips = Vec::new();
        let (reads, deleted) =
            prepare(&self.catalog, source, &rules, now, vec![record], &mut skips);
        let mut report = RunReport {
            source: INBOUND_SOURCE.to_owned(),
            ..RunReport::default()
        };
        write_batch(
            tx,
            None,
            source,
            &rules,
            reads,
            deleted,
            &mut skips,
            &mut report,
            false,
        )
        .await?;
        for (_, rule, skip) in &skips {
            tracing::info!(
                event_id = event.id, rule = rule.as_deref().unwrap_or(""), reason = skip.reason,
                detail = %skip.detail, "inbound rule skipped a webhook event"
            );
        }
        Ok(report.jobs_created)
    }
}
