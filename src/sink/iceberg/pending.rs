//! The data files a live run may still commit (`receipts.iceberg_pending_files`): the Iceberg
//! counterpart of an object store's pending uploads. A run's writer records a file's location,
//! under the run's fence, before the file's first byte reaches the lake; the commit that adds
//! the file to the table forgets it in the same transaction; a discarded file is forgotten
//! after it is deleted, and a dead run's files when its repair sweeps them. `iceberg maintain`
//! takes none of these files for an orphan, however old (a rate-capped backfill keeps its file
//! open for hours, 0 bytes on disk until it is closed). Locations are stored normalised
//! ([`crate::lake::normalize_location`]).

use crate::lake::normalize_location;
use crate::sink::{fence, Fence, SinkError};
use sqlx::{PgConnection, PgPool};
use std::collections::HashSet;

/// Records `location` as a file the fenced run is about to write.
pub async fn register(pool: &PgPool, fence: Fence, location: &str) -> Result<(), SinkError> {
    let mut tx = pool
        .begin()
        .await
        .map_err(SinkError::pg("recording a data file about to be written"))?;
    fence::check(&mut tx, fence).await?;
    sqlx::query(
        "INSERT INTO receipts.iceberg_pending_files (location, run_id) VALUES ($1, $2) \
         ON CONFLICT (location) DO NOTHING",
    )
    .bind(normalize_location(location))
    .bind(fence.run_id)
    .execute(&mut *tx)
    .await
    .map_err(SinkError::pg("recording a data file about to be written"))?;
    tx.commit()
        .await
        .map_err(SinkError::pg("recording a data file about to be written"))
}

/// Forgets `location`, inside the caller's transaction (a commit's).
pub async fn forget_in(conn: &mut PgConnection, location: &str) -> Result<(), SinkError> {
    sqlx::query("DELETE FROM receipts.iceberg_pending_files WHERE location = $1")
        .bind(normalize_location(location))
        .execute(conn)
        .await
        .map_err(SinkError::pg(
            "forgetting a committed data file's pending row",
        ))?;
    Ok(())
}

/// Forgets `location` (its file was deleted, never to be committed).
pub async fn forget(pool: &PgPool, location: &str) -> Result<(), SinkError> {
    let mut conn = pool
        .acquire()
        .await
        .map_err(SinkError::pg("forgetting a discarded data file"))?;
    forget_in(&mut conn, location).await
}

/// The files a run recorded and has neither committed nor discarded.
pub async fn of_run(pool: &PgPool, run_id: i64) -> Result<Vec<String>, SinkError> {
    sqlx::query_scalar(
        "SELECT location FROM receipts.iceberg_pending_files WHERE run_id = $1 ORDER BY location",
    )
    .bind(run_id)
    .fetch_all(pool)
    .await
    .map_err(SinkError::pg("reading a run's pending data files"))
}

/// Forgets every file of a run (its repair, holding its fence, swept them).
pub async fn forget_run(pool: &PgPool, run_id: i64) -> Result<(), SinkError> {
    sqlx::query("DELETE FROM receipts.iceberg_pending_files WHERE run_id = $1")
        .bind(run_id)
        .execute(pool)
        .await
        .map_err(SinkError::pg(
            "forgetting a repaired run's pending data files",
        ))?;
    Ok(())
}

/// Every pending file, normalised: what `iceberg maintain` must not take.
pub async fn all(conn: &mut PgConnection) -> Result<HashSet<String>, SinkError> {
    let rows: Vec<String> =
        sqlx::query_scalar("SELECT location FROM receipts.iceberg_pending_files")
            .fetch_all(conn)
            .await
            .map_err(SinkError::pg("reading the pending data files"))?;
    Ok(rows.into_iter().collect())
}
