//! The client against a tiny axum server on 127.0.0.1:0: headers, classification of real
//! responses and transport failures, records, and token hygiene.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Multipart, Query};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse};
use axum::routing::{delete, get, post};
use serde_json::{Value, json};

use super::*;
use crate::config::Secret;

const TOKEN: &str = "tok-3f9c1e-very-secret";

/// Serves `router` under `/integrations/api` and returns that base URL.
async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .nest("/integrations/api", router)
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                Html("<html><title>404</title></html>"),
            )
        });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/integrations/api")
}

/// Generous limits so a loaded CI machine does not turn a fast local answer into a timeout.
fn client(base: &str) -> Client {
    client_with_timeout(base, Duration::from_secs(5))
}

fn client_with_timeout(base: &str, timeout: Duration) -> Client {
    let options = ClientOptions {
        timeout,
        connect_timeout: Duration::from_secs(5),
        ..ClientOptions::default()
    };
    Client::new(base, Secret::new(TOKEN), options).unwrap()
}

fn recorder() -> (RequestObserver, Arc<Mutex<Vec<RequestRecord>>>) {
    let records = Arc::new(Mutex::new(Vec::new()));
    let sink = records.clone();
    let observer: RequestObserver = Arc::new(move |r| sink.lock().unwrap().push(r));
    (observer, records)
}

fn assert_token_hidden(err: &ApiError) {
    let debug = format!("{err:?}");
    let display = err.to_string();
    assert!(!debug.contains(TOKEN), "{debug}");
    assert!(!display.contains(TOKEN), "{display}");
}

#[tokio::test]
async fn the_bearer_token_and_body_are_sent_and_the_acknowledgement_read() {
    let router = Router::new().route(
        "/messages",
        post(|headers: HeaderMap, body: axum::Json<Value>| async move {
            let auth = headers[header::AUTHORIZATION].to_str().unwrap().to_owned();
            assert_eq!(auth, format!("Bearer {TOKEN}"));
            assert!(
                headers[header::USER_AGENT]
                    .to_str()
                    .unwrap()
                    .starts_with("timelines-sync/")
            );
            assert_eq!(body.0, json!({"phone": "+14155551234", "text": "hi"}));
            axum::Json(json!({"status": "ok", "data": {"message_uid": "m-1"}}))
        }),
    );
    let c = client(&serve(router).await);
    let sent = c
        .send_to_phone(&SendToPhone {
            phone: "+14155551234".into(),
            text: Some("hi".into()),
            ..SendToPhone::default()
        })
        .await
        .unwrap();
    assert_eq!(sent.message_uid, "m-1");
}

#[tokio::test]
async fn a_429_with_retry_after_is_rate_limited_with_the_delay() {
    let router = Router::new().route(
        "/chats/{id}",
        get(|| async {
            (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, "7")],
                axum::Json(json!({"status": "error", "message": "Too many requests"})),
            )
        }),
    );
    let err = client(&serve(router).await).get_chat(42).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::RateLimited);
    assert_eq!(err.status, Some(429));
    assert_eq!(err.retry_after, Some(Duration::from_secs(7)));
    assert_eq!(err.path, "/chats/42");
}

#[tokio::test]
async fn a_timeout_is_ambiguous_on_post_and_transient_on_get() {
    async fn slow() -> axum::Json<Value> {
        tokio::time::sleep(Duration::from_secs(30)).await;
        axum::Json(json!({"status": "ok", "data": {"message_uid": "late"}}))
    }
    let router = Router::new().route("/chats/{id}/messages", get(slow).post(slow));
    let c = client_with_timeout(&serve(router).await, Duration::from_millis(300));

    let err = c.send_in_chat(1, &SendInChat::default()).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Ambiguous, "{err}");
    assert_eq!(err.status, None);
    assert!(err.message.contains("timed out"), "{err}");

    let err = c
        .chat_messages(1, &MessageQuery::default())
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Transient, "{err}");
}

#[tokio::test]
async fn connection_refused_is_transient_even_for_a_send() {
    // Bind, note the port, close: nothing listens there any more.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let c = client(&format!("http://{addr}/integrations/api"));
    let err = c.send_to_phone(&SendToPhone::default()).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Transient, "{err}");
    assert!(err.message.contains("connect"), "{err}");
    assert_token_hidden(&err);
}

#[tokio::test]
async fn the_token_never_appears_in_errors_even_when_echoed() {
    let router = Router::new().route(
        "/workspace",
        get(|headers: HeaderMap| async move {
            let auth = headers[header::AUTHORIZATION].to_str().unwrap().to_owned();
            (
                StatusCode::UNAUTHORIZED,
                axum::Json(
                    json!({"status": "error", "message": format!("bad header {auth}"),
                                  "error_code": "invalid_token"}),
                ),
            )
        }),
    );
    let err = client(&serve(router).await).workspace().await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Auth);
    assert_eq!(err.error_code.as_deref(), Some("invalid_token"));
    assert_token_hidden(&err);
    assert!(err.message.contains("[redacted]"), "{err}");
}

#[tokio::test]
async fn the_observer_gets_tagged_records_without_the_query() {
    let router = Router::new().route(
        "/chats",
        get(|Query(q): Query<Vec<(String, String)>>| async move {
            assert!(
                q.contains(&("phone".into(), "+14155551234".into())),
                "{q:?}"
            );
            axum::Json(json!({"status": "ok", "data": {"has_more_pages": false,
                                                       "chats": [{"id": "7", "name": "A"}]}}))
        }),
    );
    let base = serve(router).await;
    let (observer, records) = recorder();
    let c = client(&base).with_observer(observer).tagged(RequestTag {
        workspace: "sales".into(),
        job_id: Some(99),
    });
    let filter = ChatFilter {
        phone: Some("+14155551234".into()),
        ..ChatFilter::default()
    };
    let page = c.list_chats(&filter).await.unwrap();
    assert_eq!(page.chats[0].id, 7);
    assert_eq!(page.chats[0].raw["name"], "A");
    let _ = c.get_chat(1).await.unwrap_err();

    let records = records.lock().unwrap();
    assert_eq!(records.len(), 2);
    let first = &records[0];
    assert_eq!((first.method, first.path.as_str()), ("GET", "/chats"));
    assert_eq!((first.status, first.error_class), (Some(200), None));
    let tag = first.tag.as_ref().unwrap();
    assert_eq!((tag.workspace.as_str(), tag.job_id), ("sales", Some(99)));
    let second = &records[1];
    assert_eq!(second.path, "/chats/1");
    assert_eq!(second.status, Some(404));
    assert_eq!(second.error_class, Some(ErrorClass::NotFound));
    assert!(!format!("{records:?}").contains(TOKEN));
}

#[tokio::test]
async fn an_html_404_and_a_200_error_are_errors_and_an_empty_delete_is_ok() {
    let router = Router::new()
        .route(
            "/files/{uid}",
            delete(|| async { StatusCode::NO_CONTENT }).get(|| async {
                axum::Json(json!({"status": "error", "message": "Mass sending quota exceeded"}))
            }),
        )
        .route("/webhooks/{id}", delete(|| async { "" }));
    let c = client(&serve(router).await);
    c.delete_file("f-1").await.unwrap();
    c.delete_webhook("789456").await.unwrap();

    let err = c.get_file("f-1").await.unwrap_err();
    assert_eq!(
        (err.class, err.status),
        (ErrorClass::QuotaExhausted, Some(200))
    );

    let err = c.whatsapp_accounts().await.unwrap_err();
    assert_eq!(err.class, ErrorClass::NotFound);
    assert!(err.message.contains("HTML 404"), "{err}");
}

#[tokio::test]
async fn quotas_fall_back_to_the_workspace_endpoint() {
    let router = Router::new().route(
        "/workspace",
        get(|| async {
            axum::Json(json!({"status": "ok", "data": {
                "workspace_id": "acme", "api_calls_quota": {"total": 200000, "used": 10}}}))
        }),
    );
    let quotas = client(&serve(router).await).quotas().await.unwrap();
    assert_eq!(quotas.api_calls_quota.unwrap().remaining(), Some(199_990));
    assert_eq!(quotas.raw["workspace_id"], "acme");
}

#[tokio::test]
async fn list_all_chats_follows_pages_until_has_more_pages_is_false() {
    let router = Router::new().route(
        "/chats",
        get(|Query(q): Query<Vec<(String, String)>>| async move {
            let page: i64 = q
                .iter()
                .find(|(k, _)| k == "page")
                .unwrap()
                .1
                .parse()
                .unwrap();
            axum::Json(json!({"status": "ok", "data": {
                "has_more_pages": page < 3, "chats": [{"id": page}]}}))
        }),
    );
    let chats = client(&serve(router).await)
        .list_all_chats(&ChatFilter::default())
        .await
        .unwrap();
    assert_eq!(chats.iter().map(|c| c.id).collect::<Vec<_>>(), [1, 2, 3]);
}

#[tokio::test]
async fn a_multipart_upload_sends_the_file_and_its_name() {
    let router = Router::new().route(
        "/files_upload",
        post(|mut form: Multipart| async move {
            let mut seen = Vec::new();
            while let Some(field) = form.next_field().await.unwrap() {
                let name = field.name().unwrap().to_owned();
                let file_name = field.file_name().map(str::to_owned);
                let content_type = field.content_type().map(str::to_owned);
                let bytes = field.bytes().await.unwrap();
                seen.push(json!([name, file_name, content_type, bytes.len()]));
            }
            axum::Json(json!({"status": "ok", "data": {"uid": "f-9", "seen": seen}}))
        }),
    );
    let file = client(&serve(router).await)
        .upload_file(b"%PDF-1.4".to_vec(), "a.pdf", "application/pdf")
        .await
        .unwrap();
    assert_eq!(file.uid, "f-9");
    assert_eq!(
        file.raw["seen"][0],
        json!(["file", "a.pdf", "application/pdf", 8])
    );
    assert_eq!(file.raw["seen"][1][0], "filename");
}

#[tokio::test]
async fn an_unreadable_send_acknowledgement_is_ambiguous() {
    let router = Router::new().route(
        "/chats/{id}/notes",
        post(|| async { axum::Json(json!({"status": "ok", "data": {}})) }),
    );
    let err = client(&serve(router).await)
        .add_note(5, "hello", true)
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Ambiguous, "{err}");
}

#[tokio::test]
async fn a_proxy_html_502_is_transient() {
    let router = Router::new().route(
        "/webhooks",
        get(|| async {
            (StatusCode::BAD_GATEWAY, Html("<html><h1>502</h1></html>")).into_response()
        }),
    );
    let err = client(&serve(router).await)
        .list_webhooks()
        .await
        .unwrap_err();
    assert_eq!((err.class, err.status), (ErrorClass::Transient, Some(502)));
}
