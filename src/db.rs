//! Postgres connections and migrations.
//!
//! Every object of ours lives in the schema `receipts`, the migration ledger of sqlx included:
//! connections set `search_path` to it, and every statement still names it in full.

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};
use std::str::FromStr;
use std::time::Duration;

/// The migrations in `migrations/`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The schema that holds every table, view and function of receipt-exporter.
pub const SCHEMA: &str = "receipts";

/// Errors of the database layer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("while connecting to Postgres ({target}): {source}")]
    Connect {
        target: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("while applying migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("while preparing the schema: {0}")]
    Schema(#[source] sqlx::Error),
}

/// Parses a connection URL (settings validate it before any I/O).
pub fn connect_options(url: &str) -> Result<PgConnectOptions, sqlx::Error> {
    PgConnectOptions::from_str(url)
}

/// What every connection of ours is opened with: our schema alone on the search path,
/// server-side TCP keepalives, so a crashed host's session (and its advisory lock) is freed
/// in about two minutes rather than hours, and an end to transactions left idle for a minute
/// (a frozen process must not hold a run's row, and so its take-over, forever; our own
/// transactions never wait on the client that long).
fn session_options(options: &PgConnectOptions) -> PgConnectOptions {
    options
        .clone()
        .application_name("receipt-exporter")
        .options([
            ("search_path", SCHEMA),
            ("tcp_keepalives_idle", "60"),
            ("tcp_keepalives_interval", "10"),
            ("tcp_keepalives_count", "6"),
            ("idle_in_transaction_session_timeout", "60000"),
        ])
}

/// "host:port/database" of a URL, for messages: never the password.
pub fn describe(options: &PgConnectOptions) -> String {
    format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("")
    )
}

/// A small pool for the run's statements. The run's advisory lock does not use it: a lock
/// belongs to one session, so it lives on a connection of its own.
pub async fn connect(options: &PgConnectOptions) -> Result<PgPool, DbError> {
    PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(15))
        .connect_with(session_options(options))
        .await
        .map_err(|source| DbError::Connect {
            target: describe(options),
            source,
        })
}

/// One dedicated connection (for the advisory lock).
pub async fn connect_single(options: &PgConnectOptions) -> Result<PgConnection, DbError> {
    PgConnection::connect_with(&session_options(options))
        .await
        .map_err(|source| DbError::Connect {
            target: describe(options),
            source,
        })
}

/// How long a statement that takes over a run waits for a row another transaction holds (a
/// writer in the middle of a commit): longer means that writer is stuck, and the take-over is
/// left for later rather than holding up a run's start.
pub const LOCK_TIMEOUT: &str = "10s";

/// Begins a transaction whose lock waits give up after [`LOCK_TIMEOUT`] (see
/// [`is_lock_timeout`]).
pub async fn begin_with_lock_timeout(
    conn: &mut PgConnection,
) -> sqlx::Result<sqlx::Transaction<'_, sqlx::Postgres>> {
    let mut tx = conn.begin().await?;
    sqlx::query(&format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// True when a statement gave up waiting for a lock (`lock_timeout`, SQLSTATE 55P03).
pub fn is_lock_timeout(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some("55P03"))
}

/// Applies the pending migrations; returns the versions and descriptions it applied.
pub async fn migrate(pool: &PgPool) -> Result<Vec<(i64, String)>, DbError> {
    // The ledger table of sqlx is created in the first schema of the search path, before the
    // first migration runs: the schema has to exist first.
    sqlx::query("CREATE SCHEMA IF NOT EXISTS receipts")
        .execute(pool)
        .await
        .map_err(DbError::Schema)?;
    let applied_before = applied_versions(pool).await?;
    MIGRATOR.run(pool).await?;
    Ok(MIGRATOR
        .iter()
        .filter(|m| !applied_before.contains(&m.version))
        .map(|m| (m.version, m.description.to_string()))
        .collect())
}

async fn applied_versions(pool: &PgPool) -> Result<Vec<i64>, DbError> {
    let exists: bool =
        sqlx::query_scalar("SELECT to_regclass('receipts._sqlx_migrations') IS NOT NULL")
            .fetch_one(pool)
            .await
            .map_err(DbError::Schema)?;
    if !exists {
        return Ok(Vec::new());
    }
    sqlx::query_scalar("SELECT version FROM receipts._sqlx_migrations WHERE success")
        .fetch_all(pool)
        .await
        .map_err(DbError::Schema)
}
