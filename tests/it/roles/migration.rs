//! Migration 0010 where roles are hard: a managed Postgres whose migrating role may not create
//! roles, databases of one cluster migrating at once, a role created in two places at once,
//! and running it again.

use std::time::Duration;

use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool};

use super::{Login, with_database};
use crate::helpers::test_db;

/// Every privilege in schema timelines (tables, sequences, functions, the schema, default
/// privileges), as text to compare.
async fn privileges(pool: &PgPool) -> String {
    sqlx::query_scalar(
        "SELECT concat_ws(E'\\n',
             (SELECT string_agg(c.relname || '=' || coalesce(c.relacl::text, ''), E'\\n' ORDER BY c.relname)
                FROM pg_class c WHERE c.relnamespace = 'timelines'::regnamespace),
             (SELECT string_agg(p.oid::regprocedure::text || '=' || coalesce(p.proacl::text, ''), E'\\n' ORDER BY p.oid::regprocedure::text)
                FROM pg_proc p WHERE p.pronamespace = 'timelines'::regnamespace),
             (SELECT nspacl::text FROM pg_namespace WHERE nspname = 'timelines'),
             (SELECT string_agg(defaclacl::text, E'\\n' ORDER BY defaclobjtype) FROM pg_default_acl))",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Creates database `name` owned by `owner` through a superuser connection of the cluster.
async fn create_database(admin_url: &str, name: &str, owner: &str) {
    let mut admin = PgConnection::connect(&with_database(admin_url, "postgres"))
        .await
        .unwrap();
    sqlx::query(AssertSqlSafe(format!(
        "CREATE DATABASE {name} OWNER {owner}"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    admin.close().await.unwrap();
}

#[tokio::test]
async fn an_owner_without_createrole_migrates_new_databases_at_once_and_again_without_effect() {
    let db = test_db().await;
    // A managed Postgres: the service's user owns its database but may not create roles.
    let owner = Login::create(&db.pool, &db.url, "owner", "NOSUPERUSER NOCREATEROLE").await;
    let names = [format!("{}_a", owner.name), format!("{}_b", owner.name)];
    for name in &names {
        create_database(&db.url, name, &owner.name).await;
    }
    let mut pools: Vec<PgPool> = Vec::new();
    for name in &names {
        let url = with_database(&owner.url, name);
        pools.push(timelines_sync::db::connect(&url, 2).await.unwrap());
    }

    // Both databases migrate at the same moment; the roles exist (the cluster's template
    // created them), so both grant and neither fails.
    let migrated =
        futures_util::future::join_all(pools.iter().map(timelines_sync::db::migrate)).await;
    for result in migrated {
        result.unwrap();
    }
    let pool = &pools[0];
    let granted: (bool, bool, bool) = sqlx::query_as(
        "SELECT has_table_privilege('timelines_service', 'timelines.jobs', 'INSERT'),
                has_function_privilege('timelines_enqueuer',
                    'timelines.enqueue(text, jsonb, text, timestamptz, integer, text, integer)', 'EXECUTE'),
                has_table_privilege('timelines_enqueuer', 'timelines.jobs', 'INSERT')",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(granted, (true, true, false));

    // Roles it may not create are skipped with a notice, not an error, and nothing is made.
    let missing = [format!("{}_x", owner.name), format!("{}_y", owner.name)];
    let complete: bool = sqlx::query_scalar("SELECT timelines.setup_roles($1, $2)")
        .bind(&missing[0])
        .bind(&missing[1])
        .fetch_one(pool)
        .await
        .unwrap();
    assert!(!complete);
    let made: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_roles WHERE rolname = ANY($1)")
        .bind(&missing[..])
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(made, 0);

    // Running the migration's SQL again, or migrating again, changes nothing.
    let before = privileges(pool).await;
    sqlx::raw_sql(include_str!("../../../migrations/0010_roles.sql"))
        .execute(pool)
        .await
        .unwrap();
    timelines_sync::db::migrate(pool).await.unwrap();
    assert_eq!(privileges(pool).await, before);
    for pool in pools {
        pool.close().await;
    }
}

#[tokio::test]
async fn the_service_role_on_an_unmigrated_database_is_told_to_migrate_as_the_owner() {
    let db = test_db().await;
    let owner = Login::create(&db.pool, &db.url, "owner", "NOSUPERUSER NOCREATEROLE").await;
    let service = Login::member_of(&db, "timelines_service").await;
    let name = format!("{}_empty", owner.name);
    create_database(&db.url, &name, &owner.name).await;
    let pool = timelines_sync::db::connect(&with_database(&service.url, &name), 2)
        .await
        .unwrap();
    let error = timelines_sync::db::migrate(&pool).await.unwrap_err();
    let message = format!("{error:#}");
    assert!(
        message.contains("run `timelines-sync migrate` as the owner of schema timelines"),
        "{message}"
    );
    assert!(!message.contains(&service.password), "{message}");
    pool.close().await;
    service.drop_role(&db.pool).await;
}

#[tokio::test]
async fn a_role_created_in_two_databases_at_once_is_created_once_without_error() {
    let (first, second) = (test_db().await, test_db().await);
    let role = format!("tl_race_{}_{}", std::process::id(), rand::random::<u32>());
    let create = "SELECT timelines.create_role_if_missing($1)";

    // The first database's migration has created the role and not committed yet...
    let mut a = PgConnection::connect(&first.url).await.unwrap();
    let mut tx = a.begin().await.unwrap();
    let created: bool = sqlx::query_scalar(create)
        .bind(&role)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert!(created);
    // ...when the second's, not seeing it, creates it too and waits on the first.
    let mut b = PgConnection::connect(&second.url).await.unwrap();
    let b_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut b)
        .await
        .unwrap();
    let racing_role = role.clone();
    let racing = tokio::spawn(async move {
        let result: Result<bool, _> = sqlx::query_scalar(create)
            .bind(&racing_role)
            .fetch_one(&mut b)
            .await;
        (result, b)
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let waiting: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock')",
        )
        .bind(b_pid)
        .fetch_one(&first.pool)
        .await
        .unwrap();
        if waiting {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the second CREATE ROLE never waited"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tx.commit().await.unwrap();

    let (result, b) = racing.await.unwrap();
    assert!(
        result.unwrap(),
        "the racing creation sees the role, no error"
    );
    let roles: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_roles WHERE rolname = $1")
        .bind(&role)
        .fetch_one(&first.pool)
        .await
        .unwrap();
    assert_eq!(roles, 1);
    // Again, with the role there: nothing to do.
    let again: bool = sqlx::query_scalar(create)
        .bind(&role)
        .fetch_one(&second.pool)
        .await
        .unwrap();
    assert!(again);
    b.close().await.unwrap();
    a.close().await.unwrap();
    sqlx::query(AssertSqlSafe(format!("DROP ROLE {role}")))
        .execute(&first.pool)
        .await
        .unwrap();
}
