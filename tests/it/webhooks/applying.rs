//! What each documented event type changes in the mirror tables.

use serde_json::{Value, json};

use super::payloads::{self, ACCOUNT_WID};
use super::{Hook, webhooks_toml};

const ANA: &str = "+14155550123";

async fn row(hook: &Hook, sql: &'static str, key: &str) -> Value {
    sqlx::query_scalar(sql)
        .bind(key)
        .fetch_optional(hook.pool())
        .await
        .unwrap()
        .unwrap_or(Value::Null)
}

async fn message(hook: &Hook, uid: &str) -> Value {
    row(
        hook,
        "SELECT to_jsonb(m) FROM timelines.messages m WHERE message_uid = $1",
        uid,
    )
    .await
}

async fn chat(hook: &Hook, id: &str) -> Value {
    row(
        hook,
        "SELECT to_jsonb(c) FROM timelines.chats c WHERE chat_id = $1::bigint",
        id,
    )
    .await
}

async fn history(hook: &Hook, uid: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT status FROM timelines.message_status_history WHERE message_uid = $1 ORDER BY at, recorded_at",
    )
    .bind(uid)
    .fetch_all(hook.pool())
    .await
    .unwrap()
}

#[tokio::test]
async fn message_events_mirror_the_message_its_chat_and_the_sent_status() {
    let hook = Hook::start(&webhooks_toml()).await;
    for event in [
        payloads::message("message:received:new", "in-1", 101, ANA, true, "Hi there"),
        payloads::message("message:sent:new", "out-1", 101, ANA, false, "Hello Ana"),
        payloads::message("message:new", "out-1", 101, ANA, false, "Hello Ana"),
        payloads::reaction("out-1", 101, ANA, "👍"),
    ] {
        assert_eq!(hook.post(&event).await.0, 200);
    }
    let done = hook.process().await;
    assert_eq!(
        (done.processed, done.refused),
        (4, 0),
        "{:#?}",
        hook.events().await
    );

    let inbound = message(&hook, "in-1").await;
    assert_eq!(inbound["from_me"], false);
    assert_eq!(inbound["text"], "Hi there");
    assert_eq!(inbound["chat_id"], 101);
    assert_eq!(inbound["sender_phone"], ANA);
    assert_eq!(inbound["has_attachment"], true);
    assert_eq!(inbound["attachment_filename"], "invoice.pdf");
    assert_eq!(inbound["status"], Value::Null);
    let outbound = message(&hook, "out-1").await;
    assert_eq!(outbound["from_me"], true);
    assert_eq!(outbound["status"], "Sent");
    assert_eq!(outbound["recipient_phone"], ANA);
    assert_eq!(outbound["raw"]["reactions"], json!({"👍": 1}));
    assert_eq!(
        history(&hook, "out-1").await,
        ["Sent"],
        "two events, one status entry"
    );
    let c = chat(&hook, "101").await;
    assert_eq!(
        (c["name"].clone(), c["phone"].clone()),
        (json!("Ana Lima"), json!(ANA))
    );
    let events = hook.events().await;
    assert!(
        events.iter().all(|e| e["status"] == "processed"),
        "{events:#?}"
    );
    assert_eq!(events[1]["message_uid"], "out-1");
}

#[tokio::test]
async fn chat_events_upsert_the_chat_and_its_assignee_and_keep_what_they_do_not_say() {
    let hook = Hook::start(&webhooks_toml()).await;
    for event in [
        payloads::chat("chat:new", 202, ANA, None),
        payloads::chat("chat:incoming:new", 202, ANA, None),
        payloads::chat("chat:outgoing:new", 203, "+14155550124", None),
        payloads::chat(
            "chat:responsible:assigned",
            202,
            ANA,
            Some("rita@example.com"),
        ),
    ] {
        hook.post(&event).await;
    }
    assert_eq!(hook.process().await.processed, 4);
    let c = chat(&hook, "202").await;
    assert_eq!(c["responsible_email"], "rita@example.com");
    assert_eq!(c["labels"], json!(["lead", "vip"]));
    assert_eq!(c["last_message_uid"], "last-1");
    assert_eq!(c["whatsapp_account_id"], ACCOUNT_WID);
    assert_eq!(c["raw"]["unattended"], true);
    assert!(chat(&hook, "203").await.is_object());

    // Unassigned: the assignee is cleared; a message event after it (a partial chat block)
    // clears nothing it does not tell.
    hook.post(&payloads::chat(
        "chat:responsible:unassigned",
        202,
        ANA,
        None,
    ))
    .await;
    hook.post(&payloads::message(
        "message:received:new",
        "in-2",
        202,
        ANA,
        true,
        "?",
    ))
    .await;
    assert_eq!(hook.process().await.processed, 2);
    let c = chat(&hook, "202").await;
    assert_eq!(c["responsible_email"], Value::Null);
    assert_eq!(c["labels"], json!(["lead", "vip"]));
    assert_eq!(c["closed"], false);
    // The account block of chat events lands too.
    let account = row(
        &hook,
        "SELECT to_jsonb(a) FROM timelines.whatsapp_accounts a WHERE account_id = $1",
        ACCOUNT_WID,
    )
    .await;
    assert_eq!(account["status"], "Active");
}

#[tokio::test]
async fn account_events_update_the_account_status() {
    let hook = Hook::start(&webhooks_toml()).await;
    let status = |hook: &Hook| {
        let pool = hook.pool().clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "SELECT status FROM timelines.whatsapp_accounts WHERE account_id = $1",
            )
            .bind(ACCOUNT_WID)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    for (event, expected) in [
        ("whatsapp:account:connected", "Active"),
        ("whatsapp:account:suspended", "Suspended"),
        ("whatsapp:account:resumed", "Active"),
        ("whatsapp:account:disconnected", "Disconnected"),
    ] {
        // (The payload's own status is stale in real deliveries too: the event's type decides.)
        hook.post(&payloads::account(event, "Active")).await;
        assert_eq!(hook.process().await.processed, 1, "{event}");
        assert_eq!(status(&hook).await, expected, "{event}");
    }
    let account = row(
        &hook,
        "SELECT to_jsonb(a) FROM timelines.whatsapp_accounts a WHERE account_id = $1",
        ACCOUNT_WID,
    )
    .await;
    assert_eq!(account["phone"], "+972540000001");
    assert_eq!(account["account_name"], "Sales line");
}

#[tokio::test]
async fn call_events_show_in_the_chat_as_messages() {
    let hook = Hook::start(&webhooks_toml()).await;
    for (event, uid) in [
        ("call:incoming:missed", "call-1"),
        ("call:incoming:ended", "call-2"),
        ("call:outgoing:ended", "call-3"),
    ] {
        hook.post(&payloads::call(event, uid, 303, ANA)).await;
    }
    assert_eq!(hook.process().await.processed, 3);
    let missed = message(&hook, "call-1").await;
    assert_eq!(missed["message_type"], "call");
    assert_eq!(missed["from_me"], false);
    assert_eq!(missed["chat_id"], 303);
    assert_eq!(missed["raw"]["call_details"]["duration"], 42);
    assert_eq!(message(&hook, "call-3").await["from_me"], true);
    assert!(chat(&hook, "303").await.is_object());
}

#[tokio::test]
async fn waba_message_statuses_are_recorded_and_a_failure_gives_the_credits_back() {
    let hook = Hook::start(&webhooks_toml()).await;
    // A message the service sent: 1 credit charged in the ledger.
    sqlx::raw_sql(
        "INSERT INTO timelines.messages (workspace, message_uid, from_me, status, credits, job_id)
         VALUES ('default', 'w-fail', true, 'Queued', 1, 42), ('default', 'w-read', true, 'Queued', 1, 43);
         SELECT timelines.count_usage('default', 0, 2);",
    )
    .execute(hook.pool())
    .await
    .unwrap();
    let used = || async {
        sqlx::query_scalar::<_, i64>("SELECT messages_used FROM timelines.quota_usage")
            .fetch_one(hook.pool())
            .await
            .unwrap()
    };
    assert_eq!(used().await, 2);
    let waba = |event: &str, uid: &str, minute: u32| {
        let mut body = payloads::waba_message(event, uid, 404, ANA);
        body["timestamp"] = json!(format!("2024-03-01 10:{minute:02}:00 +0300"));
        body
    };
    for body in [
        waba("waba:message:delivered", "w-read", 31),
        waba("waba:message:read", "w-read", 32),
        // Late: the message's own `message:sent:new` after it was read; the status stays.
        payloads::message("message:sent:new", "w-read", 404, ANA, false, "hi"),
        waba("waba:message:failed", "w-fail", 33),
        waba("waba:message:received", "w-in", 34),
    ] {
        hook.post(&body).await;
    }
    // Other WABA events carry no documented shape: kept, not applied.
    hook.post(&json!({"event_type": "waba:template:approved", "template": {"id": 1}}))
        .await;
    let done = hook.process().await;
    assert_eq!(
        (done.processed, done.refused),
        (5, 1),
        "{:#?}",
        hook.events().await
    );
    assert_eq!(message(&hook, "w-read").await["status"], "Read");
    assert_eq!(
        message(&hook, "w-read").await["job_id"],
        43,
        "still linked to its job"
    );
    assert_eq!(
        history(&hook, "w-read").await,
        ["Sent", "Delivered", "Read"]
    );
    let failed = message(&hook, "w-fail").await;
    assert_eq!(
        (failed["status"].clone(), failed["credits_restored"].clone()),
        (json!("Failed"), json!(true))
    );
    assert_eq!(used().await, 1, "the failed message's credit came back");
    assert_eq!(message(&hook, "w-in").await["from_me"], false);
    let events = hook.events().await;
    assert_eq!(events.last().unwrap()["status"], "ignored");
}

#[tokio::test]
async fn a_chat_event_does_not_take_an_account_s_status_back() {
    let hook = Hook::start(&webhooks_toml()).await;
    hook.post(&payloads::account(
        "whatsapp:account:disconnected",
        "Active",
    ))
    .await;
    // A chat event's account block says "Active" whatever happened (as account events' do).
    hook.post(&payloads::chat(
        "chat:responsible:assigned",
        202,
        ANA,
        Some("rita@example.com"),
    ))
    .await;
    assert_eq!(hook.process().await.processed, 2);
    let account = row(
        &hook,
        "SELECT to_jsonb(a) FROM timelines.whatsapp_accounts a WHERE account_id = $1",
        ACCOUNT_WID,
    )
    .await;
    assert_eq!(account["status"], "Disconnected", "{account}");
    assert_eq!(account["account_name"], "Sales line");
}
