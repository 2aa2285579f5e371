//! The read progress's change rows as the second Iceberg table of the catalog,
//! `receipts.message_read_progress` (format v2, partitioned by `capture_date`), in Iceberg mode
//! ([`crate::sink::progress_lake`] decides when a run's file of a date is due; this module
//! writes and commits it).
//!
//! One due file, one commit: the data file is written by iceberg-rust's writer (field ids,
//! column statistics) under the table's `data/capture_date=D/`, then one Postgres transaction
//! locks the file's row in `message_read_progress_files` (a row recorded meanwhile ends it: the
//! file is deleted, never committed twice) and the catalog row, appends the file (fast append,
//! [`super::commit::Staging`]), moves the pointer by compare-and-set and records the file's
//! path. A crash before that COMMIT leaves a data file no metadata names, invisible to every
//! reader, and the row still due: the next run's end writes the rows again.
//!
//! The lake's truth, as for the snapshots' table ([`crate::sink::verify::table_check_of`]): a
//! data file lost from the store is replaced from the change log in one overwrite commit
//! ([`replace`]), the file's own statistics saying which rows it held (one run, a range of
//! `change_no`); a table the catalog lost is never created again empty over committed files
//! ([`ensure`] refuses, naming `lake verify --repair`, which recreates it from the whole log).

use super::commit::{move_pointer, Staging};
use super::writer::FixedName;
use super::{IcebergLake, NAMESPACE, SUMMARY_FILE, SUMMARY_RUN_ID};
use crate::sink::progress_lake::ChangeRow;
use crate::sink::SinkError;
use arrow::array::{Date32Array, RecordBatch};
use chrono::NaiveDate;
use iceberg::spec::{
    DataFile, Literal, NestedField, PartitionKey, PrimitiveType, Schema, Struct, Transform, Type,
    UnboundPartitionSpec,
};
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::file_writer::location_generator::{
    DefaultLocationGenerator, LocationGenerator,
};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::{IcebergWriter, IcebergWriterBuilder};
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::Arc;

/// The table's name in the namespace `receipts`.
pub const TABLE: &str = "message_read_progress";
/// The partition field: `capture_date` itself (identity).
pub const PARTITION_FIELD: &str = "capture_date";
/// The field ids of `run_id` and `change_no` ([`schema`]).
pub const RUN_ID_FIELD: i32 = 9;
pub const CHANGE_NO_FIELD: i32 = 10;

/// The table's schema: the Hive-style files' columns ([`crate::sink::progress_lake`]), then
/// the partition's `capture_date`, with Iceberg field ids.
pub fn schema() -> Schema {
    let required = |id, name, t| Arc::new(NestedField::required(id, name, Type::Primitive(t)));
    let optional = |id, name, t| Arc::new(NestedField::optional(id, name, Type::Primitive(t)));
    Schema::builder()
        .with_schema_id(0)
        .with_fields(vec![
            optional(1, "sdkappid", PrimitiveType::Long),
            required(2, "group_id", PrimitiveType::String),
            required(3, "msg_seq", PrimitiveType::Long),
            required(4, "first_seen_at", PrimitiveType::Timestamptz),
            required(5, "members_at_first_seen", PrimitiveType::Int),
            optional(6, "read_ratio", PrimitiveType::Double),
            optional(7, "half_read_at", PrimitiveType::Timestamptz),
            optional(8, "ninety_read_at", PrimitiveType::Timestamptz),
            required(9, "run_id", PrimitiveType::Long),
            required(10, "change_no", PrimitiveType::Long),
            required(11, "capture_date", PrimitiveType::Date),
        ])
        .build()
        .expect("a valid schema")
}

fn spec() -> UnboundPartitionSpec {
    UnboundPartitionSpec::builder()
        .with_spec_id(0)
        .add_partition_field(11, PARTITION_FIELD, Transform::Identity)
        .expect("a valid partition field")
        .build()
}

/// The table in `lake`, created (empty) if the catalog does not list it yet and no file was
/// ever committed to it; one the catalog lost (dropped) is refused, naming the repair: an empty
/// table in its place would hide every change row committed before from the readers.
pub async fn ensure(lake: &IcebergLake, pool: &PgPool) -> Result<(IcebergLake, Table), SinkError> {
    let lake = lake.with_table(TABLE);
    let mut conn = pool
        .acquire()
        .await
        .map_err(SinkError::pg("opening the Iceberg catalog"))?;
    if let Some(table) = lake.load(&mut conn, false).await? {
        return Ok((lake.clone(), lake.check_location(table)?));
    }
    let committed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM receipts.message_read_progress_files
         WHERE path IS NOT NULL AND starts_with(path, $1)",
    )
    .bind(format!("{}/", lake.relative(&lake.table_location())))
    .fetch_one(&mut *conn)
    .await
    .map_err(SinkError::pg("reading the read-progress files"))?;
    if committed > 0 {
        return Err(SinkError::IcebergState(format!(
            "the Iceberg table {NAMESPACE}.{TABLE} is not in the catalog (receipts.iceberg_tables), \
             though {committed} data file(s) of change rows were committed to it: another engine \
             or a hand dropped it. `receipt-exporter lake verify --repair` creates it again with \
             every change row Postgres keeps; until then the runs' change rows wait in Postgres"
        )));
    }
    let (location, metadata) = lake.first_metadata_with(schema(), spec())?;
    lake.within(
        "writing the read-progress table's first metadata",
        metadata.write_to(lake.file_io(), &location),
    )
    .await?;
    if !super::insert_table(&mut conn, TABLE, &location.to_string()).await? {
        // Another process created it meanwhile: ours is never referenced.
        let _ = lake.file_io().delete(location.to_string()).await;
    }
    let table = lake.load(&mut conn, false).await?.expect("just created");
    Ok((lake.clone(), lake.check_location(table)?))
}

/// Writes run `run`'s change rows of `date` as one data file and commits it, recording its
/// path in `message_read_progress_files` in the same transaction. Returns the path and size
/// recorded, or `None` when the file was recorded meanwhile (by another process's export).
pub async fn append(
    lake: &IcebergLake,
    pool: &PgPool,
    run: i64,
    date: NaiveDate,
    rows: &[ChangeRow],
) -> Result<Option<(String, u64)>, SinkError> {
    let (lake, table) = ensure(lake, pool).await?;
    let data_file = write(&lake, &table, run, date, rows).await?;
    crate::crashpoint::hit("progress_lake").await;
    let path = lake.relative(data_file.file_path());
    let size = data_file.file_size_in_bytes();
    let mut tx = pool
        .begin()
        .await
        .map_err(SinkError::pg("starting a read-progress commit"))?;
    let due: Option<Option<String>> = sqlx::query_scalar(
        "SELECT path FROM receipts.message_read_progress_files
         WHERE run_id = $1 AND capture_date = $2 FOR UPDATE",
    )
    .bind(run)
    .bind(date)
    .fetch_optional(&mut *tx)
    .await
    .map_err(SinkError::pg("locking a read-progress file's row"))?;
    if !matches!(due, Some(None)) {
        drop(tx);
        let _ = lake.file_io().delete(data_file.file_path()).await;
        return Ok(None);
    }
    let base = lake.load(&mut tx, true).await?.ok_or_else(|| {
        SinkError::IcebergState(format!(
            "the Iceberg table {NAMESPACE}.{TABLE} left the catalog during a commit"
        ))
    })?;
    let summary = HashMap::from([
        (SUMMARY_RUN_ID.to_string(), run.to_string()),
        (SUMMARY_FILE.to_string(), path.clone()),
    ]);
    let itx = Transaction::new(&base);
    let itx = itx
        .fast_append()
        .add_data_files([data_file])
        .set_snapshot_properties(summary)
        .apply(itx)
        .map_err(SinkError::iceberg("preparing a read-progress commit"))?;
    let staged = Staging::stage(&base, itx).await?;
    move_pointer(&mut tx, &base, &staged).await?;
    crate::sink::progress_lake::record_in(&mut tx, run, date, &path, rows, size).await?;
    count_committed(&mut tx, run, date, rows.len()).await?;
    tx.commit()
        .await
        .map_err(SinkError::pg("committing to the read-progress table"))?;
    Ok(Some((path, size)))
}

/// Adds a commit's `rows` to what the table holds of run `run`'s changes of `date`
/// (`committed_rows`: what `lake verify` expects of the run, summed over its commits).
async fn count_committed(
    conn: &mut sqlx::PgConnection,
    run: i64,
    date: NaiveDate,
    rows: usize,
) -> Result<(), SinkError> {
    sqlx::query(
        "UPDATE receipts.message_read_progress_files
         SET committed_rows = coalesce(committed_rows, 0) + $3
         WHERE run_id = $1 AND capture_date = $2",
    )
    .bind(run)
    .bind(date)
    .bind(rows as i64)
    .execute(conn)
    .await
    .map_err(SinkError::pg("counting a read-progress commit's rows"))?;
    Ok(())
}

/// Writes the rows as one data file of `table`'s partition `date`; returns it, closed.
async fn write(
    lake: &IcebergLake,
    table: &Table,
    run: i64,
    date: NaiveDate,
    rows: &[ChangeRow],
) -> Result<DataFile, SinkError> {
    let metadata = table.metadata();
    let schema = metadata.current_schema().clone();
    let days = (date - NaiveDate::from_ymd_opt(1970, 1, 1).expect("the epoch")).num_days() as i32;
    let key = PartitionKey::new(
        metadata.default_partition_spec().as_ref().clone(),
        schema.clone(),
        Struct::from_iter([Some(Literal::date(days))]),
    );
    let name = crate::sink::names::data(run, 1);
    let locations = DefaultLocationGenerator::new(metadata)
        .map_err(SinkError::iceberg("locating the data directory"))?;
    let location = locations.generate_location(Some(&key), &name);
    let parquet = ParquetWriterBuilder::new(crate::sink::parquet::writer_properties(), schema);
    let rolling = RollingFileWriterBuilder::new(
        parquet,
        usize::MAX,
        lake.file_io().clone(),
        locations,
        FixedName(name),
    );
    let mut writer = lake
        .within(
            "opening a read-progress data file",
            DataFileWriterBuilder::new(rolling).build(Some(key)),
        )
        .await?;
    let batch = record_batch(table, days, rows)?;
    lake.within("writing a read-progress data file", writer.write(batch))
        .await?;
    let files = lake
        .within("finishing a read-progress data file", writer.close())
        .await?;
    <[DataFile; 1]>::try_from(files)
        .map(|[file]| file)
        .map_err(|files| {
            SinkError::IcebergState(format!(
                "the Iceberg writer made {} files for {location} (one expected)",
                files.len()
            ))
        })
}

fn record_batch(table: &Table, days: i32, rows: &[ChangeRow]) -> Result<RecordBatch, SinkError> {
    let arrow = iceberg::arrow::schema_to_arrow_schema(table.metadata().current_schema())
        .map_err(SinkError::iceberg("converting the read-progress schema"))?;
    let mut columns = crate::sink::progress_lake::columns(rows, "+00:00");
    columns.push(Arc::new(Date32Array::from(vec![days; rows.len()])));
    RecordBatch::try_new(Arc::new(arrow), columns).map_err(|e| {
        SinkError::IcebergState(format!(
            "the read-progress rows do not fit the table's schema: {e}"
        ))
    })
}

/// What [`replace`] did.
#[derive(Debug, Default)]
pub struct Replaced {
    /// Lost files replaced: (lost path, run, rows).
    pub replaced: Vec<(String, i64, u64)>,
    /// Lost files left as they are, with why and the fix.
    pub not_repaired: Vec<String>,
}

/// Replaces the table's lost live data files (relative paths: deleted or damaged in the store)
/// by their rows written again from the change log, in one overwrite snapshot
/// ([`super::overwrite`]) and one Postgres transaction that locks the catalog row, moves the
/// pointer and records the new files' paths in place of the lost ones. A lost file is ours
/// when its statistics name one run and one capture date and the log holds exactly as many
/// change rows of them in its `change_no` range as the file held; any other (another engine's
/// compaction, a run still running) is left, named. A crash before the COMMIT leaves only files
/// no metadata names.
pub async fn replace(
    lake: &IcebergLake,
    pool: &PgPool,
    lost: &[String],
) -> Result<Replaced, SinkError> {
    let lake = lake.with_table(TABLE);
    let mut out = Replaced::default();
    let mut conn = pool
        .acquire()
        .await
        .map_err(SinkError::pg("opening the Iceberg catalog"))?;
    let Some(table) = lake.load(&mut conn, false).await? else {
        return Err(SinkError::IcebergState(format!(
            "the Iceberg table {NAMESPACE}.{TABLE} left the catalog during the repair"
        )));
    };
    drop(conn);
    let live = super::overwrite::live_files(&lake, &table).await?;
    let mut added: Vec<(String, DataFile, usize)> = Vec::new();
    for file in live.iter().filter(|f| lost.contains(&f.relative)) {
        match rows_of(pool, file).await? {
            Ok((run, date, rows)) => {
                let data_file = write(&lake, &table, run, date, &rows).await?;
                out.replaced
                    .push((file.relative.clone(), run, rows.len() as u64));
                added.push((file.relative.clone(), data_file, rows.len()));
            }
            Err(why) => out.not_repaired.push(format!("{}: {why}", file.relative)),
        }
    }
    if added.is_empty() {
        return Ok(out);
    }
    let committed = commit_replacement(&lake, pool, &added).await;
    if let Err(e) = committed {
        // Nothing names the new data files: remove them now.
        for (_, data_file, _) in &added {
            let _ = lake.file_io().delete(data_file.file_path()).await;
        }
        return Err(e);
    }
    Ok(out)
}

/// The run, capture date and change rows a lost file of ours held, read off its statistics
/// and the change log; or why it is not ours to write again.
async fn rows_of(
    pool: &PgPool,
    file: &super::overwrite::LiveFile,
) -> Result<Result<(i64, NaiveDate, Vec<ChangeRow>), String>, SinkError> {
    let restore = "restore it from a backup of the lake, or rewrite the table with the engine \
                   that wrote it";
    let (Some(run), Some(date), Some((first, last))) = (
        file.single_run_in(RUN_ID_FIELD),
        file.capture_date(),
        file.long_bounds(CHANGE_NO_FIELD),
    ) else {
        return Ok(Err(format!(
            "its statistics name no single run and change range (another engine's file): {restore}"
        )));
    };
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM receipts.export_runs WHERE run_id = $1")
            .bind(run)
            .fetch_optional(pool)
            .await
            .map_err(SinkError::pg("reading a run's status"))?;
    if status.as_deref() == Some("running") {
        return Ok(Err(format!(
            "run {run} is still running; run `lake verify --repair` once it ended"
        )));
    }
    let mut rows = crate::sink::progress_lake::changes(pool, run, date).await?;
    rows.retain(|r| (first..=last).contains(&r.change_no));
    let held = file.data_file().record_count();
    if rows.len() as u64 != held {
        return Ok(Err(format!(
            "it held {held} rows, and the change log keeps {} of run {run}'s changes of {date} in \
             its range: {restore}",
            rows.len()
        )));
    }
    Ok(Ok((run, date, rows)))
}

/// The overwrite commit of [`replace`]: the lost files out, the new ones in, their paths
/// recorded in their place.
async fn commit_replacement(
    lake: &IcebergLake,
    pool: &PgPool,
    added: &[(String, DataFile, usize)],
) -> Result<(), SinkError> {
    crate::crashpoint::hit("overwrite_before_commit").await;
    let mut tx = pool
        .begin()
        .await
        .map_err(SinkError::pg("starting a read-progress repair"))?;
    let base = lake.load(&mut tx, true).await?.ok_or_else(|| {
        SinkError::IcebergState(format!(
            "the Iceberg table {NAMESPACE}.{TABLE} left the catalog during the repair"
        ))
    })?;
    let lost: std::collections::BTreeSet<String> =
        added.iter().map(|(path, _, _)| path.clone()).collect();
    let files: Vec<DataFile> = added.iter().map(|(_, f, _)| f.clone()).collect();
    let staged = super::overwrite::stage(lake, &base, &lost, files).await?;
    move_pointer(&mut tx, &base, &staged).await?;
    for (old, data_file, rows) in added {
        sqlx::query(
            "UPDATE receipts.message_read_progress_files
             SET path = $2, row_count = $3, byte_size = $4
             WHERE path = $1",
        )
        .bind(old)
        .bind(lake.relative(data_file.file_path()))
        .bind(*rows as i64)
        .bind(data_file.file_size_in_bytes() as i64)
        .execute(&mut *tx)
        .await
        .map_err(SinkError::pg("recording a replaced read-progress file"))?;
    }
    tx.commit()
        .await
        .map_err(SinkError::pg("committing the read-progress repair"))?;
    Ok(())
}
