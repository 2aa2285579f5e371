//! The lake copy of read events: `read_events/capture_date=YYYY-MM-DD/run-<run_id>.parquet`
//! under the Parquet directory, one file per run and capture date (the UTC date of
//! `first_seen_read_at`), recorded in `receipts.read_event_files`.
//!
//! Exactly once: a run's read events are all inserted during that run, so once it ended its
//! file for a date is a pure function of Postgres. Each file is written hidden, fsynced,
//! renamed to its fixed name and its directory fsynced, then recorded. A crash between the
//! rename and the record (the run is then abandoned) or a failed record (the ledger says so)
//! leaves a file that a later run writes again under the same name (the rename replaces it):
//! never two copies of a row. Runs still `running` (but the current one) are left alone until
//! the repair at a run's start marks them abandoned.

use crate::lake::Lake;
use crate::sink::parquet::sync_dir;
use crate::tracking::details::{self as store, EventRow};
use arrow::array::{
    ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::NaiveDate;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use sqlx::PgPool;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// The directory of the read-events table under the Parquet directory.
pub const TABLE_DIR: &str = "read_events";

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
    ]))
}

/// `read_events/capture_date=YYYY-MM-DD/run-<run_id>.parquet`, relative to the Parquet directory.
pub fn relative_path(capture_date: NaiveDate, run_id: i64) -> String {
    format!(
        "{TABLE_DIR}/capture_date={}/run-{run_id}.parquet",
        capture_date.format("%Y-%m-%d")
    )
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
        let bytes = match lake {
            Lake::Local(root) => write_file(&root.join(&path), run_id, &rows)?,
            Lake::Remote(remote) => put_file(remote, &path, run_id, &rows).await?,
        };
        store::record_lake_file(pool, run_id, date, &path, rows.len() as u64, bytes).await?;
        written += 1;
    }
    Ok(written)
}

/// Writes `rows` hidden next to `path`, fsyncs, renames to `path`, fsyncs the directory.
/// Returns the file's size.
fn write_file(path: &Path, run_id: i64, rows: &[EventRow]) -> anyhow::Result<u64> {
    let dir = path.parent().expect("a partition directory");
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().expect("a file name").to_string_lossy();
    // Created new under a random name, never through a link (two processes writing the same
    // file, two jobs repairing one run, stay apart too).
    let temp = crate::files::create_beside(dir, &format!(".{name}."), ".tmp")?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let mut writer = ArrowWriter::try_new(temp.reopen()?, arrow_schema(), Some(props))?;
    writer.write(&record_batch(run_id, rows)?)?;
    let file = writer.into_inner()?;
    file.sync_all()?;
    let size = file.metadata()?.len();
    drop(file);
    // The rename replaces a link planted at the final name instead of following it.
    temp.persist(path).map_err(|e| e.error)?;
    sync_dir(dir)?;
    Ok(size)
}

/// In an object store: the file written to a temporary file, then PUT at its fixed key (one
/// atomic object creation, replacing an unrecorded copy as the local rename does).
async fn put_file(
    remote: &crate::lake::Remote,
    path: &str,
    run_id: i64,
    rows: &[EventRow],
) -> anyhow::Result<u64> {
    let spool = crate::files::spool_dir()?;
    let local = spool.path().join("events.parquet");
    let size = write_file(&local, run_id, rows)?;
    crate::sink::remote::put_file(remote, &local, path).await?;
    Ok(size)
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
    ];
    Ok(RecordBatch::try_new(arrow_schema(), columns)?)
}
