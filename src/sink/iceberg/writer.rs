//! Writing a run's data files: one open file per capture date, rolled to a new part at the
//! row limit, like [`crate::sink::parquet::RunParquet`], but through iceberg-rust's writer (so
//! each file carries the table's field ids and its column statistics), straight to its final
//! name `data/captured_at_day=YYYY-MM-DD/run-<run_id>-<part>-<random>.parquet` under the table.
//! A file no commit names is invisible to every reader; the random part keeps a fenced writer
//! still finishing a file from ever overwriting one its run's new owner committed.

use super::IcebergLake;
use crate::sink::parquet::{columns, CommittedFile, DEFAULT_MAX_ROWS_PER_FILE};
use crate::sink::{SinkError, WriteBatch};
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
use std::collections::BTreeMap;
use std::sync::Arc;

/// The one name a writer gives its one file.
#[derive(Debug, Clone)]
struct FixedName(String);

impl FileNameGenerator for FixedName {
    fn generate_file_name(&self) -> String {
        self.0.clone()
    }
}

type Writer = DataFileWriter<ParquetWriterBuilder, DefaultLocationGenerator, FixedName>;

/// How a run's data file is named: `run-<run_id>-<part>-<random>.parquet`.
pub fn file_name(run_id: i64, part: i32) -> String {
    let random: u64 = rand::random();
    format!("run-{run_id}-{part:04}-{random:016x}.parquet")
}

/// Whether `name` is a data file of run `run_id`.
pub fn is_run_file(name: &str, run_id: i64) -> bool {
    name.strip_prefix(&format!("run-{run_id}-"))
        .and_then(|rest| rest.strip_suffix(".parquet"))
        .is_some_and(|rest| {
            rest.split_once('-').is_some_and(|(part, random)| {
                part.len() >= 4 && part.bytes().all(|b| b.is_ascii_digit()) && !random.is_empty()
            })
        })
}

/// A finished data file, written and closed, waiting for its commit.
#[derive(Debug, Clone)]
pub struct FinishedFile {
    pub data_file: DataFile,
    /// What `parquet_files` records (the path relative to the lake).
    pub info: CommittedFile,
}

struct OpenFile {
    writer: Writer,
    location: String,
    part: i32,
    rows: u64,
    batch_nos: Vec<i32>,
}

/// The Iceberg side of one run.
pub struct RunIceberg {
    lake: IcebergLake,
    table: Table,
    arrow_schema: ArrowSchemaRef,
    run_id: i64,
    next_part: i32,
    max_rows_per_file: u64,
    open: BTreeMap<NaiveDate, OpenFile>,
}

impl RunIceberg {
    /// Writes into `table`'s data directory; `next_part` as for `RunParquet::new`.
    pub fn new(
        lake: IcebergLake,
        table: Table,
        run_id: i64,
        next_part: i32,
    ) -> Result<RunIceberg, SinkError> {
        let arrow_schema =
            iceberg::arrow::schema_to_arrow_schema(table.metadata().current_schema())
                .map_err(SinkError::iceberg("converting the table schema"))?;
        Ok(RunIceberg {
            lake,
            table,
            arrow_schema: Arc::new(arrow_schema),
            run_id,
            next_part,
            max_rows_per_file: DEFAULT_MAX_ROWS_PER_FILE,
            open: BTreeMap::new(),
        })
    }

    /// Sets the row count after which a file is finished and a new part begins.
    pub fn with_max_rows_per_file(mut self, rows: u64) -> RunIceberg {
        self.max_rows_per_file = rows.max(1);
        self
    }

    /// Appends the batch to its capture date's file; returns the files a roll finished.
    pub async fn append(&mut self, batch: &WriteBatch) -> Result<Vec<FinishedFile>, SinkError> {
        let mut finished = Vec::new();
        let date = batch.capture_date;
        let full = self.open.get(&date).is_some_and(|f| {
            f.rows > 0 && f.rows + batch.rows.len() as u64 > self.max_rows_per_file
        });
        if full {
            let file = self.open.remove(&date).expect("checked above");
            finished.push(Self::close(&self.lake, date, file).await?);
        }
        if batch.rows.is_empty() {
            if let Some(file) = self.open.get_mut(&date) {
                push_batch_no(&mut file.batch_nos, batch.batch_no);
            }
            return Ok(finished);
        }
        if !self.open.contains_key(&date) {
            let file = self.open_file(date).await?;
            self.open.insert(date, file);
        }
        let record_batch = RecordBatch::try_new(
            self.arrow_schema.clone(),
            columns(batch.run_id, &batch.rows, "+00:00"),
        )
        .map_err(|e| SinkError::InvalidBatch {
            run_id: batch.run_id,
            batch_no: batch.batch_no,
            reason: format!("does not fit the Iceberg schema: {e}"),
        })?;
        let file = self.open.get_mut(&date).expect("opened above");
        file.writer
            .write(record_batch)
            .await
            .map_err(SinkError::iceberg("writing a data file"))?;
        file.rows += batch.rows.len() as u64;
        push_batch_no(&mut file.batch_nos, batch.batch_no);
        Ok(finished)
    }

    async fn open_file(&mut self, date: NaiveDate) -> Result<OpenFile, SinkError> {
        let metadata = self.table.metadata();
        let schema = metadata.current_schema().clone();
        let spec = metadata.default_partition_spec().as_ref().clone();
        let days = (date - NaiveDate::from_ymd_opt(1970, 1, 1).expect("the epoch")).num_days();
        let key = PartitionKey::new(
            spec,
            schema.clone(),
            Struct::from_iter([Some(Literal::date(days as i32))]),
        );
        let name = file_name(self.run_id, self.next_part);
        let locations = DefaultLocationGenerator::new(metadata)
            .map_err(SinkError::iceberg("locating the data directory"))?;
        let location = {
            use iceberg::writer::file_writer::location_generator::LocationGenerator;
            locations.generate_location(Some(&key), &name)
        };
        let parquet = ParquetWriterBuilder::new(crate::sink::parquet::writer_properties(), schema);
        let rolling = RollingFileWriterBuilder::new(
            parquet,
            usize::MAX, // one file per part: the row limit above rolls, not the size
            self.lake.file_io().clone(),
            locations,
            FixedName(name),
        );
        let writer = DataFileWriterBuilder::new(rolling)
            .build(Some(key))
            .await
            .map_err(SinkError::iceberg("opening a data file"))?;
        let part = self.next_part;
        self.next_part += 1;
        Ok(OpenFile {
            writer,
            location,
            part,
            rows: 0,
            batch_nos: Vec::new(),
        })
    }

    /// Closes a file (not a method: `RunIceberg` is not `Sync`, so no `&self` across awaits).
    async fn close(
        lake: &IcebergLake,
        date: NaiveDate,
        mut file: OpenFile,
    ) -> Result<FinishedFile, SinkError> {
        let data_files = file
            .writer
            .close()
            .await
            .map_err(SinkError::iceberg("finishing a data file"))?;
        let [data_file] = <[DataFile; 1]>::try_from(data_files).map_err(|files| {
            SinkError::IcebergState(format!(
                "the Iceberg writer made {} files for {} (one expected)",
                files.len(),
                file.location
            ))
        })?;
        let info = CommittedFile {
            relative_path: lake.relative(data_file.file_path()),
            capture_date: date,
            part: file.part,
            row_count: data_file.record_count(),
            byte_size: data_file.file_size_in_bytes(),
            batch_nos: file.batch_nos,
        };
        Ok(FinishedFile { data_file, info })
    }

    /// Finishes every open file (each still needs its commit).
    pub async fn finish(mut self) -> Result<Vec<FinishedFile>, SinkError> {
        let open = std::mem::take(&mut self.open);
        let mut finished = Vec::new();
        for (date, file) in open {
            finished.push(Self::close(&self.lake, date, file).await?);
        }
        Ok(finished)
    }

    /// Gives up: the open files are never committed; whatever reached storage is removed
    /// (a file left by a crash instead is the next repair's or `maintain`'s to remove).
    pub async fn abort(mut self) {
        for (_, file) in std::mem::take(&mut self.open) {
            drop(file.writer);
            let _ = self.lake.file_io().delete(&file.location).await;
        }
    }
}

fn push_batch_no(batch_nos: &mut Vec<i32>, batch_no: i32) {
    if batch_nos.last() != Some(&batch_no) {
        batch_nos.push(batch_no);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_knows_its_data_files_by_name() {
        let name = file_name(12, 3);
        assert!(name.starts_with("run-12-0003-"), "{name}");
        assert!(is_run_file(&name, 12));
        assert!(!is_run_file(&name, 1));
        assert!(!is_run_file("run-12-0003.parquet", 12));
        assert!(!is_run_file("00001-abc.metadata.json", 12));
    }
}
