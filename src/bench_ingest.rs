//! `timelines-sync bench ingest`: how fast does one `poll` turn CRM records into jobs?
//!
//! Serves a fake CRM (the generic JSON contract of crm-sources.md §2.7) with `--records`
//! contacts, about 1 % of them with an invalid or missing phone, in pages of 100–200. Runs the
//! real `timelines-sync poll` as a child process against a durable throwaway cluster, and
//! prints records/s from the fake's first request to the child's exit (the last job committed),
//! records/s by the run's own `source_runs` timestamps, and the child's peak RSS (`wait4`).
//! The result is checked in SQL: one job per record with a valid phone, the right phone in each,
//! and every skip counted; a run that did not do the work is an error, not a figure.

mod fake_crm;

use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{SecondsFormat, Utc};
use sqlx::PgPool;

use self::fake_crm::{API_KEY, Dataset, FakeCrm};
use crate::bench::Throwaway;
use crate::db;

/// The issue's goals: at least this many records per second...
const GOAL_RECORDS_PER_SECOND: f64 = 20_000.0;
/// ...with the poll process's peak RSS under this many MB (10^6 bytes).
const GOAL_PEAK_RSS_MB: f64 = 100.0;
const SOURCE: &str = "bench";

/// Parameters of `bench ingest`.
#[derive(Debug, Clone, clap::Args)]
pub struct IngestBench {
    /// Contacts the fake CRM serves.
    #[arg(long, default_value_t = 100_000)]
    #[arg(value_parser = clap::value_parser!(u32).range(1..=Dataset::MAX as i64))]
    pub records: u32,
    /// Run against this database instead of a throwaway cluster. Its jobs, rule events, source
    /// runs, source state, source records and contacts are EMPTIED, and its workspaces are
    /// replaced by a simulated `default`.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
}

/// Runs the benchmark and prints its figures.
pub async fn run(params: IngestBench) -> anyhow::Result<()> {
    let data = Dataset::new(params.records as usize, 42);
    let (throwaway, url) = match &params.database_url {
        Some(url) => (None, url.clone()),
        None => {
            let t = Throwaway::start().await?;
            let url = t.url.clone();
            (Some(t), url)
        }
    };
    let pool = prepare(&url, data.len()).await?;
    let (pages, elapsed) = fake_crm::read_fake_alone(data).await?;
    println!(
        "{:<62} {:>9.0} records/s  ({:.2} s, {pages} pages)",
        "fake CRM alone (pages fetched and parsed in sequence)",
        data.len() as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );

    let crm = FakeCrm::start(data).await?;
    let dir = std::env::temp_dir().join(format!(
        "timelines-sync-bench-ingest-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir)?;
    let outcome = poll_child(&dir, &url, crm.addr, data.len()).await;
    let first_request = crm.state.first_request.get().copied();
    let requests = crm.state.requests.load(Ordering::Relaxed);
    crm.stop().await;
    let log = std::fs::read_to_string(dir.join("poll.log")).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    let exit = outcome?;
    anyhow::ensure!(
        exit.status.success(),
        "the poll process failed ({}):\n{log}",
        exit.status
    );
    let first_request = first_request.context("the poll process never called the fake CRM")?;

    let run = verify(&pool, &data).await?;
    let wall = exit.at.duration_since(first_request);
    print_figures(&run, requests, wall, &exit);
    pool.close().await;
    drop(throwaway);
    Ok(())
}

/// Connects, migrates, empties the tables a poll writes and prints the database's durability.
async fn prepare(url: &str, records: usize) -> anyhow::Result<PgPool> {
    let pool = db::connect(url, 4).await?;
    db::migrate(&pool).await?;
    sqlx::query(
        "TRUNCATE timelines.jobs, timelines.rule_events, timelines.source_runs, timelines.source_skips,
                  timelines.source_records, timelines.contacts, timelines.source_state",
    )
    .execute(&pool)
    .await?;
    let (fsync, commit): (String, String) =
        sqlx::query_as("SELECT current_setting('fsync'), current_setting('synchronous_commit')")
            .fetch_one(&pool)
            .await?;
    println!(
        "ingest benchmark: {records} records from a fake CRM in pages of 100-200; fsync={fsync}, synchronous_commit={commit}, {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    Ok(pool)
}

fn print_figures(run: &RunRow, requests: u32, wall: Duration, exit: &Exit) {
    let rate = f64::from(run.records_seen) / wall.as_secs_f64();
    let rss_mb = exit.peak_rss_kib as f64 * 1024.0 / 1e6;
    println!(
        "poll: {} records, {} pages ({requests} requests served), {} jobs created, {} skipped {}",
        run.records_seen, run.pages, run.jobs_created, run.records_skipped, run.skipped
    );
    println!(
        "{:<62} {rate:>9.0} records/s  ({:.2} s)",
        "first request -> last job committed (poll process exit)",
        wall.as_secs_f64()
    );
    println!(
        "{:<62} {:>9.0} records/s  ({:.2} s)",
        "source_runs.started_at -> finished_at",
        f64::from(run.records_seen) / run.seconds,
        run.seconds
    );
    let bound = if exit.peak_rss_kib <= exit.parent_peak_kib {
        "<= (this process's own peak; the poll's was not above it) "
    } else {
        ""
    };
    println!(
        "poll process: peak RSS {bound}{rss_mb:.1} MB; CPU {:.2} s ({:.0} % of the wall time; the rest is waiting on Postgres and the CRM)",
        exit.cpu.as_secs_f64(),
        exit.cpu.as_secs_f64() / wall.as_secs_f64() * 100.0
    );
    let verdict = |met: bool| if met { "met" } else { "MISSED" };
    println!(
        "goals: >= {GOAL_RECORDS_PER_SECOND:.0} records/s {}; peak RSS < {GOAL_PEAK_RSS_MB:.0} MB {}",
        verdict(rate >= GOAL_RECORDS_PER_SECOND),
        verdict(rss_mb < GOAL_PEAK_RSS_MB)
    );
}

/// The configuration of the child: the fake CRM as a custom HTTP source, one `created` rule.
fn config_text(url: &str, crm: SocketAddr) -> String {
    let initial =
        (Utc::now() - chrono::Duration::hours(2)).to_rfc3339_opts(SecondsFormat::Secs, true);
    format!(
        r#"[database]
url = {url:?}

[workspaces.default]
simulator = true

[sources.{SOURCE}]
base_url = "http://{crm}"
path = "/contacts"
token = "{API_KEY}"
auth = {{ type = "header", name = "X-Api-Key" }}
query = {{ updated_since = "{{{{ cursor.lower }}}}", cursor = "{{{{ page.token | default('') }}}}", limit = "{{{{ page.size }}}}" }}
records_path = "data"
id_field = "id"
cursor_field = "updated_at"
created_field = "created_at"
pagination = {{ type = "token", token_path = "next_cursor" }}
page_size = 200
sorted = true
initial = "{initial}"
lookback_seconds = 0
settle_seconds = 0
phone_fields = ["phone"]
name_fields = ["first_name", "last_name"]

[[rules]]
source = "{SOURCE}"
trigger = "created"
template = "Hi {{{{ first_name }}}}, welcome!"
"#
    )
}

/// How the poll process ended.
struct Exit {
    status: ExitStatus,
    /// When it was reaped.
    at: Instant,
    /// `ru_maxrss`: KiB on Linux.
    peak_rss_kib: i64,
    /// This process's own peak when it started the child: Linux counts it in the child's
    /// `ru_maxrss` too (the child runs in the parent's memory until exec), so a figure not above
    /// it is only an upper bound.
    parent_peak_kib: i64,
    /// User plus system time.
    cpu: Duration,
}

/// Runs `timelines-sync --config FILE poll bench` and waits for it.
async fn poll_child(
    dir: &Path,
    url: &str,
    crm: SocketAddr,
    records: usize,
) -> anyhow::Result<Exit> {
    let config = dir.join("bench.toml");
    std::fs::write(&config, config_text(url, crm))?;
    let log = std::fs::File::create(dir.join("poll.log"))?;
    let exe = std::env::current_exe().context("finding the timelines-sync binary")?;
    let child = std::process::Command::new(exe)
        .arg("--config")
        .arg(&config)
        .args(["poll", SOURCE])
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        .stdout(log.try_clone()?)
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .context("starting the poll process")?;
    let pid = child.id() as libc::pid_t;
    let mut waiter = tokio::task::spawn_blocking(move || wait_with_usage(pid));
    let limit = Duration::from_secs(120 + records as u64 / 200);
    let waited = match tokio::time::timeout(limit, &mut waiter).await {
        Ok(waited) => waited?,
        Err(_) => {
            // SAFETY: signalling our own child, not yet reaped (the waiter reaps it).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            waiter.await??;
            anyhow::bail!("the poll process took more than {} s", limit.as_secs());
        }
    };
    let (status, at, usage) = waited?;
    // SAFETY: rusage is plain data, filled in by the call.
    let parent_peak_kib = unsafe {
        let mut own: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut own);
        own.ru_maxrss
    };
    let seconds = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Ok(Exit {
        status,
        at,
        peak_rss_kib: usage.ru_maxrss,
        parent_peak_kib,
        cpu: seconds(usage.ru_utime) + seconds(usage.ru_stime),
    })
}

/// `wait4`: the child's exit status, when it was reaped, and its resource usage.
fn wait_with_usage(pid: libc::pid_t) -> std::io::Result<(ExitStatus, Instant, libc::rusage)> {
    let mut status = 0;
    // SAFETY: rusage is plain data; all zeroes is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: valid pointers to locals; `pid` is our child.
        let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if reaped == pid {
            return Ok((ExitStatus::from_raw(status), Instant::now(), usage));
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// The run's row, as checked.
#[derive(Debug, sqlx::FromRow)]
struct RunRow {
    status: String,
    error: Option<String>,
    pages: i32,
    records_seen: i32,
    jobs_created: i32,
    records_skipped: i32,
    skipped: serde_json::Value,
    seconds: f64,
}

/// Checks that the poll did the whole job: one succeeded run that saw every record, one job
/// per valid phone carrying that phone, every other record skipped for the right reason.
async fn verify(pool: &PgPool, data: &Dataset) -> anyhow::Result<RunRow> {
    let runs: Vec<RunRow> = sqlx::query_as(
        "SELECT status, error, pages, records_seen, jobs_created, records_skipped, skipped,
                extract(epoch FROM finished_at - started_at)::float8 AS seconds
           FROM timelines.source_runs WHERE source = $1",
    )
    .bind(SOURCE)
    .fetch_all(pool)
    .await?;
    let [run] = <[RunRow; 1]>::try_from(runs)
        .map_err(|runs| anyhow::anyhow!("expected one source run, found {}", runs.len()))?;
    anyhow::ensure!(
        run.status == "succeeded",
        "the run {}: {:?}",
        run.status,
        run.error
    );
    let (mut ids, mut phones, mut invalid) = (Vec::new(), Vec::new(), 0);
    for contact in (0..data.len()).map(|pos| data.contact(pos)) {
        match contact.e164 {
            Some(e164) => {
                ids.push(contact.id.to_string());
                phones.push(e164);
            }
            None if contact.phone.is_some_and(|p| !p.is_empty()) => invalid += 1,
            None => {}
        }
    }
    let missing = data.len() - ids.len() - invalid;
    // The run lists only the reasons that occurred.
    let expected: serde_json::Map<String, serde_json::Value> =
        [("invalid_phone", invalid), ("missing_phone", missing)]
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(reason, n)| (reason.to_owned(), n.into()))
            .collect();
    let expected = serde_json::Value::Object(expected);
    anyhow::ensure!(
        run.records_seen as usize == data.len()
            && run.jobs_created as usize == ids.len()
            && run.records_skipped as usize == invalid + missing
            && run.skipped == expected,
        "the run saw {} records, created {} jobs and skipped {} {}; expected {}, {} and {expected}",
        run.records_seen,
        run.jobs_created,
        run.records_skipped,
        run.skipped,
        data.len(),
        ids.len()
    );
    let (jobs, right): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM timelines.jobs),
                (SELECT count(*) FROM timelines.jobs j
                   JOIN timelines.rule_events e ON e.job_id = j.id
                   JOIN unnest($1::text[], $2::text[]) AS x(id, phone)
                     ON x.id = e.external_id AND x.phone = j.payload->>'phone'
                  WHERE j.kind = 'send_message' AND j.payload->>'text' LIKE 'Hi %, welcome!')",
    )
    .bind(&ids)
    .bind(&phones)
    .fetch_one(pool)
    .await?;
    anyhow::ensure!(
        jobs == ids.len() as i64 && right == jobs,
        "{jobs} jobs in timelines.jobs, {right} of them for the right record and phone; expected {}",
        ids.len()
    );
    Ok(run)
}
