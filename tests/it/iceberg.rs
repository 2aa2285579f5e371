//! Issue 18: the Iceberg table. Runs of the real binary in `--table-format iceberg`, read back
//! by an independent reader, pyiceberg, through the SQL catalog in the test database.

use crate::helpers::*;
use std::path::Path;
use std::process::Command;

/// Reads the table with pyiceberg's SqlCatalog (catalog `receipt_exporter`, schema `receipts`
/// through `search_path`) and prints one JSON line per row, plus the snapshot summaries.
pub(crate) const READER: &str = r#"
import json, sys
from pyiceberg.catalog.sql import SqlCatalog
uri, what = sys.argv[1], sys.argv[2]
cat = SqlCatalog("receipt_exporter", uri=uri, init_catalog_tables="false")
table = cat.load_table("receipts.receipt_snapshots")
if what == "rows":
    t = table.scan().to_arrow()
    for r in t.to_pylist():
        r["captured_at"] = int(r["captured_at"].timestamp() * 1_000_000)
        print(json.dumps(r))
elif what == "snapshots":
    for s in table.snapshots():
        print(json.dumps({k: v for k, v in s.summary.additional_properties.items()}))
elif what == "files":
    for task in table.scan().plan_files():
        print(task.file.file_path)
elif what == "drop":
    cat.drop_table("receipts.receipt_snapshots")
    print("dropped")
elif what == "schema":
    print(table.schema())
    print(table.spec())
    print(table.format_version)
"#;

/// The test database's URL for SQLAlchemy/psycopg2, its sessions in schema `receipts`.
pub(crate) fn sqlalchemy_url(db: &TestDb) -> String {
    let rest = db.url.split_once("://").unwrap().1;
    format!("postgresql+psycopg2://{rest}?options=-csearch_path%3Dreceipts")
}

fn pyiceberg(db: &TestDb, what: &str) -> String {
    pyiceberg_at(&sqlalchemy_url(db), what)
}

pub fn pyiceberg_at(url: &str, what: &str) -> String {
    let out = crate::tools::run_python(READER, &[url, what]);
    assert!(out.status.success(), "pyiceberg failed: {}", stderr(&out));
    stdout(&out)
}

/// Every row of the table as pyiceberg reads it, sorted like [`pg_snapshots`].
pub fn iceberg_rows(db: &TestDb) -> Vec<Snap> {
    parse_rows(&pyiceberg(db, "rows"))
}

/// A reader's JSON lines (`run_id`, `captured_at` in microseconds, `group_id`, `msg_seq`,
/// `read_num`, `unread_num`) as sorted snapshots.
pub fn parse_rows(text: &str) -> Vec<Snap> {
    let mut rows: Vec<Snap> = text
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            Snap {
                run_id: v["run_id"].as_i64().unwrap(),
                group_id: v["group_id"].as_str().unwrap().to_string(),
                msg_seq: v["msg_seq"].as_i64().unwrap(),
                read_num: v["read_num"].as_i64().unwrap() as i32,
                unread_num: v["unread_num"].as_i64().unwrap() as i32,
                captured_at_us: v["captured_at"].as_i64().unwrap(),
            }
        })
        .collect();
    rows.sort();
    rows
}

pub(crate) fn iceberg_run(
    db: &TestDb,
    sim: &receipt_exporter::sim::Simulator,
    dir: &Path,
) -> Command {
    let mut cmd = exporter_for(db, &sim.base_url(), dir);
    cmd.env("EXPORT_TABLE_FORMAT", "iceberg").arg("run");
    cmd
}

/// The data files under the table's `data/` directory.
pub(crate) fn data_files(dir: &Path) -> Vec<std::path::PathBuf> {
    all_files(&dir.join("receipts/receipt_snapshots/data"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_iceberg_run_writes_the_table_that_pyiceberg_reads_back_equal_to_postgres() {
    let db = TestDb::new().await;
    let sim = simulator(3, 40, |_| {});
    let dir = tempfile::tempdir().unwrap();
    track_all(&db, &group_ids(&sim), 40).await;
    for _ in 0..2 {
        let out = run(&mut iceberg_run(&db, &sim, dir.path()));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        // The summary says where the files went: into the table, not a Hive-style directory.
        assert!(
            stdout(&out).contains("committed to the Iceberg table in "),
            "{}",
            stdout(&out)
        );
    }
    let pg = pg_snapshots(&db).await;
    assert!(pg.len() > 3 * 40, "two runs wrote rows: {}", pg.len());
    assert_eq!(iceberg_rows(&db), pg, "pyiceberg's rows equal Postgres's");
    // No Hive-style directory in Iceberg mode; the data files sit in day partitions.
    assert!(!dir.path().join("receipt_snapshots").exists());
    let files = data_files(dir.path());
    assert!(!files.is_empty());
    for f in &files {
        let parent = f.parent().unwrap().file_name().unwrap().to_string_lossy();
        assert!(parent.starts_with("captured_at_day="), "{}", f.display());
    }
    // One commit per finished file, each naming its run and part.
    let summaries: Vec<serde_json::Value> = pyiceberg(&db, "snapshots")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(summaries.len(), files.len());
    let runs: Vec<&str> = summaries
        .iter()
        .map(|s| s["receipt-exporter.run-id"].as_str().unwrap())
        .collect();
    assert_eq!(runs.iter().filter(|r| **r == "1").count(), runs.len() / 2);
    let listed: i64 = sqlx::query_scalar("SELECT count(*) FROM receipts.parquet_files")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        listed as usize,
        files.len(),
        "the manifest lists each committed file"
    );
    let schema = pyiceberg(&db, "schema");
    for column in [
        "run_id: required long",
        "captured_at: required timestamptz",
        "group_id: required string",
        "msg_seq: required long",
        "read_num: required int",
        "unread_num: required int",
        "captured_at_day: day(2)",
    ] {
        assert!(schema.contains(column), "{column} in {schema}");
    }
    assert!(schema.trim_end().ends_with('2'), "format v2: {schema}");
}

fn maintain(db: &TestDb, dir: &Path, extra: &[&str]) -> String {
    let out = run(exporter()
        .env("DATABASE_URL", &db.url)
        .env("EXPORT_PARQUET_DIR", dir)
        .env("EXPORT_TABLE_FORMAT", "iceberg")
        .args(["iceberg", "maintain"])
        .args(extra));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    stdout(&out)
}

/// A run long enough to commit several files: 4 groups x 300 seqs, ten calls at a time.
fn paced(db: &TestDb, sim: &receipt_exporter::sim::Simulator, dir: &Path) -> Command {
    let mut cmd = iceberg_run(db, sim, dir);
    cmd.env("EXPORT_BATCH_SIZE", "10")
        .env("EXPORT_RATE_LIMIT", "100")
        .env("EXPORT_CONCURRENCY", "8");
    cmd
}

// A run killed between a data file and its commit, inside the commit, and right after it: the
// crash matrix of `lakes.rs`.

/// A commit retried after its outcome was lost (the connection died at COMMIT) is recognised
/// by the manifest row its first attempt wrote in the same transaction, and not repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_repeated_after_it_succeeded_changes_nothing() {
    use receipt_exporter::sink::fence::{take_over, TakeOver};
    use receipt_exporter::sink::iceberg::{commit, IcebergTarget};
    use receipt_exporter::sink::{SnapshotRow, WriteBatch};
    let db = TestDb::new().await;
    let sim = simulator(1, 20, |_| {});
    let dir = tempfile::tempdir().unwrap();
    track_all(&db, &group_ids(&sim), 20).await;
    let out = run(&mut iceberg_run(&db, &sim, dir.path()));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let snapshots = || pyiceberg(&db, "snapshots").lines().count();
    let before = snapshots();

    let lake = receipt_exporter::lake::Lake::Local(dir.path().to_path_buf());
    let target = IcebergTarget::open(&lake, &db.pool).await.unwrap();
    let TakeOver::Taken(fence) = take_over(&db.pool, 1, "the test").await.unwrap() else {
        panic!("run 1 is finished: it can be taken over");
    };
    let mut writer = target.run_writer(&db.pool, fence, 77).unwrap();
    let at = chrono::Utc::now();
    let batch = WriteBatch {
        run_id: 1,
        run_date: at.date_naive(),
        batch_no: 9_999,
        sdkappid: Some(1_400_000_000),
        capture_date: at.date_naive(),
        rows: vec![SnapshotRow {
            captured_at: chrono::DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap(),
            group_id: "@TGS#extra".into(),
            msg_seq: 1,
            read_num: 2,
            unread_num: 3,
        }],
        codes: vec![],
    };
    assert!(writer.append(&batch).await.unwrap().is_empty());
    let [file] = <[_; 1]>::try_from(writer.finish().await.unwrap()).unwrap();
    let bound = std::time::Duration::from_secs(5);
    let first = commit::publish(&db.pool, &target.lake, fence, &file, bound)
        .await
        .unwrap();
    let again = commit::publish(&db.pool, &target.lake, fence, &file, bound)
        .await
        .unwrap();
    assert_eq!(first, again);
    assert_eq!(snapshots(), before + 1, "one commit, not two");
    let extra = iceberg_rows(&db)
        .into_iter()
        .filter(|s| s.group_id == "@TGS#extra")
        .count();
    assert_eq!(extra, 1, "the file's row is in the table once");
    let ours: Vec<serde_json::Value> = pyiceberg(&db, "snapshots")
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|s| s["receipt-exporter.part"] == "77")
        .collect();
    assert_eq!(ours.len(), 1, "one snapshot names run 1's part 77");
    assert_eq!(ours[0]["receipt-exporter.run-id"], "1");
    assert_eq!(
        ours[0]["receipt-exporter.data-file"],
        first.relative_path.as_str()
    );
}

/// maintain expires all but the newest snapshot (the table keeps every row: each snapshot of
/// fast appends holds all files before it) and removes the expired snapshots' manifest lists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintain_expires_old_snapshots_and_keeps_every_row() {
    let db = TestDb::new().await;
    let sim = simulator(2, 20, |_| {});
    let dir = tempfile::tempdir().unwrap();
    track_all(&db, &group_ids(&sim), 20).await;
    for _ in 0..3 {
        let out = run(&mut iceberg_run(&db, &sim, dir.path()));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    let metadata_dir = dir.path().join("receipts/receipt_snapshots/metadata");
    let lists = || {
        all_files(&metadata_dir)
            .into_iter()
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("snap-")
            })
            .count()
    };
    assert_eq!(pyiceberg(&db, "snapshots").lines().count(), 3);
    assert_eq!(lists(), 3);
    let dry = maintain(&db, dir.path(), &["--expire-older-than", "0s", "--dry-run"]);
    assert!(dry.contains("2 of 3 snapshot(s) would expire"), "{dry}");
    assert_eq!(
        pyiceberg(&db, "snapshots").lines().count(),
        3,
        "a dry run changes nothing"
    );
    // The default safety age keeps the files a second ago's commits left.
    let report = maintain(&db, dir.path(), &["--expire-older-than", "0s"]);
    assert!(report.contains("2 of 3 snapshot(s) expired"), "{report}");
    assert!(report.contains(" 0 orphan file(s) removed"), "{report}");
    assert_eq!(pyiceberg(&db, "snapshots").lines().count(), 1);
    assert_eq!(
        iceberg_rows(&db),
        pg_snapshots(&db).await,
        "every row stays"
    );
    assert_eq!(lists(), 3, "younger than the safety age: left");
    let report = maintain(&db, dir.path(), &["--orphan-min-age", "0s"]);
    assert!(report.contains(" 0 of 1 snapshot(s) expired"), "{report}");
    assert_eq!(
        lists(),
        1,
        "the expired snapshots' manifest lists are removed: {report}"
    );
    assert_eq!(
        iceberg_rows(&db),
        pg_snapshots(&db).await,
        "every row stays"
    );
}

/// The README's pyiceberg + DuckDB snippet, run as printed against a test database in place of
/// the demo's: it prints one line per group with its read ratio.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_pyiceberg_query_works_as_printed() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = &readme[readme.find("### The Iceberg table").expect("the section")..];
    let start = section.find("python3 - <<'PY'\n").expect("the snippet") + 17;
    let end = start + section[start..].find("\nPY\n").expect("its end");
    let demo = "postgres@127.0.0.1:5432/receipt_exporter_demo";
    assert!(
        section[start..end].contains(demo),
        "the snippet names the demo database"
    );

    let db = TestDb::new().await;
    let sim = simulator(2, 20, |_| {});
    let dir = tempfile::tempdir().unwrap();
    let groups = group_ids(&sim);
    track_all(&db, &groups, 20).await;
    let out = run(&mut iceberg_run(&db, &sim, dir.path()));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let script = section[start..end].replace(demo, db.url.split_once("://").unwrap().1);
    let out = crate::tools::run_python(&script, &[]);
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "the README's snippet fails: {}",
        stderr(&out)
    );
    for group in &groups {
        assert!(text.contains(group.as_str()), "{group} in {text}");
    }
    assert!(text.contains("read_ratio"), "{text}");
}

/// Another writer commits through pyiceberg (a table property per commit, retried on a commit
/// conflict as pyiceberg's users do) while two jobs' runs commit: every commit lands, none is
/// lost. (A metadata-only commit: pyiceberg writes into a `day` partition only with its optional
/// `pyiceberg-core` package.)
const OTHER_WRITER: &str = r#"
import sys
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import CommitFailedException
cat = SqlCatalog("receipt_exporter", uri=sys.argv[1], init_catalog_tables="false")
conflicts = 0
for i in range(int(sys.argv[2])):
    while True:
        try:
            with cat.load_table("receipts.receipt_snapshots").transaction() as tx:
                tx.set_properties({f"other-writer.{i}": "done"})
            break
        except CommitFailedException:
            conflicts += 1
props = cat.load_table("receipts.receipt_snapshots").properties
print(sum(1 for k in props if k.startswith("other-writer.")), "conflicts", conflicts)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_jobs_and_another_writer_commit_concurrently_and_nothing_is_lost() {
    let db = TestDb::new().await;
    let sim = simulator(4, 200, |_| {});
    let dir = tempfile::tempdir().unwrap();
    let jobs = tempfile::tempdir().unwrap();
    track_all(&db, &group_ids(&sim), 200).await;
    // The table exists before the other writer starts.
    let out = run(&mut iceberg_run(&db, &sim, dir.path()));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for job in ["a", "b"] {
        std::fs::write(
            jobs.path().join(format!("{job}.toml")),
            "schedule = \"0 * * * *\"\n",
        )
        .unwrap();
    }
    let spawn_job = |job: &str| {
        paced(&db, &sim, dir.path())
            .env("EXPORT_JOBS_DIR", jobs.path())
            .args(["--job", job])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn_job("a"), spawn_job("b"));
    let other = crate::tools::run_python(OTHER_WRITER, &[&sqlalchemy_url(&db), "8"]);
    assert!(
        other.status.success(),
        "the other writer: {}",
        stderr(&other)
    );
    for child in [a, b] {
        let out = finish(child);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    let ours = iceberg_rows(&db);
    assert_eq!(ours, pg_snapshots(&db).await, "every run's rows once");
    // The other writer's commits survive ours: the table still has its 8 properties.
    let check = crate::tools::run_python(OTHER_WRITER, &[&sqlalchemy_url(&db), "0"]);
    assert!(stdout(&check).starts_with("8 "), "{}", stdout(&check));
    let runs: std::collections::BTreeSet<i64> = ours.iter().map(|s| s.run_id).collect();
    assert_eq!(runs.len(), 3, "three runs committed");
}

/// What does not apply in Iceberg mode says so (exit 2), and so does a bad S3 endpoint setting;
/// `lake verify` applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hive_style_commands_and_a_plain_http_endpoint_are_refused_in_iceberg_mode() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let iceberg = |args: &[&str]| {
        run(exporter()
            .env("DATABASE_URL", &db.url)
            .env("EXPORT_PARQUET_DIR", dir.path())
            .env("EXPORT_TABLE_FORMAT", "iceberg")
            .args(args))
    };
    let out = iceberg(&[
        "export",
        "parquet",
        "--since",
        "2026-11-01",
        "--until",
        "2026-11-02",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("EXPORT_TABLE_FORMAT is iceberg"),
        "{}",
        stderr(&out)
    );
    // `lake verify` applies in Iceberg mode too (issue 23): a lake without a table yet holds
    // nothing it should.
    let out = iceberg(&["lake", "verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("lake: 0 listed file(s) checked, 0 problem(s)"),
        "{}",
        stdout(&out)
    );
    let out = run(exporter()
        .env("DATABASE_URL", &db.url)
        .env("EXPORT_PARQUET_DIR", dir.path())
        .args(["iceberg", "maintain"]));
    assert_eq!(out.status.code(), Some(2), "maintain without Iceberg mode");
    assert!(
        stderr(&out).contains("EXPORT_TABLE_FORMAT=iceberg"),
        "{}",
        stderr(&out)
    );
    let out = run(exporter()
        .env("DATABASE_URL", &db.url)
        .env("EXPORT_PARQUET_DIR", "s3://lake-test/prefix")
        .env("EXPORT_TABLE_FORMAT", "iceberg")
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env_remove("AWS_ALLOW_HTTP")
        .args(["iceberg", "maintain"]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("AWS_ALLOW_HTTP=true"),
        "{}",
        stderr(&out)
    );
    let out = run(exporter().env("EXPORT_TABLE_FORMAT", "delta").args([
        "jobs",
        "check",
        "--jobs",
        dir.path().to_str().unwrap(),
    ]));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out)
            .contains("EXPORT_TABLE_FORMAT: invalid value 'delta': expected parquet or iceberg"),
        "{}",
        stderr(&out)
    );
}

/// The connection is lost inside the commit's transaction (every session of the exporter
/// terminated while the new metadata is written and the pointer not yet moved, as a failover
/// would): the commit is retried on a new connection and lands once; the run succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_connection_dies_is_retried_and_lands_once() {
    use receipt_exporter::crashpoint::{PAUSE_ENV, PAUSE_FILE_ENV};
    let db = TestDb::new().await;
    let sim = simulator(3, 60, |_| {});
    let dir = tempfile::tempdir().unwrap();
    let pause = dir.path().join("paused");
    track_all(&db, &group_ids(&sim), 60).await;
    let child = iceberg_run(&db, &sim, &dir.path().join("lake"))
        .env(PAUSE_ENV, "iceberg_metadata_written:1")
        .env(PAUSE_FILE_ENV, &pause)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_file(&pause, std::time::Duration::from_secs(60)).await;
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND application_name = 'receipt-exporter') t",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(
        killed >= 2,
        "the commit's session and the lock's were killed ({killed})"
    );
    std::fs::remove_file(&pause).unwrap();
    let out = finish(child);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(iceberg_rows(&db), pg_snapshots(&db).await, "every row once");
    let snapshots = pyiceberg(&db, "snapshots").lines().count();
    assert_eq!(snapshots, 1, "one commit for the run's one file");
}

/// A run frozen with its data file written and not committed, its lock session gone, past its
/// lease: the other job's run declares it dead, fences it, removes its data file and commits its
/// committed batches from Postgres. Woken up, its commit is refused (exit 1, fenced); its file
/// never enters the table, and after one more run every row is in the table exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_frozen_before_its_commit_is_fenced_and_its_file_never_lands() {
    use crate::fencing::{spawn, wait_for_lease_to_run_out, TwoJobs};
    use receipt_exporter::crashpoint::{PAUSE_ENV, PAUSE_FILE_ENV};
    let t = TwoJobs::new().await;
    let iceberg = |job: &str| {
        let mut cmd = t.run(job);
        cmd.env("EXPORT_TABLE_FORMAT", "iceberg");
        cmd
    };
    let pauses = tempfile::tempdir().unwrap();
    let pause = pauses.path().join("a-before-commit");
    let a = spawn(
        iceberg("a")
            .env("EXPORT_LOCK_RECONNECT_TIMEOUT", "5")
            .env(PAUSE_ENV, "iceberg_before_commit:1")
            .env(PAUSE_FILE_ENV, &pause),
    );
    wait_for_file(&pause, std::time::Duration::from_secs(60)).await;
    signal(&a, "STOP");
    let written = data_files(t.dir.path());
    assert_eq!(written.len(), 1, "A's data file is written, not committed");
    assert!(kill_lock_session(&t.db, "a").await);
    wait_for_lease_to_run_out(&t.db, 1).await;

    let b = run(&mut iceberg("b"));
    assert_eq!(b.status.code(), Some(0), "{}", stderr(&b));
    assert_eq!(t.status(1).await, "abandoned");
    assert!(
        !written[0].exists(),
        "the repair removed A's uncommitted file"
    );
    let pg = pg_snapshots(&t.db).await;
    assert_eq!(
        iceberg_rows(&t.db),
        pg,
        "A's rows committed from Postgres, B's own"
    );

    std::fs::remove_file(&pause).unwrap();
    signal(&a, "CONT");
    let a = finish(a);
    assert_eq!(
        a.status.code(),
        Some(1),
        "a fenced run exits 1: {}",
        stderr(&a)
    );
    assert!(
        stderr(&a).contains("fenced by run 2 (job b)"),
        "{}",
        stderr(&a)
    );
    assert_eq!(iceberg_rows(&t.db), pg, "nothing of the fenced run landed");
    let more = run(&mut iceberg("a"));
    assert_eq!(more.status.code(), Some(0), "{}", stderr(&more));
    assert_eq!(
        iceberg_rows(&t.db),
        pg_snapshots(&t.db).await,
        "every row exactly once"
    );
}

/// The database records its lake: a run pointed at another is refused (exit 2, naming the
/// recorded one), and neither the table nor the other lake is touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_pointed_at_another_lake_is_refused() {
    let db = TestDb::new().await;
    let sim = simulator(1, 10, |_| {});
    let (first, other) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    track_all(&db, &group_ids(&sim), 10).await;
    let out = run(&mut iceberg_run(&db, &sim, first.path()));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let before = iceberg_rows(&db);
    let out = run(&mut iceberg_run(&db, &sim, other.path()));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let recorded = format!(
        "this database's lake is iceberg at file://{}",
        first.path().display()
    );
    assert!(
        stderr(&out).contains(&recorded) && stderr(&out).contains("lake move --from"),
        "{}",
        stderr(&out)
    );
    assert!(
        all_files(other.path()).is_empty(),
        "nothing written in the other lake"
    );
    assert_eq!(iceberg_rows(&db), before);
}
