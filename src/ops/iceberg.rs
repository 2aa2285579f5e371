//! `iceberg maintain`: keeps the Iceberg table small to read and to store.
//!
//! 1. Expire snapshots older than a cutoff (keeping the newest few), with iceberg-rust's
//!    `expire_snapshots`, committed like a run's commit: the catalog row locked, the new
//!    metadata staged, the pointer moved by compare-and-set.
//! 2. Remove orphan files: files under the table's location that no metadata names (not the
//!    current metadata file, nor one in its log; no manifest list, manifest or data file of a
//!    kept snapshot) and that are older than a safety age, so a file a writer is about to
//!    commit is never taken. They are what a crash between writing and committing leaves, and
//!    what expired snapshots no longer need.
//!
//! Compaction is not here: iceberg-rust 0.10 has no rewrite (replace) commit. The README gives
//! Spark's `rewrite_data_files` procedure for a closed day.

use crate::sink::iceberg::commit::{self, Staging};
use crate::sink::iceberg::files::{self, Listed};
use crate::sink::iceberg::IcebergTarget;
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
    pub data_files: usize,
}

/// Expires old snapshots, then removes orphan files (see the module header).
pub async fn maintain(
    pool: &PgPool,
    target: &IcebergTarget,
    opts: &MaintainOptions,
) -> Result<MaintainReport, SinkError> {
    let mut report = MaintainReport::default();
    expire(pool, target, opts, &mut report).await?;
    let mut conn = pool
        .acquire()
        .await
        .map_err(SinkError::pg("opening the Iceberg catalog"))?;
    let table = target
        .lake
        .load(&mut conn, false)
        .await?
        .expect("opened above");
    drop(conn);
    let referenced = referenced_files(&table).await?;
    report.data_files = referenced.live.len();
    let now = Utc::now();
    let min_age = chrono::Duration::from_std(opts.orphan_min_age).unwrap_or(chrono::Duration::MAX);
    let listed = files::list_table(&target.lake).await?;
    check_listing_names_live_files(&listed, &referenced.live)?;
    for file in listed {
        if referenced.all.contains(&file.location) {
            continue;
        }
        if !old_enough(&file, now, min_age) {
            report.young_unreferenced += 1;
            continue;
        }
        if !opts.dry_run {
            target
                .lake
                .file_io()
                .delete(&file.location)
                .await
                .map_err(SinkError::iceberg("removing an orphan file"))?;
        }
        report.orphans.push(file.location);
    }
    Ok(report)
}

/// Refuses to remove anything unless the listing shows every live data file under the very
/// name the metadata uses: a listing that spells names otherwise would make live files look
/// like orphans.
fn check_listing_names_live_files(
    listed: &[Listed],
    live: &HashSet<String>,
) -> Result<(), SinkError> {
    let seen: HashSet<&str> = listed.iter().map(|f| f.location.as_str()).collect();
    let missing: Vec<&String> = live.iter().filter(|l| !seen.contains(l.as_str())).collect();
    match missing.first() {
        None => Ok(()),
        Some(first) => Err(SinkError::IcebergState(format!(
            "{} live data file(s) of the table are not where the listing of its location shows files \
             (e.g. {first}): removed nothing; check that EXPORT_PARQUET_DIR names the lake as the table's \
             metadata does",
            missing.len()
        ))),
    }
}

fn old_enough(file: &Listed, now: DateTime<Utc>, min_age: chrono::Duration) -> bool {
    now.signed_duration_since(file.last_modified) >= min_age
}

/// Expires snapshots in one commit under the catalog row's lock.
async fn expire(
    pool: &PgPool,
    target: &IcebergTarget,
    opts: &MaintainOptions,
    report: &mut MaintainReport,
) -> Result<(), SinkError> {
    let mut tx = pool
        .begin()
        .await
        .map_err(SinkError::pg("starting an Iceberg commit"))?;
    let base = commit::lock_table(&target.lake, &mut tx).await?;
    report.snapshots_before = base.metadata().snapshots().len();
    let cutoff = Utc::now()
        - chrono::Duration::from_std(opts.expire_older_than).unwrap_or(chrono::Duration::MAX);
    let itx = Transaction::new(&base);
    let itx = itx
        .expire_snapshots()
        .expire_older_than_ms(cutoff.timestamp_millis())
        .retain_last(opts.retain_last.max(1))
        .apply(itx)
        .map_err(SinkError::iceberg("preparing the snapshot expiry"))?;
    if opts.dry_run {
        // Stage in memory only: count what would go, write nothing.
        let kept = would_keep(&base, cutoff, opts.retain_last.max(1));
        report.snapshots_expired = report.snapshots_before - kept;
        return Ok(());
    }
    let staged = Staging::stage(&base, itx).await?;
    let after = staged.metadata().snapshots().len();
    report.snapshots_expired = report.snapshots_before - after;
    if report.snapshots_expired == 0 {
        // Nothing changed: the staged metadata file is not needed.
        let (old, new) = (base.metadata_location(), staged.metadata_location());
        if let Some(new) = new.filter(|new| Some(*new) != old) {
            let _ = target.lake.file_io().delete(new).await;
        }
        return Ok(());
    }
    commit::move_pointer(&mut tx, &base, &staged).await?;
    tx.commit()
        .await
        .map_err(SinkError::pg("committing the snapshot expiry"))
}

/// How many snapshots an expiry keeps: the newest `retain_last`, and any newer than `cutoff`.
fn would_keep(table: &Table, cutoff: DateTime<Utc>, retain_last: usize) -> usize {
    let mut times: Vec<i64> = table
        .metadata()
        .snapshots()
        .map(|s| s.timestamp_ms())
        .collect();
    times.sort_unstable_by(|a, b| b.cmp(a));
    times
        .iter()
        .enumerate()
        .filter(|(i, t)| *i < retain_last || **t >= cutoff.timestamp_millis())
        .count()
}

/// Every file the table's metadata names.
struct Referenced {
    all: HashSet<String>,
    /// The live data files of the current snapshot.
    live: HashSet<String>,
}

async fn referenced_files(table: &Table) -> Result<Referenced, SinkError> {
    let metadata = table.metadata();
    let mut all: HashSet<String> = HashSet::new();
    all.insert(
        table
            .metadata_location_result()
            .map_err(SinkError::iceberg("reading the pointer"))?
            .to_string(),
    );
    for log in metadata.metadata_log() {
        all.insert(log.metadata_file.clone());
    }
    let mut live = HashSet::new();
    let current = metadata.current_snapshot_id();
    for snapshot in metadata.snapshots() {
        all.insert(snapshot.manifest_list().to_string());
        let list = table
            .manifest_list_reader(snapshot)
            .load()
            .await
            .map_err(SinkError::iceberg("reading a manifest list"))?;
        for manifest_file in list.entries() {
            all.insert(manifest_file.manifest_path.clone());
            let manifest = manifest_file
                .load_manifest(table.file_io())
                .await
                .map_err(SinkError::iceberg("reading a manifest"))?;
            for entry in manifest.entries() {
                all.insert(entry.file_path().to_string());
                if Some(snapshot.snapshot_id()) == current && entry.is_alive() {
                    live.insert(entry.file_path().to_string());
                }
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
        assert!(err.to_string().contains("removed nothing"), "{err}");
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
