//! Issue 23, the writer's side: hands outside the exporter touching an Iceberg table while a run
//! writes to it. `iceberg maintain` beside a run that holds an open data file never takes it;
//! a data file removed before its commit is never committed (and the next run's repair writes
//! its rows again); another engine's schema or partition-spec change is refused (exit 2),
//! naming the change, before and during a run, and nothing of the refused run reaches the table.

use crate::helpers::*;
use crate::iceberg::{data_files, iceberg_rows, iceberg_run};
use crate::lakes::{Form, TestLake};
use receipt_exporter::crashpoint::{PAUSE_ENV, PAUSE_FILE_ENV};
use std::path::Path;
use std::time::Duration;

/// pyiceberg changes the table as another engine would: `add_column`, `drop_column`,
/// `add_bucket`.
const CHANGE: &str = r#"
import sys
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.types import StringType
from pyiceberg.transforms import BucketTransform
cat = SqlCatalog("receipt_exporter", uri=sys.argv[1], init_catalog_tables="false")
t = cat.load_table("receipts.receipt_snapshots")
what = sys.argv[2]
if what == "add_column":
    with t.update_schema() as u:
        u.add_column("note", StringType())
elif what == "drop_column":
    with t.update_schema() as u:
        u.delete_column("note")
elif what == "add_bucket":
    with t.update_spec() as u:
        u.add_field("group_id", BucketTransform(4), "group_bucket")
"#;

fn change(db: &TestDb, what: &str) {
    let out = crate::tools::run_python(CHANGE, &[&crate::iceberg::sqlalchemy_url(db), what]);
    assert!(out.status.success(), "pyiceberg {what}: {}", stderr(&out));
}

/// A run of `db` into `dir` (Iceberg), paused at `point` (waiting until it stands there).
async fn paused_at(
    db: &TestDb,
    sim: &receipt_exporter::sim::Simulator,
    dir: &Path,
    point: &str,
    pause: &Path,
) -> std::process::Child {
    spawn_paused(&mut iceberg_run(db, sim, dir), point, pause).await
}

/// Starts `cmd` armed to pause at `point`, and waits until it stands there.
async fn spawn_paused(
    cmd: &mut std::process::Command,
    point: &str,
    pause: &Path,
) -> std::process::Child {
    let child = cmd
        .env(PAUSE_ENV, point)
        .env(PAUSE_FILE_ENV, pause)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_file(pause, Duration::from_secs(60)).await;
    child
}

/// A run stands with its data file open (written to, not closed: 0 bytes on a local disk until
/// then); `iceberg maintain --orphan-min-age 1s` two seconds later leaves it, saying so; the run
/// then commits it, and the table holds exactly Postgres's rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintain_beside_a_long_run_never_takes_its_open_file() {
    let db = TestDb::new().await;
    let sim = simulator(2, 20, |_| {});
    let dir = tempfile::tempdir().unwrap();
    track_all(&db, &group_ids(&sim), 20).await;
    let first = run(&mut iceberg_run(&db, &sim, dir.path()));
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let committed = data_files(dir.path());

    let pauses = tempfile::tempdir().unwrap();
    let pause = pauses.path().join("open");
    let child = paused_at(&db, &sim, dir.path(), "parquet_write:1", &pause).await;
    let open: Vec<_> = data_files(dir.path())
        .into_iter()
        .filter(|f| !committed.contains(f))
        .collect();
    assert_eq!(open.len(), 1, "the run holds one open data file: {open:?}");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let maintain = run(exporter_for(&db, &sim.base_url(), dir.path())
        .env("EXPORT_TABLE_FORMAT", "iceberg")
        .args(["iceberg", "maintain", "--orphan-min-age", "1s"]));
    assert_eq!(maintain.status.code(), Some(0), "{}", stderr(&maintain));
    assert!(
        stdout(&maintain).contains("1 file(s) of runs still writing left"),
        "{}",
        stdout(&maintain)
    );
    assert!(open[0].exists(), "maintain left the run's open file");

    std::fs::remove_file(&pause).unwrap();
    let out = finish(child);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(iceberg_rows(&db), pg_snapshots(&db).await, "every row once");
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM receipts.iceberg_pending_files")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "a committed file is no longer pending");
}

/// Another engine adds a column, then a partition field: each run is refused before it pulls
/// (exit 2), naming the change and how to undo it, and writes nothing; a column added while a
/// run writes makes its commit refuse (exit 2), its rows stay in Postgres, the ledger says so;
/// once the column is dropped again the next run commits every row exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_engines_schema_or_spec_change_is_refused_by_name() {
    let db = TestDb::new().await;
    let sim = simulator(1, 20, |_| {});
    let dir = tempfile::tempdir().unwrap();
    track_all(&db, &group_ids(&sim), 20).await;
    let first = run(&mut iceberg_run(&db, &sim, dir.path()));
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let files = data_files(dir.path()).len();

    change(&db, "add_column");
    let out = run(&mut iceberg_run(&db, &sim, dir.path()));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        text.contains("changed by another engine")
            && text.contains("adds field 8 `note` (string)")
            && text.contains("DROP COLUMN note"),
        "{text}"
    );
    assert!(!text.contains("panicked"), "{text}");
    assert_eq!(data_files(dir.path()).len(), files, "nothing written");
    change(&db, "drop_column");

    change(&db, "add_bucket");
    let out = run(&mut iceberg_run(&db, &sim, dir.path()));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        text.contains("partition spec is [captured_at_day=day(captured_at), group_bucket=bucket[4](group_id)]")
            && text.contains("DROP PARTITION FIELD group_bucket"),
        "{text}"
    );
    assert!(!text.contains("panicked"), "{text}");
    assert_eq!(data_files(dir.path()).len(), files, "nothing written");
}

/// The same change made while a run stands with its data file written: the commit refuses
/// (exit 2), nothing of the run enters the table, and the ledger counts the receipts it kept
/// in Postgres; after the change is undone, the next run commits them, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_change_during_a_run_stops_its_commit() {
    let db = TestDb::new().await;
    let sim = simulator(1, 20, |_| {});
    let dir = tempfile::tempdir().unwrap();
    track_all(&db, &group_ids(&sim), 20).await;
    let first = run(&mut iceberg_run(&db, &sim, dir.path()));
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let before = iceberg_rows(&db);
    sim.advance(1); // new counts: the second run has rows to write

    let pauses = tempfile::tempdir().unwrap();
    let pause = pauses.path().join("before-commit");
    let child = paused_at(&db, &sim, dir.path(), "iceberg_before_commit:1", &pause).await;
    change(&db, "add_column");
    std::fs::remove_file(&pause).unwrap();
    let out = finish(child);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(text.contains("adds field 8 `note`"), "{text}");
    assert!(!text.contains("panicked"), "{text}");
    let (status, receipts, _, _) = run_row(&db, 2).await;
    let in_pg = rows_of(&pg_snapshots(&db).await, 2).len() as i64;
    assert!(in_pg > 0);
    assert_eq!(status, "failed");
    assert_eq!(
        receipts, in_pg,
        "the ledger counts the receipts kept in Postgres"
    );

    change(&db, "drop_column");
    let again = run(&mut iceberg_run(&db, &sim, dir.path()));
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    let rows = iceberg_rows(&db);
    assert!(rows.len() > before.len());
    assert_eq!(rows, pg_snapshots(&db).await, "every row exactly once");
}

/// The data files of the table in `lake`, relative to the lake.
async fn table_data(lake: &TestLake) -> std::collections::BTreeSet<String> {
    lake.files()
        .await
        .into_iter()
        .filter(|f| f.starts_with("receipts/receipt_snapshots/data/"))
        .collect()
}

/// A run of one group of 20 seqs into a lake of `form`, standing with its data file written
/// and not committed.
struct Standing {
    lake: TestLake,
    sim: receipt_exporter::sim::Simulator,
    db: TestDb,
    pauses: tempfile::TempDir,
    pause: std::path::PathBuf,
    child: std::process::Child,
}

async fn standing(form: Form) -> Standing {
    let lake = TestLake::new(form);
    let sim = simulator(1, 20, |_| {});
    let db = TestDb::new().await;
    track_all(&db, &group_ids(&sim), 20).await;
    let pauses = tempfile::tempdir().unwrap();
    let pause = pauses.path().join("before-commit");
    let mut cmd = lake.exporter(&db, &sim);
    let child = spawn_paused(cmd.arg("run"), "iceberg_before_commit:1", &pause).await;
    Standing {
        lake,
        sim,
        db,
        pauses,
        pause,
        child,
    }
}

/// In both Iceberg forms (local disk, S3): a run stands with its data file written and not
/// committed, older than `--orphan-min-age`; `iceberg maintain` leaves it and says so; the run
/// commits it; the lake holds exactly Postgres's rows.
async fn maintain_leaves_a_standing_runs_file(form: Form) {
    let Standing {
        lake,
        sim: _sim,
        db,
        pauses: _pauses,
        pause,
        child,
    } = standing(form).await;
    let written = table_data(&lake).await;
    assert_eq!(written.len(), 1, "{written:?}");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let out = run(lake
        .command(&db)
        .args(["iceberg", "maintain", "--orphan-min-age", "1s"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("0 orphan file(s) removed")
            && stdout(&out).contains("1 file(s) of runs still writing left"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        table_data(&lake).await,
        written,
        "the run's file is still there"
    );
    std::fs::remove_file(&pause).unwrap();
    let out = finish(child);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    lake.assert_complete(&db).await;
}

/// In both Iceberg forms: the run's data file removed before its commit; the commit refuses
/// (exit 1, naming the file), the table stays readable and empty, the next run's repair writes
/// the rows again; the lake then holds exactly Postgres's rows.
async fn a_file_removed_before_its_commit_is_written_again(form: Form) {
    let Standing {
        lake,
        sim,
        db,
        pauses: _pauses,
        pause,
        child,
    } = standing(form).await;
    let [file] =
        <[_; 1]>::try_from(table_data(&lake).await.into_iter().collect::<Vec<_>>()).unwrap();
    lake.remove(&file).await;
    std::fs::remove_file(&pause).unwrap();
    let out = finish(child);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let name = file.rsplit('/').next().unwrap();
    assert!(
        stdout(&out).contains(name) && stdout(&out).contains("is gone"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(lake.rows(&db).is_empty(), "nothing was committed");
    let out = run(lake.exporter(&db, &sim).arg("run"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    lake.assert_complete(&db).await;
}

macro_rules! in_forms {
    ($($name:ident: $check:ident($form:ident);)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            $check(Form::$form).await;
        }
    )*};
}

in_forms! {
    maintain_leaves_a_standing_runs_file_local: maintain_leaves_a_standing_runs_file(IcebergLocal);
    maintain_leaves_a_standing_runs_file_s3: maintain_leaves_a_standing_runs_file(IcebergS3);
    a_file_removed_before_its_commit_is_written_again_local: a_file_removed_before_its_commit_is_written_again(IcebergLocal);
    a_file_removed_before_its_commit_is_written_again_s3: a_file_removed_before_its_commit_is_written_again(IcebergS3);
}

/// A proxy in front of the S3 server that forwards every request but never answers one whose
/// request line contains `hang` (the connection stays open, silent): a store that hangs on
/// some objects only. Returns its endpoint.
async fn hanging_proxy(upstream: &str, hang: &'static str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = upstream.trim_start_matches("http://").to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            let upstream = upstream.clone();
            tokio::spawn(async move {
                // Read up to the end of the request line, then decide.
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n") {
                    match client.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                if String::from_utf8_lossy(&head).contains(hang) {
                    tokio::time::sleep(Duration::from_secs(600)).await;
                    return;
                }
                let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                if server.write_all(&head).await.is_err() {
                    return;
                }
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    endpoint
}

/// `EXPORT_LAKE_TIMEOUT` holds in Iceberg mode: a store that never answers reads of the
/// table's metadata files (the marker and every other request go through) fails the run after
/// about the bound (5 s here, where iceberg-rust's storage alone retried for ~50 s), with one
/// line saying the lake did not answer within it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lake_timeout_bounds_the_iceberg_tables_storage() {
    let s3 = crate::s3::S3Server::start();
    let lake = TestLake::new(Form::IcebergLocal); // its directory only: the lake is in S3 below
    let sim = simulator(1, 10, |_| {});
    let db = TestDb::new().await;
    track_all(&db, &group_ids(&sim), 10).await;
    let proxy = hanging_proxy(&s3.endpoint, ".metadata.json").await;
    let mut cmd = lake.exporter(&db, &sim);
    s3.env(&mut cmd)
        .env("AWS_ENDPOINT_URL", &proxy)
        .env("EXPORT_PARQUET_DIR", s3.url("slow"))
        .env("EXPORT_LAKE_TIMEOUT", "5")
        .arg("run");
    let started = std::time::Instant::now();
    let out = tokio::task::spawn_blocking(move || run(&mut cmd))
        .await
        .unwrap();
    let took = started.elapsed();
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        text.contains("did not answer within 5s (EXPORT_LAKE_TIMEOUT)"),
        "{text}"
    );
    assert!(
        took < Duration::from_secs(25),
        "the run gave up after {took:?}, not about 5 s"
    );
    let line = text
        .lines()
        .find(|l| l.contains("did not answer within"))
        .unwrap();
    let error = &line[line.find("while ").unwrap()..];
    assert!(error.chars().count() <= 300, "{error}");
}
