//! Zendesk: `zendesk.users` and `zendesk.tickets` against the fake account, every scenario of
//! [`super::scenarios`] for each, and the presets' own details.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::preset::{Deletion, Enriched, Lateness, Person, Preset, Throttle, person_of};
use super::{ago, quoted, rfc};
use crate::fakes::zendesk::Zendesk;
use crate::fakes::{Clock, Request};
use crate::sources::{count, poller, poller_on, run};

const EMAIL: &str = "agent@example.com";
const TOKEN: &str = "zd-token";

/// `phone` is the preferred field, `shared_phone_number` the second.
fn user_fields(person: &Person) -> Value {
    json!({"name": person.name, "phone": person.phone, "shared_phone_number": person.other_phone})
}

/// The preset `name` on a fake account.
pub struct Account {
    fake: Zendesk,
    name: &'static str,
}

impl Account {
    pub async fn users() -> Self {
        Self::start("zendesk.users").await
    }

    pub async fn tickets() -> Self {
        Self::start("zendesk.tickets").await
    }

    async fn start(name: &'static str) -> Self {
        Self {
            fake: Zendesk::start(EMAIL, TOKEN).await,
            name,
        }
    }

    fn tickets_preset(&self) -> bool {
        self.name == "zendesk.tickets"
    }
}

impl Preset for Account {
    fn name(&self) -> &'static str {
        self.name
    }

    fn connection(&self) -> Vec<(&'static str, String)> {
        vec![
            ("base_url", quoted(&self.fake.url)),
            ("token", quoted(TOKEN)),
            (
                "auth",
                format!("{{ type = \"basic\", username = \"{EMAIL}/token\" }}"),
            ),
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
        if self.tickets_preset() {
            self.put_person(person_of(n), person);
            self.put_linked(n, Some(person_of(n)), at);
        } else {
            self.fake.put_user(n, user_fields(person), at, at);
        }
    }

    fn delete(&self, n: u64, at: DateTime<Utc>) -> Deletion {
        if self.tickets_preset() {
            self.fake.delete_ticket(n, at);
        } else {
            self.fake.delete_user(n, at);
        }
        Deletion::Flagged
    }

    /// The exports leave out the last minute's changes.
    fn lateness(&self) -> Lateness {
        Lateness::Settling
    }

    fn fail_serving(&self, n: u64) {
        self.fake.fail_serving(&n.to_string(), 500);
    }

    fn max_page_size(&self) -> usize {
        1_000
    }

    /// The exports' 10 requests a minute; a 429 carries `Retry-After`.
    fn throttle(&self) -> Throttle {
        self.fake.set_rate_limit_per_minute(Some(10));
        Throttle::WaitsOut {
            status: 429,
            wait: Duration::from_secs(60),
        }
    }

    fn unthrottle(&self) {
        self.fake.set_rate_limit_per_minute(None);
    }
}

impl Enriched for Account {
    fn put_person(&self, id: u64, person: &Person) {
        self.fake
            .put_user(id, user_fields(person), ago(500), ago(500));
    }

    fn put_linked(&self, n: u64, person: Option<u64>, at: DateTime<Utc>) {
        let fields = json!({"requester_id": person, "subject": format!("Ticket {n}")});
        self.fake.put_ticket(n, fields, at, at);
    }
}

mod users {
    crate::vendors::scenarios::preset_scenarios!(super::Account::users().await);
}

mod tickets {
    crate::vendors::scenarios::preset_scenarios!(super::Account::tickets().await, enriched);
}

#[tokio::test]
async fn the_zendesk_presets_resume_from_the_vendor_cursor_and_enrich_tickets() {
    use crate::fakes::zendesk::Zendesk;
    let zendesk = Zendesk::start("agent@example.com", "zd-token").await;
    zendesk.put_user(
        1,
        json!({"name": "Ana", "phone": "+34 600 111 222"}),
        ago(40),
        ago(30),
    );
    zendesk.put_user(
        2,
        json!({"name": "Bo", "shared_phone_number": "+34 600 333 444"}),
        ago(40),
        ago(20),
    );
    let config = |preset: &str, name: &str| {
        format!(
            r#"
[workspaces.default]
token = "tl-token"
[sources.{name}]
preset = "{preset}"
base_url = "{url}"
token = "zd-token"
auth = {{ type = "basic", username = "agent@example.com/token" }}
initial = "{start}"
requests_per_second = 50
[[rules]]
name = "{name}-rule"
source = "{name}"
trigger = "updated"
template = "Hola {{{{ contact.name }}}}"
"#,
            url = zendesk.url,
            start = rfc(ago(60))
        )
    };
    let (db, users) = poller(&config("zendesk.users", "zd_users")).await;
    assert_eq!(run(&users, "zd_users").await.jobs_created, 2);
    let token: Option<String> = sqlx::query_scalar(
        "SELECT vendor_token FROM timelines.source_state WHERE source = 'zd_users'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(
        token.is_some(),
        "the after_cursor is kept as the durable cursor"
    );
    // The next run resumes from it: nothing new, then only the change.
    assert_eq!(run(&users, "zd_users").await.jobs_created, 0);
    zendesk.put_user(
        1,
        json!({"name": "Ana", "phone": "+34 600 111 222"}),
        ago(40),
        ago(5),
    );
    assert_eq!(run(&users, "zd_users").await.jobs_created, 1);
    let requests = zendesk.requests();
    assert!(
        requests[0].query.contains("start_time="),
        "{}",
        requests[0].query
    );
    assert!(
        requests.last().unwrap().query.contains("cursor="),
        "{}",
        requests.last().unwrap().query
    );

    zendesk.put_ticket(
        9,
        json!({"requester_id": 2, "subject": "Help"}),
        ago(30),
        ago(25),
    );
    let tickets = poller_on(&db.pool, &config("zendesk.tickets", "zd_tickets")).await;
    let report = run(&tickets, "zd_tickets").await;
    assert_eq!(report.jobs_created, 1);
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM timelines.jobs WHERE payload->>'phone' = '+34600333444' AND payload->>'text' = 'Hola Bo'").await,
        2
    );
}
