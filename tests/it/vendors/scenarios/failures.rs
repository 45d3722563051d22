//! Failures: the vendor's rate-limit answer, a commit that fails, and a process that dies
//! between batches.

use std::time::Duration;

use timelines_sync::sources::engine::{RunError, WRITE_BATCH};

use super::{once_each, seconds};
use crate::vendors::ago;
use crate::vendors::preset::{Config, Person, Preset, Throttle};

/// Twelve records, one per page, against the vendor's rate limit: the run waits out what the
/// vendor asks and finishes, or stops where the vendor's budget ends and the next run (budget
/// back) reads the rest; no record is lost or messaged twice.
pub async fn rate_limit(preset: &impl Preset) {
    const RECORDS: u64 = 12;
    let clock = preset.clock();
    clock.freeze();
    let base = ago(40);
    for n in 1..=RECORDS {
        preset.put(n, &Person::numbered(n), base + seconds(n));
    }
    preset.set_page_size(1);
    let h = Config::new(preset).set("page_size", 1).start(preset).await;
    let throttle = preset.throttle();
    let answered = |status: u16| {
        preset
            .requests()
            .iter()
            .filter(|r| r.status == status)
            .count()
    };

    match throttle {
        Throttle::WaitsOut { status, wait } => {
            let report = h.run().await;

            let throttled = answered(status);
            assert!(throttled >= 1, "the vendor's limit was reached");
            assert_eq!(
                clock.waits(),
                vec![wait; throttled],
                "each {status} was waited out as the vendor asked"
            );
            assert_eq!(report.jobs_created, RECORDS);
            let run = &h.runs().await[0];
            assert_eq!(run.status, "succeeded");
            assert_eq!(run.requests as usize, preset.requests().len());
        }
        Throttle::Stops {
            status,
            reason,
            tries,
        } => {
            let error = h.try_run().await.unwrap_err();

            assert!(error.to_string().contains(reason), "{error}");
            assert_eq!(answered(status), tries);
            let waits = clock.waits();
            assert_eq!(waits.len(), tries - 1, "only the retries paused");
            assert!(
                waits.windows(2).all(|pair| pair[0] < pair[1]),
                "without a time from the vendor the pauses back off: {waits:?}"
            );
            let run = &h.runs().await[0];
            assert_eq!(run.status, "failed");
            assert!(run.error.as_deref().unwrap_or("").contains(reason));
            let kept = h.jobs().await.len() as u64;
            assert!((1..RECORDS).contains(&kept), "{kept} jobs kept");
            assert_eq!(h.phones_by_record().await, once_each(preset, 1..=kept));
            assert_eq!(h.state().await.cursor_value, base + seconds(kept));

            preset.unthrottle();
            let report = h.run().await;

            assert_eq!(report.jobs_created, RECORDS - kept);
        }
    }
    assert_eq!(h.phones_by_record().await, once_each(preset, 1..=RECORDS));
    h.assert_never_stored(preset.secret()).await;
}

/// The commit of the batch fails after its rows were written (as when the process dies
/// between fetching pages and committing them): jobs, events, contacts and cursor are rolled
/// back together, and the next run creates each job once.
pub async fn failed_commit(preset: &impl Preset) {
    for n in 1..=5 {
        preset.put(n, &Person::numbered(n), ago(30) + seconds(n));
    }
    let config = Config::new(preset).set("page_size", 2);
    preset.set_page_size(2);
    let h = config.start(preset).await;
    let crash = format!(
        "CREATE FUNCTION public.crash() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.external_id = '{}' THEN RAISE EXCEPTION 'simulated crash'; END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER crash BEFORE INSERT ON timelines.rule_events
             FOR EACH ROW EXECUTE FUNCTION public.crash();",
        preset.external_id(3)
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(crash))
        .execute(h.pool())
        .await
        .unwrap();

    let error = h.try_run().await.unwrap_err();

    assert!(error.to_string().contains("simulated crash"), "{error}");
    let written = "SELECT (SELECT count(*) FROM timelines.jobs) + (SELECT count(*) FROM timelines.rule_events)
                        + (SELECT count(*) FROM timelines.contacts)";
    assert_eq!(h.count(written).await, 0);
    let state = h.state().await;
    assert_eq!(
        (state.cursor_value, state.boundary_ids, state.vendor_token),
        (config.initial(), vec![], None)
    );
    assert_eq!(h.runs().await[0].status, "failed");

    sqlx::raw_sql("DROP TRIGGER crash ON timelines.rule_events")
        .execute(h.pool())
        .await
        .unwrap();
    let report = h.run().await;

    assert_eq!(report.jobs_created, 5);
    assert_eq!(h.phones_by_record().await, once_each(preset, 1..=5));
    h.assert_never_stored(preset.secret()).await;
}

/// A batch and 300 records make two write batches. The second batch's write waits on a lock the test
/// holds, and the run is dropped there, as when the process dies: the first batch stays
/// committed, the dead run is marked interrupted, and the next run adds the rest, no job twice.
pub async fn dying_between_batches(preset: &impl Preset) {
    const RECORDS: u64 = WRITE_BATCH as u64 + 300;
    let base = ago(50);
    for n in 1..=RECORDS {
        preset.put(n, &Person::numbered(n), base + seconds(n));
    }
    let size = preset.max_page_size().min(250);
    preset.set_page_size(size);
    let h = Config::new(preset)
        .set("page_size", size)
        .start(preset)
        .await;
    let mut holder = h.pool().acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock(7, 7)")
        .execute(&mut *holder)
        .await
        .unwrap();
    let hang = format!(
        "CREATE FUNCTION public.hang() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.external_id = '{}' THEN PERFORM pg_advisory_xact_lock(7, 7); END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER hang BEFORE INSERT ON timelines.rule_events
             FOR EACH ROW EXECUTE FUNCTION public.hang();",
        preset.external_id(RECORDS)
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(hang))
        .execute(h.pool())
        .await
        .unwrap();
    // (Advisory locks are per database, and other tests share the cluster.)
    let waiting = "SELECT count(*) FROM pg_locks
                    WHERE locktype = 'advisory' AND classid = 7 AND objid = 7 AND NOT granted
                      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())";

    let committed = {
        let run = h.try_run();
        tokio::pin!(run);
        loop {
            tokio::select! {
                result = &mut run => panic!("the run ended instead of waiting: {result:?}"),
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
            if h.count(waiting).await > 0 {
                break;
            }
        }
        h.count("SELECT count(*) FROM timelines.jobs").await
        // The run is dropped here: the process died in the middle of its second batch.
    };
    sqlx::query("SELECT pg_advisory_unlock_all()")
        .execute(&mut *holder)
        .await
        .unwrap();
    drop(holder);

    assert!(
        (1..RECORDS as i64).contains(&committed),
        "{committed} jobs committed before the crash"
    );
    // The dead run's session goes away a moment after it: until then the source is busy.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let report = loop {
        match h.try_run().await {
            Err(RunError::Busy(_)) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => break other.unwrap_or_else(|e| panic!("the rerun failed: {e}")),
        }
    };

    assert_eq!(report.jobs_created as i64, RECORDS as i64 - committed);
    assert_eq!(h.phones_by_record().await, once_each(preset, 1..=RECORDS));
    let statuses: Vec<String> = h.runs().await.into_iter().map(|r| r.status).collect();
    assert_eq!(statuses, ["interrupted", "succeeded"]);
}
