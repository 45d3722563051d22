//! The vendor presets (Pipedrive, Freshdesk, Zendesk, Salesforce, Zoho) against their fakes.

use serde_json::json;
use timelines_sync::sources::engine::Mode;

use crate::sources::{ago, count, poller, poller_on, rfc, run, sends};

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

#[tokio::test]
async fn a_pipedrive_429_waits_for_the_rate_limit_reset_instead_of_retrying_at_once() {
    use crate::fakes::pipedrive::Pipedrive;
    let pipedrive = Pipedrive::start("pd-token").await;
    for id in 1..=4u64 {
        let t = ago(30) + chrono::Duration::seconds(id as i64);
        pipedrive.put_person(
            id,
            json!({"first_name": format!("P{id}"), "phones": [{"value": format!("+55 11 9{:04}-{:04}", 3000 + id, 4000 + id), "primary": true}]}),
            t,
            t,
        );
    }
    // Two requests per 2 s; 429 beyond with `x-ratelimit-reset` and no Retry-After.
    pipedrive.set_burst_limit(Some(2));
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
page_size = 1
requests_per_second = 100
[[rules]]
name = "welcome"
source = "pd"
trigger = "created"
template = "Olá {{{{ first_name }}}}"
"#,
        url = pipedrive.url,
        start = rfc(ago(60))
    );
    let (_db, poller) = poller(&config).await;
    let report = run(&poller, "pd").await;
    assert_eq!(report.jobs_created, 4);
    let throttled = pipedrive
        .requests()
        .iter()
        .filter(|r| r.status == 429)
        .count();
    // The test's retry backoff starts at 20 ms: only the reset header keeps this to a wait or two.
    assert!((1..=2).contains(&throttled), "{throttled} answers of 429");
}
