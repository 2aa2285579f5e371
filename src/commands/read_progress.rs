//! `receipt-exporter progress rebuild`: recomputes the read-progress table from the snapshots
//! Postgres holds ([`crate::sink::progress::rebuild`]), says what it changed and kept, and
//! writes the lake's change rows of what it changed ([`crate::sink::progress_lake`]).

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
    // The lake's change rows follow: the files the rebuild made due, written as a run's end
    // writes them (the next run's end writes them when the lake cannot be written now).
    match write_lake(settings, &pool).await {
        Ok(0) => {}
        Ok(n) => println!(
            "read progress: {} of change rows written to the lake",
            count(n, "file", "files")
        ),
        Err(e) => eprintln!(
            "warning: the lake's read-progress change rows were not written (the next run \
             writes them): {e:#}"
        ),
    }
    Ok(Exit::Success)
}

/// Writes the due read-progress files to the runs' lake, checked to be this database's.
async fn write_lake(settings: &Settings, pool: &sqlx::PgPool) -> anyhow::Result<u64> {
    use crate::sink::progress_lake::{self, Form};
    use crate::sink::{Access, LakeTarget};
    let due = progress_lake::due_files(pool, None).await?;
    if due.is_empty() {
        return Ok(0);
    }
    LakeTarget::open(pool, &settings.lake, settings.table_format, Access::Write).await?;
    let form = Form::of(&settings.lake, settings.table_format)?;
    Ok(progress_lake::export(pool, &form, None).await?)
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
