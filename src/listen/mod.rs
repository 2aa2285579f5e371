//! `listen`: the read-receipt webhook (`Group.CallbackAfterReadReceipt`), received, kept and
//! brought into the data set.
//!
//! The way of a delivery: the HTTP receiver ([`server`]) checks the app and the token
//! ([`auth`]) before reading the body, caps and reads it ([`delivery`]), appends its messages to
//! the inbox in Postgres in one transaction ([`inbox`]) and only then answers OK. The flush
//! ([`flush`]) turns inbox rows into snapshots at their EventTime through a live run of its own
//! ([`crate::run::live`]): fenced like runs, exactly once in Postgres and the lake. The receiver
//! never waits for the lake. What both counted is served on `/metrics` ([`counters`]). After a
//! pull, [`reconcile`] records per group how many messages the webhook had kept fresh and how
//! many changes the pull found that it missed.

pub mod auth;
pub mod counters;
pub mod delivery;
pub mod flush;
pub mod inbox;
pub mod reconcile;
pub mod server;

use crate::run::ledger::RunStatus;
use crate::run::RunReport;
use crate::secret::Secret;
use crate::settings::Settings;
use sqlx::PgPool;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The ledger's job name of the listener's live runs: `listen` for the default app,
/// `listen-NAME` for the app `--app NAME`. One listener per app and database at a time: a
/// second one waits for nothing, it exits 75 naming the first.
pub fn job(settings: &Settings) -> String {
    match settings.app_name.as_str() {
        "default" => "listen".to_string(),
        name => format!("listen-{name}"),
    }
}

/// The address cannot be listened on: a configuration error (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("EXPORT_LISTEN / --listen {addr}: cannot listen there: {source} (another process has the port, or the address is not this host's)")]
pub struct ListenError {
    addr: SocketAddr,
    #[source]
    source: std::io::Error,
}

/// Binds the receiver's address before anything else (a taken port is exit 2).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ListenError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ListenError { addr, source })
}

/// What the receiver checks deliveries against.
#[derive(Debug, Clone)]
pub struct Receiver {
    pub path: String,
    pub sdkappid: u64,
    pub token: Option<Secret>,
}

/// Receives on `listener` and flushes through the listener's live runs until `stop` (SIGTERM):
/// then stops receiving, lets requests in flight finish, flushes every acknowledged row and
/// closes the run. Returns the last run's report (an error: a run could not begin).
pub async fn serve(
    settings: &Settings,
    pool: &PgPool,
    listener: TcpListener,
    receiver: Receiver,
    policy: flush::Policy,
    stop: CancellationToken,
) -> anyhow::Result<RunReport> {
    let counters = Arc::new(counters::Counters::default());
    let wake = Arc::new(Notify::new());
    let state = Arc::new(server::State {
        pool: pool.clone(),
        path: receiver.path,
        sdkappid: receiver.sdkappid,
        token: receiver.token,
        counters: counters.clone(),
        wake: wake.clone(),
        flush_rows: policy.rows,
    });
    let receiving = CancellationToken::new();
    let server = tokio::spawn(server::run(listener, state, receiving.clone()));
    // The flush's last round starts once the receiver has answered its last delivery.
    let drained = CancellationToken::new();
    let (until, done, waiting) = (drained.clone(), receiving.clone(), stop.clone());
    let stopper = tokio::spawn(async move {
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = done.cancelled() => {}
        }
        done.cancel();
        let _ = server.await;
        until.cancel();
    });
    // A signal while a run waits for its locks ends the wait (and the listener).
    let report = runs(settings, pool, &waiting, (policy, wake, drained, counters)).await;
    receiving.cancel();
    let _ = stopper.await;
    report
}

/// What each flush run needs: the policy, the receiver's wake-up, its "drained" signal and
/// its counters.
type FlushWith = (
    flush::Policy,
    Arc<Notify>,
    CancellationToken,
    Arc<counters::Counters>,
);

/// The listener's live runs, one after the other: each ends at the next midnight UTC (so a
/// run's rows sit in the partition of its own day and retention can drop old months while the
/// listener goes on) and the next one starts, until the receiver has stopped or a run did not
/// succeed. Returns the last run's report.
async fn runs(
    settings: &Settings,
    pool: &PgPool,
    waiting: &CancellationToken,
    (policy, wake, drained, counters): FlushWith,
) -> anyhow::Result<RunReport> {
    loop {
        let (wake, done, counters) = (wake.clone(), drained.clone(), counters.clone());
        let ends = tokio::time::Instant::now() + until_midnight(chrono::Utc::now());
        let source: crate::run::live::Source =
            Box::new(move |live| Box::pin(flush::run(live, policy, wake, done, counters, ends)));
        let job = job(settings);
        let report = crate::run::live::execute(settings, pool, &job, waiting, source).await?;
        if report.status != RunStatus::Succeeded || drained.is_cancelled() {
            return Ok(report);
        }
        tracing::info!(
            run_id = report.run_id,
            "the listener's run closed at midnight UTC; its next run starts"
        );
    }
}

/// The time from `now` to the next midnight UTC.
fn until_midnight(now: chrono::DateTime<chrono::Utc>) -> std::time::Duration {
    let tomorrow = now.date_naive().succ_opt().expect("a next day");
    let midnight = tomorrow.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
    (midnight - now).to_std().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_run_ends_at_the_next_midnight_utc() {
        let at = |s: &str| s.parse::<chrono::DateTime<chrono::Utc>>().unwrap();
        let left = super::until_midnight(at("2026-12-06T23:59:30Z"));
        assert_eq!(left, std::time::Duration::from_secs(30));
        let left = super::until_midnight(at("2026-12-06T00:00:00Z"));
        assert_eq!(left, std::time::Duration::from_secs(86_400));
    }
}
