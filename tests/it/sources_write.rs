//! How a poll run writes a batch: the jobs, the rule events and the contacts go in on three
//! connections at once when the pool has them to spare, in one when it has not, and the rare
//! job that does not go in as planned (its key taken by another job) is linked, never doubled.

use sqlx::PgPool;

use crate::helpers::test_db;
use crate::sources::{ago, count, poller_on, rfc, run};

/// A SQL source over `public.customers` with a `created` rule named `welcome`.
fn config(start: chrono::DateTime<chrono::Utc>) -> String {
    format!(
        r#"
[workspaces.default]
token = "tl-token"
[sources.app_db]
sql = "SELECT id, first_name, phone, created_at, updated_at FROM public.customers WHERE updated_at >= $1 AND updated_at < $2"
cursor_field = "updated_at"
created_field = "created_at"
id_field = "id"
phone_fields = ["phone"]
page_size = 50
initial = "{start}"
settle_seconds = 0
[[rules]]
name = "welcome"
source = "app_db"
trigger = "created"
template = "Welcome, {{{{ first_name }}}}"
"#,
        start = rfc(start)
    )
}

/// `n` customers created and changed 30 minutes ago.
async fn customers(pool: &PgPool, n: i32) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE public.customers (id int PRIMARY KEY, first_name text, phone text,
                                         created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL);
         INSERT INTO public.customers
         SELECT i, 'Name' || i, '+5511 9' || lpad((10000000 + i)::text, 8, '0'),
                now() - interval '30 minutes', now() - interval '30 minutes' + i * interval '1 ms'
           FROM generate_series(1, {n}) i;"
    )))
    .execute(pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn a_job_whose_key_another_job_has_is_linked_to_it_and_not_doubled() {
    let db = test_db().await;
    customers(&db.pool, 120).await;
    // Someone enqueued record 7's welcome already, under the key the rule gives it.
    let theirs: i64 = sqlx::query_scalar(
        "SELECT timelines.enqueue('send_message', '{\"phone\": \"+5511910000007\", \"text\": \"Hi\"}',
                                  idempotency_key => 'poll:app_db:welcome:7:created')",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let poller = poller_on(&db.pool, &config(ago(60))).await;
    let report = run(&poller, "app_db").await;

    assert_eq!(report.records_seen, 120);
    assert_eq!(report.jobs_created, 119, "{report:?}");
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM timelines.jobs").await,
        120
    );
    let (outcome, job): (String, Option<i64>) = sqlx::query_as(
        "SELECT outcome, job_id FROM timelines.rule_events
          WHERE idempotency_key = 'poll:app_db:welcome:7:created'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((outcome.as_str(), job), ("enqueued", Some(theirs)));
    // Every other event links the job made for it, and every job has its event.
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM timelines.rule_events e JOIN timelines.jobs j ON j.id = e.job_id
              WHERE j.idempotency_key = e.idempotency_key"
        )
        .await,
        120
    );
    // The run's own figure counts the jobs it made.
    assert_eq!(
        count(
            &db.pool,
            "SELECT jobs_created::bigint FROM timelines.source_runs"
        )
        .await,
        119
    );
    // Polled again: nothing new.
    assert_eq!(run(&poller, "app_db").await.jobs_created, 0);
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM timelines.jobs").await,
        120
    );
}

#[tokio::test]
async fn a_pool_with_no_connection_to_spare_writes_every_part_in_the_batchs_own() {
    let db = test_db().await;
    customers(&db.pool, 1_500).await;
    // One connection: the run's lock takes it out of the pool, the batch takes the next one,
    // and nothing is left for the jobs' or the contacts' own transactions.
    let small = timelines_sync::db::connect(&db.url, 1).await.unwrap();
    let poller = poller_on(&small, &config(ago(60))).await;
    let report = run(&poller, "app_db").await;
    assert_eq!((report.records_seen, report.jobs_created), (1_500, 1_500));
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM timelines.contacts c
               JOIN timelines.rule_events e ON e.source = c.source AND e.external_id = c.external_id
               JOIN timelines.jobs j ON j.id = e.job_id AND j.payload->>'phone' = c.phone"
        )
        .await,
        1_500
    );
    assert_eq!(run(&poller, "app_db").await.jobs_created, 0);
}

#[tokio::test]
async fn a_contact_opted_out_in_a_batch_stops_messages_to_its_phone_from_the_same_batch() {
    let db = test_db().await;
    customers(&db.pool, 10).await;
    // Records 3 and 4 share a phone; record 3 says it opted out. The contacts are written
    // alongside the batch's events, so the batch itself must know.
    sqlx::raw_sql(
        "ALTER TABLE public.customers ADD COLUMN opted_out boolean NOT NULL DEFAULT false;
         UPDATE public.customers SET opted_out = true WHERE id = 3;
         UPDATE public.customers SET phone = (SELECT phone FROM public.customers WHERE id = 3)
          WHERE id = 4;",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let config = config(ago(60))
        .replace(
            "SELECT id, first_name, phone,",
            "SELECT id, first_name, phone, opted_out,",
        )
        .replace(
            "page_size = 50",
            "page_size = 50\nopted_out_if = \"opted_out\"",
        );
    let poller = poller_on(&db.pool, &config).await;
    let report = run(&poller, "app_db").await;
    assert_eq!(report.jobs_created, 8, "{report:?}");
    assert_eq!(report.skipped.get("opted_out"), Some(&2));
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM timelines.jobs WHERE payload->>'phone' = '+5511910000003'"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn a_batch_whose_own_commit_fails_after_its_jobs_committed_is_repeated_without_a_second_job()
{
    let db = test_db().await;
    customers(&db.pool, 50).await;
    // The batch's own transaction (rule events, cursor) fails at its commit, after the jobs'
    // and the contacts' transactions have committed: the cursor's move raises at commit time.
    sqlx::raw_sql(
        "CREATE FUNCTION public.fail_commit() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'injected failure at commit'; END $$;
         CREATE CONSTRAINT TRIGGER fail_commit AFTER UPDATE ON timelines.source_state
             DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
             WHEN (OLD.cursor_value IS DISTINCT FROM NEW.cursor_value)
             EXECUTE FUNCTION public.fail_commit();",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let poller = poller_on(&db.pool, &config(ago(60))).await;
    let error = poller
        .run(
            "app_db",
            timelines_sync::sources::engine::Mode::Manual,
            false,
        )
        .await
        .unwrap_err();
    assert!(error.to_string().contains("injected failure"), "{error}");
    // The jobs went in; their rule events and the cursor did not.
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM timelines.jobs").await,
        50
    );
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM timelines.rule_events").await,
        0
    );

    sqlx::raw_sql("DROP TRIGGER fail_commit ON timelines.source_state")
        .execute(&db.pool)
        .await
        .unwrap();
    let report = run(&poller, "app_db").await;
    // Read again: each event links the job made the first time; none is made twice.
    assert_eq!(report.jobs_created, 0, "{report:?}");
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM timelines.jobs").await,
        50
    );
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM timelines.rule_events e JOIN timelines.jobs j ON j.id = e.job_id
              WHERE j.idempotency_key = e.idempotency_key AND e.outcome = 'enqueued'"
        )
        .await,
        50
    );
    assert_eq!(run(&poller, "app_db").await.jobs_created, 0);
}
