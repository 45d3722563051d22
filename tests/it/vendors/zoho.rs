//! Zoho CRM: `zoho.contacts` against the fake account, every scenario of [`super::scenarios`],
//! and the preset's own details.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::preset::{Deletion, Person, Preset, Throttle};
use super::{ago, quoted, rfc};
use crate::fakes::zoho::Zoho;
use crate::fakes::{Clock, Request};
use crate::sources::{poller, run, sends};

const TOKEN: &str = "zoho-token";

/// `zoho.contacts` on a fake account, with a fixed access token.
pub struct Account {
    fake: Zoho,
}

impl Account {
    pub async fn contacts() -> Self {
        Self {
            fake: Zoho::start(TOKEN).await,
        }
    }
}

impl Preset for Account {
    fn name(&self) -> &'static str {
        "zoho.contacts"
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

    /// `Mobile` is the preferred field, `Phone` the second.
    fn put(&self, n: u64, person: &Person, at: DateTime<Utc>) {
        let fields = json!({"First_Name": person.name, "Last_Name": "Test",
                            "Mobile": person.phone, "Phone": person.other_phone});
        self.fake.put_contact(n, fields, at, at);
    }

    /// Zoho lists deletions elsewhere: a deleted contact leaves the list.
    fn delete(&self, n: u64, _at: DateTime<Utc>) -> Deletion {
        self.fake.delete_contact(n);
        Deletion::Hidden
    }

    fn fail_serving(&self, n: u64) {
        self.fake.fail_serving(&n.to_string(), 500);
    }

    fn max_page_size(&self) -> usize {
        200
    }

    /// Five API credits left, then 429 `TOO_MANY_REQUESTS` without `Retry-After` until the
    /// 24-hour budget comes back: retried with backoff, then the run stops.
    fn throttle(&self) -> Throttle {
        self.fake.set_limit(Some(5));
        Throttle::Stops {
            status: 429,
            reason: "TOO_MANY_REQUESTS",
            tries: 4,
        }
    }

    fn unthrottle(&self) {
        self.fake.set_limit(None);
    }
}

mod contacts {
    crate::vendors::scenarios::preset_scenarios!(super::Account::contacts().await);
}

#[tokio::test]
async fn the_zoho_preset_refreshes_its_oauth_token_and_treats_304_as_nothing_new() {
    use crate::fakes::zoho::Zoho;
    let zoho = Zoho::start("stale-token").await;
    zoho.configure_oauth("client-1", "client-secret", "refresh-secret");
    for id in 1..=3u64 {
        let t = ago(30) + chrono::Duration::seconds(id as i64);
        zoho.put_contact(id, json!({"First_Name": format!("Z{id}"), "Last_Name": "Rao", "Mobile": format!("+91 98765 4321{id}")}), t, t);
    }
    let config = format!(
        r#"
[workspaces.default]
token = "tl-token"
[sources.zoho]
preset = "zoho.contacts"
base_url = "{url}"
auth = {{ type = "oauth2_refresh", token_url = "/oauth/v2/token", client_id = "client-1", client_secret = "client-secret", refresh_token = "refresh-secret", prefix = "Zoho-oauthtoken " }}
initial = "{start}"
settle_seconds = 0
page_size = 2
requests_per_second = 50
[[rules]]
name = "namaste"
source = "zoho"
trigger = "created"
template = "Namaste {{{{ First_Name }}}}"
"#,
        url = zoho.url,
        start = rfc(ago(60))
    );
    let (db, poller) = poller(&config).await;
    let report = run(&poller, "zoho").await;
    assert_eq!(report.jobs_created, 3);
    assert_eq!(
        sends(&db.pool).await[0],
        ("+919876543211".into(), "Namaste Z1".into())
    );
    let requests = zoho.requests();
    assert_eq!(
        requests[0].path, "/oauth/v2/token",
        "an access token is fetched first"
    );
    assert!(
        requests
            .iter()
            .skip(1)
            .any(|r| r.query.contains("page_token="))
    );
    assert!(
        requests[1]
            .headers
            .iter()
            .any(|(k, v)| k == "if-modified-since" && v.ends_with("+00:00"))
    );

    // The token is revoked after the run's own refresh: the 401 leads to one more refresh and
    // the request is repeated.
    let refreshes = |zoho: &Zoho| {
        zoho.requests()
            .iter()
            .filter(|r| r.path == "/oauth/v2/token")
            .count()
    };
    let before = refreshes(&zoho);
    zoho.put_contact(
        4,
        json!({"First_Name": "Z4", "Mobile": "+91 98765 43214"}),
        ago(2),
        ago(2),
    );
    zoho.fail_next(401, None, 1);
    let report = run(&poller, "zoho").await;
    assert_eq!(report.jobs_created, 1);
    assert_eq!(refreshes(&zoho) - before, 2);
    // Nothing changed since: Zoho answers 304, the run reads nothing and succeeds.
    let report = run(&poller, "zoho").await;
    assert_eq!(report.jobs_created, 0);
    let stored: String =
        sqlx::query_scalar("SELECT coalesce(string_agg(error, ''), '') FROM timelines.source_runs")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(!stored.contains("refresh-secret") && !stored.contains("client-secret"));
}
