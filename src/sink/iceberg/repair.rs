//! Repairing a run in Iceberg mode, as its new owner (under its fence): the run's data files
//! that no commit names are removed, and its batches that the table does not hold yet are
//! written again from Postgres (the source of truth) and committed, one file per capture date
//! and part, as the run itself would have.

use super::{commit, files, IcebergTarget};
use crate::sink::manifest;
use crate::sink::rebuild::RepairReport;
use crate::sink::{Fence, SinkError, WriteBatch};
use std::time::Duration;

/// How long a repair's commit rides out a lost connection.
const RECONNECT: Duration = Duration::from_secs(30);

/// Brings the table up to Postgres for one run (see the module header).
pub async fn rebuild_run(
    pool: &sqlx::PgPool,
    target: &IcebergTarget,
    fence: Fence,
) -> Result<RepairReport, SinkError> {
    let run_id = fence.run_id;
    let run_date = manifest::run_date(pool, run_id)
        .await?
        .ok_or(SinkError::UnknownRun(run_id))?;
    let dates = manifest::capture_dates(pool, run_id).await?;
    let known = manifest::run_paths(pool, run_id).await?;
    let removed = files::remove_run_strays(&target.lake, run_id, &dates, &known).await?;
    let next_part = manifest::next_part(pool, run_id).await?;
    let mut writer = target.run_writer(run_id, next_part)?;
    let mut cursor = pool
        .begin()
        .await
        .map_err(SinkError::pg("starting the repair read"))?;
    manifest::declare_unexported_rows(&mut cursor, run_date, run_id).await?;
    let mut finished = Vec::new();
    let mut batch: Option<WriteBatch> = None;
    loop {
        let rows = manifest::fetch_rows(&mut cursor).await?;
        if rows.is_empty() {
            break;
        }
        for row in rows {
            if let Some(full) = manifest::regroup(&mut batch, row) {
                finished.extend(writer.append(&full).await?);
            }
        }
    }
    if let Some(last) = batch.take() {
        finished.extend(writer.append(&last).await?);
    }
    finished.extend(writer.finish().await?);
    cursor
        .rollback()
        .await
        .map_err(SinkError::pg("closing the repair read"))?;
    let mut committed = Vec::new();
    for file in &finished {
        committed.push(commit::publish(pool, &target.lake, fence, file, RECONNECT).await?);
    }
    Ok(RepairReport {
        run_id,
        removed: removed.into_iter().map(Into::into).collect(),
        rows: committed.iter().map(|f| f.row_count).sum(),
        files: committed,
    })
}
