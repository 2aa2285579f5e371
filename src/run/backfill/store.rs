//! The SQL of backfills: `receipts.backfills` and what a backfill run already committed.
//! One small function per statement.

use super::{Definition, Request};
use crate::run::ledger::RunFigures;
use crate::tracking::SeqWindow;
use chrono::NaiveDate;
use sqlx::PgPool;
use std::collections::BTreeMap;

/// A backfill found by its hash.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Stored {
    pub run_id: i64,
    pub definition: serde_json::Value,
    /// Attempts so far, this one included.
    pub attempts: i32,
}

/// The stored backfill with this hash, counting a new attempt of it.
pub async fn find(pool: &PgPool, hash: &str) -> sqlx::Result<Option<Stored>> {
    sqlx::query_as(
        "UPDATE receipts.backfills SET attempts = attempts + 1, resumed_at = now()
         WHERE request_hash = $1
         RETURNING run_id, definition, attempts",
    )
    .bind(hash)
    .fetch_optional(pool)
    .await
}

/// Stores a new backfill and its run.
pub async fn insert(
    pool: &PgPool,
    hash: &str,
    run_id: i64,
    request: &Request,
    definition: &Definition,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO receipts.backfills (request_hash, run_id, request, definition)
         VALUES ($1, $2, $3, $4)",
    )
    .bind(hash)
    .bind(run_id)
    .bind(request.as_json())
    .bind(definition.as_json())
    .execute(pool)
    .await?;
    Ok(())
}

/// Every enabled tracked group, sorted: what `--all` means at a backfill's first start.
pub async fn enabled_groups(pool: &PgPool, app: i64) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT group_id FROM receipts.tracked_groups WHERE sdkappid = $1 AND enabled
         ORDER BY group_id COLLATE \"C\"",
    )
    .bind(app)
    .fetch_all(pool)
    .await
}

/// Sets the run `running` again for this attempt (same run_id and run_date), taking it over
/// from any earlier attempt (its epoch moves on, `by` goes to `fenced_by`), and returns its
/// run date, the new epoch and the figures of the attempts so far.
pub async fn reopen(
    pool: &PgPool,
    run_id: i64,
    me: &crate::run::liveness::Identity,
    by: &str,
    lease: std::time::Duration,
) -> sqlx::Result<(NaiveDate, i64, RunFigures)> {
    type Row = (
        NaiveDate,
        i64,
        i64,
        i64,
        i64,
        sqlx::types::Json<BTreeMap<String, u64>>,
        i64,
        sqlx::types::Json<BTreeMap<String, u64>>,
    );
    let (run_date, epoch, seqs_asked, api_calls, retries, by_class, rate_limited, codes): Row =
        sqlx::query_as(
            "UPDATE receipts.export_runs SET status = 'running', host = $2, pid = $3,
                finished_at = NULL, error = NULL, epoch = epoch + 1, fenced_by = $4,
                heartbeat_at = now(), lease_until = now() + make_interval(secs => $5),
                boot_id = $6, pid_namespace = $7, process_start = $8
             WHERE run_id = $1
             RETURNING run_date, epoch, seqs_asked, api_calls, retries, retries_by_class,
                       rate_limited, item_codes",
        )
        .bind(run_id)
        .bind(&me.host)
        .bind(me.pid as i32)
        .bind(by)
        .bind(lease.as_secs_f64())
        .bind(&me.boot_id)
        .bind(me.pid_namespace)
        .bind(me.start_ticks)
        .fetch_one(pool)
        .await?;
    let (receipts_written, parquet_files): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT COALESCE(sum(row_count), 0)::bigint FROM receipts.write_batches WHERE run_id = $1),
                (SELECT count(*) FROM receipts.parquet_files WHERE run_id = $1)",
    )
    .bind(run_id)
    .fetch_one(pool)
    .await?;
    Ok((
        run_date,
        epoch,
        RunFigures {
            seqs_asked,
            receipts_written,
            api_calls,
            retries,
            retries_by_class: by_class.0,
            rate_limited,
            item_codes: codes.0,
            parquet_files: parquet_files as i32,
            ..Default::default()
        },
    ))
}

/// The seqs the run committed (a snapshot or an item code), as ranges per group: the
/// backfill's checkpoint. Computed in Postgres, so millions of seqs come back as a few rows.
pub async fn done_ranges(
    pool: &PgPool,
    run_id: i64,
    run_date: NaiveDate,
) -> sqlx::Result<Vec<(String, SeqWindow)>> {
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT group_id, min(msg_seq), max(msg_seq)
         FROM (SELECT group_id, msg_seq,
                      msg_seq - row_number() OVER (PARTITION BY group_id ORDER BY msg_seq) AS island
               FROM (SELECT group_id, msg_seq FROM receipts.receipt_snapshots
                     WHERE run_date = $2 AND run_id = $1
                     UNION
                     SELECT group_id, msg_seq FROM receipts.receipt_item_codes
                     WHERE run_id = $1) done) numbered
         GROUP BY group_id, island
         ORDER BY group_id, 2",
    )
    .bind(run_id)
    .bind(run_date)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(g, from, to)| (g, SeqWindow { from, to }))
        .collect())
}

/// The first write batch number the run has not used.
pub async fn next_batch_no(pool: &PgPool, run_id: i64) -> sqlx::Result<i32> {
    sqlx::query_scalar(
        "SELECT COALESCE(max(batch_no), 0) + 1 FROM receipts.write_batches WHERE run_id = $1",
    )
    .bind(run_id)
    .fetch_one(pool)
    .await
}

/// Keeps a running backfill's call count current in the ledger (while it is still its own).
pub async fn checkpoint(
    pool: &PgPool,
    fence: crate::sink::Fence,
    api_calls: i64,
    seqs_asked: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE receipts.export_runs SET api_calls = $2, seqs_asked = $3
         WHERE run_id = $1 AND status = 'running' AND epoch = $4",
    )
    .bind(fence.run_id)
    .bind(api_calls)
    .bind(seqs_asked)
    .bind(fence.epoch)
    .execute(pool)
    .await?;
    Ok(())
}

/// Seqs (snapshots + item codes) the run has committed so far: the progress of a backfill.
pub async fn committed_seqs(pool: &PgPool, run_id: i64) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "SELECT COALESCE(sum(row_count + code_count), 0)::bigint
         FROM receipts.write_batches WHERE run_id = $1",
    )
    .bind(run_id)
    .fetch_one(pool)
    .await
}

/// The stored backfill's run and how much of it is committed, for `--dry-run`.
pub async fn existing(
    pool: &PgPool,
    hash: &str,
) -> sqlx::Result<Option<(i64, String, serde_json::Value)>> {
    sqlx::query_as(
        "SELECT b.run_id, r.status, b.definition FROM receipts.backfills b
         JOIN receipts.export_runs r USING (run_id) WHERE b.request_hash = $1",
    )
    .bind(hash)
    .fetch_optional(pool)
    .await
}
