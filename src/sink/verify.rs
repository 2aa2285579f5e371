//! The lake checked against the manifest, in every form. Hive-style: every file
//! `parquet_files` and `read_event_files` list must be in the lake with its recorded size and,
//! in its footer, its recorded row count; visible files the manifest does not know are listed
//! (a reader would count their rows too), and so are uploads under `_pending/` that no manifest
//! row names (a writer killed or fenced before recording its file). One listing of each table,
//! on the local disk or in an object store alike ([`super::objects`]).
//!
//! Iceberg ([`iceberg()`], [`table_check`]): the table's truth is its current snapshot, not the
//! manifest's file names (another engine's compaction legitimately replaces the files a run
//! committed). Every live data file must be in the store with the size its metadata records
//! (and, fully checked, the row count in its footer), and the live files must hold each
//! finished run's rows as the manifest counts them: a file whose `run_id` statistics have one
//! value counts for that run without being opened, any other file has its `run_id` column
//! read. In Iceberg mode the read progress's change rows are the catalog's second table,
//! checked the same way ([`table_check_of`]; its rows per run are what its commits added), and a
//! table the catalog lost (dropped) while files were committed to it is reported. The
//! read-events files are Hive-style files in every form and are checked as above.
//! Reached through [`super::target::LakeTarget::verify`]; nothing here prints.

use super::iceberg::overwrite::{self, LiveFile};
use super::iceberg::IcebergLake;
use super::{manifest, objects, SinkError};
use crate::lake::Lake;
use chrono::NaiveDate;
use sqlx::PgPool;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// Which table of the lake a file belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Table {
    Snapshots,
    ReadEvents,
    /// The read-progress change rows (`message_read_progress/`).
    Progress,
}

impl Table {
    /// Its Hive-style directory under the lake's root.
    pub fn dir(self) -> &'static str {
        match self {
            Table::Snapshots => super::parquet::TABLE_DIR,
            Table::ReadEvents => super::names::EVENTS_DIR,
            Table::Progress => super::names::PROGRESS_DIR,
        }
    }

    /// Its Iceberg table in Iceberg mode, as the catalog names it (the read events have none:
    /// they are Hive-style files in every form).
    pub fn iceberg_name(self) -> &'static str {
        match self {
            Table::Snapshots => "receipts.receipt_snapshots",
            Table::ReadEvents => "(none: Hive-style files)",
            Table::Progress => "receipts.message_read_progress",
        }
    }

    /// The field id of `run_id` in its Iceberg table.
    fn run_id_field(self) -> i32 {
        match self {
            Table::Progress => super::iceberg::progress::RUN_ID_FIELD,
            _ => overwrite::RUN_ID_FIELD,
        }
    }
}

/// A file the manifest lists.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Listed {
    pub run_id: i64,
    pub capture_date: NaiveDate,
    /// Relative to the lake's root.
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

impl std::fmt::Display for Finding {
    /// `PATH: PROBLEM (snapshots of run N, listed with R rows and B bytes)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let table = match self.table {
            Table::Snapshots => "snapshots",
            Table::ReadEvents => "read events",
            Table::Progress => "read progress",
        };
        // Run 0: another engine's Iceberg data file whose statistics name no single run.
        let of = match self.file.run_id {
            0 => "of several runs".to_string(),
            run => format!("of run {run}"),
        };
        write!(
            f,
            "{}: {} ({table} {of}, listed with {} rows and {} bytes)",
            self.file.path, self.problem, self.file.row_count, self.file.byte_size
        )
    }
}

/// What a verification found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub listed: usize,
    pub findings: Vec<Finding>,
    /// Visible `.parquet` files under the lake's tables that the manifest does not list
    /// (relative paths), leaving out those of runs still running (a run renames its file into
    /// place just before recording it).
    pub unknown: Vec<String>,
    /// Uploads under `_pending/` that no manifest row names, of runs not running (a writer
    /// killed or fenced before recording its file). Readers never see them; `--repair` deletes
    /// them.
    pub stray_uploads: Vec<String>,
    /// Iceberg: finished runs whose rows in a table's live files differ from the manifest's
    /// count of them.
    pub runs: Vec<RunRows>,
    /// Iceberg: tables the catalog no longer lists though files were committed to them
    /// (dropped by another engine or by hand).
    pub dropped: Vec<Table>,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
            && self.unknown.is_empty()
            && self.stray_uploads.is_empty()
            && self.runs.is_empty()
            && self.dropped.is_empty()
    }
}

/// A run's rows as the manifest counts them and as the table's live files hold them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRows {
    /// The Iceberg table: the snapshots' or the read progress's.
    pub table: Table,
    pub run_id: i64,
    pub listed: i64,
    pub in_table: i64,
}

/// The lake's Hive-style tables, as directories (prefixes) under its root.
pub const TABLE_DIRS: [&str; 4] = [
    super::parquet::TABLE_DIR,
    super::names::EVENTS_DIR,
    super::names::PROGRESS_DIR,
    ICEBERG_PROGRESS_DIR,
];

/// The read progress's Iceberg table in Iceberg mode (`receipts.message_read_progress`), whose
/// data files its manifest rows list like the Hive-style ones. Its files are named by the
/// table's metadata: one no row lists (a crash before its commit) is invisible to readers and
/// never reported as unknown.
const ICEBERG_PROGRESS_DIR: &str = "receipts/message_read_progress";

/// Every file the manifest lists, both tables, in path order, but for the files that are not
/// [settled](manifest::SETTLED_FILE) (their run still copies them into place).
pub async fn listed(pool: &PgPool) -> Result<Vec<(Table, Listed)>, SinkError> {
    let snapshot_files: Vec<Listed> = sqlx::query_as(&format!(
        "SELECT run_id, capture_date, path, row_count, byte_size FROM receipts.parquet_files p
         WHERE {} ORDER BY path",
        manifest::SETTLED_FILE
    ))
    .fetch_all(pool)
    .await
    .map_err(SinkError::pg("listing the manifest's files"))?;
    let event_files: Vec<Listed> = sqlx::query_as(
        "SELECT run_id, capture_date, path, row_count, byte_size FROM receipts.read_event_files ORDER BY path",
    )
    .fetch_all(pool)
    .await
    .map_err(SinkError::pg("listing the read-events files"))?;
    let progress_files: Vec<Listed> = sqlx::query_as(
        "SELECT run_id, capture_date, path, row_count, byte_size
         FROM receipts.message_read_progress_files WHERE path IS NOT NULL ORDER BY path",
    )
    .fetch_all(pool)
    .await
    .map_err(SinkError::pg("listing the read-progress files"))?;
    Ok(snapshot_files
        .into_iter()
        .map(|f| (Table::Snapshots, f))
        .chain(event_files.into_iter().map(|f| (Table::ReadEvents, f)))
        .chain(progress_files.into_iter().map(|f| (Table::Progress, f)))
        .collect())
}

/// The visible files of the lake's Hive-style tables (no segment starting with `.` or `_`,
/// ending in `.parquet`: what engines read), with their sizes: one listing per table.
pub async fn visible(lake: &Lake) -> Result<BTreeMap<String, u64>, SinkError> {
    let mut out = BTreeMap::new();
    for table in TABLE_DIRS {
        for entry in objects::list(lake, table).await? {
            if entry.is_visible() && entry.relative.ends_with(".parquet") {
                out.insert(entry.relative, entry.size);
            }
        }
    }
    Ok(out)
}

/// The cheap check: every listed file is among `visible` with its recorded size (no file is
/// opened).
pub fn presence(visible: &BTreeMap<String, u64>, listed: &[(Table, Listed)]) -> Vec<Finding> {
    listed
        .iter()
        .filter_map(|(table, file)| {
            let problem = match visible.get(&file.path) {
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
        .collect()
}

/// The whole check of a Hive-style lake: presence and size, the row count in each footer, the
/// unknown files and the stray uploads.
pub async fn hive(pool: &PgPool, lake: &Lake) -> Result<Report, SinkError> {
    let tables = [Table::Snapshots, Table::ReadEvents, Table::Progress];
    hive_tables(pool, lake, &tables).await
}

/// [`hive`] over some of the Hive-style tables (the stray uploads belong to the snapshots').
async fn hive_tables(pool: &PgPool, lake: &Lake, tables: &[Table]) -> Result<Report, SinkError> {
    let listed: Vec<(Table, Listed)> = listed(pool)
        .await?
        .into_iter()
        .filter(|(t, _)| tables.contains(t))
        .collect();
    let visible: BTreeMap<String, u64> = visible(lake)
        .await?
        .into_iter()
        .filter(|(path, _)| {
            tables.iter().any(|t| {
                path.starts_with(&format!("{}/", t.dir()))
                    || (*t == Table::Progress
                        && path.starts_with(&format!("{ICEBERG_PROGRESS_DIR}/")))
            })
        })
        .collect();
    let mut findings = presence(&visible, &listed);
    let bad: HashSet<String> = findings.iter().map(|f| f.file.path.clone()).collect();
    for (table, file) in listed.iter().filter(|(_, f)| !bad.contains(&f.path)) {
        let rows = objects::parquet_rows(lake, &file.path, file.byte_size as u64).await;
        let problem = match rows {
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
    let unknown = unknown_files(pool, visible.into_keys().collect()).await?;
    let stray_uploads = match tables.contains(&Table::Snapshots) {
        true => stray_uploads(pool, lake).await?,
        false => Vec::new(),
    };
    Ok(Report {
        listed: listed.len(),
        findings,
        unknown,
        stray_uploads,
        runs: Vec::new(),
        dropped: Vec::new(),
    })
}

/// The Iceberg form's whole check, of both tables of the catalog (the snapshots' and the read
/// progress's): their live files (there, with their size and the row count in their footer),
/// each finished run's rows in them against the manifest, a table dropped
/// from the catalog; and the read-events files as in Hive-style lakes.
pub async fn iceberg(
    pool: &PgPool,
    target: &super::iceberg::IcebergTarget,
) -> Result<Report, SinkError> {
    let mut report = hive_tables(pool, target.lake.lake(), &[Table::ReadEvents]).await?;
    for table in [Table::Snapshots, Table::Progress] {
        let lake = iceberg_table(&target.lake, table);
        let check = table_check_of(pool, &lake, table, Depth::Full).await?;
        report.listed += check.live;
        report.findings.extend(check.findings);
        report.runs.extend(check.runs);
        if check.dropped {
            report.dropped.push(table);
        }
    }
    report
        .findings
        .sort_by(|a, b| a.file.path.cmp(&b.file.path));
    Ok(report)
}

/// The catalog's table of `table` in the Iceberg lake `lake` (the snapshots' or the read
/// progress's).
pub fn iceberg_table(lake: &IcebergLake, table: Table) -> IcebergLake {
    match table {
        Table::Progress => lake.with_table(super::iceberg::progress::TABLE),
        _ => lake.clone(),
    }
}

/// How far [`table_check`] looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Depth {
    /// Every live file there with its recorded size; nothing is opened (`doctor`).
    Presence,
    /// And the rows each run has in the live files (retention).
    Rows,
    /// And the row count in every footer (`lake verify`).
    Full,
}

/// What [`table_check`] found.
#[derive(Debug, Clone, Default)]
pub struct TableCheck {
    /// The live data files of the current snapshot.
    pub live: usize,
    /// Live files missing, of another size, or (fully checked) with a bad footer.
    pub findings: Vec<Finding>,
    /// Rows per run in the live files found whole (not with [`Depth::Presence`]).
    pub rows: BTreeMap<i64, i64>,
    /// Finished runs whose rows in the table differ from the manifest's count (not with
    /// [`Depth::Presence`]).
    pub runs: Vec<RunRows>,
    /// The catalog does not list the table, though the manifest records files committed to it.
    pub dropped: bool,
}

/// Checks the Iceberg table's current snapshot against the store and the manifest (see the
/// module header). The manifest is read before the table: a run still running then is left
/// out of the comparison (it may commit meanwhile), and one that was not running commits
/// nothing more (its repair takes the warehouse lock the callers hold).
pub async fn table_check(
    pool: &PgPool,
    lake: &IcebergLake,
    depth: Depth,
) -> Result<TableCheck, SinkError> {
    table_check_of(pool, lake, Table::Snapshots, depth).await
}

/// [`table_check`] of either Iceberg table of the catalog: `lake` opened on it
/// ([`iceberg_table`]). The snapshots' rows per run are the manifest's (`parquet_files`); the
/// read progress's are the rows its commits added (`message_read_progress_files`).
pub async fn table_check_of(
    pool: &PgPool,
    lake: &IcebergLake,
    kind: Table,
    depth: Depth,
) -> Result<TableCheck, SinkError> {
    let table_dir = lake.relative(&lake.table_location());
    let running = running_runs(pool).await?;
    let recorded = recorded_in_table(pool, kind, &table_dir).await?;
    let mut conn = pool
        .acquire()
        .await
        .map_err(SinkError::pg("opening the Iceberg catalog"))?;
    let table = lake.load(&mut conn, false).await?;
    drop(conn);
    let live = match &table {
        Some(table) => overwrite::live_files(lake, table).await?,
        None => Vec::new(),
    };
    let sizes: BTreeMap<String, u64> = objects::list(lake.lake(), &format!("{table_dir}/data"))
        .await?
        .into_iter()
        .map(|e| (e.relative, e.size))
        .collect();
    let mut out = TableCheck {
        live: live.len(),
        dropped: table.is_none() && !recorded.is_empty(),
        ..Default::default()
    };
    let field = kind.run_id_field();
    for file in &live {
        if let Some(problem) = judge(lake.lake(), file, &sizes, depth, field, &mut out.rows).await {
            let listed = recorded.get(&file.relative).map(|r| (r.0, r.1));
            out.findings
                .push(live_finding(kind, file, listed.as_ref(), problem));
        }
    }
    if depth > Depth::Presence {
        let expected = expected_rows(pool, kind, &recorded).await?;
        let runs: BTreeSet<i64> = expected.keys().chain(out.rows.keys()).copied().collect();
        out.runs = runs
            .into_iter()
            .filter(|run| !running.contains(run))
            .map(|run_id| RunRows {
                table: kind,
                run_id,
                listed: expected.get(&run_id).copied().unwrap_or(0),
                in_table: out.rows.get(&run_id).copied().unwrap_or(0),
            })
            .filter(|r| r.listed != r.in_table)
            .collect();
    }
    Ok(out)
}

/// The manifest's files in the table, by path: their run, capture date and row count.
async fn recorded_in_table(
    pool: &PgPool,
    kind: Table,
    table_dir: &str,
) -> Result<HashMap<String, (i64, NaiveDate, i64)>, SinkError> {
    let sql = match kind {
        Table::Progress => {
            "SELECT path, run_id, capture_date, coalesce(row_count, 0)
             FROM receipts.message_read_progress_files
             WHERE path IS NOT NULL AND starts_with(path, $1)"
        }
        _ => {
            "SELECT path, run_id, capture_date, row_count FROM receipts.parquet_files
             WHERE starts_with(path, $1)"
        }
    };
    let rows: Vec<(String, i64, NaiveDate, i64)> = sqlx::query_as(sql)
        .bind(format!("{table_dir}/"))
        .fetch_all(pool)
        .await
        .map_err(SinkError::pg("reading the manifest"))?;
    Ok(rows
        .into_iter()
        .map(|(path, run, day, count)| (path, (run, day, count)))
        .collect())
}

/// The rows each run should have in the table: the snapshots' as the manifest counts them; the
/// read progress's as its commits added them (`committed_rows`, summed over a resumed run's
/// commits too, whose manifest row records only the newest file).
async fn expected_rows(
    pool: &PgPool,
    kind: Table,
    recorded: &HashMap<String, (i64, NaiveDate, i64)>,
) -> Result<BTreeMap<i64, i64>, SinkError> {
    if kind != Table::Progress {
        let mut expected: BTreeMap<i64, i64> = BTreeMap::new();
        for &(run, _, rows) in recorded.values() {
            *expected.entry(run).or_default() += rows;
        }
        return Ok(expected);
    }
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT run_id, sum(committed_rows)::bigint FROM receipts.message_read_progress_files
         WHERE committed_rows IS NOT NULL GROUP BY 1",
    )
    .fetch_all(pool)
    .await
    .map_err(SinkError::pg(
        "counting the read progress's committed change rows",
    ))?;
    Ok(rows.into_iter().collect())
}

/// What is wrong with a live file, as far as `depth` looks (its rows added to their runs in
/// `rows` when it is whole and the depth counts them).
async fn judge(
    lake: &Lake,
    file: &LiveFile,
    sizes: &BTreeMap<String, u64>,
    depth: Depth,
    run_id_field: i32,
    rows: &mut BTreeMap<i64, i64>,
) -> Option<Problem> {
    let size = file.data_file().file_size_in_bytes();
    let problem = match sizes.get(&file.relative) {
        None => Some(Problem::Missing),
        Some(&on_disk) if on_disk != size => Some(Problem::WrongSize { on_disk }),
        Some(_) if depth == Depth::Full => footer_problem(lake, file).await,
        Some(_) => None,
    };
    match (problem, depth) {
        (Some(problem), _) => Some(problem),
        (None, Depth::Presence) => None,
        (None, _) => count_rows(lake, file, run_id_field, rows).await.err(),
    }
}

/// A live file's footer against the row count its metadata records.
async fn footer_problem(lake: &Lake, file: &LiveFile) -> Option<Problem> {
    let size = file.data_file().file_size_in_bytes();
    match objects::parquet_rows(lake, &file.relative, size).await {
        Err(e) => Some(Problem::Unreadable(e)),
        Ok(rows) if rows as u64 != file.data_file().record_count() => {
            Some(Problem::WrongRows { in_footer: rows })
        }
        Ok(_) => None,
    }
}

/// Adds the file's rows to their runs: by its statistics when they name one run, else by
/// reading its `run_id` column.
async fn count_rows(
    lake: &Lake,
    file: &LiveFile,
    run_id_field: i32,
    rows: &mut BTreeMap<i64, i64>,
) -> Result<(), Problem> {
    let records = file.data_file().record_count() as i64;
    if let Some(run) = file.single_run_in(run_id_field) {
        *rows.entry(run).or_default() += records;
        return Ok(());
    }
    let size = file.data_file().file_size_in_bytes();
    let counted = run_counts(lake, &file.relative, size)
        .await
        .map_err(Problem::Unreadable)?;
    for (run, n) in counted {
        *rows.entry(run).or_default() += n;
    }
    Ok(())
}

/// A finding about a live file: our own file as the manifest lists it, another engine's as its
/// metadata describes it (its run when its statistics name one, else 0).
fn live_finding(
    kind: Table,
    file: &LiveFile,
    recorded: Option<&(i64, NaiveDate)>,
    problem: Problem,
) -> Finding {
    let (run_id, capture_date) = match recorded {
        Some(&(run, day)) => (run, day),
        None => (
            file.single_run_in(kind.run_id_field()).unwrap_or(0),
            file.capture_date().unwrap_or_default(),
        ),
    };
    let data = file.data_file();
    Finding {
        table: kind,
        file: Listed {
            run_id,
            capture_date,
            path: file.relative.clone(),
            row_count: data.record_count() as i64,
            byte_size: data.file_size_in_bytes() as i64,
        },
        problem,
    }
}

/// The rows per `run_id` of a Parquet file in the lake (its `run_id` column read, nothing else).
pub async fn run_counts(
    lake: &Lake,
    relative: &str,
    size: u64,
) -> Result<BTreeMap<i64, i64>, String> {
    use arrow::array::{Array, Int64Array};
    use parquet::arrow::ProjectionMask;
    let mut counts = BTreeMap::new();
    let mut add = |batch: arrow::record_batch::RecordBatch| -> Result<(), String> {
        let column = batch
            .column_by_name("run_id")
            .and_then(|c| c.as_any().downcast_ref::<Int64Array>().cloned())
            .ok_or("no int64 column run_id")?;
        for run in column.iter().flatten() {
            *counts.entry(run).or_insert(0) += 1;
        }
        Ok(())
    };
    match lake {
        Lake::Local(root) => {
            let file = std::fs::File::open(root.join(relative)).map_err(|e| e.to_string())?;
            let builder =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                    .map_err(|e| e.to_string())?;
            let mask = ProjectionMask::columns(builder.parquet_schema(), ["run_id"]);
            let reader = builder
                .with_projection(mask)
                .build()
                .map_err(|e| e.to_string())?;
            for batch in reader {
                add(batch.map_err(|e| e.to_string())?)?;
            }
        }
        Lake::Remote(remote) => {
            use futures::TryStreamExt;
            let reader = parquet::arrow::async_reader::ParquetObjectReader::new(
                remote.store().clone(),
                remote.key(relative),
            )
            .with_file_size(size);
            let builder = parquet::arrow::ParquetRecordBatchStreamBuilder::new(reader)
                .await
                .map_err(|e| e.to_string())?;
            let mask = ProjectionMask::columns(builder.parquet_schema(), ["run_id"]);
            let mut stream = builder
                .with_projection(mask)
                .build()
                .map_err(|e| e.to_string())?;
            while let Some(batch) = stream.try_next().await.map_err(|e| e.to_string())? {
                add(batch)?;
            }
        }
    }
    Ok(counts)
}

/// The visible files the manifest does not list, leaving out those of runs still running. The
/// manifest and the running runs are read after the listing `visible`: a file is recorded before
/// (object store) or while (local) it becomes visible, and its run runs until then, so a run
/// that finished between an earlier read of the manifest and the listing is not reported.
async fn unknown_files(pool: &PgPool, visible: Vec<String>) -> Result<Vec<String>, SinkError> {
    let running = running_runs(pool).await?;
    let known: HashSet<String> = sqlx::query_scalar(
        "SELECT path FROM receipts.parquet_files UNION ALL SELECT path FROM receipts.read_event_files
         UNION ALL SELECT path FROM receipts.message_read_progress_files WHERE path IS NOT NULL",
    )
    .fetch_all(pool)
    .await
    .map_err(SinkError::pg("reading the manifest"))?
    .into_iter()
    .collect();
    let mut unknown: Vec<String> = visible
        .into_iter()
        .filter(|path| !path.starts_with(&format!("{ICEBERG_PROGRESS_DIR}/")))
        .filter(|path| !known.contains(path) && !of_running_run(path, &running))
        .collect();
    unknown.sort();
    Ok(unknown)
}

/// The objects under `_pending/` that no manifest row names, leaving out runs still running.
/// The listing comes first, the manifest and the running runs after it (a run is running while
/// it uploads).
async fn stray_uploads(pool: &PgPool, lake: &Lake) -> Result<Vec<String>, SinkError> {
    let uploads = objects::list(lake, super::remote::PENDING_DIR).await?;
    let recorded: HashSet<String> = sqlx::query_scalar(
        "SELECT pending_key FROM receipts.parquet_files WHERE pending_key IS NOT NULL",
    )
    .fetch_all(pool)
    .await
    .map_err(SinkError::pg("reading the manifest's uploads"))?
    .into_iter()
    .collect();
    let running = running_runs(pool).await?;
    let mut strays: Vec<String> = uploads
        .into_iter()
        .map(|e| e.relative)
        .filter(|key| !recorded.contains(key) && !of_running_run(key, &running))
        .collect();
    // An upload its run deleted meanwhile (its copy done) is not a stray.
    strays = objects::still_there(lake, strays).await?;
    Ok(strays)
}

fn of_running_run(path: &str, running: &HashSet<i64>) -> bool {
    super::names::parse(path).is_some_and(|n| running.contains(&n.run_id))
}

async fn running_runs(pool: &PgPool) -> Result<HashSet<i64>, SinkError> {
    let runs: Vec<i64> =
        sqlx::query_scalar("SELECT run_id FROM receipts.export_runs WHERE status = 'running'")
            .fetch_all(pool)
            .await
            .map_err(SinkError::pg("listing the running runs"))?;
    Ok(runs.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_finds_missing_and_resized_files_and_passes_the_rest() {
        let visible: BTreeMap<String, u64> =
            [("a.parquet".to_string(), 5), ("b.parquet".to_string(), 3)].into();
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
        let found = presence(
            &visible,
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
