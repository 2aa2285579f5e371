//! The read-progress table (`receipts.message_read_progress`): what every write batch merges
//! into it against a hand-made series with known answers and against an independent SQL query
//! over the snapshots, exactly once across retries, kills and out-of-order backfills; and
//! `progress rebuild`, which keeps the rows retention cut.

use crate::helpers::*;
use chrono::{DateTime, NaiveDate, Utc};
use receipt_exporter::sink::postgres::{write_batch, WriteOutcome};
use receipt_exporter::sink::{progress, Fence, SnapshotRow, WriteBatch};
use sqlx::PgPool;
use std::sync::Arc;

/// One progress row: group, seq, first seen, members then, ratio, half read, 90% read.
type Progress = (
    String,
    i64,
    DateTime<Utc>,
    i32,
    Option<f64>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
);

/// The table as stored.
async fn stored(pool: &PgPool) -> Vec<Progress> {
    sqlx::query_as(
        "SELECT group_id, msg_seq, first_seen_at, members_at_first_seen, read_ratio,
                half_read_at, ninety_read_at
         FROM receipts.message_read_progress ORDER BY group_id COLLATE \"C\", msg_seq",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// The same columns computed from the snapshots by a query of its own (DISTINCT ON and
/// filtered minimums, not the merge's statement): what the table must equal.
async fn from_snapshots(pool: &PgPool) -> Vec<Progress> {
    from_snapshots_upto(pool, i64::MAX).await
}

/// [`from_snapshots`] over the snapshots of runs up to `run` only: the table as it was after
/// that run, when runs ran one after another.
async fn from_snapshots_upto(pool: &PgPool, run: i64) -> Vec<Progress> {
    sqlx::query_as(
        "WITH s AS (SELECT * FROM receipts.receipt_snapshots WHERE run_id <= $1),
         first AS (
             SELECT DISTINCT ON (group_id, msg_seq) group_id, msg_seq, captured_at,
                    read_num + unread_num AS members
             FROM s ORDER BY group_id, msg_seq, captured_at),
         newest AS (
             SELECT DISTINCT ON (group_id, msg_seq) group_id, msg_seq,
                    CASE WHEN read_num + unread_num > 0
                         THEN read_num::float8 / (read_num + unread_num) END AS ratio
             FROM s ORDER BY group_id, msg_seq, captured_at DESC),
         half AS (
             SELECT group_id, msg_seq, min(captured_at) AS at FROM s
             WHERE read_num + unread_num > 0 AND read_num >= unread_num
             GROUP BY group_id, msg_seq),
         ninety AS (
             SELECT group_id, msg_seq, min(captured_at) AS at FROM s
             WHERE read_num + unread_num > 0 AND read_num >= 9 * unread_num
             GROUP BY group_id, msg_seq)
         SELECT f.group_id, f.msg_seq, f.captured_at, f.members, n.ratio, h.at, t.at
         FROM first f
         JOIN newest n USING (group_id, msg_seq)
         LEFT JOIN half h USING (group_id, msg_seq)
         LEFT JOIN ninety t USING (group_id, msg_seq)
         ORDER BY f.group_id COLLATE \"C\", f.msg_seq",
    )
    .bind(run)
    .fetch_all(pool)
    .await
    .unwrap()
}

const DAY: &str = "2026-11-25";

fn day() -> NaiveDate {
    DAY.parse().unwrap()
}

/// Minute `m` of the test's day.
fn at(m: u32) -> DateTime<Utc> {
    day().and_hms_opt(m / 60, m % 60, 0).unwrap().and_utc()
}

async fn new_run(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO receipts.export_runs (job, kind, status, host, pid, run_date)
         VALUES ('test', 'manual', 'running', 'host', 1, $1) RETURNING run_id",
    )
    .bind(day())
    .fetch_one(pool)
    .await
    .unwrap()
}

/// A snapshot of the hand-made series: group, seq, read, unread.
type Row = (&'static str, i64, i32, i32);

/// A batch of rows captured at minute `minute`.
fn batch(run_id: i64, batch_no: i32, minute: u32, rows: &[Row]) -> WriteBatch {
    WriteBatch {
        run_id,
        run_date: day(),
        batch_no,
        sdkappid: Some(1_400_000_000),
        capture_date: day(),
        rows: rows
            .iter()
            .map(|&(g, s, r, u)| SnapshotRow {
                captured_at: at(minute),
                group_id: Arc::from(g),
                msg_seq: s,
                read_num: r,
                unread_num: u,
            })
            .collect(),
        codes: vec![],
    }
}

async fn write(pool: &PgPool, b: &WriteBatch) -> WriteOutcome {
    write_batch(
        pool,
        Fence {
            run_id: b.run_id,
            epoch: 1,
        },
        b,
    )
    .await
    .unwrap()
}

/// The hand-made series: each batch is one capture of several messages.
///   g/1  10 members: 2/8 at 0, 5/5 at 10 (half), 8/2 at 20, 9/1 at 30 (90%), 10/0 at 40
///   g/2  never half: 1/9 at 0, 3/7 at 10 -> ratio 0.3
///   g/3  no member could read it (0/0): no ratio, never half
///   g/4  already past 90% when first seen: 19/1 at 10, both thresholds then
///   h/1  newest capture first (run 1, 6/4 at 30), then a backfill of older ones (run 2: 1/9
///        at 0, 5/5 at 20): first seen at 0 with 10 members, half at 20, ratio stays 0.6
async fn hand_made(pool: &PgPool) -> (i64, i64) {
    let run = new_run(pool).await;
    let series: [(u32, &[Row]); 5] = [
        (0, &[("g", 1, 2, 8), ("g", 2, 1, 9), ("g", 3, 0, 0)]),
        (10, &[("g", 1, 5, 5), ("g", 2, 3, 7), ("g", 4, 19, 1)]),
        (20, &[("g", 1, 8, 2)]),
        (30, &[("g", 1, 9, 1), ("h", 1, 6, 4)]),
        (40, &[("g", 1, 10, 0)]),
    ];
    for (no, (minute, rows)) in series.into_iter().enumerate() {
        let b = batch(run, no as i32 + 1, minute, rows);
        assert!(matches!(
            write(pool, &b).await,
            WriteOutcome::Written { .. }
        ));
    }
    let backfill = new_run(pool).await;
    write(pool, &batch(backfill, 1, 20, &[("h", 1, 5, 5)])).await;
    write(pool, &batch(backfill, 2, 0, &[("h", 1, 1, 9)])).await;
    (run, backfill)
}

#[tokio::test]
async fn the_progress_of_a_hand_made_series_is_known_and_equals_the_snapshots_query() {
    let db = TestDb::new().await;
    let (run, backfill) = hand_made(&db.pool).await;
    let want: Vec<Progress> = vec![
        (
            "g".into(),
            1,
            at(0),
            10,
            Some(1.0),
            Some(at(10)),
            Some(at(30)),
        ),
        ("g".into(), 2, at(0), 10, Some(0.3), None, None),
        ("g".into(), 3, at(0), 0, None, None, None),
        (
            "g".into(),
            4,
            at(10),
            20,
            Some(0.95),
            Some(at(10)),
            Some(at(10)),
        ),
        ("h".into(), 1, at(0), 10, Some(0.6), Some(at(20)), None),
    ];
    assert_eq!(stored(&db.pool).await, want);
    assert_eq!(from_snapshots(&db.pool).await, want);

    // The run that last changed each row: g/1 moved in every batch of run 1, h/1 in the
    // backfill (its first sighting and its half); g/3 never changed after its first batch.
    let changed_by: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT group_id, msg_seq, run_id FROM receipts.message_read_progress
         ORDER BY group_id, msg_seq",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let runs: Vec<i64> = changed_by.iter().map(|r| r.2).collect();
    assert_eq!(runs, vec![run, run, run, run, backfill]);
}

#[tokio::test]
async fn a_retried_or_repeated_batch_changes_nothing() {
    let db = TestDb::new().await;
    let (run, _) = hand_made(&db.pool).await;
    let before = stored(&db.pool).await;
    // The same batch number again (a retry after a lost COMMIT): a no-op.
    let again = batch(
        run,
        2,
        10,
        &[("g", 1, 5, 5), ("g", 2, 3, 7), ("g", 4, 19, 1)],
    );
    assert_eq!(
        write(&db.pool, &again).await,
        WriteOutcome::AlreadyCommitted
    );
    assert_eq!(stored(&db.pool).await, before);
    // And the merge itself, applied again to snapshots it has seen, changes no row.
    let mut tx = db.pool.begin().await.unwrap();
    for b in [again, batch(run, 9, 0, &[("g", 1, 2, 8), ("g", 3, 0, 0)])] {
        assert_eq!(progress::merge(&mut tx, &b).await.unwrap(), 0, "{b:?}");
    }
    tx.commit().await.unwrap();
    assert_eq!(stored(&db.pool).await, before);
}

/// Two jobs' runs overlapping on one message: run 1 changes it, run 2 (started later) changes
/// it, then run 1 again. Postgres holds run 1's last row; in the lake's change rows that row
/// has the greatest `change_no` (not the greatest run id), and each run has one row for it,
/// its last; a run's files are written once it ended, and only then.
#[tokio::test]
async fn overlapping_runs_change_rows_are_ordered_by_change_not_by_run() {
    let db = TestDb::new().await;
    let (first, second) = (new_run(&db.pool).await, new_run(&db.pool).await);
    write(&db.pool, &batch(first, 1, 0, &[("g", 1, 1, 9)])).await;
    write(&db.pool, &batch(second, 1, 10, &[("g", 1, 3, 7)])).await;
    write(&db.pool, &batch(first, 2, 20, &[("g", 1, 6, 4)])).await;
    let stored = stored(&db.pool).await;
    assert_eq!(stored[0].4, Some(0.6), "the newest snapshot's ratio");

    let lake = tempfile::tempdir().unwrap();
    let local = receipt_exporter::sink::progress_lake::Form::Hive(
        receipt_exporter::lake::Lake::Local(lake.path().to_path_buf()),
    );
    let export = |run| receipt_exporter::sink::progress_lake::export(&db.pool, &local, run);
    assert_eq!(export(None).await.unwrap(), 0, "both runs still run");
    assert_eq!(
        export(Some(second)).await.unwrap(),
        1,
        "its own, at its end"
    );
    sqlx::query("UPDATE receipts.export_runs SET status = 'succeeded' WHERE run_id = $1")
        .bind(first)
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(export(None).await.unwrap(), 1, "the ended run's");

    let rows = lake_rows(lake.path());
    let runs: Vec<(i64, Option<f64>)> = rows.iter().map(|r| (r.run_id, r.progress().4)).collect();
    assert_eq!(runs, vec![(first, Some(0.6)), (second, Some(0.3))]);
    let newest = rows.iter().max_by_key(|r| r.change_no).unwrap();
    assert_eq!(
        vec![newest.progress()],
        stored,
        "the greatest change_no is the table's row"
    );
}

/// A backfill resumed after its files were written (its run reopened, as `backfill` resumes
/// an interrupted one): its new changes make its file of that date due again. Hive-style the
/// file is written again whole under its name, holding every change of the run once.
#[tokio::test]
async fn a_resumed_runs_file_is_written_again_whole() {
    let db = TestDb::new().await;
    let lake = tempfile::tempdir().unwrap();
    let rows = resumed_run(&db, "parquet", lake.path()).await;
    let seqs: Vec<(i64, Option<f64>)> = rows.iter().map(|r| (r.msg_seq, r.progress().4)).collect();
    assert_eq!(seqs, vec![(1, Some(0.6)), (2, Some(0.1)), (3, Some(0.5))]);
    let out = run_lake_verify(&db, lake.path());
    assert!(out.contains("0 problem(s)"), "{out}");
}

/// In Iceberg mode a commit only appends: the resumed run's new changes go into a second data
/// file, the first stays (the message changed in both attempts has a row of each, and the
/// newest is the table's).
#[tokio::test]
async fn a_resumed_runs_new_changes_are_appended_to_the_iceberg_table() {
    let db = TestDb::new().await;
    let lake = tempfile::tempdir().unwrap();
    let rows = resumed_run(&db, "iceberg", lake.path()).await;
    let mut seqs: Vec<(i64, Option<f64>)> =
        rows.iter().map(|r| (r.msg_seq, r.progress().4)).collect();
    seqs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    assert_eq!(
        seqs,
        vec![
            (1, Some(0.1)),
            (1, Some(0.6)),
            (2, Some(0.1)),
            (3, Some(0.5))
        ]
    );
    // Both commits' rows are counted: the table holds what they added, nothing more or less.
    let out = lake_verify_in(&db, lake.path(), "iceberg");
    assert!(out.contains(" 0 problem(s)"), "{out}");
}

/// One run writes two messages, is interrupted and exported, then reopened: it changes one of
/// them again and a third, and is exported again. Returns the lake's rows, after checking that
/// their newest per message is the table.
async fn resumed_run(db: &TestDb, format: &str, dir: &std::path::Path) -> Vec<LakeRow> {
    use receipt_exporter::sink::progress_lake::{export, Form};
    let run = new_run(&db.pool).await;
    write(
        &db.pool,
        &batch(run, 1, 0, &[("g", 1, 1, 9), ("g", 2, 1, 9)]),
    )
    .await;
    let status = |s: &'static str| {
        sqlx::query("UPDATE receipts.export_runs SET status = $2 WHERE run_id = $1")
            .bind(run)
            .bind(s)
            .execute(&db.pool)
    };
    status("interrupted").await.unwrap();
    let lake = receipt_exporter::lake::Lake::Local(dir.to_path_buf());
    let form = match format {
        "iceberg" => Form::Iceberg(Box::new(
            receipt_exporter::sink::iceberg::IcebergLake::new(&lake).unwrap(),
        )),
        _ => Form::Hive(lake),
    };
    assert_eq!(export(&db.pool, &form, None).await.unwrap(), 1);
    assert_eq!(lake_rows_in(format, db, dir).len(), 2);

    status("running").await.unwrap();
    write(
        &db.pool,
        &batch(run, 2, 10, &[("g", 1, 6, 4), ("g", 3, 1, 1)]),
    )
    .await;
    status("succeeded").await.unwrap();
    assert_eq!(
        export(&db.pool, &form, None).await.unwrap(),
        1,
        "written again"
    );
    let rows = lake_rows_in(format, db, dir);
    let mut newest: std::collections::BTreeMap<i64, &LakeRow> = Default::default();
    for r in &rows {
        if newest
            .get(&r.msg_seq)
            .is_none_or(|n| n.change_no < r.change_no)
        {
            newest.insert(r.msg_seq, r);
        }
    }
    let newest: Vec<Progress> = newest.values().map(|r| r.progress()).collect();
    assert_same(
        &newest,
        &stored(&db.pool).await,
        "the newest after the resumed run",
    );
    rows
}

/// `lake verify` on a Hive-style lake at `dir`: its stdout (it must pass).
fn run_lake_verify(db: &TestDb, dir: &std::path::Path) -> String {
    lake_verify_in(db, dir, "parquet")
}

/// `lake verify` on the lake at `dir` in the table format `format`: its stdout (it must pass).
fn lake_verify_in(db: &TestDb, dir: &std::path::Path, format: &str) -> String {
    let out = run(exporter()
        .env("DATABASE_URL", &db.url)
        .env("EXPORT_PARQUET_DIR", dir)
        .env("EXPORT_TABLE_FORMAT", format)
        .args(["lake", "verify"]));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

#[tokio::test]
async fn each_app_has_its_own_row_for_the_same_group_and_seq() {
    let db = TestDb::new().await;
    let run = new_run(&db.pool).await;
    write(&db.pool, &batch(run, 1, 0, &[("g", 1, 1, 1)])).await;
    let other = new_run(&db.pool).await;
    let mut of_b = batch(other, 1, 5, &[("g", 1, 2, 0), ("g", 2, 1, 1)]);
    of_b.sdkappid = Some(1_400_000_123);
    write(&db.pool, &of_b).await;
    let apps: Vec<(Option<i64>, i64, Option<f64>)> = sqlx::query_as(
        "SELECT sdkappid, msg_seq, read_ratio FROM receipts.message_read_progress
         ORDER BY sdkappid, msg_seq",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    // Group ids are the apps' own: g/1 of one app and g/1 of the other are two messages, each
    // with its own ratio from its own app's latest snapshot.
    assert_eq!(
        apps,
        vec![
            (Some(1_400_000_000), 1, Some(0.5)),
            (Some(1_400_000_123), 1, Some(1.0)),
            (Some(1_400_000_123), 2, Some(0.5)),
        ]
    );
}

/// Three runs against the simulator, the read counts moving between them; the second is
/// killed at `point`. The table equals the snapshots' query and names the app; the lake's
/// change rows are exactly what each run changed, once, and their newest per message is the
/// table ([`assert_lake_matches`]).
async fn runs_with_a_kill(point: &str) {
    runs_with_a_kill_in(point, "parquet").await
}

async fn runs_with_a_kill_in(point: &str, format: &str) {
    use std::os::unix::process::ExitStatusExt;
    let sim = simulator(3, 200, |_| {});
    let db = TestDb::new().await;
    track_all(&db, &group_ids(&sim), 200).await;
    let lake = tempfile::tempdir().unwrap();
    let exporter = || {
        let mut cmd = exporter_for(&db, &sim.base_url(), lake.path());
        // 60 calls at 50/s: more than a second, so a run commits several write batches.
        cmd.env("EXPORT_BATCH_SIZE", "10")
            .env("EXPORT_TABLE_FORMAT", format)
            .env("EXPORT_CONCURRENCY", "4")
            .env("EXPORT_RATE_LIMIT", "50");
        cmd
    };
    assert_eq!(run(exporter().arg("run")).status.code(), Some(0));
    sim.advance(1);
    let killed = run(exporter()
        .env(receipt_exporter::crashpoint::ENV, point)
        .arg("run"));
    assert_eq!(killed.status.signal(), Some(9), "killed at {point}");
    let mid = stored(&db.pool).await;
    assert_eq!(mid, from_snapshots(&db.pool).await, "after the kill");
    sim.advance(1);
    let last = run(exporter().arg("run"));
    assert_eq!(last.status.code(), Some(0), "{}", stderr(&last));
    let rows = stored(&db.pool).await;
    let messages: i64 = sqlx::query_scalar("SELECT count(*) FROM receipts.receipt_latest")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(rows.len() > 300, "{} rows", rows.len());
    assert_eq!(
        rows.len() as i64,
        messages,
        "every message with a receipt has its row"
    );
    assert_eq!(rows, from_snapshots(&db.pool).await, "after the next run");
    assert!(
        rows.iter().any(|r| r.5.is_some()) && rows.iter().any(|r| r.5.is_none()),
        "the simulator's series reach half read for some messages, not all"
    );
    let apps: Vec<Option<i64>> =
        sqlx::query_scalar("SELECT DISTINCT sdkappid FROM receipts.message_read_progress")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(apps, vec![Some(SDKAPPID as i64)]);
    assert_lake_matches(format, &db, lake.path()).await;
    let (newest, reader) = match format {
        "iceberg" => (readme_pyiceberg_newest(&db), "pyiceberg"),
        _ => (readme_duckdb_newest(lake.path()), "DuckDB"),
    };
    let what = format!("the README's {reader} query over the lake");
    assert_same(&newest, &stored(&db.pool).await, &what);
    if format == "parquet" {
        let what = "the README's pandas lines over the lake";
        assert_same(
            &readme_pandas_newest(lake.path()),
            &stored(&db.pool).await,
            what,
        );
    }
    let verify = run(exporter().args(["lake", "verify"]));
    assert_eq!(
        verify.status.code(),
        Some(0),
        "{}{}",
        stdout(&verify),
        stderr(&verify)
    );
}

/// Sorts rows by message, as [`stored`] orders them (group ids in byte order, as `COLLATE "C"`).
fn by_message(rows: &mut [Progress]) {
    rows.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
}

/// `got == want`, or a panic naming `what`, both lengths and the first rows that differ (the
/// whole lists would be thousands of lines).
fn assert_same(got: &[Progress], want: &[Progress], what: &str) {
    if got == want {
        return;
    }
    let only_got: Vec<_> = got.iter().filter(|p| !want.contains(p)).take(3).collect();
    let only_want: Vec<_> = want.iter().filter(|p| !got.contains(p)).take(3).collect();
    panic!(
        "{what}: {} rows, {} wanted; only in the first: {only_got:?}; only wanted: {only_want:?}",
        got.len(),
        want.len()
    );
}

/// A change row of the lake: the file it is in, then the app, the progress columns
/// ([`Progress`]'s, times in microseconds), the run and the change number.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
struct LakeRow {
    path: String,
    sdkappid: Option<i64>,
    group_id: String,
    msg_seq: i64,
    first_seen_at: i64,
    members_at_first_seen: i32,
    /// As Python's `repr`: parsed by Rust's exact `f64` parser, not serde_json's (which may
    /// miss the last bit).
    read_ratio: Option<String>,
    half_read_at: Option<i64>,
    ninety_read_at: Option<i64>,
    run_id: i64,
    change_no: i64,
}

impl LakeRow {
    fn progress(&self) -> Progress {
        let at = |us: i64| DateTime::from_timestamp_micros(us).unwrap();
        (
            self.group_id.clone(),
            self.msg_seq,
            at(self.first_seen_at),
            self.members_at_first_seen,
            self.read_ratio.as_ref().map(|r| r.parse().unwrap()),
            self.half_read_at.map(at),
            self.ninety_read_at.map(at),
        )
    }
}

/// Every visible file of the lake's `message_read_progress/`, read with pyarrow (the
/// partition from the path), each row with its file as `path`.
const READ_HIVE: &str = r#"
import glob, sys
import pyarrow.parquet as pq
def tables():
    root = sys.argv[1]
    for path in sorted(glob.glob(root + "/message_read_progress/capture_date=*/*.parquet")):
        yield path[len(root) + 1:], pq.read_table(path)
"#;

/// The Iceberg table `receipts.message_read_progress`, read with pyiceberg through the SQL
/// catalog in the test database, each row with its partition as `path` (`capture_date=D`).
const READ_ICEBERG: &str = r#"
import sys
import pyarrow.compute as pc
from pyiceberg.catalog.sql import SqlCatalog
def tables():
    cat = SqlCatalog("receipt_exporter", uri=sys.argv[1], init_catalog_tables="false")
    t = cat.load_table("receipts.message_read_progress").scan().to_arrow()
    for day in sorted(set(t["capture_date"].to_pylist())):
        part = t.filter(pc.equal(t["capture_date"], day)).drop_columns(["capture_date"])
        yield "capture_date=%s" % day, part
"#;

/// One JSON line per row of `tables()`: times in microseconds, the ratio as `repr`.
const PRINT_ROWS: &str = r#"
import json
import pyarrow as pa
for path, t in tables():
    for name in ("first_seen_at", "half_read_at", "ninety_read_at"):
        t = t.set_column(t.schema.get_field_index(name), name, t[name].cast(pa.int64()))
    for row in t.to_pylist():
        row["path"] = path
        row["read_ratio"] = None if row["read_ratio"] is None else repr(row["read_ratio"])
        print(json.dumps(row))
"#;

/// The README's pyiceberg lines for the newest change row per message, as printed there, on
/// the test database's catalog.
fn readme_pyiceberg_newest(db: &TestDb) -> Vec<Progress> {
    let lines = readme_block("#### Read progress in the lake", "```python\n# pyiceberg");
    let script = format!(
        "import sys\nfrom pyiceberg.catalog.sql import SqlCatalog\n\
         catalog = SqlCatalog(\"receipt_exporter\", uri=sys.argv[1], init_catalog_tables=\"false\")\n\
         {}\ndef tables():\n    yield \"\", progress.drop_columns([\"capture_date\"])\n",
        lines.split_once('\n').unwrap().1
    );
    let mut rows: Vec<Progress> = read_rows(&script, &crate::iceberg::sqlalchemy_url(db))
        .iter()
        .map(LakeRow::progress)
        .collect();
    by_message(&mut rows);
    rows
}

/// The lake's change rows: the Hive-style files under `dir`, or in Iceberg mode the table in
/// `db`'s catalog.
fn lake_rows_in(format: &str, db: &TestDb, dir: &std::path::Path) -> Vec<LakeRow> {
    match format {
        "iceberg" => read_rows(READ_ICEBERG, &crate::iceberg::sqlalchemy_url(db)),
        _ => lake_rows(dir),
    }
}

/// The Hive-style change rows under `dir`.
fn lake_rows(dir: &std::path::Path) -> Vec<LakeRow> {
    read_rows(READ_HIVE, dir.to_str().unwrap())
}

fn read_rows(reader: &str, arg: &str) -> Vec<LakeRow> {
    let out = crate::tools::run_python(&format!("{reader}{PRINT_ROWS}"), &[arg]);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The README's DuckDB query for the newest change row per message, as printed there, run on
/// the lake at `dir` (for the README's `warehouse`) with the project's DuckDB.
fn readme_duckdb_newest(dir: &std::path::Path) -> Vec<Progress> {
    let query = readme_block("#### Read progress in the lake", "```sql\n-- DuckDB");
    let query = query
        .split_once('\n')
        .unwrap()
        .1
        .trim()
        .trim_end_matches(';')
        .replace("'warehouse/", &format!("'{}/", dir.display()));
    let script = r#"
import json, sys, duckdb
rows = duckdb.sql("""SELECT group_id, msg_seq, epoch_us(first_seen_at), members_at_first_seen,
    read_ratio, epoch_us(half_read_at), epoch_us(ninety_read_at) FROM (%s)""" % sys.argv[1])
for r in rows.fetchall():
    print(json.dumps([r[0], r[1], r[2], r[3], None if r[4] is None else repr(r[4]), r[5], r[6]]))
"#;
    let out = crate::tools::run_python(script, &[&query]);
    assert!(out.status.success(), "{}", stderr(&out));
    progress_lines(&stdout(&out))
}

/// The README's pandas lines for the newest change row per message, as printed there, on the
/// lake at `dir` (for the README's `warehouse`).
fn readme_pandas_newest(dir: &std::path::Path) -> Vec<Progress> {
    let block = readme_block("#### Read progress in the lake", "```python\n# pandas");
    // The block less its first line (the rest of the comment the opening starts).
    let lines = block.split_once('\n').unwrap().1;
    let lines = lines.replace("\"warehouse/", &format!("\"{}/", dir.display()));
    let script = format!(
        "{lines}\n{}",
        r#"
import json
def us(t):
    return None if pd.isna(t) else (t - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(microseconds=1)
for r in progress.itertuples(index=False):
    ratio = None if pd.isna(r.read_ratio) else repr(float(r.read_ratio))
    print(json.dumps([r.group_id, int(r.msg_seq), us(r.first_seen_at), int(r.members_at_first_seen),
                      ratio, us(r.half_read_at), us(r.ninety_read_at)]))
"#
    );
    let out = crate::tools::run_python(&script, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    progress_lines(&stdout(&out))
}

/// Rows printed one JSON array a line: group, seq, first seen (µs), members, the ratio as
/// Python's `repr`, half and 90% read (µs); sorted by message.
fn progress_lines(printed: &str) -> Vec<Progress> {
    type Line = (
        String,
        i64,
        i64,
        i32,
        Option<String>,
        Option<i64>,
        Option<i64>,
    );
    let at = |us: i64| DateTime::from_timestamp_micros(us).unwrap();
    let mut rows: Vec<Progress> = printed
        .lines()
        .map(|l| {
            let r: Line = serde_json::from_str(l).unwrap();
            let ratio = r.4.map(|x| x.parse().unwrap());
            (r.0, r.1, at(r.2), r.3, ratio, r.5.map(at), r.6.map(at))
        })
        .collect();
    by_message(&mut rows);
    rows
}

/// The lake's read-progress change rows against Postgres: each run's rows are exactly the
/// messages whose progress that run changed, with their values after it (computed from the
/// snapshots of the runs up to it, the runs having run one after another), each once, in the
/// file of its run; and the newest row per message is the table.
async fn assert_lake_matches(format: &str, db: &TestDb, dir: &std::path::Path) {
    let rows = lake_rows_in(format, db, dir);
    let mut runs: Vec<i64> = sqlx::query_scalar("SELECT run_id FROM receipts.export_runs")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    runs.sort();
    let captured: std::collections::HashMap<(i64, String, i64), NaiveDate> =
        sqlx::query_as::<_, (i64, String, i64, NaiveDate)>(
            "SELECT run_id, group_id, msg_seq, (captured_at AT TIME ZONE 'UTC')::date
             FROM receipts.receipt_snapshots",
        )
        .fetch_all(&db.pool)
        .await
        .unwrap()
        .into_iter()
        .map(|(r, g, s, d)| ((r, g, s), d))
        .collect();
    let mut before: Vec<Progress> = Vec::new();
    for run in runs {
        let after = from_snapshots_upto(&db.pool, run).await;
        let changed: Vec<Progress> = after
            .iter()
            .filter(|p| !before.contains(p))
            .cloned()
            .collect();
        let mut in_lake: Vec<Progress> = rows
            .iter()
            .filter(|r| r.run_id == run)
            .map(LakeRow::progress)
            .collect();
        by_message(&mut in_lake);
        assert_same(&in_lake, &changed, &format!("the change rows of run {run}"));
        for r in rows.iter().filter(|r| r.run_id == run) {
            let day = captured[&(run, r.group_id.clone(), r.msg_seq)];
            let want = match format {
                "iceberg" => format!("capture_date={day}"),
                _ => receipt_exporter::sink::progress_lake::relative_path(day, run),
            };
            assert_eq!(r.path, want, "dated by the capture that changed it");
        }
        before = after;
    }
    let mut newest: std::collections::BTreeMap<(Option<i64>, String, i64), &LakeRow> =
        Default::default();
    for r in &rows {
        let key = (r.sdkappid, r.group_id.clone(), r.msg_seq);
        let keep = newest.get(&key).is_none_or(|n| n.change_no < r.change_no);
        if keep {
            newest.insert(key, r);
        }
    }
    let mut from_lake: Vec<Progress> = newest.values().map(|r| r.progress()).collect();
    by_message(&mut from_lake);
    let stored = stored(&db.pool).await;
    assert_same(&from_lake, &stored, "the newest change row per message");
    assert!(newest.keys().all(|k| k.0 == Some(SDKAPPID as i64)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_is_exactly_once_when_a_run_is_killed_in_a_postgres_write() {
    runs_with_a_kill("pg_write:2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_is_exactly_once_when_a_run_is_killed_between_the_sinks() {
    runs_with_a_kill("between_sinks:2").await;
}

/// Killed with a read-progress file of the lake in place but not recorded: the next run writes
/// it again under the same name, and `lake verify` finds nothing unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lake_change_rows_are_exactly_once_when_a_run_is_killed_before_recording_its_file() {
    runs_with_a_kill("progress_lake:1").await;
}

/// The same in Iceberg mode: the change rows are the second table of the catalog,
/// `receipts.message_read_progress`, read with pyiceberg.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lake_change_rows_are_exactly_once_in_iceberg_mode_after_a_kill() {
    runs_with_a_kill_in("pg_write:2", "iceberg").await;
}

/// Killed in Iceberg mode with a read-progress data file written, its commit not begun: the
/// file is in no metadata (readers never see it), the next run commits the rows once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_iceberg_change_rows_are_exactly_once_when_a_run_is_killed_before_their_commit() {
    runs_with_a_kill_in("progress_lake:1", "iceberg").await;
}

/// `progress rebuild` through the binary: its line.
fn rebuild(db: &TestDb) -> String {
    let out = run(exporter()
        .env("DATABASE_URL", &db.url)
        .args(["progress", "rebuild"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    stdout(&out)
}

#[tokio::test]
async fn rebuild_recomputes_from_the_snapshots_and_keeps_what_retention_cut() {
    let db = TestDb::new().await;
    hand_made(&db.pool).await;
    let good = stored(&db.pool).await;
    // The definition "changed": two rows no longer what the snapshots give.
    sqlx::raw_sql(&format!(
        "UPDATE receipts.message_read_progress
         SET members_at_first_seen = 99, half_read_at = NULL WHERE group_id = 'g' AND msg_seq = 1;
         UPDATE receipts.message_read_progress
         SET half_read_at = '{}' WHERE group_id = 'g' AND msg_seq = 2;",
        at(5).to_rfc3339()
    ))
    .execute(&db.pool)
    .await
    .unwrap();
    // Retention cut h/1's series (its first two captures) and all of g/4's.
    sqlx::raw_sql(
        "DELETE FROM receipts.receipt_snapshot_rows s USING receipts.snapshot_groups g
         WHERE g.group_key = s.group_key
           AND ((g.group_id = 'h' AND s.msg_seq = 1 AND s.captured_at < '2026-11-25T00:30:00Z')
                OR (g.group_id = 'g' AND s.msg_seq = 4))",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    assert_ne!(stored(&db.pool).await, good);

    let line = rebuild(&db);
    assert!(
        line.contains("2 rows changed; kept 2 rows as they were"),
        "{line}"
    );
    assert_eq!(
        stored(&db.pool).await,
        good,
        "recomputed, and the cut rows kept"
    );
    let line = rebuild(&db);
    assert!(line.contains(": 0 rows changed; kept 2 rows"), "{line}");
    assert_eq!(stored(&db.pool).await, good);
}

/// `progress rebuild` logs what it changes as a run's batch does: the lake's change rows follow
/// the recomputed table (the command writes the files it made due, Hive-style whole), so the
/// newest change row per message in the lake is the table again, and `lake verify` is clean.
#[tokio::test]
async fn rebuild_writes_what_it_changed_to_the_lake() {
    let db = TestDb::new().await;
    hand_made(&db.pool).await;
    sqlx::query("UPDATE receipts.export_runs SET status = 'succeeded'")
        .execute(&db.pool)
        .await
        .unwrap();
    let lake = tempfile::tempdir().unwrap();
    let rebuild_in = || {
        let out = run(exporter()
            .env("DATABASE_URL", &db.url)
            .env("EXPORT_PARQUET_DIR", lake.path())
            .args(["progress", "rebuild"]));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
        stdout(&out)
    };
    let newest_in_lake = || {
        let mut newest: std::collections::BTreeMap<(String, i64), LakeRow> = Default::default();
        for r in lake_rows(lake.path()) {
            let key = (r.group_id.clone(), r.msg_seq);
            if newest.get(&key).is_none_or(|n| n.change_no < r.change_no) {
                newest.insert(key, r);
            }
        }
        let mut rows: Vec<Progress> = newest.values().map(LakeRow::progress).collect();
        by_message(&mut rows);
        rows
    };
    // Nothing to recompute: the runs' own files are written.
    let line = rebuild_in();
    assert!(line.contains(": 0 rows changed"), "{line}");
    assert!(line.contains("2 files of change rows written"), "{line}");
    let good = stored(&db.pool).await;
    assert_same(&newest_in_lake(), &good, "the lake before");

    // The definition "changed": two rows were computed otherwise, in Postgres and in the lake
    // (their change rows logged and written as the runs wrote them then).
    sqlx::raw_sql(
        "UPDATE receipts.message_read_progress
         SET members_at_first_seen = 99, half_read_at = NULL WHERE group_id = 'g' AND msg_seq = 1;
         UPDATE receipts.message_read_progress SET read_ratio = 0 WHERE group_id = 'h';
         UPDATE receipts.message_read_progress_changes c
         SET members_at_first_seen = p.members_at_first_seen, half_read_at = p.half_read_at,
             read_ratio = p.read_ratio
         FROM receipts.message_read_progress p
         WHERE (p.group_id, p.msg_seq) = (c.group_id, c.msg_seq) AND p.run_id = c.run_id;
         UPDATE receipts.message_read_progress_files SET path = NULL;",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let form = receipt_exporter::sink::progress_lake::Form::Hive(
        receipt_exporter::lake::Lake::Local(lake.path().to_path_buf()),
    );
    receipt_exporter::sink::progress_lake::export(&db.pool, &form, None)
        .await
        .unwrap();
    let old = newest_in_lake();
    assert_ne!(old, good);
    assert_same(
        &old,
        &stored(&db.pool).await,
        "the lake as the old definition left it",
    );
    let line = rebuild_in();
    assert!(line.contains("2 rows changed"), "{line}");
    assert!(line.contains("of change rows written"), "{line}");
    assert_eq!(stored(&db.pool).await, good);
    assert_same(&newest_in_lake(), &good, "the lake after the rebuild");
    let out = run_lake_verify(&db, lake.path());
    assert!(out.contains(" 0 problem(s)"), "{out}");
}

/// The README's query over the daily view, as printed there.
fn readme_daily_query() -> String {
    readme_block("### Read progress", "```sql\n")
}

/// The text of the README's first code block opening with `opening` after `heading`.
fn readme_block(heading: &str, opening: &str) -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split(heading)
        .nth(1)
        .unwrap_or_else(|| panic!("the README has a section {heading}"));
    let block = section
        .split(opening)
        .nth(1)
        .unwrap_or_else(|| panic!("with a block {opening:?}"));
    block.split("```").next().unwrap().to_string()
}

#[tokio::test]
async fn the_daily_view_sums_up_groups_and_the_readme_query_runs() {
    let db = TestDb::new().await;
    hand_made(&db.pool).await;
    type Daily = (String, NaiveDate, i64, f64, f64, i64, i64);
    let daily: Vec<Daily> = sqlx::query_as(
        "SELECT group_id, day, messages, avg_members, avg_read_ratio, half_read, ninety_read
         FROM receipts.message_read_progress_daily ORDER BY group_id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    // g: 4 messages of 10, 10, 0 and 20 members; ratios 1.0, 0.3, (none), 0.95.
    assert_eq!(daily[0].0, "g");
    assert_eq!((daily[0].1, daily[0].2), (day(), 4));
    assert!((daily[0].3 - 10.0).abs() < 1e-9, "{daily:?}");
    assert!((daily[0].4 - 2.25 / 3.0).abs() < 1e-9, "{daily:?}");
    assert_eq!((daily[0].5, daily[0].6), (2, 2));
    assert_eq!((daily[1].0.as_str(), daily[1].5, daily[1].6), ("h", 1, 0));
    let median: (sqlx::postgres::types::PgInterval,) = sqlx::query_as(
        "SELECT median_time_to_half FROM receipts.message_read_progress_daily
         WHERE group_id = 'h'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        median.0.microseconds,
        20 * 60 * 1_000_000,
        "h/1: half 20 min after first seen"
    );

    // The README's query runs; the README's day filter is relative to today, so the test's day
    // (2026-11-25) is moved into it.
    let query = readme_daily_query().replace("current_date - 7", "'2026-11-18'");
    let rows: Vec<(String, i64, f64)> = sqlx::query_as(&format!(
        "SELECT group_id, messages::int8, read_ratio FROM ({}) q ORDER BY read_ratio",
        query.trim().trim_end_matches(';')
    ))
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(rows[0].0, "h", "h reads least: {rows:?}");
    assert_eq!(rows.len(), 2);
}

/// A database with snapshots from before the table existed: the migration fills it from them.
#[tokio::test]
async fn the_migration_fills_the_table_from_the_snapshots_taken_before_it() {
    const PROGRESS: i64 = 20261206000800;
    let db = TestDb::empty().await;
    migrate_before(&db, PROGRESS).await;
    // Three runs a day apart over 7 groups x 400 messages, read counts growing run by run.
    sqlx::raw_sql(
        "INSERT INTO receipts.export_runs (job, kind, status, host, pid, run_date)
         SELECT 'j', 'manual', 'succeeded', 'h', 0, d
         FROM unnest(ARRAY['2026-11-01', '2026-11-02', '2026-11-03']::date[]) d;
         INSERT INTO receipts.snapshot_groups (group_id)
         SELECT 'g-' || k FROM generate_series(0, 6) k;
         INSERT INTO receipts.receipt_snapshot_rows
             (captured_at, msg_seq, run_id, run_date, group_key, batch_no, read_num, unread_num)
         SELECT r.run_date + make_interval(secs => i), i, r.run_id, r.run_date, g.group_key, 1,
                least(20, (i % 13) * r.run_id::int), 20 - least(20, (i % 13) * r.run_id::int)
         FROM receipts.export_runs r, receipts.snapshot_groups g, generate_series(1, 400) i;",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    receipt_exporter::db::migrate(&db.pool).await.unwrap();
    let rows = stored(&db.pool).await;
    assert_eq!(rows.len(), 7 * 400);
    assert_eq!(rows, from_snapshots(&db.pool).await);
    let reached: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM receipts.message_read_progress
         WHERE half_read_at > first_seen_at AND ninety_read_at > half_read_at",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(
        reached > 0,
        "some messages passed each threshold at a later run"
    );

    // Logged once for the lake, under the run that last changed each row: the next run's end
    // (here the export it calls) writes them, and the lake's newest rows are the table.
    let lake = tempfile::tempdir().unwrap();
    let local = receipt_exporter::sink::progress_lake::Form::Hive(
        receipt_exporter::lake::Lake::Local(lake.path().to_path_buf()),
    );
    let written = receipt_exporter::sink::progress_lake::export(&db.pool, &local, None)
        .await
        .unwrap();
    assert!(written >= 1);
    let in_lake = lake_rows(lake.path());
    assert_eq!(in_lake.len(), rows.len(), "one change row per message");
    let mut newest: Vec<Progress> = in_lake.iter().map(LakeRow::progress).collect();
    by_message(&mut newest);
    assert_same(&newest, &rows, "the rows from before the lake held them");
    let again = receipt_exporter::sink::progress_lake::export(&db.pool, &local, None)
        .await
        .unwrap();
    assert_eq!(again, 0, "written once");
}

/// In Iceberg mode the read progress's table is the lake's truth like the snapshots' table
/// (one check for both, `table_check_of`): a data file deleted by hand is named by `lake
/// verify` and `doctor` and replaced by `--repair` from the change log in one overwrite commit;
/// a table another engine dropped (pyiceberg's `drop_table`) is never created again empty by a
/// run (the run is partial, naming the repair, and its change rows wait in Postgres), `lake
/// verify` names it and `--repair` creates it again with every change row; `iceberg maintain`
/// then maintains it too and leaves its live files. pyiceberg reads Postgres's rows after each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_iceberg_read_progress_table_is_checked_and_repaired_like_the_snapshots() {
    let sim = simulator(3, 200, |_| {});
    let db = TestDb::new().await;
    track_all(&db, &group_ids(&sim), 200).await;
    let lake = tempfile::tempdir().unwrap();
    let exporter = || {
        let mut cmd = exporter_for(&db, &sim.base_url(), lake.path());
        cmd.env("EXPORT_TABLE_FORMAT", "iceberg");
        cmd
    };
    for _ in 0..2 {
        let out = run(exporter().arg("run"));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        sim.advance(1);
    }
    assert_lake_matches("iceberg", &db, lake.path()).await;
    let sorted_rows = || {
        let mut rows: Vec<(i64, String, i64, i64)> = lake_rows_in("iceberg", &db, lake.path())
            .into_iter()
            .map(|r| (r.run_id, r.group_id, r.msg_seq, r.change_no))
            .collect();
        rows.sort();
        rows
    };
    // Runs `args`, checks the exit code and that stdout says `text`; returns stdout.
    let says = |args: &[&str], code: i32, text: &str| {
        let out = run(exporter().args(args));
        let printed = stdout(&out);
        assert_eq!(out.status.code(), Some(code), "{printed}{}", stderr(&out));
        assert!(printed.contains(text), "{printed}");
        printed
    };
    let before = sorted_rows();
    assert!(before.len() > 300, "{} change rows", before.len());

    // 1. A data file of the table deleted by hand.
    let first_file = || async {
        let path: String = sqlx::query_scalar(
            "SELECT path FROM receipts.message_read_progress_files
             WHERE path IS NOT NULL ORDER BY run_id LIMIT 1",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        path
    };
    let path = first_file().await;
    std::fs::remove_file(lake.path().join(&path)).unwrap();
    let missing = format!("{path}: missing (read progress of run");
    says(&["lake", "verify"], 1, &missing);
    let doctor = run(exporter().arg("doctor"));
    assert!(stdout(&doctor).contains(&path), "{}", stdout(&doctor));
    says(
        &["lake", "verify", "--repair"],
        0,
        &format!("repaired: {path}"),
    );
    assert_eq!(
        sorted_rows(),
        before,
        "pyiceberg reads every change row again"
    );
    let replaced = first_file().await;
    assert_ne!(
        replaced, path,
        "the new file is recorded in the lost one's place"
    );
    assert!(lake.path().join(&replaced).exists());

    // 2. The table dropped by another engine.
    let drop = crate::tools::run_python(
        "import sys\nfrom pyiceberg.catalog.sql import SqlCatalog\n\
         cat = SqlCatalog('receipt_exporter', uri=sys.argv[1], init_catalog_tables='false')\n\
         cat.drop_table('receipts.message_read_progress')\n",
        &[&crate::iceberg::sqlalchemy_url(&db)],
    );
    assert!(drop.status.success(), "{}", stderr(&drop));
    let out = run(exporter().arg("run"));
    assert_eq!(out.status.code(), Some(3), "partial: {}", stderr(&out));
    assert!(
        stderr(&out).contains("lake verify --repair"),
        "{}",
        stderr(&out)
    );
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM receipts.iceberg_tables WHERE table_name = 'message_read_progress'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(tables, 0, "a run never creates the table again empty");
    let dropped = "receipts.message_read_progress is not in the catalog";
    says(&["lake", "verify"], 1, dropped);
    let recreated = "receipts.message_read_progress created again";
    says(&["lake", "verify", "--repair"], 0, recreated);
    // Every run's change rows, the third's too, each once.
    assert_lake_matches("iceberg", &db, lake.path()).await;
    let after = sorted_rows();
    assert!(before.iter().all(|r| after.contains(r)));

    // 3. Maintained like the snapshots' table: the dropped table's files are orphans now, the
    // live ones stay.
    let maintain = ["iceberg", "maintain", "--expire-older-than", "0s"];
    let printed = says(
        &[&maintain[..], &["--orphan-min-age", "0s"]].concat(),
        0,
        "",
    );
    let line = printed
        .lines()
        .find(|l| l.starts_with("iceberg receipts.message_read_progress: "))
        .unwrap_or_else(|| panic!("{printed}"));
    assert!(!line.contains(" 0 orphan file(s) removed"), "{line}");
    assert!(
        !lake.path().join(&replaced).exists(),
        "the dropped table's file"
    );
    assert_lake_matches("iceberg", &db, lake.path()).await;
    says(&["lake", "verify"], 0, " 0 problem(s)");
}
