//! Rebuilding Hive-style capture dates of the local lake from Postgres, the source of truth
//! ([`rebuild_dates`]: each day built aside and swapped in atomically with its manifest rows).
//! It never reads old Parquet files. Every statement it needs is in [`super::manifest`]; this
//! module is the file machinery around them. A crashed run's repair, in every lake form, is
//! `LakeTarget::rebuild_run` ([`super::target`]). Serialising rebuilds
//! ([`super::warehouse`]) is the caller's job.

use super::manifest;
use super::parquet::{
    blocking, partition_dir, sync_dir, CommittedFile, RunParquet, SealedFile, TABLE_DIR,
};
use super::{SinkError, WriteBatch};
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{PgConnection, PgPool};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// What a run's repair (`LakeTarget::rebuild_run`) did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairReport {
    pub run_id: i64,
    /// Stray files removed (paths relative to the lake): files of the run no manifest row
    /// names, temporary files, unrecorded uploads.
    pub removed: Vec<String>,
    /// The files written and recorded for the unexported batches.
    pub files: Vec<CommittedFile>,
    pub rows: u64,
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
    let files = drain_cursor(pool, &mut cursor, stage.to_path_buf()).await?;
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

/// Reads the open cursor `rebuild` (rows ordered by run, then batch) to its end, writing the
/// rows batch by batch into Parquet files in the staging directory `stage`.
async fn drain_cursor(
    pool: &PgPool,
    cursor: &mut PgConnection,
    stage: PathBuf,
) -> Result<Vec<(i64, CommittedFile)>, SinkError> {
    let mut out = Rewriter {
        pool,
        stage,
        writer: None,
        done: Vec::new(),
    };
    let mut batches = manifest::CursorBatches::default();
    while let Some(batch) = batches.next(cursor).await? {
        out.write_batch(batch).await?;
    }
    out.finish_writer().await?;
    Ok(out.done)
}

/// Feeds write batches to one [`RunParquet`] per run, all writing into the staging directory
/// `stage`.
struct Rewriter<'p> {
    pool: &'p PgPool,
    stage: PathBuf,
    writer: Option<(i64, RunParquet)>,
    done: Vec<(i64, CommittedFile)>,
}

impl Rewriter<'_> {
    async fn write_batch(&mut self, batch: WriteBatch) -> Result<(), SinkError> {
        if self.writer.as_ref().map(|(run, _)| *run) != Some(batch.run_id) {
            self.finish_writer().await?;
            let part = manifest::next_part(self.pool, batch.run_id).await?;
            let writer = RunParquet::staged(&self.stage, batch.run_id, part);
            self.writer = Some((batch.run_id, writer));
        }
        let (run_id, writer) = self.writer.as_mut().expect("opened above");
        let rolled = writer.append(&batch).await?;
        let run_id = *run_id;
        self.committed(run_id, rolled).await
    }

    async fn finish_writer(&mut self) -> Result<(), SinkError> {
        if let Some((run_id, writer)) = self.writer.take() {
            let files = writer.finish().await?;
            self.committed(run_id, files).await?;
        }
        Ok(())
    }

    /// Renames each sealed file into place inside the staging directory; the caller records
    /// them with the swap.
    async fn committed(&mut self, run_id: i64, files: Vec<SealedFile>) -> Result<(), SinkError> {
        for file in files {
            let file = blocking(move || {
                let mut file = file;
                file.rename_into_place().map(|_| file.into_committed())
            })
            .await?;
            self.done.push((run_id, file));
        }
        Ok(())
    }
}
