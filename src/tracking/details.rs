//! The SQL of "who read it" (issue 19): which groups opted in, which messages need their read
//! list pulled, and the read events themselves (`receipts.read_events`), each inserted once.
//! A message whose events retention removed (`read_events_pruned`) is never due again, and
//! none of its members is recorded again.

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, PgPool};

/// Switches a group's read lists on or off. Switching on (from off) stamps `details_since`:
/// readers of messages snapshotted before it are flagged as read before details. Returns
/// whether the group is tracked.
pub async fn set_details(
    executor: impl PgExecutor<'_>,
    app: Option<i64>,
    group_id: &str,
    on: bool,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE receipts.tracked_groups
         SET details = $2,
             details_since = CASE WHEN $2 AND NOT details THEN now() ELSE details_since END,
             updated_at = now()
         WHERE group_id = $1 AND sdkappid IS NOT DISTINCT FROM $3",
    )
    .bind(group_id)
    .bind(on)
    .bind(app)
    .execute(executor)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A message whose read list is due: its latest snapshot counts more readers than the last
/// whole read list covered.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DueMessage {
    pub group_id: String,
    pub msg_seq: i64,
    pub read_num: i32,
    /// No read list was pulled yet, and the message had readers before details were on.
    pub read_before_details: bool,
}

/// The messages of the selected details-on groups whose read list is due after run `run_id`:
/// those the run snapshotted, and settled ones (skipped by the planner) whose last readers are
/// not recorded yet; never one retention pruned. Ordered by group and seq.
pub async fn due_messages(
    pool: &PgPool,
    app: i64,
    tags: &[String],
    run_id: i64,
) -> sqlx::Result<Vec<DueMessage>> {
    sqlx::query_as(
        "SELECT l.group_id, l.msg_seq, l.read_num,
                (p.group_id IS NULL AND EXISTS (
                    SELECT 1 FROM receipts.receipt_snapshots s
                    WHERE s.sdkappid = $3 AND s.group_id = l.group_id AND s.msg_seq = l.msg_seq
                      AND s.captured_at < g.details_since AND s.read_num > 0)) AS read_before_details
         FROM receipts.receipt_latest l
         JOIN receipts.tracked_groups g USING (sdkappid, group_id)
         LEFT JOIN receipts.read_list_pulls p USING (sdkappid, group_id, msg_seq)
         WHERE l.sdkappid = $3 AND g.enabled AND g.details
           AND (cardinality($1::text[]) = 0 OR g.tags && $1)
           AND l.read_num > COALESCE(p.read_num, 0)
           AND (l.run_id = $2 OR l.unread_num = 0)
           AND NOT EXISTS (SELECT 1 FROM receipts.read_events_pruned t
                           WHERE t.sdkappid = $3 AND t.group_id = l.group_id
                             AND t.msg_seq = l.msg_seq)
         ORDER BY l.group_id, l.msg_seq",
    )
    .bind(tags)
    .bind(run_id)
    .bind(app)
    .fetch_all(pool)
    .await
}

/// The details-on groups among `group_ids`.
pub async fn details_groups(
    pool: &PgPool,
    app: i64,
    group_ids: &[String],
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT group_id FROM receipts.tracked_groups
         WHERE sdkappid = $2 AND details AND group_id = ANY($1) ORDER BY group_id",
    )
    .bind(group_ids)
    .bind(app)
    .fetch_all(pool)
    .await
}

/// Settled messages (unread 0) of the selected details-on groups whose last readers are not
/// recorded yet: the planner skips them, the detail pull does not.
pub async fn settled_unrecorded(
    pool: &PgPool,
    app: i64,
    tags: &[String],
) -> sqlx::Result<Vec<(String, i64)>> {
    sqlx::query_as(
        "SELECT l.group_id, l.msg_seq
         FROM receipts.receipt_latest l
         JOIN receipts.tracked_groups g USING (sdkappid, group_id)
         LEFT JOIN receipts.read_list_pulls p USING (sdkappid, group_id, msg_seq)
         WHERE l.sdkappid = $2 AND g.enabled AND g.details
           AND (cardinality($1::text[]) = 0 OR g.tags && $1)
           AND l.unread_num = 0 AND l.read_num > COALESCE(p.read_num, 0)
           AND NOT EXISTS (SELECT 1 FROM receipts.read_events_pruned t
                           WHERE t.sdkappid = $2 AND t.group_id = l.group_id
                             AND t.msg_seq = l.msg_seq)",
    )
    .bind(tags)
    .bind(app)
    .fetch_all(pool)
    .await
}

/// What one message's read list gave, ready to store.
#[derive(Debug, Clone)]
pub struct ReadListRows {
    pub group_id: String,
    pub msg_seq: i64,
    /// Each member (clear or hashed) with the arrival time of the page that listed it.
    pub members: Vec<(String, DateTime<Utc>)>,
    pub read_before_details: bool,
    pub account_hashed: bool,
    /// The list was whole: the read count it covers, recorded so it is not pulled again
    /// before the count grows.
    pub covers: Option<i32>,
}

/// Inserts the members not recorded yet (one row per group, seq and member, ever) and, for a
/// whole list, what it covered: one transaction, so a crash leaves the message to pull again.
/// Nothing of a message retention pruned: the transaction shares the lock retention's
/// `prune_read_events()` takes alone, so the two never interleave. Returns how many members
/// were new.
pub async fn record(
    pool: &PgPool,
    run_id: i64,
    app: i64,
    rows: &ReadListRows,
) -> sqlx::Result<u64> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock_shared(hashtext('receipt-exporter:read-events'))")
        .execute(&mut *tx)
        .await?;
    let (accounts, times): (Vec<&str>, Vec<DateTime<Utc>>) =
        rows.members.iter().map(|(a, t)| (a.as_str(), *t)).unzip();
    let inserted = sqlx::query(
        "INSERT INTO receipts.read_events
            (sdkappid, group_id, msg_seq, member_account, first_seen_read_at, run_id, read_before_details, account_hashed)
         SELECT $8, $1, $2, m.account, m.seen, $3, $4, $5
         FROM unnest($6::text[], $7::timestamptz[]) AS m(account, seen)
         WHERE NOT EXISTS (SELECT 1 FROM receipts.read_events_pruned t
                           WHERE t.sdkappid = $8 AND t.group_id = $1 AND t.msg_seq = $2)
         ON CONFLICT (sdkappid, group_id, msg_seq, member_account) DO NOTHING",
    )
    .bind(&rows.group_id)
    .bind(rows.msg_seq)
    .bind(run_id)
    .bind(rows.read_before_details)
    .bind(rows.account_hashed)
    .bind(&accounts)
    .bind(&times)
    .bind(app)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if let Some(read_num) = rows.covers {
        sqlx::query(
            "INSERT INTO receipts.read_list_pulls (sdkappid, group_id, msg_seq, read_num, listed, pulled_at, run_id)
             SELECT $6, $1, $2, $3, $4, now(), $5
             WHERE NOT EXISTS (SELECT 1 FROM receipts.read_events_pruned t
                               WHERE t.sdkappid = $6 AND t.group_id = $1 AND t.msg_seq = $2)
             ON CONFLICT (sdkappid, group_id, msg_seq) DO UPDATE
                SET read_num = EXCLUDED.read_num, listed = EXCLUDED.listed,
                    pulled_at = EXCLUDED.pulled_at, run_id = EXCLUDED.run_id",
        )
        .bind(&rows.group_id)
        .bind(rows.msg_seq)
        .bind(read_num)
        .bind(rows.members.len() as i32)
        .bind(run_id)
        .bind(app)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(inserted)
}

/// One read event as the lake copy holds it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    pub group_id: String,
    pub msg_seq: i64,
    pub member_account: String,
    pub first_seen_read_at: DateTime<Utc>,
    pub read_before_details: bool,
    pub account_hashed: bool,
    /// The app (`None`: an event from before apps, not adopted yet).
    pub sdkappid: Option<i64>,
}

/// The runs whose lake copy of read events may be missing: `run_id` itself, crashed runs
/// (abandoned by the repair at a run's start) and runs whose lake write failed, each only if
/// some of its events' dates has no recorded file. Driven by the ledger, so the read events are
/// read by run (an index), never scanned.
pub async fn runs_missing_lake_copy(pool: &PgPool, run_id: i64) -> sqlx::Result<Vec<i64>> {
    sqlx::query_scalar(
        "SELECT r.run_id FROM receipts.export_runs r
         WHERE (r.run_id = $1 OR r.status = 'abandoned'
                OR r.details->'read_lists'->'failed_groups' ? '(lake)')
           AND EXISTS (SELECT 1 FROM receipts.read_events e
                       WHERE e.run_id = r.run_id
                         AND NOT EXISTS (SELECT 1 FROM receipts.read_event_files f
                             WHERE f.run_id = e.run_id
                               AND f.capture_date = (e.first_seen_read_at AT TIME ZONE 'UTC')::date))
         ORDER BY 1",
    )
    .bind(run_id)
    .fetch_all(pool)
    .await
}

/// Every read event first seen by run `run_id`, in time order.
pub async fn events_of_run(pool: &PgPool, run_id: i64) -> sqlx::Result<Vec<EventRow>> {
    sqlx::query_as(
        "SELECT group_id, msg_seq, member_account, first_seen_read_at, read_before_details,
                account_hashed, sdkappid
         FROM receipts.read_events WHERE run_id = $1
         ORDER BY first_seen_read_at, group_id, msg_seq, member_account",
    )
    .bind(run_id)
    .fetch_all(pool)
    .await
}

/// The capture dates of run `run_id` whose lake file is recorded.
pub async fn lake_dates(pool: &PgPool, run_id: i64) -> sqlx::Result<Vec<chrono::NaiveDate>> {
    sqlx::query_scalar("SELECT capture_date FROM receipts.read_event_files WHERE run_id = $1")
        .bind(run_id)
        .fetch_all(pool)
        .await
}

/// Records a lake file renamed into place: from now on it is part of the lake.
pub async fn record_lake_file(
    pool: &PgPool,
    run_id: i64,
    capture_date: chrono::NaiveDate,
    path: &str,
    rows: u64,
    bytes: u64,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO receipts.read_event_files (run_id, capture_date, path, row_count, byte_size)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(run_id)
    .bind(capture_date)
    .bind(path)
    .bind(rows as i64)
    .bind(bytes as i64)
    .execute(pool)
    .await?;
    Ok(())
}

/// Whether retention removed read events of run `run_id` from Postgres (its lake files then
/// hold more than Postgres could write again).
pub async fn events_pruned(pool: &PgPool, run_id: i64) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM receipts.read_event_runs_pruned WHERE run_id = $1)",
    )
    .bind(run_id)
    .fetch_one(pool)
    .await
}

/// Forgets the run's recorded lake files of `dates`, so that its export writes them again
/// (through `receipts.forget_read_event_files()`, which refuses a run retention pruned).
pub async fn forget_lake_files(
    pool: &PgPool,
    run_id: i64,
    dates: &[chrono::NaiveDate],
) -> sqlx::Result<()> {
    sqlx::query("SELECT receipts.forget_read_event_files($1, $2)")
        .bind(run_id)
        .bind(dates)
        .execute(pool)
        .await?;
    Ok(())
}
