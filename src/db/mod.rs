//! Connecting to Postgres, migrating, and keeping `timelines.workspaces` in step with the config.
//! All queue SQL lives in [`queue`].

pub mod queue;

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;
use sqlx::migrate::MigrateError;
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
/// migrate one after the other. A database that already has exactly this binary's migrations
/// is left alone without asking `sqlx`, whose first statement (`CREATE TABLE IF NOT EXISTS
/// _sqlx_migrations`) needs the CREATE privilege: so the service can start as a role that may
/// not create anything (`timelines_service`, README "Database roles") on a database its owner
/// migrated.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    if migrations_current(pool).await {
        return Ok(());
    }
    let Err(error) = MIGRATOR.run(pool).await else {
        return Ok(());
    };
    let denied = match &error {
        MigrateError::Execute(sqlx::Error::Database(e))
        | MigrateError::ExecuteMigration(sqlx::Error::Database(e), _) => {
            e.code().as_deref() == Some("42501")
        }
        _ => false,
    };
    Err(error).context(match denied {
        true => {
            "the database needs migrations this role may not apply: run `timelines-sync migrate` \
             as the owner of schema timelines (README: Database roles)"
        }
        false => "failed to migrate the database",
    })
}

/// Whether every migration of this binary is applied, successfully and unchanged, and no other.
/// Anything else (no migrations table yet, a failed or unknown migration, no right to read the
/// table) is for `sqlx` to apply or report.
async fn migrations_current(pool: &PgPool) -> bool {
    let applied: Result<Vec<(i64, Vec<u8>, bool)>, _> =
        sqlx::query_as("SELECT version, checksum, success FROM _sqlx_migrations")
            .fetch_all(pool)
            .await;
    let Ok(applied) = applied else {
        return false;
    };
    let expected: Vec<(i64, &[u8])> = MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .map(|m| (m.version, &*m.checksum))
        .collect();
    applied.len() == expected.len()
        && applied.iter().all(|(version, checksum, success)| {
            *success && expected.contains(&(*version, checksum.as_slice()))
        })
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
        .bind(shown_url(&ws.api_url))
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

/// `url` as `timelines.workspaces` shows it: without user info (`user:password@`) or query
/// string, either of which could carry a credential; that table is readable by the enqueuer
/// role, and nothing secret is stored in the database at all.
fn shown_url(url: &str) -> String {
    let url = url.split(['?', '#']).next().unwrap_or_default();
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    format!("{scheme}://{host}{path}")
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

#[cfg(test)]
mod tests {
    use super::shown_url;

    #[test]
    fn workspace_urls_are_stored_without_credentials() {
        assert_eq!(
            shown_url("https://app.timelines.ai/integrations/api"),
            "https://app.timelines.ai/integrations/api"
        );
        assert_eq!(
            shown_url("https://user:s3cret@proxy.example:8443/api?key=s3cret#x"),
            "https://proxy.example:8443/api"
        );
        assert_eq!(shown_url("http://127.0.0.1:9999"), "http://127.0.0.1:9999");
    }
}
