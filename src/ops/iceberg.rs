//! `iceberg maintain`: keeps the Iceberg tables small to read and to store: the snapshots'
//! and, once a run created it, the read progress's (`receipts.message_read_progress`), each
//! the same way.
//!
//! 1. Expire snapshots older than a cutoff (keeping the newest few), with iceberg-rust's
//!    `expire_snapshots`, committed like a run's commit: the catalog row locked, the new
//!    metadata staged, the pointer moved by compare-and-set.
//! 2. Remove orphan files: files under the table's location that no metadata names (not the
//!    current metadata file, nor one in its log; no manifest list, manifest, data, delete or
//!    statistics file of a kept snapshot) and that are older than a safety age, so a file a
//!    writer is about to commit is never taken. They are what a crash between writing and
//!    committing leaves, what expired snapshots no longer need, and the metadata files that
//!    fell out of the log (every writer trims it at `write.metadata.previous-versions-max`,
//!    none deletes the files). A data file a run recorded as about to be written
//!    ([`crate::sink::iceberg::pending`]) is never an orphan, whatever its age: the run may
//!    still commit it (its repair removes it if the run died). In the read progress's table a
//!    data file of a run whose change rows are due ([`crate::sink::progress_lake`]: a run's
//!    end is writing them, or will write them again) is never an orphan either: its commit
//!    may still come.
//!
//! Everything is planned and checked before anything changes: the expiry is applied in memory,
//! the files it leaves named are compared with the listing, and only then is the expiry
//! committed and are the orphans removed. A check that fails (a listing that does not show the
//! live data files) leaves the table as it was. Locations are compared in one spelling
//! ([`crate::lake::normalize_location`]): other engines name the same files otherwise (Spark's
//! Hadoop file system writes `file:/...`, iceberg-rust `file:///...`).
//!
//! Compaction is not here: iceberg-rust 0.10 has no rewrite (replace) commit. The README gives
//! Spark's `rewrite_data_files` procedure for a closed day.

use crate::lake::normalize_location;
use crate::sink::iceberg::commit::{self, Staging};
use crate::sink::iceberg::files::{self, Listed};
use crate::sink::iceberg::IcebergLake;
use crate::sink::SinkError;
use chrono::{DateTime, Utc};
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use sqlx::PgPool;
use std::collections::HashSet;

/// What `maintain` may do.
#[derive(Debug, Clone)]
pub struct MaintainOptions {
    /// Snapshots older than this are expired.
    pub expire_older_than: std::time::Duration,
    /// The newest snapshots kept whatever their age (at least 1: the current one).
    pub retain_last: usize,
    /// Unreferenced files younger than this are left alone.
    pub orphan_min_age: std::time::Duration,
    /// Report only: expire nothing, remove nothing.
    pub dry_run: bool,
}

/// What `maintain` found and did.
#[derive(Debug, Default, serde::Serialize)]
pub struct MaintainReport {
    pub snapshots_before: usize,
    pub snapshots_expired: usize,
    /// Orphan files removed (or, with `dry_run`, that would be).
    pub orphans: Vec<String>,
    /// Unreferenced files left because they are younger than the safety age.
    pub young_unreferenced: usize,
    /// Unreferenced files a live (or dead, not yet repaired) run may still commit: never taken
    /// ([`crate::sink::iceberg::pending`]).
    pub run_files: usize,
    pub data_files: usize,
}

/// Plans the expiry and the orphans, checks them, then commits the expiry and removes the
/// orphans (see the module header).
pub async fn maintain(
    pool: &PgPool,
    lake: &IcebergLake,
    opts: &MaintainOptions,
) -> Result<MaintainReport, SinkError> {
    let (plan, mut report) = plan(pool, lake, opts).await?;
    if opts.dry_run {
        return Ok(report);
    }
    if report.snapshots_expired > 0 {
        let committed = commit_expiry(pool, lake, opts).await?;
        report.snapshots_expired = committed.expired;
        if committed.base != plan.base || committed.expired == 0 {
            // The table moved between the plan and the commit (another writer committed): what
            // the table names now is kept, whatever the plan said.
            let kept = referenced_files(&committed.table).await?;
            report
                .orphans
                .retain(|o| !kept.all.contains(&normalize_location(o)));
        }
    }
    for location in &report.orphans {
        lake.within("removing an orphan file", lake.file_io().delete(location))
            .await?;
    }
    Ok(report)
}

/// What a plan was made from.
struct Plan {
    /// The metadata location the catalog pointed to.
    base: String,
}

/// The expiry applied in memory, the files the table would then name, the listing of the
/// table's location checked against them, and the orphans among the listed files. Changes
/// nothing.
async fn plan(
    pool: &PgPool,
    lake: &IcebergLake,
    opts: &MaintainOptions,
) -> Result<(Plan, MaintainReport), SinkError> {
    // One consistent view: the catalog row locked (a run's commit waits, at most the listing's
    // time), so no file becomes live between the table read, the pending files and the
    // listing; a file not live and not pending then can never be committed later (a writer
    // records its file before the first byte, and a commit needs that writer's fence).
    let mut tx = pool
        .begin()
        .await
        .map_err(SinkError::pg("opening the Iceberg catalog"))?;
    let base = commit::lock_table(lake, &mut tx).await?;
    let pending = crate::sink::iceberg::pending::all(&mut tx).await?;
    let due = match lake.table_name() {
        crate::sink::iceberg::progress::TABLE => due_progress_runs(&mut tx).await?,
        _ => HashSet::new(),
    };
    let listed = files::list_table(lake).await?;
    tx.rollback()
        .await
        .map_err(SinkError::pg("closing the Iceberg catalog"))?;
    let after = Staging::preview(&base, expiry(&base, opts)?).await?;
    let before = base.metadata().snapshots().len();
    let expired = before - after.metadata().snapshots().len();
    // Without an expiry the table stays as it is: its own log names the metadata files kept.
    let kept = if expired > 0 { &after } else { &base };
    let referenced = referenced_files(kept).await?;
    check_listing_names_live_files(&listed, &referenced.live)?;
    let min_age = chrono::Duration::from_std(opts.orphan_min_age).unwrap_or(chrono::Duration::MAX);
    let of_due_run = |f: &Listed| {
        crate::sink::names::parse(&f.location).is_some_and(|n| due.contains(&n.run_id))
    };
    let (listed, run_files): (Vec<Listed>, Vec<Listed>) = listed
        .into_iter()
        .partition(|f| !pending.contains(&normalize_location(&f.location)) && !of_due_run(f));
    let (orphans, young) = orphans(listed, &referenced.all, Utc::now(), min_age);
    let plan = Plan {
        base: location_of(&base)?.to_string(),
    };
    let report = MaintainReport {
        snapshots_before: before,
        snapshots_expired: expired,
        orphans,
        young_unreferenced: young,
        run_files: run_files.len(),
        data_files: referenced.live.len(),
    };
    Ok((plan, report))
}

/// The listed files no metadata names (`referenced`, normalised), old enough to remove; and how
/// many unnamed files are too young.
fn orphans(
    listed: Vec<Listed>,
    referenced: &HashSet<String>,
    now: DateTime<Utc>,
    min_age: chrono::Duration,
) -> (Vec<String>, usize) {
    let mut young = 0;
    let mut orphans = Vec::new();
    for file in listed {
        if referenced.contains(&normalize_location(&file.location)) {
            continue;
        }
        match old_enough(&file, now, min_age) {
            true => orphans.push(file.location),
            false => young += 1,
        }
    }
    (orphans, young)
}

/// Refuses to go on unless the listing shows every live data file (both spellings normalised):
/// a listing that names files otherwise would make live files look like orphans.
fn check_listing_names_live_files(
    listed: &[Listed],
    live: &HashSet<String>,
) -> Result<(), SinkError> {
    let seen: HashSet<String> = listed
        .iter()
        .map(|f| normalize_location(&f.location))
        .collect();
    let missing: Vec<&String> = live.iter().filter(|l| !seen.contains(*l)).collect();
    match missing.first() {
        None => Ok(()),
        Some(first) => Err(SinkError::IcebergState(format!(
            "{} live data file(s) of the table are not where the listing of its location shows files \
             (e.g. {first}): changed nothing (no snapshot expired, no file removed); check that \
             EXPORT_PARQUET_DIR names the lake as the table's metadata does",
            missing.len()
        ))),
    }
}

fn old_enough(file: &Listed, now: DateTime<Utc>, min_age: chrono::Duration) -> bool {
    now.signed_duration_since(file.last_modified) >= min_age
}

/// The snapshot expiry `opts` asks for, on `table`.
fn expiry(table: &Table, opts: &MaintainOptions) -> Result<Transaction, SinkError> {
    let cutoff = Utc::now()
        - chrono::Duration::from_std(opts.expire_older_than).unwrap_or(chrono::Duration::MAX);
    let itx = Transaction::new(table);
    itx.expire_snapshots()
        .expire_older_than_ms(cutoff.timestamp_millis())
        .retain_last(opts.retain_last.max(1))
        .apply(itx)
        .map_err(SinkError::iceberg("preparing the snapshot expiry"))
}

fn location_of(table: &Table) -> Result<&str, SinkError> {
    table
        .metadata_location_result()
        .map_err(SinkError::iceberg("reading the pointer"))
}

/// An expiry's outcome: the table as it is after it, the pointer it started from, the snapshots
/// it removed (0: nothing was left to expire, the table is as loaded).
struct Committed {
    table: Table,
    base: String,
    expired: usize,
}

/// Expires snapshots in one commit under the catalog row's lock, on the table as it is now.
async fn commit_expiry(
    pool: &PgPool,
    lake: &IcebergLake,
    opts: &MaintainOptions,
) -> Result<Committed, SinkError> {
    let mut tx = pool
        .begin()
        .await
        .map_err(SinkError::pg("starting an Iceberg commit"))?;
    let base = commit::lock_table(lake, &mut tx).await?;
    let staged = Staging::stage(&base, expiry(&base, opts)?).await?;
    let expired = base.metadata().snapshots().len() - staged.metadata().snapshots().len();
    let (old, new) = (location_of(&base)?, location_of(&staged)?);
    if expired == 0 || old == new {
        if old != new {
            let _ = lake.file_io().delete(new).await; // nothing changed: not needed
        }
        return Ok(Committed {
            base: old.to_string(),
            table: base.clone(),
            expired: 0,
        });
    }
    commit::move_pointer(&mut tx, &base, &staged).await?;
    tx.commit()
        .await
        .map_err(SinkError::pg("committing the snapshot expiry"))?;
    Ok(Committed {
        base: old.to_string(),
        table: staged,
        expired,
    })
}

/// The runs whose read-progress change rows are due (a file of theirs not yet committed):
/// their data files under the read progress's table may still be committed.
async fn due_progress_runs(tx: &mut sqlx::PgConnection) -> Result<HashSet<i64>, SinkError> {
    let runs: Vec<i64> = sqlx::query_scalar(
        "SELECT DISTINCT run_id FROM receipts.message_read_progress_files WHERE path IS NULL",
    )
    .fetch_all(tx)
    .await
    .map_err(SinkError::pg("reading the due read-progress files"))?;
    Ok(runs.into_iter().collect())
}

/// Every file the table's metadata names, normalised ([`normalize_location`]).
struct Referenced {
    all: HashSet<String>,
    /// The live data files of the current snapshot.
    live: HashSet<String>,
}

async fn referenced_files(table: &Table) -> Result<Referenced, SinkError> {
    let metadata = table.metadata();
    let mut all: HashSet<String> = HashSet::new();
    let mut name = |location: &str| all.insert(normalize_location(location));
    name(location_of(table)?);
    for log in metadata.metadata_log() {
        name(&log.metadata_file);
    }
    for stats in metadata.statistics_iter() {
        name(&stats.statistics_path);
    }
    for stats in metadata.partition_statistics_iter() {
        name(&stats.statistics_path);
    }
    let mut live = HashSet::new();
    let current = metadata.current_snapshot_id();
    for snapshot in metadata.snapshots() {
        all.insert(normalize_location(snapshot.manifest_list()));
        let list = table
            .manifest_list_reader(snapshot)
            .load()
            .await
            .map_err(SinkError::iceberg("reading a manifest list"))?;
        for manifest_file in list.entries() {
            all.insert(normalize_location(&manifest_file.manifest_path));
            let manifest = manifest_file
                .load_manifest(table.file_io())
                .await
                .map_err(SinkError::iceberg("reading a manifest"))?;
            // A `Deleted` entry is a tombstone: its file is referenced by the older snapshots
            // in which it is alive, and only while they are kept (a file an overwrite or a
            // compaction removed is an orphan once they expire).
            for entry in manifest.entries().iter().filter(|e| e.is_alive()) {
                let path = normalize_location(entry.file_path());
                if Some(snapshot.snapshot_id()) == current {
                    live.insert(path.clone());
                }
                all.insert(path);
            }
        }
    }
    Ok(Referenced { all, live })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(location: &str) -> Listed {
        Listed {
            location: location.to_string(),
            last_modified: Utc::now(),
        }
    }

    #[test]
    fn nothing_is_removed_when_the_listing_does_not_show_a_live_file_by_its_name() {
        let live: HashSet<String> = ["s3://b/t/data/d=1/a.parquet".to_string()].into();
        let same = [listed("s3://b/t/data/d=1/a.parquet"), listed("s3://b/t/x")];
        assert!(check_listing_names_live_files(&same, &live).is_ok());
        let spelled_otherwise = [listed("s3://b/t/data/d%3D1/a.parquet")];
        let err = check_listing_names_live_files(&spelled_otherwise, &live).unwrap_err();
        assert!(err.to_string().contains("changed nothing"), "{err}");
    }

    #[test]
    fn a_file_spelled_file_colon_slash_is_the_same_file_as_file_colon_triple_slash() {
        // Spark (Hadoop) names a file `file:/x`; the listing and iceberg-rust `file:///x`.
        let referenced: HashSet<String> = [
            "file:/lake/t/data/d=1/spark.parquet",
            "file:///lake/t/m/v2.metadata.json",
        ]
        .into_iter()
        .map(normalize_location)
        .collect();
        let live: HashSet<String> =
            [normalize_location("file:/lake/t/data/d=1/spark.parquet")].into();
        let old = Utc::now() - chrono::Duration::days(2);
        let listed = |l: &str| Listed {
            location: l.to_string(),
            last_modified: old,
        };
        let listing = vec![
            listed("file:///lake/t/data/d=1/spark.parquet"),
            listed("file:///lake/t/m/v2.metadata.json"),
            listed("file:///lake/t/m/v1.metadata.json"),
        ];
        assert!(check_listing_names_live_files(&listing, &live).is_ok());
        let (orphans, young) = orphans(listing, &referenced, Utc::now(), chrono::Duration::days(1));
        assert_eq!(orphans, ["file:///lake/t/m/v1.metadata.json"]);
        assert_eq!(young, 0);
    }

    #[test]
    fn a_file_is_old_enough_only_past_the_safety_age() {
        let now = Utc::now();
        let file = Listed {
            location: String::new(),
            last_modified: now - chrono::Duration::minutes(30),
        };
        assert!(old_enough(&file, now, chrono::Duration::minutes(10)));
        assert!(!old_enough(&file, now, chrono::Duration::hours(1)));
    }
}
