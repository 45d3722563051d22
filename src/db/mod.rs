//! Connecting to Postgres, migrating, and keeping `timelines.workspaces` in step with the config.
//! All queue SQL lives in [`queue`].

pub mod queue;

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::config::Settings;

/// The migrations embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Opens a pool. The URL is never echoed in errors (it may hold a password).
pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let options = PgConnectOptions::from_str(url)
        .map_err(|_| anyhow::anyhow!("the database URL is not a valid postgres:// URL"))?
        .application_name("timelines-sync");
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(options.clone())
        .await
        .with_context(|| {
            format!(
                "cannot connect to Postgres at {}:{} (database {})",
                options.get_host(),
                options.get_port(),
                options.get_database().unwrap_or("default")
            )
        })?;
    Ok(pool)
}

/// Applies pending migrations. `sqlx` takes an advisory lock, so instances starting together
/// migrate one after the other.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR
        .run(pool)
        .await
        .context("failed to migrate the database")
}

/// Makes `timelines.workspaces` list exactly the configured workspaces; `simulated` names those
/// running against the built-in simulator.
pub async fn sync_workspaces(
    pool: &PgPool,
    settings: &Settings,
    simulated: &[String],
) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    // Serialise instances starting at once, so the last writer wins whole.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('timelines.workspaces'))")
        .execute(&mut *tx)
        .await?;
    let names: Vec<String> = settings.workspaces.keys().cloned().collect();
    for (name, ws) in &settings.workspaces {
        sqlx::query(
            "INSERT INTO timelines.workspaces (name, api_url, rate_limit_per_minute, monthly_api_calls, simulated,
                                               api_call_reserve_percent, reserve_priority)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (name) DO UPDATE
                SET api_url = EXCLUDED.api_url,
                    rate_limit_per_minute = EXCLUDED.rate_limit_per_minute,
                    monthly_api_calls = EXCLUDED.monthly_api_calls,
                    simulated = EXCLUDED.simulated,
                    api_call_reserve_percent = EXCLUDED.api_call_reserve_percent,
                    reserve_priority = EXCLUDED.reserve_priority,
                    updated_at = now()
              WHERE (workspaces.api_url, workspaces.rate_limit_per_minute, workspaces.monthly_api_calls,
                     workspaces.simulated, workspaces.api_call_reserve_percent, workspaces.reserve_priority)
                    IS DISTINCT FROM (EXCLUDED.api_url, EXCLUDED.rate_limit_per_minute,
                                      EXCLUDED.monthly_api_calls, EXCLUDED.simulated,
                                      EXCLUDED.api_call_reserve_percent, EXCLUDED.reserve_priority)",
        )
        .bind(name)
        .bind(&ws.api_url)
        .bind(ws.rate_limit_per_minute as i32)
        .bind(ws.monthly_api_calls as i32)
        .bind(simulated.contains(name))
        .bind(ws.api_call_reserve_percent)
        .bind(ws.reserve_priority)
        .execute(&mut *tx)
        .await?;
    }
    let removed = sqlx::query("DELETE FROM timelines.workspaces WHERE name <> ALL($1)")
        .bind(&names)
        .execute(&mut *tx)
        .await?;
    tx.commit()
        .await
        .context("failed to record the configured workspaces")?;
    if removed.rows_affected() > 0 {
        tracing::info!(
            removed = removed.rows_affected(),
            "workspaces no longer configured were removed"
        );
    }
    Ok(())
}

/// Whether a database error may go away by itself (connection lost, server restarting,
/// serialization conflict), so the statement is worth retrying.
pub fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception; 40001 serialization failure; 40P01 deadlock;
            // 57P01-03: admin shutdown, crash shutdown, cannot connect now; 53300: too many connections
            code.starts_with("08")
                || matches!(
                    &*code,
                    "40001" | "40P01" | "57P01" | "57P02" | "57P03" | "53300"
                )
        }),
        _ => false,
    }
}
