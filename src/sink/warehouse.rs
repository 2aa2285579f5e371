//! The warehouse lock: one Postgres advisory lock, held on a session of its own by whoever
//! changes what the manifest says the lake holds beyond a run's own new files (a run's repair
//! at its start, `export parquet`, `lake verify`, retention), so two of them never interleave.
//!
//! Advisory locks have no privileges: any role that may connect can take this one and keep it.
//! So a waiter never waits forever: it tries for at most its bound
//! (`EXPORT_LOCK_RECONNECT_TIMEOUT`), then gives up naming the session that holds it (pid,
//! role, application name; exit 75), and a stop (SIGTERM, SIGINT) ends the wait within
//! [`POLL`]. Nothing is changed before the lock is held.

use crate::db::{DbError, LockHolder};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The lock's key, computed by Postgres so every host and version agrees on it.
const KEY_SQL: &str = "hashtext('receipt-exporter:warehouse')";

/// How often a waiter tries again (and so how soon it sees a stop).
pub const POLL: Duration = Duration::from_millis(200);

/// Why the warehouse lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum WarehouseLockError {
    /// Still held when the bound ran out: exit 75 (try later), as for a job's lock.
    #[error("the warehouse lock (held while a repair, a rebuild, lake verify or retention changes what the manifest says the lake holds) is still held after {waited} s (EXPORT_LOCK_RECONNECT_TIMEOUT) by {holder}; nothing was changed: try later{end_it}")]
    Busy {
        holder: String,
        waited: u64,
        /// How to end the session if it is none of ours (empty when it is gone).
        end_it: String,
    },
    /// A stop (SIGTERM, SIGINT) came while waiting: exit 130.
    #[error(
        "interrupted while waiting for the warehouse lock, held by {holder}; nothing was changed"
    )]
    Interrupted { holder: String },
    #[error(transparent)]
    Connect(#[from] DbError),
    #[error("while taking the warehouse lock: {0}")]
    Postgres(#[from] sqlx::Error),
}

/// The warehouse lock, held on a session of its own (closing the session releases it too).
pub struct WarehouseLock {
    conn: PgConnection,
}

impl WarehouseLock {
    /// Opens a session and takes the lock on it, waiting at most `bound` (see [`lock`]).
    pub async fn acquire(
        options: &PgConnectOptions,
        bound: Duration,
        stop: &CancellationToken,
    ) -> Result<WarehouseLock, WarehouseLockError> {
        let mut conn = crate::db::connect_single(options).await?;
        lock(&mut conn, bound, stop).await?;
        Ok(WarehouseLock { conn })
    }

    /// The session that holds the lock (a repair declares runs dead on it).
    pub fn connection(&mut self) -> &mut PgConnection {
        &mut self.conn
    }

    /// Gives the lock back and closes its session.
    pub async fn release(mut self) {
        let _ = unlock(&mut self.conn).await;
        let _ = self.conn.close().await;
    }
}

/// Takes the warehouse lock on `conn`, trying every [`POLL`] for at most `bound`; the first
/// time it finds the lock held it logs who holds it. Fails with [`WarehouseLockError::Busy`]
/// when the bound runs out, [`WarehouseLockError::Interrupted`] when `stop` is cancelled.
pub async fn lock(
    conn: &mut PgConnection,
    bound: Duration,
    stop: &CancellationToken,
) -> Result<(), WarehouseLockError> {
    let started = Instant::now();
    let mut told = false;
    loop {
        let got: bool = sqlx::query_scalar(&format!("SELECT pg_try_advisory_lock({KEY_SQL})"))
            .fetch_one(&mut *conn)
            .await?;
        if got {
            return Ok(());
        }
        let (holder, pid) = holder(conn).await?;
        if !told && !bound.is_zero() {
            tracing::info!(
                "waiting up to {} s (EXPORT_LOCK_RECONNECT_TIMEOUT) for the warehouse lock, held by {holder}",
                bound.as_secs()
            );
            told = true;
        }
        let left = bound.saturating_sub(started.elapsed());
        if left.is_zero() {
            let waited = bound.as_secs();
            let end_it = pid.map_or_else(String::new, |pid| {
                format!(", and if that session is none of ours, end it (as a superuser or its role): SELECT pg_terminate_backend({pid});")
            });
            return Err(WarehouseLockError::Busy {
                holder,
                waited,
                end_it,
            });
        }
        tokio::select! {
            _ = stop.cancelled() => return Err(WarehouseLockError::Interrupted { holder }),
            _ = tokio::time::sleep(POLL.min(left)) => {}
        }
    }
}

/// Releases the lock [`lock`] took on this session.
pub async fn unlock(conn: &mut PgConnection) -> sqlx::Result<()> {
    sqlx::query(&format!("SELECT pg_advisory_unlock({KEY_SQL})"))
        .execute(conn)
        .await?;
    Ok(())
}

/// Who holds the lock, in words ("a session that just let go of it" when none does any more),
/// and its pid.
async fn holder(conn: &mut PgConnection) -> sqlx::Result<(String, Option<i32>)> {
    let key: i64 = sqlx::query_scalar(&format!("SELECT {KEY_SQL}::bigint"))
        .fetch_one(&mut *conn)
        .await?;
    let found: Option<LockHolder> = crate::db::advisory_holder(conn, key).await?;
    Ok(match found {
        Some(h) => (h.to_string(), Some(h.pid)),
        None => ("a session that just let go of it".into(), None),
    })
}
