//! Logs and metrics.
//!
//! Logs: `tracing` to stderr, level from `RUST_LOG` (default `info`), human-readable text on a
//! terminal and one JSON object per line otherwise (`[log] format` / `--log-format`: `auto`,
//! `text`, `json`); every line passes through [`redact`]. Spans: `job` (job_id, kind, workspace,
//! attempt) around each attempt, `poll` (source) around each poll run.
//!
//! Metrics: [`metrics`] (recorded in-process, where things happen) and `scrape` (read from the
//! database when `/metrics` is scraped).

pub mod metrics;
pub mod redact;
pub mod scrape;

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// The format actually written, once `auto` is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Human-readable lines (with colours when `ansi`).
    Text {
        /// Colour codes: only on a terminal.
        ansi: bool,
    },
    /// One JSON object per line.
    Json,
}

/// Decides the format: `auto` is text on a terminal and JSON otherwise (a pipe, a file, journald,
/// a container's log collector).
pub fn resolve(format: LogFormat, stderr_is_terminal: bool) -> Written {
    match format {
        LogFormat::Json => Written::Json,
        LogFormat::Text => Written::Text {
            ansi: stderr_is_terminal,
        },
        LogFormat::Auto if stderr_is_terminal => Written::Text { ansi: true },
        LogFormat::Auto => Written::Json,
    }
}

/// The filter from `RUST_LOG`, else `info` (sqlx's per-statement lines only from `warn`).
pub fn env_filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"))
}

/// The service's subscriber writing to `writer` through [`redact::Redacting`]. JSON lines carry
/// `timestamp`, `level`, `target`, `message` and the event's fields at the top level, the
/// innermost span as `span` and every enclosing span as `spans`.
pub fn subscriber<W>(
    written: Written,
    filter: EnvFilter,
    writer: W,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(redact::Redacting(writer));
    match written {
        Written::Text { ansi } => Box::new(builder.with_ansi(ansi).finish()),
        Written::Json => Box::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(true)
                .finish(),
        ),
    }
}

/// Installs the global subscriber on stderr once; later calls (tests) are no-ops.
pub fn init(format: LogFormat) {
    let written = resolve(format, std::io::stderr().is_terminal());
    // try_init also forwards the `log` crate's records (rustls, ...) into the same writer.
    let _ = subscriber(written, env_filter(), std::io::stderr).try_init();
}
