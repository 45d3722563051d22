//! The integration tests: one binary, one private Postgres cluster, a fresh database per test.

mod cli;
mod dispatcher;
mod fakes;
mod helpers;
mod http;
mod limiter;
mod maintenance;
mod ops;
mod queue;
mod quota;
mod roles;
mod shutdown;
mod sources;
mod sources_pitfalls;
mod sources_write;
mod sql_api;
mod vendors;
mod webhooks;
