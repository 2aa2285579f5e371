//! `receipt-exporter export parquet --since DATE --until DATE`: rewrites the Parquet partitions
//! of those capture dates from Postgres, each day swapped in atomically with its manifest,
//! under the warehouse lock (no repair or other rewrite interleaves).

use crate::cli::{ExportCommand, ExportParquetArgs};
use crate::exit::{self, Exit};
use crate::lake::Lake;
use crate::settings::Settings;
use crate::sink::manifest;
use chrono::NaiveDate;

pub async fn run(settings: &Settings, cmd: ExportCommand) -> anyhow::Result<Exit> {
    match cmd {
        ExportCommand::Parquet(args) => parquet(settings, args).await,
    }
}

/// Iceberg mode has no Hive-style days to rewrite: says what to do instead.
fn refuse_iceberg(settings: &Settings) -> anyhow::Result<()> {
    if settings.table_format == crate::settings::TableFormat::Iceberg {
        return Err(exit::usage(
            "export parquet rewrites Hive-style Parquet days, and EXPORT_TABLE_FORMAT is iceberg: \
             the Iceberg table is written by runs, each run's missing rows committed again from \
             Postgres by the next run's repair; compact a day with Spark's rewrite_data_files \
             (README, \"The Iceberg table\")",
        ));
    }
    Ok(())
}

async fn parquet(settings: &Settings, args: ExportParquetArgs) -> anyhow::Result<Exit> {
    refuse_iceberg(settings)?;
    let since = date("--since", args.since.as_deref())?;
    let until = date("--until", args.until.as_deref())?;
    if until < since {
        return Err(exit::usage(format!(
            "export parquet: --until {until} is before --since {since}"
        )));
    }
    let pool = super::connect_migrated(settings).await?;
    check_retired(&pool, since, until).await?;
    let dir = match &settings.lake {
        Lake::Local(dir) => dir,
        Lake::Remote(_) if args.relocate => {
            return Err(exit::usage(format!(
                "export parquet: --relocate moves a local lake's days to another directory; in an object store \
                 ({}) each listed file is rewritten in place under its own key: drop --relocate",
                settings.lake
            )))
        }
        Lake::Remote(remote) => {
            return rewrite_in_store(settings, &pool, remote, (since, until)).await
        }
    };
    check_directory(&pool, dir, args.relocate).await?;
    // The warehouse lock is a session lock: it needs a connection of its own, not a pooled one.
    let lock = super::warehouse_lock(settings).await?;
    let rebuilt = crate::sink::rebuild::rebuild_dates(&pool, dir, since, until).await;
    lock.release().await;
    let days = rebuilt?;
    let mut rows = 0;
    for day in &days {
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
        "rebuilt {} day(s) from {since} to {until} ({rows} rows) in {}; days with no rows and no files were skipped",
        days.len(),
        dir.display()
    );
    let (_, elsewhere) = presence(&pool, dir).await?;
    if args.relocate && elsewhere > 0 {
        println!(
            "the manifest now lists these days' files in {}; {elsewhere} file(s) of other days it lists are not there: \
             rebuild those days too, and give runs this EXPORT_PARQUET_DIR",
            dir.display()
        );
    }
    Ok(Exit::Success)
}

/// `export parquet` in an object store: each listed file of the days rewritten under its own
/// key (no directory to swap there), under the warehouse lock.
async fn rewrite_in_store(
    settings: &Settings,
    pool: &sqlx::PgPool,
    remote: &crate::lake::Remote,
    (since, until): (NaiveDate, NaiveDate),
) -> anyhow::Result<Exit> {
    crate::sink::remote::check_owner(pool, remote, true).await?;
    let lock = super::warehouse_lock(settings).await?;
    let done = crate::sink::remote::rewrite_days(pool, remote, since, until).await;
    lock.release().await;
    let days = done?;
    let mut rows = 0;
    for (day, files, day_rows) in &days {
        rows += day_rows;
        println!("{day}: {day_rows} rows rewritten in place in {files} file(s)");
    }
    println!(
        "rewrote {} day(s) from {since} to {until} ({rows} rows) in {}: each listed file under its own key; \
         batches not yet in the lake are written by the next run's repair",
        days.len(),
        settings.lake
    );
    Ok(Exit::Success)
}

/// The manifest does not say which directory its files are in: a rebuild into a directory
/// that holds none of them would silently move the rebuilt days there. That is what a lost
/// disk or a moving warehouse needs, and a mistake otherwise, so it takes `--relocate`.
async fn check_directory(
    pool: &sqlx::PgPool,
    dir: &std::path::Path,
    relocate: bool,
) -> anyhow::Result<()> {
    let (listed, missing) = presence(pool, dir).await?;
    if listed == 0 || missing < listed || relocate {
        return Ok(());
    }
    Err(exit::usage(format!(
        "export parquet: {} holds none of the {} file(s) the manifest lists: if the warehouse's disk \
         was lost or the warehouse moves there, add --relocate (the manifest then lists the rebuilt \
         days' files there); otherwise set EXPORT_PARQUET_DIR to the warehouse's directory",
        dir.display(),
        listed
    )))
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
        "export parquet: retention removed rows of these days from Postgres, so they cannot be          rebuilt and their files stay as they are: {}; choose dates outside them",
        days.join(", ")
    )))
}

/// How many files the manifest lists, and how many of them are not in `dir`.
async fn presence(pool: &sqlx::PgPool, dir: &std::path::Path) -> anyhow::Result<(usize, usize)> {
    let listed = manifest::listed_paths(pool).await?;
    let missing = listed.iter().filter(|p| !dir.join(p).is_file()).count();
    Ok((listed.len(), missing))
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
