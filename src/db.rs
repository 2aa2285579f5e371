//! Postgres connections and migrations.
//!
//! Every object of ours lives in the schema `receipts`, the migration ledger of sqlx included:
//! connections set `search_path` to it, and every statement still names it in full. Who may do
//! what there is [`roles`]: `migrate` applies its grants after the migrations.

pub mod roles;

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
    /// `reason` says what failed (refused, authentication, no such database, ...) in words.
    #[error("while connecting to Postgres ({target}): {reason}")]
    Connect { target: String, reason: String },
    #[error("while applying migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("while preparing the schema: {0}")]
    Schema(#[source] sqlx::Error),
    /// The role may not migrate, or the group roles are missing: the user's to fix (exit 2).
    #[error(transparent)]
    Roles(#[from] roles::RoleError),
    #[error("while granting the group roles their rights ({path}): {source}", path = roles::GRANTS_PATH)]
    Grants {
        #[source]
        source: sqlx::Error,
    },
}

impl DbError {
    /// True when the user's setup is at fault (exit code 2): the wrong role, missing roles.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            DbError::Roles(
                roles::RoleError::NotOwner { .. }
                    | roles::RoleError::NoSchema { .. }
                    | roles::RoleError::NoGroupRoles { .. }
            )
        )
    }
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

/// How long the first connection may take before the command says Postgres is unreachable.
const FIRST_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A small pool for the run's statements. The run's advisory lock does not use it: a lock
/// belongs to one session, so it lives on a connection of its own.
///
/// One direct connection is opened first: a pool hides why it cannot connect behind "pool
/// timed out" after its acquire timeout, while the connection's own error says it at once.
pub async fn connect(options: &PgConnectOptions) -> Result<PgPool, DbError> {
    connect_single(options).await?.close().await.ok();
    PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(15))
        .connect_with(session_options(options))
        .await
        .map_err(|e| connect_error(options, &e))
}

/// One dedicated connection (for the advisory lock), or what kept it from opening.
pub async fn connect_single(options: &PgConnectOptions) -> Result<PgConnection, DbError> {
    let session = session_options(options);
    let connecting = PgConnection::connect_with(&session);
    match tokio::time::timeout(FIRST_CONNECT_TIMEOUT, connecting).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(connect_error(options, &e)),
        Err(_) => Err(DbError::Connect {
            target: describe(options),
            reason: format!(
                "no answer within {} s (a firewall, or a wrong host)",
                FIRST_CONNECT_TIMEOUT.as_secs()
            ),
        }),
    }
}

fn connect_error(options: &PgConnectOptions, e: &sqlx::Error) -> DbError {
    DbError::Connect {
        target: describe(options),
        reason: explain_connect(options, e),
    }
}

/// What a failed connection attempt means, in the words a person acts on.
pub fn explain_connect(options: &PgConnectOptions, e: &sqlx::Error) -> String {
    let user = options.get_username();
    let database = options.get_database().unwrap_or(user);
    match e {
        sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            "connection refused: is Postgres running and listening on that host and port?".into()
        }
        sqlx::Error::Io(io) => format!("{io}: check the host and port of DATABASE_URL"),
        sqlx::Error::Tls(tls) => format!("TLS failed: {tls}"),
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some("28P01" | "28000") => format!(
                "authentication failed for user {user:?} (check the user and password of DATABASE_URL): {}",
                db.message()
            ),
            Some("3D000") => format!(
                "the database {database:?} does not exist (create it, or fix DATABASE_URL)"
            ),
            Some("53300") => format!("the server has too many connections: {}", db.message()),
            Some("57P03") => format!("the server is starting up or shutting down: {}", db.message()),
            _ => db.message().to_string(),
        },
        other => other.to_string(),
    }
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

/// Applies the pending migrations, then the group roles' grants (every time: the rights of
/// this version, whatever an earlier one granted); returns the versions and descriptions it
/// applied. Refuses first, changing nothing, a role that does not own the schema, and missing
/// group roles that this role may not create.
pub async fn migrate(pool: &PgPool) -> Result<Vec<(i64, String)>, DbError> {
    migrate_with(pool, Grants::Required).await
}

/// Whether a migration must leave the group roles their rights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grants {
    /// `migrate`: without the group roles (and the right to create them) it refuses.
    Required,
    /// `demo`, on a local server where its role may create a database but not roles: the
    /// grants are skipped when the group roles are missing (the demo logs in as that role).
    IfRolesExist,
}

/// [`migrate`], with the group roles' grants as `grants` says.
pub async fn migrate_with(pool: &PgPool, grants: Grants) -> Result<Vec<(i64, String)>, DbError> {
    let with_roles = {
        let mut conn = pool.acquire().await.map_err(DbError::Schema)?;
        roles::check_may_migrate(&mut conn).await?;
        match roles::ensure_group_roles(&mut conn).await {
            Ok(()) => true,
            Err(roles::RoleError::NoGroupRoles { .. }) if grants == Grants::IfRolesExist => false,
            Err(e) => return Err(e.into()),
        }
    };
    // The ledger table of sqlx is created in the first schema of the search path, before the
    // first migration runs: the schema has to exist first.
    sqlx::query("CREATE SCHEMA IF NOT EXISTS receipts")
        .execute(pool)
        .await
        .map_err(DbError::Schema)?;
    let applied_before = applied_versions(pool).await?;
    MIGRATOR.run(pool).await?;
    if with_roles {
        roles::apply_grants(pool)
            .await
            .map_err(|source| DbError::Grants { source })?;
    }
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

/// Creates the snapshot table's partitions for the coming `months` (a run calls it before
/// writing, so rows land in their month's partition rather than the default one).
pub async fn ensure_snapshot_partitions(pool: &PgPool, months: i32) -> sqlx::Result<()> {
    sqlx::query("SELECT receipts.ensure_snapshot_partitions($1)")
        .bind(months)
        .execute(pool)
        .await
        .map(|_| ())
}

/// How many migrations the database has applied successfully (an error: none, or no schema).
pub async fn applied_migrations(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM receipts._sqlx_migrations WHERE success")
        .fetch_one(pool)
        .await
}

/// Creates the database `name` on the server `conn` is connected to, unless it exists.
/// Returns whether it was created. `name` is ours (a constant), never user input.
pub async fn create_database_if_missing(conn: &mut PgConnection, name: &str) -> sqlx::Result<bool> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut *conn)
            .await?;
    if !exists {
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut *conn)
            .await?;
    }
    Ok(!exists)
}

/// A session holding an advisory lock: what Postgres tells any role about it (`pg_locks` and
/// `pg_stat_activity` show every session's pid, role and application name to everyone).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LockHolder {
    pub pid: i32,
    pub role: Option<String>,
    pub application: Option<String>,
}

impl std::fmt::Display for LockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let role = self.role.as_deref().unwrap_or("unknown");
        match self.application.as_deref().filter(|a| !a.is_empty()) {
            Some(app) => write!(
                f,
                "the session of pid {} (role {role}, application {})",
                self.pid,
                crate::untrusted::escape(app)
            ),
            None => write!(
                f,
                "the session of pid {} (role {role}, no application name)",
                self.pid
            ),
        }
    }
}

/// The session holding the advisory lock `key` (a bigint key, as `pg_advisory_lock(bigint)`
/// takes it) in this database, if one holds it.
pub async fn advisory_holder(
    conn: &mut PgConnection,
    key: i64,
) -> sqlx::Result<Option<LockHolder>> {
    sqlx::query_as(
        "SELECT l.pid, a.usename::text AS role, a.application_name AS application
         FROM pg_locks l
         JOIN pg_database d ON d.oid = l.database AND d.datname = current_database()
         LEFT JOIN pg_stat_activity a ON a.pid = l.pid
         WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
           AND ((l.classid::bigint << 32) | l.objid::bigint) = $1
         LIMIT 1",
    )
    .bind(key)
    .fetch_optional(conn)
    .await
}
