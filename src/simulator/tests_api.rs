//! Contract tests over HTTP: auth, envelopes, validation, HTML 404, chats and history paging.

use reqwest::Method;
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::tests_support::{relaxed, spawn};
use super::{DIRECT_CHATS, FIRST_CHAT_ID, GROUP_CHATS, LONG_CHAT_MESSAGES};

fn is_timestamp(v: &Value) -> bool {
    // "YYYY-MM-DD HH:MM:SS ±HHMM" (§2.5)
    let s = v.as_str().unwrap_or_default();
    let b = s.as_bytes();
    s.len() == 25
        && b[10] == b' '
        && b[19] == b' '
        && (b[20] == b'+' || b[20] == b'-')
        && s[21..].bytes().all(|c| c.is_ascii_digit())
}

#[tokio::test]
async fn unauthenticated_requests_get_the_three_401_variants() {
    let t = spawn(relaxed()).await;
    let url = format!("{}/chats", t.sim.base_url());

    let missing = t.http.get(&url).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["status"], "error");
    assert_eq!(body["message"], "Invalid or expired token");
    assert_eq!(body["error_code"], "missing_credentials");

    let wrong_scheme = t
        .http
        .get(&url)
        .header("Authorization", "Token abc")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_scheme.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(wrong_scheme.text().await.unwrap(), "Unauthorized");

    let unknown = t.http.get(&url).bearer_auth("nope").send().await.unwrap();
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    let body: Value = unknown.json().await.unwrap();
    assert_eq!(body["error_code"], "invalid_token");
    assert_eq!(t.sim.stats().api_calls_used, 0, "401s use no quota");
}

#[tokio::test]
async fn send_answers_the_ok_envelope_and_the_message_has_the_reference_shape() {
    let t = spawn(relaxed()).await;
    let (status, body) = t
        .post(
            "/messages",
            json!({"phone": "+14155559876", "text": "Hello"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
    let uid = body["data"]["message_uid"].as_str().unwrap();
    assert_eq!(body["data"].as_object().unwrap().len(), 1);

    let (status, body) = t.get(&format!("/messages/{uid}")).await;
    assert_eq!(status, StatusCode::OK);
    let m = &body["data"];
    assert_eq!(m["uid"], uid);
    assert!(
        m["chat_id"].is_string(),
        "message.chat_id is a string (§10.1 #3)"
    );
    assert!(is_timestamp(&m["timestamp"]), "{}", m["timestamp"]);
    assert_eq!(m["from_me"], true);
    assert_eq!(m["origin"], "Public API");
    assert_eq!(m["text"], "Hello");
    assert!(m["status"].is_string());
    assert_eq!(
        m["reactions"],
        json!({"users": [], "reactions": {}, "total": 0})
    );
}

#[tokio::test]
async fn invalid_sends_get_400_with_every_field_error() {
    let t = spawn(relaxed()).await;
    let long = "x".repeat(2001);
    let label = "l".repeat(65);
    let (status, body) = t
        .post(
            "/messages",
            json!({"phone": "14155551234", "text": long, "label": label}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["status"], "error");
    assert_eq!(body["error_code"], "validation_error");
    let fields: Vec<Value> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["fields"].clone())
        .collect();
    assert!(fields.contains(&json!(["body", "phone"])));
    assert!(fields.contains(&json!(["body", "text"])));
    assert!(fields.contains(&json!(["body", "label"])));

    let cases = [
        (json!({"phone": "+14155551234"}), "text"),
        (json!({"text": "hi"}), "phone"),
        (
            json!({"phone": "+14155551234", "file_uid": "nope"}),
            "file_uid",
        ),
        (json!({"phone": "+14155551234", "text": 5}), "text"),
        (
            json!({"phone": "+14155551234", "text": "x", "attachment_template_id": 9}),
            "attachment_template_id",
        ),
    ];
    for (request, field) in cases {
        let (status, body) = t.post("/messages", request.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{request}");
        assert_eq!(
            body["errors"][0]["fields"],
            json!(["body", field]),
            "{body}"
        );
    }
    let chat = format!("/chats/{FIRST_CHAT_ID}/messages");
    let (status, body) = t
        .post(&chat, json!({"text": "x", "reply_to": "missing"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["errors"][0]["fields"], json!(["body", "reply_to"]));
    let (status, _) = t.post(&chat, json!({"text": "x", "reply_to": ""})).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "an empty reply_to is ignored (§5.1)"
    );
    assert_eq!(t.sim.sent_messages().len(), 1);
}

#[tokio::test]
async fn unknown_paths_and_trailing_slashes_get_the_branded_html_404() {
    let t = spawn(relaxed()).await;
    for path in ["/chats/", "/nope", "/", "/chats/1000001/"] {
        let response = t.req(Method::GET, path).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        let ct = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(ct.starts_with("text/html"), "{path}: {ct}");
        assert!(response.text().await.unwrap().contains("TimelinesAI"));
    }
    let (status, body) = t.get("/chats/999").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error_code"], "not_found");
    let (status, body) = t.send(Method::DELETE, "/chats", json!({})).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["status"], "error");
}

#[tokio::test]
async fn chats_are_paged_by_50_and_extra_size_parameters_are_ignored() {
    let t = spawn(relaxed()).await;
    let (status, first) = t.get("/chats?limit=100&per_page=100").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["data"]["chats"].as_array().unwrap().len(), 50);
    assert_eq!(first["data"]["has_more_pages"], true);
    let (_, second) = t.get("/chats?page=2").await;
    let rest = second["data"]["chats"].as_array().unwrap();
    assert_eq!(rest.len() as i64, DIRECT_CHATS + GROUP_CHATS - 50);
    assert_eq!(second["data"]["has_more_pages"], false);
    assert!(rest[0]["id"].is_i64(), "chat ids are integers");
    let (status, _) = t.get("/chats?page=0").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, vip) = t.get("/chats?label=vip,lead&group=false").await;
    for chat in vip["data"]["chats"].as_array().unwrap() {
        let labels = chat["labels"].as_array().unwrap();
        assert!(labels.contains(&json!("vip")) || labels.contains(&json!("lead")));
    }
}

#[tokio::test]
async fn first_send_to_a_new_phone_creates_a_chat_found_by_phone() {
    let t = spawn(relaxed()).await;
    let (_, before) = t.get("/chats?phone=%2B13125550199").await;
    assert_eq!(before["data"]["chats"], json!([]));
    t.send_text("+13125550199", "first").await;
    t.send_text("+13125550199", "second").await;

    let (status, found) = t.get("/chats?phone=%2B13125550199").await;
    assert_eq!(status, StatusCode::OK);
    let chats = found["data"]["chats"].as_array().unwrap();
    assert_eq!(chats.len(), 1, "the second send reuses the chat");
    assert_eq!(chats[0]["phone"], "+13125550199");
    assert_eq!(chats[0]["jid"], "13125550199@s.whatsapp.net");
    let id = chats[0]["id"].as_i64().unwrap();
    assert_eq!(id, FIRST_CHAT_ID + DIRECT_CHATS + GROUP_CHATS);
    let sent = t.sim.sent_messages();
    assert!(sent.iter().all(|m| m.chat_id == id));

    let (status, body) = t.get("/chats?phone=+13125550199").await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "an unencoded '+' is a space: {body}"
    );
}

#[tokio::test]
async fn history_pages_by_50_and_filters_by_message_uid() {
    let t = spawn(relaxed()).await;
    let path = format!("/chats/{FIRST_CHAT_ID}/messages");
    let (_, page1) = t.get(&format!("{path}?sorting_order=asc")).await;
    let msgs = page1["data"]["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 50);
    assert_eq!(page1["data"]["has_more_pages"], true);
    let (_, page3) = t.get(&format!("{path}?sorting_order=asc&page=3")).await;
    assert_eq!(
        page3["data"]["messages"].as_array().unwrap().len(),
        LONG_CHAT_MESSAGES - 100
    );
    assert_eq!(page3["data"]["has_more_pages"], false);

    let tenth = msgs[9]["uid"].as_str().unwrap();
    let (_, after) = t
        .get(&format!(
            "{path}?sorting_order=asc&after_message={tenth}&page=3"
        ))
        .await;
    let after = after["data"]["messages"].as_array().unwrap();
    assert_eq!(after.len(), LONG_CHAT_MESSAGES - 10 - 100);

    let (_, desc) = t.get(&path).await;
    let newest = &desc["data"]["messages"][0];
    assert_eq!(
        newest["uid"], page3["data"]["messages"][19]["uid"],
        "default order is desc"
    );

    let (_, mine) = t
        .get(&format!("{path}?from_me=true&sorting_order=asc"))
        .await;
    assert!(
        mine["data"]["messages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["from_me"] == true)
    );
    let (status, _) = t.get(&format!("{path}?after_message=unknown")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, dated) = t.get(&format!("{path}?after=2030-01-01")).await;
    assert_eq!(dated["data"]["messages"], json!([]));
}

#[tokio::test]
async fn workspace_endpoints_have_their_list_shapes_and_live_quotas() {
    let t = spawn(relaxed()).await;
    let (_, accounts) = t.get("/whatsapp_accounts").await;
    assert_eq!(
        accounts["data"]["whatsapp_accounts"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    for path in ["/workspace/teammates", "/teammates"] {
        let (_, teammates) = t.get(path).await;
        assert!(teammates["data"]["teammates"].as_array().unwrap().len() >= 4);
    }
    t.send_text("+14155550001", "hi").await;
    let (_, quotas) = t.get("/workspace/quotas").await;
    let q = &quotas["data"];
    assert_eq!(q["messaging_quota"]["used"], 1);
    assert_eq!(q["api_calls_quota"]["used"], 5, "this call included");
    assert_eq!(q["api_calls_quota"]["total"], 200_000);
    assert!(is_timestamp(&q["api_calls_quota"]["period_start"]));
    let (_, ws) = t.get("/workspace").await;
    assert_eq!(ws["data"]["workspace_id"], "acme-inc");
    assert!(ws["data"]["seats"]["total"].is_u64());
    let (status, _) = t.get("/quotas").await;
    assert_eq!(status, StatusCode::OK);
}
