//! The `timelines-sync` binary: parse the command line and hand over to the library.

use clap::Parser;

// mimalloc: a poll of a large source allocates and frees many small values per record (JSON,
// template contexts, bind arrays), on which glibc's malloc spent a third of the poller's CPU.
// Without transparent huge pages (`no_thp`), its memory use stays that of glibc's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = timelines_sync::cli::Cli::parse();
    match timelines_sync::cli::execute(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // `{:#}` prints the whole context chain on one line: "failed to X: because Y".
            // Scrubbed like the log: another crate's error may quote a URL with its password.
            let message = format!("{error:#}");
            eprintln!(
                "error: {}",
                timelines_sync::telemetry::redact::scrub(&message)
            );
            std::process::ExitCode::FAILURE
        }
    }
}
