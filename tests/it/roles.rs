//! Database roles (migration 0010, README "Database roles"): what `timelines_enqueuer` and
//! `timelines_service` may and may not do, proved by connecting as login roles granted them.
//!
//! Roles belong to the whole test cluster, which every test shares: each test makes login roles
//! of its own (unique names) and drops them at the end; one left by a failed test is harmless.

mod enqueuer;
mod migration;
mod service;

use std::sync::atomic::{AtomicUsize, Ordering};

use sqlx::{AssertSqlSafe, PgPool};

static NEXT_LOGIN: AtomicUsize = AtomicUsize::new(0);

/// A login role of this test's own.
pub(crate) struct Login {
    /// Its name.
    pub name: String,
    /// Its password (a secret: it must never be stored).
    pub password: String,
    /// A URL that connects as it to the database of the `url` it was made from.
    pub url: String,
}

impl Login {
    /// Creates a login role with `options` appended to `CREATE ROLE ... LOGIN PASSWORD ...`
    /// (e.g. `IN ROLE timelines_enqueuer`), through `admin` (a superuser), for the database
    /// `url` names.
    pub async fn create(admin: &PgPool, url: &str, prefix: &str, options: &str) -> Login {
        let name = format!(
            "tl_{prefix}_{}_{}",
            std::process::id(),
            NEXT_LOGIN.fetch_add(1, Ordering::Relaxed)
        );
        let password = uuid::Uuid::new_v4().simple().to_string();
        sqlx::query(AssertSqlSafe(format!(
            "CREATE ROLE {name} LOGIN PASSWORD '{password}' {options}"
        )))
        .execute(admin)
        .await
        .unwrap();
        let url = with_login(url, &name, &password);
        Login {
            name,
            password,
            url,
        }
    }

    /// A login that is a member of `group` (`timelines_enqueuer`, `timelines_service`).
    pub async fn member_of(db: &crate::helpers::TestDb, group: &str) -> Login {
        let prefix = group.trim_start_matches("timelines_");
        Self::create(&db.pool, &db.url, prefix, &format!("IN ROLE {group}")).await
    }

    /// A pool connected as this role.
    pub async fn pool(&self) -> PgPool {
        timelines_sync::db::connect(&self.url, 4).await.unwrap()
    }

    /// Drops the role (its pools closed first by the caller).
    pub async fn drop_role(self, admin: &PgPool) {
        sqlx::query(AssertSqlSafe(format!("DROP ROLE IF EXISTS {}", self.name)))
            .execute(admin)
            .await
            .unwrap();
    }
}

/// `url` with another user and password.
pub(crate) fn with_login(url: &str, user: &str, password: &str) -> String {
    let mut url = reqwest::Url::parse(url).unwrap();
    url.set_username(user).unwrap();
    url.set_password(Some(password)).unwrap();
    url.to_string()
}

/// `url` pointing at another database of the same cluster.
pub(crate) fn with_database(url: &str, database: &str) -> String {
    let mut url = reqwest::Url::parse(url).unwrap();
    url.set_path(database);
    url.to_string()
}

/// The SQLSTATE a statement failed with (it must fail).
pub(crate) fn sqlstate<T: std::fmt::Debug>(result: Result<T, sqlx::Error>) -> String {
    match result {
        Ok(v) => panic!("expected the database to refuse this, got {v:?}"),
        Err(sqlx::Error::Database(e)) => e.code().unwrap_or_default().into_owned(),
        Err(e) => panic!("expected a database error, got {e}"),
    }
}

/// SQLSTATE of "permission denied".
pub(crate) const DENIED: &str = "42501";
