//! The service's HTTP listener: health and readiness.

use std::net::SocketAddr;

use timelines_sync::shutdown::Shutdown;

use crate::helpers::test_db;

/// Serves the health routes on `pool` at a free port.
async fn serve(pool: sqlx::PgPool) -> (SocketAddr, Shutdown) {
    let settings = timelines_sync::config::HttpSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        enabled: true,
    };
    let listener = timelines_sync::http::bind(&settings).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Shutdown::new();
    tokio::spawn(timelines_sync::http::serve(
        listener,
        timelines_sync::http::router(pool),
        shutdown.clone(),
    ));
    (addr, shutdown)
}

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn healthz_answers_and_readyz_checks_the_database_and_its_migrations() {
    let db = test_db().await;
    let (addr, shutdown) = serve(db.pool.clone()).await;
    assert_eq!(get(addr, "/healthz").await, (200, "ok\n".to_owned()));
    assert_eq!(get(addr, "/readyz").await, (200, "ready\n".to_owned()));

    // A newer binary migrated the database further: this one is not ready for it.
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (99990101000000, 'from the future', true, '\\x00', 0)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let (status, body) = get(addr, "/readyz").await;
    assert_eq!(status, 503);
    assert!(body.contains("99990101000000"), "{body}");

    // A migration missing.
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version IN (99990101000000, 1)")
        .execute(&db.pool)
        .await
        .unwrap();
    let (status, body) = get(addr, "/readyz").await;
    assert_eq!(status, 503);
    assert!(body.contains("not applied: [1]"), "{body}");

    // The database gone.
    db.pool.close().await;
    let (status, body) = get(addr, "/readyz").await;
    assert_eq!(status, 503);
    assert!(body.contains("not reachable"), "{body}");
    assert_eq!(get(addr, "/healthz").await.0, 200);
    shutdown.begin();
}

#[tokio::test]
async fn a_port_already_taken_stops_start_up_naming_the_key() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let settings = timelines_sync::config::HttpSettings {
        listen: taken.local_addr().unwrap(),
        enabled: true,
    };
    let error = timelines_sync::http::bind(&settings).await.unwrap_err();
    assert!(format!("{error:#}").contains("http.listen"), "{error:#}");
}
