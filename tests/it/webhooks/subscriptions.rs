//! `webhooks sync` and `webhooks list` against the simulator's subscription endpoints.

use timelines_sync::config::{ProcessEnv, Settings};
use timelines_sync::simulator::{Simulator, SimulatorConfig};
use timelines_sync::timelines::{Client, NewWebhook, Webhook};
use timelines_sync::webhooks::subscriptions;

use super::{SECRET, settings};
use crate::helpers::test_db;

pub const TOKEN: &str = "sim-token-for-webhook-tests";

/// A simulator that allows plenty of requests.
pub async fn simulator(config: SimulatorConfig) -> Simulator {
    Simulator::start(
        SimulatorConfig {
            tokens: vec![TOKEN.into()],
            rate_limit: 10_000,
            ..config
        },
        ([127, 0, 0, 1], 0).into(),
    )
    .await
    .unwrap()
}

/// A config whose default workspace is `sim`, with the receiver at `public_url`.
pub fn config_for(sim: &Simulator, public_url: &str, extra: &str) -> String {
    format!(
        "[workspaces.default]\napi_url = \"{}\"\ntoken = \"{TOKEN}\"\nrate_limit_per_minute = 60000\n\
         [webhooks]\nsecret = \"{SECRET}\"\npublic_url = \"{public_url}\"\n{extra}",
        sim.base_url()
    )
}

async fn hooks(client: &Client) -> Vec<(String, String, String, bool)> {
    let mut all: Vec<(String, String, String, bool)> = client
        .list_webhooks()
        .await
        .unwrap()
        .into_iter()
        .map(|h: Webhook| {
            (
                h.id,
                h.event_type.unwrap_or_default(),
                h.url.unwrap_or_default(),
                h.enabled.unwrap_or(true),
            )
        })
        .collect();
    all.sort();
    all
}

async fn create(client: &Client, event: &str, url: &str) {
    client
        .create_webhook(&NewWebhook {
            event_type: event.into(),
            url: url.into(),
            enabled: Some(false),
        })
        .await
        .unwrap();
}

async fn sync(settings: &Settings, clients: &[(String, Client)]) -> anyhow::Result<String> {
    subscriptions::sync(settings, &ProcessEnv, clients).await
}

#[tokio::test]
async fn webhooks_sync_is_idempotent_leaves_other_tools_alone_and_respects_the_limit_of_ten() {
    let sim = simulator(SimulatorConfig::default()).await;
    let db = test_db().await;
    let public = "https://sync.example.com";
    let settings = settings(&config_for(&sim, public, ""));
    let clients = subscriptions::clients(&settings, &db.pool).unwrap();
    let client = &clients[0].1;
    // Another tool's subscription, and two of ours from before a secret rotation.
    create(client, "message:new", "https://zapier.example/hooks/abc").await;
    let old = format!("{public}/webhooks/timelines/old-secret-0123456789?workspace=default");
    create(client, "chat:new", &old).await;
    create(client, "call:outgoing:ended", &old).await;

    let report = sync(&settings, &clients).await.unwrap();
    assert!(
        report.contains("5 created, 2 updated, 0 deleted, 0 unchanged"),
        "{report}"
    );
    assert!(!report.contains(SECRET), "{report}");
    let url = format!("{public}/webhooks/timelines/{SECRET}?workspace=default");
    let after = hooks(client).await;
    let ours: Vec<&(String, String, String, bool)> = after.iter().filter(|h| h.2 == url).collect();
    let mut events: Vec<&str> = ours.iter().map(|h| h.1.as_str()).collect();
    events.sort();
    assert_eq!(
        events,
        [
            "chat:new",
            "chat:responsible:assigned",
            "chat:responsible:unassigned",
            "message:new",
            "message:reaction",
            "whatsapp:account:connected",
            "whatsapp:account:disconnected"
        ]
    );
    assert!(ours.iter().all(|h| h.3), "all enabled");
    assert_eq!(after.len(), 8);
    assert!(
        after
            .iter()
            .any(|h| h.2 == "https://zapier.example/hooks/abc" && !h.3),
        "untouched"
    );

    // Again: nothing to do.
    let again = sync(&settings, &clients).await.unwrap();
    assert!(
        again.contains("0 created, 0 updated, 0 deleted, 7 unchanged"),
        "{again}"
    );
    assert_eq!(hooks(client).await, after);

    // Two more tools (10 in all): fine. Then one event type more would need 11: refused, and
    // nothing changes.
    create(client, "chat:new", "https://crm.example/a").await;
    create(client, "chat:new", "https://crm.example/b").await;
    assert!(
        sync(&settings, &clients)
            .await
            .unwrap()
            .contains("7 unchanged")
    );
    let before = hooks(client).await;
    let wider = super::settings(&config_for(
        &sim,
        public,
        "events = [\"message:new\", \"message:reaction\", \"chat:new\", \"chat:responsible:assigned\", \
         \"chat:responsible:unassigned\", \"whatsapp:account:connected\", \
         \"whatsapp:account:disconnected\", \"call:incoming:missed\"]\n",
    ));
    let error = format!("{:#}", sync(&wider, &clients).await.unwrap_err());
    assert!(
        error.contains("allows 10") && error.contains("nothing was changed"),
        "{error}"
    );
    assert!(!error.contains(SECRET), "{error}");
    assert_eq!(hooks(client).await, before);

    // Fewer event types: ours no longer wanted are deleted (freeing their slots).
    let fewer = super::settings(&config_for(&sim, public, "events = [\"message:new\"]\n"));
    let report = sync(&fewer, &clients).await.unwrap();
    assert!(
        report.contains("0 created, 0 updated, 6 deleted, 1 unchanged"),
        "{report}"
    );
    assert_eq!(hooks(client).await.len(), 4);

    let listed = subscriptions::list(&fewer, &ProcessEnv, &clients)
        .await
        .unwrap();
    assert!(listed.contains("4 subscriptions (limit 10)"), "{listed}");
    assert!(
        listed.contains("(this service)") && listed.contains("https://crm.example/a"),
        "{listed}"
    );
    assert!(!listed.contains(SECRET), "{listed}");
}

#[tokio::test]
async fn inbound_rules_add_the_subscriptions_they_need() {
    let sim = simulator(SimulatorConfig::default()).await;
    let db = test_db().await;
    let settings = settings(&config_for(
        &sim,
        "https://sync.example.com",
        "events = [\"message:new\"]\n\
         [[rules]]\non = \"message:received:new\"\naction = \"add_note\"\ntemplate = \"x\"\n\
         [[rules]]\non = \"call:incoming:missed\"\naction = \"add_note\"\ntemplate = \"y\"\n",
    ));
    let clients = subscriptions::clients(&settings, &db.pool).unwrap();
    sync(&settings, &clients).await.unwrap();
    let events: Vec<String> = hooks(&clients[0].1)
        .await
        .into_iter()
        .map(|h| h.1)
        .collect();
    assert_eq!(
        events.len(),
        2,
        "message:received:new comes with message:new: {events:?}"
    );
    assert!(events.contains(&"call:incoming:missed".to_owned()));
}

#[tokio::test]
async fn webhooks_list_hides_every_receiver_secret_even_one_it_was_not_configured_with() {
    let sim = simulator(SimulatorConfig::default()).await;
    let db = test_db().await;
    let public = "https://sync.example.com";
    // Run where the secret is not configured (an operator's machine), or after a rotation.
    let no_secret = super::settings(&format!(
        "[workspaces.default]\napi_url = \"{}\"\ntoken = \"{TOKEN}\"\nrate_limit_per_minute = 60000\n\
         [webhooks]\npublic_url = \"{public}\"\n",
        sim.base_url()
    ));
    let clients = subscriptions::clients(&no_secret, &db.pool).unwrap();
    let live = "live-secret-8c1d2e3f4a5b";
    let old = "old-secret-0123456789";
    create(
        &clients[0].1,
        "message:new",
        &format!("{public}/webhooks/timelines/{live}?workspace=default"),
    )
    .await;
    create(
        &clients[0].1,
        "chat:new",
        &format!("https://old.example.com/webhooks/timelines/{old}"),
    )
    .await;
    for settings in [&no_secret, &settings(&config_for(&sim, public, ""))] {
        let listed = subscriptions::list(settings, &ProcessEnv, &clients)
            .await
            .unwrap();
        assert!(listed.contains("2 subscriptions"), "{listed}");
        assert!(!listed.contains(live) && !listed.contains(old), "{listed}");
        assert!(
            listed.contains("https://old.example.com/webhooks/timelines/[secret]"),
            "{listed}"
        );
    }
}
