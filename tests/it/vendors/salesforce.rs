//! Salesforce: `salesforce.contacts` and `salesforce.leads` against the fake org, every scenario
//! of [`super::scenarios`] for each, and the presets' own details.

use chrono::{DateTime, Utc};
use serde_json::json;
use timelines_sync::sources::engine::Mode;

use super::preset::{Config, Deletion, Person, Preset, Throttle};
use super::{ago, quoted, rfc};
use crate::fakes::salesforce::Salesforce;
use crate::fakes::{Clock, Request};
use crate::sources::{poller, poller_on, run, sends};

const TOKEN: &str = "sf-token";

/// The preset `name` on a fake org, reading `object`.
pub struct Org {
    fake: Salesforce,
    name: &'static str,
    object: &'static str,
}

impl Org {
    pub async fn contacts() -> Self {
        Self::start("salesforce.contacts", "Contact").await
    }

    pub async fn leads() -> Self {
        Self::start("salesforce.leads", "Lead").await
    }

    async fn start(name: &'static str, object: &'static str) -> Self {
        Self {
            fake: Salesforce::start(TOKEN).await,
            name,
            object,
        }
    }
}

impl Preset for Org {
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

    /// `MobilePhone` is the preferred field, `Phone` the second.
    fn put(&self, n: u64, person: &Person, at: DateTime<Utc>) {
        let fields = json!({"FirstName": person.name, "LastName": "Test",
                            "MobilePhone": person.phone, "Phone": person.other_phone});
        self.fake
            .put(self.object, &self.external_id(n), fields, at, at);
    }

    fn external_id(&self, n: u64) -> String {
        Salesforce::record_id(
            self.object,
            u32::try_from(n).expect("a small record number"),
        )
    }

    fn delete(&self, n: u64, at: DateTime<Utc>) -> Deletion {
        self.fake.delete(self.object, &self.external_id(n), at);
        Deletion::Flagged
    }

    fn fail_serving(&self, n: u64) {
        self.fake.fail_serving(&self.external_id(n), 500);
    }

    fn set_page_size(&self, records: usize) {
        self.fake.set_batch_size(records);
    }

    fn max_page_size(&self) -> usize {
        2_000
    }

    /// Five more API requests today, then 403 `REQUEST_LIMIT_EXCEEDED`, which no retry helps.
    fn throttle(&self) -> Throttle {
        self.fake.set_daily_limit(self.fake.api_used() + 5);
        Throttle::Stops {
            status: 403,
            reason: "REQUEST_LIMIT_EXCEEDED",
            tries: 1,
        }
    }

    fn unthrottle(&self) {
        self.fake.set_daily_limit(100_000);
    }
}

mod contacts {
    crate::vendors::scenarios::preset_scenarios!(super::Org::contacts().await);
}

mod leads {
    crate::vendors::scenarios::preset_scenarios!(super::Org::leads().await);
}

#[tokio::test]
async fn the_salesforce_presets_follow_next_records_urls_and_skip_deleted_rows() {
    use crate::fakes::salesforce::Salesforce;
    let salesforce = Salesforce::start("sf-token").await;
    salesforce.set_batch_size(2);
    for n in 1..=5u32 {
        let t = ago(30) + chrono::Duration::seconds(i64::from(n / 2));
        salesforce.put(
            "Contact",
            &Salesforce::record_id("Contact", n),
            json!({"FirstName": format!("C{n}"), "LastName": "Lee", "Phone": "+1 212 555 0100",
                   "MobilePhone": format!("+1 (415) 555-01{n:02}")}),
            t,
            t,
        );
    }
    salesforce.put(
        "Lead",
        &Salesforce::record_id("Lead", 1),
        json!({"FirstName": "Lia", "LastName": "Moss", "Phone": "+44 20 7946 0001"}),
        ago(20),
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
token = "sf-token"
initial = "{start}"
settle_seconds = 0
page_size = 200
[[rules]]
name = "{name}-hello"
source = "{name}"
trigger = "created"
template = "Hi {{{{ FirstName }}}}"
"#,
            url = salesforce.url,
            start = rfc(ago(60))
        )
    };
    let (db, contacts) = poller(&config("salesforce.contacts", "sf_contacts")).await;
    let report = run(&contacts, "sf_contacts").await;
    assert_eq!(report.jobs_created, 5);
    assert!(report.pages >= 3, "{} pages", report.pages);
    // MobilePhone is preferred over Phone.
    assert_eq!(
        sends(&db.pool).await[0],
        ("+14155550101".into(), "Hi C1".into())
    );
    let requests = salesforce.requests();
    assert!(
        requests[0].path.ends_with("/queryAll") && requests[0].query.contains("SystemModstamp")
    );
    assert!(
        requests
            .iter()
            .skip(1)
            .all(|r| r.path.starts_with("/services/data/v61.0/query/"))
    );

    // A deleted contact: skipped and its queued welcome cancelled.
    salesforce.delete("Contact", &Salesforce::record_id("Contact", 2), ago(1));
    let report = run(&contacts, "sf_contacts").await;
    assert_eq!(report.skipped.get("deleted"), Some(&1));

    let leads = poller_on(&db.pool, &config("salesforce.leads", "sf_leads")).await;
    assert_eq!(run(&leads, "sf_leads").await.jobs_created, 1);

    // The daily budget's 403 is not retried: the run fails with Salesforce's reason.
    salesforce.set_daily_limit(0);
    salesforce.put(
        "Lead",
        &Salesforce::record_id("Lead", 2),
        json!({"FirstName": "X", "Phone": "+44 20 7946 0002"}),
        ago(2),
        ago(2),
    );
    let error = leads
        .run("sf_leads", Mode::Manual, false)
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("REQUEST_LIMIT_EXCEEDED"),
        "{error}"
    );
}

/// With `oauth2_refresh` (README: Salesforce), an access token is fetched before the first
/// request of a run and again when Salesforce answers 401 `INVALID_SESSION_ID`; the request is
/// then repeated and nothing is lost; no secret is stored.
#[tokio::test]
async fn an_expired_salesforce_session_is_refreshed_once_and_the_request_repeated() {
    let org = Org::contacts().await;
    org.fake
        .configure_oauth("client-1", "client-secret", "refresh-secret");
    for n in 1..=5 {
        org.put(
            n,
            &Person::numbered(n),
            ago(30) + chrono::Duration::seconds(n as i64),
        );
    }
    org.set_page_size(2);
    let auth = r#"{ type = "oauth2_refresh", token_url = "/services/oauth2/token", client_id = "client-1", client_secret = "client-secret", refresh_token = "refresh-secret" }"#;
    let h = Config::new(&org)
        .set("auth", auth)
        .set("page_size", 2)
        .start(&org)
        .await;
    let refreshes = || {
        org.requests()
            .iter()
            .filter(|r| r.path == "/services/oauth2/token" && r.status == 200)
            .count()
    };

    assert_eq!(h.run().await.jobs_created, 5);
    assert_eq!(
        refreshes(),
        1,
        "a token is fetched before the first request"
    );
    let bearer = format!("Bearer {}", org.fake.access_token());
    assert!(
        org.requests()
            .iter()
            .filter(|r| r.path.starts_with("/services/data/"))
            .all(|r| r
                .headers
                .iter()
                .any(|(k, v)| k == "authorization" && *v == bearer))
    );

    org.put(6, &Person::numbered(6), ago(2));
    org.fake.expire_token();
    org.fake.fail_next(401, None, 1);
    let report = h.run().await;

    assert_eq!(report.jobs_created, 1);
    assert_eq!(refreshes(), 3, "one at the start, one after the 401");
    for secret in ["client-secret", "refresh-secret", "sf-token"] {
        h.assert_never_stored(secret).await;
    }
}
