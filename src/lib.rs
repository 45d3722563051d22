//! timelines-sync: CRM pollers → Postgres job queue → rate-limited dispatcher → TimelinesAI.
//!
//! # Layout
//! - [`cli`]: the command line (`run`, `migrate`, `status`, `db`, `bench`); `main.rs` only calls it.
//! - [`config`]: the one settings tree, loaded from TOML plus environment overrides and validated.
//! - [`pg`]: a private PostgreSQL cluster from the system binaries (zero-config default, tests).
//! - [`db`]: connecting, migrating, and all queue SQL ([`db::queue`]).
//! - [`timelines`]: the typed TimelinesAI client; [`simulator`]: a strict simulator of the API.
//! - [`dispatcher`]: runs each job kind against the API and mirrors results into SQL;
//!   [`apis`]: a client per workspace (or the simulator when a workspace has no token).
//! - [`queue`]: jobs, handler outcomes, backoff, and the [`queue::Worker`] engine that claims and runs them.
//! - [`maintenance`]: the rescuer (expired leases) and the pruner (finished jobs past retention).
//! - [`startup`]: wires the pieces into the running service; [`shutdown`]: two-stage stop.
//! - [`status`], [`bench`]: the `status` report and the queue benchmark.
//! - [`http`]: the service's HTTP listener (health; webhooks and metrics merge their routes in).
//! - [`webhooks`]: the webhook receiver, the processor applying its events, subscriptions.

pub mod apis;
pub mod bench;
pub mod bench_ingest;
pub mod bench_rate;
pub mod cli;
pub mod config;
pub mod db;
pub mod demo;
pub mod dispatcher;
pub mod http;
pub mod limiter;
pub mod maintenance;
pub mod pg;
pub mod queue;
pub mod shutdown;
pub mod simulator;
pub mod sources;
pub mod startup;
pub mod status;
pub mod telemetry;
pub mod timelines;
pub mod webhooks;
