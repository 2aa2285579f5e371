//! The manifest: the Postgres side of the Parquet warehouse, every statement of it (the
//! rebuild machinery around them is [`super::rebuild`]).
//!
//! A Parquet file is part of the warehouse exactly when its row is in `receipts.parquet_files`,
//! and `receipts.write_batches.parquet_file_id` says which file holds each batch (NULL: not yet
//! in Parquet). A run's file is renamed into place and recorded in one transaction that holds
//! the run's fence ([`publish`]): only the run's current owner can put a file in place, and a
//! take-over waits until such a transaction ends. Files are fsynced before their row commits,
//! so after a crash the manifest never names a missing file; the reverse (a renamed file never
//! recorded, a leftover temporary file, a batch never exported) is what
//! [`super::target::LakeTarget::rebuild_run`]
//! repairs, as the run's new owner. Serialising repairs ([`super::warehouse`]) is the caller's
//! job.

use super::parquet::{blocking, CommittedFile, SealedFile};
use super::{fence, Fence, SinkError, SnapshotRow, WriteBatch};
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{PgConnection, PgPool};
use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

/// The rebuild machinery's entry points, re-exported under their former path
/// (`manifest::rebuild_dates`, ...) so callers written against it still resolve.
pub use super::rebuild::{rebuild_dates, DayReport, RepairReport};

/// Records a file already in place and points its batches at it, in one transaction that
/// checks the run's fence. Repeating the call for the same file changes nothing and returns
/// the same id.
pub async fn record_file(
    pool: &PgPool,
    fence: Fence,
    file: &CommittedFile,
) -> Result<i64, SinkError> {
    let mut tx = pool
        .begin()
        .await
        .map_err(SinkError::pg("starting a manifest transaction"))?;
    fence::check(&mut tx, fence).await?;
    let file_id = record_file_in(&mut tx, fence.run_id, file).await?;
    tx.commit()
        .await
        .map_err(SinkError::pg("committing a manifest row"))?;
    Ok(file_id)
}

/// Puts a run's sealed file into a lake on the local disk: in one transaction, checks the run's
/// fence (locking the run's row), renames the file into place and records it. A take-over
/// waits for this transaction, so a file is either in place and recorded before it, or never
/// renamed. Connection failures are retried for up to `bound`; a retry after the rename only
/// records.
///
/// When the run was fenced, a file not yet renamed is dropped (its temporary file removed);
/// one renamed by an attempt whose commit failed stays where it is for the new owner's
/// sweep: by then the new owner may use that name for a file of its own.
///
/// A lake in an object store has no rename: there the file goes through
/// [`super::remote::publish`] (upload under `_pending/`, record, then copy into place); the
/// lake's form picks ([`super::target::LakeTarget::publish`]).
pub async fn publish(
    pool: &PgPool,
    fence: Fence,
    file: SealedFile,
    bound: std::time::Duration,
) -> Result<CommittedFile, SinkError> {
    // Each attempt takes the file and hands it back: a retry knows whether it was renamed.
    let slot = std::sync::Mutex::new(Some(file));
    let attempt = || {
        let slot = &slot;
        async move {
            let file = slot
                .lock()
                .unwrap()
                .take()
                .expect("handed back by the last attempt");
            let (file, outcome) = publish_once(pool, fence, file).await;
            *slot.lock().unwrap() = Some(file);
            outcome
        }
    };
    super::postgres::retry_for(bound, SinkError::is_retryable, attempt).await?;
    let file = slot.into_inner().unwrap().expect("handed back");
    Ok(file.into_committed())
}

/// One attempt of [`publish`]; hands the file back with the outcome.
async fn publish_once(
    pool: &PgPool,
    fence: Fence,
    file: SealedFile,
) -> (SealedFile, Result<(), SinkError>) {
    let mut tx = match pool.begin().await {
        Ok(tx) => tx,
        Err(e) => {
            return (
                file,
                Err(SinkError::pg("starting a manifest transaction")(e)),
            )
        }
    };
    if let Err(e) = fence::check(&mut tx, fence).await {
        return (file, Err(e));
    }
    if let Err(e) = check_name_free(&mut tx, fence.run_id, file.info()).await {
        return (file, Err(e));
    }
    let (file, renamed) = blocking(move || {
        let mut file = file;
        let renamed = file.rename_into_place();
        (file, renamed)
    })
    .await;
    if let Err(e) = renamed {
        return (file, Err(e));
    }
    crate::crashpoint::hit("after_rename").await;
    if let Err(e) = record_file_in(&mut tx, fence.run_id, file.info()).await {
        return (file, Err(e));
    }
    let committed = tx
        .commit()
        .await
        .map_err(SinkError::pg("committing a manifest row"));
    (file, committed)
}

/// Records a run's file uploaded under `pending` (not yet at its final key) and points its
/// batches at it, in one transaction that checks the run's fence. Repeating it changes nothing.
pub async fn record_pending(
    pool: &PgPool,
    fence: Fence,
    file: &CommittedFile,
    pending: &str,
) -> Result<i64, SinkError> {
    let mut tx = pool
        .begin()
        .await
        .map_err(SinkError::pg("starting a manifest transaction"))?;
    fence::check(&mut tx, fence).await?;
    check_name_free(&mut tx, fence.run_id, file).await?;
    let file_id = record_file_in(&mut tx, fence.run_id, file).await?;
    sqlx::query("UPDATE receipts.parquet_files SET pending_key = $2 WHERE file_id = $1")
        .bind(file_id)
        .bind(pending)
        .execute(&mut *tx)
        .await
        .map_err(SinkError::pg("recording a file's pending upload"))?;
    tx.commit()
        .await
        .map_err(SinkError::pg("committing a manifest row"))?;
    Ok(file_id)
}

/// Marks a file as at its final key (its pending object copied there).
pub async fn clear_pending(pool: &PgPool, file_id: i64) -> Result<(), SinkError> {
    sqlx::query("UPDATE receipts.parquet_files SET pending_key = NULL WHERE file_id = $1")
        .bind(file_id)
        .execute(pool)
        .await
        .map_err(SinkError::pg("marking a file as in place"))?;
    Ok(())
}

/// A recorded file whose copy to its final key may not have happened.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PendingFile {
    pub file_id: i64,
    pub path: String,
    pub pending_key: String,
}

/// The run's recorded files still waiting for their copy to the final key.
pub async fn pending_files(pool: &PgPool, run_id: i64) -> Result<Vec<PendingFile>, SinkError> {
    sqlx::query_as(
        "SELECT file_id, path, pending_key FROM receipts.parquet_files
         WHERE run_id = $1 AND pending_key IS NOT NULL ORDER BY file_id",
    )
    .bind(run_id)
    .fetch_all(pool)
    .await
    .map_err(SinkError::pg("listing the run's pending files"))
}

/// Forgets a recorded file that never reached the lake (its pending object lost): its batches
/// become unexported again, for the repair to write anew. Fenced.
pub async fn drop_file(pool: &PgPool, fence: Fence, file_id: i64) -> Result<(), SinkError> {
    let mut tx = pool
        .begin()
        .await
        .map_err(SinkError::pg("starting a manifest transaction"))?;
    fence::check(&mut tx, fence).await?;
    replace_manifest(&mut tx, &[file_id], &[]).await?;
    tx.commit()
        .await
        .map_err(SinkError::pg("dropping a lost file from the manifest"))
}

/// Fails when the file's final name is already recorded for rows other than its own (recorded
/// by an earlier attempt of the same publish is fine): renaming would replace a file the
/// manifest counts on.
async fn check_name_free(
    conn: &mut PgConnection,
    run_id: i64,
    file: &CommittedFile,
) -> Result<(), SinkError> {
    let recorded: Option<bool> = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM receipts.write_batches b
                        WHERE b.parquet_file_id = f.file_id AND b.run_id = $2
                          AND b.batch_no = ANY($3))
         FROM receipts.parquet_files f WHERE f.path = $1",
    )
    .bind(&file.relative_path)
    .bind(run_id)
    .bind(&file.batch_nos)
    .fetch_optional(conn)
    .await
    .map_err(SinkError::pg("looking up a Parquet file's name"))?;
    match recorded {
        Some(false) => Err(SinkError::AlreadyRecorded {
            path: file.relative_path.clone(),
        }),
        _ => Ok(()),
    }
}

/// Records a file and points its batches at it, inside the caller's transaction (which has
/// checked the run's fence); returns its id.
pub(crate) async fn record_file_in(
    conn: &mut PgConnection,
    run_id: i64,
    file: &CommittedFile,
) -> Result<i64, SinkError> {
    let inserted: Option<i64> = sqlx::query_scalar(
        "INSERT INTO receipts.parquet_files (run_id, capture_date, part, path, row_count, byte_size)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (path) DO NOTHING
         RETURNING file_id",
    )
    .bind(run_id)
    .bind(file.capture_date)
    .bind(file.part)
    .bind(&file.relative_path)
    .bind(file.row_count as i64)
    .bind(file.byte_size as i64)
    .fetch_optional(&mut *conn)
    .await
    .map_err(SinkError::pg("recording a Parquet file"))?;
    let file_id = match inserted {
        Some(id) => id,
        None => sqlx::query_scalar("SELECT file_id FROM receipts.parquet_files WHERE path = $1")
            .bind(&file.relative_path)
            .fetch_one(&mut *conn)
            .await
            .map_err(SinkError::pg("looking up a recorded Parquet file"))?,
    };
    sqlx::query(
        "UPDATE receipts.write_batches SET parquet_file_id = $3
         WHERE run_id = $1 AND batch_no = ANY($2)",
    )
    .bind(run_id)
    .bind(&file.batch_nos)
    .bind(file_id)
    .execute(&mut *conn)
    .await
    .map_err(SinkError::pg(
        "pointing write batches at their Parquet file",
    ))?;
    Ok(file_id)
}

/// The first part number the run has not used (parts start at 1).
pub async fn next_part(pool: &PgPool, run_id: i64) -> Result<i32, SinkError> {
    sqlx::query_scalar(
        "SELECT COALESCE(max(part), 0) + 1 FROM receipts.parquet_files WHERE run_id = $1",
    )
    .bind(run_id)
    .fetch_one(pool)
    .await
    .map_err(SinkError::pg("finding the next Parquet part"))
}

/// The run's batches with rows that no Parquet file holds yet, by batch number. A batch
/// without rows has nothing to export and is never listed.
pub async fn unexported_batches(
    pool: &PgPool,
    run_id: i64,
) -> Result<Vec<(i32, NaiveDate)>, SinkError> {
    sqlx::query_as(
        "SELECT batch_no, capture_date FROM receipts.write_batches
         WHERE run_id = $1 AND parquet_file_id IS NULL AND row_count > 0
         ORDER BY batch_no",
    )
    .bind(run_id)
    .fetch_all(pool)
    .await
    .map_err(SinkError::pg("listing unexported write batches"))
}

/// Runs that are no longer running but left batches out of Parquet (a crash, a disk full), or
/// files of an object-store lake recorded but not yet copied to their final key.
pub async fn runs_needing_repair(pool: &PgPool) -> Result<Vec<i64>, SinkError> {
    sqlx::query_scalar(
        "SELECT DISTINCT x.run_id
         FROM (SELECT b.run_id FROM receipts.write_batches b
               WHERE b.parquet_file_id IS NULL AND b.row_count > 0
               UNION
               SELECT f.run_id FROM receipts.parquet_files f WHERE f.pending_key IS NOT NULL) x
         JOIN receipts.export_runs r ON r.run_id = x.run_id
         WHERE r.status <> 'running'
         ORDER BY x.run_id",
    )
    .fetch_all(pool)
    .await
    .map_err(SinkError::pg("listing runs that need a Parquet repair"))
}

/// The path (relative to the Parquet directory) of every file the manifest lists.
pub async fn listed_paths(pool: &PgPool) -> Result<Vec<String>, SinkError> {
    sqlx::query_scalar("SELECT path FROM receipts.parquet_files ORDER BY file_id")
        .fetch_all(pool)
        .await
        .map_err(SinkError::pg("listing the manifest's files"))
}

/// The condition on a manifest row `p` that its file is settled: not a file of a run still
/// running whose copy into place is under way (an object store's pending key). Its run copies
/// it, with the same rows; until then the final object is not there, and a rewrite racing that
/// copy would leave an object whose size the manifest does not hold. `lake verify` checks and
/// `export parquet` rewrites only settled files.
pub const SETTLED_FILE: &str = "(p.pending_key IS NULL
      OR NOT EXISTS (SELECT 1 FROM receipts.export_runs r
                     WHERE r.run_id = p.run_id AND r.status = 'running'))";

/// The paths the manifest lists per capture date from `since` to `until` (both included), but
/// for the files that are not [settled](SETTLED_FILE).
pub async fn listed_between(
    pool: &PgPool,
    since: NaiveDate,
    until: NaiveDate,
) -> Result<std::collections::BTreeMap<NaiveDate, Vec<String>>, SinkError> {
    let rows: Vec<(NaiveDate, String)> = sqlx::query_as(&format!(
        "SELECT capture_date, path FROM receipts.parquet_files p
         WHERE capture_date BETWEEN $1 AND $2 AND {SETTLED_FILE}
         ORDER BY capture_date, path"
    ))
    .bind(since)
    .bind(until)
    .fetch_all(pool)
    .await
    .map_err(SinkError::pg("listing the days' Parquet files"))?;
    let mut out = std::collections::BTreeMap::<NaiveDate, Vec<String>>::new();
    for (day, path) in rows {
        out.entry(day).or_default().push(path);
    }
    Ok(out)
}

/// Drops the day's old manifest rows (unpointing their batches first) and records the new
/// files, inside the caller's transaction. The rows go through
/// `receipts.forget_parquet_files()` (the writer's role may not delete manifest rows), which
/// refuses the files of runs retention removed from Postgres.
pub(super) async fn replace_manifest(
    tx: &mut PgConnection,
    old_ids: &[i64],
    files: &[(i64, CommittedFile)],
) -> Result<(), SinkError> {
    sqlx::query("SELECT receipts.forget_parquet_files($1)")
        .bind(old_ids)
        .execute(&mut *tx)
        .await
        .map_err(SinkError::pg("removing replaced manifest rows"))?;
    for (run_id, file) in files {
        record_file_in(tx, *run_id, file).await?;
    }
    Ok(())
}

/// The capture dates from `since` to `until` that hold rows of runs retention removed from
/// Postgres, with those runs: a rebuild of such a day would lose them.
pub async fn retired_days(
    pool: &PgPool,
    since: NaiveDate,
    until: NaiveDate,
) -> Result<Vec<(NaiveDate, Vec<i64>)>, SinkError> {
    sqlx::query_as(
        "SELECT b.capture_date, array_agg(DISTINCT b.run_id ORDER BY b.run_id)
         FROM receipts.write_batches b JOIN receipts.retired_runs r USING (run_id)
         WHERE b.capture_date BETWEEN $1 AND $2 AND b.row_count > 0
         GROUP BY b.capture_date ORDER BY b.capture_date",
    )
    .bind(since)
    .bind(until)
    .fetch_all(pool)
    .await
    .map_err(SinkError::pg("listing the days of retired runs"))
}

/// The date a run's rows are stored under (`None`: no such run).
pub async fn run_date(pool: &PgPool, run_id: i64) -> Result<Option<NaiveDate>, SinkError> {
    sqlx::query_scalar("SELECT run_date FROM receipts.export_runs WHERE run_id = $1")
        .bind(run_id)
        .fetch_optional(pool)
        .await
        .map_err(SinkError::pg("looking up the run"))
}

/// The capture dates of the run's write batches.
pub async fn capture_dates(pool: &PgPool, run_id: i64) -> Result<Vec<NaiveDate>, SinkError> {
    sqlx::query_scalar("SELECT DISTINCT capture_date FROM receipts.write_batches WHERE run_id = $1")
        .bind(run_id)
        .fetch_all(pool)
        .await
        .map_err(SinkError::pg("listing the run's capture dates"))
}

/// The paths of the run's files the manifest lists.
pub async fn run_paths(pool: &PgPool, run_id: i64) -> Result<HashSet<String>, SinkError> {
    let paths: Vec<String> =
        sqlx::query_scalar("SELECT path FROM receipts.parquet_files WHERE run_id = $1")
            .bind(run_id)
            .fetch_all(pool)
            .await
            .map_err(SinkError::pg("listing the run's Parquet files"))?;
    Ok(paths.into_iter().collect())
}

/// The capture dates with rows captured in `[start, end)` or files listed between `since` and
/// `until` (both included).
pub async fn days_with_rows_or_files(
    pool: &PgPool,
    (start, end): (DateTime<Utc>, DateTime<Utc>),
    (since, until): (NaiveDate, NaiveDate),
) -> Result<BTreeSet<NaiveDate>, SinkError> {
    let days: Vec<NaiveDate> = sqlx::query_scalar(
        "SELECT DISTINCT (captured_at AT TIME ZONE 'UTC')::date FROM receipts.receipt_snapshots
         WHERE captured_at >= $1 AND captured_at < $2
         UNION
         SELECT capture_date FROM receipts.parquet_files WHERE capture_date BETWEEN $3 AND $4",
    )
    .bind(start)
    .bind(end)
    .bind(since)
    .bind(until)
    .fetch_all(pool)
    .await
    .map_err(SinkError::pg("listing the days that hold rows or files"))?;
    Ok(days.into_iter().collect())
}

/// The ids of the files the manifest lists for a capture date.
pub async fn day_file_ids(pool: &PgPool, day: NaiveDate) -> Result<Vec<i64>, SinkError> {
    sqlx::query_scalar("SELECT file_id FROM receipts.parquet_files WHERE capture_date = $1")
        .bind(day)
        .fetch_all(pool)
        .await
        .map_err(SinkError::pg("listing the day's Parquet files"))
}

/// One row of a repair cursor: run, run date, batch, capture date, then the snapshot and its
/// app (`None`: a row from before apps, not adopted yet).
pub type CursorRow = (
    i64,
    NaiveDate,
    i32,
    NaiveDate,
    DateTime<Utc>,
    String,
    i64,
    i32,
    i32,
    Option<i64>,
);

/// The write batches of the open cursor `rebuild` (rows ordered by run, then batch), read a
/// round trip of rows at a time, one batch in memory: what every rebuild from Postgres reads
/// (a run's repair, a rebuilt day, a file written again under its own key).
#[derive(Default)]
pub struct CursorBatches {
    rows: std::vec::IntoIter<CursorRow>,
    batch: Option<WriteBatch>,
    ended: bool,
}

impl CursorBatches {
    /// The next whole write batch (`None` at the cursor's end).
    pub async fn next(
        &mut self,
        cursor: &mut PgConnection,
    ) -> Result<Option<WriteBatch>, SinkError> {
        loop {
            if let Some(row) = self.rows.next() {
                match regroup(&mut self.batch, row) {
                    Some(full) => return Ok(Some(full)),
                    None => continue,
                }
            }
            if self.ended {
                return Ok(self.batch.take());
            }
            let rows = fetch_rows(cursor).await?;
            self.ended = rows.is_empty();
            self.rows = rows.into_iter();
        }
    }
}

/// Adds a cursor row to the batch being rebuilt; returns the previous batch once a row of
/// another batch arrives (rows come in run and batch order). Rows come sorted by group within a
/// batch: they share one allocation per group, as the run's do.
fn regroup(batch: &mut Option<WriteBatch>, row: CursorRow) -> Option<WriteBatch> {
    let (
        run_id,
        run_date,
        batch_no,
        capture_date,
        captured_at,
        group,
        msg_seq,
        read_num,
        unread_num,
        sdkappid,
    ) = row;
    let done = match batch {
        Some(b) if b.run_id == run_id && b.batch_no == batch_no => None,
        _ => batch.replace(WriteBatch {
            run_id,
            run_date,
            batch_no,
            sdkappid,
            capture_date,
            rows: Vec::new(),
            codes: Vec::new(),
        }),
    };
    let rows = &mut batch.as_mut().expect("set above").rows;
    let group_id = match rows.last() {
        Some(last) if *last.group_id == *group => last.group_id.clone(),
        _ => Arc::from(group),
    };
    rows.push(SnapshotRow {
        captured_at,
        group_id,
        msg_seq,
        read_num,
        unread_num,
    });
    done
}

/// Rows fetched per round trip: bounded memory, few round trips.
const FETCH_ROWS: usize = 10_000;

/// Opens the cursor `rebuild` on the run's rows of batches not yet in Parquet, in batch
/// order, inside the caller's transaction.
pub async fn declare_unexported_rows(
    tx: &mut PgConnection,
    run_date: NaiveDate,
    run_id: i64,
) -> Result<(), SinkError> {
    declare_batch_rows(tx, run_date, run_id, None).await
}

/// Opens the cursor `rebuild` on the rows of the batches one recorded file holds, in the order
/// a run writes them, inside the caller's transaction.
pub async fn declare_file_rows(
    tx: &mut PgConnection,
    file: &RecordedFile,
) -> Result<(), SinkError> {
    declare_batch_rows(tx, file.run_date, file.run_id, Some(file.file_id)).await
}

/// The cursor `rebuild` on the run's rows of the batches in `file_id` (`None`: in no file).
async fn declare_batch_rows(
    tx: &mut PgConnection,
    run_date: NaiveDate,
    run_id: i64,
    file_id: Option<i64>,
) -> Result<(), SinkError> {
    sqlx::query(
        "DECLARE rebuild NO SCROLL CURSOR FOR
         SELECT s.run_id, s.run_date, s.batch_no, b.capture_date, s.captured_at, s.group_id,
                s.msg_seq, s.read_num, s.unread_num, s.sdkappid
         FROM receipts.write_batches b
         JOIN receipts.receipt_snapshots s
           ON s.run_date = $1 AND s.run_id = b.run_id AND s.batch_no = b.batch_no
         WHERE b.run_id = $2 AND b.parquet_file_id IS NOT DISTINCT FROM $3
         ORDER BY s.batch_no, s.group_id COLLATE \"C\", s.msg_seq",
    )
    .bind(run_date)
    .bind(run_id)
    .bind(file_id)
    .execute(&mut *tx)
    .await
    .map_err(SinkError::pg("reading unexported rows"))?;
    Ok(())
}

/// Opens the cursor `rebuild` on the rows captured on `day` (which starts at `start`), in
/// run and batch order, inside the caller's transaction.
pub async fn declare_day_rows(
    tx: &mut PgConnection,
    day: NaiveDate,
    start: DateTime<Utc>,
) -> Result<(), SinkError> {
    sqlx::query(
        "DECLARE rebuild NO SCROLL CURSOR FOR
         SELECT s.run_id, s.run_date, s.batch_no, $3::date, s.captured_at, s.group_id,
                s.msg_seq, s.read_num, s.unread_num, s.sdkappid
         FROM receipts.receipt_snapshots s
         WHERE s.captured_at >= $1 AND s.captured_at < $2
         ORDER BY s.run_id, s.batch_no, s.group_id COLLATE \"C\", s.msg_seq",
    )
    .bind(start)
    .bind(start + chrono::Duration::days(1))
    .bind(day)
    .execute(&mut *tx)
    .await
    .map_err(SinkError::pg("reading the day's rows"))?;
    Ok(())
}

/// A recorded file: its run, where the run's rows are stored, and what the manifest says of it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RecordedFile {
    pub file_id: i64,
    pub run_id: i64,
    pub run_date: NaiveDate,
    pub capture_date: NaiveDate,
    pub part: i32,
    pub row_count: i64,
    /// Set while the file waits for its copy from `_pending/` (see `sink::remote`).
    pub pending_key: Option<String>,
}

/// The manifest's row of the file at `path` (`None`: not listed).
pub async fn recorded_file(pool: &PgPool, path: &str) -> Result<Option<RecordedFile>, SinkError> {
    sqlx::query_as(
        "SELECT f.file_id, f.run_id, r.run_date, f.capture_date, f.part, f.row_count,
                f.pending_key
         FROM receipts.parquet_files f JOIN receipts.export_runs r ON r.run_id = f.run_id
         WHERE f.path = $1",
    )
    .bind(path)
    .fetch_optional(pool)
    .await
    .map_err(SinkError::pg("looking up a recorded Parquet file"))
}

/// Records a file written again under its own key: its new size, and that it is in place.
pub async fn rewritten(pool: &PgPool, file_id: i64, byte_size: u64) -> Result<(), SinkError> {
    sqlx::query(
        "UPDATE receipts.parquet_files SET byte_size = $2, pending_key = NULL WHERE file_id = $1",
    )
    .bind(file_id)
    .bind(byte_size as i64)
    .execute(pool)
    .await
    .map_err(SinkError::pg("recording a rewritten file"))?;
    Ok(())
}

/// The next rows of the open cursor `rebuild` (empty at its end).
pub async fn fetch_rows(cursor: &mut PgConnection) -> Result<Vec<CursorRow>, SinkError> {
    sqlx::query_as(&format!("FETCH FORWARD {FETCH_ROWS} FROM rebuild"))
        .fetch_all(&mut *cursor)
        .await
        .map_err(SinkError::pg("fetching rows to rebuild"))
}
