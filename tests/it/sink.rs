//! The sinks against a real Postgres and real files: exactly-once batches, the Parquet file
//! format and its atomic commit, the manifest, and repair after simulated crashes.

use crate::helpers::TestDb;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use receipt_exporter::lake::Lake;
use receipt_exporter::sink::fence::{take_over, TakeOver};
use receipt_exporter::sink::manifest::{self, record_file};
use receipt_exporter::sink::parquet::{
    self as pq, CommittedFile, ParquetRow, PartitionWriter, RunParquet, SealedFile,
};
use receipt_exporter::sink::postgres::{write_batch, write_batch_retrying, WriteOutcome};
use receipt_exporter::sink::rebuild::rebuild_dates;
use receipt_exporter::sink::warehouse;
use receipt_exporter::sink::LakeTarget;
use receipt_exporter::sink::{Fence, ItemCodeRow, SinkError, SnapshotRow, WriteBatch};
use sqlx::PgPool;
use std::path::Path;
use std::sync::Arc;

const DAY: &str = "2026-11-25";

/// The Hive-style target on the local lake `root`.
fn hive(root: &Path) -> LakeTarget {
    LakeTarget::unchecked_hive(&Lake::Local(root.to_path_buf()))
}

fn day() -> NaiveDate {
    DAY.parse().unwrap()
}

fn at(seconds_into_day: i64) -> DateTime<Utc> {
    day().and_hms_opt(0, 0, 0).unwrap().and_utc()
        + Duration::microseconds(seconds_into_day * 1_000_000 + 123_456)
}

async fn new_run(pool: &PgPool, status: &str) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO receipts.export_runs (job, kind, status, host, pid, run_date)
         VALUES ('test', 'manual', $1, 'host', 1, $2) RETURNING run_id",
    )
    .bind(status)
    .bind(day())
    .fetch_one(pool)
    .await
    .unwrap()
}

/// The fence a run opened by [`new_run`] is written under (its first epoch).
fn fence(run_id: i64) -> Fence {
    Fence { run_id, epoch: 1 }
}

/// Commits `b` to Postgres under its run's first fence.
async fn write(pool: &PgPool, b: &WriteBatch) -> Result<WriteOutcome, SinkError> {
    write_batch(pool, fence(b.run_id), b).await
}

/// Renames sealed files into place, without the manifest.
fn placed(files: Vec<SealedFile>) -> Vec<CommittedFile> {
    files
        .into_iter()
        .map(|mut f| {
            f.rename_into_place().unwrap();
            f.into_committed()
        })
        .collect()
}

/// Takes a finished run over for a repair.
async fn taken(pool: &PgPool, run_id: i64) -> Fence {
    match take_over(pool, run_id, "a test repair").await.unwrap() {
        TakeOver::Taken(fence) => fence,
        other => panic!("run {run_id} not taken over: {other:?}"),
    }
}

/// A batch of `n` rows of group `group`, seqs from `first_seq`, captured at second `second`.
fn batch(
    run_id: i64,
    batch_no: i32,
    group: &str,
    first_seq: i64,
    n: usize,
    second: i64,
) -> WriteBatch {
    let group_id: Arc<str> = Arc::from(group);
    let rows = (0..n as i64)
        .map(|i| SnapshotRow {
            captured_at: at(second),
            group_id: group_id.clone(),
            msg_seq: first_seq + i,
            read_num: (i % 50) as i32,
            unread_num: 100 - (i % 50) as i32,
        })
        .collect();
    WriteBatch {
        run_id,
        run_date: day(),
        batch_no,
        sdkappid: APP,
        capture_date: day(),
        rows,
        codes: vec![],
    }
}

fn expected(batch: &WriteBatch) -> Vec<ParquetRow> {
    batch
        .rows
        .iter()
        .map(|r| ParquetRow {
            run_id: batch.run_id,
            captured_at_micros: r.captured_at.timestamp_micros(),
            group_id: r.group_id.to_string(),
            msg_seq: r.msg_seq,
            read_num: r.read_num,
            unread_num: r.unread_num,
            sdkappid: batch.sdkappid,
        })
        .collect()
}

/// The app the batches of these tests are of.
const APP: Option<i64> = Some(1_400_000_000);

type PgRow = (i64, i32, DateTime<Utc>, String, i64, i32, i32, Option<i64>);

async fn pg_rows(pool: &PgPool, run_id: i64) -> Vec<PgRow> {
    sqlx::query_as(
        "SELECT run_id, batch_no, captured_at, group_id, msg_seq, read_num, unread_num, sdkappid
         FROM receipts.receipt_snapshots WHERE run_id = $1 ORDER BY group_id, msg_seq",
    )
    .bind(run_id)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Every row in the committed `*.parquet` files under `root` (temporary files excluded).
fn parquet_rows(root: &Path) -> Vec<ParquetRow> {
    let mut rows = Vec::new();
    for dir in std::fs::read_dir(root.join(pq::TABLE_DIR)).unwrap() {
        let dir = dir.unwrap().path();
        if dir.file_name().unwrap().to_str().unwrap().starts_with('.') {
            continue;
        }
        for file in std::fs::read_dir(&dir).unwrap() {
            let path = file.unwrap().path();
            if path.extension().is_some_and(|e| e == "parquet") {
                rows.extend(pq::read_rows(&path).unwrap());
            }
        }
    }
    rows.sort();
    rows
}

fn as_parquet(rows: &[PgRow]) -> Vec<ParquetRow> {
    let mut out: Vec<ParquetRow> = rows
        .iter()
        .map(|(run_id, _, at, g, s, r, u, app)| ParquetRow {
            run_id: *run_id,
            captured_at_micros: at.timestamp_micros(),
            group_id: g.clone(),
            msg_seq: *s,
            read_num: *r,
            unread_num: *u,
            sdkappid: *app,
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn write_batch_inserts_exactly_the_rows_and_a_repeat_changes_nothing() {
    let db = TestDb::new().await;
    let run = new_run(&db.pool, "running").await;
    let b = batch(run, 1, "@TGS#group", 10, 3, 5);

    let first = write(&db.pool, &b).await.unwrap();
    assert_eq!(first, WriteOutcome::Written { rows: 3, codes: 0 });
    let rows = pg_rows(&db.pool, run).await;
    let want: Vec<PgRow> = vec![
        (run, 1, at(5), "@TGS#group".into(), 10, 0, 100, APP),
        (run, 1, at(5), "@TGS#group".into(), 11, 1, 99, APP),
        (run, 1, at(5), "@TGS#group".into(), 12, 2, 98, APP),
    ];
    assert_eq!(rows, want);
    let run_date: NaiveDate =
        sqlx::query_scalar("SELECT DISTINCT run_date FROM receipts.receipt_snapshots")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(run_date, day());

    // The same batch number again (a retry after an ambiguous COMMIT), even with other rows.
    let again = write(&db.pool, &batch(run, 1, "@TGS#group", 500, 2, 9))
        .await
        .unwrap();
    assert_eq!(again, WriteOutcome::AlreadyCommitted);
    assert_eq!(pg_rows(&db.pool, run).await, want);
    let ledger: (i32, i32, Option<i64>) = sqlx::query_as(
        "SELECT row_count, code_count, parquet_file_id FROM receipts.write_batches WHERE run_id = $1",
    )
    .bind(run)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(ledger, (3, 0, None));
}

#[tokio::test]
async fn item_codes_are_stored_and_latest_keeps_the_newest_capture() {
    let db = TestDb::new().await;
    let run = new_run(&db.pool, "running").await;
    let mut b = batch(run, 1, "g1", 1, 2, 100);
    b.codes.push(ItemCodeRow {
        captured_at: at(100),
        group_id: Arc::from("g1"),
        msg_seq: 3,
        code: 10062,
    });
    assert_eq!(
        write(&db.pool, &b).await.unwrap(),
        WriteOutcome::Written { rows: 2, codes: 1 }
    );
    let codes: Vec<(i64, i32, DateTime<Utc>, String, i64, i32)> = sqlx::query_as(
        "SELECT run_id, batch_no, captured_at, group_id, msg_seq, code FROM receipts.receipt_item_codes",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(codes, vec![(run, 1, at(100), "g1".to_string(), 3, 10062)]);

    // A newer capture of seq 1 (another run) wins; an older capture of seq 2 arriving later
    // (a backfill) does not overwrite.
    let (second, third) = (
        new_run(&db.pool, "running").await,
        new_run(&db.pool, "running").await,
    );
    let mut newer = batch(second, 1, "g1", 1, 1, 200);
    newer.rows[0].read_num = 42;
    let mut older = batch(third, 1, "g1", 2, 1, 50);
    older.rows[0].read_num = 7;
    write(&db.pool, &newer).await.unwrap();
    write(&db.pool, &older).await.unwrap();
    let latest: Vec<(i64, i64, DateTime<Utc>, i32, i32)> = sqlx::query_as(
        "SELECT msg_seq, run_id, captured_at, read_num, unread_num FROM receipts.receipt_latest
         WHERE group_id = 'g1' ORDER BY msg_seq",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        latest,
        vec![(1, second, at(200), 42, 100), (2, run, at(100), 1, 99)]
    );
}

#[tokio::test]
async fn group_ids_with_backslashes_quotes_and_unicode_round_trip_through_both_sinks() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let run = new_run(&db.pool, "running").await;
    let odd = ["a\\b", "\\N", "q'\"uote", "组群_ü😀", "tab\\t", "comma,;|"];
    let mut b = batch(run, 1, "plain", 1, 0, 1);
    for (i, g) in odd.iter().enumerate() {
        b.rows.extend(batch(run, 1, g, i as i64, 1, 1).rows);
    }
    write(&db.pool, &b).await.unwrap();
    let mut stored: Vec<String> = pg_rows(&db.pool, run)
        .await
        .into_iter()
        .map(|r| r.3)
        .collect();
    let mut want: Vec<String> = odd.iter().map(|s| s.to_string()).collect();
    stored.sort();
    want.sort();
    assert_eq!(stored, want);

    let mut writer = PartitionWriter::open(dir.path(), run, day(), 1).unwrap();
    writer.append(&b).unwrap();
    let file = writer.commit().unwrap();
    assert_eq!(
        pq::read_rows(&dir.path().join(&file.relative_path)).unwrap(),
        expected(&b)
    );
}

#[tokio::test]
async fn retrying_write_fails_at_once_on_a_constraint_violation() {
    let db = TestDb::new().await;
    let run = new_run(&db.pool, "running").await;
    let mut b = batch(run, 1, "g", 1, 2, 1);
    b.rows[1].read_num = -1;
    let bound = std::time::Duration::from_secs(5);
    let err = write_batch_retrying(&db.pool, fence(run), &b, bound)
        .await
        .unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert!(err.to_string().contains("read_num_check"), "{err}");
    let ledger: i64 = sqlx::query_scalar("SELECT count(*) FROM receipts.write_batches")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(ledger, 0, "the failed transaction left no claim behind");

    let ok = write_batch_retrying(&db.pool, fence(run), &batch(run, 1, "g", 1, 2, 1), bound)
        .await
        .unwrap();
    assert_eq!(ok, WriteOutcome::Written { rows: 2, codes: 0 });
}

#[tokio::test]
async fn an_administrator_shutdown_of_the_connection_is_retryable() {
    let db = TestDb::new().await;
    let err = sqlx::query("SELECT pg_terminate_backend(pg_backend_pid())")
        .execute(&db.pool)
        .await
        .unwrap_err();
    assert!(
        receipt_exporter::sink::postgres::is_connection_error(&err),
        "{err:?}"
    );
    let dup = sqlx::query("INSERT INTO receipts.tracked_groups (group_id) VALUES ('x'), ('x')")
        .execute(&db.pool)
        .await
        .unwrap_err();
    assert!(
        !receipt_exporter::sink::postgres::is_connection_error(&dup),
        "{dup:?}"
    );
}

#[test]
fn parquet_file_has_the_exact_schema_compression_and_metadata() {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let dir = tempfile::tempdir().unwrap();
    let b1 = batch(12, 1, "g1", 1, 100, 1);
    let b2 = batch(12, 2, "g2", 1, 50, 2);
    let mut writer = PartitionWriter::open(dir.path(), 12, day(), 3).unwrap();
    writer.append(&b1).unwrap();
    writer.append(&b2).unwrap();
    let file = writer.commit().unwrap();
    assert_eq!(
        file.relative_path,
        format!("receipt_snapshots/capture_date={DAY}/run-12-0003.parquet")
    );
    assert_eq!(
        (
            file.capture_date,
            file.part,
            file.row_count,
            file.batch_nos.clone()
        ),
        (day(), 3, 150, vec![1, 2])
    );
    let path = dir.path().join(&file.relative_path);
    assert_eq!(file.byte_size, std::fs::metadata(&path).unwrap().len());

    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(&path).unwrap(),
    )
    .unwrap();
    let fields: Vec<String> = reader
        .schema()
        .fields()
        .iter()
        .map(|f| format!("{} {} {}", f.name(), f.data_type(), f.is_nullable()))
        .collect();
    assert_eq!(
        fields,
        [
            "run_id Int64 false",
            "captured_at Timestamp(µs, \"UTC\") false",
            "group_id Utf8 false",
            "msg_seq Int64 false",
            "read_num Int32 false",
            "unread_num Int32 false",
            "sdkappid Int64 true",
        ]
    );
    let meta = SerializedFileReader::new(std::fs::File::open(&path).unwrap())
        .unwrap()
        .metadata()
        .clone();
    let kv = meta.file_metadata().key_value_metadata().unwrap();
    let get = |k: &str| kv.iter().find(|e| e.key == k).and_then(|e| e.value.clone());
    assert_eq!(
        get("receipt_exporter.schema_version").as_deref(),
        Some(pq::SCHEMA_VERSION)
    );
    assert_eq!(
        get("receipt_exporter.writer_version").as_deref(),
        Some(env!("CARGO_PKG_VERSION"))
    );
    let column = meta.row_group(0).column(2);
    assert_eq!(column.compression().to_string(), "ZSTD(ZstdLevel(1))");
    assert_eq!(meta.num_row_groups(), 1);

    let mut want = expected(&b1);
    want.extend(expected(&b2));
    assert_eq!(pq::read_rows(&path).unwrap(), want);
}

#[test]
fn the_file_is_hidden_while_written_and_only_the_final_name_remains() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = PartitionWriter::open(dir.path(), 12, day(), 1).unwrap();
    writer.append(&batch(12, 1, "g", 1, 10, 1)).unwrap();
    let temp = writer.temp_path().to_path_buf();
    let partition = dir.path().join(pq::partition_dir(day()));
    assert_eq!(
        temp.parent().unwrap(),
        partition,
        "written in the target directory"
    );
    let name = temp.file_name().unwrap().to_str().unwrap().to_string();
    assert!(
        name.starts_with('.') && !name.ends_with(".parquet"),
        "{name}"
    );
    assert!(temp.exists());
    writer.commit().unwrap();
    let names: Vec<String> = std::fs::read_dir(&partition)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["run-12-0001.parquet"]);
}

#[test]
fn a_link_planted_at_a_temporary_or_final_name_is_never_written_through() {
    let dir = tempfile::tempdir().unwrap();
    let partition = dir.path().join(pq::partition_dir(day()));
    std::fs::create_dir_all(&partition).unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    // The temporary name earlier versions used, and the final name, both planted.
    std::os::unix::fs::symlink(&victim, partition.join(".run-12-0001.parquet.tmp")).unwrap();
    std::os::unix::fs::symlink(&victim, partition.join("run-12-0001.parquet")).unwrap();
    let mut writer = PartitionWriter::open(dir.path(), 12, day(), 1).unwrap();
    let temp_name = writer
        .temp_path()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        temp_name.starts_with(".run-12-0001.") && temp_name.ends_with(".parquet.tmp"),
        "{temp_name}"
    );
    assert_ne!(temp_name, ".run-12-0001.parquet.tmp", "a random part");
    let b = batch(12, 1, "g", 1, 10, 1);
    writer.append(&b).unwrap();
    let file = writer.commit().unwrap();
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    let path = dir.path().join(&file.relative_path);
    assert!(!std::fs::symlink_metadata(&path).unwrap().is_symlink());
    assert_eq!(pq::read_rows(&path).unwrap(), expected(&b));
}

#[test]
fn file_errors_name_the_path_and_what_failed() {
    let dir = tempfile::tempdir().unwrap();
    // The final name is taken by a non-empty directory: the rename cannot replace it.
    let partition = dir.path().join(pq::partition_dir(day()));
    std::fs::create_dir_all(partition.join("run-12-0001.parquet/inside")).unwrap();
    let mut writer = PartitionWriter::open(dir.path(), 12, day(), 1).unwrap();
    writer.append(&batch(12, 1, "g", 1, 10, 1)).unwrap();
    let err = writer.commit().unwrap_err().to_string();
    assert!(
        err.contains("renaming") && err.contains("run-12-0001.parquet"),
        "{err}"
    );

    // The partition directory cannot be created: a file is in its place.
    let other = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(other.path().join(pq::TABLE_DIR)).unwrap();
    std::fs::write(other.path().join(pq::partition_dir(day())), b"x").unwrap();
    let err = PartitionWriter::open(other.path(), 12, day(), 1)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("creating the partition directory") && err.contains(DAY),
        "{err}"
    );
}

#[tokio::test]
async fn run_parquet_rolls_parts_between_batches_and_keeps_dates_apart() {
    let dir = tempfile::tempdir().unwrap();
    let mut run = RunParquet::new(dir.path(), 12, 4).with_max_rows_per_file(25);
    let mut rolled = Vec::new();
    for no in 1..=4 {
        rolled.extend(
            run.append(&batch(12, no, "g", no as i64 * 100, 10, 1))
                .await
                .unwrap(),
        );
    }
    let mut next_day = batch(12, 5, "g", 1, 5, 1);
    next_day.capture_date = day().succ_opt().unwrap();
    for row in &mut next_day.rows {
        row.captured_at += Duration::days(1);
    }
    rolled.extend(run.append(&next_day).await.unwrap());
    rolled.extend(run.append(&batch(12, 6, "g", 1, 0, 1)).await.unwrap());
    assert_eq!(
        rolled.len(),
        1,
        "the third batch would pass 25 rows: the first file rolled"
    );
    let rolled = placed(rolled);
    assert_eq!(
        (
            rolled[0].part,
            rolled[0].row_count,
            rolled[0].batch_nos.clone()
        ),
        (4, 20, vec![1, 2])
    );
    let rest = placed(run.finish().await.unwrap());
    let summary: Vec<(NaiveDate, i32, u64, Vec<i32>)> = rest
        .iter()
        .map(|f| (f.capture_date, f.part, f.row_count, f.batch_nos.clone()))
        .collect();
    assert_eq!(
        summary,
        [
            (day(), 5, 20, vec![3, 4, 6]),
            (day().succ_opt().unwrap(), 6, 5, vec![5])
        ]
    );
    assert_eq!(parquet_rows(dir.path()).len(), 45);
}

#[tokio::test]
async fn record_file_is_idempotent_and_points_the_batches_at_the_file() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let run = new_run(&db.pool, "running").await;
    for no in 1..=3 {
        write(&db.pool, &batch(run, no, "g", no as i64 * 10, 5, 1))
            .await
            .unwrap();
    }
    assert_eq!(manifest::next_part(&db.pool, run).await.unwrap(), 1);
    let mut parquet = RunParquet::new(dir.path(), run, 1);
    parquet.append(&batch(run, 1, "g", 10, 5, 1)).await.unwrap();
    parquet.append(&batch(run, 2, "g", 20, 5, 1)).await.unwrap();
    let file = placed(parquet.finish().await.unwrap()).remove(0);

    let id = record_file(&db.pool, fence(run), &file).await.unwrap();
    assert_eq!(record_file(&db.pool, fence(run), &file).await.unwrap(), id);
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM receipts.parquet_files")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(count, 1);
    let stored: (String, i64, i64, i32) = sqlx::query_as(
        "SELECT path, row_count, byte_size, part FROM receipts.parquet_files WHERE file_id = $1",
    )
    .bind(id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        stored,
        (file.relative_path.clone(), 10, file.byte_size as i64, 1)
    );
    assert_eq!(manifest::next_part(&db.pool, run).await.unwrap(), 2);
    assert_eq!(
        manifest::unexported_batches(&db.pool, run).await.unwrap(),
        [(3, day())]
    );
    assert_eq!(
        manifest::runs_needing_repair(&db.pool).await.unwrap(),
        Vec::<i64>::new(),
        "still running"
    );
    sqlx::query("UPDATE receipts.export_runs SET status = 'interrupted'")
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        manifest::runs_needing_repair(&db.pool).await.unwrap(),
        [run]
    );
}

#[tokio::test]
async fn rebuild_run_repairs_every_crash_state_without_duplicates() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let run = new_run(&db.pool, "running").await;
    let other = new_run(&db.pool, "running").await;
    let batches: Vec<WriteBatch> = (1..=5)
        .map(|no| batch(run, no, "g", no as i64 * 1000, 40, no as i64))
        .collect();
    for b in &batches {
        write(&db.pool, b).await.unwrap();
    }
    // Batch 1: exported and recorded. Batch 2: renamed into place, crash before the manifest
    // (an orphan). Batch 3: crash while written (a temporary file). Batches 4 and 5: never
    // reached Parquet. Another run's file sits in the same directory and must survive.
    let recorded = {
        let mut w = PartitionWriter::open(root, run, day(), 1).unwrap();
        w.append(&batches[0]).unwrap();
        w.commit().unwrap()
    };
    record_file(&db.pool, fence(run), &recorded).await.unwrap();
    let mut orphan = PartitionWriter::open(root, run, day(), 2).unwrap();
    orphan.append(&batches[1]).unwrap();
    let orphan = orphan.commit().unwrap();
    let mut temp = PartitionWriter::open(root, run, day(), 3).unwrap();
    temp.append(&batches[2]).unwrap();
    let temp_path = temp.temp_path().to_path_buf();
    std::mem::forget(temp); // killed: no destructor removes the temporary file
                            // A temporary file of a version before names had a random part.
    let legacy_temp = root
        .join(pq::partition_dir(day()))
        .join(format!(".run-{run}-0004.parquet.tmp"));
    std::fs::write(&legacy_temp, b"half a file").unwrap();
    let mut foreign = PartitionWriter::open(root, other, day(), 1).unwrap();
    foreign.append(&batch(other, 1, "h", 1, 3, 1)).unwrap();
    let foreign = foreign.commit().unwrap();
    sqlx::query("UPDATE receipts.export_runs SET status = 'failed' WHERE run_id = $1")
        .bind(run)
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        manifest::runs_needing_repair(&db.pool).await.unwrap(),
        [run]
    );

    // A running run is its own process's to repair: it cannot be taken over.
    assert_eq!(
        take_over(&db.pool, other, "a test repair").await.unwrap(),
        TakeOver::Running
    );
    let owner = taken(&db.pool, run).await;
    assert_eq!(owner.epoch, 2);
    let report = hive(root).rebuild_run(&db.pool, owner).await.unwrap();
    let mut removed: Vec<std::path::PathBuf> =
        report.removed.iter().map(|r| root.join(r)).collect();
    removed.sort();
    let mut want = vec![temp_path, legacy_temp, root.join(&orphan.relative_path)];
    want.sort();
    assert_eq!(removed, want);
    assert_eq!(report.rows, 160);
    assert!(
        root.join(&foreign.relative_path).exists(),
        "another run's file is left alone"
    );
    assert_eq!(
        manifest::unexported_batches(&db.pool, run).await.unwrap(),
        []
    );
    assert_eq!(
        manifest::runs_needing_repair(&db.pool).await.unwrap(),
        Vec::<i64>::new()
    );
    let mine: Vec<ParquetRow> = parquet_rows(root)
        .into_iter()
        .filter(|r| r.run_id == run)
        .collect();
    assert_eq!(mine, as_parquet(&pg_rows(&db.pool, run).await));

    // A second repair finds nothing to do.
    let again = hive(root)
        .rebuild_run(&db.pool, taken(&db.pool, run).await)
        .await
        .unwrap();
    assert_eq!((again.removed.len(), again.files.len()), (0, 0));
    assert!(matches!(
        take_over(&db.pool, 9999, "a test repair").await,
        Err(SinkError::UnknownRun(9999))
    ));
}

#[tokio::test]
async fn publishing_never_replaces_a_file_the_manifest_counts_on() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let run = new_run(&db.pool, "running").await;
    let (b1, b2) = (batch(run, 1, "g", 1, 5, 1), batch(run, 2, "g", 10, 3, 1));
    write(&db.pool, &b1).await.unwrap();
    write(&db.pool, &b2).await.unwrap();
    let bound = std::time::Duration::from_secs(1);
    let sealed = |b: &WriteBatch| {
        let b = b.clone();
        async move {
            let mut p = RunParquet::new(root, run, 1);
            p.append(&b).await.unwrap();
            p.finish().await.unwrap().remove(0)
        }
    };
    let first = manifest::publish(&db.pool, fence(run), sealed(&b1).await, bound)
        .await
        .unwrap();
    // The same name again, for other rows (as if a rebuild had used it): refused, untouched.
    let err = manifest::publish(&db.pool, fence(run), sealed(&b2).await, bound)
        .await
        .unwrap_err();
    assert!(matches!(err, SinkError::AlreadyRecorded { .. }), "{err}");
    assert_eq!(
        pq::read_rows(&root.join(&first.relative_path)).unwrap(),
        expected(&b1)
    );
    let names: Vec<String> = std::fs::read_dir(root.join(pq::partition_dir(day())))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        names,
        [format!("run-{run}-0001.parquet")],
        "no temporary file left"
    );
}

#[tokio::test]
async fn a_taken_over_run_can_commit_publish_and_record_nothing_more() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let run = new_run(&db.pool, "running").await;
    write(&db.pool, &batch(run, 1, "g", 1, 5, 1)).await.unwrap();
    let mut parquet = RunParquet::new(root, run, 1);
    parquet.append(&batch(run, 1, "g", 1, 5, 1)).await.unwrap();
    let sealed = parquet.finish().await.unwrap().remove(0);
    let temp_dir = root.join(pq::partition_dir(day()));
    sqlx::query("UPDATE receipts.export_runs SET status = 'abandoned' WHERE run_id = $1")
        .bind(run)
        .execute(&db.pool)
        .await
        .unwrap();
    let owner = taken(&db.pool, run).await;

    fn fenced<T>(r: Result<T, SinkError>) -> bool {
        matches!(r, Err(SinkError::Fenced { by, .. }) if by == "a test repair")
    }
    assert!(fenced(write(&db.pool, &batch(run, 2, "g", 10, 5, 1)).await));
    let bound = std::time::Duration::from_secs(1);
    assert!(fenced(
        manifest::publish(&db.pool, fence(run), sealed, bound).await
    ));
    assert!(
        std::fs::read_dir(&temp_dir).unwrap().next().is_none(),
        "the fenced file was never renamed, and its temporary file is gone"
    );
    let late = placed({
        let mut p = RunParquet::new(root, run, 7);
        p.append(&batch(run, 1, "g", 1, 5, 1)).await.unwrap();
        p.finish().await.unwrap()
    })
    .remove(0);
    assert!(fenced(record_file(&db.pool, fence(run), &late).await));
    let (batches, files): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM receipts.write_batches),
                (SELECT count(*) FROM receipts.parquet_files)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        (batches, files),
        (1, 0),
        "nothing of the fenced writer landed"
    );

    // The new owner writes under its own fence.
    let report = hive(root).rebuild_run(&db.pool, owner).await.unwrap();
    assert_eq!(report.removed, std::slice::from_ref(&late.relative_path));
    assert_eq!(report.rows, 5);
}

#[tokio::test]
async fn rebuild_dates_rewrites_a_day_to_exactly_what_postgres_holds() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (a, b) = (
        new_run(&db.pool, "succeeded").await,
        new_run(&db.pool, "succeeded").await,
    );
    let mut parquet = RunParquet::new(root, a, 1);
    for no in 1..=3 {
        let wb = batch(a, no, "g", no as i64 * 100, 30, no as i64);
        write(&db.pool, &wb).await.unwrap();
        // Batch 3 never reaches Parquet; the day's rebuild must still include it.
        if no < 3 {
            parquet.append(&wb).await.unwrap();
        }
    }
    for file in placed(parquet.finish().await.unwrap()) {
        record_file(&db.pool, fence(a), &file).await.unwrap();
    }
    write(&db.pool, &batch(b, 1, "h\\x", 1, 20, 9))
        .await
        .unwrap();
    // A stray file that is in no manifest: the rebuilt day must not keep it.
    std::fs::write(
        root.join(pq::partition_dir(day())).join("stray.parquet"),
        b"junk",
    )
    .unwrap();
    // A staging directory left by an interrupted rebuild, and a day never exported at all.
    let leftover = root
        .join(pq::TABLE_DIR)
        .join(format!(".capture_date={DAY}.tmp"));
    std::fs::create_dir_all(&leftover).unwrap();
    std::fs::write(leftover.join("run-1-0009.parquet"), b"junk").unwrap();
    let next = day().succ_opt().unwrap();
    let mut late = batch(b, 2, "h\\x", 100, 5, 9);
    late.capture_date = next;
    late.rows
        .iter_mut()
        .for_each(|r| r.captured_at += Duration::days(1));
    write(&db.pool, &late).await.unwrap();

    let until = day().succ_opt().unwrap();
    let reports = rebuild_dates(&db.pool, root, day().pred_opt().unwrap(), until)
        .await
        .unwrap();
    assert_eq!(
        reports.len(),
        2,
        "days with nothing are skipped: {reports:?}"
    );
    assert_eq!(
        (
            reports[1].capture_date,
            reports[1].rows,
            reports[1].replaced
        ),
        (next, 5, 0)
    );
    assert_eq!(
        (
            reports[0].capture_date,
            reports[0].rows,
            reports[0].replaced
        ),
        (day(), 110, 1)
    );
    let mut want = as_parquet(&pg_rows(&db.pool, a).await);
    want.extend(as_parquet(&pg_rows(&db.pool, b).await));
    want.sort();
    assert_eq!(parquet_rows(root), want);
    assert!(!root
        .join(pq::partition_dir(day()))
        .join("stray.parquet")
        .exists());
    let mut siblings: Vec<String> = std::fs::read_dir(root.join(pq::TABLE_DIR))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    siblings.sort();
    assert_eq!(
        siblings,
        [
            format!("capture_date={DAY}"),
            format!("capture_date={next}")
        ],
        "no staging directory is left"
    );
    let manifest_rows: i64 =
        sqlx::query_scalar("SELECT sum(row_count)::bigint FROM receipts.parquet_files")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(manifest_rows, 115);
    let unexported: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM receipts.write_batches WHERE parquet_file_id IS NULL",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(unexported, 0);

    // Again: the day is replaced, not doubled.
    let reports = rebuild_dates(&db.pool, root, day(), day()).await.unwrap();
    assert_eq!(reports[0].replaced, 2);
    assert_eq!(parquet_rows(root), want);
}

#[tokio::test]
async fn the_warehouse_lock_excludes_a_second_session() {
    let db = TestDb::new().await;
    let mut holder = db.pool.acquire().await.unwrap();
    let never = tokio_util::sync::CancellationToken::new();
    let bound = std::time::Duration::from_secs(5);
    warehouse::lock(&mut holder, bound, &never).await.unwrap();
    let try_lock = "SELECT pg_try_advisory_lock(hashtext('receipt-exporter:warehouse'))";
    let mut other = db.pool.acquire().await.unwrap();
    let got: bool = sqlx::query_scalar(try_lock)
        .fetch_one(&mut *other)
        .await
        .unwrap();
    assert!(!got);
    warehouse::unlock(&mut holder).await.unwrap();
    let got: bool = sqlx::query_scalar(try_lock)
        .fetch_one(&mut *other)
        .await
        .unwrap();
    assert!(got);
}
