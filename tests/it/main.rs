//! The integration tests: one binary, one private Postgres cluster, a fresh database per test.

mod cli;
mod dispatcher;
mod helpers;
mod limiter;
mod maintenance;
mod queue;
mod quota;
mod shutdown;
mod sql_api;
