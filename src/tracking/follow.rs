//! The SQL of following: rolling windows (`kind = 'latest'`) and what each planned seq's
//! history says about it (settled, no receipt, when it was last observed).
//!
//! Classification happens in Postgres, next to the data, and touches only seqs observed
//! before (index range scans per planned range): a seq never observed has no row to read.

use crate::plan::{FollowPolicy, GroupPlan};
use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, PgPool, Postgres, Transaction};
use std::collections::HashMap;

/// The item `Code` of a seq that has no read receipt.
pub const NO_RECEIPT: i32 = 10062;

/// Sets a group's rolling window to its newest `n` messages (replacing an earlier `n`).
/// Returns the `n` it replaced, if any.
pub async fn set_latest(
    tx: &mut Transaction<'_, Postgres>,
    app: Option<i64>,
    group_id: &str,
    n: i64,
) -> sqlx::Result<Option<i64>> {
    let before: Option<i64> = sqlx::query_scalar(
        "SELECT latest_n FROM receipts.seq_windows
         WHERE group_id = $1 AND sdkappid IS NOT DISTINCT FROM $2 AND kind = 'latest' FOR UPDATE",
    )
    .bind(group_id)
    .bind(app)
    .fetch_optional(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO receipts.seq_windows (sdkappid, group_id, kind, latest_n) VALUES ($3, $1, 'latest', $2)
         ON CONFLICT (sdkappid, group_id) WHERE kind = 'latest' DO UPDATE SET latest_n = EXCLUDED.latest_n",
    )
    .bind(group_id)
    .bind(n)
    .bind(app)
    .execute(&mut **tx)
    .await?;
    Ok(before)
}

/// Removes a group's rolling window. Returns whether it had one.
pub async fn remove_latest(
    executor: impl PgExecutor<'_>,
    app: Option<i64>,
    group_id: &str,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "DELETE FROM receipts.seq_windows
         WHERE group_id = $1 AND sdkappid IS NOT DISTINCT FROM $2 AND kind = 'latest'",
    )
    .bind(group_id)
    .bind(app)
    .execute(executor)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Every group's rolling window size, by app and group, for `track list`.
pub async fn all_latest(pool: &PgPool) -> sqlx::Result<HashMap<(Option<i64>, String), i64>> {
    let rows: Vec<(Option<i64>, String, i64)> = sqlx::query_as(
        "SELECT sdkappid, group_id, latest_n FROM receipts.seq_windows WHERE kind = 'latest'",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(a, g, n)| ((a, g), n)).collect())
}

/// The rolling windows of the enabled groups with any of `tags` (all enabled when empty).
pub async fn selected_latest(
    pool: &PgPool,
    app: i64,
    tags: &[String],
) -> sqlx::Result<Vec<(String, i64)>> {
    sqlx::query_as(
        "SELECT g.group_id, w.latest_n
         FROM receipts.tracked_groups g JOIN receipts.seq_windows w USING (sdkappid, group_id)
         WHERE g.sdkappid = $2 AND g.enabled AND w.kind = 'latest'
           AND (cardinality($1::text[]) = 0 OR g.tags && $1)
         ORDER BY g.group_id",
    )
    .bind(tags)
    .bind(app)
    .fetch_all(pool)
    .await
}

/// What one group's history says about its planned seqs: only seqs observed before appear
/// here (a seq never observed is pulled and has no row), each list ascending.
#[derive(Debug, Clone, Default)]
pub struct GroupState {
    pub group_id: String,
    pub settled: Vec<u64>,
    pub no_receipt: Vec<u64>,
    /// Observed seqs to pull again, with when each was last observed.
    pub seen: Vec<(u64, DateTime<Utc>)>,
}

/// Classifies every observed planned seq. `newest` holds the groups whose newest seq the run
/// learnt from `get_group_info`; for the others the newest seq known to exist is the highest
/// one with a snapshot (seqs are given in order, so every seq below an existing one exists).
/// A seq is counted as "no receipt" only below that: a seq beyond it may not exist yet.
/// The cost follows the seqs observed before, not the plan's size: index range scans of
/// `receipt_latest` and `receipt_item_codes` per range, one probe per observed seq.
pub async fn classify(
    pool: &PgPool,
    app: i64,
    plan: &[GroupPlan],
    newest: &HashMap<String, u64>,
    policy: &FollowPolicy,
) -> sqlx::Result<Vec<GroupState>> {
    let mut states = Vec::new();
    classify_each(pool, app, plan, newest, policy, |state| states.push(state)).await?;
    Ok(states)
}

/// [`classify`], handing each group's state to `each` as its row arrives: a run keeps what it
/// needs of one group at a time, so its memory does not grow with the seqs observed before
/// (24 bytes and more a seq when every group's state was held at once).
pub async fn classify_each(
    pool: &PgPool,
    app: i64,
    plan: &[GroupPlan],
    newest: &HashMap<String, u64>,
    policy: &FollowPolicy,
    mut each: impl FnMut(GroupState) + Send,
) -> sqlx::Result<()> {
    use futures::TryStreamExt;
    let (mut ids, mut from, mut to, mut known) = (vec![], vec![], vec![], vec![]);
    for g in plan {
        for w in &g.ranges {
            ids.push(g.group_id.as_str());
            from.push(w.from);
            to.push(w.to);
            known.push(newest.get(&g.group_id).map(|n| *n as i64));
        }
    }
    let k = i64::from(policy.no_receipt_after.unwrap_or(0));
    let mut rows = sqlx::query_as::<_, StateRow>(CLASSIFY)
        .bind(&ids)
        .bind(&from)
        .bind(&to)
        .bind(&known)
        .bind(policy.skip_settled)
        .bind(k)
        .bind(NO_RECEIPT)
        .bind(app)
        .fetch(pool);
    let seqs = |v: Vec<i64>| v.into_iter().map(|s| s as u64).collect::<Vec<_>>();
    while let Some((group_id, settled, no_receipt, seen, at)) = rows.try_next().await? {
        each(GroupState {
            group_id,
            settled: seqs(settled),
            no_receipt: seqs(no_receipt),
            seen: seqs(seen).into_iter().zip(at).collect(),
        });
    }
    Ok(())
}

/// A row of [`CLASSIFY`]: group, settled seqs, no-receipt seqs, seqs seen, when each was seen.
type StateRow = (String, Vec<i64>, Vec<i64>, Vec<i64>, Vec<DateTime<Utc>>);

/// $1..$4: the plan's ranges (group, from, to, newest seq or NULL); $5 skip settled;
/// $6 K (0: never skip for no receipt); $7 the no-receipt code; $8 the app (item codes are
/// the app's by their run's). "K consecutive": the K newest
/// item codes of the seq are all 10062 and all newer than its newest snapshot. A settled
/// snapshot followed by a newer item code (a recalled message, say) is not settled.
const CLASSIFY: &str = "
WITH ranges AS (
    SELECT r.g, r.f, r.t,
           COALESCE(r.newest, (SELECT max(l.msg_seq) FROM receipts.receipt_latest l
                               WHERE l.sdkappid = $8 AND l.group_id = r.g)) AS known
    FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[]) AS r(g, f, t, newest)
),
observed AS (
    SELECT r.g, l.msg_seq AS seq, r.known FROM ranges r
    JOIN receipts.receipt_latest l
      ON l.sdkappid = $8 AND l.group_id = r.g AND l.msg_seq BETWEEN r.f AND r.t
    UNION
    SELECT r.g, ic.msg_seq, r.known FROM ranges r
    JOIN receipts.receipt_item_codes ic ON ic.group_id = r.g AND ic.msg_seq BETWEEN r.f AND r.t
    WHERE EXISTS (SELECT 1 FROM receipts.export_runs er
                  WHERE er.run_id = ic.run_id AND er.sdkappid = $8)
),
state AS MATERIALIZED (
    SELECT o.g AS group_id, o.seq,
           CASE
               WHEN $5 AND l.unread_num = 0
                    AND l.captured_at >= COALESCE(c.last_code_at, '-infinity') THEN 1
               WHEN $6 > 0 AND c.no_receipt >= $6 AND o.seq <= COALESCE(o.known, 0) THEN 2
               ELSE 0
           END AS skip,
           GREATEST(l.captured_at, c.last_code_at) AS last_seen
    FROM observed o
    LEFT JOIN receipts.receipt_latest l
      ON l.sdkappid = $8 AND l.group_id = o.g AND l.msg_seq = o.seq
    LEFT JOIN LATERAL (
        SELECT max(x.captured_at) AS last_code_at,
               count(*) FILTER (WHERE x.code = $7
                   AND x.captured_at > COALESCE(l.captured_at, '-infinity')) AS no_receipt
        FROM (SELECT ic.code, ic.captured_at FROM receipts.receipt_item_codes ic
              WHERE ic.group_id = o.g AND ic.msg_seq = o.seq
                AND EXISTS (SELECT 1 FROM receipts.export_runs er
                            WHERE er.run_id = ic.run_id AND er.sdkappid = $8)
              ORDER BY ic.run_id DESC LIMIT GREATEST($6, 1)) x
    ) c ON true
)
SELECT group_id,
       COALESCE(array_agg(seq ORDER BY seq) FILTER (WHERE skip = 1), '{}'),
       COALESCE(array_agg(seq ORDER BY seq) FILTER (WHERE skip = 2), '{}'),
       COALESCE(array_agg(seq ORDER BY seq) FILTER (WHERE skip = 0), '{}'),
       COALESCE(array_agg(last_seen ORDER BY seq) FILTER (WHERE skip = 0), '{}')
FROM state GROUP BY group_id";
