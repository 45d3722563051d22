//! Freshdesk: `freshdesk.contacts` and `freshdesk.tickets` against the fake helpdesk, every
//! scenario of [`super::scenarios`] for each, and the presets' own details.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::preset::{Deletion, Enriched, Person, Preset, Throttle, person_of};
use timelines_sync::config::{ProcessEnv, Settings};

use super::{ago, quoted, rfc};
use crate::fakes::freshdesk::Freshdesk;
use crate::fakes::{Clock, Request};
use crate::sources::{count, poller, poller_on, run, sends};

const KEY: &str = "fd-key";

/// `mobile` is the preferred field, `phone` the second.
fn contact_fields(person: &Person) -> Value {
    json!({"name": person.name, "mobile": person.phone, "phone": person.other_phone})
}

/// The preset `name` on a fake helpdesk.
pub struct Helpdesk {
    fake: Freshdesk,
    name: &'static str,
}

impl Helpdesk {
    pub async fn contacts() -> Self {
        Self::start("freshdesk.contacts").await
    }

    pub async fn tickets() -> Self {
        Self::start("freshdesk.tickets").await
    }

    async fn start(name: &'static str) -> Self {
        Self {
            fake: Freshdesk::start(KEY).await,
            name,
        }
    }

    fn tickets_preset(&self) -> bool {
        self.name == "freshdesk.tickets"
    }

    fn ticket(&self, n: u64, person: Option<u64>, deleted: bool, at: DateTime<Utc>) {
        let fields =
            json!({"subject": format!("Ticket {n}"), "requester_id": person, "deleted": deleted});
        self.fake.put_ticket(n, fields, at, at);
    }
}

impl Preset for Helpdesk {
    fn name(&self) -> &'static str {
        self.name
    }

    fn connection(&self) -> Vec<(&'static str, String)> {
        vec![("base_url", quoted(&self.fake.url)), ("token", quoted(KEY))]
    }

    fn secret(&self) -> &'static str {
        KEY
    }

    fn clock(&self) -> &Clock {
        self.fake.clock()
    }

    fn requests(&self) -> Vec<Request> {
        self.fake.requests()
    }

    fn put(&self, n: u64, person: &Person, at: DateTime<Utc>) {
        if self.tickets_preset() {
            self.put_person(person_of(n), person);
            self.put_linked(n, Some(person_of(n)), at);
        } else {
            self.fake.put_contact(n, contact_fields(person), at, at);
        }
    }

    /// Freshdesk's default lists leave deleted contacts and tickets out.
    fn delete(&self, n: u64, at: DateTime<Utc>) -> Deletion {
        if self.tickets_preset() {
            self.ticket(n, Some(person_of(n)), true, at);
        } else {
            self.fake.delete_contact(n, at);
        }
        Deletion::Hidden
    }

    fn fail_serving(&self, n: u64) {
        self.fake.fail_serving(&n.to_string(), 500);
    }

    fn max_page_size(&self) -> usize {
        100
    }

    /// Four credits a minute (a ticket page with its requester costs two); a 429 carries
    /// `Retry-After`.
    fn throttle(&self) -> Throttle {
        self.fake.set_rate_limit_per_minute(Some(4));
        Throttle::WaitsOut {
            status: 429,
            wait: Duration::from_secs(60),
        }
    }

    fn unthrottle(&self) {
        self.fake.set_rate_limit_per_minute(None);
    }
}

impl Enriched for Helpdesk {
    fn put_person(&self, id: u64, person: &Person) {
        self.fake
            .put_contact(id, contact_fields(person), ago(500), ago(500));
    }

    fn put_linked(&self, n: u64, person: Option<u64>, at: DateTime<Utc>) {
        self.ticket(n, person, false, at);
    }
}

mod contacts {
    crate::vendors::scenarios::preset_scenarios!(super::Helpdesk::contacts().await);
}

mod tickets {
    crate::vendors::scenarios::preset_scenarios!(super::Helpdesk::tickets().await, enriched);
}

fn freshdesk_config(url: &str, preset: &str, template: &str) -> String {
    format!(
        r#"
[workspaces.default]
token = "tl-token"
[sources.fd]
preset = "{preset}"
base_url = "{url}"
token = "fd-key"
initial = "{start}"
settle_seconds = 0
page_size = 2
requests_per_second = 100
default_region = "ES"
[[rules]]
name = "hello"
source = "fd"
trigger = "updated"
template = "{template}"
"#,
        start = rfc(ago(60))
    )
}

#[tokio::test]
async fn the_freshdesk_presets_read_contacts_by_name_order_and_tickets_past_the_page_cap() {
    use crate::fakes::freshdesk::Freshdesk;
    let freshdesk = Freshdesk::start("fd-key").await;
    // Contacts come in name order (as real Freshdesk lists them), not by time.
    freshdesk.sort_contacts_by_name(true);
    for (id, name) in [(1u64, "Zoe"), (2, "Ana"), (3, "Mia")] {
        let t = ago(30 - id as i64);
        freshdesk.put_contact(
            id,
            json!({"name": name, "mobile": format!("600 000 00{id}")}),
            t,
            t,
        );
    }
    freshdesk.put_contact(
        4,
        json!({"name": "Old", "mobile": "600 000 004"}),
        ago(90),
        ago(90),
    );
    let (db, poller) = poller(&freshdesk_config(
        &freshdesk.url,
        "freshdesk.contacts",
        "Hola {{ name }}",
    ))
    .await;
    let report = run(&poller, "fd").await;
    assert_eq!(report.jobs_created, 3);
    assert_eq!(
        sends(&db.pool).await[0],
        ("+34600000001".into(), "Hola Zoe".into())
    );
    let request = &freshdesk.requests()[0];
    assert!(
        request.query.contains("_updated_since="),
        "{}",
        request.query
    );
    assert!(
        request
            .headers
            .iter()
            .any(|(k, v)| k == "authorization" && v.starts_with("Basic "))
    );

    // Tickets: 7 of them, pages of 2 and a cap of 2 pages; each page is a new query from the
    // last update read, so the cap is never reached. The requester is embedded for the phone.
    freshdesk.put_contact(
        10,
        json!({"name": "Requester", "mobile": "+34 611 222 333"}),
        ago(500),
        ago(500),
    );
    for id in 1..=7u64 {
        let t = ago(20) + chrono::Duration::seconds(id as i64);
        freshdesk.put_ticket(
            id,
            json!({"subject": format!("T{id}"), "requester_id": 10}),
            t,
            t,
        );
    }
    freshdesk.set_page_cap(Some(2));
    let tickets_config = freshdesk_config(
        &freshdesk.url,
        "freshdesk.tickets",
        "Ticket {{ subject }} updated",
    )
    .replace("[sources.fd]", "[sources.fdt]")
    .replace("source = \"fd\"", "source = \"fdt\"")
    .replace("name = \"hello\"", "name = \"ticket\"");
    let tickets = poller_on(&db.pool, &tickets_config).await;
    let report = run(&tickets, "fdt").await;
    assert_eq!(report.jobs_created, 7);
    assert!(
        freshdesk.requests().iter().all(|r| r.status == 200),
        "never asked past the page cap"
    );
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM timelines.jobs WHERE payload->>'phone' = '+34611222333'"
        )
        .await,
        7
    );
}

/// Contacts come in name order, so a contacts run is checkpointed only at its end; a run limit
/// would make every run start over at the same contacts and never reach the others.
#[test]
fn a_run_limit_on_freshdesk_contacts_is_refused_at_start_up() {
    let toml = "[sources.fd]\npreset = \"freshdesk.contacts\"\nbase_url = \"https://x.freshdesk.com\"\n\
                token = \"fd-key\"\nmax_records_per_run = 100\n";
    let settings = Settings::parse(toml, std::path::Path::new("t.toml")).expect("config parses");
    let error = settings.validate(&ProcessEnv).unwrap_err().to_string();
    assert!(error.contains("sources.fd.max_records_per_run"), "{error}");
    assert!(!error.contains("fd-key"));
    // The tickets preset is sorted: there a run limit just splits the work between runs.
    let tickets = toml.replace("freshdesk.contacts", "freshdesk.tickets");
    let settings =
        Settings::parse(&tickets, std::path::Path::new("t.toml")).expect("config parses");
    settings
        .validate(&ProcessEnv)
        .expect("a sorted preset takes a run limit");
}
