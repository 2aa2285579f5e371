//! Fencing: which process may still change a run's write batches and Parquet files.
//!
//! A run's writer holds a [`Fence`]: the run id and the epoch it got when it opened the run or
//! took it over. Taking a run over bumps `receipts.export_runs.epoch` in one statement
//! ([`take_over`] here, `ledger::mark_abandoned` for a run declared dead, a backfill's new
//! attempt). Every transaction that writes for a run first locks the run's row and checks the
//! epoch ([`check`]): it commits before a take-over (which waits for that row lock) or fails
//! after it, never in between. So a process that lost a run, however late it wakes up, can
//! change nothing its new owner changes. This module reads and bumps epochs; what a fenced
//! process does next is its caller's business.

use super::SinkError;
use sqlx::{PgConnection, PgPool};

/// The right to write for one run: its id and the epoch its writer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    pub run_id: i64,
    pub epoch: i64,
}

/// Locks the run's row until the end of the transaction on `conn` and checks that `fence`
/// still holds. A take-over waits for that transaction; one that happened before fails this.
pub async fn check(conn: &mut PgConnection, fence: Fence) -> Result<(), SinkError> {
    let row: Option<(i64, Option<String>)> = sqlx::query_as(
        "SELECT epoch, fenced_by FROM receipts.export_runs WHERE run_id = $1 FOR SHARE",
    )
    .bind(fence.run_id)
    .fetch_optional(conn)
    .await
    .map_err(SinkError::pg("checking the run's fence"))?;
    match row {
        None => Err(SinkError::UnknownRun(fence.run_id)),
        Some((epoch, _)) if epoch == fence.epoch => Ok(()),
        Some((_, by)) => Err(SinkError::Fenced {
            run_id: fence.run_id,
            by: by.unwrap_or_else(|| "another process".to_string()),
        }),
    }
}

/// What [`take_over`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakeOver {
    /// The run is ours now, under this fence.
    Taken(Fence),
    /// The run is `running`: its own process writes its files (or will be declared dead first).
    Running,
    /// A writer held the run's row past [`crate::db::LOCK_TIMEOUT`]: try again later.
    Busy,
}

/// Takes over a run that is not running, to rewrite its Parquet side: bumps its epoch, so
/// anyone still holding the old one (a fenced run waking up, a repair whose session died) is
/// fenced. `by` names the new owner in `fenced_by`.
pub async fn take_over(pool: &PgPool, run_id: i64, by: &str) -> Result<TakeOver, SinkError> {
    let mut conn = pool
        .acquire()
        .await
        .map_err(SinkError::pg("taking a run over"))?;
    let mut tx = crate::db::begin_with_lock_timeout(&mut conn)
        .await
        .map_err(SinkError::pg("taking a run over"))?;
    let bumped: sqlx::Result<Option<i64>> = sqlx::query_scalar(
        "UPDATE receipts.export_runs SET epoch = epoch + 1, fenced_by = $2
         WHERE run_id = $1 AND status <> 'running' RETURNING epoch",
    )
    .bind(run_id)
    .bind(by)
    .fetch_optional(&mut *tx)
    .await;
    let epoch = match bumped {
        Ok(Some(epoch)) => epoch,
        Err(e) if crate::db::is_lock_timeout(&e) => return Ok(TakeOver::Busy),
        Err(e) => return Err(SinkError::pg("taking a run over")(e)),
        Ok(None) => {
            let status: Option<String> =
                sqlx::query_scalar("SELECT status FROM receipts.export_runs WHERE run_id = $1")
                    .bind(run_id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(SinkError::pg("taking a run over"))?;
            return match status {
                None => Err(SinkError::UnknownRun(run_id)),
                Some(_) => Ok(TakeOver::Running),
            };
        }
    };
    tx.commit()
        .await
        .map_err(SinkError::pg("committing a run's take-over"))?;
    Ok(TakeOver::Taken(Fence { run_id, epoch }))
}
