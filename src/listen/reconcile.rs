//! The pull reconciled with the webhook: after a pull run, per group that ever had a
//! delivery, how many of the messages it pulled the webhook had kept fresh (their last
//! snapshot came from the listener and already had the counts the pull found) and how many
//! the pull found changed since their last snapshot, which the webhook therefore missed (a
//! lost delivery, or one not sent). Recorded in the pull run's ledger row
//! (`details.webhook`); `status` shows the latest.

use serde::Serialize;
use sqlx::PgPool;
use std::collections::BTreeMap;

/// One group's figures, or their sum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Fresh {
    /// Pulled messages whose counts the webhook already had.
    pub webhook_fresh: i64,
    /// Pulled messages whose counts changed since their last snapshot: the webhook missed it.
    pub pull_found: i64,
}

/// What a pull run found, per group and in all.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct Reconciled {
    #[serde(flatten)]
    pub total: Fresh,
    pub groups: BTreeMap<String, Fresh>,
}

/// Each pulled message of a group with deliveries, against its snapshot before the pull.
const FIGURES: &str = "
    WITH pulled AS (
        SELECT p.sdkappid, p.group_id, p.msg_seq, p.read_num, p.unread_num, p.captured_at
        FROM receipts.receipt_snapshots p
        WHERE p.run_id = $1
          AND EXISTS (SELECT 1 FROM receipts.webhook_inbox i
                      WHERE i.sdkappid = p.sdkappid AND i.group_id = p.group_id))
    SELECT p.group_id,
           count(*) FILTER (WHERE b.kind = 'listen' AND b.read_num = p.read_num
                                  AND b.unread_num = p.unread_num) AS webhook_fresh,
           count(*) FILTER (WHERE b.read_num IS DISTINCT FROM p.read_num
                               OR b.unread_num IS DISTINCT FROM p.unread_num) AS pull_found
    FROM pulled p
    LEFT JOIN LATERAL (
        SELECT s.read_num, s.unread_num, r.kind
        FROM receipts.receipt_snapshots s JOIN receipts.export_runs r ON r.run_id = s.run_id
        WHERE s.sdkappid = p.sdkappid AND s.group_id = p.group_id AND s.msg_seq = p.msg_seq
          AND s.run_id <> $1
          AND s.captured_at <= p.captured_at
        ORDER BY s.captured_at DESC LIMIT 1) b ON true
    GROUP BY p.group_id";

/// Computes and records a pull run's figures; `None` (and nothing recorded) when no
/// listener ever received a delivery: a pull-only deployment pays one cheap query.
pub async fn record(pool: &PgPool, run_id: i64) -> sqlx::Result<Option<Reconciled>> {
    let any: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM receipts.webhook_inbox)")
        .fetch_one(pool)
        .await?;
    if !any {
        return Ok(None);
    }
    let rows: Vec<(String, i64, i64)> =
        sqlx::query_as(FIGURES).bind(run_id).fetch_all(pool).await?;
    let mut found = Reconciled::default();
    for (group_id, webhook_fresh, pull_found) in rows {
        found.total.webhook_fresh += webhook_fresh;
        found.total.pull_found += pull_found;
        let fresh = Fresh {
            webhook_fresh,
            pull_found,
        };
        found.groups.insert(group_id, fresh);
    }
    sqlx::query(
        "UPDATE receipts.export_runs SET details = details || jsonb_build_object('webhook', $2::jsonb)
         WHERE run_id = $1",
    )
    .bind(run_id)
    .bind(serde_json::to_value(&found).expect("serializable"))
    .execute(pool)
    .await?;
    Ok(Some(found))
}

/// The same, logged instead of failing the run it follows.
pub async fn record_or_warn(pool: &PgPool, run_id: i64) {
    match record(pool, run_id).await {
        Ok(Some(r)) => tracing::info!(
            run_id,
            webhook_fresh = r.total.webhook_fresh,
            pull_found = r.total.pull_found,
            "the webhook had kept {} of the pulled messages fresh; the pull found {} changed that it missed",
            r.total.webhook_fresh,
            r.total.pull_found
        ),
        Ok(None) => {}
        Err(e) => tracing::warn!(run_id, "the webhook's figures for this run were not recorded: {e}"),
    }
}

/// The newest figures of a job's runs: the run and what it found.
pub async fn latest(pool: &PgPool, job: &str) -> sqlx::Result<Option<(i64, Reconciled)>> {
    let row: Option<(i64, serde_json::Value)> = sqlx::query_as(
        "SELECT run_id, details->'webhook' FROM receipts.export_runs
         WHERE job = $1 AND kind <> 'listen' AND details ? 'webhook'
         ORDER BY run_id DESC LIMIT 1",
    )
    .bind(job)
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(|(run, v)| serde_json::from_value(v).ok().map(|r| (run, r))))
}
