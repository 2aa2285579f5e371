//! The flush: inbox rows → snapshots at their EventTime, through the listener's live run
//! ([`crate::run::live`]): every `every`, or as soon as `rows` rows arrived, and once more,
//! to the last row, when the receiver has stopped (SIGTERM). Each write batch is claimed in the
//! inbox first (one transaction under the run's fence), then committed to Postgres and the
//! lake by the run's writer; a claim whose batch never committed is released by the next run.

use super::counters::Counters;
use super::inbox;
use crate::run::live::Live;
use crate::sink::SnapshotRow;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// When the flush writes.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// At least this often (when anything is waiting).
    pub every: Duration,
    /// As soon as this many rows arrived; also the most rows one write batch takes.
    pub rows: u64,
    /// Keep the deliveries of groups that are not tracked (otherwise dropped and counted).
    pub keep_untracked: bool,
}

/// What a flush run did, for the ledger's `details`.
#[derive(Debug, Default, serde::Serialize)]
pub struct Figures {
    pub flushes: u64,
    pub batches: u64,
    pub rows_written: u64,
    pub rows_dropped_untracked: u64,
    pub claims_released: u64,
    /// Read events recorded (members first seen) for groups with read-event detail on.
    pub read_events: u64,
}

/// Flushes until `done` is cancelled (the receiver has stopped: the last flush takes every
/// row), until `ends` (the run's last flush, then the listener starts its next run), or until
/// the run is lost.
pub async fn run(
    mut live: Live,
    policy: Policy,
    wake: Arc<Notify>,
    done: CancellationToken,
    counters: Arc<Counters>,
    ends: tokio::time::Instant,
) -> (Live, anyhow::Result<serde_json::Value>) {
    let until = Until { done, ends };
    let result = flush_until_done(&mut live, policy, &wake, &until, &counters).await;
    let result = result.map(|f| serde_json::json!({ "webhook": f }));
    (live, result)
}

/// When a flush run's last flush comes: the receiver stopped, or the run's time is up.
struct Until {
    done: CancellationToken,
    ends: tokio::time::Instant,
}

async fn flush_until_done(
    live: &mut Live,
    policy: Policy,
    wake: &Notify,
    until: &Until,
    counters: &Counters,
) -> anyhow::Result<Figures> {
    let mut figures = Figures {
        claims_released: inbox::release_dead_claims(&live.pool).await?,
        ..Default::default()
    };
    if figures.claims_released > 0 {
        tracing::info!(
            rows = figures.claims_released,
            "inbox rows claimed by a dead listener's unwritten batches are flushed again"
        );
    }
    let lost = live.lost.clone();
    loop {
        let last = tokio::select! {
            _ = lost.cancelled() => anyhow::bail!("the listener's run lost its lock"),
            _ = until.done.cancelled() => true,
            _ = tokio::time::sleep_until(until.ends) => true,
            _ = wake.notified() => false,
            _ = tokio::time::sleep(policy.every) => false,
        };
        counters.since_flush.store(0, Ordering::Relaxed);
        flush(live, policy, &mut figures, counters).await?;
        if last {
            return Ok(figures);
        }
    }
}

/// Writes one claimed batch: the readers of details-on groups first (idempotent: a crash
/// before the batch commits leaves its rows to be claimed again, and their readers recorded
/// again, as nothing), then the snapshots at their EventTime. Returns the rows written.
async fn write(
    live: &mut Live,
    date: chrono::NaiveDate,
    rows: &[inbox::Claimed],
    figures: &mut Figures,
) -> anyhow::Result<u64> {
    for row in rows.iter().filter(|r| r.details && !r.members.is_empty()) {
        figures.read_events += live
            .record_readers(&row.group_id, row.msg_seq, &row.members, row.event_time)
            .await?;
    }
    let mut batch = live.new_batch(date);
    let mut groups: HashMap<&str, Arc<str>> = HashMap::new();
    for row in rows {
        let group_id = groups
            .entry(row.group_id.as_str())
            .or_insert_with(|| Arc::from(row.group_id.as_str()))
            .clone();
        batch.rows.push(SnapshotRow {
            captured_at: row.event_time,
            group_id,
            msg_seq: row.msg_seq,
            read_num: row.read_num,
            unread_num: row.unread_num,
        });
    }
    let n = batch.rows.len() as u64;
    live.commit(batch).await?;
    Ok(n)
}

/// Writes every row waiting in the inbox, one claimed batch after another, then publishes
/// the run's files so the lake's readers see them.
async fn flush(
    live: &mut Live,
    policy: Policy,
    figures: &mut Figures,
    counters: &Counters,
) -> anyhow::Result<()> {
    let mut wrote = false;
    loop {
        let batch_no = live.next_batch_no();
        let claim = inbox::claim(
            &live.pool,
            (live.fence, live.sdkappid),
            batch_no,
            policy.rows as i64,
            policy.keep_untracked,
        )
        .await?;
        let Some(date) = claim.capture_date else {
            break;
        };
        figures.rows_dropped_untracked += claim.dropped;
        counters
            .dropped_untracked
            .fetch_add(claim.dropped, Ordering::Relaxed);
        if claim.rows.is_empty() {
            continue;
        }
        let n = write(live, date, &claim.rows, figures).await?;
        debug_assert_eq!(live.next_batch_no(), batch_no + 1);
        figures.batches += 1;
        figures.rows_written += n;
        counters.flushed.fetch_add(n, Ordering::Relaxed);
        wrote = true;
    }
    if wrote {
        figures.flushes += 1;
        live.publish().await?;
    }
    Ok(())
}
