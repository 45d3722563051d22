//! Pollers: read what changed in CRMs, helpdesks and internal databases, and turn it into jobs
//! by the rules in the configuration.
//!
//! - [`config`]: the `[sources.*]`, `[[rules]]` and `[policies]` keys;
//! - [`presets`]: vendor presets for the generic HTTP source;
//! - [`spec`]: the resolved, checked catalog of sources and rules;
//! - [`fetch`]: reading pages (HTTP and SQL);
//! - [`record`], [`phone`], [`template`], [`policy`]: reading records, phones, templates, quiet hours;
//! - [`engine`]: one run of a source (the incremental algorithm, rules, writes);
//! - [`scheduler`]: cron schedules, single-flight across instances;
//! - [`inbound`]: inbound rules (webhook events as records of the built-in `timelines` source).

pub mod config;
pub mod engine;
pub mod fetch;
pub mod inbound;
pub mod phone;
pub mod policy;
pub mod presets;
pub mod record;
pub mod report;
pub mod schedule;
pub mod scheduler;
pub mod spec;
pub mod template;
mod write;

pub use spec::Catalog;
