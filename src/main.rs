//! The `timelines-sync` binary: parse the command line and hand over to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = timelines_sync::cli::Cli::parse();
    match timelines_sync::cli::execute(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // `{:#}` prints the whole context chain on one line: "failed to X: because Y".
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
