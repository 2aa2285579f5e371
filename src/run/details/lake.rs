//! The lake copy of read events: `read_events/capture_date=YYYY-MM-DD/run-<run_id>.parquet`
//! under the Parquet directory, one file per run and capture date (the UTC date of
//! `first_seen_read_at`), recorded in `receipts.read_event_files`.
//!
//! Exactly once: a run's read events are all inserted during that run, so once it ended its
//! file for a date is a pure function of Postgres. Each file is put whole at its fixed name
//! (written hidden, fsynced, renamed, its directory fsynced; in an object store one PUT:
//! [`crate::sink::objects::put_whole`]), then recorded. A crash between the
//! rename and the record (the run is then abandoned) or a failed record (the ledger says so)
//! leaves a file that a later run writes again under the same name (the rename replaces it):
//! never two copies of a row. Runs still `running` (but the current one) are left alone until
//! the repair at a run's start marks them abandoned.

use crate::lake::Lake;
use crate::tracking::details::{self as store, EventRow};
use arrow::array::{
    ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::NaiveDate;
use sqlx::PgPool;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The directory of the read-events table under the Parquet directory.
pub use crate::sink::names::EVENTS_DIR as TABLE_DIR;

/// The Arrow schema of every read-events file.
pub fn arrow_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("group_id", DataType::Utf8, false),
        Field::new("msg_seq", DataType::Int64, false),
        Field::new("member_account", DataType::Utf8, false),
        Field::new(
            "first_seen_read_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("run_id", DataType::Int64, false),
        Field::new("read_before_details", DataType::Boolean, false),
        Field::new("account_hashed", DataType::Boolean, false),
        // Issue 26: the app; files written before lack it (read it as null).
        Field::new("sdkappid", DataType::Int64, true),
    ]))
}

/// `read_events/capture_date=YYYY-MM-DD/run-<run_id>.parquet`, relative to the Parquet directory.
pub fn relative_path(capture_date: NaiveDate, run_id: i64) -> String {
    crate::sink::names::per_run(TABLE_DIR, capture_date, run_id)
}

/// Writes the files of run `run_id` and of every crashed run or failed lake write whose files
/// are not all recorded. Returns the files written.
pub async fn export(pool: &PgPool, lake: &Lake, run_id: i64) -> anyhow::Result<u64> {
    let mut written = 0;
    for run in store::runs_missing_lake_copy(pool, run_id).await? {
        written += export_run(pool, lake, run).await?;
    }
    Ok(written)
}

async fn export_run(pool: &PgPool, lake: &Lake, run_id: i64) -> anyhow::Result<u64> {
    let mut by_date: BTreeMap<NaiveDate, Vec<EventRow>> = BTreeMap::new();
    for row in store::events_of_run(pool, run_id).await? {
        by_date
            .entry(row.first_seen_read_at.date_naive())
            .or_default()
            .push(row);
    }
    let done = store::lake_dates(pool, run_id).await?;
    let mut written = 0;
    for (date, rows) in by_date.into_iter().filter(|(d, _)| !done.contains(d)) {
        let path = relative_path(date, run_id);
        let batch = record_batch(run_id, &rows)?;
        let bytes = crate::sink::objects::put_record_batch(lake, &path, &batch).await?;
        store::record_lake_file(pool, run_id, date, &path, rows.len() as u64, bytes).await?;
        written += 1;
    }
    Ok(written)
}

fn record_batch(run_id: i64, rows: &[EventRow]) -> anyhow::Result<RecordBatch> {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.group_id.as_str()),
        )),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.msg_seq))),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.member_account.as_str()),
        )),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(
                rows.iter().map(|r| r.first_seen_read_at.timestamp_micros()),
            )
            .with_timezone("UTC"),
        ),
        Arc::new(Int64Array::from(vec![run_id; rows.len()])),
        Arc::new(BooleanArray::from_iter(
            rows.iter().map(|r| Some(r.read_before_details)),
        )),
        Arc::new(BooleanArray::from_iter(
            rows.iter().map(|r| Some(r.account_hashed)),
        )),
        Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.sdkappid))),
    ];
    Ok(RecordBatch::try_new(arrow_schema(), columns)?)
}
