//! `timelines-sync bench rate`: does the dispatcher use the whole rate limit and never exceed it?
//!
//! Starts a throwaway cluster and the simulator with a strict sliding window, enqueues enough
//! sends to keep the dispatcher busy for `--seconds`, and runs 1, then 3, real `timelines-sync
//! run` processes sharing the database. Prints the achieved rate as a fraction of the limit
//! (from the first to the last request the API accepted), the 429s the simulator answered, and
//! the most requests it saw in any window.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::PgPool;

use crate::bench::Throwaway;
use crate::db;
use crate::simulator::{Simulator, SimulatorConfig};

/// Parameters of `bench rate`.
#[derive(Debug, Clone, clap::Args)]
pub struct RateBench {
    /// The workspace's limit, requests per minute.
    #[arg(long, default_value_t = 600)]
    pub per_minute: u32,
    /// The simulator's window, seconds; it allows `per_minute * window / 60` requests in any
    /// window of this length (the limit with the window shortened proportionally).
    #[arg(long, default_value_t = 10.0)]
    pub window_seconds: f64,
    /// How long each run should keep the dispatcher busy, seconds.
    #[arg(long, default_value_t = 70)]
    pub seconds: u64,
    /// Worker process counts to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    pub workers: Vec<usize>,
}

/// Runs the benchmark and prints its figures.
pub async fn run(params: RateBench) -> anyhow::Result<()> {
    let throwaway = Throwaway::start().await?;
    let pool = db::connect(&throwaway.url, 5).await?;
    db::migrate(&pool).await?;
    let allowed = (f64::from(params.per_minute) * params.window_seconds / 60.0).floor() as u32;
    println!(
        "rate benchmark: limit {}/min; simulator window {} s allowing {allowed} (sliding); {} s of sends per run",
        params.per_minute, params.window_seconds, params.seconds
    );
    for &workers in &params.workers {
        let figures = one_run(&throwaway.url, &pool, &params, allowed, workers).await?;
        println!("{figures}");
    }
    pool.close().await;
    Ok(())
}

async fn one_run(
    url: &str,
    pool: &PgPool,
    params: &RateBench,
    allowed: u32,
    workers: usize,
) -> anyhow::Result<String> {
    sqlx::query("TRUNCATE timelines.jobs, timelines.api_requests, timelines.rate_limiter, timelines.throttle_events, timelines.messages")
        .execute(pool)
        .await?;
    let token = uuid::Uuid::new_v4().to_string();
    let sim_config = SimulatorConfig {
        tokens: vec![token.clone()],
        rate_limit: allowed,
        rate_window: Duration::from_secs_f64(params.window_seconds),
        monthly_api_calls: 10_000_000,
        messaging_quota: 10_000_000,
        ..SimulatorConfig::default()
    };
    let sim = Simulator::start(sim_config, ([127, 0, 0, 1], 0).into()).await?;
    let jobs = (u64::from(params.per_minute) * params.seconds / 60 + 10) as i64;
    sqlx::query(
        "INSERT INTO timelines.jobs (kind, payload)
         SELECT 'send_message', jsonb_build_object('phone', '+1415' || lpad(g::text, 7, '0'), 'text', 'bench ' || g)
           FROM generate_series(1, $1) g",
    )
    .bind(jobs)
    .execute(pool)
    .await?;

    let dir = tempfile_dir()?;
    let config = dir.join("bench.toml");
    std::fs::write(
        &config,
        format!(
            "[workspaces.default]\napi_url = {:?}\ntoken = {:?}\nrate_limit_per_minute = {}\n[dispatcher]\nconcurrency = 8\n",
            sim.base_url(),
            token,
            params.per_minute
        ),
    )?;
    let exe = std::env::current_exe().context("finding the timelines-sync binary")?;
    let started = Instant::now();
    let mut children = Vec::new();
    for _ in 0..workers {
        let child = tokio::process::Command::new(&exe)
            .arg("--config")
            .arg(&config)
            .arg("run")
            .env("DATABASE_URL", url)
            .env("RUST_LOG", "warn")
            .env(crate::config::HTTP_LISTEN_ENV, "127.0.0.1:0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting a worker process")?;
        children.push(child);
    }
    let deadline = started + Duration::from_secs(params.seconds * 3 + 60);
    loop {
        let done: i64 =
            sqlx::query_scalar("SELECT count(*) FROM timelines.jobs WHERE state = 'succeeded'")
                .fetch_one(pool)
                .await?;
        if done >= jobs || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for child in &mut children {
        if let Some(pid) = child.id() {
            // SAFETY: signalling our own child process.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
    }
    for mut child in children {
        let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    }
    let (accepted, first, last): (i64, Option<f64>, Option<f64>) = sqlx::query_as(
        "SELECT count(*), extract(epoch FROM min(requested_at))::float8, extract(epoch FROM max(requested_at))::float8
           FROM timelines.api_requests WHERE status = 200",
    )
    .fetch_one(pool)
    .await?;
    let stats = sim.stats();
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    let span = last.zip(first).map(|(l, f)| l - f).unwrap_or(0.0);
    let per_minute = if span > 0.0 {
        (accepted - 1) as f64 / span * 60.0
    } else {
        0.0
    };
    Ok(format!(
        "{workers} worker process(es): {accepted} requests in {span:.1} s = {per_minute:.1}/min = {:.1} % of the limit; \
         429s: {}; most requests in any {} s window: {} (allowed {allowed})",
        per_minute / f64::from(params.per_minute) * 100.0,
        stats.rate_limited,
        params.window_seconds,
        stats.max_accepted_in_window,
    ))
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "timelines-sync-bench-rate-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
