//! The Parquet sink: streams write batches into per-day files and commits each file
//! atomically (write hidden, fsync, rename, fsync the directory).
//!
//! Layout under the Parquet directory:
//! `receipt_snapshots/capture_date=YYYY-MM-DD/run-<run_id>-<part>.parquet`. A file being
//! written is `.run-<run_id>-<part>.<random>.parquet.tmp` in the same directory: hidden, not
//! matched by `*.parquet` (readers never pick it up), created new with a random part so a
//! planted link cannot redirect it ([`crate::files`]). A finished file is sealed (footer
//! written, fsynced) here; renaming it into place and recording it happen together, under the
//! run's fence, in [`super::manifest::publish`]. For a lake in an object store the files are
//! written in a spool directory instead and uploaded by [`super::remote`]. This module touches
//! files only, never Postgres.

use super::rolling::{PartFiles, Rolling};
use super::{SinkError, WriteBatch};
use arrow::array::{
    Array, ArrayRef, Int32Array, Int64Array, RecordBatch, StringBuilder, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::NaiveDate;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use tempfile::NamedTempFile;

/// The version of the file layout below; readers check it in the file metadata. 2 added the
/// column `sdkappid` (issue 26), after the others; files of version 1 lack it (read it as null:
/// DuckDB `union_by_name`, pyarrow a dataset with this schema).
pub const SCHEMA_VERSION: &str = "2";
/// The file metadata key holding [`SCHEMA_VERSION`].
pub const SCHEMA_VERSION_KEY: &str = "receipt_exporter.schema_version";
/// The file metadata key holding the version of receipt-exporter that wrote the file.
pub const WRITER_VERSION_KEY: &str = "receipt_exporter.writer_version";
/// The directory of the snapshot table under the Parquet directory.
pub const TABLE_DIR: &str = "receipt_snapshots";
/// Rows per row group: large enough for analytic scans, and the most one writer buffers.
pub const ROW_GROUP_ROWS: usize = 1_000_000;
pub use super::rolling::DEFAULT_MAX_ROWS_PER_FILE;

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("run_id", DataType::Int64, false),
        Field::new(
            "captured_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("group_id", DataType::Utf8, false),
        Field::new("msg_seq", DataType::Int64, false),
        Field::new("read_num", DataType::Int32, false),
        Field::new("unread_num", DataType::Int32, false),
        Field::new("sdkappid", DataType::Int64, true),
    ]))
});

/// The Arrow schema of every snapshot file.
pub fn arrow_schema() -> SchemaRef {
    SCHEMA.clone()
}

/// `receipt_snapshots/capture_date=YYYY-MM-DD`, relative to the Parquet directory.
pub fn partition_dir(capture_date: NaiveDate) -> String {
    format!(
        "{TABLE_DIR}/capture_date={}",
        capture_date.format("%Y-%m-%d")
    )
}

/// A file's path relative to the Parquet directory, as the manifest stores it.
pub fn relative_path(capture_date: NaiveDate, run_id: i64, part: i32) -> String {
    format!(
        "{}/{}",
        partition_dir(capture_date),
        super::names::snapshot(run_id, part)
    )
}

/// A file renamed to its final name, fsynced with its directory: ready for the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedFile {
    /// Relative to the Parquet directory, with `/` separators.
    pub relative_path: String,
    pub capture_date: NaiveDate,
    pub part: i32,
    pub row_count: u64,
    pub byte_size: u64,
    /// The write batches whose rows the file holds, in the order they were appended.
    pub batch_nos: Vec<i32>,
}

/// One Parquet file of one run, capture date and part, being written.
pub struct PartitionWriter {
    run_id: i64,
    capture_date: NaiveDate,
    part: i32,
    dir: PathBuf,
    /// The temporary file's path (the file itself is inside `writer`).
    temp_path: PathBuf,
    writer: ArrowWriter<NamedTempFile>,
    rows: u64,
    batch_nos: Vec<i32>,
}

impl PartitionWriter {
    /// Opens the temporary file in the partition directory under `root`, creating the
    /// directory if needed.
    pub fn open(
        root: &Path,
        run_id: i64,
        capture_date: NaiveDate,
        part: i32,
    ) -> Result<Self, SinkError> {
        Self::open_in(
            &root.join(partition_dir(capture_date)),
            run_id,
            capture_date,
            part,
        )
    }

    /// Like [`PartitionWriter::open`], but writes into `dir` (a staging copy of the partition
    /// directory that will be renamed into place); the committed path still names the
    /// partition directory.
    pub fn open_in(
        dir: &Path,
        run_id: i64,
        capture_date: NaiveDate,
        part: i32,
    ) -> Result<Self, SinkError> {
        std::fs::create_dir_all(dir)
            .map_err(SinkError::io("creating the partition directory", dir))?;
        let (prefix, suffix) = super::names::temp_affixes(run_id, part);
        let file = crate::files::create_beside(dir, &prefix, suffix).map_err(SinkError::io(
            "creating a temporary file in",
            dir.join(format!("{prefix}*{suffix}")),
        ))?;
        let temp_path = file.path().to_path_buf();
        let writer = ArrowWriter::try_new(file, arrow_schema(), Some(writer_properties()))
            .map_err(|source| SinkError::Parquet {
                op: "starting",
                path: temp_path.clone(),
                source,
            })?;
        Ok(PartitionWriter {
            run_id,
            capture_date,
            part,
            dir: dir.to_path_buf(),
            temp_path,
            writer,
            rows: 0,
            batch_nos: Vec::new(),
        })
    }

    /// Rows appended so far.
    pub fn row_count(&self) -> u64 {
        self.rows
    }

    /// Where the file is while it is written.
    pub fn temp_path(&self) -> &Path {
        &self.temp_path
    }

    /// Appends the batch's rows. The batch must be of this writer's run and capture date.
    pub fn append(&mut self, batch: &WriteBatch) -> Result<(), SinkError> {
        if batch.run_id != self.run_id || batch.capture_date != self.capture_date {
            return Err(SinkError::InvalidBatch {
                run_id: batch.run_id,
                batch_no: batch.batch_no,
                reason: format!(
                    "appended to the Parquet file of run {} and capture date {}",
                    self.run_id, self.capture_date
                ),
            });
        }
        if !batch.rows.is_empty() {
            let record_batch = to_record_batch(batch);
            self.writer
                .write(&record_batch)
                .map_err(|source| SinkError::Parquet {
                    op: "writing",
                    path: self.temp_path.clone(),
                    source,
                })?;
            self.rows += batch.rows.len() as u64;
        }
        if self.batch_nos.last() != Some(&batch.batch_no) {
            self.batch_nos.push(batch.batch_no);
        }
        Ok(())
    }

    /// Writes the footer and fsyncs the file, still under its temporary name: complete on
    /// disk, ready to be renamed into place.
    pub fn seal(self) -> Result<SealedFile, SinkError> {
        // `into_inner` flushes the last row group and writes the footer.
        let file = self
            .writer
            .into_inner()
            .map_err(|source| SinkError::Parquet {
                op: "finishing",
                path: self.temp_path.clone(),
                source,
            })?;
        file.as_file()
            .sync_all()
            .map_err(SinkError::io("fsyncing", &self.temp_path))?;
        let byte_size = file
            .as_file()
            .metadata()
            .map_err(SinkError::io("reading the size of", &self.temp_path))?
            .len();
        Ok(SealedFile {
            temp: Some(file.into_temp_path()),
            spool: None,
            final_path: self
                .dir
                .join(super::names::snapshot(self.run_id, self.part)),
            info: CommittedFile {
                relative_path: relative_path(self.capture_date, self.run_id, self.part),
                capture_date: self.capture_date,
                part: self.part,
                row_count: self.rows,
                byte_size,
                batch_nos: self.batch_nos,
            },
        })
    }

    /// Seals the file and renames it into place, without the manifest: for staging a rebuilt
    /// day and for tools. A run's files go through [`super::manifest::publish`].
    pub fn commit(self) -> Result<CommittedFile, SinkError> {
        let mut sealed = self.seal()?;
        sealed.rename_into_place()?;
        Ok(sealed.info)
    }

    /// Gives up on the file: removes the temporary file.
    pub fn abort(self) -> Result<(), SinkError> {
        let path = self.temp_path.clone();
        drop(self.writer);
        remove_if_present(&path)
    }
}

/// A complete file under its temporary name, waiting to be renamed into place. Dropped before
/// that, it removes the temporary file.
pub struct SealedFile {
    /// `None` once renamed.
    temp: Option<tempfile::TempPath>,
    /// For a lake in an object store: the run's spool directory, kept while the file is in it.
    spool: Option<Arc<tempfile::TempDir>>,
    final_path: PathBuf,
    info: CommittedFile,
}

impl SealedFile {
    /// What the manifest records for the file.
    pub fn info(&self) -> &CommittedFile {
        &self.info
    }

    /// Where the complete file is while it waits (`None` once renamed into place).
    pub fn temp_path(&self) -> Option<&Path> {
        self.temp.as_deref()
    }

    /// Renames the file to its final name (replacing whatever is there: a link planted there is
    /// replaced, never followed) and fsyncs the directory, so the file survives a crash before
    /// the manifest records it. Once done, doing it again does nothing.
    pub fn rename_into_place(&mut self) -> Result<(), SinkError> {
        let Some(temp) = self.temp.take() else {
            return Ok(());
        };
        if let Err(e) = temp.persist(&self.final_path) {
            self.temp = Some(e.path);
            return Err(SinkError::Io {
                op: "renaming the finished temporary file to",
                path: self.final_path.clone(),
                source: e.error,
            });
        }
        sync_dir(self.final_path.parent().expect("a file has a directory"))
    }

    /// The file's record (for the manifest once [`SealedFile::rename_into_place`] has run).
    pub fn into_committed(self) -> CommittedFile {
        self.info
    }
}

/// fsyncs a directory, so the renames and removals in it survive a crash.
pub fn sync_dir(dir: &Path) -> Result<(), SinkError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(SinkError::io("fsyncing the directory", dir))
}

/// Removes a file; a file already gone is fine.
pub(crate) fn remove_if_present(path: &Path) -> Result<(), SinkError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(SinkError::io("removing", path)(e))
        }
        _ => Ok(()),
    }
}

pub(crate) fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_key_value_metadata(Some(vec![
            KeyValue::new(SCHEMA_VERSION_KEY.to_string(), SCHEMA_VERSION.to_string()),
            KeyValue::new(
                WRITER_VERSION_KEY.to_string(),
                env!("CARGO_PKG_VERSION").to_string(),
            ),
        ]))
        .build()
}

fn to_record_batch(batch: &WriteBatch) -> RecordBatch {
    RecordBatch::try_new(arrow_schema(), columns(batch, "UTC"))
        .expect("columns built to the schema")
}

/// Arrow columns built straight from the rows, without an intermediate copy, in the order of
/// [`arrow_schema`]; `captured_at` carries the time zone `tz` (the Iceberg writer's is "+00:00").
pub(crate) fn columns(batch: &WriteBatch, tz: &str) -> Vec<ArrayRef> {
    let (run_id, rows) = (batch.run_id, &batch.rows);
    let text_bytes = rows.iter().map(|r| r.group_id.len()).sum();
    let mut groups = StringBuilder::with_capacity(rows.len(), text_bytes);
    for row in rows {
        groups.append_value(&row.group_id);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(vec![run_id; rows.len()])),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(
                rows.iter().map(|r| r.captured_at.timestamp_micros()),
            )
            .with_timezone(tz),
        ),
        Arc::new(groups.finish()),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.msg_seq))),
        Arc::new(Int32Array::from_iter_values(
            rows.iter().map(|r| r.read_num),
        )),
        Arc::new(Int32Array::from_iter_values(
            rows.iter().map(|r| r.unread_num),
        )),
        Arc::new(Int64Array::from(vec![batch.sdkappid; rows.len()])),
    ];
    columns
}

/// The Parquet side of one run: an open file per capture date, rolled to a new part at the
/// row limit ([`Rolling`]), sealed for publishing ([`super::manifest::publish`]).
pub type RunParquet = Rolling<HiveParts>;

/// How Hive-style snapshot files are written: [`PartitionWriter`]s under the lake's directory,
/// in one staging directory (a rebuilt day), or in a spool directory for an object store.
pub struct HiveParts {
    run_id: i64,
    /// The lake's directory: each file in its partition directory under it.
    root: PathBuf,
    /// Set when every file goes into this one directory instead (a staged day, a spool).
    staging_dir: Option<PathBuf>,
    /// For a lake in an object store: a directory of this process's own (random name, removed
    /// when the last file in it is gone) where files are written before their upload.
    spool: Option<Arc<tempfile::TempDir>>,
}

impl Rolling<HiveParts> {
    /// Writes under the Parquet directory `root`; `next_part` is the first part number not
    /// used by this run (see `manifest::next_part`).
    pub fn new(root: impl Into<PathBuf>, run_id: i64, next_part: i32) -> RunParquet {
        let parts = HiveParts {
            run_id,
            root: root.into(),
            staging_dir: None,
            spool: None,
        };
        Rolling::with_parts(parts, next_part)
    }

    /// Writes every file into `dir` (a staging partition directory) instead.
    pub fn staged(dir: impl Into<PathBuf>, run_id: i64, next_part: i32) -> RunParquet {
        let parts = HiveParts {
            run_id,
            root: PathBuf::new(),
            staging_dir: Some(dir.into()),
            spool: None,
        };
        Rolling::with_parts(parts, next_part)
    }

    /// Writes into the lake's directory, or for a lake in an object store into a new spool
    /// directory under the system's temporary directory (`TMPDIR`), to be uploaded from there.
    pub fn for_lake(
        lake: &crate::lake::Lake,
        run_id: i64,
        next_part: i32,
    ) -> Result<RunParquet, SinkError> {
        let Some(_) = lake.remote() else {
            let dir = lake.local_dir().expect("a lake is local or remote");
            return Ok(RunParquet::new(dir, run_id, next_part));
        };
        let spool = crate::files::spool_dir().map_err(SinkError::io(
            "creating a spool directory in",
            std::env::temp_dir(),
        ))?;
        let parts = HiveParts {
            run_id,
            root: PathBuf::new(),
            staging_dir: Some(spool.path().to_path_buf()),
            spool: Some(Arc::new(spool)),
        };
        Ok(Rolling::with_parts(parts, next_part))
    }
}

impl PartFiles for HiveParts {
    type Open = PartitionWriter;
    type Done = SealedFile;

    async fn open(&mut self, date: NaiveDate, part: i32) -> Result<PartitionWriter, SinkError> {
        match &self.staging_dir {
            Some(dir) => PartitionWriter::open_in(dir, self.run_id, date, part),
            None => PartitionWriter::open(&self.root, self.run_id, date, part),
        }
    }

    async fn append(
        &mut self,
        file: &mut PartitionWriter,
        batch: &WriteBatch,
    ) -> Result<(), SinkError> {
        file.append(batch)
    }

    fn rows(file: &PartitionWriter) -> u64 {
        file.row_count()
    }

    async fn close(&mut self, file: PartitionWriter) -> Result<SealedFile, SinkError> {
        let mut sealed = file.seal()?;
        sealed.spool = self.spool.clone();
        Ok(sealed)
    }

    async fn discard(&mut self, file: PartitionWriter) -> Result<(), SinkError> {
        file.abort()
    }
}

/// One row of a snapshot file, as read back.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ParquetRow {
    pub run_id: i64,
    /// Microseconds since the Unix epoch, UTC.
    pub captured_at_micros: i64,
    pub group_id: String,
    pub msg_seq: i64,
    pub read_num: i32,
    pub unread_num: i32,
    /// `None` in a file of schema version 1 (before apps) and for rows not adopted yet.
    pub sdkappid: Option<i64>,
}

/// Reads every row of a snapshot file (for tests and repair checks: it holds the whole
/// file in memory).
pub fn read_rows(path: &Path) -> Result<Vec<ParquetRow>, SinkError> {
    let parquet_err = |op| {
        move |source| SinkError::Parquet {
            op,
            path: path.to_path_buf(),
            source,
        }
    };
    let file = File::open(path).map_err(SinkError::io("opening", path))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(parquet_err("opening"))?
        .build()
        .map_err(parquet_err("reading"))?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| parquet_err("reading")(e.into()))?;
        let fields = arrow_schema().fields().clone();
        let found = batch.schema().fields().clone();
        // Version 1 files: the same columns without the last, `sdkappid`.
        if found != fields && found[..] != fields[..fields.len() - 1] {
            let reason = format!("schema {:?}", batch.schema());
            return Err(SinkError::Foreign {
                path: path.to_path_buf(),
                reason,
            });
        }
        append_rows(&batch, &mut rows);
    }
    Ok(rows)
}

fn append_rows(batch: &RecordBatch, rows: &mut Vec<ParquetRow>) {
    fn col<T: 'static>(batch: &RecordBatch, i: usize) -> &T {
        batch
            .column(i)
            .as_any()
            .downcast_ref::<T>()
            .expect("schema checked")
    }
    let run_id = col::<Int64Array>(batch, 0);
    let captured = col::<TimestampMicrosecondArray>(batch, 1);
    let group = col::<arrow::array::StringArray>(batch, 2);
    let seq = col::<Int64Array>(batch, 3);
    let read = col::<Int32Array>(batch, 4);
    let unread = col::<Int32Array>(batch, 5);
    let app = (batch.num_columns() > 6).then(|| col::<Int64Array>(batch, 6));
    rows.extend((0..batch.num_rows()).map(|i| ParquetRow {
        run_id: run_id.value(i),
        captured_at_micros: captured.value(i),
        group_id: group.value(i).to_string(),
        msg_seq: seq.value(i),
        read_num: read.value(i),
        unread_num: unread.value(i),
        sdkappid: app.filter(|a| a.is_valid(i)).map(|a| a.value(i)),
    }));
}
/// Runs file work on the blocking pool, so compression and fsync do not stall the runtime.
pub(crate) async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("a blocking file task was cancelled: {e}"),
        },
    }
}
