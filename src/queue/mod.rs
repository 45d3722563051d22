//! The queue engine: jobs, what handlers return, retry backoff, and the worker that runs them.

pub mod backoff;
mod job;
mod noop;
mod outcome;
mod worker;

pub use job::{Job, JobState};
pub use noop::NoopHandler;
pub use outcome::Outcome;
pub(crate) use worker::listen;
pub use worker::{Handler, NOTIFY_CHANNEL, Worker, WorkerConfig, WorkerStats, new_worker_id};
