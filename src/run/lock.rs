//! No overlap: one Postgres advisory lock per job, held for the whole run on a dedicated
//! connection (an advisory lock belongs to one session: a pooled connection could hand it to
//! someone else). The server's TCP keepalives (set on every connection, see `db`) free the lock
//! of a crashed host within minutes. The lock's session also carries the run's heartbeats
//! (see `watch`), which re-establishes it when it dies.

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

/// The lock key of a job: a 64-bit hash of its name, computed by Postgres so every host and
/// version agrees on it.
const KEY_SQL: &str = "hashtextextended('receipt-exporter:job:' || $1, 0)";

/// How long a statement on the lock's session waits for a row lock: a heartbeat that finds
/// the run's row held by the run's own writer (a commit in flight) skips that beat.
const SESSION_LOCK_TIMEOUT: &str = "2s";

/// A held job lock and the session that holds it.
pub struct JobLock {
    conn: PgConnection,
    job: String,
}

impl JobLock {
    /// Takes the job's lock if it is free; `None` when another session holds it.
    pub async fn try_acquire(
        options: &PgConnectOptions,
        job: &str,
    ) -> Result<Option<JobLock>, crate::db::DbError> {
        let mut conn = crate::db::connect_single(options).await?;
        sqlx::query(&format!("SET lock_timeout = '{SESSION_LOCK_TIMEOUT}'"))
            .execute(&mut conn)
            .await
            .map_err(crate::db::DbError::Schema)?;
        let got = try_lock(&mut conn, job)
            .await
            .map_err(crate::db::DbError::Schema)?;
        Ok(got.then(|| JobLock {
            conn,
            job: job.to_string(),
        }))
    }

    /// The session that holds the lock, for the run's heartbeats.
    pub fn connection(&mut self) -> &mut PgConnection {
        &mut self.conn
    }

    pub fn job(&self) -> &str {
        &self.job
    }

    /// Releases the lock (closing the session would too).
    pub async fn release(mut self) {
        let _ = unlock(&mut self.conn, &self.job).await;
        let _ = self.conn.close().await;
    }
}

/// Takes the lock of `job` on `conn` if it is free (a repair holds another job's lock while it
/// declares that job's run dead, so the run cannot take it back meanwhile).
pub async fn try_lock(conn: &mut PgConnection, job: &str) -> sqlx::Result<bool> {
    sqlx::query_scalar(&format!("SELECT pg_try_advisory_lock({KEY_SQL})"))
        .bind(job)
        .fetch_one(conn)
        .await
}

/// Releases a lock [`try_lock`] took on `conn`.
pub async fn unlock(conn: &mut PgConnection, job: &str) -> sqlx::Result<()> {
    sqlx::query(&format!("SELECT pg_advisory_unlock({KEY_SQL})"))
        .bind(job)
        .execute(conn)
        .await?;
    Ok(())
}

/// Whether the lock of `job` is free right now (taken and given back at once). A run that the
/// ledger says is running while its job's lock is free has lost its session: it is
/// reconnecting, or dead once its lease has run out.
pub async fn is_free(conn: &mut PgConnection, job: &str) -> sqlx::Result<bool> {
    if !try_lock(conn, job).await? {
        return Ok(false);
    }
    unlock(conn, job).await?;
    Ok(true)
}

/// Who holds the lock of `job` when the ledger names no running run of it: a run that has not
/// recorded itself yet, or a session that is none of ours (any role that may connect can take
/// an advisory lock). Told in words, for the message of a run that exits 75.
pub async fn holder(options: &PgConnectOptions, job: &str) -> String {
    const UNKNOWN: &str = "a session that has not recorded its run yet";
    let Ok(mut conn) = crate::db::connect_single(options).await else {
        return UNKNOWN.into();
    };
    let key: sqlx::Result<i64> = sqlx::query_scalar(&format!("SELECT {KEY_SQL}"))
        .bind(job)
        .fetch_one(&mut conn)
        .await;
    let found = match key {
        Ok(key) => crate::db::advisory_holder(&mut conn, key)
            .await
            .ok()
            .flatten(),
        Err(_) => None,
    };
    let _ = conn.close().await;
    match found {
        Some(h) => format!(
            "{h}, which has recorded no running run of the job (a run starting, or another tool)"
        ),
        None => UNKNOWN.into(),
    }
}
