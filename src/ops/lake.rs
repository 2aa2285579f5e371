//! `lake verify [--repair]`: the lake checked against the manifest, and with `--repair` what is
//! missing or damaged written again from Postgres. The checks and the snapshot files' repair are
//! the lake target's, the same for every caller ([`crate::sink::verify`],
//! [`LakeTarget::repair_snapshots`]); here the read-events files are added, whose writer is the
//! run's ([`crate::run::details::lake`]), and the read-progress files
//! ([`crate::sink::progress_lake`]). Nothing here prints.

use crate::sink::LakeTarget;
use chrono::NaiveDate;
use sqlx::PgPool;
use std::collections::BTreeMap;

pub use crate::sink::verify::{Finding, Listed, Problem, Report, RunRows, Table};

/// The whole check: presence and size, the row count in each footer, the unknown files.
pub async fn verify(pool: &PgPool, target: &LakeTarget) -> anyhow::Result<Report> {
    Ok(target.verify(pool).await?)
}

/// What [`repair`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Repaired {
    /// Capture dates of snapshots rebuilt from Postgres, with their rows.
    pub days: Vec<(NaiveDate, u64)>,
    /// Capture dates that cannot be rebuilt: retention removed these runs' rows from Postgres.
    pub gone: Vec<(NaiveDate, Vec<i64>)>,
    /// Runs whose read-events files were written again.
    pub read_event_runs: Vec<i64>,
    /// Read-events files of runs still running: their run writes them.
    pub skipped_running: Vec<i64>,
    /// Read-events files that cannot be written again: retention removed some of these runs'
    /// read events from Postgres.
    pub events_gone: Vec<i64>,
    /// Read-progress files written again from the change log (their paths; in Iceberg mode
    /// the lost data files replaced).
    pub progress_files: Vec<String>,
    /// Iceberg: the read progress's table created again after it was dropped, with every
    /// change row the log keeps (the data files committed).
    pub progress_recreated: Option<u64>,
    /// Stray uploads deleted from `_pending/`.
    pub uploads_removed: usize,
    /// Iceberg: lost data files replaced from Postgres in one overwrite commit (path, run,
    /// rows).
    pub replaced: Vec<(String, i64, u64)>,
    /// Iceberg: lost data files left as they are, with the reason and the fix.
    pub not_repaired: Vec<String>,
}

/// Rewrites the files of `report`'s findings from Postgres and deletes its stray uploads. The
/// caller holds the warehouse lock.
pub async fn repair(
    pool: &PgPool,
    target: &LakeTarget,
    report: &Report,
) -> anyhow::Result<Repaired> {
    let snapshots = target.repair_snapshots(pool, report).await?;
    let mut out = Repaired {
        days: snapshots.days,
        gone: snapshots.gone,
        uploads_removed: snapshots.uploads_removed,
        replaced: snapshots.replaced,
        not_repaired: snapshots.not_repaired,
        ..Default::default()
    };
    let mut event_dates: BTreeMap<i64, Vec<NaiveDate>> = BTreeMap::new();
    for f in report
        .findings
        .iter()
        .filter(|f| f.table == Table::ReadEvents)
    {
        event_dates
            .entry(f.file.run_id)
            .or_default()
            .push(f.file.capture_date);
    }
    for (run_id, dates) in event_dates {
        let status: String =
            sqlx::query_scalar("SELECT status FROM receipts.export_runs WHERE run_id = $1")
                .bind(run_id)
                .fetch_one(pool)
                .await?;
        if status == "running" {
            out.skipped_running.push(run_id);
            continue;
        }
        if crate::tracking::details::events_pruned(pool, run_id).await? {
            out.events_gone.push(run_id);
            continue;
        }
        // Forgotten first, so the run's export writes the file again under the same name (a
        // crash in between leaves an unrecorded file that the next run writes again).
        crate::tracking::details::forget_lake_files(pool, run_id, &dates).await?;
        crate::run::details::lake::export(pool, &target.lake(), run_id).await?;
        out.read_event_runs.push(run_id);
    }
    repair_progress(pool, target, report, &mut out).await?;
    Ok(out)
}

/// Writes the lost or damaged read-progress files again from the change log Postgres keeps.
/// Hive-style: forgotten first, then written as a run's end writes them (the same rows under
/// the same name). Iceberg: lost data files replaced in one overwrite commit
/// ([`crate::sink::iceberg::progress::replace`]); a dropped table created again and every
/// change row committed to it.
async fn repair_progress(
    pool: &PgPool,
    target: &LakeTarget,
    report: &Report,
    out: &mut Repaired,
) -> anyhow::Result<()> {
    use crate::sink::progress_lake::{self, Form};
    let paths: Vec<String> = report
        .findings
        .iter()
        .filter(|f| f.table == Table::Progress)
        .map(|f| f.file.path.clone())
        .collect();
    let Some(iceberg) = target.iceberg() else {
        if !paths.is_empty() {
            progress_lake::forget(pool, &paths).await?;
            progress_lake::export(pool, &Form::Hive(target.lake()), None).await?;
            out.progress_files = paths;
        }
        return Ok(());
    };
    if report.dropped.contains(&Table::Progress) {
        progress_lake::forget_all(pool).await?;
        let form = Form::Iceberg(Box::new(iceberg.lake.clone()));
        out.progress_recreated = Some(progress_lake::export(pool, &form, None).await?);
        return Ok(());
    }
    if !paths.is_empty() {
        let done = crate::sink::iceberg::progress::replace(&iceberg.lake, pool, &paths).await?;
        out.progress_files = done.replaced.into_iter().map(|(path, _, _)| path).collect();
        out.not_repaired.extend(done.not_repaired);
    }
    Ok(())
}
