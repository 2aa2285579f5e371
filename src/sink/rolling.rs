//! One run's files, written as its batches come: an open file per capture date, rolled to a
//! new part when it reaches the row limit. Both lake forms write this way (Hive-style Parquet
//! files, [`super::parquet::HiveParts`]; Iceberg data files,
//! [`super::iceberg::writer::IcebergParts`]); only opening, appending to and closing one file
//! differ, behind [`PartFiles`]. A batch is never split across files, so the manifest can say
//! which file holds each batch, and a batch without rows opens no file.

use super::{SinkError, WriteBatch};
use chrono::NaiveDate;
use std::collections::BTreeMap;
use std::future::Future;

/// Rows after which a run's file is finished and a new part begins.
pub const DEFAULT_MAX_ROWS_PER_FILE: u64 = 5_000_000;

/// How one form writes one file of a run: [`Rolling`] decides when.
pub trait PartFiles: Send {
    /// A file being written.
    type Open: Send;
    /// A finished file, waiting to be published.
    type Done: Send;
    /// Opens the file of `date` numbered `part`.
    fn open(
        &mut self,
        date: NaiveDate,
        part: i32,
    ) -> impl Future<Output = Result<Self::Open, SinkError>> + Send;
    /// Appends the batch (of the file's date; maybe without rows: then only its number is
    /// remembered).
    fn append(
        &mut self,
        file: &mut Self::Open,
        batch: &WriteBatch,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;
    /// The rows appended so far.
    fn rows(file: &Self::Open) -> u64;
    /// Finishes the file (complete, not yet part of the lake).
    fn close(
        &mut self,
        file: Self::Open,
    ) -> impl Future<Output = Result<Self::Done, SinkError>> + Send;
    /// Gives the file up: whatever of it reached storage is removed.
    fn discard(&mut self, file: Self::Open) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// The files of one run being written (see the module header).
pub struct Rolling<P: PartFiles> {
    parts: P,
    next_part: i32,
    max_rows_per_file: u64,
    open: BTreeMap<NaiveDate, P::Open>,
}

impl<P: PartFiles> Rolling<P> {
    /// Files made by `parts`, numbered from `next_part`, the first part number the run has not
    /// used (see `manifest::next_part`).
    pub fn with_parts(parts: P, next_part: i32) -> Rolling<P> {
        Rolling {
            parts,
            next_part,
            max_rows_per_file: DEFAULT_MAX_ROWS_PER_FILE,
            open: BTreeMap::new(),
        }
    }

    /// Sets the row count after which a file is finished and a new part begins.
    pub fn with_max_rows_per_file(mut self, rows: u64) -> Self {
        self.max_rows_per_file = rows.max(1);
        self
    }

    /// The part number the next file will get.
    pub fn next_part(&self) -> i32 {
        self.next_part
    }

    /// Appends the batch to its capture date's file; returns the files that a roll to a new
    /// part finished (they still need publishing).
    pub async fn append(&mut self, batch: &WriteBatch) -> Result<Vec<P::Done>, SinkError> {
        let mut done = Vec::new();
        let date = batch.capture_date;
        let full = self.open.get(&date).is_some_and(|f| {
            let rows = P::rows(f);
            rows > 0 && rows + batch.rows.len() as u64 > self.max_rows_per_file
        });
        if full {
            let file = self.open.remove(&date).expect("checked above");
            done.push(self.parts.close(file).await?);
        }
        if !self.open.contains_key(&date) {
            if batch.rows.is_empty() {
                return Ok(done);
            }
            let file = self.parts.open(date, self.next_part).await?;
            self.next_part += 1;
            self.open.insert(date, file);
        }
        let file = self.open.get_mut(&date).expect("opened above");
        self.parts.append(file, batch).await?;
        Ok(done)
    }

    /// Finishes every open file (each still needs publishing).
    pub async fn finish(mut self) -> Result<Vec<P::Done>, SinkError> {
        let mut done = Vec::new();
        for (_, file) in std::mem::take(&mut self.open) {
            done.push(self.parts.close(file).await?);
        }
        Ok(done)
    }

    /// Gives up: every open file is discarded.
    pub async fn abort(mut self) -> Result<(), SinkError> {
        for (_, file) in std::mem::take(&mut self.open) {
            self.parts.discard(file).await?;
        }
        Ok(())
    }
}
