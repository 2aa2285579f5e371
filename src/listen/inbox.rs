//! The webhook's inbox, `receipts.webhook_inbox`: one small function per statement.
//!
//! A delivery is stored by one statement (one transaction, committed before the receiver
//! answers), idempotent on its key (app, group, seq, counts, EventTime). The flush claims
//! rows for a write batch of its live run in a transaction that checks the run's fence; a
//! claim whose batch never committed (its run died between the two) is released by the next
//! run once the repair has declared that run dead.

use super::delivery::Delivery;
use crate::sink::{Fence, SinkError};
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::PgPool;

/// Stores a delivery's messages; returns how many were new (0: a repeat of one stored).
pub async fn store(pool: &PgPool, sdkappid: u64, delivery: &Delivery) -> sqlx::Result<u64> {
    let rows: Vec<serde_json::Value> = delivery
        .receipts
        .iter()
        .map(|r| {
            serde_json::json!({
                "seq": r.msg_seq, "read": r.read_num, "unread": r.unread_num, "members": r.members,
            })
        })
        .collect();
    let done = sqlx::query(
        "INSERT INTO receipts.webhook_inbox
             (sdkappid, group_id, msg_seq, read_num, unread_num, event_time, members)
         SELECT $1, $2, r.seq, r.read, r.unread, $3, coalesce(r.members, '{}')
         FROM jsonb_to_recordset($4) AS r(seq bigint, read integer, unread integer, members text[])
         ON CONFLICT DO NOTHING",
    )
    .bind(sdkappid as i64)
    .bind(&delivery.group_id)
    .bind(delivery.event_time)
    .bind(serde_json::Value::Array(rows))
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// An inbox row claimed for a write batch.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    pub group_id: String,
    pub msg_seq: i64,
    pub read_num: i32,
    pub unread_num: i32,
    pub event_time: DateTime<Utc>,
    pub members: Vec<String>,
    /// Whether the group has read-event detail on.
    pub details: bool,
}

/// One claim: the rows of one capture date taken for batch `batch_no` (tracked groups, or
/// every group when `keep_untracked`), and how many of that date's rows were dropped as
/// untracked instead.
#[derive(Debug, Default)]
pub struct Claim {
    pub capture_date: Option<NaiveDate>,
    pub rows: Vec<Claimed>,
    pub dropped: u64,
}

/// Claims up to `limit` of the oldest unflushed rows of the run's app (`sdkappid`), all of the oldest row's UTC date and at
/// most one per message (a write batch holds a message once: the `receipt_latest` upsert
/// touches each row once; a message's later deliveries go to the next batches), for batch
/// `batch_no` of the fenced run, in one transaction; nothing when the inbox is empty.
pub async fn claim(
    pool: &PgPool,
    (fence, sdkappid): (Fence, i64),
    batch_no: i32,
    limit: i64,
    keep_untracked: bool,
) -> Result<Claim, SinkError> {
    let mut tx = pool
        .begin()
        .await
        .map_err(SinkError::pg("starting an inbox claim"))?;
    crate::sink::fence::check(&mut tx, fence).await?;
    let rows: Vec<(Claimed, bool)> = sqlx::query_as::<_, ClaimedRow>(CLAIM)
        .bind(fence.run_id)
        .bind(batch_no)
        .bind(keep_untracked)
        .bind(limit)
        .bind(sdkappid)
        .fetch_all(&mut *tx)
        .await
        .map_err(SinkError::pg("claiming inbox rows"))?
        .into_iter()
        .map(ClaimedRow::split)
        .collect();
    tx.commit()
        .await
        .map_err(SinkError::pg("committing an inbox claim"))?;
    let mut claim = Claim {
        capture_date: rows.first().map(|(r, _)| r.event_time.date_naive()),
        ..Default::default()
    };
    for (row, kept) in rows {
        if kept {
            claim.rows.push(row);
        } else {
            claim.dropped += 1;
        }
    }
    Ok(claim)
}

/// The claim's statement, for the app `$5`: the oldest unclaimed row's date; up to `$4`
/// unclaimed rows of that date, locked; the first of each message among them; those taken for
/// batch `$2` of run `$1` (tracked groups, or all with `$3`), the others of untracked groups
/// dropped.
const CLAIM: &str = "WITH first AS (
             SELECT (event_time AT TIME ZONE 'UTC')::date AS day FROM receipts.webhook_inbox
             WHERE run_id IS NULL AND sdkappid = $5 ORDER BY inbox_id LIMIT 1),
         locked AS (
             SELECT i.inbox_id, i.group_id, i.msg_seq
             FROM receipts.webhook_inbox i CROSS JOIN first
             WHERE i.run_id IS NULL AND i.sdkappid = $5
               AND (i.event_time AT TIME ZONE 'UTC')::date = first.day
             ORDER BY i.inbox_id LIMIT $4
             FOR UPDATE OF i SKIP LOCKED),
         picked AS (
             SELECT l.inbox_id, t.group_id IS NOT NULL AS tracked,
                    coalesce(t.details, false) AS details
             FROM (SELECT inbox_id, group_id,
                          row_number() OVER (PARTITION BY group_id, msg_seq ORDER BY inbox_id) AS nth
                   FROM locked) l
             LEFT JOIN receipts.tracked_groups t ON t.sdkappid = $5 AND t.group_id = l.group_id
             WHERE l.nth = 1)
         UPDATE receipts.webhook_inbox i
         SET run_id = $1,
             batch_no = CASE WHEN picked.tracked OR $3 THEN $2 END,
             dropped = CASE WHEN picked.tracked OR $3 THEN NULL ELSE 'untracked' END
         FROM picked WHERE i.inbox_id = picked.inbox_id
         RETURNING i.group_id, i.msg_seq, i.read_num, i.unread_num, i.event_time, i.members,
                   picked.details, (picked.tracked OR $3) AS kept";

#[derive(sqlx::FromRow)]
struct ClaimedRow {
    #[sqlx(flatten)]
    row: Claimed,
    kept: bool,
}

impl ClaimedRow {
    fn split(self) -> (Claimed, bool) {
        (self.row, self.kept)
    }
}

/// Releases the claims of runs that ended (the repair declared a killed listener's run
/// `abandoned`) whose write batch never committed: the next claim takes those rows again.
/// Returns how many rows were released.
pub async fn release_dead_claims(pool: &PgPool) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "UPDATE receipts.webhook_inbox i SET run_id = NULL, batch_no = NULL
         FROM receipts.export_runs r
         WHERE i.run_id = r.run_id AND r.status <> 'running' AND i.dropped IS NULL
           AND NOT EXISTS (SELECT 1 FROM receipts.write_batches w
                           WHERE w.run_id = i.run_id AND w.batch_no = i.batch_no)",
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// The rows acknowledged and not yet flushed, and the age in seconds of the oldest (0 when
/// there is none): the inbox's lag.
pub async fn backlog(pool: &PgPool) -> sqlx::Result<(i64, f64)> {
    sqlx::query_as(
        "SELECT count(*), coalesce(extract(epoch FROM now() - min(received_at))::float8, 0)
         FROM receipts.webhook_inbox WHERE run_id IS NULL",
    )
    .fetch_one(pool)
    .await
}
