//! The run ledger, `receipts.export_runs`: one small function per statement.

use super::liveness::Identity;
use crate::sink::Fence;
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{PgConnection, PgExecutor, PgPool};
use std::collections::BTreeMap;
use std::time::Duration;

/// How a run ended (or that it is still going).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Running,
    Succeeded,
    Partial,
    Failed,
    Interrupted,
    Abandoned,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Partial => "partial",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Abandoned => "abandoned",
        }
    }
}

/// What started the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    Scheduled,
    Manual,
    Backfill,
    /// A live run: the webhook's flush (`listen`), rows from the inbox, not from a pull.
    Listen,
}

impl RunKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Scheduled => "scheduled",
            RunKind::Manual => "manual",
            RunKind::Backfill => "backfill",
            RunKind::Listen => "listen",
        }
    }
}

/// A run the ledger says is still going.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RunningRun {
    pub run_id: i64,
    pub job: String,
    pub host: String,
    pub pid: i32,
    pub started_at: DateTime<Utc>,
    /// Until when its heartbeats keep it alive (NULL: a row from before leases).
    pub lease_until: Option<DateTime<Utc>>,
    /// Its process beyond host and pid (see [`super::liveness`]); NULL in older rows.
    pub boot_id: Option<String>,
    pub pid_namespace: Option<i64>,
    pub process_start: Option<i64>,
}

impl RunningRun {
    /// Whether this machine can tell that the run's process is gone.
    pub fn liveness(&self, me: &super::liveness::Identity) -> super::liveness::Liveness {
        super::liveness::of(
            me,
            self.boot_id.as_deref(),
            self.pid_namespace,
            self.pid,
            self.process_start,
        )
    }
}

/// The columns of [`RunningRun`].
const RUNNING_COLUMNS: &str =
    "run_id, job, host, pid, started_at, lease_until, boot_id, pid_namespace, process_start";

/// The figures a finished run records.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RunFigures {
    pub groups_ok: i32,
    pub groups_failed: i32,
    pub seqs_asked: i64,
    pub receipts_written: i64,
    pub api_calls: i64,
    pub retries: i64,
    pub retries_by_class: BTreeMap<String, u64>,
    pub rate_limited: i64,
    pub item_codes: BTreeMap<String, u64>,
    pub parquet_files: i32,
    pub details: serde_json::Value,
}

/// Opens a run with a first `lease` (see [`heartbeat`]): returns its id, its partition date
/// and the epoch its writer holds.
pub async fn start(
    pool: &PgPool,
    job: &str,
    kind: RunKind,
    me: &Identity,
    lease: Duration,
) -> sqlx::Result<(i64, NaiveDate, i64)> {
    sqlx::query_as(
        "INSERT INTO receipts.export_runs (job, kind, status, host, pid, heartbeat_at, lease_until,
                                           boot_id, pid_namespace, process_start)
         VALUES ($1, $2, 'running', $3, $4, now(), now() + make_interval(secs => $5), $6, $7, $8)
         RETURNING run_id, run_date, epoch",
    )
    .bind(job)
    .bind(kind.as_str())
    .bind(&me.host)
    .bind(me.pid as i32)
    .bind(lease.as_secs_f64())
    .bind(&me.boot_id)
    .bind(me.pid_namespace)
    .bind(me.start_ticks)
    .fetch_one(pool)
    .await
}

/// Closes a run with its figures and, when it did not succeed, the error that ended it. Only
/// a run still `running` under the writer's own epoch is closed: false when the run was fenced
/// (declared dead and taken over), whose `abandoned` then stands.
pub async fn finish(
    pool: &PgPool,
    fence: Fence,
    status: RunStatus,
    figures: &RunFigures,
    error: Option<&str>,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE receipts.export_runs SET
            status = $2, finished_at = now(), groups_ok = $3, groups_failed = $4, seqs_asked = $5,
            receipts_written = $6, api_calls = $7, retries = $8, retries_by_class = $9,
            rate_limited = $10, item_codes = $11, parquet_files = $12, details = $13, error = $14
         WHERE run_id = $1 AND epoch = $15 AND status = 'running'",
    )
    .bind(fence.run_id)
    .bind(status.as_str())
    .bind(figures.groups_ok)
    .bind(figures.groups_failed)
    .bind(figures.seqs_asked)
    .bind(figures.receipts_written)
    .bind(figures.api_calls)
    .bind(figures.retries)
    .bind(sqlx::types::Json(&figures.retries_by_class))
    .bind(figures.rate_limited)
    .bind(sqlx::types::Json(&figures.item_codes))
    .bind(figures.parquet_files)
    .bind(&figures.details)
    .bind(error)
    .bind(fence.epoch)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Renews a live run's lease: `heartbeat_at` now, `lease_until` now + `lease`. False when the
/// run is no longer its writer's (fenced, or no longer running).
pub async fn heartbeat(
    executor: impl PgExecutor<'_>,
    fence: Fence,
    lease: Duration,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE receipts.export_runs
         SET heartbeat_at = now(), lease_until = now() + make_interval(secs => $3)
         WHERE run_id = $1 AND epoch = $2 AND status = 'running'",
    )
    .bind(fence.run_id)
    .bind(fence.epoch)
    .bind(lease.as_secs_f64())
    .execute(executor)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Who took the run over last (`fenced_by`), for a fenced run's report.
pub async fn fenced_by(executor: impl PgExecutor<'_>, run_id: i64) -> sqlx::Result<String> {
    let by: Option<Option<String>> =
        sqlx::query_scalar("SELECT fenced_by FROM receipts.export_runs WHERE run_id = $1")
            .bind(run_id)
            .fetch_optional(executor)
            .await?;
    Ok(by
        .flatten()
        .unwrap_or_else(|| "another process (the ledger row is no longer running)".into()))
}

/// Every run the ledger says is running, oldest first.
pub async fn running(executor: impl PgExecutor<'_>) -> sqlx::Result<Vec<RunningRun>> {
    sqlx::query_as(&format!(
        "SELECT {RUNNING_COLUMNS} FROM receipts.export_runs
         WHERE status = 'running' ORDER BY run_id"
    ))
    .fetch_all(executor)
    .await
}

/// The newest running run of a job: who holds its lock.
pub async fn holder(pool: &PgPool, job: &str) -> sqlx::Result<Option<RunningRun>> {
    sqlx::query_as(&format!(
        "SELECT {RUNNING_COLUMNS} FROM receipts.export_runs
         WHERE status = 'running' AND job = $1 ORDER BY run_id DESC LIMIT 1"
    ))
    .bind(job)
    .fetch_optional(pool)
    .await
}

/// Declares a running run dead: marks it `abandoned` and bumps its epoch, fencing its writer
/// (`found_by` goes to `fenced_by`). Unless `force` (the caller holds the run's job lock, so
/// the run can never go on, or knows its process is gone), only a run whose lease has run out
/// is declared dead. Waits for a
/// writer's transaction in flight at most `db::LOCK_TIMEOUT` (then the error is a lock
/// timeout, see `db::is_lock_timeout`). True when the run was marked.
pub async fn mark_abandoned(
    conn: &mut PgConnection,
    run_id: i64,
    force: bool,
    found_by: &str,
    why: &str,
) -> sqlx::Result<bool> {
    let mut tx = crate::db::begin_with_lock_timeout(conn).await?;
    let done = sqlx::query(
        "UPDATE receipts.export_runs SET status = 'abandoned', finished_at = now(),
            epoch = epoch + 1, fenced_by = $3,
            error = COALESCE(error, $4 || '; found by ' || $3),
            receipts_written = (SELECT COALESCE(sum(row_count), 0) FROM receipts.write_batches w
                                WHERE w.run_id = export_runs.run_id)
         WHERE run_id = $1 AND status = 'running'
           AND ($2 OR lease_until IS NULL OR lease_until < now())",
    )
    .bind(run_id)
    .bind(force)
    .bind(found_by)
    .bind(why)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(done.rows_affected() == 1)
}

/// Adds what following skipped and left to a finished run's row (`details.follow` too).
pub async fn record_follow(
    pool: &PgPool,
    run_id: i64,
    f: &super::follow::FollowFigures,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE receipts.export_runs SET
            seqs_skipped_settled = $2, seqs_skipped_no_receipt = $3, seqs_left = $4,
            calls_left = $5, details = details || jsonb_build_object('follow', $6::jsonb)
         WHERE run_id = $1",
    )
    .bind(run_id)
    .bind(f.seqs_skipped_settled)
    .bind(f.seqs_skipped_no_receipt)
    .bind(f.seqs_left)
    .bind(f.calls_left)
    .bind(&f.details)
    .execute(pool)
    .await?;
    Ok(())
}

/// Records what retention after a finished run did (`details.retention`).
pub async fn record_retention(
    pool: &PgPool,
    run_id: i64,
    retention: &serde_json::Value,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE receipts.export_runs
         SET details = details || jsonb_build_object('retention', $2::jsonb)
         WHERE run_id = $1",
    )
    .bind(run_id)
    .bind(retention)
    .execute(pool)
    .await?;
    Ok(())
}

/// How many runs the job has started (the demo moves its simulator on by that many steps).
pub async fn count_runs(pool: &PgPool, job: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM receipts.export_runs WHERE job = $1")
        .bind(job)
        .fetch_one(pool)
        .await
}

/// When the job last started a run.
pub async fn last_start(pool: &PgPool, job: &str) -> sqlx::Result<Option<DateTime<Utc>>> {
    sqlx::query_scalar("SELECT max(started_at) FROM receipts.export_runs WHERE job = $1")
        .bind(job)
        .fetch_one(pool)
        .await
}

/// The date a run was recorded under.
pub async fn run_date(pool: &PgPool, run_id: i64) -> sqlx::Result<NaiveDate> {
    sqlx::query_scalar("SELECT run_date FROM receipts.export_runs WHERE run_id = $1")
        .bind(run_id)
        .fetch_one(pool)
        .await
}
