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
