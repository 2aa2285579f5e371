//! The read-progress table in the lake: append-only change rows, one per message per run that
//! changed it, at `message_read_progress/capture_date=YYYY-MM-DD/run-<run_id>.parquet` (the
//! UTC date of the snapshot that made the change), in every lake form (Hive-style beside the
//! snapshots; in Iceberg mode too, as files beside the table, like the read events). The newest
//! row per message (greatest `change_no`) is the row `receipts.message_read_progress` holds.
//!
//! # Exactly once
//! Postgres keeps only each message's newest row, so the write batch that changes a row also
//! logs it under its run (`message_read_progress_changes`, in the batch's transaction:
//! [`super::progress`]) and notes the run's file of that date as due
//! (`message_read_progress_files`, path NULL). Once the run has ended its log is final (a fenced
//! writer commits no batch), so its file of each date is a pure function of Postgres: [`export`]
//! writes it whole at its fixed name ([`super::objects::put_whole`]: hidden, fsynced, renamed;
//! one PUT in an object store), then records its path, rows and size. A crash between the two,
//! or a failed write, leaves the row due: the end of the next run (of any job) writes the same
//! rows under the same name again, replacing the file. So a reader never sees a change row twice
//! nor misses one once the runs after a crash ended. Runs still `running` (but the caller's own)
//! are left alone: their log may still grow.
//! This module writes SQL and files; it decides nothing about runs.

use super::{objects, SinkError};
use crate::lake::Lake;
use arrow::array::{
    ArrayRef, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::PgPool;
use std::sync::Arc;

/// The directory of the read-progress table under the lake's root.
pub use super::names::PROGRESS_DIR as TABLE_DIR;

/// One change row, as the lake holds it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ChangeRow {
    /// The app; a row logged before the default app adopted its rows gets that app's.
    pub sdkappid: Option<i64>,
    pub group_id: String,
    pub msg_seq: i64,
    pub first_seen_at: DateTime<Utc>,
    pub members_at_first_seen: i32,
    pub read_ratio: Option<f64>,
    pub half_read_at: Option<DateTime<Utc>>,
    pub ninety_read_at: Option<DateTime<Utc>>,
    pub run_id: i64,
    /// Orders one message's changes across runs: the greatest is the current row.
    pub change_no: i64,
}

fn timestamp(nullable: bool, name: &str) -> Field {
    let utc = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    Field::new(name, utc, nullable)
}

/// The Arrow schema of every read-progress file (the partition column `capture_date` is in the
/// path only).
pub fn arrow_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("sdkappid", DataType::Int64, true),
        Field::new("group_id", DataType::Utf8, false),
        Field::new("msg_seq", DataType::Int64, false),
        timestamp(false, "first_seen_at"),
        Field::new("members_at_first_seen", DataType::Int32, false),
        Field::new("read_ratio", DataType::Float64, true),
        timestamp(true, "half_read_at"),
        timestamp(true, "ninety_read_at"),
        Field::new("run_id", DataType::Int64, false),
        Field::new("change_no", DataType::Int64, false),
    ]))
}

/// `message_read_progress/capture_date=YYYY-MM-DD/run-<run_id>.parquet`, relative to the
/// lake's root.
pub fn relative_path(capture_date: NaiveDate, run_id: i64) -> String {
    super::names::per_run(TABLE_DIR, capture_date, run_id)
}

/// Where the change rows go: Hive-style files in the lake, or in Iceberg mode the table
/// `receipts.message_read_progress` beside the snapshots' ([`super::iceberg::progress`]).
#[derive(Debug, Clone)]
pub enum Form {
    Hive(Lake),
    Iceberg(Box<super::iceberg::IcebergLake>),
}

impl Form {
    /// The form the runs' settings give the lake.
    pub fn of(lake: &Lake, format: crate::settings::TableFormat) -> Result<Form, SinkError> {
        Ok(match format {
            crate::settings::TableFormat::Parquet => Form::Hive(lake.clone()),
            crate::settings::TableFormat::Iceberg => {
                Form::Iceberg(Box::new(super::iceberg::IcebergLake::new(lake)?))
            }
        })
    }
}

/// Writes the due files of run `run_id` (the caller's own run after its last batch; `None` from
/// `lake verify --repair`) and of every ended run whose files are due. Returns the files
/// written.
pub async fn export(pool: &PgPool, form: &Form, run_id: Option<i64>) -> Result<u64, SinkError> {
    let mut written = 0;
    for (run, date, through) in due_files(pool, run_id).await? {
        let mut rows = changes(pool, run, date).await?;
        match form {
            Form::Hive(lake) => put_file(pool, lake, run, date, &rows).await?,
            Form::Iceberg(lake) => {
                // A table only grows: the changes it holds already stay as they are.
                rows.retain(|r| Some(r.change_no) > through);
                if super::iceberg::progress::append(lake, pool, run, date, &rows)
                    .await?
                    .is_none()
                {
                    continue;
                }
            }
        }
        written += 1;
    }
    Ok(written)
}

/// Puts run `run`'s file of `date` whole at its fixed name, then records it.
async fn put_file(
    pool: &PgPool,
    lake: &Lake,
    run: i64,
    date: NaiveDate,
    rows: &[ChangeRow],
) -> Result<(), SinkError> {
    let path = relative_path(date, run);
    let batch = record_batch(rows).map_err(|e| SinkError::Parquet {
        op: "building the rows of",
        path: path.clone().into(),
        source: e.into(),
    })?;
    let bytes = objects::put_record_batch(lake, &path, &batch).await?;
    crate::crashpoint::hit("progress_lake").await;
    let mut conn = pool
        .acquire()
        .await
        .map_err(SinkError::pg("recording a read-progress file"))?;
    record_in(&mut conn, run, date, &path, rows, bytes).await
}

/// The due files (run, capture date, the greatest change the lake holds of it) of run
/// `run_id` and of the runs no longer running.
pub async fn due_files(
    pool: &PgPool,
    run_id: Option<i64>,
) -> Result<Vec<(i64, NaiveDate, Option<i64>)>, SinkError> {
    sqlx::query_as(
        "SELECT f.run_id, f.capture_date, f.committed_through
         FROM receipts.message_read_progress_files f
         JOIN receipts.export_runs r USING (run_id)
         WHERE f.path IS NULL AND (r.run_id = $1 OR r.status <> 'running')
         ORDER BY 1, 2",
    )
    .bind(run_id)
    .fetch_all(pool)
    .await
    .map_err(SinkError::pg("listing the due read-progress files"))
}

/// The change rows of run `run` dated `date`, in key order.
pub async fn changes(
    pool: &PgPool,
    run: i64,
    date: NaiveDate,
) -> Result<Vec<ChangeRow>, SinkError> {
    sqlx::query_as(
        "SELECT coalesce(c.sdkappid, (SELECT sdkappid FROM receipts.default_app)) AS sdkappid,
                c.group_id, c.msg_seq, c.first_seen_at, c.members_at_first_seen, c.read_ratio,
                c.half_read_at, c.ninety_read_at, c.run_id, c.change_no
         FROM receipts.message_read_progress_changes c
         WHERE c.run_id = $1 AND c.capture_date = $2
         ORDER BY 1, c.group_id, c.msg_seq",
    )
    .bind(run)
    .bind(date)
    .fetch_all(pool)
    .await
    .map_err(SinkError::pg("reading a run's read-progress changes"))
}

/// Records a file put in place (or committed to the Iceberg table, in the commit's
/// transaction) with the `rows` it holds: from now on it is part of the lake.
pub async fn record_in(
    conn: &mut sqlx::PgConnection,
    run: i64,
    date: NaiveDate,
    path: &str,
    rows: &[ChangeRow],
    bytes: u64,
) -> Result<(), SinkError> {
    let through = rows.iter().map(|r| r.change_no).max();
    sqlx::query(
        "UPDATE receipts.message_read_progress_files
         SET path = $3, row_count = $4, byte_size = $5,
             committed_through = greatest(committed_through, $6)
         WHERE run_id = $1 AND capture_date = $2 AND path IS NULL",
    )
    .bind(run)
    .bind(date)
    .bind(path)
    .bind(rows.len() as i64)
    .bind(bytes as i64)
    .bind(through)
    .execute(conn)
    .await
    .map_err(SinkError::pg("recording a read-progress file"))?;
    Ok(())
}

/// Forgets the recorded files of `paths` (lost from the lake), so the next [`export`] writes
/// them again from the log. Returns how many it forgot.
pub async fn forget(pool: &PgPool, paths: &[String]) -> Result<u64, SinkError> {
    sqlx::query(
        "UPDATE receipts.message_read_progress_files
         SET path = NULL, row_count = NULL, byte_size = NULL
         WHERE path = ANY($1)",
    )
    .bind(paths)
    .execute(pool)
    .await
    .map(|done| done.rows_affected())
    .map_err(SinkError::pg("forgetting lost read-progress files"))
}

/// Forgets every recorded file and what the lake holds of each run's changes, so the next
/// [`export`] writes every change row the log keeps again (the Iceberg table created anew after
/// another engine dropped it). Returns how many files it forgot.
pub async fn forget_all(pool: &PgPool) -> Result<u64, SinkError> {
    sqlx::query(
        "UPDATE receipts.message_read_progress_files
         SET path = NULL, row_count = NULL, byte_size = NULL, committed_through = NULL,
             committed_rows = NULL",
    )
    .execute(pool)
    .await
    .map(|done| done.rows_affected())
    .map_err(SinkError::pg("forgetting the read-progress files"))
}

fn record_batch(rows: &[ChangeRow]) -> Result<RecordBatch, arrow::error::ArrowError> {
    RecordBatch::try_new(arrow_schema(), columns(rows, "UTC"))
}

/// The change rows as the columns of [`arrow_schema`], in its order, timestamps in the time
/// zone `tz` (`UTC`; the Iceberg writer's Arrow schema spells it `+00:00`).
pub fn columns(rows: &[ChangeRow], tz: &str) -> Vec<ArrayRef> {
    let micros = |at: &DateTime<Utc>| at.timestamp_micros();
    let times = |values: Vec<Option<i64>>| {
        Arc::new(TimestampMicrosecondArray::from(values).with_timezone(tz)) as ArrayRef
    };
    vec![
        Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.sdkappid))),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.group_id.as_str()),
        )),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.msg_seq))),
        times(
            rows.iter()
                .map(|r| Some(micros(&r.first_seen_at)))
                .collect(),
        ),
        Arc::new(Int32Array::from_iter_values(
            rows.iter().map(|r| r.members_at_first_seen),
        )),
        Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.read_ratio))),
        times(
            rows.iter()
                .map(|r| r.half_read_at.as_ref().map(micros))
                .collect(),
        ),
        times(
            rows.iter()
                .map(|r| r.ninety_read_at.as_ref().map(micros))
                .collect(),
        ),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.run_id))),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.change_no),
        )),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_is_hive_style_by_capture_date_and_names_the_run() {
        let day = NaiveDate::from_ymd_opt(2026, 12, 7).unwrap();
        assert_eq!(
            relative_path(day, 42),
            "message_read_progress/capture_date=2026-12-07/run-42.parquet"
        );
        let name = super::super::names::parse(&relative_path(day, 42)).unwrap();
        assert_eq!(name.run_id, 42);
    }

    #[test]
    fn a_change_row_keeps_its_nulls() {
        let at: DateTime<Utc> = "2026-12-07T10:00:00Z".parse().unwrap();
        let row = ChangeRow {
            sdkappid: None,
            group_id: "g".into(),
            msg_seq: 7,
            first_seen_at: at,
            members_at_first_seen: 10,
            read_ratio: None,
            half_read_at: Some(at),
            ninety_read_at: None,
            run_id: 3,
            change_no: 9,
        };
        let batch = record_batch(&[row]).unwrap();
        assert_eq!(batch.num_rows(), 1);
        assert_eq!(batch.column(0).null_count(), 1);
        assert_eq!(batch.column(5).null_count(), 1);
        assert_eq!(batch.column(6).null_count(), 0);
        assert_eq!(batch.column(7).null_count(), 1);
    }
}
