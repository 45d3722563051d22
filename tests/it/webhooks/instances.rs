//! Several instances applying events at once: they share the work and lose nothing.

use std::sync::Arc;

use serde_json::json;
use timelines_sync::config::ProcessEnv;

use super::payloads;
use super::{Hook, settings, webhooks_toml};

#[tokio::test]
async fn instances_applying_events_of_one_chat_at_once_lose_none_of_their_fields() {
    let toml = webhooks_toml();
    let hook = Hook::start(&toml).await;
    // Each event tells one more field of the same chat: merged, the chat has them all.
    const EVENTS: usize = 60;
    for k in 0..EVENTS {
        let mut event = payloads::chat("chat:responsible:assigned", 500, "+14155550123", None);
        event["chat"][format!("field_{k}")] = json!(k);
        assert_eq!(hook.post(&event).await.0, 200);
    }
    let settings = settings(&toml);
    let catalog =
        Arc::new(timelines_sync::sources::Catalog::build(&settings, &ProcessEnv).unwrap());
    let instances: Vec<_> = (0..4)
        .map(|_| {
            let processor = timelines_sync::webhooks::processor(
                hook.pool().clone(),
                &settings,
                catalog.clone(),
            );
            tokio::spawn(async move {
                let mut processed = 0;
                loop {
                    let done = processor.run_once().await.unwrap();
                    if done.processed + done.refused + done.retried == 0 {
                        return processed;
                    }
                    processed += done.processed;
                }
            })
        })
        .collect();
    let mut processed = 0;
    for instance in instances {
        processed += instance.await.unwrap();
    }
    // (A key another instance took at the same moment is retried: apply what is left.)
    while hook
        .scalar::<i64>("SELECT count(*) FROM timelines.webhook_events WHERE status = 'pending'")
        .await
        > 0
    {
        sqlx::query("UPDATE timelines.webhook_events SET next_attempt_at = now()")
            .execute(hook.pool())
            .await
            .unwrap();
        processed += hook.process().await.processed;
    }
    assert_eq!(processed, EVENTS as u64);
    let raw: serde_json::Value = hook
        .scalar("SELECT raw FROM timelines.chats WHERE chat_id = 500")
        .await;
    let missing: Vec<usize> = (0..EVENTS)
        .filter(|k| raw.get(format!("field_{k}")).is_none())
        .collect();
    assert_eq!(
        missing,
        Vec::<usize>::new(),
        "fields lost between instances"
    );
}

#[tokio::test]
async fn an_event_waits_while_an_earlier_event_of_its_chat_is_being_applied_elsewhere() {
    let hook = Hook::start(&webhooks_toml()).await;
    let ana = "+14155550123";
    for body in [
        payloads::chat(
            "chat:responsible:assigned",
            900,
            ana,
            Some("rita@example.com"),
        ),
        payloads::chat("chat:responsible:unassigned", 900, ana, None),
        payloads::chat("chat:new", 901, "+14155550124", None),
    ] {
        assert_eq!(hook.post(&body).await.0, 200);
    }
    // Another instance holds the first event (it is applying it).
    let mut other = hook.pool().begin().await.unwrap();
    let held = timelines_sync::webhooks::events::claim_next(&mut other)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(held.event_type, "chat:responsible:assigned");

    // This one applies the other chat's event, not the later event of the held one's chat.
    let done = hook.process().await;
    assert_eq!(done.processed, 1);
    let pending: Vec<String> = sqlx::query_scalar(
        "SELECT event_type FROM timelines.webhook_events WHERE status = 'pending' ORDER BY id",
    )
    .fetch_all(hook.pool())
    .await
    .unwrap();
    assert_eq!(
        pending,
        ["chat:responsible:assigned", "chat:responsible:unassigned"]
    );

    // (The other instance stopped before finishing.) In order: the chat ends unassigned.
    other.rollback().await.unwrap();
    assert_eq!(hook.process().await.processed, 2);
    let responsible: Option<String> = hook
        .scalar("SELECT responsible_email FROM timelines.chats WHERE chat_id = 900")
        .await;
    assert_eq!(responsible, None);
}
