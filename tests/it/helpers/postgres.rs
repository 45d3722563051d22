//! One throwaway Postgres cluster per test binary, and a fresh migrated database per test.
//!
//! The cluster runs as a child of a dedicated thread that lives as long as the process: the
//! kernel's parent-death signal fires when the *thread* that spawned a child exits, and test
//! threads exit after every test. Each test database is a copy of a migrated template, which
//! takes milliseconds instead of running the migrations again.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use sqlx::{Connection, PgConnection, PgPool};
use timelines_sync::pg::{Cluster, ClusterOptions};

const TEMPLATE: &str = "timelines_template";

struct Shared {
    admin_url: String,
    url_prefix: String,
}

static SHARED: OnceLock<Shared> = OnceLock::new();
static NEXT_DB: AtomicUsize = AtomicUsize::new(0);

fn shared() -> &'static Shared {
    SHARED.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("test-postgres".into())
            .spawn(move || {
                let started = start_cluster();
                let failed = started.is_err();
                let (result, server) = match started {
                    Ok((shared, server)) => (Ok(shared), Some(server)),
                    Err(e) => (Err(e), None),
                };
                tx.send(result)
                    .expect("the test thread waits for the cluster");
                if !failed {
                    // Keep the server (and this thread, its parent) alive for the whole process.
                    let _server = server;
                    loop {
                        std::thread::park();
                    }
                }
            })
            .expect("spawning the postgres owner thread");
        rx.recv()
            .expect("the owner thread answers")
            .unwrap_or_else(|e| panic!("test cluster: {e:#}"))
    })
}

fn start_cluster() -> anyhow::Result<(Shared, timelines_sync::pg::ChildServer)> {
    remove_stale_roots();
    let root = std::env::temp_dir().join(format!("timelines-sync-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root)?;
    let cluster = Cluster::open(
        &root,
        ClusterOptions {
            durable: false,
            settings: Vec::new(),
        },
    )?;
    let server = cluster.spawn_child()?;
    let admin_url = cluster.url(server.port(), "postgres");
    let url_prefix = admin_url.trim_end_matches("postgres").to_owned();
    let template_url = format!("{url_prefix}{TEMPLATE}");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut admin = PgConnection::connect(&admin_url).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {TEMPLATE}")))
            .execute(&mut admin)
            .await?;
        let mut conn = PgConnection::connect(&template_url).await?;
        timelines_sync::db::MIGRATOR.run(&mut conn).await?;
        conn.close().await?;
        admin.close().await?;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok((
        Shared {
            admin_url,
            url_prefix,
        },
        server,
    ))
}

/// Removes the directories of earlier test runs whose process is gone.
fn remove_stale_roots() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("timelines-sync-test-")
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: kill with signal 0 only checks whether the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A fresh, migrated database of its own.
pub struct TestDb {
    /// A pool on it.
    pub pool: PgPool,
    /// Its URL (for subprocesses).
    pub url: String,
}

/// Creates a fresh database from the migrated template.
pub async fn test_db() -> TestDb {
    let shared = shared();
    let name = format!(
        "test_{}_{}",
        std::process::id(),
        NEXT_DB.fetch_add(1, Ordering::Relaxed)
    );
    let mut admin = PgConnection::connect(&shared.admin_url)
        .await
        .expect("admin connection");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE {name} TEMPLATE {TEMPLATE}"
    )))
    .execute(&mut admin)
    .await
    .expect("creating a test database");
    let _ = admin.close().await;
    let url = format!("{}{name}", shared.url_prefix);
    let pool = timelines_sync::db::connect(&url, 20)
        .await
        .expect("connecting to the test database");
    TestDb { pool, url }
}
