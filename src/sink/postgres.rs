//! The Postgres sink: commits one [`WriteBatch`] per transaction, exactly once.
//!
//! The batch number is claimed in `receipts.write_batches` inside the same transaction as the
//! rows, so a call repeated after a connection lost at COMMIT finds the claim and changes
//! nothing. Snapshot rows go in with binary `COPY` (no text escaping, no parsing on the
//! server); item codes and the `receipt_latest` upsert ship as arrays through `UNNEST`.
//! Snapshot rows name their group by its key in `receipts.snapshot_groups` (a new group id gets
//! one in the batch's transaction), so a row is 4 bytes of group, not the id's text.
//! This module writes and classifies errors; it does not decide what a run does about them.

use super::{Fence, SinkError, WriteBatch};
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{PgConnection, PgPool};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// What [`write_batch`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The batch committed now, with this many snapshot rows and item codes.
    Written { rows: u64, codes: u64 },
    /// The batch number was committed before (a retry after an ambiguous COMMIT): nothing
    /// changed. Callers treat this as success.
    AlreadyCommitted,
}

/// Commits `batch` in one transaction: check the run's fence, claim the batch number, COPY
/// the snapshots, insert the item codes, bring `receipt_latest` forward, merge the messages'
/// read progress ([`super::progress`]). A writer that was
/// fenced gets [`SinkError::Fenced`] and changes nothing.
pub async fn write_batch(
    pool: &PgPool,
    fence: Fence,
    batch: &WriteBatch,
) -> Result<WriteOutcome, SinkError> {
    validate(fence, batch)?;
    let mut tx = pool
        .begin()
        .await
        .map_err(SinkError::pg("starting a write transaction"))?;
    super::fence::check(&mut tx, fence).await?;
    if !claim_batch(&mut tx, batch).await? {
        // Committed by an earlier attempt: leave everything as that attempt left it.
        return Ok(WriteOutcome::AlreadyCommitted);
    }
    let keys = group_keys(&mut tx, batch).await?;
    let rows = copy_snapshots(&mut tx, batch, &keys).await?;
    let codes = insert_item_codes(&mut tx, batch).await?;
    if !batch.rows.is_empty() {
        let rows = RowArrays::of(batch);
        upsert_latest(&mut tx, batch.run_id, &rows).await?;
        super::progress::merge_rows(&mut tx, batch, &rows).await?;
    }
    crate::crashpoint::hit("pg_write").await;
    tx.commit()
        .await
        .map_err(SinkError::pg("committing a write batch"))?;
    Ok(WriteOutcome::Written { rows, codes })
}

/// [`write_batch`], repeated while the failure is a lost or refused connection (a Postgres
/// restart, a killed session), for up to `bound` (at least once); any other error returns at
/// once.
pub async fn write_batch_retrying(
    pool: &PgPool,
    fence: Fence,
    batch: &WriteBatch,
    bound: Duration,
) -> Result<WriteOutcome, SinkError> {
    retry_for(bound, SinkError::is_retryable, || {
        write_batch(pool, fence, batch)
    })
    .await
}

/// Calls `op` until it succeeds, fails with an error `retryable` refuses, or `bound` has
/// passed since the first call, sleeping [`backoff_delay`] between attempts.
pub async fn retry_for<T, E, F, Fut>(
    bound: Duration,
    retryable: impl Fn(&E) -> bool,
    mut op: F,
) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + bound;
    let mut attempt = 1;
    loop {
        match op().await {
            Err(error) if retryable(&error) && tokio::time::Instant::now() < deadline => {
                let delay = backoff_delay(attempt, rand::random())
                    .min(deadline - tokio::time::Instant::now());
                tracing::warn!(attempt, ?delay, %error, "Postgres failed on its connection; retrying");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            outcome => return outcome,
        }
    }
}

/// The pause after failed attempt number `attempt` (1-based): exponential from 200 ms, capped
/// at 10 s, with equal jitter (`jitter` in [0, 1) picks a point in the upper half:
/// [`crate::backoff::equal_jitter`]) so writers that lost the same server do not return in step.
pub fn backoff_delay(attempt: u32, jitter: f64) -> Duration {
    const BASE: Duration = Duration::from_millis(200);
    const CAP: Duration = Duration::from_secs(10);
    crate::backoff::equal_jitter(attempt.saturating_sub(1), BASE, CAP, jitter)
}

/// True when the error says the connection (not the statement) failed, so the same write may
/// succeed on a new connection: I/O errors, pool timeouts, the server shutting down or not yet
/// accepting connections (`57P01`-`57P03`), connection exceptions (`08xxx`). Deadlocks and
/// serialization failures (`40P01`, `40001`) count too: the server rolled the whole
/// transaction back, so repeating it is safe. Everything else (constraint violations, bad
/// data, permissions) fails the same way again.
pub fn is_connection_error(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08")
                || matches!(&*code, "57P01" | "57P02" | "57P03" | "40P01" | "40001")
        }),
        _ => false,
    }
}

/// Rejects a batch of another run than the fence's, and one whose rows do not belong to its
/// capture date: the Parquet partition is chosen by that date, so a mismatch would put rows in
/// the wrong day.
fn validate(fence: Fence, batch: &WriteBatch) -> Result<(), SinkError> {
    if fence.run_id != batch.run_id {
        return Err(SinkError::InvalidBatch {
            run_id: batch.run_id,
            batch_no: batch.batch_no,
            reason: format!("written under the fence of run {}", fence.run_id),
        });
    }
    if batch.sdkappid.is_none() && !batch.rows.is_empty() {
        return Err(SinkError::InvalidBatch {
            run_id: batch.run_id,
            batch_no: batch.batch_no,
            reason: "its rows name no app (SDKAppID): a run writes for exactly one app".into(),
        });
    }
    let wrong_day = |at: &DateTime<Utc>| at.date_naive() != batch.capture_date;
    let bad = batch
        .rows
        .iter()
        .map(|r| &r.captured_at)
        .chain(batch.codes.iter().map(|c| &c.captured_at));
    match bad.into_iter().find(|at| wrong_day(at)) {
        None => Ok(()),
        Some(at) => Err(SinkError::InvalidBatch {
            run_id: batch.run_id,
            batch_no: batch.batch_no,
            reason: format!(
                "a row captured at {at} is outside capture date {}",
                batch.capture_date
            ),
        }),
    }
}

/// Records the batch number; false when an earlier transaction already committed it.
async fn claim_batch(conn: &mut PgConnection, batch: &WriteBatch) -> Result<bool, SinkError> {
    let claimed: Option<i32> = sqlx::query_scalar(
        "INSERT INTO receipts.write_batches (run_id, batch_no, capture_date, row_count, code_count)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (run_id, batch_no) DO NOTHING
         RETURNING batch_no",
    )
    .bind(batch.run_id)
    .bind(batch.batch_no)
    .bind(batch.capture_date)
    .bind(count_i32(batch, batch.rows.len())?)
    .bind(count_i32(batch, batch.codes.len())?)
    .fetch_optional(conn)
    .await
    .map_err(SinkError::pg("recording a write batch"))?;
    Ok(claimed.is_some())
}

fn count_i32(batch: &WriteBatch, n: usize) -> Result<i32, SinkError> {
    i32::try_from(n).map_err(|_| SinkError::InvalidBatch {
        run_id: batch.run_id,
        batch_no: batch.batch_no,
        reason: format!("{n} rows do not fit one batch"),
    })
}

const COPY_SNAPSHOTS: &str = "COPY receipts.receipt_snapshot_rows \
     (run_id, run_date, batch_no, captured_at, group_key, msg_seq, read_num, unread_num) \
     FROM STDIN (FORMAT binary)";

/// The key of every group id of the batch's rows, adding the ids `snapshot_groups` lacks. Only
/// missing ids are inserted (an `ON CONFLICT` that skips still draws an identity value), in
/// sorted order so two batches adding the same new groups cannot deadlock; the keys are read
/// by a second statement, which sees an id another transaction committed meanwhile.
async fn group_keys(
    conn: &mut PgConnection,
    batch: &WriteBatch,
) -> Result<HashMap<Arc<str>, i32>, SinkError> {
    let mut ids: Vec<&str> = batch.rows.iter().map(|r| &*r.group_id).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    sqlx::query(
        "INSERT INTO receipts.snapshot_groups (sdkappid, group_id)
         SELECT $2, g FROM UNNEST($1::text[]) AS t(g)
         WHERE NOT EXISTS (SELECT 1 FROM receipts.snapshot_groups k
                           WHERE k.sdkappid = $2 AND k.group_id = t.g)
         ORDER BY g COLLATE \"C\"
         ON CONFLICT (sdkappid, group_id) DO NOTHING",
    )
    .bind(&ids)
    .bind(batch.sdkappid)
    .execute(&mut *conn)
    .await
    .map_err(SinkError::pg("recording new group ids"))?;
    let keys: Vec<(String, i32)> = sqlx::query_as(
        "SELECT group_id, group_key FROM receipts.snapshot_groups
         WHERE sdkappid = $2 AND group_id = ANY($1)",
    )
    .bind(&ids)
    .bind(batch.sdkappid)
    .fetch_all(&mut *conn)
    .await
    .map_err(SinkError::pg("reading group keys"))?;
    Ok(keys
        .into_iter()
        .map(|(id, key)| (Arc::from(id), key))
        .collect())
}

/// How much encoded COPY data to hold before sending it: big enough to keep the socket busy,
/// small enough that a 50,000-row batch is not copied whole once more.
const COPY_CHUNK: usize = 1 << 20;

/// COPYs the batch's snapshot rows; returns how many the server took.
async fn copy_snapshots(
    conn: &mut PgConnection,
    batch: &WriteBatch,
    keys: &HashMap<Arc<str>, i32>,
) -> Result<u64, SinkError> {
    if batch.rows.is_empty() {
        return Ok(0);
    }
    let prefix = BinaryRowPrefix::new(batch)?;
    let fail = SinkError::pg("copying snapshot rows");
    let mut copy = conn.copy_in_raw(COPY_SNAPSHOTS).await.map_err(fail)?;
    let mut buf = Vec::with_capacity(COPY_CHUNK + 1024);
    buf.extend_from_slice(&COPY_BINARY_HEADER);
    for row in &batch.rows {
        // Every id of the batch got its key above, in this transaction.
        let key = *keys
            .get(&row.group_id)
            .ok_or_else(|| SinkError::InvalidBatch {
                run_id: batch.run_id,
                batch_no: batch.batch_no,
                reason: format!("group {:?} got no key", row.group_id),
            })?;
        prefix.encode(&mut buf, row, key);
        if buf.len() >= COPY_CHUNK {
            copy.send(buf.as_slice())
                .await
                .map_err(SinkError::pg("copying snapshot rows"))?;
            buf.clear();
        }
    }
    buf.extend_from_slice(&COPY_BINARY_TRAILER);
    copy.send(buf.as_slice())
        .await
        .map_err(SinkError::pg("copying snapshot rows"))?;
    copy.finish()
        .await
        .map_err(SinkError::pg("finishing the snapshot COPY"))
}

/// The binary COPY file header: signature, flags (no OIDs), header extension length.
const COPY_BINARY_HEADER: [u8; 19] = *b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The end-of-data marker: a field count of -1.
const COPY_BINARY_TRAILER: [u8; 2] = (-1i16).to_be_bytes();

/// Microseconds from the Unix epoch to the Postgres epoch (2000-01-01 00:00 UTC).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// The encoded fields every row of a batch shares (run id, run date, batch number), so each
/// row costs one copy of them instead of three encodings.
struct BinaryRowPrefix {
    bytes: [u8; 2 + 8 + 8 + 8],
}

impl BinaryRowPrefix {
    /// Fails for a run id past int4, the rows table's type (two billion runs).
    fn new(batch: &WriteBatch) -> Result<BinaryRowPrefix, SinkError> {
        let run_id = i32::try_from(batch.run_id).map_err(|_| SinkError::InvalidBatch {
            run_id: batch.run_id,
            batch_no: batch.batch_no,
            reason: "the run id does not fit the snapshot rows' int4 run_id".into(),
        })?;
        let pg_epoch = NaiveDate::from_ymd_opt(2000, 1, 1).expect("a valid date");
        let days = (batch.run_date - pg_epoch).num_days() as i32;
        let mut bytes = [0u8; 26];
        let mut at = 0;
        let mut put = |field: &[u8]| {
            bytes[at..at + field.len()].copy_from_slice(field);
            at += field.len();
        };
        put(&8i16.to_be_bytes());
        put(&4i32.to_be_bytes());
        put(&run_id.to_be_bytes());
        put(&4i32.to_be_bytes());
        put(&days.to_be_bytes());
        put(&4i32.to_be_bytes());
        put(&batch.batch_no.to_be_bytes());
        Ok(BinaryRowPrefix { bytes })
    }

    /// Appends one tuple: field count, then each field as length + big-endian value.
    fn encode(&self, buf: &mut Vec<u8>, row: &super::SnapshotRow, group_key: i32) {
        buf.extend_from_slice(&self.bytes);
        put_field(
            buf,
            &(row.captured_at.timestamp_micros() - PG_EPOCH_MICROS).to_be_bytes(),
        );
        put_field(buf, &group_key.to_be_bytes());
        put_field(buf, &row.msg_seq.to_be_bytes());
        put_field(buf, &row.read_num.to_be_bytes());
        put_field(buf, &row.unread_num.to_be_bytes());
    }
}

fn put_field(buf: &mut Vec<u8>, value: &[u8]) {
    buf.extend_from_slice(&(value.len() as i32).to_be_bytes());
    buf.extend_from_slice(value);
}

/// Inserts the batch's item codes (few per batch: one statement of arrays is enough).
async fn insert_item_codes(conn: &mut PgConnection, batch: &WriteBatch) -> Result<u64, SinkError> {
    if batch.codes.is_empty() {
        return Ok(0);
    }
    let codes = &batch.codes;
    sqlx::query(
        "INSERT INTO receipts.receipt_item_codes
             (run_id, batch_no, captured_at, group_id, msg_seq, code)
         SELECT $1, $2, t.* FROM UNNEST($3::timestamptz[], $4::text[], $5::bigint[], $6::integer[]) AS t",
    )
    .bind(batch.run_id)
    .bind(batch.batch_no)
    .bind(codes.iter().map(|c| c.captured_at).collect::<Vec<_>>())
    .bind(codes.iter().map(|c| &*c.group_id).collect::<Vec<&str>>())
    .bind(codes.iter().map(|c| c.msg_seq).collect::<Vec<_>>())
    .bind(codes.iter().map(|c| c.code).collect::<Vec<_>>())
    .execute(conn)
    .await
    .map(|done| done.rows_affected())
    .map_err(SinkError::pg("inserting item codes"))
}

/// Moves `receipt_latest` forward to the batch's snapshots. An older capture (a late retry,
/// a backfill) never overwrites a newer one. Rows are applied in key order so two runs
/// upserting the same messages lock them in the same order and cannot deadlock.
async fn upsert_latest(
    conn: &mut PgConnection,
    run_id: i64,
    rows: &RowArrays<'_>,
) -> Result<(), SinkError> {
    let query = sqlx::query(
        "INSERT INTO receipts.receipt_latest
             (sdkappid, group_id, msg_seq, run_id, captured_at, read_num, unread_num)
         SELECT $7, g, s, $1, c, r, u
         FROM UNNEST($2::text[], $3::bigint[], $4::timestamptz[], $5::integer[], $6::integer[])
              AS t(g, s, c, r, u)
         ORDER BY g COLLATE \"C\", s
         ON CONFLICT (sdkappid, group_id, msg_seq) DO UPDATE
         SET run_id = excluded.run_id, captured_at = excluded.captured_at,
             read_num = excluded.read_num, unread_num = excluded.unread_num
         WHERE excluded.captured_at >= receipt_latest.captured_at",
    );
    rows.bind(query.bind(run_id))
        .execute(conn)
        .await
        .map_err(SinkError::pg("updating receipt_latest"))?;
    Ok(())
}

/// A batch's snapshot rows as the column arrays the statements `UNNEST` (`$2`..`$6`: group,
/// seq, capture, read, unread) and their app (`$7`), built once per batch for every statement
/// that reads them (the `receipt_latest` upsert, the read-progress merge).
pub struct RowArrays<'a> {
    sdkappid: Option<i64>,
    groups: Vec<&'a str>,
    seqs: Vec<i64>,
    captured: Vec<chrono::DateTime<chrono::Utc>>,
    read: Vec<i32>,
    unread: Vec<i32>,
}

impl<'a> RowArrays<'a> {
    pub fn of(batch: &'a WriteBatch) -> RowArrays<'a> {
        let rows = &batch.rows;
        RowArrays {
            sdkappid: batch.sdkappid,
            groups: rows.iter().map(|r| &*r.group_id).collect(),
            seqs: rows.iter().map(|r| r.msg_seq).collect(),
            captured: rows.iter().map(|r| r.captured_at).collect(),
            read: rows.iter().map(|r| r.read_num).collect(),
            unread: rows.iter().map(|r| r.unread_num).collect(),
        }
    }

    /// Binds the five arrays and the app, in order, after what `query` already binds (`$1`).
    pub fn bind<'q>(
        &'q self,
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        query
            .bind(self.groups.as_slice())
            .bind(self.seqs.as_slice())
            .bind(self.captured.as_slice())
            .bind(self.read.as_slice())
            .bind(self.unread.as_slice())
            .bind(self.sdkappid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::SnapshotRow;
    use std::sync::atomic::{AtomicU32, Ordering};

    const FENCE: Fence = Fence {
        run_id: 7,
        epoch: 1,
    };

    fn batch(rows: Vec<SnapshotRow>) -> WriteBatch {
        WriteBatch {
            run_id: 7,
            run_date: NaiveDate::from_ymd_opt(2026, 11, 25).unwrap(),
            batch_no: 3,
            sdkappid: Some(1_400_000_000),
            capture_date: NaiveDate::from_ymd_opt(2026, 11, 25).unwrap(),
            rows,
            codes: vec![],
        }
    }

    fn row(at: &str, group: &str) -> SnapshotRow {
        SnapshotRow {
            captured_at: at.parse().unwrap(),
            group_id: Arc::from(group),
            msg_seq: 0x0102,
            read_num: 5,
            unread_num: 6,
        }
    }

    #[test]
    fn binary_tuple_layout_matches_the_copy_format() {
        let b = batch(vec![]);
        let mut buf = Vec::new();
        BinaryRowPrefix::new(&b).unwrap().encode(
            &mut buf,
            &row("2000-01-01T00:00:01.000002Z", "a\\b"),
            0x0a0b,
        );
        let mut want = vec![0, 8];
        want.extend([0, 0, 0, 4, 0, 0, 0, 7]); // run_id, int4
        want.extend([0, 0, 0, 4]);
        want.extend(9825i32.to_be_bytes()); // 2026-11-25 is day 9825 after 2000-01-01
        want.extend([0, 0, 0, 4, 0, 0, 0, 3]); // batch_no
        want.extend([0, 0, 0, 8]);
        want.extend(1_000_002i64.to_be_bytes()); // micros after the Postgres epoch
        want.extend([0, 0, 0, 4, 0, 0, 0x0a, 0x0b]); // the group's key, not its id
        want.extend([0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 1, 2]);
        want.extend([0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 0, 4, 0, 0, 0, 6]);
        assert_eq!(buf, want);
    }

    #[test]
    fn a_row_from_another_day_is_rejected() {
        let b = batch(vec![
            row("2026-11-25T23:59:59Z", "g"),
            row("2026-11-26T00:00:00Z", "g"),
        ]);
        let err = validate(FENCE, &b).unwrap_err();
        assert!(
            matches!(err, SinkError::InvalidBatch { batch_no: 3, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("2026-11-26 00:00:00 UTC"), "{err}");
        assert!(validate(FENCE, &batch(vec![row("2026-11-25T00:00:00Z", "g")])).is_ok());
    }

    #[test]
    fn a_batch_of_another_run_than_the_fence_is_rejected() {
        let b = batch(vec![row("2026-11-25T00:00:00Z", "g")]);
        let other = Fence {
            run_id: 8,
            epoch: 1,
        };
        let err = validate(other, &b).unwrap_err();
        assert!(err.to_string().contains("fence of run 8"), "{err}");
    }

    #[test]
    fn connection_errors_are_retryable_and_statement_errors_are_not() {
        let io = sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset",
        ));
        assert!(is_connection_error(&io));
        assert!(is_connection_error(&sqlx::Error::PoolTimedOut));
        assert!(!is_connection_error(&sqlx::Error::PoolClosed));
        assert!(!is_connection_error(&sqlx::Error::RowNotFound));
        assert!(!is_connection_error(&sqlx::Error::Protocol("bad".into())));
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered_within_the_upper_half() {
        assert_eq!(backoff_delay(1, 0.0), Duration::from_millis(100));
        assert_eq!(backoff_delay(1, 1.0), Duration::from_millis(200));
        assert_eq!(backoff_delay(3, 0.0), Duration::from_millis(400));
        assert_eq!(backoff_delay(30, 0.999), backoff_delay(60, 0.999));
        assert!(backoff_delay(30, 0.999) <= Duration::from_secs(10));
        assert_eq!(backoff_delay(30, 0.0), Duration::from_secs(5));
    }

    fn io_error() -> SinkError {
        let source = sqlx::Error::Io(std::io::Error::new(std::io::ErrorKind::BrokenPipe, "gone"));
        SinkError::Postgres {
            context: "testing",
            source,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retry_repeats_connection_errors_until_success_and_then_stops() {
        let calls = AtomicU32::new(0);
        let started = tokio::time::Instant::now();
        let out = retry_for(Duration::from_secs(60), SinkError::is_retryable, || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 | 1 => Err(io_error()),
                _ => Ok(WriteOutcome::AlreadyCommitted),
            }
        })
        .await;
        assert_eq!(out.unwrap(), WriteOutcome::AlreadyCommitted);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert!(
            started.elapsed() >= Duration::from_millis(100 + 200),
            "it backed off"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retry_gives_up_when_the_bound_passes_and_never_repeats_other_errors() {
        let calls = AtomicU32::new(0);
        let started = tokio::time::Instant::now();
        let bound = Duration::from_secs(30);
        let out: Result<(), _> = retry_for(bound, SinkError::is_retryable, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(io_error())
        })
        .await;
        assert!(out.unwrap_err().is_retryable());
        assert_eq!(started.elapsed(), bound, "the last wait ends at the bound");
        let n = calls.load(Ordering::SeqCst);
        assert!(
            (6..=12).contains(&n),
            "{n} attempts in 30 s of capped backoff"
        );

        for error in [
            SinkError::UnknownRun(1),
            SinkError::Fenced {
                run_id: 1,
                by: "run 2".into(),
            },
        ] {
            calls.store(0, Ordering::SeqCst);
            let mut once = Some(error);
            let out: Result<(), _> = retry_for(bound, SinkError::is_retryable, || {
                calls.fetch_add(1, Ordering::SeqCst);
                let e = once.take().unwrap();
                async move { Err(e) }
            })
            .await;
            assert!(!out.unwrap_err().is_retryable());
            assert_eq!(calls.load(Ordering::SeqCst), 1);
        }
    }
}
