//! Each message's read progress (`receipts.message_read_progress`, its columns in the
//! migration `20261206000800_message_read_progress.sql`): merged by every write batch inside
//! the batch's own transaction ([`super::postgres::write_batch`]), so it is exactly once like
//! the snapshots, and recomputed from the snapshots by [`rebuild`].
//!
//! The merge only ever moves a row the way more snapshots do: the earlier first sighting, the
//! earlier capture past each threshold, the ratio of the newest snapshot (`receipt_latest`,
//! brought forward earlier in the same transaction). So the same snapshots merged twice, or in
//! any order (a backfill of older captures after newer runs), give the same row; and a row is
//! written only when it changes, with the run that changed it.
//! This module writes SQL only; it decides nothing about runs.

use super::postgres::RowArrays;
use super::{SinkError, WriteBatch};
use sqlx::{PgConnection, PgPool};

/// Merges the batch's snapshots into their messages' progress rows, and logs the rows it
/// changed under the batch's run ([`CHANGES`]). Runs in the batch's transaction, after
/// `receipt_latest` was brought forward (it gives the newest ratio, and its rows are locked in
/// the same key order, so two runs cannot deadlock here). Returns how many rows it inserted or
/// changed.
pub async fn merge(conn: &mut PgConnection, batch: &WriteBatch) -> Result<u64, SinkError> {
    if batch.rows.is_empty() {
        return Ok(0);
    }
    merge_rows(conn, batch, &RowArrays::of(batch)).await
}

/// [`merge`] of rows already laid out as arrays (the write batch builds them once for this and
/// the `receipt_latest` upsert).
pub async fn merge_rows(
    conn: &mut PgConnection,
    batch: &WriteBatch,
    rows: &RowArrays<'_>,
) -> Result<u64, SinkError> {
    use sqlx::Row;
    let row = rows
        .bind(sqlx::query(MERGE).bind(batch.run_id))
        .bind(batch.capture_date)
        .fetch_one(conn)
        .await
        .map_err(SinkError::pg(
            "merging the batch into message_read_progress",
        ))?;
    let changed: i64 = row.get(0);
    Ok(changed as u64)
}

/// The batch's messages (their capture, members, and the capture again where it is past half
/// and 90%), with the newest ratio from `receipt_latest`, merged into the stored rows. A batch
/// holds each message once (a run asks each seq once; `receipt_latest`'s upsert of the same
/// rows would fail otherwise), so its rows need no grouping. `LEAST` skips nulls: a threshold
/// already reached keeps its earlier time. The rows it changed are logged under the run
/// (`$1`) and the batch's capture date (`$8`) in `message_read_progress_changes`, and that date's
/// lake file of the run is noted as due (`message_read_progress_files`; see
/// [`super::progress_lake`]): due again if it was written already (a backfill resumed after
/// its files were exported: the file is written again whole, under its name); it returns how
/// many it changed.
const MERGE: &str = "
WITH m AS (
    SELECT g, s, c AS first_seen_at, r + u AS members_at_first_seen,
           CASE WHEN r + u > 0 AND 2 * r::bigint >= r::bigint + u THEN c END AS half_read_at,
           CASE WHEN r + u > 0 AND 10 * r::bigint >= 9 * (r::bigint + u) THEN c END
               AS ninety_read_at
    FROM UNNEST($2::text[], $3::bigint[], $4::timestamptz[], $5::integer[], $6::integer[])
        AS t(g, s, c, r, u)
), changed AS (
INSERT INTO receipts.message_read_progress AS p
    (group_id, msg_seq, sdkappid, first_seen_at, members_at_first_seen, read_ratio,
     half_read_at, ninety_read_at, run_id)
SELECT m.g, m.s, $7,
       m.first_seen_at, m.members_at_first_seen,
       CASE WHEN l.read_num + l.unread_num > 0
            THEN l.read_num::double precision / (l.read_num + l.unread_num) END,
       m.half_read_at, m.ninety_read_at, $1
FROM m JOIN receipts.receipt_latest l ON l.sdkappid = $7 AND l.group_id = m.g AND l.msg_seq = m.s
ORDER BY m.g COLLATE \"C\", m.s
ON CONFLICT (sdkappid, group_id, msg_seq) DO UPDATE
SET members_at_first_seen = CASE WHEN excluded.first_seen_at < p.first_seen_at
                                 THEN excluded.members_at_first_seen
                                 ELSE p.members_at_first_seen END,
    first_seen_at = least(p.first_seen_at, excluded.first_seen_at),
    read_ratio = excluded.read_ratio,
    half_read_at = least(p.half_read_at, excluded.half_read_at),
    ninety_read_at = least(p.ninety_read_at, excluded.ninety_read_at),
    run_id = excluded.run_id
WHERE excluded.first_seen_at < p.first_seen_at
   OR excluded.read_ratio IS DISTINCT FROM p.read_ratio
   OR excluded.half_read_at < coalesce(p.half_read_at, 'infinity')
   OR excluded.ninety_read_at < coalesce(p.ninety_read_at, 'infinity')
RETURNING p.sdkappid, p.group_id, p.msg_seq, p.first_seen_at, p.members_at_first_seen,
          p.read_ratio, p.half_read_at, p.ninety_read_at
), logged AS (
INSERT INTO receipts.message_read_progress_changes AS c
    (run_id, capture_date, sdkappid, group_id, msg_seq, first_seen_at, members_at_first_seen,
     read_ratio, half_read_at, ninety_read_at)
SELECT $1, $8, sdkappid, group_id, msg_seq, first_seen_at, members_at_first_seen,
       read_ratio, half_read_at, ninety_read_at
FROM changed
ORDER BY group_id COLLATE \"C\", msg_seq
ON CONFLICT (run_id, sdkappid, group_id, msg_seq) DO UPDATE
SET change_no = excluded.change_no,
    capture_date = excluded.capture_date,
    first_seen_at = excluded.first_seen_at,
    members_at_first_seen = excluded.members_at_first_seen,
    read_ratio = excluded.read_ratio,
    half_read_at = excluded.half_read_at,
    ninety_read_at = excluded.ninety_read_at
RETURNING 1
), filed AS (
INSERT INTO receipts.message_read_progress_files AS f (run_id, capture_date)
SELECT $1, $8 WHERE EXISTS (SELECT 1 FROM logged)
ON CONFLICT (run_id, capture_date) DO UPDATE
SET path = NULL, row_count = NULL, byte_size = NULL
WHERE f.path IS NOT NULL
)
SELECT count(*) FROM logged";

/// Records the app a run exports for (`export_runs.sdkappid`), which the merge gives each new
/// message's row. A resumed backfill keeps the app it started with.
pub async fn record_app(pool: &PgPool, run_id: i64, app: i64, name: &str) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE receipts.export_runs SET sdkappid = $2, app = $3
         WHERE run_id = $1 AND sdkappid IS NULL",
    )
    .bind(run_id)
    .bind(app)
    .bind(name)
    .execute(pool)
    .await?;
    Ok(())
}

/// What [`rebuild`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rebuilt {
    /// Rows inserted or changed by the recomputation.
    pub changed: i64,
    /// Rows kept as they were: their message's earliest snapshots (or all of them) were
    /// removed by retention, so they are not recomputed from what is left.
    pub kept: i64,
}

/// Recomputes every message's row from the snapshots Postgres holds
/// (`receipts.rebuild_message_read_progress()`), keeping the rows of messages whose series
/// retention cut. Runs' batches wait for it (it locks the table), so none of their merges is
/// lost.
pub async fn rebuild(pool: &PgPool) -> sqlx::Result<Rebuilt> {
    let (changed, kept): (i64, i64) =
        sqlx::query_as("SELECT changed, kept FROM receipts.rebuild_message_read_progress()")
            .fetch_one(pool)
            .await?;
    Ok(Rebuilt { changed, kept })
}
