//! The app's API budget (200 calls/s per app), shared by every exporter process on any host.
//!
//! Each process that calls the API holds a lease in `receipts.rate_leases` (Postgres is the
//! one thing every process already shares), heartbeats it, drops the leases of processes that
//! stopped heartbeating, and paces its client at its share of the budget:
//! `min(own cap, global × margin × own weight / Σ live weights)`, a process's weight being its
//! cap. The global is the app's budget (`EXPORT_RATE_LIMIT`); a cap (a job's `rate_limit`, a
//! backfill's `--rate`) limits its own process only, so caps that fit under the budget are all
//! met and none is wasted.
//! Joining is where the sum could overshoot: a newcomer paces itself at the share computed
//! with itself included, and, when others hold leases, waits until they have all seen it and
//! slowed down before its first call. This module sets the pace; it does not send calls.

use crate::chat::ChatClient;
use sqlx::PgPool;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How often a lease is heartbeaten and the share recomputed.
pub const HEARTBEAT: Duration = Duration::from_millis(500);
/// A lease without a heartbeat for this long belongs to a dead (or frozen) process.
pub const LEASE_TTL: Duration = Duration::from_secs(3);
/// How long a newcomer waits before its first call when others hold leases: each of them
/// heartbeats within one period, and the slots their limiters reserved at the old pace (up to
/// `concurrency` of them) must run out too.
pub const JOIN_WAIT: Duration = Duration::from_millis(1500);
/// Fraction of the budget that sharing processes split: sends of several hosts bunch on the
/// server's side, so a shared budget keeps some room. A process alone uses all of it.
pub const SHARED_MARGIN: f64 = 0.9;
/// When the leases cannot be read for longer than [`LEASE_TTL`], others may have dropped ours
/// and raised their pace: fall back to this fraction of the budget until Postgres answers.
const BLIND_FRACTION: f64 = 0.1;

/// One live lease as the split sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LiveLease {
    /// The app's limit as that process is configured (calls/s).
    pub global_rate: f64,
    /// Its cap, also its weight (calls/s).
    pub weight: f64,
}

/// This process's pace (calls/s) given every live lease, its own included: its weighted part
/// of the smallest configured global limit, never above its own cap.
pub fn share(own: LiveLease, live: &[LiveLease]) -> f64 {
    let global = live
        .iter()
        .map(|l| l.global_rate)
        .fold(own.global_rate, f64::min);
    let cap = own.weight.min(own.global_rate);
    if live.len() <= 1 {
        return cap.min(global);
    }
    let total: f64 = live.iter().map(|l| l.weight).sum();
    cap.min(global * SHARED_MARGIN * own.weight / total.max(own.weight))
}

/// A held lease: its heartbeat task keeps the client's pace at this process's share.
pub struct Lease {
    pool: PgPool,
    holder_id: i64,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Lease {
    /// Takes a lease for `client` with the app limit `global_rate` and this process's `cap`,
    /// sets the client's pace to its share, and returns once calling is safe. Leases are per
    /// app (`sdkappid`): each app's budget is its own, shared only by its own runs.
    pub async fn join(
        pool: &PgPool,
        client: &ChatClient,
        sdkappid: i64,
        global_rate: f64,
        cap: f64,
        label: &str,
    ) -> sqlx::Result<Lease> {
        let own = LiveLease {
            global_rate,
            weight: cap.min(global_rate),
        };
        let holder_id: i64 = rand::random::<i64>().abs();
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        upsert(pool, sdkappid, holder_id, &host, label, own).await?;
        let live = live_leases(pool, sdkappid).await?;
        let pace = share(own, &live);
        client.limiter().set_rate(pace);
        if live.len() > 1 {
            tracing::info!(
                others = live.len() - 1,
                pace,
                "sharing the API budget: waiting {JOIN_WAIT:?} for the others to slow down"
            );
            tokio::time::sleep(JOIN_WAIT).await;
        }
        let stop = CancellationToken::new();
        let beat = Heartbeat {
            pool: pool.clone(),
            client: client.clone(),
            sdkappid,
            holder_id,
            host,
            label: label.to_string(),
            own,
            pace,
        };
        let task = tokio::spawn(beat.run(stop.clone()));
        Ok(Lease {
            pool: pool.clone(),
            holder_id,
            stop,
            task: Some(task),
        })
    }

    /// Stops the heartbeat and gives the share back at once (others raise their pace within
    /// one heartbeat).
    pub async fn leave(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        if let Err(e) = sqlx::query("DELETE FROM receipts.rate_leases WHERE holder_id = $1")
            .bind(self.holder_id)
            .execute(&self.pool)
            .await
        {
            tracing::warn!("could not drop the API budget lease (it expires by itself): {e}");
        }
    }
}

impl Drop for Lease {
    /// A run that ends by an error stops heartbeating; its lease expires after [`LEASE_TTL`].
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The heartbeat task's state.
struct Heartbeat {
    pool: PgPool,
    client: ChatClient,
    sdkappid: i64,
    holder_id: i64,
    host: String,
    label: String,
    own: LiveLease,
    /// The pace last set.
    pace: f64,
}

impl Heartbeat {
    async fn run(mut self, stop: CancellationToken) {
        let mut last_ok = tokio::time::Instant::now();
        let mut blind = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(HEARTBEAT) => {}
            }
            match self.beat().await {
                Ok(live) => {
                    last_ok = tokio::time::Instant::now();
                    blind = false;
                    self.set(share(self.own, &live), live.len());
                }
                Err(e) if !blind && last_ok.elapsed() > LEASE_TTL => {
                    blind = true;
                    let pace = self.own.global_rate * BLIND_FRACTION;
                    tracing::warn!(
                        pace,
                        "cannot reach the API budget leases for {LEASE_TTL:?} ({e}): slowing down"
                    );
                    self.pace = pace;
                    self.client.limiter().set_rate(pace);
                }
                Err(e) => tracing::debug!("API budget heartbeat failed: {e}"),
            }
        }
    }

    /// Renews our lease (re-creating it if it was dropped as expired), drops dead ones, and
    /// returns the live leases.
    async fn beat(&self) -> sqlx::Result<Vec<LiveLease>> {
        upsert(
            &self.pool,
            self.sdkappid,
            self.holder_id,
            &self.host,
            &self.label,
            self.own,
        )
        .await?;
        sqlx::query(
            "DELETE FROM receipts.rate_leases
             WHERE heartbeat_at < now() - make_interval(secs => $1)",
        )
        .bind(LEASE_TTL.as_secs_f64())
        .execute(&self.pool)
        .await?;
        live_leases(&self.pool, self.sdkappid).await
    }

    fn set(&mut self, pace: f64, holders: usize) {
        if (pace - self.pace).abs() > self.pace * 0.01 {
            tracing::info!(
                holders,
                "API budget: pacing at {pace:.1} calls/s (was {:.1})",
                self.pace
            );
            self.pace = pace;
            self.client.limiter().set_rate(pace);
        }
    }
}

async fn upsert(
    pool: &PgPool,
    sdkappid: i64,
    holder_id: i64,
    host: &str,
    label: &str,
    own: LiveLease,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO receipts.rate_leases (holder_id, host, pid, label, global_rate, weight, sdkappid)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (holder_id) DO UPDATE SET heartbeat_at = now()",
    )
    .bind(holder_id)
    .bind(host)
    .bind(std::process::id() as i32)
    .bind(label)
    .bind(own.global_rate)
    .bind(own.weight)
    .bind(sdkappid)
    .execute(pool)
    .await?;
    Ok(())
}

/// The app's leases heartbeaten within [`LEASE_TTL`] (ours included). A lease of no app is
/// an older release's, which knew one app only: it counts for every app (never too fast).
async fn live_leases(pool: &PgPool, sdkappid: i64) -> sqlx::Result<Vec<LiveLease>> {
    let rows: Vec<(f64, f64)> = sqlx::query_as(
        "SELECT global_rate, weight FROM receipts.rate_leases
         WHERE heartbeat_at >= now() - make_interval(secs => $1)
           AND (sdkappid = $2 OR sdkappid IS NULL)",
    )
    .bind(LEASE_TTL.as_secs_f64())
    .bind(sdkappid)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(global_rate, weight)| LiveLease {
            global_rate,
            weight,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(global_rate: f64, weight: f64) -> LiveLease {
        LiveLease {
            global_rate,
            weight,
        }
    }

    #[test]
    fn alone_a_process_uses_its_cap_or_the_whole_budget() {
        let me = lease(200.0, 200.0);
        assert_eq!(share(me, &[me]), 200.0);
        let capped = lease(200.0, 50.0);
        assert_eq!(share(capped, &[capped]), 50.0);
        let above = lease(200.0, 500.0);
        assert_eq!(
            share(above, &[above]),
            200.0,
            "a cap never exceeds the budget"
        );
    }

    #[test]
    fn equal_processes_split_the_budget_and_never_exceed_it_together() {
        let a = lease(200.0, 200.0);
        let live = [a, a, a];
        let each = share(a, &live);
        assert!((each - 200.0 * SHARED_MARGIN / 3.0).abs() < 1e-9, "{each}");
        assert!(each * 3.0 <= 200.0);
    }

    #[test]
    fn a_smaller_cap_takes_a_smaller_share_and_leaves_the_rest() {
        let job = lease(200.0, 200.0);
        let backfill = lease(200.0, 50.0);
        let live = [job, backfill];
        let (j, b) = (share(job, &live), share(backfill, &live));
        assert!((j - 200.0 * SHARED_MARGIN * 0.8).abs() < 1e-9, "{j}");
        assert!((b - 200.0 * SHARED_MARGIN * 0.2).abs() < 1e-9, "{b}");
        assert!(j + b <= 200.0);
        assert!(
            j > 100.0,
            "the hourly job is not starved by a small backfill"
        );
    }

    #[test]
    fn jobs_capped_below_the_budget_each_get_their_cap() {
        let a = lease(200.0, 60.0);
        let b = lease(200.0, 100.0);
        let live = [a, b];
        assert_eq!((share(a, &live), share(b, &live)), (60.0, 100.0));
        // A job on the whole budget beside a capped one: the split follows the caps.
        let whole = lease(200.0, 200.0);
        let live = [whole, b];
        let (w, c) = (share(whole, &live), share(b, &live));
        assert!(
            (w - 120.0).abs() < 1e-9 && (c - 60.0).abs() < 1e-9,
            "{w} {c}"
        );
    }

    #[test]
    fn the_smallest_configured_budget_wins() {
        let big = lease(400.0, 400.0);
        let small = lease(200.0, 200.0);
        let live = [big, small];
        assert!(share(big, &live) + share(small, &live) <= 200.0);
    }
}
