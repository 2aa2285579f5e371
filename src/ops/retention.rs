//! Retention: Postgres keeps the recent months of snapshots; the lake keeps them all.
//!
//! A month partition of `receipt_snapshot_rows` older than the kept months is dropped only
//! when every run in it is finished and the manifest counts all its rows in the lake; the drop
//! itself goes through `receipts.drop_snapshot_month()`, a SECURITY DEFINER function that checks
//! the same again under the partition's lock and records the runs in `retired_runs`. Item codes
//! of runs before the cut are pruned in batches down to each seq's newest few (the no-receipt
//! rule reads the newest `no_receipt_after` of them), through `receipts.prune_item_codes()`.
//! Read events go with the months: a message whose every read event was first seen by a run
//! before the cut loses them, through `receipts.prune_read_events()`, once the lake's
//! read-events files hold every event of those runs; the message is remembered
//! (`read_events_pruned`), so its read list is never pulled or recorded again. The writer's
//! role deletes nothing itself: each deletion is one of those SECURITY DEFINER functions.
//! `receipt_latest`, the ledger, the manifest and the lake's files stay. Nothing here prints:
//! the command does.

use chrono::NaiveDate;
use sqlx::PgPool;

/// Item codes deleted per statement while pruning.
const PRUNE_BATCH: i64 = 10_000;

/// One run with rows in a month partition, as the check sees it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct MonthRun {
    pub run_id: i64,
    pub status: String,
    pub pg_rows: i64,
    pub lake_rows: i64,
}

impl MonthRun {
    /// True when the run is finished and the manifest counts every one of its rows.
    pub fn in_lake(&self) -> bool {
        self.status != "running" && self.pg_rows == self.lake_rows
    }
}

/// A month partition past the kept months.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Month {
    /// Its first day.
    pub start: NaiveDate,
    pub runs: Vec<MonthRun>,
}

impl Month {
    pub fn rows(&self) -> i64 {
        self.runs.iter().map(|r| r.pg_rows).sum()
    }

    /// The runs that keep the month from being dropped.
    pub fn blocking(&self) -> impl Iterator<Item = &MonthRun> {
        self.runs.iter().filter(|r| !r.in_lake())
    }
}

/// A run with read events retention would remove, as the check sees it: those events, and all
/// its events in Postgres (those pruned before included) against the rows its lake files hold.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct EventRun {
    pub run_id: i64,
    pub status: String,
    pub events: i64,
    pub pg_events: i64,
    pub lake_events: i64,
}

impl EventRun {
    /// True when the run is finished and its lake files hold every one of its events.
    pub fn in_lake(&self) -> bool {
        self.status != "running" && self.pg_events == self.lake_events
    }
}

/// What retention would do with `--keep-months N`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The first day kept: months starting before it are dropped.
    pub cutoff: NaiveDate,
    pub months: Vec<Month>,
    /// Item codes of runs before the cutoff that are not among their seq's newest `keep_codes`.
    pub codes: i64,
    pub keep_codes: i64,
    /// Snapshot rows before the cutoff in the DEFAULT partition (a month that had no partition
    /// of its own when they were written): retention leaves them.
    pub default_rows: i64,
    /// Messages whose every read event was first seen by a run before the cutoff, and the runs
    /// of those events.
    pub event_messages: i64,
    pub event_runs: Vec<EventRun>,
    /// What the lake itself lacks of the runs that would leave Postgres, one line each
    /// ([`check_lake`]): the manifest's word is not taken for it.
    pub lake_lacks: Vec<String>,
}

impl Plan {
    /// True when no month holds a run that is not wholly in the lake, no run whose read
    /// events would go has events the lake's files do not hold, and the lake itself holds
    /// what the manifest says of those runs.
    pub fn allowed(&self) -> bool {
        self.months.iter().all(|m| m.blocking().next().is_none())
            && self.event_runs.iter().all(EventRun::in_lake)
            && self.lake_lacks.is_empty()
    }

    /// The read events that would go.
    pub fn events(&self) -> i64 {
        self.event_runs.iter().map(|r| r.events).sum()
    }

    /// The runs whose read events keep them from going.
    pub fn events_blocking(&self) -> impl Iterator<Item = &EventRun> {
        self.event_runs.iter().filter(|r| !r.in_lake())
    }
}

/// What [`apply`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    pub months: Vec<(NaiveDate, i64)>,
    pub codes: i64,
    /// Messages whose read events were removed (remembered in `read_events_pruned`), and those
    /// events.
    pub event_messages: i64,
    pub events: i64,
}

/// Reads what retention keeping `keep_months` months before the current one (by the database's
/// clock, UTC) would drop and prune.
pub async fn plan(pool: &PgPool, keep_months: u32, keep_codes: u32) -> sqlx::Result<Plan> {
    let cutoff: NaiveDate = sqlx::query_scalar(
        "SELECT (date_trunc('month', now() AT TIME ZONE 'UTC') - make_interval(months => $1))::date",
    )
    .bind(i32::try_from(keep_months).unwrap_or(i32::MAX))
    .fetch_one(pool)
    .await?;
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'receipts.receipt_snapshot_rows'::regclass ORDER BY 1",
    )
    .fetch_all(pool)
    .await?;
    let mut months = Vec::new();
    for start in names.iter().filter_map(|n| partition_month(n)) {
        if start >= cutoff {
            continue;
        }
        let runs = sqlx::query_as(
            "SELECT run_id, status, pg_rows, lake_rows FROM receipts.snapshot_month_runs($1)",
        )
        .bind(start)
        .fetch_all(pool)
        .await?;
        months.push(Month { start, runs });
    }
    let codes = sqlx::query_scalar("SELECT count(*) FROM receipts.prunable_item_codes($1, $2)")
        .bind(cutoff)
        .bind(i32::try_from(keep_codes).unwrap_or(i32::MAX))
        .fetch_one(pool)
        .await?;
    let default_rows = sqlx::query_scalar(
        "SELECT count(*) FROM receipts.receipt_snapshot_rows_default WHERE run_date < $1",
    )
    .bind(cutoff)
    .fetch_one(pool)
    .await?;
    let (event_messages, event_runs) = read_events_before(pool, cutoff).await?;
    Ok(Plan {
        cutoff,
        months,
        codes,
        keep_codes: i64::from(keep_codes),
        default_rows,
        event_messages,
        event_runs,
        lake_lacks: Vec::new(),
    })
}

/// Checks the lake itself for the runs the plan would remove from Postgres (their months'
/// snapshots, their pruned read events) and records what it lacks in the plan, which then
/// refuses: a file deleted from the lake after its run (a lifecycle rule, a wrong `rm`) would
/// otherwise leave those rows nowhere. Only runs the manifest counts whole are checked (the
/// others refuse already).
pub async fn check_lake(
    pool: &PgPool,
    target: &crate::sink::LakeTarget,
    plan: &mut Plan,
) -> Result<(), crate::sink::SinkError> {
    let runs: std::collections::BTreeMap<i64, i64> = plan
        .months
        .iter()
        .flat_map(|m| &m.runs)
        .filter(|r| r.in_lake())
        .map(|r| (r.run_id, r.pg_rows))
        .collect();
    let event_runs: std::collections::BTreeSet<i64> = plan
        .event_runs
        .iter()
        .filter(|r| r.in_lake() && r.events > 0)
        .map(|r| r.run_id)
        .collect();
    if runs.is_empty() && event_runs.is_empty() {
        return Ok(());
    }
    plan.lake_lacks = target.lacks(pool, &runs, &event_runs).await?;
    Ok(())
}

/// The messages whose read events would go with the months before `cutoff`, and their runs.
async fn read_events_before(
    pool: &PgPool,
    cutoff: NaiveDate,
) -> sqlx::Result<(i64, Vec<EventRun>)> {
    let messages =
        sqlx::query_scalar("SELECT count(*) FROM receipts.read_event_messages_before($1)")
            .bind(cutoff)
            .fetch_one(pool)
            .await?;
    let runs = sqlx::query_as(
        "SELECT run_id, status, events, pg_events, lake_events
         FROM receipts.read_event_runs_before($1)",
    )
    .bind(cutoff)
    .fetch_all(pool)
    .await?;
    Ok((messages, runs))
}

/// Drops the plan's months, prunes the item codes and the read events. The caller checked
/// [`Plan::allowed`]; the database functions check again under their locks and refuse a month
/// a run was added to meanwhile, or read events the lake does not hold (that error ends the
/// retention, what was dropped before stays).
pub async fn apply(pool: &PgPool, plan: &Plan) -> sqlx::Result<Applied> {
    let mut applied = Applied::default();
    for month in &plan.months {
        let rows: Option<i64> = sqlx::query_scalar("SELECT receipts.drop_snapshot_month($1)")
            .bind(month.start)
            .fetch_one(pool)
            .await?;
        if let Some(rows) = rows {
            applied.months.push((month.start, rows));
        }
    }
    loop {
        let deleted: i64 = sqlx::query_scalar("SELECT receipts.prune_item_codes($1, $2, $3)")
            .bind(plan.cutoff)
            .bind(i32::try_from(plan.keep_codes).unwrap_or(i32::MAX))
            .bind(PRUNE_BATCH)
            .fetch_one(pool)
            .await?;
        applied.codes += deleted;
        if deleted < PRUNE_BATCH {
            break;
        }
    }
    if plan.event_messages > 0 {
        (applied.event_messages, applied.events) = sqlx::query_as(
            "SELECT pruned_messages, pruned_events FROM receipts.prune_read_events($1)",
        )
        .bind(plan.cutoff)
        .fetch_one(pool)
        .await?;
    }
    Ok(applied)
}

/// What retention after a scheduled run did: logged, and recorded in the run's ledger row
/// (`details.retention`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AfterRun {
    pub keep_months: u32,
    /// The first day kept.
    pub cutoff: NaiveDate,
    /// The months dropped (their first day) with their rows, kept in the lake.
    pub months_dropped: Vec<(NaiveDate, i64)>,
    pub codes_pruned: i64,
    /// Read events removed (kept in the lake), and the messages they were of.
    #[serde(default)]
    pub events_removed: i64,
    #[serde(default)]
    pub event_messages: i64,
    /// The runs not wholly in the lake that kept every month in Postgres (then nothing was
    /// dropped or pruned).
    pub refused_by: Vec<String>,
}

impl AfterRun {
    /// One line for the log and `runs show`.
    pub fn line(&self) -> String {
        let keep = self.keep_months;
        if !self.refused_by.is_empty() {
            return format!(
                "retention (retention_keep_months = {keep}) left every month in Postgres: not every run before {} is in the lake: {}",
                self.cutoff,
                self.refused_by.join(", ")
            );
        }
        let rows: i64 = self.months_dropped.iter().map(|(_, r)| r).sum();
        format!(
            "retention (retention_keep_months = {keep}): dropped {} month(s) before {} ({rows} rows, kept in the lake), pruned {} item code(s), removed {} read event(s) of {} message(s) (kept in the lake)",
            self.months_dropped.len(),
            self.cutoff,
            self.codes_pruned,
            self.events_removed,
            self.event_messages
        )
    }
}

/// The runs that keep retention from dropping anything: not wholly in the lake.
fn refused_by(plan: &Plan) -> Vec<String> {
    let mut runs: Vec<String> = plan
        .months
        .iter()
        .flat_map(|m| m.blocking())
        .map(|r| {
            format!(
                "run {} ({}, {} of {} rows in the lake)",
                r.run_id, r.status, r.lake_rows, r.pg_rows
            )
        })
        .collect();
    runs.extend(plan.events_blocking().map(|r| {
        format!(
            "run {} ({}, {} of {} read events in the lake)",
            r.run_id, r.status, r.lake_events, r.pg_events
        )
    }));
    runs.extend(
        plan.lake_lacks
            .iter()
            .map(|l| format!("the lake lacks {l}")),
    );
    runs
}

/// Retention after a scheduled run of a job with `retention_keep_months` (item codes kept: the
/// command's default 3, or the job's `no_receipt_after` if larger), under the warehouse lock.
/// A month not wholly in the lake (by the manifest, or by the lake itself: [`check_lake`]) is
/// not dropped, and nothing is: the caller logs that as a
/// warning (a later run's repair usually completes the lake), never an error of the run. The
/// lock is waited for at most `wait.0`, and not after `wait.1` is cancelled.
pub async fn after_run(
    options: &sqlx::postgres::PgConnectOptions,
    pool: &PgPool,
    target: &crate::sink::LakeTarget,
    keep_months: u32,
    keep_codes: u32,
    wait: (std::time::Duration, &tokio_util::sync::CancellationToken),
) -> anyhow::Result<AfterRun> {
    let lock = crate::sink::warehouse::WarehouseLock::acquire(options, wait.0, wait.1).await?;
    let outcome = async {
        let mut plan = plan(pool, keep_months, keep_codes.max(3)).await?;
        check_lake(pool, target, &mut plan).await?;
        let mut done = AfterRun {
            keep_months,
            cutoff: plan.cutoff,
            months_dropped: Vec::new(),
            codes_pruned: 0,
            events_removed: 0,
            event_messages: 0,
            refused_by: refused_by(&plan),
        };
        if done.refused_by.is_empty() {
            let applied = apply(pool, &plan).await?;
            done.months_dropped = applied.months;
            done.codes_pruned = applied.codes;
            done.events_removed = applied.events;
            done.event_messages = applied.event_messages;
        }
        anyhow::Ok(done)
    }
    .await;
    lock.release().await;
    outcome
}

/// The capture dates from `since` to `until` that hold rows of runs retention removed from
/// Postgres, with those runs (the manifest's statement).
pub use crate::sink::manifest::retired_days;

/// The month a partition named `receipt_snapshot_rows_yYYYYmMM` holds (None for the DEFAULT
/// partition and any other name).
fn partition_month(name: &str) -> Option<NaiveDate> {
    let rest = name.strip_prefix("receipt_snapshot_rows_y")?;
    let (year, month) = rest.split_once('m')?;
    NaiveDate::from_ymd_opt(year.parse().ok()?, month.parse().ok()?, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_give_their_month() {
        assert_eq!(
            partition_month("receipt_snapshot_rows_y2026m03"),
            NaiveDate::from_ymd_opt(2026, 3, 1)
        );
        assert_eq!(partition_month("receipt_snapshot_rows_default"), None);
        assert_eq!(partition_month("receipt_snapshot_rows_y2026m13"), None);
        assert_eq!(partition_month("other_y2026m03"), None);
    }

    #[test]
    fn a_month_is_blocked_by_a_running_run_or_one_short_in_the_lake() {
        let run = |run_id, status: &str, pg_rows, lake_rows| MonthRun {
            run_id,
            status: status.into(),
            pg_rows,
            lake_rows,
        };
        let month = Month {
            start: NaiveDate::from_ymd_opt(2026, 3, 1).unwrap(),
            runs: vec![
                run(1, "succeeded", 10, 10),
                run(2, "succeeded", 10, 9),
                run(3, "running", 0, 0),
                run(4, "abandoned", 5, 5),
            ],
        };
        let blocking: Vec<i64> = month.blocking().map(|r| r.run_id).collect();
        assert_eq!(blocking, [2, 3]);
        assert_eq!(month.rows(), 25);
    }
}
