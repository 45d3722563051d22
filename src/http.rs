//! The service's HTTP listener (`[http] listen`): `/healthz` (the process answers) and `/readyz`
//! (the database answers and its migrations are this binary's), `/metrics` (Prometheus text).
//! Other modules merge their routes into [`router`]'s result: the webhook receiver.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use sqlx::PgPool;
use tokio::net::TcpListener;

use crate::config::HttpSettings;
use crate::shutdown::Shutdown;

/// How long `/readyz` waits for the database.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// The health routes.
pub fn router(pool: PgPool) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .with_state(pool)
}

/// Binds the configured address; the error names the key.
pub async fn bind(settings: &HttpSettings) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(settings.listen).await.with_context(|| {
        format!(
            "cannot listen on {} (config key http.listen; another process may hold the port: \
             choose another, or port 0 for any free one)",
            settings.listen
        )
    })?;
    tracing::info!(address = %listener.local_addr()?, "HTTP listener ready");
    Ok(listener)
}

/// Serves `router` on `listener` until `shutdown` begins, then lets open requests finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.stopping().await })
    .await
}

/// Prometheus text: the process's metrics and the database's gauges (see `telemetry::scrape`).
/// Always 200: a database that does not answer only leaves its gauges out.
async fn metrics(State(pool): State<PgPool>) -> impl axum::response::IntoResponse {
    let body = crate::telemetry::scrape::render(&pool).await;
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}

/// 200 when the database answers within [`READY_TIMEOUT`] and has exactly this binary's
/// migrations; 503 with the reason otherwise.
async fn ready(State(pool): State<PgPool>) -> (StatusCode, String) {
    match tokio::time::timeout(READY_TIMEOUT, readiness(&pool)).await {
        Ok(Ok(())) => (StatusCode::OK, "ready\n".to_owned()),
        Ok(Err(reason)) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the database did not answer within {} s\n",
                READY_TIMEOUT.as_secs()
            ),
        ),
    }
}

async fn readiness(pool: &PgPool) -> Result<(), String> {
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(pool)
            .await
            .map_err(|e| format!("the database is not reachable: {e}"))?;
    let expected: Vec<i64> = crate::db::MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .map(|m| m.version)
        .collect();
    let missing: Vec<i64> = expected
        .iter()
        .filter(|v| !applied.contains(v))
        .copied()
        .collect();
    if !missing.is_empty() {
        return Err(format!("migrations not applied: {missing:?}"));
    }
    let unknown: Vec<i64> = applied
        .iter()
        .filter(|v| !expected.contains(v))
        .copied()
        .collect();
    if !unknown.is_empty() {
        return Err(format!(
            "the database has migrations this binary does not know: {unknown:?} (a newer version ran)"
        ));
    }
    Ok(())
}
