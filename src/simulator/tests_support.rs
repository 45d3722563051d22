//! Test helpers: a simulator on a free port and a plain reqwest client (not the project's
//! TimelinesAI client, so the simulator is tested on its own).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use reqwest::{Method, RequestBuilder};
use serde_json::Value;

use super::{DEFAULT_TOKEN, Simulator, SimulatorConfig};

/// A running simulator plus a client for it.
pub(crate) struct TestSim {
    pub sim: Simulator,
    pub http: reqwest::Client,
}

/// Starts a simulator with `config` on 127.0.0.1, port 0.
pub(crate) async fn spawn(config: SimulatorConfig) -> TestSim {
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let sim = Simulator::start(config, addr)
        .await
        .expect("simulator starts");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    TestSim { sim, http }
}

/// A config without rate limit pressure and with a fast status step.
pub(crate) fn relaxed() -> SimulatorConfig {
    SimulatorConfig {
        rate_limit: 100_000,
        status_step: Duration::from_millis(50),
        ..SimulatorConfig::default()
    }
}

impl TestSim {
    /// An authenticated request to `path` under the API base URL.
    pub fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.sim.base_url()))
            .bearer_auth(DEFAULT_TOKEN)
    }

    /// Sends `req`; returns the status and the body parsed as JSON.
    pub async fn call(&self, req: RequestBuilder) -> (StatusCode, Value) {
        let response = req.send().await.expect("answer");
        let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(self.req(Method::GET, path)).await
    }

    pub async fn send(&self, method: Method, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(self.req(method, path).json(&body)).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(Method::POST, path, body).await
    }

    /// `POST /messages` with `text` to `phone`; returns the message uid.
    pub async fn send_text(&self, phone: &str, text: &str) -> String {
        let (status, body) = self
            .post(
                "/messages",
                serde_json::json!({ "phone": phone, "text": text }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["data"]["message_uid"].as_str().unwrap().to_owned()
    }
}

/// A local webhook receiver that records every JSON body posted to `/hook`.
pub(crate) struct Receiver {
    pub url: String,
    pub bodies: Arc<Mutex<Vec<Value>>>,
}

pub(crate) async fn receiver() -> Receiver {
    let bodies: Arc<Mutex<Vec<Value>>> = Arc::default();
    let app = axum::Router::new()
        .route(
            "/hook",
            post(
                |State(seen): State<Arc<Mutex<Vec<Value>>>>, Json(body): Json<Value>| async move {
                    seen.lock().unwrap().push(body);
                    StatusCode::OK
                },
            ),
        )
        .with_state(bodies.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Receiver { url, bodies }
}

impl Receiver {
    /// Waits up to 5 s until `n` bodies arrived; returns them.
    pub async fn wait_for(&self, n: usize) -> Vec<Value> {
        for _ in 0..100 {
            let seen = self.bodies.lock().unwrap().clone();
            if seen.len() >= n {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.bodies.lock().unwrap().clone()
    }
}
