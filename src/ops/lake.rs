//! The lake checked against the manifest: every file `parquet_files` and `read_event_files`
//! list must be in the Parquet directory with its recorded size and, in its footer, its
//! recorded row count; visible files the manifest does not know are listed (a reader would
//! count their rows too). A repair rewrites what is missing or damaged from Postgres: a
//! snapshot file by rebuilding its capture date (`manifest::rebuild_dates`, atomic per day),
//! unless retention removed rows of that day from Postgres (then they are gone for good); a
//! read-events file by writing its run's file for that date again. Nothing here prints.

use crate::lake::{Lake, Remote};
use crate::sink::{manifest, parquet as snapshots};
use chrono::NaiveDate;
use object_store::ObjectStoreExt;
use sqlx::PgPool;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;

/// Which table of the lake a file belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Table {
    Snapshots,
    ReadEvents,
}

/// A file the manifest lists.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Listed {
    pub run_id: i64,
    pub capture_date: NaiveDate,
    /// Relative to the Parquet directory.
    pub path: String,
    pub row_count: i64,
    pub byte_size: i64,
}

/// What is wrong with a listed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    Missing,
    WrongSize {
        on_disk: u64,
    },
    /// The footer cannot be read (a truncated or overwritten file).
    Unreadable(String),
    WrongRows {
        in_footer: i64,
    },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Missing => write!(f, "missing"),
            Problem::WrongSize { on_disk } => write!(f, "{on_disk} bytes on disk"),
            Problem::Unreadable(e) => write!(f, "unreadable footer ({e})"),
            Problem::WrongRows { in_footer } => write!(f, "{in_footer} rows in its footer"),
        }
    }
}

/// A listed file and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub table: Table,
    pub file: Listed,
    pub problem: Problem,
}

/// What [`verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub listed: usize,
    pub findings: Vec<Finding>,
    /// Visible `.parquet` files under the lake's tables that the manifest does not list
    /// (relative paths), leaving out those of runs still running (a run renames its file into
    /// place just before recording it).
    pub unknown: Vec<String>,
    /// In an object store: uploads under `_pending/` that no manifest row names, of runs not
    /// running (a writer killed or fenced before recording its file). Readers never see them;
    /// `--repair` deletes them.
    pub stray_uploads: Vec<String>,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty() && self.unknown.is_empty() && self.stray_uploads.is_empty()
    }
}

/// Every file the manifest lists, both tables, in path order, but for the files of runs still
/// running whose copy into place is under way (recorded with a pending key in an object store:
/// their run finishes the copy; checked, or repaired, the final object is not there yet).
pub async fn listed(pool: &PgPool) -> sqlx::Result<Vec<(Table, Listed)>> {
    let snapshot_files: Vec<Listed> = sqlx::query_as(
        "SELECT run_id, capture_date, path, row_count, byte_size FROM receipts.parquet_files p
         WHERE p.pending_key IS NULL
            OR NOT EXISTS (SELECT 1 FROM receipts.export_runs r
                           WHERE r.run_id = p.run_id AND r.status = 'running')
         ORDER BY path",
    )
    .fetch_all(pool)
    .await?;
    let event_files: Vec<Listed> = sqlx::query_as(
        "SELECT run_id, capture_date, path, row_count, byte_size FROM receipts.read_event_files ORDER BY path",
    )
    .fetch_all(pool)
    .await?;
    Ok(snapshot_files
        .into_iter()
        .map(|f| (Table::Snapshots, f))
        .chain(event_files.into_iter().map(|f| (Table::ReadEvents, f)))
        .collect())
}

/// The cheap check: every listed file exists with its recorded size (no file is opened).
pub fn check_presence(dir: &Path, listed: &[(Table, Listed)]) -> Vec<Finding> {
    listed
        .iter()
        .filter_map(|(table, file)| {
            presence_problem(dir, file).map(|problem| Finding {
                table: *table,
                file: file.clone(),
                problem,
            })
        })
        .collect()
}

fn presence_problem(dir: &Path, file: &Listed) -> Option<Problem> {
    match std::fs::symlink_metadata(dir.join(&file.path)) {
        Ok(meta) if meta.is_file() => {
            (meta.len() != file.byte_size as u64).then_some(Problem::WrongSize {
                on_disk: meta.len(),
            })
        }
        _ => Some(Problem::Missing),
    }
}

/// The whole check: presence and size, the row count in each footer, and the unknown files.
pub async fn verify(pool: &PgPool, lake: &Lake) -> anyhow::Result<Report> {
    match lake {
        Lake::Local(dir) => verify_local(pool, dir).await,
        Lake::Remote(remote) => verify_remote(pool, remote).await,
    }
}

async fn verify_local(pool: &PgPool, dir: &Path) -> anyhow::Result<Report> {
    let listed = listed(pool).await?;
    let mut findings = Vec::new();
    for (table, file) in &listed {
        let problem =
            presence_problem(dir, file).or_else(|| match footer_rows(&dir.join(&file.path)) {
                Err(e) => Some(Problem::Unreadable(e)),
                Ok(rows) if rows != file.row_count => Some(Problem::WrongRows { in_footer: rows }),
                Ok(_) => None,
            });
        if let Some(problem) = problem {
            findings.push(Finding {
                table: *table,
                file: file.clone(),
                problem,
            });
        }
    }
    let visible = TABLE_DIRS
        .iter()
        .flat_map(|t| visible_parquet_files(dir, Path::new(t)))
        .collect();
    let unknown = unknown_files(pool, visible).await?;
    Ok(Report {
        listed: listed.len(),
        findings,
        unknown,
        stray_uploads: Vec::new(),
    })
}

/// The lake's tables, as directories (prefixes) under its root.
const TABLE_DIRS: [&str; 2] = [snapshots::TABLE_DIR, crate::run::details::lake::TABLE_DIR];

/// The visible files the manifest does not list, leaving out those of runs still running. The
/// manifest and the running runs are read after the listing `visible`: a file is recorded before
/// (object store) or while (local) it becomes visible, and its run runs until then, so a run
/// that finished between an earlier read of the manifest and the listing is not reported.
async fn unknown_files(pool: &PgPool, visible: Vec<String>) -> anyhow::Result<Vec<String>> {
    let running = running_runs(pool).await?;
    let known: HashSet<String> = sqlx::query_scalar(
        "SELECT path FROM receipts.parquet_files UNION ALL SELECT path FROM receipts.read_event_files",
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .collect();
    let mut unknown: Vec<String> = visible
        .into_iter()
        .filter(|path| {
            let running_run = run_of_file(path).is_some_and(|r| running.contains(&r));
            !known.contains(path) && !running_run
        })
        .collect();
    unknown.sort();
    Ok(unknown)
}

/// The visible objects of the lake's tables in an object store, with their sizes: keys with no
/// segment starting with `.` or `_`, ending in `.parquet` (what engines read).
pub async fn remote_objects(remote: &Remote) -> anyhow::Result<BTreeMap<String, u64>> {
    use crate::sink::remote::store_err;
    use futures::TryStreamExt;
    let mut out = BTreeMap::new();
    for table in TABLE_DIRS {
        let prefix = remote.key(table);
        let metas: Vec<object_store::ObjectMeta> = remote
            .store()
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(store_err("listing", &prefix))?;
        for meta in metas {
            let Some(rel) = remote.relative(&meta.location) else {
                continue;
            };
            let hidden = rel
                .split('/')
                .any(|s| s.starts_with('.') || s.starts_with('_'));
            if !hidden && rel.ends_with(".parquet") {
                out.insert(rel.to_string(), meta.size);
            }
        }
    }
    Ok(out)
}

/// The cheap check against an object store: one listing of each table.
pub async fn check_presence_remote(
    remote: &Remote,
    listed: &[(Table, Listed)],
) -> anyhow::Result<Vec<Finding>> {
    let objects = remote_objects(remote).await?;
    Ok(listed
        .iter()
        .filter_map(|(table, file)| {
            let problem = match objects.get(&file.path) {
                None => Problem::Missing,
                Some(&size) if size != file.byte_size as u64 => {
                    Problem::WrongSize { on_disk: size }
                }
                Some(_) => return None,
            };
            Some(Finding {
                table: *table,
                file: file.clone(),
                problem,
            })
        })
        .collect())
}

async fn verify_remote(pool: &PgPool, remote: &Remote) -> anyhow::Result<Report> {
    let listed = listed(pool).await?;
    let mut findings = check_presence_remote(remote, &listed).await?;
    let bad: HashSet<String> = findings.iter().map(|f| f.file.path.clone()).collect();
    for (table, file) in listed.iter().filter(|(_, f)| !bad.contains(&f.path)) {
        let problem = match remote_footer_rows(remote, &file.path, file.byte_size as u64).await {
            Err(e) => Problem::Unreadable(e),
            Ok(rows) if rows != file.row_count => Problem::WrongRows { in_footer: rows },
            Ok(_) => continue,
        };
        findings.push(Finding {
            table: *table,
            file: file.clone(),
            problem,
        });
    }
    findings.sort_by(|a, b| a.file.path.cmp(&b.file.path));
    let visible = remote_objects(remote).await?.into_keys().collect();
    let unknown = unknown_files(pool, visible).await?;
    Ok(Report {
        listed: listed.len(),
        findings,
        unknown,
        stray_uploads: stray_uploads(pool, remote).await?,
    })
}

/// The objects under `_pending/` that no manifest row names, leaving out runs still running.
/// The listing comes first, the manifest and the running runs after it (a run is running while
/// it uploads); an object its run deleted meanwhile (its copy done) is left out too.
async fn stray_uploads(pool: &PgPool, remote: &Remote) -> anyhow::Result<Vec<String>> {
    use crate::sink::remote::{list, PENDING_DIR};
    let uploads = list(remote, PENDING_DIR).await?;
    let recorded: HashSet<String> = sqlx::query_scalar(
        "SELECT pending_key FROM receipts.parquet_files WHERE pending_key IS NOT NULL",
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .collect();
    let running = running_runs(pool).await?;
    let mut strays = Vec::new();
    for key in uploads {
        let live = run_of_file(&key).is_some_and(|r| running.contains(&r));
        if recorded.contains(&key) || live {
            continue;
        }
        let path = remote.key(&key);
        match remote.store().head(&path).await {
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(crate::sink::remote::store_err("looking up", &path)(e).into()),
            Ok(_) => strays.push(key),
        }
    }
    Ok(strays)
}

async fn running_runs(pool: &PgPool) -> sqlx::Result<HashSet<i64>> {
    let runs: Vec<i64> =
        sqlx::query_scalar("SELECT run_id FROM receipts.export_runs WHERE status = 'running'")
            .fetch_all(pool)
            .await?;
    Ok(runs.into_iter().collect())
}

/// The row count in the footer of an object (two ranged reads: the footer's length, the footer).
async fn remote_footer_rows(remote: &Remote, relative: &str, size: u64) -> Result<i64, String> {
    let reader = parquet::arrow::async_reader::ParquetObjectReader::new(
        remote.store().clone(),
        remote.key(relative),
    )
    .with_file_size(size);
    let builder = parquet::arrow::ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(|e| e.to_string())?;
    Ok(builder.metadata().file_metadata().num_rows())
}

/// The row count a Parquet file's footer records.
fn footer_rows(path: &Path) -> Result<i64, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| e.to_string())?;
    Ok(builder.metadata().file_metadata().num_rows())
}

/// Relative paths of the `.parquet` files under `dir/rel` that readers see: names starting
/// with `.` or `_` (files being written, staged days) are skipped, directories included.
fn visible_parquet_files(dir: &Path, rel: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir.join(rel)) else {
        return out;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        let child = rel.join(&name);
        match entry.file_type() {
            Ok(t) if t.is_dir() => out.extend(visible_parquet_files(dir, &child)),
            Ok(_) if name.ends_with(".parquet") => out.push(child.to_string_lossy().into_owned()),
            _ => {}
        }
    }
    out
}

/// The run id in a lake file's name: `run-<id>-<part>.parquet` or `run-<id>.parquet`.
fn run_of_file(path: &str) -> Option<i64> {
    let name = path.rsplit('/').next()?;
    let rest = name.strip_prefix("run-")?.strip_suffix(".parquet")?;
    rest.split('-').next()?.parse().ok()
}

/// What [`repair`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Repaired {
    /// Capture dates of snapshots rebuilt from Postgres, with their rows.
    pub days: Vec<(NaiveDate, u64)>,
    /// Capture dates that cannot be rebuilt: retention removed these runs' rows from Postgres.
    pub gone: Vec<(NaiveDate, Vec<i64>)>,
    /// Runs whose read-events files were written again.
    pub read_event_runs: Vec<i64>,
    /// Read-events files of runs still running: their run writes them.
    pub skipped_running: Vec<i64>,
    /// Read-events files that cannot be written again: retention removed some of these runs'
    /// read events from Postgres.
    pub events_gone: Vec<i64>,
    /// Stray uploads deleted from `_pending/`.
    pub uploads_removed: usize,
}

/// Rewrites the files of `findings` from Postgres. The caller holds the warehouse lock. In a
/// local lake a damaged snapshot file's whole day is rebuilt (swapped in atomically); in an
/// object store each damaged file is written again under its own key (one atomic PUT, the same
/// batches' rows).
pub async fn repair(pool: &PgPool, lake: &Lake, report: &Report) -> anyhow::Result<Repaired> {
    let findings = &report.findings;
    let mut out = Repaired::default();
    if let Lake::Remote(remote) = lake {
        for key in &report.stray_uploads {
            let path = remote.key(key);
            match remote.store().delete(&path).await {
                Err(object_store::Error::NotFound { .. }) | Ok(()) => out.uploads_removed += 1,
                Err(e) => return Err(crate::sink::remote::store_err("deleting", &path)(e).into()),
            }
        }
    }
    let days: BTreeSet<NaiveDate> = findings
        .iter()
        .filter(|f| f.table == Table::Snapshots)
        .map(|f| f.file.capture_date)
        .collect();
    for day in days {
        let retired = super::retention::retired_days(pool, day, day).await?;
        if let Some((_, runs)) = retired.into_iter().next() {
            out.gone.push((day, runs));
            continue;
        }
        out.days
            .push((day, repair_day(pool, lake, day, findings).await?));
    }
    let mut event_dates: BTreeMap<i64, Vec<NaiveDate>> = BTreeMap::new();
    for f in findings.iter().filter(|f| f.table == Table::ReadEvents) {
        event_dates
            .entry(f.file.run_id)
            .or_default()
            .push(f.file.capture_date);
    }
    for (run_id, dates) in event_dates {
        let status: String =
            sqlx::query_scalar("SELECT status FROM receipts.export_runs WHERE run_id = $1")
                .bind(run_id)
                .fetch_one(pool)
                .await?;
        if status == "running" {
            out.skipped_running.push(run_id);
            continue;
        }
        if crate::tracking::details::events_pruned(pool, run_id).await? {
            out.events_gone.push(run_id);
            continue;
        }
        // Forgotten first, so the run's export writes the file again under the same name (a
        // crash in between leaves an unrecorded file that the next run writes again).
        crate::tracking::details::forget_lake_files(pool, run_id, &dates).await?;
        crate::run::details::lake::export(pool, lake, run_id).await?;
        out.read_event_runs.push(run_id);
    }
    Ok(out)
}

/// A local day is rebuilt whole (swapped in atomically); in an object store each damaged file
/// of the day is written again under its own key. Returns the rows written.
async fn repair_day(
    pool: &PgPool,
    lake: &Lake,
    day: NaiveDate,
    findings: &[Finding],
) -> anyhow::Result<u64> {
    match lake {
        Lake::Local(dir) => {
            let rebuilt = manifest::rebuild_dates(pool, dir, day, day).await?;
            Ok(rebuilt.iter().map(|d| d.rows).sum::<u64>())
        }
        Lake::Remote(remote) => {
            let mut rows = 0;
            for f in findings
                .iter()
                .filter(|f| f.table == Table::Snapshots && f.file.capture_date == day)
            {
                rows += crate::sink::remote::rewrite_file(pool, remote, &f.file.path).await?;
            }
            Ok(rows)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_come_from_both_tables_file_names() {
        assert_eq!(
            run_of_file("receipt_snapshots/capture_date=2026-11-29/run-12-3.parquet"),
            Some(12)
        );
        assert_eq!(
            run_of_file("read_events/capture_date=2026-11-29/run-7.parquet"),
            Some(7)
        );
        assert_eq!(run_of_file("receipt_snapshots/x.parquet"), None);
    }

    #[test]
    fn presence_finds_missing_and_resized_files_and_passes_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.parquet"), b"12345").unwrap();
        std::fs::write(dir.path().join("b.parquet"), b"123").unwrap();
        let file = |path: &str, byte_size| {
            (
                Table::Snapshots,
                Listed {
                    run_id: 1,
                    capture_date: NaiveDate::from_ymd_opt(2026, 11, 29).unwrap(),
                    path: path.into(),
                    row_count: 1,
                    byte_size,
                },
            )
        };
        let found = check_presence(
            dir.path(),
            &[
                file("a.parquet", 5),
                file("b.parquet", 5),
                file("c.parquet", 5),
            ],
        );
        let problems: Vec<(&str, &Problem)> = found
            .iter()
            .map(|f| (f.file.path.as_str(), &f.problem))
            .collect();
        assert_eq!(
            problems,
            [
                ("b.parquet", &Problem::WrongSize { on_disk: 3 }),
                ("c.parquet", &Problem::Missing)
            ]
        );
    }
}
