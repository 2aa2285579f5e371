//! `receipt-exporter progress rebuild`: recomputes the read-progress table from the snapshots
//! Postgres holds ([`crate::sink::progress::rebuild`]) and says what it changed and kept.

use crate::cli::ProgressCommand;
use crate::exit::Exit;
use crate::settings::Settings;
use crate::sink::progress::{self, Rebuilt};
use crate::text::count;

pub async fn run(settings: &Settings, cmd: ProgressCommand) -> anyhow::Result<Exit> {
    match cmd {
        ProgressCommand::Rebuild => rebuild(settings).await,
    }
}

async fn rebuild(settings: &Settings) -> anyhow::Result<Exit> {
    let pool = super::connect_migrated(settings).await?;
    let done = progress::rebuild(&pool).await.map_err(|e| {
        anyhow::anyhow!(
            "while recomputing receipts.message_read_progress: {e} (the table is as it was; \
             `receipt-exporter doctor` checks the role's rights)"
        )
    })?;
    println!("{}", told(done));
    Ok(Exit::Success)
}

/// The command's one line.
pub fn told(done: Rebuilt) -> String {
    let kept = match done.kept {
        0 => String::new(),
        n => format!(
            "; kept {} as they were: retention removed their messages' earlier snapshots",
            count(n, "row", "rows")
        ),
    };
    format!(
        "read progress recomputed from the snapshots: {} changed{kept}",
        count(done.changed, "row", "rows")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_says_what_changed_and_what_was_kept() {
        let line = told(Rebuilt {
            changed: 1,
            kept: 0,
        });
        assert_eq!(
            line,
            "read progress recomputed from the snapshots: 1 row changed"
        );
        let line = told(Rebuilt {
            changed: 0,
            kept: 2,
        });
        assert!(
            line.ends_with(
                "; kept 2 rows as they were: retention removed their messages' earlier snapshots"
            ),
            "{line}"
        );
    }
}
