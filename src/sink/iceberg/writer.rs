//! Writing a run's data files: one open file per capture date, rolled to a new part at the
//! row limit ([`crate::sink::rolling`], as Hive-style files are), but through iceberg-rust's
//! writer (so each file carries the table's field ids and its column statistics), straight to
//! its final name `data/captured_at_day=YYYY-MM-DD/run-<run_id>-<part>-<random>.parquet` under
//! the table ([`crate::sink::names::data`]). A file no commit names is invisible to every
//! reader; the random part keeps a fenced writer still finishing a file from ever overwriting
//! one its run's new owner committed.

use super::IcebergLake;
use crate::sink::parquet::{columns, CommittedFile};
use crate::sink::rolling::{PartFiles, Rolling};
use crate::sink::{Fence, SinkError, WriteBatch};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef as ArrowSchemaRef;
use chrono::NaiveDate;
use iceberg::spec::{DataFile, Literal, PartitionKey, Struct};
use iceberg::table::Table;
use iceberg::writer::base_writer::data_file_writer::{DataFileWriter, DataFileWriterBuilder};
use iceberg::writer::file_writer::location_generator::{
    DefaultLocationGenerator, FileNameGenerator,
};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::{IcebergWriter, IcebergWriterBuilder};
use std::sync::Arc;

/// The one name a writer gives its one file.
#[derive(Debug, Clone)]
pub(super) struct FixedName(pub(super) String);

impl FileNameGenerator for FixedName {
    fn generate_file_name(&self) -> String {
        self.0.clone()
    }
}

type Writer = DataFileWriter<ParquetWriterBuilder, DefaultLocationGenerator, FixedName>;

/// A finished data file, written and closed, waiting for its commit.
#[derive(Debug, Clone)]
pub struct FinishedFile {
    pub data_file: DataFile,
    /// What `parquet_files` records (the path relative to the lake).
    pub info: CommittedFile,
}

/// A data file being written.
pub struct OpenFile {
    writer: Writer,
    date: NaiveDate,
    location: String,
    part: i32,
    rows: u64,
    batch_nos: Vec<i32>,
}

/// The Iceberg side of one run: an open data file per capture date, rolled to a new part at the
/// row limit ([`Rolling`]), each finished file committed by [`super::commit::publish`].
pub type RunIceberg = Rolling<IcebergParts>;

/// How Iceberg data files are written: through iceberg-rust's writer, with the table's schema
/// and partition spec as the run opened it.
pub struct IcebergParts {
    lake: IcebergLake,
    table: Table,
    arrow_schema: ArrowSchemaRef,
    pool: sqlx::PgPool,
    fence: Fence,
}

impl Rolling<IcebergParts> {
    /// Writes into `table`'s data directory for the fenced run, each file recorded in `pool`
    /// as pending before its first byte ([`super::pending`]); `next_part` as for
    /// `RunParquet::new`.
    pub fn new(
        lake: IcebergLake,
        table: Table,
        pool: sqlx::PgPool,
        fence: Fence,
        next_part: i32,
    ) -> Result<RunIceberg, SinkError> {
        let arrow_schema =
            iceberg::arrow::schema_to_arrow_schema(table.metadata().current_schema())
                .map_err(SinkError::iceberg("converting the table schema"))?;
        let parts = IcebergParts {
            lake,
            table,
            arrow_schema: Arc::new(arrow_schema),
            pool,
            fence,
        };
        Ok(Rolling::with_parts(parts, next_part))
    }
}

impl PartFiles for IcebergParts {
    type Open = OpenFile;
    type Done = FinishedFile;

    async fn open(&mut self, date: NaiveDate, part: i32) -> Result<OpenFile, SinkError> {
        let metadata = self.table.metadata();
        let schema = metadata.current_schema().clone();
        let spec = metadata.default_partition_spec().as_ref().clone();
        let days = (date - NaiveDate::from_ymd_opt(1970, 1, 1).expect("the epoch")).num_days();
        let key = PartitionKey::new(
            spec,
            schema.clone(),
            Struct::from_iter([Some(Literal::date(days as i32))]),
        );
        let name = crate::sink::names::data(self.fence.run_id, part);
        let locations = DefaultLocationGenerator::new(metadata)
            .map_err(SinkError::iceberg("locating the data directory"))?;
        let location = {
            use iceberg::writer::file_writer::location_generator::LocationGenerator;
            locations.generate_location(Some(&key), &name)
        };
        // Recorded before the first byte: `iceberg maintain` never takes it for an orphan.
        super::pending::register(&self.pool, self.fence, &location).await?;
        let parquet = ParquetWriterBuilder::new(crate::sink::parquet::writer_properties(), schema);
        let rolling = RollingFileWriterBuilder::new(
            parquet,
            usize::MAX, // one file per part: the row limit of `Rolling` rolls, not the size
            self.lake.file_io().clone(),
            locations,
            FixedName(name),
        );
        let writer = self
            .lake
            .within(
                "opening a data file",
                DataFileWriterBuilder::new(rolling).build(Some(key)),
            )
            .await?;
        Ok(OpenFile {
            writer,
            date,
            location,
            part,
            rows: 0,
            batch_nos: Vec::new(),
        })
    }

    async fn append(&mut self, file: &mut OpenFile, batch: &WriteBatch) -> Result<(), SinkError> {
        if !batch.rows.is_empty() {
            // A table not yet evolved to `sdkappid` (an older release's, before its first run
            // by this one) takes the columns it has.
            let mut cols = columns(batch, "+00:00");
            cols.truncate(self.arrow_schema.fields().len());
            let record_batch =
                RecordBatch::try_new(self.arrow_schema.clone(), cols).map_err(|e| {
                    SinkError::InvalidBatch {
                        run_id: batch.run_id,
                        batch_no: batch.batch_no,
                        reason: format!("does not fit the Iceberg schema: {e}"),
                    }
                })?;
            self.lake
                .within("writing a data file", file.writer.write(record_batch))
                .await?;
            file.rows += batch.rows.len() as u64;
        }
        if file.batch_nos.last() != Some(&batch.batch_no) {
            file.batch_nos.push(batch.batch_no);
        }
        Ok(())
    }

    fn rows(file: &OpenFile) -> u64 {
        file.rows
    }

    async fn close(&mut self, mut file: OpenFile) -> Result<FinishedFile, SinkError> {
        let data_files = self
            .lake
            .within("finishing a data file", file.writer.close())
            .await?;
        let [data_file] = <[DataFile; 1]>::try_from(data_files).map_err(|files| {
            SinkError::IcebergState(format!(
                "the Iceberg writer made {} files for {} (one expected)",
                files.len(),
                file.location
            ))
        })?;
        let info = CommittedFile {
            relative_path: self.lake.relative(data_file.file_path()),
            capture_date: file.date,
            part: file.part,
            row_count: data_file.record_count(),
            byte_size: data_file.file_size_in_bytes(),
            batch_nos: file.batch_nos,
        };
        Ok(FinishedFile { data_file, info })
    }

    /// The file is never committed; whatever reached storage is removed (a file left by a
    /// crash instead is the next repair's or `maintain`'s to remove).
    async fn discard(&mut self, file: OpenFile) -> Result<(), SinkError> {
        drop(file.writer);
        if self.lake.file_io().delete(&file.location).await.is_ok() {
            // Still recorded if the delete failed: the repair's sweep removes file and row.
            let _ = super::pending::forget(&self.pool, &file.location).await;
        }
        Ok(())
    }
}
