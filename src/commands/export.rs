//! `receipt-exporter export parquet --since DATE --until DATE`: rewrites the Parquet partitions
//! of those capture dates from Postgres (each day swapped in atomically with its manifest on the
//! local disk, each listed file rewritten under its own key in an object store:
//! [`LakeTarget::export_days`]), under the warehouse lock (no repair or other rewrite
//! interleaves).

use crate::cli::{ExportCommand, ExportParquetArgs};
use crate::exit::{self, Exit};
use crate::settings::Settings;
use crate::sink::target::Exported;
use crate::sink::{Access, LakeTarget};
use chrono::NaiveDate;

pub async fn run(settings: &Settings, cmd: ExportCommand) -> anyhow::Result<Exit> {
    match cmd {
        ExportCommand::Parquet(args) => parquet(settings, args).await,
    }
}

async fn parquet(settings: &Settings, args: ExportParquetArgs) -> anyhow::Result<Exit> {
    let since = date("--since", args.since.as_deref())?;
    let until = date("--until", args.until.as_deref())?;
    if until < since {
        return Err(exit::usage(format!(
            "export parquet: --until {until} is before --since {since}"
        )));
    }
    let pool = super::connect_migrated(settings).await?;
    check_retired(&pool, since, until).await?;
    // Judged before the lake is claimed (or its identity recorded): a refusal changes nothing.
    let (lake, format) = (&settings.lake, settings.table_format);
    LakeTarget::open(&pool, lake, format, Access::Read)
        .await?
        .exportable(args.relocate)?;
    let target = LakeTarget::open(&pool, lake, format, Access::Write).await?;
    // The warehouse lock is a session lock: it needs a connection of its own, not a pooled one.
    let lock = super::warehouse_lock(settings).await?;
    let exported = target
        .export_days(&pool, (since, until), args.relocate)
        .await;
    lock.release().await;
    say(&exported?, &target, (since, until), args.relocate);
    Ok(Exit::Success)
}

/// What `export parquet` did, one line per day and a total.
fn say(
    exported: &Exported,
    target: &LakeTarget,
    (since, until): (NaiveDate, NaiveDate),
    relocate: bool,
) {
    match exported {
        Exported::Swapped { days, elsewhere } => {
            let mut rows = 0;
            for day in days {
                rows += day.rows;
                println!(
                    "{}: {} rows in {} file(s), replacing {} file(s)",
                    day.capture_date,
                    day.rows,
                    day.files.len(),
                    day.replaced
                );
            }
            println!(
                "rebuilt {} day(s) from {since} to {until} ({rows} rows) in {target}; days with no rows and no files were skipped",
                days.len(),
            );
            if relocate && *elsewhere > 0 {
                println!(
                    "the manifest now lists these days' files in {target}; {elsewhere} file(s) of other days it lists are not there: \
                     rebuild those days too, and give runs this EXPORT_PARQUET_DIR"
                );
            }
        }
        Exported::InPlace(days) => {
            let mut rows = 0;
            for (day, files, day_rows) in days {
                rows += day_rows;
                println!("{day}: {day_rows} rows rewritten in place in {files} file(s)");
            }
            println!(
                "rewrote {} day(s) from {since} to {until} ({rows} rows) in {target}: each listed file under its own key; \
                 batches not yet in the lake are written by the next run's repair",
                days.len(),
            );
        }
    }
}

/// Retention removed some runs' rows from Postgres: their lake files are all that is left, so a
/// day holding any of them is refused, not rebuilt without them.
async fn check_retired(
    pool: &sqlx::PgPool,
    since: NaiveDate,
    until: NaiveDate,
) -> anyhow::Result<()> {
    let retired = crate::ops::retention::retired_days(pool, since, until).await?;
    if retired.is_empty() {
        return Ok(());
    }
    let days: Vec<String> = retired
        .iter()
        .map(|(day, runs)| {
            let runs: Vec<String> = runs.iter().map(i64::to_string).collect();
            format!("{day} (runs {})", runs.join(", "))
        })
        .collect();
    Err(exit::usage(format!(
        "export parquet: retention removed rows of these days from Postgres, so they cannot be rebuilt and their files stay as they are: {}; choose dates outside them",
        days.join(", ")
    )))
}

/// A capture date flag: `YYYY-MM-DD`, required.
fn date(flag: &str, raw: Option<&str>) -> anyhow::Result<NaiveDate> {
    let Some(raw) = raw else {
        return Err(exit::usage(format!(
            "export parquet: {flag} DATE is required (YYYY-MM-DD)"
        )));
    };
    NaiveDate::parse_from_str(raw.trim(), "%Y-%m-%d").map_err(|_| {
        exit::usage(format!(
            "export parquet: {flag} '{raw}' is not a date: expected YYYY-MM-DD"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_checked_with_the_flag_named() {
        assert_eq!(
            date("--since", Some("2026-11-25")).unwrap(),
            NaiveDate::from_ymd_opt(2026, 11, 25).unwrap()
        );
        let e = date("--until", Some("25.11.2026")).unwrap_err().to_string();
        assert!(e.contains("--until") && e.contains("YYYY-MM-DD"), "{e}");
        let e = date("--since", None).unwrap_err().to_string();
        assert!(e.contains("--since DATE is required"), "{e}");
    }
}
