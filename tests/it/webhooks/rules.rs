//! Inbound rules (webhook events as records of the built-in `timelines` source) and opt-out by
//! reply.

use std::path::Path;

use serde_json::{Value, json};
use timelines_sync::config::{ProcessEnv, Settings};

use super::payloads;
use super::{Hook, webhooks_toml};

const ANA: &str = "+14155550123";
const BOB: &str = "+14155550124";

async fn enqueue(hook: &Hook, kind: &str, payload: Value) -> i64 {
    sqlx::query_scalar("SELECT timelines.enqueue($1, $2)")
        .bind(kind)
        .bind(payload)
        .fetch_one(hook.pool())
        .await
        .unwrap()
}

async fn jobs(hook: &Hook, kind: &str) -> Vec<Value> {
    sqlx::query_scalar("SELECT to_jsonb(j) FROM timelines.jobs j WHERE kind = $1 ORDER BY id")
        .bind(kind)
        .fetch_all(hook.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_stop_reply_opts_the_contact_out_and_cancels_their_queued_sends() {
    let hook = Hook::start(&webhooks_toml()).await;
    hook.post(&payloads::chat("chat:new", 101, ANA, None)).await;
    hook.process().await;
    let by_phone = enqueue(
        &hook,
        "send_message",
        json!({"phone": ANA, "text": "Promo"}),
    )
    .await;
    let by_chat = enqueue(
        &hook,
        "send_message",
        json!({"chat_id": 101, "text": "Promo"}),
    )
    .await;
    let note = enqueue(&hook, "add_note", json!({"phone": ANA, "text": "called"})).await;
    let other = enqueue(
        &hook,
        "send_message",
        json!({"phone": BOB, "text": "Promo"}),
    )
    .await;

    hook.post(&payloads::message(
        "message:received:new",
        "m-stop",
        101,
        ANA,
        true,
        "  Stop\n",
    ))
    .await;
    hook.post(&payloads::message(
        "message:received:new",
        "m-bob",
        102,
        BOB,
        true,
        "please stop that",
    ))
    .await;
    // A STOP the team sends is not the contact opting out.
    hook.post(&payloads::message(
        "message:sent:new",
        "m-team",
        103,
        "+14155550125",
        false,
        "STOP",
    ))
    .await;
    assert_eq!(hook.process().await.processed, 3);

    let opt_outs: Vec<(String, String, String)> =
        sqlx::query_as("SELECT phone, reason, source FROM timelines.opt_outs")
            .fetch_all(hook.pool())
            .await
            .unwrap();
    assert_eq!(
        opt_outs,
        [(
            ANA.to_owned(),
            "replied \"Stop\"".to_owned(),
            "webhook".to_owned()
        )]
    );
    for id in [by_phone, by_chat] {
        let job = crate::helpers::job_row(hook.pool(), id).await;
        assert_eq!(job["state"], "cancelled", "{job}");
        let reason = job["last_error"].as_str().unwrap();
        assert!(
            reason.contains(&format!("{ANA} opted out")) && reason.contains("replied \"Stop\""),
            "{reason}"
        );
    }
    assert_eq!(
        crate::helpers::state_of(hook.pool(), note).await,
        "queued",
        "notes are not messages"
    );
    assert_eq!(crate::helpers::state_of(hook.pool(), other).await, "queued");
}

#[tokio::test]
async fn a_stop_reply_from_a_phone_already_opted_out_still_cancels_sends_queued_since() {
    let hook = Hook::start(&webhooks_toml()).await;
    sqlx::query("INSERT INTO timelines.opt_outs (phone, reason) VALUES ($1, 'asked by email')")
        .bind(ANA)
        .execute(hook.pool())
        .await
        .unwrap();
    // An application enqueues directly (rules would have skipped the phone).
    let send = enqueue(
        &hook,
        "send_message",
        json!({"phone": ANA, "text": "Promo"}),
    )
    .await;
    hook.post(&payloads::message(
        "message:received:new",
        "m-stop",
        101,
        ANA,
        true,
        "STOP",
    ))
    .await;
    assert_eq!(hook.process().await.processed, 1);
    let job = crate::helpers::job_row(hook.pool(), send).await;
    assert_eq!(job["state"], "cancelled", "{job}");
    let reason = job["last_error"].as_str().unwrap();
    assert!(
        reason.contains(&format!("{ANA} opted out")) && reason.contains("replied \"STOP\""),
        "{reason}"
    );
}

#[tokio::test]
async fn opt_out_keywords_are_configurable_and_opt_out_by_reply_can_be_turned_off() {
    let hook = Hook::start(&format!(
        "{}opt_out_keywords = [\"basta\", \"ALTO\"]\n",
        webhooks_toml()
    ))
    .await;
    hook.post(&payloads::message(
        "message:received:new",
        "m-1",
        1,
        ANA,
        true,
        "STOP",
    ))
    .await;
    hook.post(&payloads::message(
        "message:received:new",
        "m-2",
        2,
        BOB,
        true,
        "Basta",
    ))
    .await;
    hook.process().await;
    let phones: Vec<String> = sqlx::query_scalar("SELECT phone FROM timelines.opt_outs")
        .fetch_all(hook.pool())
        .await
        .unwrap();
    assert_eq!(phones, [BOB]);

    let off = Hook::start(&format!("{}opt_out_by_reply = false\n", webhooks_toml())).await;
    off.post(&payloads::message(
        "message:received:new",
        "m-1",
        1,
        ANA,
        true,
        "STOP",
    ))
    .await;
    off.process().await;
    assert_eq!(
        off.scalar::<i64>("SELECT count(*) FROM timelines.opt_outs")
            .await,
        0
    );
}

const NOTE_RULES: &str = r#"
[[rules]]
name = "note-inbound"
on = "message:received:new"
action = "add_note"
template = "{{ name }} wrote: {{ message.text }}"

[[rules]]
name = "tag-missed-call"
on = ["call:incoming:missed"]
action = "add_labels"
payload = { labels = ["missed-call"] }
"#;

#[tokio::test]
async fn an_inbound_rule_creates_exactly_one_job_per_event_even_when_delivered_twice() {
    let hook = Hook::start(&format!("{}{NOTE_RULES}", webhooks_toml())).await;
    // One message, delivered as `message:new` and `message:received:new`, the latter twice.
    let as_new = payloads::message("message:new", "m-1", 101, ANA, true, "Is it in stock?");
    let as_received = payloads::message(
        "message:received:new",
        "m-1",
        101,
        ANA,
        true,
        "Is it in stock?",
    );
    for body in [&as_new, &as_received, &as_received] {
        assert_eq!(hook.post(body).await.0, 200);
    }
    let done = hook.process().await;
    assert_eq!((done.processed, done.jobs_created), (2, 1));
    // Applied again (as after a crash between the jobs and the event's status): nothing more.
    sqlx::query("UPDATE timelines.webhook_events SET status = 'pending'")
        .execute(hook.pool())
        .await
        .unwrap();
    assert_eq!(hook.process().await.jobs_created, 0);

    let notes = jobs(&hook, "add_note").await;
    assert_eq!(notes.len(), 1, "{notes:#?}");
    assert_eq!(
        notes[0]["payload"],
        json!({"phone": ANA, "text": "Ana Lima wrote: Is it in stock?"})
    );
    assert_eq!(
        notes[0]["idempotency_key"],
        "webhook:timelines:note-inbound:message:m-1:event"
    );
    let outcomes: Vec<(String, String)> =
        sqlx::query_as("SELECT rule, outcome FROM timelines.rule_events")
            .fetch_all(hook.pool())
            .await
            .unwrap();
    assert_eq!(
        outcomes,
        [("note-inbound".to_owned(), "enqueued".to_owned())]
    );

    // The team's own messages are not inbound; another inbound message is another job.
    hook.post(&payloads::message(
        "message:new",
        "m-2",
        101,
        ANA,
        false,
        "Yes!",
    ))
    .await;
    hook.post(&payloads::message(
        "message:received:new",
        "m-3",
        101,
        ANA,
        true,
        "Great",
    ))
    .await;
    hook.post(&payloads::call("call:incoming:missed", "c-1", 101, BOB))
        .await;
    assert_eq!(hook.process().await.jobs_created, 2);
    assert_eq!(jobs(&hook, "add_note").await.len(), 2);
    let labels = jobs(&hook, "add_labels").await;
    assert_eq!(
        labels[0]["payload"],
        json!({"phone": BOB, "labels": ["missed-call"]})
    );
}

#[tokio::test]
async fn inbound_rules_follow_opt_outs_frequency_caps_and_quiet_hours() {
    let now = chrono::Utc::now();
    let quiet_start = (now - chrono::Duration::hours(1)).format("%H:%M");
    let quiet_end = (now + chrono::Duration::hours(1)).format("%H:%M");
    let hook = Hook::start(&format!(
        r#"{}
[[rules]]
name = "auto-reply"
on = "message:received:new"
filter = "message.text != 'ignore me'"
template = "Thanks {{{{ name }}}}, we will answer soon"
frequency_cap = {{ max = 1, hours = 24 }}
quiet_hours = {{ start = "{quiet_start}", end = "{quiet_end}", timezone = "UTC" }}
"#,
        webhooks_toml()
    ))
    .await;
    for (uid, phone, text) in [
        ("m-1", ANA, "Hello"),
        ("m-2", ANA, "Hello again"), // capped: one auto-reply per day
        ("m-3", BOB, "STOP"),        // opted out by this very message
        ("m-4", "+14155550125", "ignore me"), // filtered out
    ] {
        hook.post(&payloads::message(
            "message:received:new",
            uid,
            1,
            phone,
            true,
            text,
        ))
        .await;
    }
    assert_eq!(hook.process().await.jobs_created, 1);
    let sends = jobs(&hook, "send_message").await;
    assert_eq!(sends.len(), 1);
    assert_eq!(sends[0]["payload"]["phone"], ANA);
    let run_at: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(sends[0]["run_at"].clone()).unwrap();
    assert!(
        run_at > now + chrono::Duration::minutes(30),
        "held for the end of quiet hours: {run_at}"
    );
    let outcomes: Vec<(String, String)> = sqlx::query_as(
        "SELECT phone, outcome FROM timelines.rule_events ORDER BY created_at, phone",
    )
    .fetch_all(hook.pool())
    .await
    .unwrap();
    assert!(
        outcomes.contains(&(ANA.to_owned(), "enqueued".to_owned())),
        "{outcomes:?}"
    );
    assert!(
        outcomes.contains(&(ANA.to_owned(), "capped".to_owned())),
        "{outcomes:?}"
    );
    assert!(
        outcomes.contains(&(BOB.to_owned(), "opted_out".to_owned())),
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes.len(),
        3,
        "the filtered message is no event: {outcomes:?}"
    );
}

fn config_error(toml: &str) -> String {
    let settings = Settings::parse(toml, Path::new("test.toml")).unwrap();
    settings.validate(&ProcessEnv).unwrap_err().to_string()
}

#[test]
fn inbound_rule_mistakes_are_refused_with_their_key() {
    let cases = [
        (
            "[[rules]]\non = \"chat:created\"\naction = \"add_note\"\ntemplate = \"x\"\n",
            "rules[0].on",
        ),
        (
            "[[rules]]\nsource = \"timelines\"\naction = \"add_note\"\ntemplate = \"x\"\n",
            "rules[0].on",
        ),
        (
            "[[rules]]\non = \"message:new\"\ntrigger = \"updated\"\naction = \"add_note\"\ntemplate = \"x\"\n",
            "rules[0].trigger",
        ),
        (
            "[[rules]]\naction = \"add_note\"\ntemplate = \"x\"\n",
            "rules[0].source",
        ),
        (
            "[sources.timelines]\nsql = \"SELECT 1\"\ncursor_field = \"t\"\nid_field = \"i\"\nphone_fields = [\"p\"]\n",
            "sources.timelines",
        ),
        (
            "[webhooks]\nevents = [\"message:new\", \"chat:created\"]\n",
            "webhooks.events[1]",
        ),
        ("[webhooks]\nsecret = \"short\"\n", "webhooks.secret"),
        (
            "[webhooks]\nmax_body_bytes = 10\n",
            "webhooks.max_body_bytes",
        ),
    ];
    for (toml, key) in cases {
        let error = config_error(toml);
        assert!(error.contains(&format!("`{key}`")), "{toml} -> {error}");
    }
}
