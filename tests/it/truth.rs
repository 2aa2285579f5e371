//! Issue 23, "the lake is checked, not believed": a data file lost from the lake after its run
//! (deleted by a lifecycle rule or a wrong `rm`, or truncated) in every lake form. `lake
//! verify` names it (exit 1), `doctor` reports it, retention refuses to drop the month of its
//! run (exit 1, `--dry-run` too) instead of trusting the manifest; `lake verify --repair` makes
//! the lake hold Postgres's rows again, each once (in Iceberg one overwrite commit), and then
//! retention drops the month, its rows kept in the lake.

use crate::helpers::*;
use crate::lakes::{Form, TestLake};
use chrono::{Datelike, Months, NaiveDate, Utc};

/// How the file is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loss {
    Deleted,
    Truncated,
}

fn month_start(day: NaiveDate) -> NaiveDate {
    day.with_day(1).unwrap()
}

/// Moves run 1 (its ledger row and its snapshot rows) into a month three months back, whose
/// partition this creates: the month retention `--keep-months 1` drops.
async fn age_run_1(db: &TestDb) -> NaiveDate {
    let old = month_start(Utc::now().date_naive()) - Months::new(3);
    let next = old + Months::new(1);
    sqlx::raw_sql(&format!(
        "CREATE TABLE receipts.receipt_snapshot_rows_y{}m{:02} PARTITION OF receipts.receipt_snapshot_rows
           FOR VALUES FROM ('{old}') TO ('{next}');
         UPDATE receipts.receipt_snapshot_rows SET run_date = '{old}' WHERE run_id = 1;
         UPDATE receipts.export_runs SET run_date = '{old}' WHERE run_id = 1;",
        old.year(),
        old.month()
    ))
    .execute(&db.pool)
    .await
    .unwrap();
    old
}

async fn old_partition_exists(db: &TestDb, old: NaiveDate) -> bool {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_class WHERE relname = $1 AND relkind = 'r')",
    )
    .bind(format!(
        "receipt_snapshot_rows_y{}m{:02}",
        old.year(),
        old.month()
    ))
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

/// Asserts the exit code; returns stdout and stderr.
/// `retention --keep-months 1` (with `--dry-run` when `dry`) on the lake.
fn retention(lake: &TestLake, db: &TestDb, dry: bool) -> std::process::Output {
    let mut cmd = lake.command(db);
    cmd.args(["retention", "--keep-months", "1"]);
    if dry {
        cmd.arg("--dry-run");
    }
    run(&mut cmd)
}

fn expect(out: &std::process::Output, code: i32) -> String {
    let text = format!("{}{}", stdout(out), stderr(out));
    assert_eq!(out.status.code(), Some(code), "{text}");
    text
}

async fn lost_file_is_found_refused_and_repaired(form: Form, loss: Loss) {
    let lake = TestLake::new(form);
    let sim = simulator(3, 60, |_| {});
    let db = TestDb::new().await;
    track_all(&db, &group_ids(&sim), 60).await;
    for _ in 0..2 {
        expect(&run(lake.exporter(&db, &sim).arg("run")), 0);
    }
    let old = age_run_1(&db).await;
    let retention = |dry: bool| retention(&lake, &db, dry);
    let text = expect(&retention(true), 0);
    assert!(text.contains("all in the lake: drop"), "{text}");

    // Run 1's one file goes.
    let paths: Vec<String> =
        sqlx::query_scalar("SELECT path FROM receipts.parquet_files WHERE run_id = 1")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(paths.len(), 1, "{paths:?}");
    let lost = &paths[0];
    match loss {
        Loss::Deleted => lake.remove(lost).await,
        Loss::Truncated => lake.put(lost, b"PAR1 cut short").await,
    }
    let problem = match loss {
        Loss::Deleted => format!("{lost}: missing"),
        Loss::Truncated => format!("{lost}: 14 bytes on disk"),
    };

    let text = expect(&run(lake.command(&db).args(["lake", "verify"])), 1);
    assert!(text.contains(&problem), "{text}");
    let text = stdout(&run(lake.exporter(&db, &sim).arg("doctor")));
    assert!(
        text.contains(lost.as_str()),
        "doctor names the lost file: {text}"
    );

    for dry in [true, false] {
        let text = expect(&retention(dry), 1);
        assert!(text.contains(&problem), "{text}");
        assert!(text.contains("lake verify --repair"), "{text}");
        assert!(!text.contains("all in the lake: drop"), "{text}");
        assert!(old_partition_exists(&db, old).await, "nothing dropped");
    }

    let text = expect(
        &run(lake.command(&db).args(["lake", "verify", "--repair"])),
        0,
    );
    assert!(text.contains("repaired"), "{text}");
    let pg = pg_snapshots(&db).await;
    let seen = lake.rows(&db);
    assert_eq!(
        seen.len(),
        pg.len(),
        "the readers see as many rows as Postgres"
    );
    let sum = |rows: &[Snap]| -> i64 { rows.iter().map(|s| i64::from(s.read_num)).sum() };
    assert_eq!(sum(&seen), sum(&pg));
    assert_eq!(
        seen, pg,
        "the readers see exactly Postgres's rows, none twice"
    );
    expect(&run(lake.command(&db).args(["lake", "verify"])), 0);
    if matches!(form, Form::IcebergLocal | Form::IcebergS3) {
        let summaries = lake.pyiceberg(&db, "snapshots");
        let repair = summaries
            .lines()
            .find(|l| l.contains("receipt-exporter.repair"))
            .unwrap_or_else(|| panic!("the repair's snapshot: {summaries}"));
        let has = |key: &str, value: &str| repair.contains(&format!("\"{key}\": \"{value}\""));
        assert!(has("deleted-data-files", "1"), "{summaries}");
        assert!(has("added-data-files", "1"), "{summaries}");
        assert!(has("receipt-exporter.repair", lost), "{summaries}");
        assert!(has("total-records", &pg.len().to_string()), "{summaries}");
    }
    // Nothing left over: in Iceberg a truncated file stays named by the snapshots before the
    // repair (time travel) until they expire; then `iceberg maintain` removes it, and the table
    // names every data file under it.
    if matches!(form, Form::IcebergLocal | Form::IcebergS3) {
        let maintain = ["iceberg", "maintain", "--expire-older-than", "0s"];
        expect(
            &run(lake
                .command(&db)
                .args(maintain)
                .args(["--orphan-min-age", "0s"])),
            0,
        );
    }
    lake.assert_complete(&db).await;

    let text = expect(&retention(false), 0);
    assert!(text.contains("dropped 1 month(s)"), "{text}");
    assert!(!old_partition_exists(&db, old).await);
    assert_eq!(
        lake.rows(&db),
        pg,
        "the lake keeps the dropped month's rows"
    );
}

macro_rules! lost {
    ($($name:ident: $form:ident, $loss:ident;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            lost_file_is_found_refused_and_repaired(Form::$form, Loss::$loss).await;
        }
    )*};
}

lost! {
    truth_hive_local_deleted_file: HiveLocal, Deleted;
    truth_hive_s3_deleted_file: HiveS3, Deleted;
    truth_iceberg_local_deleted_file: IcebergLocal, Deleted;
    truth_iceberg_local_truncated_file: IcebergLocal, Truncated;
    truth_iceberg_s3_deleted_file: IcebergS3, Deleted;
}

/// Another engine compacts the table (pyiceberg rewrites both runs' rows into one file per day,
/// removing the files the runs committed): the lake still holds each run's rows, counted per
/// `run_id` from the new file's `run_id` column (its statistics span two runs), so `lake verify`
/// and retention pass though no file the manifest names is live. When that compacted file is
/// lost, both name it; the repair cannot tell its rows from Postgres (no manifest row names
/// it), says so and exits 1, and retention stays refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truth_iceberg_rows_are_counted_per_run_after_another_engines_compaction() {
    let lake = TestLake::new(Form::IcebergLocal);
    let sim = simulator(3, 60, |_| {});
    let db = TestDb::new().await;
    track_all(&db, &group_ids(&sim), 60).await;
    for _ in 0..2 {
        expect(&run(lake.exporter(&db, &sim).arg("run")), 0);
    }
    age_run_1(&db).await;
    let out = crate::tools::run_python(COMPACT, &[&crate::iceberg::sqlalchemy_url(&db)]);
    assert!(out.status.success(), "pyiceberg compacts: {}", stderr(&out));
    let live: Vec<String> = lake
        .pyiceberg(&db, "files")
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(live.len(), 1, "one compacted file: {live:?}");
    let manifest = manifest_paths(&db).await;
    assert!(
        manifest.iter().all(|p| !live[0].ends_with(p.as_str())),
        "no file the manifest names is live any more"
    );
    assert_eq!(lake.rows(&db), pg_snapshots(&db).await);

    let text = expect(&run(lake.command(&db).args(["lake", "verify"])), 0);
    assert!(text.contains("0 problem(s)"), "{text}");
    let retention = |dry: bool| retention(&lake, &db, dry);
    let text = expect(&retention(true), 0);
    assert!(text.contains("all in the lake: drop"), "{text}");

    let compacted = live[0].split_once("/lake/").unwrap().1.to_string();
    lake.remove(&compacted).await;
    let text = expect(&run(lake.command(&db).args(["lake", "verify"])), 1);
    assert!(
        text.contains(&format!("{compacted}: missing (snapshots of several runs")),
        "{text}"
    );
    assert!(
        text.contains("run 1: 0 rows in the Iceberg table's live files"),
        "{text}"
    );
    let text = expect(
        &run(lake.command(&db).args(["lake", "verify", "--repair"])),
        1,
    );
    assert!(
        text.contains(&format!(
            "not repaired: {compacted}: written by another engine"
        )),
        "{text}"
    );
    let text = expect(&retention(true), 1);
    assert!(text.contains(&format!("{compacted}: missing")), "{text}");
}

/// Compacts the table as another engine would: every live row read and written into one new
/// data file per day (with field ids, without column statistics, so its rows are counted per
/// run by reading its `run_id` column), committed with pyiceberg's overwrite producer, which
/// deletes the files the runs committed.
const COMPACT: &str = r#"
import datetime, os, sys
import pyarrow.parquet as pq
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.io.pyarrow import schema_to_pyarrow
from pyiceberg.manifest import DataFile, DataFileContent, FileFormat
from pyiceberg.typedef import Record
cat = SqlCatalog("receipt_exporter", uri=sys.argv[1], init_catalog_tables="false")
table = cat.load_table("receipts.receipt_snapshots")
old = [task.file for task in table.scan().plan_files()]
rows = table.scan().to_arrow().cast(schema_to_pyarrow(table.schema()))
day = (rows["captured_at"][0].as_py().date() - datetime.date(1970, 1, 1)).days
location = "%s/data/captured_at_day=%s/compacted-by-another-engine.parquet" % (
    table.location(), datetime.date(1970, 1, 1) + datetime.timedelta(days=day))
path = location.removeprefix("file://")
pq.write_table(rows, path)
new = DataFile.from_args(content=DataFileContent.DATA, file_path=location,
    file_format=FileFormat.PARQUET, partition=Record(day), record_count=rows.num_rows,
    file_size_in_bytes=os.path.getsize(path))
new.spec_id = table.spec().spec_id
with table.transaction() as tx:
    with tx.update_snapshot().overwrite() as overwrite:
        for f in old:
            overwrite.delete_data_file(f)
        overwrite.append_data_file(new)
"#;

/// The read-events files are Hive-style files in every form: in Iceberg mode too, `lake verify`
/// names a lost one (exit 1) and `--repair` writes its run's file again from Postgres.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truth_iceberg_a_lost_read_events_file_is_named_and_written_again() {
    let lake = TestLake::new(Form::IcebergLocal);
    let group = receipt_exporter::sim::SimGroup {
        group_id: "@TGS#who-truth".into(),
        group_type: receipt_exporter::sim::GroupType::Public,
        member_num: 40,
        next_msg_seq: 13,
    };
    let sim = simulator(0, 0, |c| c.groups = vec![group.clone()]);
    let db = TestDb::new().await;
    let track = [
        "track",
        "add",
        &group.group_id,
        "--seqs",
        "1..12",
        "--details",
    ];
    expect(&run(lake.exporter(&db, &sim).args(track)), 0);
    expect(&run(lake.exporter(&db, &sim).arg("run")), 0);
    let (path, size): (String, i64) = sqlx::query_as(
        "SELECT path, byte_size FROM receipts.read_event_files ORDER BY path LIMIT 1",
    )
    .fetch_one(&db.pool)
    .await
    .expect("run 1 recorded a read-events file");
    lake.remove(&path).await;

    let text = expect(&run(lake.command(&db).args(["lake", "verify"])), 1);
    assert!(
        text.contains(&format!("{path}: missing (read events of run 1")),
        "{text}"
    );
    let text = expect(
        &run(lake.command(&db).args(["lake", "verify", "--repair"])),
        0,
    );
    assert!(
        text.contains("the read-events files of run 1 rewritten"),
        "{text}"
    );
    let on_disk = std::fs::metadata(lake.dir.path().join("lake").join(&path)).unwrap();
    assert!(on_disk.len() > 0 && size > 0);
    expect(&run(lake.command(&db).args(["lake", "verify"])), 0);
    assert_eq!(lake.rows(&db), pg_snapshots(&db).await);
}

/// A repair killed with its new data file written and not committed leaves the table as it
/// was; the next `lake verify --repair` removes that file (the run is its own now: nobody
/// else may commit it) and commits a new one, so readers see Postgres's rows once and no data
/// file under the table is left unnamed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truth_iceberg_a_repair_killed_before_its_commit_is_done_by_the_next() {
    use std::os::unix::process::ExitStatusExt;
    let lake = TestLake::new(Form::IcebergLocal);
    let sim = simulator(3, 60, |_| {});
    let db = TestDb::new().await;
    track_all(&db, &group_ids(&sim), 60).await;
    for _ in 0..2 {
        expect(&run(lake.exporter(&db, &sim).arg("run")), 0);
    }
    let lost: String =
        sqlx::query_scalar("SELECT path FROM receipts.parquet_files WHERE run_id = 1")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    lake.remove(&lost).await;
    let out = run(lake
        .command(&db)
        .env(
            receipt_exporter::crashpoint::ENV,
            "overwrite_before_commit:1",
        )
        .args(["lake", "verify", "--repair"]));
    assert_eq!(out.status.signal(), Some(9), "{}", stderr(&out));
    let pending: i64 =
        sqlx::query_scalar("SELECT count(*) FROM receipts.iceberg_pending_files WHERE run_id = 1")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        pending, 1,
        "the killed repair's data file is recorded as pending"
    );
    let text = expect(&run(lake.command(&db).args(["lake", "verify"])), 1);
    assert!(text.contains(&format!("{lost}: missing")), "{text}");

    expect(
        &run(lake.command(&db).args(["lake", "verify", "--repair"])),
        0,
    );
    lake.assert_complete(&db).await;
}

/// Retention after a scheduled run (a job's `retention_keep_months`) checks the lake too: with
/// a data file of the old month's run lost from the Iceberg table it leaves every month in
/// Postgres and logs the file (the run itself succeeds); after `lake verify --repair` the next
/// scheduled run drops the month.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truth_iceberg_retention_after_a_scheduled_run_checks_the_lake() {
    let lake = TestLake::new(Form::IcebergLocal);
    let sim = simulator(3, 60, |_| {});
    let db = TestDb::new().await;
    track_all(&db, &group_ids(&sim), 60).await;
    expect(&run(lake.exporter(&db, &sim).arg("run")), 0);
    let old = age_run_1(&db).await;
    let job = lake.dir.path().join("monthly.toml");
    std::fs::write(
        &job,
        "schedule = \"5 * * * *\"\ntags = [\"none\"]\nretention_keep_months = 1\n",
    )
    .unwrap();
    let scheduled = || {
        let job = job.to_str().unwrap();
        run(lake
            .exporter(&db, &sim)
            .args(["run", "--job", job, "--scheduled"]))
    };
    let lost: String =
        sqlx::query_scalar("SELECT path FROM receipts.parquet_files WHERE run_id = 1")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    lake.remove(&lost).await;

    let text = expect(&scheduled(), 0);
    assert!(text.contains("left every month in Postgres"), "{text}");
    assert!(
        text.contains(&format!("the lake lacks {lost}: missing")),
        "{text}"
    );
    assert!(old_partition_exists(&db, old).await, "nothing dropped");

    expect(
        &run(lake.command(&db).args(["lake", "verify", "--repair"])),
        0,
    );
    let text = expect(&scheduled(), 0);
    assert!(text.contains("dropped 1 month(s)"), "{text}");
    assert!(!old_partition_exists(&db, old).await);
}
