//! `timelines-sync bench queue`: measures the queue engine with no-op jobs.
//!
//! Figures: enqueue rate (one bulk INSERT, and one `timelines.enqueue` call per job), the drain
//! rate of the real [`Worker`] on the batched path and with every job claimed and completed by
//! its own statements, and the latency of claiming one job with 1,000 and 1,000,000 queued. By
//! default it runs on a throwaway cluster with Postgres' durable defaults (fsync and
//! `synchronous_commit` on), started from the system binaries and removed afterwards.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Subcommand;
use sqlx::PgPool;

use crate::config::Settings;
use crate::db::{self, queue as q};
use crate::pg::{Cluster, ClusterOptions};
use crate::queue::{NoopHandler, Worker, WorkerConfig};
use crate::shutdown::Shutdown;

/// The benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Queue throughput and claim latency with no-op jobs.
    Queue(QueueBench),
    /// Achieved request rate against a strict simulator, with 1 and 3 worker processes.
    Rate(crate::bench_rate::RateBench),
    /// Records/s and peak memory of one `poll` of a fake CRM with 100,000 contacts.
    Ingest(crate::bench_ingest::IngestBench),
}

/// Parameters of `bench queue`.
#[derive(Debug, Clone, clap::Args)]
pub struct QueueBench {
    /// Job counts to enqueue and drain, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    pub jobs: Vec<i64>,
    /// Queue depths at which to measure claim latency, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,1000000")]
    pub depths: Vec<i64>,
    /// Claims timed per depth.
    #[arg(long, default_value_t = 500)]
    pub samples: usize,
    /// Worker instances for the one-job-at-a-time drain (each claims and completes one job per
    /// statement, as separate processes would).
    #[arg(long, default_value_t = 16)]
    pub single_workers: usize,
    /// Run against this database instead of a throwaway cluster. Its `timelines.jobs` is EMPTIED.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
}

/// Runs a benchmark and prints its figures.
pub async fn run(command: BenchCommand, _settings: &Settings) -> anyhow::Result<()> {
    match command {
        BenchCommand::Queue(params) => queue(params).await,
        BenchCommand::Rate(params) => crate::bench_rate::run(params).await,
        BenchCommand::Ingest(params) => crate::bench_ingest::run(params).await,
    }
}

async fn queue(params: QueueBench) -> anyhow::Result<()> {
    let throwaway = match &params.database_url {
        Some(_) => None,
        None => Some(Throwaway::start().await?),
    };
    let url = match (&params.database_url, &throwaway) {
        (Some(url), _) => url.clone(),
        (None, Some(t)) => t.url.clone(),
        (None, None) => unreachable!("a throwaway cluster exists when no URL is given"),
    };
    let pool = db::connect(&url, 40).await?;
    db::migrate(&pool).await?;
    let settings: (String, String) =
        sqlx::query_as("SELECT current_setting('fsync'), current_setting('synchronous_commit')")
            .fetch_one(&pool)
            .await?;
    println!(
        "queue benchmark: fsync={}, synchronous_commit={}, {} cores",
        settings.0,
        settings.1,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );

    for &n in &params.jobs {
        reset(&pool).await?;
        let t = Instant::now();
        q::enqueue_noops(&pool, n, q::noop_payload()).await?;
        report(
            &format!("enqueue {n}: one INSERT ... SELECT"),
            n,
            t.elapsed(),
        );

        let batched = WorkerConfig {
            concurrency: 1000,
            claim_batch_size: 1000,
            completion_batch_size: 5000,
            ..bench_worker_config()
        };
        let elapsed = drain(&pool, n, vec![batched.clone()], NoopHandler::default()).await?;
        report(
            &format!("claim+complete {n}: batched (1 worker, batches of 1000)"),
            n,
            elapsed,
        );

        // The same drain with the queue spread over three workspaces (80/15/5 %, the big one
        // oldest) and a worker serving all three: the round-robin claim.
        reset(&pool).await?;
        let spread = enqueue_spread(&pool, n).await?;
        let elapsed = drain(&pool, n, vec![batched], NoopHandler::for_workspaces(spread)).await?;
        report(
            &format!("claim+complete {n}: batched, fair over 3 workspaces (80/15/5 %)"),
            n,
            elapsed,
        );

        reset(&pool).await?;
        let elapsed = enqueue_one_by_one(&pool, n, 16).await?;
        report(
            &format!("enqueue {n}: one timelines.enqueue() call per job, 16 connections"),
            n,
            elapsed,
        );

        let single = WorkerConfig {
            concurrency: 4,
            claim_batch_size: 1,
            completion_batch_size: 1,
            ..bench_worker_config()
        };
        let elapsed = drain(
            &pool,
            n,
            vec![single; params.single_workers],
            NoopHandler::default(),
        )
        .await?;
        report(
            &format!(
                "claim+complete {n}: one job per claim and per completion ({} workers)",
                params.single_workers
            ),
            n,
            elapsed,
        );
    }

    for &depth in &params.depths {
        reset(&pool).await?;
        q::enqueue_noops(&pool, depth, q::noop_payload()).await?;
        sqlx::query("VACUUM ANALYZE timelines.jobs")
            .execute(&pool)
            .await?;
        let (p50, p99) = claim_latency(&pool, params.samples, None).await?;
        println!(
            "claim latency with {depth:>9} queued: p50 {:>7.3} ms  p99 {:>7.3} ms  ({} claims of one job)",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            params.samples
        );
        // The fair claim with the whole backlog in one workspace and a second one to interleave.
        let names = bench_workspaces(&pool).await?;
        sqlx::query("UPDATE timelines.jobs SET workspace = $1")
            .bind(&names[0])
            .execute(&pool)
            .await?;
        sqlx::query("VACUUM ANALYZE timelines.jobs")
            .execute(&pool)
            .await?;
        let (p50, p99) = claim_latency(&pool, params.samples, Some(&names[..2])).await?;
        println!(
            "fair claim latency, {depth:>9} queued in one of 2 workspaces: p50 {:>7.3} ms  p99 {:>7.3} ms",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
        );
    }
    reset(&pool).await?;
    pool.close().await;
    drop(throwaway);
    Ok(())
}

fn bench_worker_config() -> WorkerConfig {
    WorkerConfig {
        poll_interval: Duration::from_millis(50),
        ..WorkerConfig::default()
    }
}

fn report(what: &str, n: i64, elapsed: Duration) {
    println!(
        "{what:<78} {:>10.0} jobs/s  ({:.2} s)",
        n as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
}

async fn reset(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query("TRUNCATE timelines.jobs").execute(pool).await?;
    Ok(())
}

/// Runs `configs.len()` workers until `n` jobs have succeeded; returns the time it took.
async fn drain(
    pool: &PgPool,
    n: i64,
    configs: Vec<WorkerConfig>,
    handler: NoopHandler,
) -> anyhow::Result<Duration> {
    let shutdown = Shutdown::new();
    let started = Instant::now();
    let mut stats = Vec::new();
    let mut handles = Vec::new();
    for config in configs {
        let worker = Worker::new(
            pool.clone(),
            WorkerConfig {
                id: crate::queue::new_worker_id(),
                ..config
            },
            Arc::new(handler.clone()),
        );
        stats.push(worker.stats());
        handles.push(tokio::spawn(worker.run(shutdown.clone())));
    }
    loop {
        let done: u64 = stats
            .iter()
            .map(|s| s.completed.load(Ordering::Relaxed))
            .sum();
        if done >= n as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = started.elapsed();
    shutdown.begin();
    for handle in handles {
        handle.await??;
    }
    let succeeded: i64 =
        sqlx::query_scalar("SELECT count(*) FROM timelines.jobs WHERE state = 'succeeded'")
            .fetch_one(pool)
            .await?;
    anyhow::ensure!(
        succeeded == n,
        "expected {n} succeeded jobs, found {succeeded}"
    );
    Ok(elapsed)
}

async fn enqueue_one_by_one(pool: &PgPool, n: i64, connections: i64) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..connections {
        let pool = pool.clone();
        let count = n / connections + i64::from(c < n % connections);
        tasks.spawn(async move {
            let job = q::NewJob::new("noop", q::noop_payload());
            for _ in 0..count {
                q::enqueue(&pool, &job).await?;
            }
            Ok::<_, sqlx::Error>(())
        });
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    Ok(started.elapsed())
}

/// The three workspaces the fair-claim figures use (created if missing).
async fn bench_workspaces(pool: &PgPool) -> anyhow::Result<Vec<String>> {
    let names: Vec<String> = (1..=3).map(|i| format!("bench-{i}")).collect();
    sqlx::query(
        "INSERT INTO timelines.workspaces (name, api_url, rate_limit_per_minute, monthly_api_calls)
         SELECT name, 'https://bench.invalid', 50, 200000 FROM unnest($1::text[]) AS name
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(&names)
    .execute(pool)
    .await?;
    Ok(names)
}

/// Enqueues `n` no-op jobs over the three bench workspaces: 80 % in the first (queued earliest),
/// 15 % in the second, the rest in the third. Returns the workspace names.
async fn enqueue_spread(pool: &PgPool, n: i64) -> anyhow::Result<Vec<String>> {
    let names = bench_workspaces(pool).await?;
    let big = n * 80 / 100;
    let middle = n * 15 / 100;
    for (name, count) in names.iter().zip([big, middle, n - big - middle]) {
        sqlx::query(
            "INSERT INTO timelines.jobs (kind, payload, workspace)
             SELECT 'noop', '{}', $1 FROM generate_series(1, $2)",
        )
        .bind(name)
        .bind(count)
        .execute(pool)
        .await?;
    }
    Ok(names)
}

/// Times `samples` claims of one job (each claimed job is completed, outside the timing), over
/// `workspaces` when given (the fair claim when there are several).
async fn claim_latency(
    pool: &PgPool,
    samples: usize,
    workspaces: Option<&[String]>,
) -> anyhow::Result<(Duration, Duration)> {
    let kinds = vec!["noop".to_owned()];
    let claimer = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(q::claim_connect_options(&pool.connect_options()))
        .await?;
    let worker = "bench-latency";
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        let scope = q::ClaimScope {
            kinds: &kinds,
            workspaces,
        };
        let jobs = q::claim_scoped(&claimer, worker, 1, Duration::from_secs(30), scope).await?;
        times.push(t.elapsed());
        let job = jobs
            .first()
            .context("the queue ran dry while measuring claim latency")?;
        q::complete(
            pool,
            worker,
            &[q::Finished {
                id: job.id,
                attempt: job.attempts,
                completion: q::Completion::Succeeded(None),
            }],
        )
        .await?;
    }
    times.sort();
    let at = |p: f64| times[((times.len() as f64 - 1.0) * p).round() as usize];
    Ok((at(0.5), at(0.99)))
}

/// A durable cluster in a temporary directory, removed afterwards.
pub(crate) struct Throwaway {
    root: std::path::PathBuf,
    pub(crate) url: String,
    _server: crate::pg::ChildServer,
}

impl Throwaway {
    pub(crate) async fn start() -> anyhow::Result<Self> {
        tokio::task::spawn_blocking(|| {
            let root =
                std::env::temp_dir().join(format!("timelines-sync-bench-{}", std::process::id()));
            std::fs::create_dir_all(&root)?;
            let settings = vec![("max_connections".to_owned(), "300".to_owned())];
            let cluster = Cluster::open(
                &root,
                ClusterOptions {
                    durable: true,
                    settings,
                },
            )?;
            let server = cluster.spawn_child()?;
            let url = cluster.url(server.port(), "postgres");
            Ok(Self {
                root,
                url,
                _server: server,
            })
        })
        .await?
    }
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        // Fields drop after this body: stop the server before its files go.
        self._server.stop();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
