//! Feature tests over HTTP: statuses, chat updates, labels, notes, files, webhooks.

use std::time::Duration;

use reqwest::Method;
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::FIRST_CHAT_ID;
use super::tests_support::{receiver, relaxed, spawn};

#[tokio::test]
async fn message_status_progresses_queued_sent_delivered_read() {
    let t = spawn(relaxed()).await; // 50 ms per step
    let uid = t.send_text("+14155550002", "hi").await;
    let (_, m) = t.get(&format!("/messages/{uid}")).await;
    assert_eq!(m["data"]["status"], "Queued");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, m) = t.get(&format!("/messages/{uid}")).await;
    assert_eq!(m["data"]["status"], "Read");
    let (status, history) = t.get(&format!("/messages/{uid}/status_history")).await;
    assert_eq!(status, StatusCode::OK);
    let statuses: Vec<&str> = history["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["Queued", "Sent", "Delivered", "Read"]);
}

#[tokio::test]
async fn patch_chat_checks_name_uniqueness_and_responsible() {
    let t = spawn(relaxed()).await;
    let path = format!("/chats/{FIRST_CHAT_ID}");
    let (_, other) = t.get(&format!("/chats/{}", FIRST_CHAT_ID + 1)).await;
    let taken = other["data"]["name"].clone();
    let (status, body) = t.send(Method::PATCH, &path, json!({"name": taken})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["errors"][0]["fields"], json!(["body", "name"]));
    let (status, _) = t
        .send(
            Method::PATCH,
            &path,
            json!({"responsible": "stranger@x.example"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let update = json!({"name": "Renamed", "responsible": "dan@acme.example", "closed": true});
    let (status, body) = t.send(Method::PATCH, &path, update).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["name"], "Renamed");
    assert_eq!(body["data"]["responsible_email"], "dan@acme.example");
    assert_eq!(body["data"]["responsible_name"], "Dan Diaz");
    assert_eq!(body["data"]["closed"], true);
    let (_, body) = t
        .send(Method::PATCH, &path, json!({"responsible": ""}))
        .await;
    assert_eq!(body["data"]["responsible_email"], Value::Null);
}

#[tokio::test]
async fn put_adds_labels_and_post_replaces_them() {
    let t = spawn(relaxed()).await;
    let path = format!("/chats/{}/labels", FIRST_CHAT_ID + 1);
    t.send(Method::POST, &path, json!({"labels": ["a"]})).await;
    let (_, body) = t
        .send(Method::PUT, &path, json!({"labels": ["b", "a"]}))
        .await;
    assert_eq!(body["data"]["labels"], json!(["a", "b"]));
    let (_, body) = t.send(Method::POST, &path, json!({"labels": ["c"]})).await;
    assert_eq!(body["data"]["labels"], json!(["c"]));
    let (_, body) = t.get(&path).await;
    assert_eq!(body["data"]["labels"], json!(["c"]));
    let (status, _) = t.send(Method::PUT, &path, json!({"labels": "c"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = t
        .send(Method::PUT, &path, json!({"labels": ["x".repeat(65)]}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn notes_are_messages_of_type_note_and_cost_nothing() {
    let t = spawn(relaxed()).await;
    let path = format!("/chats/{}/notes", FIRST_CHAT_ID + 2);
    let (status, body) = t.post(&path, json!({"text": "call back monday"})).await;
    assert_eq!(status, StatusCode::OK);
    let uid = body["data"]["message_uid"].as_str().unwrap();
    let (_, m) = t.get(&format!("/messages/{uid}")).await;
    assert_eq!(m["data"]["message_type"], "Note");
    assert_eq!(m["data"]["text"], "call back monday");
    assert!(t.sim.sent_messages().is_empty());
    assert_eq!(t.sim.stats().credits_used, 0);
}

#[tokio::test]
async fn files_upload_by_url_and_multipart_then_list_get_and_delete() {
    let t = spawn(relaxed()).await;
    let (status, body) = t
        .post(
            "/files",
            json!({"download_url": "https://example.com/docs/Report.PDF?sig=1"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let by_url = body["data"].clone();
    assert_eq!(by_url["filename"], "Report.PDF");
    assert_eq!(by_url["mimetype"], "application/pdf");
    assert!(by_url["size"].as_u64().unwrap() > 0);
    assert!(by_url["temporary_download_url"].is_string());

    let part = reqwest::multipart::Part::bytes(b"hello".to_vec()).file_name("notes.txt");
    let form = reqwest::multipart::Form::new().part("file", part);
    let (status, body) = t
        .call(t.req(Method::POST, "/files_upload").multipart(form))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let uploaded = body["data"].clone();
    assert_eq!(uploaded["size"], 5);
    let download = uploaded["temporary_download_url"].as_str().unwrap();
    assert_eq!(
        t.http
            .get(download)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "hello"
    );

    let (_, list) = t.get("/files?filename=REPORT").await;
    let list = list["data"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert!(list[0].get("temporary_download_url").is_none());

    let uid = uploaded["uid"].as_str().unwrap();
    let (status, body) = t
        .post(
            "/messages",
            json!({"phone": "+14155550003", "text": "see file", "file_uid": uid}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        t.sim.sent_messages()[0].credits,
        2,
        "text + file costs 2 (§8.4)"
    );

    let (status, body) = t
        .send(Method::DELETE, &format!("/files/{uid}"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"status": "ok", "data": null}));
    let (status, _) = t.get(&format!("/files/{uid}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn webhooks_crud_and_events_reach_a_local_receiver() {
    let t = spawn(relaxed()).await;
    let rx = receiver().await;
    let (status, body) = t
        .post(
            "/webhooks",
            json!({"event_type": "chat:created", "url": rx.url}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "L-confidence names are refused: {body}"
    );
    let mut ids = Vec::new();
    for event in ["message:sent:new", "chat:new", "message:received:new"] {
        let (status, body) = t
            .post("/webhooks", json!({"event_type": event, "url": rx.url}))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body["data"]["id"].is_i64());
        assert_eq!(body["data"]["enabled"], true);
        ids.push(body["data"]["id"].as_i64().unwrap());
    }
    let (_, list) = t.get("/webhooks").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 3);
    let path = format!("/webhooks/{}", ids[2]);
    let (_, body) = t.send(Method::PUT, &path, json!({"enabled": false})).await;
    assert_eq!(body["data"]["enabled"], false);
    assert_eq!(
        body["data"]["event_type"], "message:received:new",
        "PUT is partial"
    );

    let uid = t.send_text("+14155550004", "webhook me").await;
    t.sim
        .receive_message("+14155550005", "ignored: subscription disabled");
    let bodies = rx.wait_for(3).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let bodies_now = rx.bodies.lock().unwrap().clone();
    assert_eq!(
        bodies_now.len(),
        3,
        "chat:new twice (send + receive), message:sent:new: {bodies:?}"
    );
    let sent = bodies_now
        .iter()
        .find(|b| b["event_type"] == "message:sent:new")
        .unwrap();
    assert_eq!(sent["message"]["message_uid"], uid);
    assert_eq!(sent["message"]["direction"], "sent");
    assert!(sent["chat"]["chat_id"].is_i64());
    let chat_new = bodies_now
        .iter()
        .find(|b| b["event_type"] == "chat:new")
        .unwrap();
    assert!(chat_new["chat"].get("last_message_uuid").is_some());

    let (status, body) = t.send(Method::DELETE, &path, json!({})).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"status": "ok", "data": null}))
    );
    assert_eq!(t.sim.webhook_deliveries().len(), 3);
}

#[tokio::test]
async fn failed_webhook_posts_count_errors_and_keep_the_subscription_enabled() {
    let t = spawn(relaxed()).await;
    let hook = json!({"event_type": "chat:new", "url": "http://127.0.0.1:1/closed"});
    let (_, body) = t.post("/webhooks", hook).await;
    let id = body["data"]["id"].as_i64().unwrap();
    t.send_text("+14155550012", "new chat").await;
    for _ in 0..100 {
        if !t.sim.webhook_deliveries().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deliveries = t.sim.webhook_deliveries();
    assert_eq!(deliveries.len(), 1);
    assert!(deliveries[0].error.is_some());
    let (_, body) = t.get(&format!("/webhooks/{id}")).await;
    assert_eq!(body["data"]["errors_counter"], 1);
    assert_eq!(body["data"]["enabled"], true);
}

#[tokio::test]
async fn reactions_are_set_replaced_and_cleared() {
    let t = spawn(relaxed()).await;
    let uid = t.send_text("+14155550013", "react to me").await;
    let path = format!("/messages/{uid}/reactions");
    for emoji in ["👍", "❤️"] {
        let (status, body) = t
            .send(Method::PATCH, &path, json!({"reaction": emoji}))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["data"]["message_uid"], uid);
    }
    let (_, body) = t.get(&path).await;
    assert_eq!(body["data"]["reactions"], json!({"❤️": 1}));
    assert_eq!(body["data"]["total"], 1);
    assert_eq!(body["data"]["users"].as_array().unwrap().len(), 2);
    t.send(Method::PATCH, &path, json!({"reaction": ""})).await;
    let (_, body) = t.get(&path).await;
    assert_eq!(body["data"]["total"], 0);
    let (status, _) = t.send(Method::PATCH, &path, json!({"reaction": 1})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn sends_by_jid_chat_name_and_voice_note_reach_the_right_chats() {
    let t = spawn(relaxed()).await;
    let (status, body) = t
        .post(
            "/messages/to_jid",
            json!({"jid": "13125550123@c.us", "text": "by jid"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, found) = t.get("/chats?phone=%2B13125550123").await;
    assert_eq!(found["data"]["chats"].as_array().unwrap().len(), 1);

    let (_, chat) = t.get(&format!("/chats/{}", FIRST_CHAT_ID + 3)).await;
    let name = chat["data"]["name"].clone();
    let (status, _) = t
        .post(
            "/messages/to_chat_name",
            json!({"chat_name": name, "text": "by name"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = t
        .post(
            "/messages/to_chat_name",
            json!({"chat_name": "Nobody", "text": "x"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let voice = |name: &str| {
        let part = reqwest::multipart::Part::bytes(vec![1, 2, 3]).file_name(name.to_owned());
        reqwest::multipart::Form::new().part("file", part)
    };
    let path = format!("/chats/{}/voice_message", FIRST_CHAT_ID + 3);
    let (status, body) = t
        .call(t.req(Method::POST, &path).multipart(voice("memo.ogg")))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = t
        .call(t.req(Method::POST, &path).multipart(voice("memo.wav")))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let sent = t.sim.sent_messages();
    assert_eq!(sent.len(), 3);
    assert_eq!(sent[1].chat_id, FIRST_CHAT_ID + 3);
    assert_eq!(sent[2].endpoint, "POST /chats/{chat_id}/voice_message");
}
