//! The binary: parse, run the command (which sets up logging once its settings are
//! validated), map the outcome to an exit code.

use clap::{CommandFactory, FromArgMatches};
use receipt_exporter::cli::Cli;
use receipt_exporter::{commands, exit};
use std::process::ExitCode;

fn main() -> ExitCode {
    receipt_exporter::memory::tune_allocator();
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    match runtime.block_on(commands::dispatch(cli)) {
        Ok(outcome) => ExitCode::from(outcome.code()),
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(exit::code_for(&err).code())
        }
    }
}
