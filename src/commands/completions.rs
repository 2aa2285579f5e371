//! `receipt-exporter completions SHELL` and `receipt-exporter man`: generated from the clap
//! definitions, so they never drift from the real flags.

use crate::cli::{Cli, CompletionsArgs};
use crate::exit::Exit;
use clap::CommandFactory;

/// Prints the completion script of `args.shell` on stdout.
pub fn completions(args: CompletionsArgs) -> anyhow::Result<Exit> {
    let mut cmd = Cli::command();
    clap_complete::generate(
        args.shell,
        &mut cmd,
        "receipt-exporter",
        &mut std::io::stdout(),
    );
    Ok(Exit::Success)
}

/// Prints the man page (roff) on stdout.
pub fn man() -> anyhow::Result<Exit> {
    let page = clap_mangen::Man::new(Cli::command());
    page.render(&mut std::io::stdout())?;
    Ok(Exit::Success)
}
