//! Inbound webhooks: the receiver over real HTTP, the processor applying stored events to a real
//! database, inbound rules, opt-out by reply, `webhooks sync` against the simulator, and the
//! whole loop (the service sends through the simulator, the simulator posts back).
//!
//! Tests apply stored events by calling the processor's `run_once` (what its loop calls), so
//! they need no waiting; only the end-to-end tests run the loop.

mod applying;
mod end_to_end;
mod instances;
mod payloads;
mod receiving;
mod retries;
mod rules;
mod subscriptions;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use serde_json::Value;
use sqlx::PgPool;
use timelines_sync::config::{ProcessEnv, Settings};
use timelines_sync::shutdown::Shutdown;
use timelines_sync::webhooks::{Processor, ProcessorRunResult};

use crate::helpers::{TestDb, test_db};

/// The receiver's secret in these tests.
pub const SECRET: &str = "wh-5b1f0c9e-secret-never-logged";

/// The `[webhooks]` table of a config with [`SECRET`].
pub fn webhooks_toml() -> String {
    format!("[webhooks]\nsecret = \"{SECRET}\"\npublic_url = \"http://127.0.0.1:1\"\n")
}

/// A receiver serving a fresh database, and the processor of the same settings.
pub struct Hook {
    pub db: TestDb,
    pub addr: SocketAddr,
    processor: Processor,
    shutdown: Shutdown,
}

impl Hook {
    /// Serves the receiver of the config `toml` (which should hold [`webhooks_toml`]).
    pub async fn start(toml: &str) -> Self {
        let settings = settings(toml);
        let db = test_db().await;
        timelines_sync::db::sync_workspaces(&db.pool, &settings, &[])
            .await
            .unwrap();
        let (addr, shutdown) = serve(&db.pool, &settings).await;
        let catalog =
            Arc::new(timelines_sync::sources::Catalog::build(&settings, &ProcessEnv).unwrap());
        let processor = timelines_sync::webhooks::processor(db.pool.clone(), &settings, catalog);
        Self {
            db,
            addr,
            processor,
            shutdown,
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.db.pool
    }

    /// Posts `body` as JSON to the receiver of the default workspace.
    pub async fn post(&self, body: &Value) -> (u16, Value) {
        let (status, text) = self
            .post_raw(
                &format!("/webhooks/timelines/{SECRET}"),
                body.to_string().into_bytes(),
            )
            .await;
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Posts `body` to `path` (and query) on the listener.
    pub async fn post_raw(&self, path: &str, body: Vec<u8>) -> (u16, String) {
        let response = reqwest::Client::new()
            .post(format!("http://{}{path}", self.addr))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// Applies every due stored event, as the processor loop does.
    pub async fn process(&self) -> ProcessorRunResult {
        self.processor.run_once().await.unwrap()
    }

    /// One value of SQL.
    pub async fn scalar<T>(&self, sql: &'static str) -> T
    where
        T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
    {
        sqlx::query_scalar(sql)
            .fetch_one(self.pool())
            .await
            .unwrap()
    }

    /// Every stored event as JSON, in arrival order.
    pub async fn events(&self) -> Vec<Value> {
        sqlx::query_scalar(
            "SELECT to_jsonb(e) - 'body' FROM timelines.webhook_events e ORDER BY id",
        )
        .fetch_all(self.pool())
        .await
        .unwrap()
    }
}

impl Drop for Hook {
    fn drop(&mut self) {
        self.shutdown.begin();
    }
}

/// Parsed and validated settings from TOML text.
pub fn settings(toml: &str) -> Settings {
    let settings = Settings::parse(toml, Path::new("test.toml")).unwrap();
    settings.validate(&ProcessEnv).unwrap();
    settings
}

/// Serves the health routes and the receiver of `settings` on a free port.
pub async fn serve(pool: &PgPool, settings: &Settings) -> (SocketAddr, Shutdown) {
    let listener = timelines_sync::http::bind(&timelines_sync::config::HttpSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        enabled: true,
    })
    .await
    .unwrap();
    let addr = listener.local_addr().unwrap();
    let router = timelines_sync::http::router(pool.clone()).merge(
        timelines_sync::webhooks::router(pool.clone(), settings, &ProcessEnv),
    );
    let shutdown = Shutdown::new();
    tokio::spawn(timelines_sync::http::serve(
        listener,
        router,
        shutdown.clone(),
    ));
    (addr, shutdown)
}
