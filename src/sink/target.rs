//! The lake target: one seam over the three forms the snapshots take in the lake. Runs,
//! backfills, repairs, `export parquet`, `lake verify`, `iceberg maintain`, retention and
//! `doctor` reach the lake through a [`LakeTarget`], never by matching the form themselves: it
//! opens the lake (checking that it is this database's), writes a run's files, publishes them,
//! repairs a run, rebuilds days and verifies the lake, each the same way for every caller.
//!
//! # Exactly once, in every form
//!
//! Postgres is the source of truth: a write batch commits there first, with its number in
//! `write_batches`, so a write retried after a lost COMMIT is a no-op. The lake is derived from
//! it: one file per run, capture date and part ([`super::rolling`]), named after its run
//! ([`super::names`]). A file is part of the lake exactly when its manifest row commits
//! (`parquet_files`, pointing its batches at it), and every transaction that records a file of
//! a run first checks the run's fence (`export_runs.epoch`, [`super::fence`]): only the run's
//! current owner records its files, and a take-over waits for a commit in flight.
//!
//! **Who repairs.** The repair at the start of the next run (of the same job at once, of
//! another once the dead run's lease ran out; `run::repair`), under the warehouse lock, as the
//! dead run's new owner: it bumps the run's epoch first, so the dead writer, if it wakes up,
//! can record nothing more. Then [`LakeTarget::rebuild_run`] deletes the run's files that no
//! manifest row names (found by their names, in the partitions of the run's capture dates) and
//! writes its batches that no file holds from Postgres, through the very steps below.
//!
//! ## Hive-style, on the local disk ([`LakeTarget::HiveLocal`])
//! 1. The rows go to `.run-<id>-<part>.<random>.parquet.tmp` beside the final name (created new,
//!    never through a link), sealed: footer written, fsynced. *Crash:* a hidden temporary file
//!    no reader lists; the repair deletes it and writes its batches again.
//! 2. One transaction checks the fence, renames the file to `run-<id>-<part>.parquet`, fsyncs
//!    the directory and records the file ([`super::manifest::publish`]). *Crash before the
//!    COMMIT:* a visible file no manifest row names, holding rows Postgres committed (never a
//!    row twice: its batches are in no other file); the repair deletes it and writes them
//!    again under a new part. *After:* nothing to do.
//!
//! ## Hive-style, in an object store ([`LakeTarget::HiveStore`])
//! 1. Written and sealed in a spool directory under `TMPDIR`, uploaded with one PUT under
//!    `_pending/` (outside every table's prefix). *Crash:* at most a whole pending object no
//!    row names; the repair deletes it and writes the batches again.
//! 2. One fenced transaction records the file with its pending key. From here Postgres counts
//!    the rows as in the lake; no reader sees them yet. *Crash:* the repair finishes step 3.
//! 3. The pending object is copied server-side to its final key, the pending key cleared, the
//!    pending object deleted ([`super::remote`]). *Crash:* the repair copies again (the same
//!    bytes to the same key), or, if the pending object is lost and the final one missing,
//!    forgets the file so its batches are written again.
//!
//! ## Iceberg, on the local disk or in S3 ([`LakeTarget::Iceberg`])
//! 1. The file's location is recorded as pending under the run's fence
//!    ([`super::iceberg::pending`]), then iceberg-rust's writer writes the data file straight
//!    to `data/captured_at_day=D/run-<id>-<part>-<random>.parquet` under the table. *Crash:* a
//!    data file no metadata names, invisible to every reader, still pending: `iceberg
//!    maintain` never takes it (a live run may commit it; a long backfill keeps it open for
//!    hours); the repair deletes the dead run's pending files and forgets them.
//! 2. One transaction checks the fence, locks the catalog row, checks the table's schema and
//!    spec are the exporter's ([`super::iceberg::shape`]: another engine's change is refused,
//!    exit 2) and that the data file is in the lake with the size written (a file removed by
//!    another hand is never committed: the run fails, its batches stay unexported, the repair
//!    writes them again), writes the manifest, manifest list and next metadata file (a fast
//!    append), moves `metadata_location` by compare-and-set, records the file and forgets its
//!    pending row ([`super::iceberg::commit`]). *Crash before the COMMIT:* metadata files no
//!    pointer names (orphans for `iceberg maintain`) and the pending data file of step 1.
//!    *After:* nothing; a commit retried after a lost COMMIT finds its file recorded and is
//!    not repeated.
//!
//! Every request to the table's storage is cut at the lake timeout (`EXPORT_LAKE_TIMEOUT`,
//! [`super::iceberg::IcebergLake::within`]), as the object store's are.
//!
//! ## One lake per database, one database per lake
//! Before any of this, [`LakeTarget::open`] checks the lake against the database's record of
//! it (location and form, [`super::identity`]; a first use records it) and the database
//! against the lake's marker (`_receipt_exporter.json` at the lake's root,
//! [`super::owner`]; a first write claims it), in every form. A process started with another
//! lake or form, or pointed at another database's lake, is refused (exit 2) before it
//! writes anything: two databases in one lake would overwrite each other's `run-1-...` files
//! and sweep each other's files as strays, and one database in two lakes would count rows as
//! in "the lake" that its readers never see. In Iceberg mode a table missing from the catalog
//! while the manifest lists files committed to it (another engine dropped it, its files
//! stayed) is refused, never created again over them.
//!
//! ## Rebuilding from Postgres
//! `export parquet` and `lake verify --repair` write the lake again from Postgres under the
//! warehouse lock: on the local disk a capture date is built aside and swapped in with one
//! atomic rename while its manifest rows are replaced in the same transaction
//! ([`super::rebuild`]); in an object store, which cannot swap, each listed file is written
//! again under its own key with one PUT, from the rows of exactly its batches.

use super::iceberg::writer::{FinishedFile, RunIceberg};
use super::iceberg::IcebergTarget;
use super::identity::Identity;
use super::names::{self, Kind};
use super::parquet::{partition_dir, CommittedFile, RunParquet, SealedFile};
use super::rebuild::RepairReport;
use super::verify::{Finding, Report, Table};
use super::{manifest, objects, Fence, SinkError, WriteBatch};
use crate::lake::{Lake, Remote};
use crate::settings::TableFormat;
use chrono::NaiveDate;
use sqlx::PgPool;
use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;
use std::time::Duration;

/// Where a run's snapshot rows go: the lake in one of its three forms (see the module header).
#[derive(Debug, Clone)]
pub enum LakeTarget {
    /// Hive-style directories on this host.
    HiveLocal(PathBuf),
    /// Hive-style prefixes in an object store.
    HiveStore(Remote),
    /// The Iceberg table `receipts.receipt_snapshots` in the lake (on this host or in S3).
    Iceberg(Box<IcebergTarget>),
}

/// What a command does with the lake it opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads and judges only: claims nothing, creates nothing (`lake verify`, `doctor`).
    Read,
    /// Writes or deletes (`export parquet`, `lake verify --repair`): claims a lake no database
    /// has claimed yet. The Iceberg table is taken as the catalog lists it (or, when it lacks
    /// it, as the empty table a run would create, nothing written).
    Write,
    /// A run's (and `iceberg maintain`'s): as [`Access::Write`], and the Iceberg table is
    /// created, empty, when the catalog lacks it.
    Run,
}

/// How long a repair's publish rides out a lost connection.
const REPAIR_RECONNECT: Duration = Duration::from_secs(30);

impl LakeTarget {
    /// Opens the lake in the form the settings give, after checking that it is this database's
    /// lake, as recorded ([`super::identity`], recorded here on first use unless reading) and as
    /// its marker says ([`super::owner`], claimed here unless reading); in Iceberg mode opens
    /// the table (with [`Access::Run`], creating it, empty, when the catalog lacks it and
    /// nothing says it was dropped). A refusal changes nothing in the lake.
    pub async fn open(
        pool: &PgPool,
        lake: &Lake,
        format: TableFormat,
        access: Access,
    ) -> anyhow::Result<LakeTarget> {
        let writes = access != Access::Read;
        let identity = Identity::of(lake, format);
        let recorded = super::identity::check(pool, &identity).await?;
        super::owner::check(pool, lake, writes).await?;
        if writes && !recorded {
            super::identity::record(pool, &identity).await?;
        }
        Ok(match (format, lake) {
            (TableFormat::Iceberg, _) => {
                let target = match access {
                    Access::Run => IcebergTarget::open(lake, pool).await?,
                    Access::Read | Access::Write => IcebergTarget::peek(lake, pool).await?,
                };
                LakeTarget::Iceberg(Box::new(target))
            }
            (TableFormat::Parquet, Lake::Local(dir)) => LakeTarget::HiveLocal(dir.clone()),
            (TableFormat::Parquet, Lake::Remote(remote)) => LakeTarget::HiveStore(remote.clone()),
        })
    }

    /// Checks, writing nothing and claiming nothing, that a run may open this lake: the lake
    /// the database records, and in Iceberg mode a lake that holds the catalog's table. A run
    /// refuses a wrong lake before it starts (exit 2), not half-way; whose lake it is (its
    /// marker) the run's [`LakeTarget::open`] checks, a store's first request.
    pub async fn precheck(pool: &PgPool, lake: &Lake, format: TableFormat) -> anyhow::Result<()> {
        super::identity::check(pool, &Identity::of(lake, format)).await?;
        if format == TableFormat::Iceberg {
            super::iceberg::IcebergLake::new(lake)?
                .check_catalog(pool)
                .await?;
        }
        Ok(())
    }

    /// `lake move`: records `to`, in `format`, as this database's lake in place of the recorded
    /// one, which `from` (normalised) must name. An Iceberg table must be at `to` already or
    /// creatable there (the catalog's table never moves: its metadata names its files by
    /// absolute path); `to`'s marker is claimed, so another database's lake is refused. Moves
    /// no file. Returns the identities before and after.
    pub async fn relocate(
        pool: &PgPool,
        from: &str,
        to: &Lake,
        format: TableFormat,
    ) -> anyhow::Result<(Identity, Identity)> {
        let new = Identity::of(to, format);
        super::identity::check_move(pool, from, &new).await?;
        if format == TableFormat::Iceberg {
            super::iceberg::IcebergLake::new(to)?
                .check_catalog(pool)
                .await?;
        }
        super::owner::check(pool, to, true).await?;
        let old = super::identity::moved(pool, from, &new).await?;
        Ok((old, new))
    }

    /// A Hive-style target on `lake` as it is, without checking whose it is: for tests and
    /// tools that set the lake up themselves. Commands go through [`LakeTarget::open`].
    pub fn unchecked_hive(lake: &Lake) -> LakeTarget {
        match lake {
            Lake::Local(dir) => LakeTarget::HiveLocal(dir.clone()),
            Lake::Remote(remote) => LakeTarget::HiveStore(remote.clone()),
        }
    }

    /// The lake this target is in (the read-events files go there in every form).
    pub fn lake(&self) -> Lake {
        match self {
            LakeTarget::HiveLocal(dir) => Lake::Local(dir.clone()),
            LakeTarget::HiveStore(remote) => Lake::Remote(remote.clone()),
            LakeTarget::Iceberg(target) => target.lake.lake().clone(),
        }
    }

    /// The Iceberg table, in Iceberg mode.
    pub fn iceberg(&self) -> Option<&IcebergTarget> {
        match self {
            LakeTarget::Iceberg(target) => Some(target),
            _ => None,
        }
    }

    /// The writer of the fenced run's files; `next_part` is the first part number the run has
    /// not used (`manifest::next_part`).
    pub fn run_files(
        &self,
        pool: &PgPool,
        fence: Fence,
        next_part: i32,
    ) -> Result<RunFiles, SinkError> {
        Ok(match self {
            LakeTarget::Iceberg(target) => {
                RunFiles::Iceberg(Box::new(target.run_writer(pool, fence, next_part)?))
            }
            _ => RunFiles::Hive(RunParquet::for_lake(&self.lake(), fence.run_id, next_part)?),
        })
    }

    /// Makes a finished file part of the lake and records it, under the run's fence: the last
    /// step of the protocol of each form (see the module header). Connection failures are
    /// retried for up to `bound`.
    pub async fn publish(
        &self,
        pool: &PgPool,
        fence: Fence,
        file: Finished,
        bound: Duration,
    ) -> Result<CommittedFile, SinkError> {
        match (self, file) {
            (LakeTarget::Iceberg(target), Finished::Iceberg(file)) => {
                super::iceberg::commit::publish(pool, &target.lake, fence, &file, bound).await
            }
            (LakeTarget::HiveLocal(_), Finished::Hive(file)) => {
                manifest::publish(pool, fence, file, bound).await
            }
            (LakeTarget::HiveStore(remote), Finished::Hive(file)) => {
                super::remote::publish(pool, remote, fence, file, bound).await
            }
            (_, file) => Err(SinkError::InvalidBatch {
                run_id: fence.run_id,
                batch_no: 0,
                reason: format!("a {} file published to {self}", file.form()),
            }),
        }
    }

    /// Brings a run's files in line with Postgres after a crash, as its owner (`fence`, taken
    /// over from its dead writer or held as its own): deletes its files no manifest row names,
    /// then writes its batches no file holds, published as the run would have. If someone takes
    /// the run over meanwhile, this stops with [`SinkError::Fenced`].
    pub async fn rebuild_run(
        &self,
        pool: &PgPool,
        fence: Fence,
    ) -> Result<RepairReport, SinkError> {
        let run_id = fence.run_id;
        let run_date = manifest::run_date(pool, run_id)
            .await?
            .ok_or(SinkError::UnknownRun(run_id))?;
        let removed = self.sweep_run(pool, fence).await?;
        let mut cursor = pool
            .begin()
            .await
            .map_err(SinkError::pg("starting the repair read"))?;
        manifest::declare_unexported_rows(&mut cursor, run_date, run_id).await?;
        let mut files = self.run_files(pool, fence, manifest::next_part(pool, run_id).await?)?;
        let mut finished = Vec::new();
        let mut batches = manifest::CursorBatches::default();
        while let Some(batch) = batches.next(&mut cursor).await? {
            finished.extend(files.append(&batch).await?);
        }
        finished.extend(files.finish().await?);
        cursor
            .rollback()
            .await
            .map_err(SinkError::pg("closing the repair read"))?;
        let mut committed = Vec::new();
        for file in finished {
            committed.push(self.publish(pool, fence, file, REPAIR_RECONNECT).await?);
        }
        Ok(RepairReport {
            run_id,
            removed,
            rows: committed.iter().map(|f| f.row_count).sum(),
            files: committed,
        })
    }

    /// Checks the lake against the manifest (`lake verify`; see [`super::verify`]).
    pub async fn verify(&self, pool: &PgPool) -> Result<Report, SinkError> {
        match self {
            LakeTarget::Iceberg(target) => super::verify::iceberg(pool, target).await,
            _ => super::verify::hive(pool, &self.lake()).await,
        }
    }

    /// The cheap part of [`LakeTarget::verify`] (`doctor`): how many files the lake should
    /// hold (the manifest's, in Iceberg the table's live data files and the read-events and
    /// read-progress files), those not in the lake with their recorded size (no file is
    /// opened), and in Iceberg mode the tables the catalog lost though files were committed to
    /// them.
    pub async fn presence(
        &self,
        pool: &PgPool,
    ) -> Result<(usize, Vec<Finding>, Vec<Table>), SinkError> {
        let mut tables = Vec::new();
        if let LakeTarget::Iceberg(target) = self {
            for kind in [Table::Snapshots, Table::Progress] {
                let lake = super::verify::iceberg_table(&target.lake, kind);
                let depth = super::verify::Depth::Presence;
                tables.push(super::verify::table_check_of(pool, &lake, kind, depth).await?);
            }
        }
        // In Iceberg mode only the read events are Hive-style files.
        let listed: Vec<_> = super::verify::listed(pool)
            .await?
            .into_iter()
            .filter(|(t, _)| tables.is_empty() || *t == Table::ReadEvents)
            .collect();
        let visible = super::verify::visible(&self.lake()).await?;
        let mut found = super::verify::presence(&visible, &listed);
        let mut count = listed.len();
        let mut dropped = Vec::new();
        for (kind, table) in [Table::Snapshots, Table::Progress].into_iter().zip(tables) {
            count += table.live;
            found.extend(table.findings);
            if table.dropped {
                dropped.push(kind);
            }
        }
        Ok((count, found, dropped))
    }

    /// What the lake lacks of the runs retention would remove from Postgres, one line each
    /// (empty: it holds them): `runs` with their snapshot rows in Postgres, `event_runs` whose
    /// read-events files must be there. Hive-style, each listed file of those runs must be in
    /// the lake with its recorded size; Iceberg, every live data file of the table must be
    /// there with its size (a lost one fails every reader) and the live files must hold each
    /// run's rows (counted per `run_id`: compaction may have replaced the files a run wrote).
    pub async fn lacks(
        &self,
        pool: &PgPool,
        runs: &std::collections::BTreeMap<i64, i64>,
        event_runs: &BTreeSet<i64>,
    ) -> Result<Vec<String>, SinkError> {
        let iceberg = self.iceberg();
        let listed: Vec<_> = super::verify::listed(pool)
            .await?
            .into_iter()
            .filter(|(t, f)| match t {
                Table::Snapshots => iceberg.is_none() && runs.contains_key(&f.run_id),
                Table::ReadEvents => event_runs.contains(&f.run_id),
                // Written from the change log, which retention keeps: never lacking for it.
                Table::Progress => false,
            })
            .collect();
        let visible = super::verify::visible(&self.lake()).await?;
        let mut lines: Vec<String> = super::verify::presence(&visible, &listed)
            .iter()
            .map(Finding::to_string)
            .collect();
        if let Some(target) = iceberg {
            let depth = super::verify::Depth::Rows;
            let table = super::verify::table_check(pool, &target.lake, depth).await?;
            lines.extend(table.findings.iter().map(Finding::to_string));
            for (&run_id, &pg_rows) in runs {
                let in_table = table.rows.get(&run_id).copied().unwrap_or(0);
                if in_table != pg_rows {
                    lines.push(format!(
                        "run {run_id}: {pg_rows} rows in Postgres, {in_table} in the Iceberg table's live files"
                    ));
                }
            }
        }
        Ok(lines)
    }

    /// Rewrites from Postgres what `report` found missing or damaged among the snapshot files,
    /// and deletes its stray uploads (`lake verify --repair`, under the warehouse lock): on the
    /// local disk each affected capture date whole, swapped in atomically; in an object store
    /// each damaged file under its own key. A capture date holding rows of a run retention
    /// removed from Postgres cannot be rebuilt: it is left as it is, and named.
    pub async fn repair_snapshots(
        &self,
        pool: &PgPool,
        report: &Report,
    ) -> Result<SnapshotRepair, SinkError> {
        if let LakeTarget::Iceberg(target) = self {
            return repair_table(pool, target, report).await;
        }
        let lake = self.lake();
        objects::delete(&lake, &report.stray_uploads).await?;
        let mut out = SnapshotRepair {
            uploads_removed: report.stray_uploads.len(),
            ..Default::default()
        };
        let snapshots = report
            .findings
            .iter()
            .filter(|f| f.table == Table::Snapshots);
        let days: BTreeSet<NaiveDate> = snapshots.clone().map(|f| f.file.capture_date).collect();
        for day in days {
            if let Some((_, runs)) = manifest::retired_days(pool, day, day).await?.pop() {
                out.gone.push((day, runs));
                continue;
            }
            let rows = match self {
                LakeTarget::HiveStore(remote) => {
                    let mut rows = 0;
                    for f in snapshots.clone().filter(|f| f.file.capture_date == day) {
                        rows += super::remote::rewrite_file(pool, remote, &f.file.path).await?;
                    }
                    rows
                }
                _ => {
                    let dir = lake.local_dir().expect("a local lake");
                    let rebuilt = super::rebuild::rebuild_dates(pool, dir, day, day).await?;
                    rebuilt.iter().map(|d| d.rows).sum()
                }
            };
            out.days.push((day, rows));
        }
        Ok(out)
    }

    /// Whether `export parquet` applies to this lake (refused in Iceberg mode, and `--relocate`
    /// in an object store): asked before the lake is claimed, so a refusal changes nothing.
    pub fn exportable(&self, relocate: bool) -> Result<(), SinkError> {
        match self {
            LakeTarget::Iceberg(_) => Err(SinkError::Config(
                "export parquet rewrites Hive-style Parquet days, and EXPORT_TABLE_FORMAT is iceberg: \
                 the Iceberg table is written by runs, each run's missing rows committed again from \
                 Postgres by the next run's repair; compact a day with Spark's rewrite_data_files \
                 (README, \"The Iceberg table\")"
                    .into(),
            )),
            LakeTarget::HiveStore(_) if relocate => Err(SinkError::Config(format!(
                "export parquet: --relocate moves a local lake's days to another directory; in an object store \
                 ({self}) each listed file is rewritten in place under its own key: drop --relocate"
            ))),
            _ => Ok(()),
        }
    }

    /// Writes the capture dates from `since` to `until` again from Postgres (`export parquet`,
    /// under the warehouse lock): on the local disk each day built aside and swapped in (into a
    /// directory holding none of the manifest's files only with `relocate`); in an object
    /// store each listed file under its own key. Refused where [`LakeTarget::exportable`] says.
    pub async fn export_days(
        &self,
        pool: &PgPool,
        (since, until): (NaiveDate, NaiveDate),
        relocate: bool,
    ) -> Result<Exported, SinkError> {
        self.exportable(relocate)?;
        match self {
            LakeTarget::Iceberg(_) => Err(SinkError::Config(
                "export parquet does not apply to the Iceberg table".into(),
            )),
            LakeTarget::HiveStore(remote) => Ok(Exported::InPlace(
                super::remote::rewrite_days(pool, remote, since, until).await?,
            )),
            LakeTarget::HiveLocal(dir) => {
                let (listed, missing) = local_presence(pool, dir).await?;
                if listed > 0 && missing == listed && !relocate {
                    return Err(SinkError::Config(format!(
                        "export parquet: {} holds none of the {listed} file(s) the manifest lists: if the warehouse's disk \
                         was lost or the warehouse moves there, add --relocate (the manifest then lists the rebuilt \
                         days' files there); otherwise set EXPORT_PARQUET_DIR to the warehouse's directory",
                        dir.display(),
                    )));
                }
                let days = super::rebuild::rebuild_dates(pool, dir, since, until).await?;
                let (_, elsewhere) = local_presence(pool, dir).await?;
                Ok(Exported::Swapped { days, elsewhere })
            }
        }
    }

    /// Deletes the run's files that no manifest row names (and, in an object store, first
    /// finishes or forgets its recorded uploads), in the partitions of its capture dates.
    /// Returns their paths relative to the lake. The caller holds the run's fence, so no writer
    /// of the run can record them any more.
    async fn sweep_run(&self, pool: &PgPool, fence: Fence) -> Result<Vec<String>, SinkError> {
        let run_id = fence.run_id;
        let mut known: HashSet<String> = manifest::run_paths(pool, run_id).await?;
        let dates = manifest::capture_dates(pool, run_id).await?;
        let dirs: Vec<String> = match self {
            LakeTarget::Iceberg(target) => dates.iter().map(|d| target.data_dir(*d)).collect(),
            LakeTarget::HiveLocal(_) => dates.iter().map(|d| partition_dir(*d)).collect(),
            LakeTarget::HiveStore(remote) => {
                super::remote::finish_uploads(pool, remote, fence).await?;
                let pending = manifest::pending_files(pool, run_id).await?;
                known.extend(pending.into_iter().map(|f| f.pending_key));
                let finals = dates.iter().map(|d| partition_dir(*d));
                let uploads = dates
                    .iter()
                    .map(|d| format!("{}/{}", super::remote::PENDING_DIR, partition_dir(*d)));
                finals.chain(uploads).collect()
            }
        };
        let lake = self.lake();
        let mut strays = Vec::new();
        for dir in dirs {
            for entry in objects::list(&lake, &dir).await? {
                let ours = names::parse(&entry.relative).filter(|n| n.run_id == run_id);
                let stray = match ours.map(|n| n.kind) {
                    Some(Kind::Temp { .. }) => true,
                    Some(Kind::Snapshot { .. } | Kind::Pending { .. } | Kind::Data { .. }) => {
                        !known.contains(&entry.relative)
                    }
                    Some(Kind::Events) | None => false,
                };
                if stray {
                    tracing::info!(path = %lake.describe(&entry.relative), "removed a stray file of run {run_id}");
                    strays.push(entry.relative);
                }
            }
        }
        if let LakeTarget::Iceberg(target) = self {
            // Files the dead writer recorded as about to be written, wherever they are.
            for location in super::iceberg::pending::of_run(pool, run_id).await? {
                let relative = target.lake.relative(&location);
                if !known.contains(&relative) && !strays.contains(&relative) {
                    tracing::info!(path = %lake.describe(&relative), "removed a stray file of run {run_id}");
                    strays.push(relative);
                }
            }
        }
        objects::delete(&lake, &strays).await?;
        if self.iceberg().is_some() {
            super::iceberg::pending::forget_run(pool, run_id).await?;
        }
        Ok(strays)
    }
}

/// How many files the manifest lists, and how many of them are not in `dir`. The manifest does
/// not say which directory its files are in: a rebuild into a directory that holds none of
/// them would silently move the rebuilt days there (a lost disk or a moving warehouse needs
/// that, and says so with `--relocate`).
async fn local_presence(pool: &PgPool, dir: &std::path::Path) -> Result<(usize, usize), SinkError> {
    let listed = manifest::listed_paths(pool).await?;
    let missing = listed.iter().filter(|p| !dir.join(p).is_file()).count();
    Ok((listed.len(), missing))
}

/// `lake verify --repair` in Iceberg: each lost live data file that is ours (the manifest
/// lists it) is replaced, in one overwrite commit ([`super::iceberg::overwrite`]), by its rows
/// written again from Postgres (the rows of exactly its batches), as the owner of its run (taken
/// over: a fenced writer can record nothing more). Files of runs retention removed from
/// Postgres, of runs still running and of other engines are left as they are, and named.
async fn repair_table(
    pool: &PgPool,
    target: &IcebergTarget,
    report: &Report,
) -> Result<SnapshotRepair, SinkError> {
    use super::iceberg::overwrite::{self, Replacement};
    let mut out = SnapshotRepair::default();
    let mut replaced = Vec::new();
    for (run_id, files) in lost_by_run(pool, report, &mut out).await? {
        if retired(pool, run_id).await? {
            let days: BTreeSet<NaiveDate> = files.iter().map(|(_, f)| f.capture_date).collect();
            out.gone
                .extend(days.into_iter().map(|day| (day, vec![run_id])));
            continue;
        }
        let Some(fence) = take_run(pool, run_id, &mut out).await? else {
            continue;
        };
        let added = rewrite_run(pool, target, fence, &files).await?;
        for (path, recorded) in &files {
            out.replaced
                .push((path.clone(), run_id, recorded.row_count as u64));
        }
        replaced.push(Replacement {
            fence,
            old_ids: files.iter().map(|(_, r)| r.file_id).collect(),
            lost: files.into_iter().map(|(path, _)| path).collect(),
            added,
        });
    }
    if replaced.is_empty() {
        return Ok(out);
    }
    if let Err(e) = overwrite::commit(pool, &target.lake, &replaced).await {
        // Nothing names the new data files: remove them now rather than leave them to
        // `iceberg maintain`.
        for file in replaced.iter().flat_map(|r| &r.added) {
            let location = file.data_file.file_path();
            if target.lake.file_io().delete(location).await.is_ok() {
                let _ = super::iceberg::pending::forget(pool, location).await;
            }
        }
        return Err(e);
    }
    Ok(out)
}

/// The lost snapshot files of `report` that the manifest lists, by run (with their manifest
/// rows); the others (another engine's) go to `out` as not repaired, with what to do.
async fn lost_by_run(
    pool: &PgPool,
    report: &Report,
    out: &mut SnapshotRepair,
) -> Result<std::collections::BTreeMap<i64, Vec<(String, manifest::RecordedFile)>>, SinkError> {
    let mut per_run: std::collections::BTreeMap<i64, Vec<_>> = Default::default();
    let lost = report
        .findings
        .iter()
        .filter(|f| f.table == Table::Snapshots);
    for f in lost {
        match manifest::recorded_file(pool, &f.file.path).await? {
            Some(recorded) => per_run
                .entry(recorded.run_id)
                .or_default()
                .push((f.file.path.clone(), recorded)),
            None => out.not_repaired.push(format!(
                "{}: written by another engine (no manifest row names it), so which of \
                 Postgres's rows it held is not known: restore it from a backup of the lake, or \
                 rewrite its partition with that engine",
                f.file.path
            )),
        }
    }
    Ok(per_run)
}

/// Takes the finished run over for the repair (`None`, noted in `out`: it is running, or its
/// ledger row is locked).
async fn take_run(
    pool: &PgPool,
    run_id: i64,
    out: &mut SnapshotRepair,
) -> Result<Option<Fence>, SinkError> {
    use super::fence::{self, TakeOver};
    let why = match fence::take_over(pool, run_id, "lake verify --repair").await? {
        TakeOver::Taken(fence) => return Ok(Some(fence)),
        TakeOver::Running => "it is still running; run `lake verify --repair` once it ended",
        TakeOver::Busy => "its ledger row is locked by another writer; try again",
    };
    out.not_repaired
        .push(format!("the lost files of run {run_id}: {why}"));
    Ok(None)
}

/// Writes the rows of exactly the lost files' batches again from Postgres into new data files
/// of the run (recorded as pending, not yet committed), after removing the files an earlier
/// repair of the run wrote and never committed (it died before its commit: nobody else may
/// commit them now, the run is ours).
async fn rewrite_run(
    pool: &PgPool,
    target: &IcebergTarget,
    fence: Fence,
    files: &[(String, manifest::RecordedFile)],
) -> Result<Vec<super::iceberg::writer::FinishedFile>, SinkError> {
    let run_id = fence.run_id;
    for location in super::iceberg::pending::of_run(pool, run_id).await? {
        let gone = target.lake.file_io().delete(&location).await;
        gone.map_err(SinkError::iceberg("removing an uncommitted data file"))?;
        super::iceberg::pending::forget(pool, &location).await?;
    }
    let next_part = manifest::next_part(pool, run_id).await?;
    let mut writer = target.run_writer(pool, fence, next_part)?;
    let mut added = Vec::new();
    for (_, recorded) in files {
        let mut cursor = pool
            .begin()
            .await
            .map_err(SinkError::pg("starting the repair read"))?;
        manifest::declare_file_rows(&mut cursor, recorded).await?;
        let mut batches = manifest::CursorBatches::default();
        while let Some(batch) = batches.next(&mut cursor).await? {
            added.extend(writer.append(&batch).await?);
        }
        cursor
            .rollback()
            .await
            .map_err(SinkError::pg("closing the repair read"))?;
    }
    added.extend(writer.finish().await?);
    Ok(added)
}

/// Whether retention removed the run's rows from Postgres (its files are all that is left).
async fn retired(pool: &PgPool, run_id: i64) -> Result<bool, SinkError> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM receipts.retired_runs WHERE run_id = $1)")
        .bind(run_id)
        .fetch_one(pool)
        .await
        .map_err(SinkError::pg("looking up a retired run"))
}

/// What [`LakeTarget::repair_snapshots`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotRepair {
    /// Iceberg: lost data files replaced from Postgres (path, run, rows).
    pub replaced: Vec<(String, i64, u64)>,
    /// Iceberg: lost data files left as they are, each with the reason and what to do.
    pub not_repaired: Vec<String>,
    /// Capture dates rewritten from Postgres, with their rows.
    pub days: Vec<(NaiveDate, u64)>,
    /// Capture dates that cannot be rebuilt: retention removed these runs' rows from Postgres.
    pub gone: Vec<(NaiveDate, Vec<i64>)>,
    /// Stray uploads deleted from `_pending/`.
    pub uploads_removed: usize,
}

/// What [`LakeTarget::export_days`] did.
#[derive(Debug)]
pub enum Exported {
    /// Local: each day swapped in; `elsewhere` counts the files of other days the manifest
    /// lists that are not in this directory.
    Swapped {
        days: Vec<super::rebuild::DayReport>,
        elsewhere: usize,
    },
    /// In an object store: per day, its files and rows, each file rewritten under its own key.
    InPlace(Vec<(NaiveDate, usize, u64)>),
}

impl std::fmt::Display for LakeTarget {
    /// The lake as users name it: a path or a URL (the table's in Iceberg mode).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LakeTarget::Iceberg(target) => write!(f, "{}", target.lake.table_location()),
            other => write!(f, "{}", other.lake()),
        }
    }
}

/// One run's files being written, in the target's form.
pub enum RunFiles {
    Hive(RunParquet),
    Iceberg(Box<RunIceberg>),
}

/// A finished file of a run, waiting for [`LakeTarget::publish`].
pub enum Finished {
    Hive(SealedFile),
    Iceberg(Box<FinishedFile>),
}

impl Finished {
    fn form(&self) -> &'static str {
        match self {
            Finished::Hive(_) => "Hive-style",
            Finished::Iceberg(_) => "Iceberg",
        }
    }
}

impl RunFiles {
    /// Appends the batch to its capture date's file; returns the files a roll finished.
    pub async fn append(&mut self, batch: &WriteBatch) -> Result<Vec<Finished>, SinkError> {
        Ok(match self {
            RunFiles::Hive(files) => wrap(files.append(batch).await?, Finished::Hive),
            RunFiles::Iceberg(files) => wrap(files.append(batch).await?, iceberg_file),
        })
    }

    /// Finishes every open file (each still needs publishing).
    pub async fn finish(self) -> Result<Vec<Finished>, SinkError> {
        Ok(match self {
            RunFiles::Hive(files) => wrap(files.finish().await?, Finished::Hive),
            RunFiles::Iceberg(files) => wrap(files.finish().await?, iceberg_file),
        })
    }

    /// Gives up: the open files are removed (a file a crash leaves is the repair's).
    pub async fn abort(self) -> Result<(), SinkError> {
        match self {
            RunFiles::Hive(files) => files.abort().await,
            RunFiles::Iceberg(files) => files.abort().await,
        }
    }
}

fn iceberg_file(file: FinishedFile) -> Finished {
    Finished::Iceberg(Box::new(file))
}

fn wrap<T>(files: Vec<T>, into: fn(T) -> Finished) -> Vec<Finished> {
    files.into_iter().map(into).collect()
}
