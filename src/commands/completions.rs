//! `receipt-exporter completions SHELL` and `receipt-exporter man`: generated from the clap
//! definitions, so they never drift from the real flags.

use crate::cli::{Cli, CompletionsArgs};
use crate::exit::Exit;
use clap::CommandFactory;
use std::io::Write;

/// Prints the completion script of `args.shell` on stdout.
pub fn completions(args: CompletionsArgs) -> anyhow::Result<Exit> {
    let mut cmd = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "receipt-exporter", &mut script);
    print_all(&script)
}

/// Prints the man page (roff) on stdout.
pub fn man() -> anyhow::Result<Exit> {
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut page)?;
    print_all(&page)
}

/// Writes `bytes` to stdout. A reader that stops early (`| head`) closes the pipe: that is
/// not an error, the reader had what it wanted.
fn print_all(bytes: &[u8]) -> anyhow::Result<Exit> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(Exit::Success),
    }
}
