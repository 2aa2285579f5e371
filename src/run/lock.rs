//! No overlap: one Postgres advisory lock per job, held for the whole run on a dedicated
//! connection (an advisory lock belongs to one session: a pooled connection could hand it to
//! someone else). The server's TCP keepalives (set on every connection, see `db`) free the lock
//! of a crashed host within minutes; the run pings the connection and stops if it dies.

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

/// The lock key of a job: a 64-bit hash of its name, computed by Postgres so every host and
/// version agrees on it.
const KEY_SQL: &str = "hashtextextended('receipt-exporter:job:' || $1, 0)";

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
        let got = try_lock(&mut conn, job)
            .await
            .map_err(crate::db::DbError::Schema)?;
        Ok(got.then(|| JobLock {
            conn,
            job: job.to_string(),
        }))
    }

    /// The session that holds the lock, for work that must happen under it (repair).
    pub fn connection(&mut self) -> &mut PgConnection {
        &mut self.conn
    }

    /// Whether the lock's session still answers.
    pub async fn is_alive(&mut self) -> bool {
        self.conn.ping().await.is_ok()
    }

    pub fn job(&self) -> &str {
        &self.job
    }

    /// Releases the lock (closing the session would too).
    pub async fn release(mut self) {
        let _ = sqlx::query(&format!("SELECT pg_advisory_unlock({KEY_SQL})"))
            .bind(&self.job)
            .execute(&mut self.conn)
            .await;
        let _ = self.conn.close().await;
    }
}

async fn try_lock(conn: &mut PgConnection, job: &str) -> sqlx::Result<bool> {
    sqlx::query_scalar(&format!("SELECT pg_try_advisory_lock({KEY_SQL})"))
        .bind(job)
        .fetch_one(conn)
        .await
}

/// Whether the lock of `job` is free right now (taken and given back at once): a run that
/// the ledger says is running while its job's lock is free belongs to a dead process.
pub async fn is_free(conn: &mut PgConnection, job: &str) -> sqlx::Result<bool> {
    if !try_lock(conn, job).await? {
        return Ok(false);
    }
    sqlx::query(&format!("SELECT pg_advisory_unlock({KEY_SQL})"))
        .bind(job)
        .execute(conn)
        .await?;
    Ok(true)
}
