//! Rebuilding the Parquet warehouse from Postgres, the source of truth: a crashed run's
//! stray and missing files ([`rebuild_run`], as the run's new owner), or whole capture dates
//! ([`rebuild_dates`], swapped in atomically). It never reads old Parquet files. Every
//! statement it needs is in [`super::manifest`]; this module is the file machinery around them.
//! Serialising repairs ([`super::warehouse`]) is the caller's job.

use super::manifest::{self, CursorRow};
use super::parquet::{
    blocking, partition_dir, remove_if_present, sync_dir, CommittedFile, RunParquet, SealedFile,
    TABLE_DIR,
};
use super::{Fence, SinkError, WriteBatch};
use crate::lake::Lake;
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{PgConnection, PgPool};
use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

/// What [`rebuild_run`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairReport {
    pub run_id: i64,
    /// Stray files removed: final files the manifest does not know, temporary files.
    pub removed: Vec<PathBuf>,
    /// The files written and recorded for the unexported batches.
    pub files: Vec<CommittedFile>,
    pub rows: u64,
}

/// Brings the run's Parquet files in line with Postgres after a crash: removes the run's
/// stray files, then writes the rows of its unexported batches into new parts and records
/// them. `fence` must be the run's current one, taken over from its dead writer
/// ([`super::fence::take_over`]) or held as its owner: no one else can then put a file of the run in
/// place while the sweep runs, and if someone takes the run over meanwhile, this stops with
/// [`SinkError::Fenced`].
pub async fn rebuild_run(
    pool: &PgPool,
    lake: &Lake,
    fence: Fence,
) -> Result<RepairReport, SinkError> {
    let run_id = fence.run_id;
    let run_date = manifest::run_date(pool, run_id)
        .await?
        .ok_or(SinkError::UnknownRun(run_id))?;
    let removed = match lake {
        Lake::Local(dir) => remove_strays(pool, dir, run_id).await?,
        Lake::Remote(remote) => super::remote::repair_run(pool, remote, fence)
            .await?
            .into_iter()
            .map(PathBuf::from)
            .collect(),
    };
    let mut cursor = pool
        .begin()
        .await
        .map_err(SinkError::pg("starting the repair read"))?;
    manifest::declare_unexported_rows(&mut cursor, run_date, run_id).await?;
    let target = Target::Live(lake.clone(), fence);
    let files = drain_cursor(pool, &mut cursor, target).await?;
    cursor
        .rollback()
        .await
        .map_err(SinkError::pg("closing the repair read"))?;
    let rows = files.iter().map(|(_, f)| f.row_count).sum();
    Ok(RepairReport {
        run_id,
        removed,
        files: files.into_iter().map(|(_, f)| f).collect(),
        rows,
    })
}

/// What a stray file of a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stray {
    /// `run-<id>-<part>.parquet`: a stray only if the manifest does not know it.
    Final,
    /// `.run-<id>-<part>.<random>.parquet.tmp` (or, from versions before the random part,
    /// `.run-<id>-<part>.parquet.tmp`): always a stray once the sweeper owns the run.
    Temp,
}

/// Whether `name` is a file of run `run_id`, and which kind.
fn classify(name: &str, run_id: i64) -> Option<Stray> {
    let is_part = |digits: &str| digits.len() >= 4 && digits.bytes().all(|b| b.is_ascii_digit());
    let prefix = format!("run-{run_id}-");
    if let Some(hidden) = name.strip_prefix('.') {
        let rest = hidden.strip_prefix(&prefix)?.strip_suffix(".parquet.tmp")?;
        let ok = match rest.split_once('.') {
            Some((part, random)) => is_part(part) && crate::files::is_random_part(random),
            None => is_part(rest),
        };
        return ok.then_some(Stray::Temp);
    }
    let part = name.strip_prefix(&prefix)?.strip_suffix(".parquet")?;
    is_part(part).then_some(Stray::Final)
}

/// Removes the run's temporary files and the final files the manifest does not know, in the
/// partition directories of the run's capture dates.
async fn remove_strays(pool: &PgPool, root: &Path, run_id: i64) -> Result<Vec<PathBuf>, SinkError> {
    let dates = manifest::capture_dates(pool, run_id).await?;
    let known: HashSet<String> = manifest::run_paths(pool, run_id).await?;
    let root = root.to_path_buf();
    blocking(move || {
        let mut removed = Vec::new();
        for date in dates {
            removed.extend(remove_strays_in(
                &root,
                &partition_dir(date),
                run_id,
                &known,
            )?);
        }
        Ok(removed)
    })
    .await
}

fn remove_strays_in(
    root: &Path,
    rel_dir: &str,
    run_id: i64,
    known: &HashSet<String>,
) -> Result<Vec<PathBuf>, SinkError> {
    let dir = root.join(rel_dir);
    let entries = match std::fs::read_dir(&dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        other => other.map_err(SinkError::io("listing", &dir))?,
    };
    let mut removed = Vec::new();
    for entry in entries {
        let name = entry.map_err(SinkError::io("listing", &dir))?.file_name();
        let Some(name) = name.to_str() else { continue };
        let stray = match classify(name, run_id) {
            Some(Stray::Temp) => true,
            Some(Stray::Final) => !known.contains(&format!("{rel_dir}/{name}")),
            None => false,
        };
        if stray {
            let path = dir.join(name);
            remove_if_present(&path)?;
            tracing::info!(path = %path.display(), "removed a stray Parquet file");
            removed.push(path);
        }
    }
    if !removed.is_empty() {
        sync_dir(&dir)?;
    }
    Ok(removed)
}

/// What [`rebuild_dates`] did for one capture date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayReport {
    pub capture_date: NaiveDate,
    /// The files now in the day's partition.
    pub files: Vec<CommittedFile>,
    pub rows: u64,
    /// How many manifest rows (and their files) the new files replaced.
    pub replaced: usize,
}

/// Rewrites each capture-date partition from `since` to `until` (both included) from
/// Postgres. Each day is built in a hidden sibling directory, then swapped in with one
/// atomic rename while the manifest is replaced in one transaction: a reader sees the old
/// day or the new day, never both or half. Days with no rows and no files are skipped.
pub async fn rebuild_dates(
    pool: &PgPool,
    parquet_dir: &Path,
    since: NaiveDate,
    until: NaiveDate,
) -> Result<Vec<DayReport>, SinkError> {
    let mut reports = Vec::new();
    for day in days_with_data(pool, parquet_dir, since, until).await? {
        if let Some(report) = rebuild_day(pool, parquet_dir, day).await? {
            reports.push(report);
        }
    }
    Ok(reports)
}

/// The capture dates from `since` to `until` that a rebuild can change: those with rows in
/// Postgres, files in the manifest, or a partition directory on disk. Asking for them (one
/// query, one directory listing) instead of visiting every day of the range makes
/// `0001-01-01..9999-12-31` cost what the days with data cost.
async fn days_with_data(
    pool: &PgPool,
    root: &Path,
    since: NaiveDate,
    until: NaiveDate,
) -> Result<BTreeSet<NaiveDate>, SinkError> {
    let start = since.and_time(chrono::NaiveTime::MIN).and_utc();
    let end = until.succ_opt().map_or(DateTime::<Utc>::MAX_UTC, |d| {
        d.and_time(chrono::NaiveTime::MIN).and_utc()
    });
    let mut days = manifest::days_with_rows_or_files(pool, (start, end), (since, until)).await?;
    let table = root.join(TABLE_DIR);
    let on_disk = blocking(move || -> Result<Vec<NaiveDate>, SinkError> {
        let entries = match std::fs::read_dir(&table) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            other => other.map_err(SinkError::io("listing", &table))?,
        };
        let mut found = Vec::new();
        for entry in entries {
            let name = entry.map_err(SinkError::io("listing", &table))?.file_name();
            let date = name.to_str().and_then(|n| n.strip_prefix("capture_date="));
            if let Some(day) = date.and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok()) {
                found.push(day);
            }
        }
        Ok(found)
    })
    .await?;
    days.extend(on_disk.into_iter().filter(|d| (since..=until).contains(d)));
    Ok(days)
}

async fn rebuild_day(
    pool: &PgPool,
    root: &Path,
    day: NaiveDate,
) -> Result<Option<DayReport>, SinkError> {
    let live = root.join(partition_dir(day));
    // Built in a new hidden directory with a random name (a planted link cannot stand in for
    // it); removed when dropped, holding the old day after the swap.
    let stage_dir = new_stage_dir(root.join(TABLE_DIR), day).await?;
    let stage = stage_dir.path().to_path_buf();
    let old_ids = manifest::day_file_ids(pool, day).await?;
    let files = stage_day(pool, &stage, day).await?;
    if files.is_empty() && old_ids.is_empty() && !live.exists() {
        return Ok(None);
    }
    let mut tx = pool
        .begin()
        .await
        .map_err(SinkError::pg("starting the manifest swap"))?;
    manifest::replace_manifest(&mut tx, &old_ids, &files).await?;
    let swap = Swap {
        stage: stage.clone(),
        live,
    };
    let exchanged = blocking({
        let swap = swap.clone();
        move || swap.apply()
    })
    .await?;
    if let Err(source) = tx.commit().await {
        // The manifest still names the old files: put them back where it says they are.
        blocking(move || swap.undo(exchanged)).await?;
        return Err(SinkError::Postgres {
            context: "committing the rebuilt day",
            source,
        });
    }
    // After the swap the staging directory holds the old day, or is gone (there was none).
    blocking(move || match stage_dir.close() {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(SinkError::io("removing the old day", stage)(e))
        }
        _ => Ok(()),
    })
    .await?;
    let rows = files.iter().map(|(_, f)| f.row_count).sum();
    let files = files.into_iter().map(|(_, f)| f).collect();
    Ok(Some(DayReport {
        capture_date: day,
        files,
        rows,
        replaced: old_ids.len(),
    }))
}

/// Creates `.capture_date=YYYY-MM-DD.<random>.tmp` under `table` for rebuilding `day`, after
/// removing the staging directories an interrupted rebuild of that day left (the manifest
/// needs nothing in them; the caller holds the warehouse lock, so none is in use).
async fn new_stage_dir(table: PathBuf, day: NaiveDate) -> Result<tempfile::TempDir, SinkError> {
    let prefix = format!(".capture_date={}.", day.format("%Y-%m-%d"));
    blocking(move || {
        std::fs::create_dir_all(&table).map_err(SinkError::io("creating", &table))?;
        for entry in std::fs::read_dir(&table).map_err(SinkError::io("listing", &table))? {
            let name = entry.map_err(SinkError::io("listing", &table))?.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
                continue;
            };
            let left_over = rest == "tmp"
                || rest
                    .strip_suffix(".tmp")
                    .is_some_and(crate::files::is_random_part);
            if left_over {
                let path = table.join(&name);
                std::fs::remove_dir_all(&path)
                    .map_err(SinkError::io("removing the directory", &path))?;
            }
        }
        tempfile::Builder::new()
            .prefix(&prefix)
            .suffix(".tmp")
            .rand_bytes(crate::files::RANDOM_CHARS)
            .tempdir_in(&table)
            .map_err(SinkError::io("creating a staging directory in", &table))
    })
    .await
}

/// Writes the day's rows from Postgres into files in the staging directory.
async fn stage_day(
    pool: &PgPool,
    stage: &Path,
    day: NaiveDate,
) -> Result<Vec<(i64, CommittedFile)>, SinkError> {
    let start = day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc();
    let mut cursor = pool
        .begin()
        .await
        .map_err(SinkError::pg("starting the day's read"))?;
    manifest::declare_day_rows(&mut cursor, day, start).await?;
    let files = drain_cursor(pool, &mut cursor, Target::Staged(stage.to_path_buf())).await?;
    cursor
        .rollback()
        .await
        .map_err(SinkError::pg("closing the day's read"))?;
    Ok(files)
}

/// Putting a staged partition directory in place of the live one.
#[derive(Debug, Clone)]
struct Swap {
    stage: PathBuf,
    live: PathBuf,
}

impl Swap {
    /// Swaps the directories; afterwards `stage` holds the old day (if there was one).
    /// Returns whether there was an old day.
    fn apply(&self) -> Result<bool, SinkError> {
        let had_old = self.live.exists();
        if had_old {
            exchange(&self.stage, &self.live)?;
        } else {
            std::fs::rename(&self.stage, &self.live)
                .map_err(SinkError::io("renaming into place", &self.live))?;
        }
        sync_dir(self.live.parent().expect("a partition has a parent"))?;
        Ok(had_old)
    }

    /// Reverses [`Swap::apply`].
    fn undo(&self, had_old: bool) -> Result<(), SinkError> {
        if had_old {
            exchange(&self.stage, &self.live)?;
        } else {
            std::fs::rename(&self.live, &self.stage)
                .map_err(SinkError::io("moving back", &self.live))?;
        }
        sync_dir(self.live.parent().expect("a partition has a parent"))
    }
}

/// Atomically exchanges two directories (`renameat2(RENAME_EXCHANGE)`); where the system or
/// file system cannot, falls back to three renames (a moment without the live directory).
fn exchange(a: &Path, b: &Path) -> Result<(), SinkError> {
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::{renameat_with, RenameFlags, CWD};
        match renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE) {
            Ok(()) => return Ok(()),
            Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS => {}
            Err(e) => {
                return Err(SinkError::io("exchanging with the staged directory", b)(
                    e.into(),
                ))
            }
        }
    }
    let aside = a.with_extension("aside");
    std::fs::rename(b, &aside).map_err(SinkError::io("moving aside", b))?;
    std::fs::rename(a, b).map_err(SinkError::io("renaming into place", b))?;
    std::fs::rename(&aside, a).map_err(SinkError::io("renaming", &aside))
}

/// Where rebuilt files go.
enum Target {
    /// The live partition directories (repairing a run: new parts next to the recorded ones),
    /// each file published at once under the run's fence.
    Live(Lake, Fence),
    /// One staging directory (rebuilding one day): files renamed inside it, recorded by the
    /// caller with the swap.
    Staged(PathBuf),
}

/// Reads the open cursor `rebuild` (rows ordered by run, then batch) to its end, writing the
/// rows batch by batch into Parquet files in `target`.
async fn drain_cursor(
    pool: &PgPool,
    cursor: &mut PgConnection,
    target: Target,
) -> Result<Vec<(i64, CommittedFile)>, SinkError> {
    let mut out = Rewriter {
        pool,
        target,
        writer: None,
        batch: None,
        done: Vec::new(),
    };
    loop {
        let rows = manifest::fetch_rows(cursor).await?;
        if rows.is_empty() {
            break;
        }
        for row in rows {
            out.push(row).await?;
        }
    }
    out.finish().await
}

/// Regroups cursor rows into their write batches (one batch in memory at a time) and feeds
/// them to one [`RunParquet`] per run.
struct Rewriter<'p> {
    pool: &'p PgPool,
    target: Target,
    writer: Option<(i64, RunParquet)>,
    batch: Option<WriteBatch>,
    done: Vec<(i64, CommittedFile)>,
}

impl Rewriter<'_> {
    async fn push(&mut self, row: CursorRow) -> Result<(), SinkError> {
        match manifest::regroup(&mut self.batch, row) {
            Some(full) => self.write_batch(full).await,
            None => Ok(()),
        }
    }

    async fn flush_batch(&mut self) -> Result<(), SinkError> {
        match self.batch.take() {
            Some(batch) => self.write_batch(batch).await,
            None => Ok(()),
        }
    }

    async fn write_batch(&mut self, batch: WriteBatch) -> Result<(), SinkError> {
        if self.writer.as_ref().map(|(run, _)| *run) != Some(batch.run_id) {
            self.finish_writer().await?;
            let part = manifest::next_part(self.pool, batch.run_id).await?;
            let writer = match &self.target {
                Target::Live(lake, _) => RunParquet::for_lake(lake, batch.run_id, part)?,
                Target::Staged(dir) => RunParquet::staged(dir, batch.run_id, part),
            };
            self.writer = Some((batch.run_id, writer));
        }
        let (run_id, mut writer) = self.writer.take().expect("opened above");
        let (writer, rolled) = blocking(move || {
            let rolled = writer.append(&batch);
            (writer, rolled)
        })
        .await;
        self.writer = Some((run_id, writer));
        self.committed(run_id, rolled?).await
    }

    async fn finish_writer(&mut self) -> Result<(), SinkError> {
        if let Some((run_id, writer)) = self.writer.take() {
            let files = blocking(move || writer.finish()).await?;
            self.committed(run_id, files).await?;
        }
        Ok(())
    }

    async fn committed(&mut self, run_id: i64, files: Vec<SealedFile>) -> Result<(), SinkError> {
        for file in files {
            let file = match &self.target {
                Target::Live(lake, fence) => {
                    manifest::publish(self.pool, lake, *fence, file, std::time::Duration::ZERO)
                        .await?
                }
                Target::Staged(_) => {
                    blocking(move || {
                        let mut file = file;
                        file.rename_into_place().map(|_| file.into_committed())
                    })
                    .await?
                }
            };
            self.done.push((run_id, file));
        }
        Ok(())
    }

    async fn finish(mut self) -> Result<Vec<(i64, CommittedFile)>, SinkError> {
        self.flush_batch().await?;
        self.finish_writer().await?;
        Ok(self.done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_knows_the_runs_final_and_temporary_files_only() {
        assert_eq!(classify("run-12-0001.parquet", 12), Some(Stray::Final));
        assert_eq!(classify("run-12-12345.parquet", 12), Some(Stray::Final));
        assert_eq!(classify(".run-12-0001.parquet.tmp", 12), Some(Stray::Temp));
        assert_eq!(
            classify(".run-12-0001.Ab3dE6gH9k.parquet.tmp", 12),
            Some(Stray::Temp)
        );
        assert_eq!(classify(".run-12-0001.short.parquet.tmp", 12), None);
        assert_eq!(classify(".run-123-0001.Ab3dE6gH9k.parquet.tmp", 12), None);
        assert_eq!(classify("run-123-0001.parquet", 12), None);
        assert_eq!(classify("run-1-0001.parquet", 12), None);
        assert_eq!(classify("run-12-01.parquet", 12), None);
        assert_eq!(classify("run-12-0001.parquet.tmp", 12), None);
        assert_eq!(classify(".run-12-0001.parquet", 12), None);
        assert_eq!(classify("notes.txt", 12), None);
    }
}
