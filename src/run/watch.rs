//! Keeping the run's ownership while it runs: its job lock's session and its lease.
//!
//! Every second the watchdog renews the run's lease (`ledger::heartbeat`) on the lock's own
//! session, which doubles as that session's ping. If the session died (a Postgres restart, a
//! failover, `pg_terminate_backend`, a NAT timeout), it reconnects with capped backoff for up
//! to the reconnect bound (`EXPORT_LOCK_RECONNECT_TIMEOUT`), takes the job lock again if it is
//! free, checks that the run is still its own, and the run goes on: its writes are fenced, so
//! they need not wait for the lock. The watchdog stops the run only when it was fenced
//! (declared dead and taken over), when another run of the job holds the lock, or when the
//! bound passed. It never touches the run's data.

use super::ledger;
use super::lock::JobLock;
use crate::sink::Fence;
use sqlx::postgres::PgConnectOptions;
use sqlx::PgPool;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;

/// How often the lease is renewed.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// What the lease adds to the reconnect bound. A run gives up at most the bound after it
/// noticed its session died, which is at most a beat and a statement timeout after its last
/// renewal: the margin covers that, so a run still reconnecting is never declared dead.
pub const LEASE_MARGIN: Duration = Duration::from_secs(10);
/// The longest one statement of the watchdog may take before its session counts as dead (a
/// connection into a black hole would otherwise hang it for the TCP retransmission timeout).
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(3);

/// Why the run lost its ownership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lost {
    /// Another process declared the run dead and took it over; who, from `fenced_by`.
    Fenced(String),
    /// Another run of the job took the lock while this one was reconnecting.
    Taken(String),
    /// The bound passed without the lock and the run's row back.
    TimedOut(String),
}

impl Lost {
    /// The run's error line.
    pub fn reason(&self) -> String {
        match self {
            Lost::Fenced(by) => format!(
                "fenced by {by}: another process declared this run dead and took it over; it stopped writing"
            ),
            Lost::Taken(holder) => format!(
                "lost the job lock: {holder} took it while this run was reconnecting; stopped pulling"
            ),
            Lost::TimedOut(why) => format!("lost the job lock: {why}; stopped pulling"),
        }
    }
}

/// What the watchdog needs.
pub struct Watch {
    pub options: PgConnectOptions,
    pub pool: PgPool,
    pub fence: Fence,
    /// How long a lost session is re-established for.
    pub reconnect: Duration,
}

/// The lease a run with this reconnect bound holds: each heartbeat renews it.
pub fn lease(reconnect: Duration) -> Duration {
    reconnect + LEASE_MARGIN
}

impl Watch {
    /// Watches until `stop` is cancelled, which it also cancels itself when the run lost its
    /// ownership. The task hands back the lock (if still held) and why ownership was lost.
    pub fn start(
        self,
        lock: JobLock,
        stop: CancellationToken,
    ) -> JoinHandle<(Option<JobLock>, Option<Lost>)> {
        tokio::spawn(async move {
            let (lock, lost) = self.run(lock, &stop).await;
            if lost.is_some() {
                stop.cancel();
            }
            (lock, lost)
        })
    }

    async fn run(
        &self,
        mut lock: JobLock,
        stop: &CancellationToken,
    ) -> (Option<JobLock>, Option<Lost>) {
        loop {
            match self.beat(&mut lock).await {
                Beat::Ours => {}
                Beat::Fenced(by) => return (Some(lock), Some(Lost::Fenced(by))),
                Beat::Dead(error) => {
                    let job = lock.job().to_string();
                    tracing::warn!(job = %job, "the Postgres session holding the job lock died ({error}): taking the lock again, for up to {:?}", self.reconnect);
                    drop(lock);
                    match self.reconnect(&job, stop).await {
                        Ok(Some(again)) => {
                            tracing::info!(job = %job, "took the job lock again: the run goes on");
                            lock = again;
                        }
                        Ok(None) => return (None, None),
                        Err(lost) => {
                            if !matches!(lost, Lost::Fenced(_)) {
                                tracing::error!(job = %job, "{}", lost.reason());
                            }
                            return (None, Some(lost));
                        }
                    }
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return (Some(lock), None),
                _ = tokio::time::sleep(HEARTBEAT_EVERY) => {}
            }
        }
    }

    /// Renews the lease on the lock's session.
    async fn beat(&self, lock: &mut JobLock) -> Beat {
        let beat = ledger::heartbeat(lock.connection(), self.fence, lease(self.reconnect));
        match timeout(STATEMENT_TIMEOUT, beat).await {
            Ok(Ok(true)) => Beat::Ours,
            Ok(Ok(false)) => Beat::Fenced(self.fenced_by().await),
            // The run's own writer holds the row (a commit in flight): alive, try next beat.
            Ok(Err(e)) if crate::db::is_lock_timeout(&e) => Beat::Ours,
            Ok(Err(e)) => Beat::Dead(e.to_string()),
            Err(_) => Beat::Dead(format!("no answer within {STATEMENT_TIMEOUT:?}")),
        }
    }

    async fn fenced_by(&self) -> String {
        ledger::fenced_by(&self.pool, self.fence.run_id)
            .await
            .unwrap_or_else(|e| format!("another process (could not read who: {e})"))
    }

    /// Re-establishes the lock's session with capped backoff until `self.reconnect` has
    /// passed. `Ok(None)`: stopped meanwhile (a signal, the run's end).
    async fn reconnect(
        &self,
        job: &str,
        stop: &CancellationToken,
    ) -> Result<Option<JobLock>, Lost> {
        let deadline = Instant::now() + self.reconnect;
        let mut attempt = 1;
        loop {
            let why =
                match timeout(STATEMENT_TIMEOUT, JobLock::try_acquire(&self.options, job)).await {
                    Ok(Ok(Some(mut lock))) => match self.beat(&mut lock).await {
                        Beat::Ours => return Ok(Some(lock)),
                        Beat::Fenced(by) => return Err(Lost::Fenced(by)),
                        Beat::Dead(e) => e,
                    },
                    Ok(Ok(None)) => match self.other_holder(job).await {
                        Some(holder) => return Err(Lost::Taken(holder)),
                        // Held by a session with no run recorded: a repair checking the job
                        // for a moment, a run just starting, or another tool. Try again.
                        None => "the lock is held by a session that records no run".to_string(),
                    },
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => format!("no answer within {STATEMENT_TIMEOUT:?}"),
                };
            let now = Instant::now();
            if now >= deadline {
                return Err(Lost::TimedOut(format!(
                    "could not take it again within {:?} ({why})",
                    self.reconnect
                )));
            }
            let delay = crate::sink::postgres::backoff_delay(attempt, rand::random())
                .min(Duration::from_secs(2))
                .min(deadline - now);
            tracing::debug!(attempt, ?delay, "the job lock is not back yet: {why}");
            tokio::select! {
                _ = stop.cancelled() => return Ok(None),
                _ = tokio::time::sleep(delay) => {}
            }
            attempt += 1;
        }
    }

    /// Another running run of the job, as "run N on host H (pid P)", if the ledger has one.
    async fn other_holder(&self, job: &str) -> Option<String> {
        let holder = ledger::holder(&self.pool, job).await.ok().flatten()?;
        (holder.run_id != self.fence.run_id).then(|| {
            format!(
                "run {} on host {} (pid {})",
                holder.run_id, holder.host, holder.pid
            )
        })
    }
}

/// What one heartbeat found.
enum Beat {
    Ours,
    Fenced(String),
    Dead(String),
}
