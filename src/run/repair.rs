//! Recovery at run start: runs left `running` by a dead process become `abandoned`, and every
//! finished run whose committed write batches are not all in Parquet gets them written there.
//!
//! Postgres is the source of truth: a write batch commits there first, and Parquet is derived
//! from it; the manifest (`parquet_files`, and `write_batches.parquet_file_id`) says which rows
//! Parquet holds. Repair runs under the warehouse-wide lock, so it never races another repair
//! or a rewrite of Parquet.

use super::ledger;
use super::lock::{self, JobLock};
use crate::sink::manifest;
use sqlx::PgPool;
use std::path::Path;

/// What the repair found and did.
#[derive(Debug, Default, serde::Serialize)]
pub struct Repaired {
    pub abandoned: Vec<i64>,
    pub runs_rebuilt: Vec<i64>,
}

/// Marks dead runs `abandoned` and brings Parquet up to Postgres. `me` holds the current job's
/// lock, so a `running` row of that job is dead; another job's run is dead when its lock is free.
pub async fn repair(
    me: &mut JobLock,
    pool: &PgPool,
    parquet_dir: &Path,
    run_label: &str,
) -> anyhow::Result<Repaired> {
    let job = me.job().to_string();
    let conn = me.connection();
    manifest::lock_warehouse(conn).await?;
    let result = repair_locked(conn, &job, pool, parquet_dir, run_label).await;
    manifest::unlock_warehouse(conn).await?;
    result
}

async fn repair_locked(
    conn: &mut sqlx::PgConnection,
    job: &str,
    pool: &PgPool,
    parquet_dir: &Path,
    run_label: &str,
) -> anyhow::Result<Repaired> {
    let mut repaired = Repaired::default();
    for run in ledger::running(&mut *conn).await? {
        let dead = run.job == job || lock::is_free(conn, &run.job).await?;
        if dead {
            tracing::warn!(
                run_id = run.run_id,
                job = %run.job,
                host = %run.host,
                pid = run.pid,
                "run {} (started {}) died without finishing: marking it abandoned",
                run.run_id,
                run.started_at
            );
            ledger::mark_abandoned(&mut *conn, run.run_id, run_label).await?;
            repaired.abandoned.push(run.run_id);
        }
    }
    for run_id in manifest::runs_needing_repair(pool).await? {
        let report = manifest::rebuild_run(pool, parquet_dir, run_id).await?;
        tracing::info!(
            run_id,
            ?report,
            "wrote run {run_id}'s missing rows to Parquet from Postgres"
        );
        repaired.runs_rebuilt.push(run_id);
    }
    Ok(repaired)
}
