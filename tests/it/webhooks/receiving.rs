//! The receiver: authentication by the secret path, the body limit, bad input stored and
//! marked, repeated deliveries.

use std::net::SocketAddr;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::payloads;
use super::{Hook, SECRET, webhooks_toml};

#[tokio::test]
async fn a_wrong_secret_or_none_configured_is_404_and_stores_nothing() {
    let hook = Hook::start(&webhooks_toml()).await;
    let body = payloads::message("message:new", "m-1", 1, "+14155550123", true, "hi");
    let wrong = [
        "/webhooks/timelines/wrong".to_owned(),
        format!("/webhooks/timelines/{}", &SECRET[..SECRET.len() - 1]),
        format!("/webhooks/timelines/{SECRET}x"),
        format!("/webhooks/timelines/{}", SECRET.to_uppercase()),
        format!("/webhooks/timelines/{SECRET}/extra"),
        "/webhooks/timelines/".to_owned(),
    ];
    for path in &wrong {
        let (status, _) = hook.post_raw(path, body.to_string().into_bytes()).await;
        assert_eq!(status, 404, "{path}");
    }
    // Other methods too: nothing tells a right guess from a wrong one but the secret itself.
    let get = reqwest::get(format!("http://{}/webhooks/timelines/wrong", hook.addr))
        .await
        .unwrap();
    assert_eq!(get.status().as_u16(), 404);
    let get = reqwest::get(format!("http://{}/webhooks/timelines/{SECRET}", hook.addr))
        .await
        .unwrap();
    assert_eq!(get.status().as_u16(), 405);
    assert_eq!(
        hook.scalar::<i64>("SELECT count(*) FROM timelines.webhook_events")
            .await,
        0
    );

    // No secret configured: the receiver knows no path.
    let open = Hook::start("[webhooks]\npublic_url = \"http://x.example\"\n").await;
    for path in [
        "/webhooks/timelines/anything".to_owned(),
        format!("/webhooks/timelines/{SECRET}"),
    ] {
        let (status, _) = open.post_raw(&path, body.to_string().into_bytes()).await;
        assert_eq!(status, 404, "{path}");
    }
    assert_eq!(
        open.scalar::<i64>("SELECT count(*) FROM timelines.webhook_events")
            .await,
        0
    );
}

#[tokio::test]
async fn an_oversized_body_is_413_and_not_stored() {
    let hook = Hook::start(&format!("{}max_body_bytes = 2048\n", webhooks_toml())).await;
    let path = format!("/webhooks/timelines/{SECRET}");
    let mut big = payloads::message("message:new", "m-big", 1, "+14155550123", true, "");
    big["message"]["text"] = json!("x".repeat(4096));
    let (status, text) = hook.post_raw(&path, big.to_string().into_bytes()).await;
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("webhooks.max_body_bytes"), "{text}");

    // Without a Content-Length (chunked): cut off at the limit while reading.
    let answer = post_chunked(hook.addr, &path, big.to_string().as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert_eq!(
        hook.scalar::<i64>("SELECT count(*) FROM timelines.webhook_events")
            .await,
        0
    );

    // At the limit is fine.
    let small = payloads::message("message:new", "m-small", 1, "+14155550123", true, "hi");
    assert_eq!(hook.post(&small).await.0, 200);
}

#[tokio::test]
async fn bad_bodies_are_stored_marked_and_answered_2xx_without_crashing_anything() {
    let hook = Hook::start(&webhooks_toml()).await;
    let path = format!("/webhooks/timelines/{SECRET}");
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("not json", b"{\"event_type\": \"message:new\", oops".to_vec()),
        ("not utf-8", vec![0xff, 0xfe, 0x00, 0x01]),
        ("empty", Vec::new()),
        ("not an object", b"[1, 2, 3]".to_vec()),
        ("unknown type", br#"{"event_type": "chat:created", "chat": {"id": 1}}"#.to_vec()),
        ("no type", br#"{"chat": {"id": 1}}"#.to_vec()),
        ("no message uid", br#"{"event_type": "message:new", "message": {"text": "hi"}}"#.to_vec()),
        ("nul in text", br#"{"event_type": "message:new", "message": {"message_uid": "m-nul", "text": "a\u0000b"}}"#.to_vec()),
        ("chat without id", br#"{"event_type": "chat:new", "chat": {"name": "x"}}"#.to_vec()),
        ("account without id", br#"{"event_type": "whatsapp:account:connected", "whatsapp_account": {}}"#.to_vec()),
        ("wrong types", br#"{"event_type": "message:new", "message": {"message_uid": 5, "text": [1]}, "chat": "x"}"#.to_vec()),
    ];
    for (what, body) in &bodies {
        let (status, text) = hook.post_raw(&path, body.clone()).await;
        assert_eq!(status, 200, "{what}: {text}");
    }
    let (status, _) = hook
        .post_raw(
            &format!("{path}?workspace=nope"),
            br#"{"event_type": "message:new"}"#.to_vec(),
        )
        .await;
    assert_eq!(status, 200);
    hook.process().await;

    let events = hook.events().await;
    assert_eq!(events.len(), bodies.len() + 1, "every delivery is kept");
    let status: Vec<&str> = events
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        status,
        [
            "malformed",
            "malformed",
            "malformed",
            "malformed",
            "unknown",
            "unknown",
            "malformed",
            "malformed",
            "malformed",
            "malformed",
            "malformed",
            "malformed"
        ],
        "{events:#?}"
    );
    for event in &events {
        assert!(
            event["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{event}"
        );
    }
    assert!(events[0]["error"].as_str().unwrap().contains("not JSON"));
    assert!(
        events[4]["error"]
            .as_str()
            .unwrap()
            .contains("chat:created")
    );
    assert!(events[6]["error"].as_str().unwrap().contains("message_uid"));
    assert!(
        events[11]["error"]
            .as_str()
            .unwrap()
            .contains("\"nope\" is not configured")
    );
    // The bytes of bodies that are not JSON are kept as they came.
    let raw: Vec<u8> = sqlx::query_scalar(
        "SELECT body FROM timelines.webhook_events ORDER BY id LIMIT 1 OFFSET 1",
    )
    .fetch_one(hook.pool())
    .await
    .unwrap();
    assert_eq!(raw, bodies[1].1);
    // The service still answers.
    let health = reqwest::get(format!("http://{}/healthz", hook.addr))
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
}

#[tokio::test]
async fn a_repeated_delivery_is_stored_once_and_applied_once() {
    let hook = Hook::start(&webhooks_toml()).await;
    let event = payloads::message(
        "message:received:new",
        "m-dup",
        7,
        "+14155550123",
        true,
        "hello",
    );
    let (status, first) = hook.post(&event).await;
    assert_eq!((status, first["duplicate"].clone()), (200, json!(false)));
    // A redelivery may carry a fresh signed download URL: still the same event.
    let mut again = event.clone();
    again["message"]["attachments"][0]["temporary_download_url"] =
        json!("https://files.example/x?sig=2");
    let (status, second) = hook.post(&again).await;
    assert_eq!((status, second["duplicate"].clone()), (200, json!(true)));
    assert_eq!(first["id"], second["id"]);

    let done = hook.process().await;
    assert_eq!(done.processed, 1);
    assert_eq!(hook.process().await.processed, 0, "nothing left to apply");
    let events = hook.events().await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["deliveries"], 2);
    assert_eq!(events[0]["status"], "processed");
    assert_eq!(events[0]["message_uid"], "m-dup");
    assert_eq!(
        hook.scalar::<i64>("SELECT count(*) FROM timelines.messages")
            .await,
        1
    );
}

/// Posts `body` with `Transfer-Encoding: chunked` (no length up front); returns the raw answer.
async fn post_chunked(addr: SocketAddr, path: &str, body: &[u8]) -> String {
    let mut request =
        format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
            .into_bytes();
    for chunk in body.chunks(512) {
        request.extend(format!("{:x}\r\n", chunk.len()).into_bytes());
        request.extend(chunk);
        request.extend(b"\r\n");
    }
    request.extend(b"0\r\n\r\n");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    // (The server may answer before reading it all: a failed write still leaves an answer.)
    let _ = stream.write_all(&request).await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_nul_in_the_event_type_or_the_workspace_is_stored_marked_and_answered_2xx() {
    let hook = Hook::start(&webhooks_toml()).await;
    let path = format!("/webhooks/timelines/{SECRET}");
    // Postgres text refuses NUL: neither may turn bad input into a 503 the sender retries.
    let (status, text) = hook
        .post_raw(&path, br#"{"event_type": "message:new\u0000x"}"#.to_vec())
        .await;
    assert_eq!(status, 200, "{text}");
    let (status, text) = hook
        .post_raw(
            &format!("{path}?workspace=de%00fault"),
            br#"{"event_type": "message:new"}"#.to_vec(),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    let events = hook.events().await;
    assert_eq!(events.len(), 2, "{events:#?}");
    assert!(
        events.iter().all(|e| e["status"] == "malformed"),
        "{events:#?}"
    );
}

#[tokio::test]
async fn the_same_payload_again_after_another_event_of_its_chat_is_a_new_event_not_a_repeat() {
    let hook = Hook::start(&webhooks_toml()).await;
    let ana = "+14155550123";
    let assigned = payloads::chat(
        "chat:responsible:assigned",
        808,
        ana,
        Some("rita@example.com"),
    );
    let unassigned = payloads::chat("chat:responsible:unassigned", 808, ana, None);
    // Assigned, unassigned, assigned again: the third body is byte for byte the first.
    for body in [&assigned, &unassigned, &assigned] {
        let (status, answer) = hook.post(body).await;
        assert_eq!((status, answer["duplicate"].clone()), (200, json!(false)));
    }
    // A retry of the latest event (nothing of the chat in between) is still a repeat.
    let (_, again) = hook.post(&assigned).await;
    assert_eq!(again["duplicate"], json!(true));
    assert_eq!(hook.process().await.processed, 3);
    let responsible: Option<String> = hook
        .scalar("SELECT responsible_email FROM timelines.chats WHERE chat_id = 808")
        .await;
    assert_eq!(responsible.as_deref(), Some("rita@example.com"));
}
