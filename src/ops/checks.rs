//! How the last `lake verify` and `doctor` came out (`receipts.check_outcomes`), so the
//! metrics carry it and an alert can fire on a lake that no longer matches its manifest.
//! One row per check, replaced by each new outcome: one small function per statement.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// The check names the commands record.
pub const LAKE_VERIFY: &str = "lake_verify";
pub const DOCTOR: &str = "doctor";

/// The newest outcome of one check.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct CheckOutcome {
    pub check_name: String,
    pub checked_at: DateTime<Utc>,
    pub ok: bool,
    pub problems: i32,
}

/// Records a check's outcome (replacing the one before). `detail`: its first problems, or
/// `None` when it passed.
pub async fn record(
    pool: &PgPool,
    check: &str,
    ok: bool,
    problems: usize,
    detail: Option<&str>,
) -> sqlx::Result<()> {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    sqlx::query(
        "INSERT INTO receipts.check_outcomes (check_name, checked_at, ok, problems, detail, host)
         VALUES ($1, now(), $2, $3, $4, $5)
         ON CONFLICT (check_name) DO UPDATE SET checked_at = now(), ok = $2, problems = $3,
             detail = $4, host = $5",
    )
    .bind(check)
    .bind(ok)
    .bind(i32::try_from(problems).unwrap_or(i32::MAX))
    .bind(detail)
    .bind(host)
    .execute(pool)
    .await?;
    Ok(())
}

/// Records, logging a failure instead of returning it: a check's own exit code stands.
pub async fn record_or_warn(
    pool: &PgPool,
    check: &str,
    ok: bool,
    problems: usize,
    detail: Option<&str>,
) {
    if let Err(e) = record(pool, check, ok, problems, detail).await {
        tracing::warn!("could not record the outcome of {check} in receipts.check_outcomes (the metrics will not show it): {e}");
    }
}

/// Every check's newest outcome.
pub async fn load(pool: &PgPool) -> sqlx::Result<Vec<CheckOutcome>> {
    sqlx::query_as(
        "SELECT check_name, checked_at, ok, problems FROM receipts.check_outcomes
         ORDER BY check_name",
    )
    .fetch_all(pool)
    .await
}
