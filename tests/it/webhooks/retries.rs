//! Applying an event that fails: a transient database error is retried with backoff, a write
//! the database refuses fails the event; neither loses it.

use super::payloads;
use super::{Hook, webhooks_toml};

/// Makes every insert into `timelines.messages` fail with SQLSTATE `code`.
async fn break_messages(hook: &Hook, code: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE FUNCTION public.refuse() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'injected failure' USING ERRCODE = '{code}'; END $$;
         CREATE TRIGGER refuse BEFORE INSERT ON timelines.messages
             FOR EACH ROW EXECUTE FUNCTION public.refuse();"
    )))
    .execute(hook.pool())
    .await
    .unwrap();
}

async fn repair_messages(hook: &Hook) {
    sqlx::raw_sql("DROP TRIGGER refuse ON timelines.messages; DROP FUNCTION public.refuse();")
        .execute(hook.pool())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_transient_database_error_is_retried_later_and_nothing_half_applied_stays() {
    let hook = Hook::start(&webhooks_toml()).await;
    hook.post(&payloads::message(
        "message:received:new",
        "m-1",
        5,
        "+14155550123",
        true,
        "hi",
    ))
    .await;
    break_messages(&hook, "40001").await; // serialization_failure
    let done = hook.process().await;
    assert_eq!((done.processed, done.retried), (0, 1));
    let event = &hook.events().await[0];
    assert_eq!(event["status"], "pending");
    assert_eq!(event["attempts"], 1);
    assert!(
        event["error"]
            .as_str()
            .unwrap()
            .contains("injected failure"),
        "{event}"
    );
    // The chat written before the failure was rolled back with it.
    assert_eq!(
        hook.scalar::<i64>("SELECT count(*) FROM timelines.chats")
            .await,
        0
    );
    // Tried again after a backoff (about 1 s for a first failure).
    let later: bool = hook
        .scalar("SELECT next_attempt_at > received_at + interval '0.5 seconds' FROM timelines.webhook_events")
        .await;
    assert!(later);

    repair_messages(&hook).await;
    sqlx::query("UPDATE timelines.webhook_events SET next_attempt_at = now()")
        .execute(hook.pool())
        .await
        .unwrap();
    assert_eq!(hook.process().await.processed, 1);
    let event = &hook.events().await[0];
    assert_eq!(
        (event["status"].clone(), event["attempts"].clone()),
        ("processed".into(), 2.into())
    );
    assert_eq!(
        hook.scalar::<i64>("SELECT count(*) FROM timelines.messages")
            .await,
        1
    );
}

#[tokio::test]
async fn a_write_the_database_refuses_fails_the_event_at_once_and_others_go_on() {
    let hook = Hook::start(&webhooks_toml()).await;
    hook.post(&payloads::message(
        "message:received:new",
        "m-1",
        5,
        "+14155550123",
        true,
        "hi",
    ))
    .await;
    hook.post(&payloads::chat("chat:new", 6, "+14155550124", None))
        .await;
    break_messages(&hook, "23514").await; // check_violation
    let done = hook.process().await;
    assert_eq!((done.processed, done.refused), (1, 1));
    let events = hook.events().await;
    assert_eq!(events[0]["status"], "failed");
    assert!(
        events[0]["error"]
            .as_str()
            .unwrap()
            .contains("injected failure")
    );
    assert_eq!(events[1]["status"], "processed");
}
