//! Limits and faults over HTTP: rate limit, quotas, credit restoration, injected faults, and
//! the `/_sim/…` inspection endpoints.

use std::time::{Duration, Instant};

use reqwest::Method;
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::tests_support::{relaxed, spawn};
use super::{Faults, SimulatorConfig};

#[tokio::test]
async fn sliding_window_refuses_with_429_and_retry_after_and_never_exceeds_the_limit() {
    let config = SimulatorConfig {
        rate_limit: 10,
        rate_window: Duration::from_millis(500),
        ..relaxed()
    };
    let t = spawn(config).await;
    let started = Instant::now();
    let (mut accepted, mut refused) = (0, 0);
    while started.elapsed() < Duration::from_millis(1300) {
        let response = t
            .req(Method::GET, "/whatsapp_accounts")
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(response.headers()["retry-after"], "1");
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["status"], "error");
            refused += 1;
        } else {
            assert_eq!(response.status(), StatusCode::OK);
            accepted += 1;
        }
    }
    let stats = t.sim.stats();
    assert!(refused > 0);
    // At most 10 per 500 ms over 1.3 s; more than 10 shows the window slid.
    assert!((11..=30).contains(&accepted), "accepted {accepted}");
    assert_eq!(stats.max_accepted_in_window, 10);
    assert_eq!(stats.rate_limited, refused);
    assert_eq!(
        stats.api_calls_used, accepted,
        "refused requests use no quota"
    );
}

#[tokio::test]
async fn throttling_can_answer_403_instead_of_429() {
    let config = SimulatorConfig {
        rate_limit: 1,
        throttle_as_403: true,
        ..relaxed()
    };
    let t = spawn(config).await;
    assert_eq!(t.get("/chats").await.0, StatusCode::OK);
    let (status, body) = t.get("/chats").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error_code"], "throttled");
}

#[tokio::test]
async fn exhausted_api_call_quota_answers_403() {
    let config = SimulatorConfig {
        monthly_api_calls: 2,
        ..relaxed()
    };
    let t = spawn(config).await;
    assert_eq!(t.get("/workspace/quotas").await.0, StatusCode::OK);
    let (status, body) = t.get("/workspace").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["api_calls_quota"]["used"], 2);
    let (status, body) = t.get("/chats").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error_code"], "api_calls_quota_exceeded");
    assert_eq!(t.sim.stats().api_calls_used, 2);
}

#[tokio::test]
async fn exhausted_messaging_quota_refuses_sends_and_failed_messages_restore_credits() {
    let config = SimulatorConfig {
        messaging_quota: 1,
        status_step: Duration::from_millis(100),
        fail_phones: vec!["+14155550666".to_owned()],
        ..relaxed()
    };
    let t = spawn(config).await;
    let uid = t.send_text("+14155550666", "will fail").await;
    let (status, body) = t
        .post(
            "/messages",
            json!({"phone": "+14155550777", "text": "no credit"}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error_code"], "quota_exceeded");
    assert_eq!(
        t.sim.sent_messages().len(),
        1,
        "refused sends leave no trace"
    );

    tokio::time::sleep(Duration::from_millis(150)).await;
    let (_, m) = t.get(&format!("/messages/{uid}")).await;
    assert_eq!(m["data"]["status"], "Failed");
    let (_, history) = t.get(&format!("/messages/{uid}/status_history")).await;
    assert!(history["data"][1]["failure_reason"]["code"].is_i64());
    assert_eq!(t.sim.stats().credits_used, 0);
    t.send_text("+14155550777", "credit is back").await;
    let (_, quotas) = t.get("/workspace/quotas").await;
    assert_eq!(quotas["data"]["messaging_quota"]["used"], 1);
}

#[tokio::test]
async fn drop_after_side_effect_gives_the_client_an_error_but_keeps_the_message() {
    let t = spawn(relaxed()).await;
    // A pooled keep-alive connection first: a drop on a reused connection must not be retried.
    assert_eq!(t.get("/chats").await.0, StatusCode::OK);
    t.sim.set_faults(Faults {
        drop_after_side_effect_rate: 1.0,
        ..Faults::default()
    });
    for n in 1..=5 {
        let result = t
            .req(Method::POST, "/messages")
            .json(&json!({"phone": "+14155550008", "text": format!("dropped {n}")}))
            .send()
            .await;
        assert!(
            result.is_err(),
            "expected a transport error, got {result:?}"
        );
        assert_eq!(
            t.sim.sent_messages().len(),
            n,
            "exactly one side effect per request"
        );
    }
    assert_eq!(
        t.get("/chats").await.0,
        StatusCode::OK,
        "reads are not dropped"
    );
    assert_eq!(t.sim.stats().connections_dropped, 5);
}

#[tokio::test]
async fn injected_server_errors_have_no_side_effect() {
    let t = spawn(relaxed()).await;
    t.sim.set_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    });
    for _ in 0..8 {
        let (status, _) = t
            .post("/messages", json!({"phone": "+14155550009", "text": "x"}))
            .await;
        assert!(status.is_server_error());
    }
    assert!(t.sim.sent_messages().is_empty());
    assert_eq!(t.sim.stats().api_calls_used, 0);
    t.sim.set_faults(Faults {
        status_error_rate: 1.0,
        ..Faults::default()
    });
    let (status, body) = t.get("/chats").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "error", "200 with status:error (§2.1)");
}

#[tokio::test]
async fn latency_is_added_to_every_answer() {
    let t = spawn(relaxed()).await;
    t.sim.set_faults(Faults {
        latency: Duration::from_millis(150),
        ..Faults::default()
    });
    let started = Instant::now();
    t.get("/chats/").await;
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn inspection_endpoints_need_no_token_and_change_faults() {
    let t = spawn(relaxed()).await;
    let origin = format!("http://{}", t.sim.addr());
    t.send_text("+14155550010", "count me").await;
    let stats: Value = t
        .http
        .get(format!("{origin}/_sim/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["messages_sent"], 1);
    assert_eq!(stats["by_status"]["200"], 1);
    let sent: Value = t
        .http
        .get(format!("{origin}/_sim/messages"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sent[0]["text"], "count me");

    let put = t
        .http
        .put(format!("{origin}/_sim/faults"))
        .json(&json!({"error_rate": 1.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::OK);
    assert_eq!(t.sim.faults().error_rate, 1.0);
    let bad = t
        .http
        .put(format!("{origin}/_sim/faults"))
        .json(&json!({"error_rate": 2.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    t.sim.set_faults(Faults::default());

    let inbound = json!({"phone": "+14155550011", "text": "hello from a customer"});
    let answer: Value = t
        .http
        .post(format!("{origin}/_sim/inbound"))
        .json(&inbound)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let uid = answer["message_uid"].as_str().unwrap();
    let (_, m) = t.get(&format!("/messages/{uid}")).await;
    assert_eq!(m["data"]["from_me"], false);
}
