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
    /// The UTC date of every row's `captured_at`: a batch never straddles midnight, so it
    /// belongs to exactly one Parquet partition.
    pub capture_date: NaiveDate,
    pub rows: Vec<SnapshotRow>,
    pub codes: Vec<ItemCodeRow>,
}
