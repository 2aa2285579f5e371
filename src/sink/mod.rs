//! The sinks: Postgres (the source of truth) and Parquet (derived from it, for analysts).
//!
//! A [`WriteBatch`] is the unit both sinks commit: the receipts of one or more API answers of
//! one run, all with the same capture date. Postgres commits it idempotently (the batch number
//! is recorded in the same transaction); Parquet appends it to the run's open file for that
//! date, and a file enters the warehouse when its manifest row commits. The sinks know
//! nothing of HTTP.

use chrono::{DateTime, NaiveDate, Utc};
use std::sync::Arc;

/// One observation of one message's read receipt: a row of `receipt_snapshots`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRow {
    /// When the API answered the call that carried this receipt (UTC, microseconds).
    pub captured_at: DateTime<Utc>,
    /// Shared by all rows of a group, so a batch does not copy the id per row.
    pub group_id: Arc<str>,
    pub msg_seq: i64,
    pub read_num: i32,
    pub unread_num: i32,
}

/// A seq that answered a non-zero per-item `Code` (10062: no receipt): a row of
/// `receipt_item_codes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemCodeRow {
    pub captured_at: DateTime<Utc>,
    pub group_id: Arc<str>,
    pub msg_seq: i64,
    pub code: i32,
}

/// What the run hands to both sinks at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteBatch {
    pub run_id: i64,
    /// The run's partition key in `receipt_snapshots` (its UTC start date).
    pub run_date: NaiveDate,
    /// Unique within the run; a retried write of the same number is a no-op.
    pub batch_no: i32,
    /// The Chat app the rows came from (its SDKAppID): every row of a run is of its app. `None`
    /// only for rows Postgres holds from before apps (issue 26) that no run has adopted yet,
    /// when the lake is rebuilt from them; Postgres refuses such a batch.
    pub sdkappid: Option<i64>,
    /// The UTC date of every row's `captured_at`: a batch never straddles midnight, so it
    /// belongs to exactly one Parquet partition.
    pub capture_date: NaiveDate,
    pub rows: Vec<SnapshotRow>,
    pub codes: Vec<ItemCodeRow>,
}

pub mod fence;
pub mod iceberg;
pub mod identity;
pub mod manifest;
pub mod names;
pub mod objects;
pub mod owner;
pub mod parquet;
pub mod postgres;
pub mod progress;
pub mod progress_lake;
pub mod rebuild;
pub mod remote;
pub mod rolling;
pub mod target;
pub mod verify;
pub mod warehouse;

pub use fence::Fence;
pub use target::{Access, LakeTarget};

use std::path::PathBuf;

/// Errors of both sinks. Each variant names what was being done and, for files, which path.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A statement failed; [`SinkError::is_retryable`] says whether the connection was at fault.
    #[error("while {context}: {source}")]
    Postgres {
        context: &'static str,
        #[source]
        source: sqlx::Error,
    },
    /// A file system operation failed (disk full, permission denied, ...).
    #[error("while {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An object store refused or failed a request (after its client's own retries). The key
    /// is the object's; no credential is part of the message. The store's error is shown here
    /// and not chained as a source: its message already holds its causes.
    #[error(
        "while {op} {key} in the object store: {}",
        crate::lake::describe_store_error(error)
    )]
    Store {
        op: &'static str,
        key: String,
        error: object_store::Error,
    },
    /// The Parquet or Arrow library refused to write or read a file.
    #[error("while {op} Parquet file {}: {source}", path.display())]
    Parquet {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: ::parquet::errors::ParquetError,
    },
    /// The caller handed over something the sinks must not write (a bug upstream).
    #[error("invalid write batch {batch_no} of run {run_id}: {reason}")]
    InvalidBatch {
        run_id: i64,
        batch_no: i32,
        reason: String,
    },
    /// The Iceberg library refused to write, read or commit. Shown in one short line
    /// ([`brief`]): the library's own text carries the store's whole answer (HTTP headers and
    /// all, ~4 KB); the full error is logged at debug level.
    #[error(
        "while {op} (Iceberg table receipts.receipt_snapshots): {}",
        brief(source)
    )]
    Iceberg {
        op: &'static str,
        source: Box<::iceberg::Error>,
    },
    /// The settings are wrong, or the command does not apply to this lake (the message says
    /// how to fix it): exit code 2.
    #[error("{0}")]
    Config(String),
    /// The lake did not answer within `EXPORT_LAKE_TIMEOUT`.
    #[error(
        "while {op} (Iceberg table receipts.receipt_snapshots): {lake} did not answer within {}s \
         (EXPORT_LAKE_TIMEOUT); check the store's endpoint and the network, or allow a slow \
         store longer",
        bound.as_secs()
    )]
    LakeTimeout {
        op: &'static str,
        lake: String,
        bound: std::time::Duration,
    },
    /// Another engine changed the Iceberg table's schema or partition spec (the message names
    /// the change and how to undo it): exit code 2.
    #[error("{0}")]
    ForeignChange(String),
    /// An Iceberg commit or listing went wrong in a way no setting fixes.
    #[error("{0}")]
    IcebergState(String),
    /// The catalog's table lives somewhere else than the configured lake.
    #[error("the Iceberg table receipts.receipt_snapshots is at {found}, not at {configured}: point --parquet-dir / EXPORT_PARQUET_DIR at the lake that holds it (the table is never moved or recreated)")]
    IcebergElsewhere { found: String, configured: String },
    /// The catalog lacks the Iceberg table, but the lake holds it (dropped from the catalog by
    /// another engine, its files kept): it is never created again over them.
    #[error(
        "the Iceberg table receipts.receipt_snapshots is not in the catalog (receipts.iceberg_tables), \
         but {table} holds it: the manifest lists {committed} data file(s) committed to it{}; \
         another engine dropped it from the catalog and kept its files (pyiceberg's drop_table, \
         Spark's DROP TABLE without PURGE), and a new table is never created over them: {}",
        newest.as_ref().map_or(String::new(), |n| format!(", and its newest metadata file is {n}")),
        register_fix(newest.as_deref())
    )]
    TableDropped {
        table: String,
        committed: i64,
        /// The newest metadata file's location, if any is left.
        newest: Option<String>,
    },
    /// A file holds something other than what this version writes.
    #[error("Parquet file {} is not ours: {reason}", path.display())]
    Foreign { path: PathBuf, reason: String },
    /// The manifest lists no file at this path.
    #[error("Parquet file {path} is not in the manifest")]
    NotListed { path: String },
    /// The run does not exist in `receipts.export_runs`.
    #[error("run {0} is not in receipts.export_runs")]
    UnknownRun(i64),
    /// A file's final name is already in the manifest for other rows: the file there is not
    /// replaced (a rebuild of the day may have used the name meanwhile).
    #[error("Parquet file {path} is already in the manifest for other rows: not replaced")]
    AlreadyRecorded { path: String },
    /// Another process took the run over (its epoch moved): this writer must change nothing
    /// more of it. `by` says who, e.g. "run 7 (job b) on host h, pid 42".
    #[error("run {run_id} was fenced by {by}: another process declared it dead and took it over")]
    Fenced { run_id: i64, by: String },
}

/// The most an error from the storage layer adds to its line: with the exporter's own words
/// around it, a store error stays under 300 characters.
const BRIEF_CHARS: usize = 200;

/// An Iceberg error in one line of at most [`BRIEF_CHARS`] characters: its message and kind,
/// then the first words of its cause (the store's answer), whitespace collapsed.
pub(crate) fn brief(error: &::iceberg::Error) -> String {
    let mut text = format!("{} ({})", error.message(), error.kind());
    if let Some(cause) = std::error::Error::source(error) {
        text.push_str(": ");
        text.push_str(&cause.to_string());
    }
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(BRIEF_CHARS) {
        Some((cut, _)) => format!("{}…", &one_line[..cut]),
        None => one_line,
    }
}

/// How to register a dropped Iceberg table again from its newest metadata file.
fn register_fix(newest: Option<&str>) -> String {
    match newest {
        Some(newest) => format!(
            "register it again from its newest metadata file, as the schema's owner (or a role \
             with INSERT on receipts.iceberg_tables): INSERT INTO receipts.iceberg_tables \
             (catalog_name, table_namespace, table_name, metadata_location, iceberg_type) VALUES \
             ('receipt_exporter', 'receipts', 'receipt_snapshots', '{newest}', 'TABLE'); or with \
             pyiceberg: catalog.register_table(\"receipts.receipt_snapshots\", \"{newest}\") \
             (README, \"A table dropped from the catalog\")"
        ),
        None => "its metadata files are gone too: restore the table's metadata/ from a backup of \
                 the lake, then register its newest metadata file in receipts.iceberg_tables \
                 (README, \"A table dropped from the catalog\")"
            .to_string(),
    }
}

impl SinkError {
    /// True when the same call may succeed if repeated on a new connection.
    pub fn is_retryable(&self) -> bool {
        match self {
            SinkError::Postgres { source, .. } => postgres::is_connection_error(source),
            _ => false,
        }
    }

    /// True when the user's settings are at fault (exit code 2).
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            SinkError::Config(_)
                | SinkError::ForeignChange(_)
                | SinkError::IcebergElsewhere { .. }
                | SinkError::TableDropped { .. }
        )
    }

    pub(crate) fn pg(context: &'static str) -> impl FnOnce(sqlx::Error) -> SinkError {
        move |source| SinkError::Postgres { context, source }
    }

    pub(crate) fn iceberg(op: &'static str) -> impl FnOnce(::iceberg::Error) -> SinkError {
        move |source| {
            tracing::debug!("while {op}: {source:?}");
            SinkError::Iceberg {
                op,
                source: Box::new(source),
            }
        }
    }

    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> SinkError {
        let path = path.into();
        move |source| SinkError::Io { op, path, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_error_is_one_short_line() {
        let answer = format!(
            "PermissionDenied at write => S3Error {{ code: AccessDenied }}\n{}",
            "x-amz-request-id: 4442587FB7D0A2F9\nx-amz-id-2: abcdefghijklmnop\n".repeat(60)
        );
        let source = ::iceberg::Error::new(::iceberg::ErrorKind::Unexpected, "Failure in doing io")
            .with_source(std::io::Error::other(answer));
        let text = SinkError::iceberg("writing a data file")(source).to_string();
        assert!(!text.contains('\n'), "{text}");
        assert!(text.chars().count() <= 300, "{} chars: {text}", text.len());
        assert!(text.starts_with("while writing a data file (Iceberg table receipts.receipt_snapshots): Failure in doing io"), "{text}");
        assert!(text.contains("AccessDenied"), "{text}");
    }
}
