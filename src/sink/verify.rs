//! The lake checked against the manifest, in its Hive-style forms: every file `parquet_files`
//! and `read_event_files` list must be in the lake with its recorded size and, in its footer,
//! its recorded row count; visible files the manifest does not know are listed (a reader would
//! count their rows too), and so are uploads under `_pending/` that no manifest row names (a
//! writer killed or fenced before recording its file). One listing of each table, on the local
//! disk or in an object store alike ([`super::objects`]). The Iceberg form's check is
//! [`iceberg()`]. Reached through [`super::target::LakeTarget::verify`]; nothing here prints.

use super::{manifest, objects, SinkError};
use crate::lake::Lake;
use chrono::NaiveDate;
use sqlx::PgPool;
use std::collections::{BTreeMap, HashSet};

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
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty() && self.unknown.is_empty() && self.stray_uploads.is_empty()
    }
}

/// The lake's Hive-style tables, as directories (prefixes) under its root.
pub const TABLE_DIRS: [&str; 2] = [super::parquet::TABLE_DIR, super::names::EVENTS_DIR];

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
    Ok(snapshot_files
        .into_iter()
        .map(|f| (Table::Snapshots, f))
        .chain(event_files.into_iter().map(|f| (Table::ReadEvents, f)))
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
    let listed = listed(pool).await?;
    let visible = visible(lake).await?;
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
    Ok(Report {
        listed: listed.len(),
        findings,
        unknown,
        stray_uploads: stray_uploads(pool, lake).await?,
    })
}

/// The Iceberg form's check: not written yet (issue 23, part B fills it in). Until then it is
/// refused, saying what covers the table meanwhile.
pub async fn iceberg(
    _pool: &PgPool,
    _target: &super::iceberg::IcebergTarget,
) -> Result<Report, SinkError> {
    Err(SinkError::Config(
        "lake verify checks Hive-style Parquet directories, and EXPORT_TABLE_FORMAT is iceberg: \
         the table's files are named by its metadata; `receipt-exporter iceberg maintain \
         --dry-run` lists the files no metadata names, and each run repairs its own missing \
         rows from Postgres"
            .into(),
    ))
}

/// The visible files the manifest does not list, leaving out those of runs still running. The
/// manifest and the running runs are read after the listing `visible`: a file is recorded before
/// (object store) or while (local) it becomes visible, and its run runs until then, so a run
/// that finished between an earlier read of the manifest and the listing is not reported.
async fn unknown_files(pool: &PgPool, visible: Vec<String>) -> Result<Vec<String>, SinkError> {
    let running = running_runs(pool).await?;
    let known: HashSet<String> = sqlx::query_scalar(
        "SELECT path FROM receipts.parquet_files UNION ALL SELECT path FROM receipts.read_event_files",
    )
    .fetch_all(pool)
    .await
    .map_err(SinkError::pg("reading the manifest"))?
    .into_iter()
    .collect();
    let mut unknown: Vec<String> = visible
        .into_iter()
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
