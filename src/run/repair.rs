//! Recovery at run start: runs left `running` by a dead process become `abandoned`, and every
//! finished run whose committed write batches are not all in Parquet gets them written there.
//!
//! Postgres is the source of truth: a write batch commits there first, and Parquet is derived
//! from it; the manifest (`parquet_files`, and `write_batches.parquet_file_id`) says which rows
//! Parquet holds. A run is dead when it cannot go on: a run of our own job (we hold its lock),
//! or one whose job lock is free and whose lease ran out (so a run riding out a Postgres
//! restart is left alone). Declaring it dead and rewriting its files both bump its epoch first
//! (`sink::fence`): its process, if it is still alive somewhere, is fenced and can change
//! nothing of it any more, so the stray sweep never races it. Repair runs under the
//! warehouse-wide lock, on a session of its own, so it never races another repair or a
//! rewrite of Parquet.

use super::ledger::{self, RunningRun};
use super::lock;
use crate::sink::fence::{self, TakeOver};
use crate::sink::warehouse::WarehouseLock;
use crate::sink::{manifest, Fence, LakeTarget, SinkError};
use sqlx::{PgConnection, PgPool};

/// What the repair found and did.
#[derive(Debug, Default, serde::Serialize)]
pub struct Repaired {
    pub abandoned: Vec<i64>,
    pub runs_rebuilt: Vec<i64>,
}

/// Who repairs: the run doing it (its own run is never declared dead, and its own unexported
/// batches, a resumed backfill's, are written under its own fence), and its name for
/// `fenced_by`, e.g. "run 7 (job b) on host h, pid 42".
pub struct Repairer<'a> {
    pub job: &'a str,
    pub fence: Fence,
    pub label: &'a str,
}

/// Marks dead runs `abandoned` and brings Parquet up to Postgres, under the warehouse lock
/// the run took before it opened its ledger row (a session of its own, released here).
pub async fn repair(
    mut lock: WarehouseLock,
    pool: &PgPool,
    lake: &LakeTarget,
    me: &Repairer<'_>,
) -> anyhow::Result<Repaired> {
    let result = repair_locked(lock.connection(), pool, lake, me).await;
    lock.release().await;
    result
}

async fn repair_locked(
    conn: &mut PgConnection,
    pool: &PgPool,
    lake: &LakeTarget,
    me: &Repairer<'_>,
) -> anyhow::Result<Repaired> {
    let mut repaired = Repaired::default();
    for run in ledger::running(&mut *conn).await? {
        if run.run_id != me.fence.run_id && declare_dead(conn, &run, me).await? {
            repaired.abandoned.push(run.run_id);
        }
    }
    let mut runs = manifest::runs_needing_repair(pool).await?;
    let own_left = !manifest::unexported_batches(pool, me.fence.run_id)
        .await?
        .is_empty()
        || !manifest::pending_files(pool, me.fence.run_id)
            .await?
            .is_empty();
    if own_left {
        runs.insert(0, me.fence.run_id);
    }
    for run_id in runs {
        let fence = if run_id == me.fence.run_id {
            me.fence
        } else {
            match fence::take_over(pool, run_id, me.label).await? {
                TakeOver::Taken(fence) => fence,
                TakeOver::Running => continue,
                TakeOver::Busy => {
                    tracing::warn!(run_id, "run {run_id}'s row is held by a writer that does not finish: its Parquet repair is left for a later run");
                    continue;
                }
            }
        };
        match lake.rebuild_run(pool, fence).await {
            Ok(report) => {
                tracing::info!(
                    run_id,
                    ?report,
                    "wrote run {run_id}'s missing rows to Parquet from Postgres"
                );
                repaired.runs_rebuilt.push(run_id);
            }
            Err(SinkError::Fenced { by, .. }) => {
                tracing::warn!(
                    run_id,
                    "run {run_id} was taken over by {by} during its repair: left to it"
                );
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(repaired)
}

/// Declares `run` dead if it is: always for a run of our own job (we hold its lock, so it can
/// never go on), else only while we hold its job's lock (so it cannot take it back meanwhile)
/// and once its lease ran out. True when it was marked `abandoned`.
async fn declare_dead(
    conn: &mut PgConnection,
    run: &RunningRun,
    me: &Repairer<'_>,
) -> anyhow::Result<bool> {
    let own_job = run.job == me.job;
    if !own_job && !lock::try_lock(conn, &run.job).await? {
        return Ok(false); // its session holds the lock: alive
    }
    let marked = ledger::mark_abandoned(conn, run.run_id, own_job, me.label).await;
    if !own_job {
        lock::unlock(conn, &run.job).await?;
    }
    match marked {
        Ok(true) => {
            tracing::warn!(
                run_id = run.run_id,
                job = %run.job,
                host = %run.host,
                pid = run.pid,
                "run {} (started {}) died without finishing: marked abandoned, its writer fenced",
                run.run_id,
                run.started_at
            );
            Ok(true)
        }
        Ok(false) if !own_job => {
            tracing::info!(
                run_id = run.run_id,
                job = %run.job,
                "run {}'s job lock is free but its lease runs until {}: left alone (it may be reconnecting)",
                run.run_id,
                run.lease_until.map_or("-".to_string(), |t| t.to_string())
            );
            Ok(false)
        }
        Ok(false) => Ok(false), // it finished meanwhile
        Err(e) if crate::db::is_lock_timeout(&e) => {
            tracing::warn!(
                run_id = run.run_id,
                "run {}'s row is held by a writer that does not finish: left for a later run",
                run.run_id
            );
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}
