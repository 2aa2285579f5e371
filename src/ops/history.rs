//! Reading the run ledger (`receipts.export_runs`): one small function per statement.

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;
use sqlx::PgPool;

/// Every column of a ledger row, plus its duration.
const RUN_COLUMNS: &str =
    "run_id, job, app, sdkappid, kind, status, started_at, run_date, finished_at, host, pid,
    groups_ok, groups_failed, seqs_asked, receipts_written, api_calls, retries, retries_by_class,
    rate_limited, item_codes, parquet_files, error, details,
    seqs_skipped_settled, seqs_skipped_no_receipt, seqs_left, calls_left,
    EXTRACT(EPOCH FROM finished_at - started_at)::float8 AS duration_seconds";

/// One run as the ledger holds it.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct RunRow {
    pub run_id: i64,
    pub job: String,
    /// The app it exported for (`default`: the TIM_* settings); `None` for a run before apps
    /// that the default app has not adopted yet.
    pub app: Option<String>,
    /// That app's SDKAppID.
    pub sdkappid: Option<i64>,
    pub kind: String,
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub run_date: NaiveDate,
    pub finished_at: Option<DateTime<Utc>>,
    pub host: String,
    pub pid: i32,
    pub groups_ok: i32,
    pub groups_failed: i32,
    pub seqs_asked: i64,
    pub receipts_written: i64,
    pub api_calls: i64,
    pub retries: i64,
    /// `{"rate_limited": n, "transient": n, ...}`
    pub retries_by_class: Value,
    /// Answers that said "rate limited" (each retried).
    pub rate_limited: i64,
    /// Non-zero item codes and how often each came: `{"10062": n}`.
    pub item_codes: Value,
    pub parquet_files: i32,
    pub error: Option<String>,
    pub details: Value,
    /// Seqs the planner skipped: settled (unread 0) and without a receipt (10062 K times).
    pub seqs_skipped_settled: i64,
    pub seqs_skipped_no_receipt: i64,
    /// What a run stopped by its budget left for the next one.
    pub seqs_left: i64,
    pub calls_left: i64,
    /// `None` while the run is going.
    pub duration_seconds: Option<f64>,
}

/// Which runs `runs list` shows.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub job: Option<String>,
    pub status: Option<String>,
    /// Only runs of this app (its name).
    pub app: Option<String>,
    pub limit: i64,
}

/// The newest runs that pass `filter`, newest first.
pub async fn list(pool: &PgPool, filter: &RunFilter) -> sqlx::Result<Vec<RunRow>> {
    sqlx::query_as(&format!(
        "SELECT {RUN_COLUMNS} FROM receipts.export_runs
         WHERE ($1::text IS NULL OR job = $1) AND ($2::text IS NULL OR status = $2)
           AND ($4::text IS NULL OR app = $4)
         ORDER BY started_at DESC, run_id DESC LIMIT $3"
    ))
    .bind(&filter.job)
    .bind(&filter.status)
    .bind(filter.limit)
    .bind(&filter.app)
    .fetch_all(pool)
    .await
}

/// One run, if the ledger has it.
pub async fn get(pool: &PgPool, run_id: i64) -> sqlx::Result<Option<RunRow>> {
    sqlx::query_as(&format!(
        "SELECT {RUN_COLUMNS} FROM receipts.export_runs WHERE run_id = $1"
    ))
    .bind(run_id)
    .fetch_optional(pool)
    .await
}

/// A committed Parquet file of a run.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct RunFile {
    pub path: String,
    pub capture_date: NaiveDate,
    pub row_count: i64,
    pub byte_size: i64,
}

/// The Parquet files a run committed (the manifest: repairs may have rebuilt them since).
pub async fn files(pool: &PgPool, run_id: i64) -> sqlx::Result<Vec<RunFile>> {
    sqlx::query_as(
        "SELECT path, capture_date, row_count, byte_size FROM receipts.parquet_files
         WHERE run_id = $1 ORDER BY capture_date, part",
    )
    .bind(run_id)
    .fetch_all(pool)
    .await
}

/// A job's freshness: its newest successful run and its newest run of any kind, with their
/// ages measured by the database clock (the clock that wrote `finished_at`).
#[derive(Debug, Clone, Default)]
pub struct Freshness {
    /// (run id, finished at, age in seconds) of the newest succeeded run.
    pub last_success: Option<(i64, DateTime<Utc>, f64)>,
    /// The newest run, whatever its status.
    pub last_run: Option<RunRow>,
    /// Seconds since the newest run finished (`None` when still running or absent).
    pub last_run_age: Option<f64>,
}

/// The freshness of `job` (only its runs of app `app`, when given).
pub async fn freshness(pool: &PgPool, job: &str, app: Option<&str>) -> sqlx::Result<Freshness> {
    let last_success = sqlx::query_as(
        "SELECT run_id, finished_at, EXTRACT(EPOCH FROM now() - finished_at)::float8
         FROM receipts.export_runs
         WHERE job = $1 AND status = 'succeeded' AND finished_at IS NOT NULL
           AND ($2::text IS NULL OR app = $2)
         ORDER BY finished_at DESC, run_id DESC LIMIT 1",
    )
    .bind(job)
    .bind(app)
    .fetch_optional(pool)
    .await?;
    let newest: Option<(i64, Option<f64>)> = sqlx::query_as(
        "SELECT run_id, EXTRACT(EPOCH FROM now() - finished_at)::float8
         FROM receipts.export_runs WHERE job = $1 AND ($2::text IS NULL OR app = $2)
         ORDER BY started_at DESC, run_id DESC LIMIT 1",
    )
    .bind(job)
    .bind(app)
    .fetch_optional(pool)
    .await?;
    let (last_run, last_run_age) = match newest {
        Some((run_id, age)) => (get(pool, run_id).await?, age),
        None => (None, None),
    };
    Ok(Freshness {
        last_success,
        last_run,
        last_run_age,
    })
}

/// Every job the ledger knows, sorted.
pub async fn jobs(pool: &PgPool) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar("SELECT DISTINCT job FROM receipts.export_runs ORDER BY job")
        .fetch_all(pool)
        .await
}

/// The groups of the newest finished run whose every asked seq answered 10062 (no read
/// receipt): no snapshot and no other code. Returns that run's id and the groups.
pub async fn groups_without_receipts(pool: &PgPool) -> sqlx::Result<Option<(i64, Vec<String>)>> {
    let newest: Option<(i64, NaiveDate)> = sqlx::query_as(
        "SELECT run_id, run_date FROM receipts.export_runs
         WHERE status <> 'running' ORDER BY finished_at DESC NULLS LAST, run_id DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await?;
    let Some((run_id, run_date)) = newest else {
        return Ok(None);
    };
    let groups = sqlx::query_scalar(
        "SELECT c.group_id FROM receipts.receipt_item_codes c
         WHERE c.run_id = $1
         GROUP BY c.group_id
         HAVING bool_and(c.code = 10062)
            AND NOT EXISTS (SELECT 1 FROM receipts.receipt_snapshots s
                            WHERE s.run_date = $2 AND s.run_id = $1 AND s.group_id = c.group_id)
         ORDER BY c.group_id",
    )
    .bind(run_id)
    .bind(run_date)
    .fetch_all(pool)
    .await?;
    Ok(Some((run_id, groups)))
}
