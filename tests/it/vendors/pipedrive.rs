//! Pipedrive: `pipedrive.persons` and `pipedrive.deals` against the fake company, every
//! scenario of [`super::scenarios`] for each, and the preset's own details.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::preset::{Deletion, Enriched, Person, Preset, Throttle, person_of};
use super::{ago, quoted, rfc};
use crate::fakes::pipedrive::Pipedrive;
use crate::fakes::{Clock, Request};
use crate::sources::{count, poller, run, sends};

const TOKEN: &str = "pd-token";

/// `phones` as Pipedrive lists them; the second phone comes first, so the primary one is found
/// by its flag, not by its place.
fn person_fields(person: &Person) -> Value {
    let mut phones = Vec::new();
    if let Some(other) = &person.other_phone {
        phones.push(json!({"value": other, "primary": false, "label": "work"}));
    }
    if let Some(phone) = &person.phone {
        phones.push(json!({"value": phone, "primary": true, "label": "mobile"}));
    }
    json!({"first_name": person.name, "last_name": "Test", "phones": phones})
}

/// The preset `name` on a fake company.
pub struct Company {
    fake: Pipedrive,
    name: &'static str,
}

impl Company {
    pub async fn persons() -> Self {
        Self::start("pipedrive.persons").await
    }

    pub async fn deals() -> Self {
        Self::start("pipedrive.deals").await
    }

    async fn start(name: &'static str) -> Self {
        Self {
            fake: Pipedrive::start(TOKEN).await,
            name,
        }
    }

    fn deals_preset(&self) -> bool {
        self.name == "pipedrive.deals"
    }
}

impl Preset for Company {
    fn name(&self) -> &'static str {
        self.name
    }

    fn connection(&self) -> Vec<(&'static str, String)> {
        vec![
            ("base_url", quoted(&self.fake.url)),
            ("token", quoted(TOKEN)),
        ]
    }

    fn secret(&self) -> &'static str {
        TOKEN
    }

    fn clock(&self) -> &Clock {
        self.fake.clock()
    }

    fn requests(&self) -> Vec<Request> {
        self.fake.requests()
    }

    fn put(&self, n: u64, person: &Person, at: DateTime<Utc>) {
        if self.deals_preset() {
            self.put_person(person_of(n), person);
            self.put_linked(n, Some(person_of(n)), at);
        } else {
            self.fake.put_person(n, person_fields(person), at, at);
        }
    }

    fn delete(&self, n: u64, at: DateTime<Utc>) -> Deletion {
        if self.deals_preset() {
            self.fake.delete_deal(n, at);
        } else {
            self.fake.delete_person(n, at);
        }
        Deletion::Flagged
    }

    fn fail_serving(&self, n: u64) {
        self.fake.fail_serving(&n.to_string(), 500);
    }

    fn max_page_size(&self) -> usize {
        500
    }

    /// Two requests per 2-second window; a 429 says when the window resets.
    fn throttle(&self) -> Throttle {
        self.fake.set_burst_limit(Some(2));
        Throttle::WaitsOut {
            status: 429,
            wait: Duration::from_secs(2),
        }
    }

    fn unthrottle(&self) {
        self.fake.set_burst_limit(None);
    }
}

impl Enriched for Company {
    fn put_person(&self, id: u64, person: &Person) {
        self.fake
            .put_person(id, person_fields(person), ago(500), ago(500));
    }

    fn put_linked(&self, n: u64, person: Option<u64>, at: DateTime<Utc>) {
        let fields = json!({"title": format!("Deal {n}"), "person_id": person, "stage_id": 1});
        self.fake.put_deal(n, fields, at, at);
    }
}

mod persons {
    crate::vendors::scenarios::preset_scenarios!(super::Company::persons().await);
}

mod deals {
    crate::vendors::scenarios::preset_scenarios!(super::Company::deals().await, enriched);
}

#[tokio::test]
async fn the_pipedrive_persons_preset_pages_skips_deleted_and_prefers_the_primary_phone() {
    use crate::fakes::pipedrive::Pipedrive;
    let pipedrive = Pipedrive::start("pd-token").await;
    for id in 1..=5u64 {
        let t = ago(30) + chrono::Duration::seconds((id / 2) as i64);
        pipedrive.put_person(
            id,
            json!({"first_name": format!("P{id}"), "last_name": "Silva",
                   "phones": [{"value": "+1 415 555 0100", "primary": false, "label": "work"},
                              {"value": format!("+55 11 9{:04}-{:04}", 1000 + id, 2000 + id), "primary": true, "label": "mobile"}]}),
            t,
            t,
        );
    }
    let config = format!(
        r#"
[workspaces.default]
token = "tl-token"
[sources.pd]
preset = "pipedrive.persons"
base_url = "{url}"
token = "pd-token"
initial = "{start}"
settle_seconds = 0
page_size = 2
[[rules]]
name = "welcome"
source = "pd"
trigger = "created"
template = "Olá {{{{ first_name }}}}"
"#,
        url = pipedrive.url,
        start = rfc(ago(60))
    );
    let (db, poller) = poller(&config).await;
    let report = run(&poller, "pd").await;
    assert_eq!(report.jobs_created, 5);
    assert!(report.pages >= 3, "{} pages", report.pages);
    assert_eq!(
        sends(&db.pool).await[0],
        ("+5511910012001".into(), "Olá P1".into())
    );
    let request = &pipedrive.requests()[0];
    assert!(
        request
            .headers
            .iter()
            .any(|(k, v)| k == "x-api-token" && v == "pd-token")
    );
    assert!(
        request.query.contains("sort_by=update_time"),
        "{}",
        request.query
    );

    // A deleted person is skipped, and its queued welcome cancelled.
    pipedrive.delete_person(2, ago(1));
    let report = run(&poller, "pd").await;
    assert_eq!(report.skipped.get("deleted"), Some(&1));
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM timelines.jobs WHERE state = 'cancelled'"
        )
        .await,
        1
    );
    assert_eq!(report.jobs_created, 0);
}

#[tokio::test]
async fn the_pipedrive_deals_preset_reaches_the_persons_phone_and_watches_the_stage() {
    use crate::fakes::pipedrive::Pipedrive;
    let pipedrive = Pipedrive::start("pd-token").await;
    pipedrive.put_person(
        7,
        json!({"first_name": "Rui", "last_name": "Costa", "phones": [{"value": "+351 912 345 678", "primary": true, "label": "mobile"}]}),
        ago(500),
        ago(500),
    );
    pipedrive.put_deal(
        70,
        json!({"title": "Big", "person_id": 7, "stage_id": 1}),
        ago(30),
        ago(30),
    );
    let config = format!(
        r#"
[workspaces.default]
token = "tl-token"
[sources.pd_deals]
preset = "pipedrive.deals"
base_url = "{url}"
token = "pd-token"
initial = "{start}"
settle_seconds = 0
[[rules]]
name = "won-stage"
source = "pd_deals"
trigger = "field_changed"
field = "stage_id"
value = 5
template = "Parabéns {{{{ contact.name }}}}: {{{{ title }}}}"
"#,
        url = pipedrive.url,
        start = rfc(ago(60))
    );
    let (db, poller) = poller(&config).await;
    assert_eq!(run(&poller, "pd_deals").await.jobs_created, 0);
    pipedrive.put_deal(
        70,
        json!({"title": "Big", "person_id": 7, "stage_id": 5}),
        ago(30),
        ago(2),
    );
    assert_eq!(run(&poller, "pd_deals").await.jobs_created, 1);
    assert_eq!(
        sends(&db.pool).await,
        vec![("+351912345678".into(), "Parabéns Rui Costa: Big".into())]
    );
    assert!(
        pipedrive
            .requests()
            .iter()
            .any(|r| r.path == "/api/v2/persons" && r.query.contains("ids=7"))
    );
    assert_eq!(run(&poller, "pd_deals").await.jobs_created, 0);
}
