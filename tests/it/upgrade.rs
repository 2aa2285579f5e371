//! Issue 26: a database and a lake of one app, from before apps, upgraded in place. Their rows
//! get the default app's SDKAppID at its first run (the migration cannot know it); the lake's
//! older files, without the column, read null beside the new ones, in pyarrow, pyiceberg and
//! DuckDB.

use crate::helpers::*;
use std::path::Path;

/// The migration that added the apps.
const MANY_APPS: i64 = 20261207000001;

/// What `migrate` leaves of a database of an older release: the same rows with no app. (The
/// migration only adds the nullable columns; this is that state for rows a run of this release
/// wrote, so the test needs no older binary.)
async fn as_before_apps(db: &TestDb) {
    sqlx::raw_sql(
        "UPDATE receipts.tracked_groups SET sdkappid = NULL;
         UPDATE receipts.snapshot_groups SET sdkappid = NULL;
         UPDATE receipts.receipt_latest SET sdkappid = NULL;
         UPDATE receipts.message_read_progress SET sdkappid = NULL;
         UPDATE receipts.export_runs SET sdkappid = NULL, app = NULL;
         DELETE FROM receipts.default_app;",
    )
    .execute(&db.pool)
    .await
    .unwrap();
}

/// Rewrites every snapshot file under `dir` as an older release wrote it: without the column
/// `sdkappid`, schema version 1; the manifest's sizes follow.
async fn files_before_apps(db: &TestDb, lake: &Path, dir: &str) -> usize {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::WriterProperties;
    let files = visible_parquet_files(&lake.join(dir));
    for path in &files {
        let reader =
            ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap()).unwrap();
        let metadata = reader
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .cloned();
        let batches: Vec<_> = reader.build().unwrap().map(Result::unwrap).collect();
        let keep: Vec<usize> = (0..6).collect();
        let schema = std::sync::Arc::new(batches[0].schema().project(&keep).unwrap());
        let metadata: Vec<_> = metadata
            .unwrap_or_default()
            .into_iter()
            .map(|mut kv| {
                if kv.key == "receipt_exporter.schema_version" {
                    kv.value = Some("1".into());
                }
                kv
            })
            .collect();
        let props = WriterProperties::builder()
            .set_key_value_metadata(Some(metadata))
            .build();
        let tmp = path.with_extension("old");
        let mut w = ArrowWriter::try_new(std::fs::File::create(&tmp).unwrap(), schema, Some(props))
            .unwrap();
        for b in &batches {
            w.write(&b.project(&keep).unwrap()).unwrap();
        }
        w.close().unwrap();
        std::fs::rename(&tmp, path).unwrap();
        let relative = path
            .strip_prefix(lake)
            .unwrap()
            .to_string_lossy()
            .to_string();
        sqlx::query("UPDATE receipts.parquet_files SET byte_size = $2 WHERE path = $1")
            .bind(&relative)
            .bind(std::fs::metadata(path).unwrap().len() as i64)
            .execute(&db.pool)
            .await
            .unwrap();
    }
    files.len()
}

/// (run, app, group, seq, read, unread) of every snapshot, sorted.
type Row = (i64, Option<i64>, String, i64, i64, i64);

async fn pg_rows(db: &TestDb) -> Vec<Row> {
    sqlx::query_as(
        "SELECT run_id, sdkappid, group_id, msg_seq, read_num::bigint, unread_num::bigint
         FROM receipts.receipt_snapshots ORDER BY 1, 2, 3, 4",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

/// A Python reader's rows: one JSON array per line, in [`Row`]'s order.
fn parse(text: &str) -> Vec<Row> {
    let mut rows: Vec<Row> = text
        .lines()
        .filter(|l| l.starts_with('['))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    rows.sort();
    rows
}

const PARQUET_READERS: &str = r#"
import json, sys
import duckdb, pyarrow as pa, pyarrow.dataset as ds
root, reader = sys.argv[1], sys.argv[2]
if reader == "duckdb":
    rows = duckdb.sql(f"""SELECT run_id, sdkappid, group_id, msg_seq, read_num, unread_num
        FROM read_parquet('{root}/receipt_snapshots/*/*.parquet', hive_partitioning = true,
                          union_by_name = true)""").fetchall()
else:
    schema = pa.schema([("run_id", pa.int64()), ("captured_at", pa.timestamp("us", tz="UTC")),
                        ("group_id", pa.string()), ("msg_seq", pa.int64()), ("read_num", pa.int32()),
                        ("unread_num", pa.int32()), ("sdkappid", pa.int64())])
    t = ds.dataset(f"{root}/receipt_snapshots", schema=schema, format="parquet",
                   partitioning="hive").to_table()
    rows = zip(*[t.column(c).to_pylist() for c in
                 ["run_id", "sdkappid", "group_id", "msg_seq", "read_num", "unread_num"]])
for r in rows:
    print(json.dumps(list(r)))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parquet_lake_and_its_database_from_before_apps_upgrade_in_place() {
    let db = TestDb::new().await;
    let sim = simulator(2, 20, |_| {});
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    track_all(&db, &group_ids(&sim), 20).await;
    let exporter = || exporter_for(&db, &sim.base_url(), &lake);
    assert_eq!(run(exporter().arg("run")).status.code(), Some(0));
    as_before_apps(&db).await;
    assert!(files_before_apps(&db, &lake, "receipt_snapshots").await > 0);
    let old = pg_rows(&db).await;
    assert!(old.iter().all(|r| r.1.is_none()) && !old.is_empty());

    sim.advance(1);
    let out = run(exporter().arg("run"));
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("now belong to the default app"),
        "{}",
        stderr(&out)
    );
    // Postgres: the old rows are the default app's now, the new ones too; nothing else moved.
    let app = Some(SDKAPPID as i64);
    let pg = pg_rows(&db).await;
    assert!(
        pg.iter().all(|r| r.1 == app),
        "every row has the default app"
    );
    let as_old: Vec<Row> = pg
        .iter()
        .filter(|r| r.0 == old[0].0)
        .map(|r| (r.0, None, r.2.clone(), r.3, r.4, r.5))
        .collect();
    assert_eq!(as_old, old, "the old rows are unchanged but for their app");
    let ledger: Vec<(Option<String>, Option<i64>)> =
        sqlx::query_as("SELECT app, sdkappid FROM receipts.export_runs ORDER BY run_id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(ledger, vec![(Some("default".into()), app); 2]);

    // The lake: the old files read null, the new ones the app, in DuckDB and pyarrow alike.
    let want: Vec<Row> = pg
        .iter()
        .map(|r| {
            let app = if r.0 == old[0].0 { None } else { r.1 };
            (r.0, app, r.2.clone(), r.3, r.4, r.5)
        })
        .collect();
    let root = lake.to_string_lossy().to_string();
    for reader in ["duckdb", "pyarrow"] {
        let out = crate::tools::run_python(PARQUET_READERS, &[&root, reader]);
        assert!(out.status.success(), "{reader}: {}", stderr(&out));
        assert_eq!(parse(&stdout(&out)), want, "{reader}");
    }
    let verify = run(exporter().args(["lake", "verify"]));
    assert_eq!(
        verify.status.code(),
        Some(0),
        "the older files are still the lake's"
    );
}

const ICEBERG_READERS: &str = r#"
import json, sys
from pyiceberg.catalog.sql import SqlCatalog
import duckdb, duckdb_extensions
uri, reader = sys.argv[1], sys.argv[2]
cat = SqlCatalog("receipt_exporter", uri=uri, init_catalog_tables="false")
table = cat.load_table("receipts.receipt_snapshots")
cols = ["run_id", "sdkappid", "group_id", "msg_seq", "read_num", "unread_num"]
if reader == "pyiceberg":
    t = table.scan().to_arrow()
    rows = zip(*[t.column(c).to_pylist() for c in cols])
elif reader == "duckdb":
    con = duckdb.connect()
    for extension in ("avro", "iceberg"):
        duckdb_extensions.import_extension(extension, con=con)
        con.load_extension(extension)
    rows = con.sql(f"SELECT {', '.join(cols)} FROM iceberg_scan('{table.metadata_location}')").fetchall()
else:
    print(json.dumps([f.field_id for f in table.schema().fields]))
    print(json.dumps([f.name for f in table.schema().fields]))
    rows = []
for r in rows:
    print(json.dumps(list(r)))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_iceberg_table_from_before_apps_gains_the_column_and_reads_old_and_new() {
    use receipt_exporter::sink::fence::{take_over, TakeOver};
    use receipt_exporter::sink::iceberg::{commit, IcebergLake, IcebergTarget};
    use receipt_exporter::sink::{SnapshotRow, WriteBatch};
    let db = TestDb::empty().await;
    migrate_before(&db, MANY_APPS).await;
    let dir = tempfile::tempdir().unwrap();
    let lake = receipt_exporter::lake::Lake::Local(dir.path().to_path_buf());
    // An older release's table (its first schema: no sdkappid) and one run's rows in it, in
    // Postgres as that release wrote them (no app): then this release's migration.
    IcebergLake::new(&lake)
        .unwrap()
        .create(&db.pool)
        .await
        .unwrap();
    receipt_exporter::db::migrate(&db.pool).await.unwrap();
    let run_id: i64 = sqlx::query_scalar(
        "INSERT INTO receipts.export_runs (job, kind, status, host, pid, finished_at)
         VALUES ('default', 'manual', 'succeeded', 'h', 0, now()) RETURNING run_id",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let TakeOver::Taken(fence) = take_over(&db.pool, run_id, "the test").await.unwrap() else {
        panic!("the run can be taken over");
    };
    let at =
        chrono::DateTime::from_timestamp_micros(chrono::Utc::now().timestamp_micros()).unwrap();
    let batch = WriteBatch {
        run_id,
        run_date: at.date_naive(),
        batch_no: 1,
        sdkappid: None,
        capture_date: at.date_naive(),
        rows: (1..=5)
            .map(|seq| SnapshotRow {
                captured_at: at,
                group_id: "@TGS#sim1-1".into(),
                msg_seq: seq,
                read_num: 1,
                unread_num: 4,
            })
            .collect(),
        codes: vec![],
    };
    // Postgres first, then the lake, as a run writes them.
    let mut with_app = batch.clone();
    with_app.sdkappid = Some(SDKAPPID as i64);
    receipt_exporter::sink::postgres::write_batch(&db.pool, fence, &with_app)
        .await
        .unwrap();
    let target = IcebergTarget::peek(&lake, &db.pool).await.unwrap();
    assert!(target
        .table
        .metadata()
        .current_schema()
        .field_by_name("sdkappid")
        .is_none());
    let mut writer = target.run_writer(&db.pool, fence, 1).unwrap();
    assert!(writer.append(&batch).await.unwrap().is_empty());
    for file in writer.finish().await.unwrap() {
        let bound = std::time::Duration::from_secs(5);
        commit::publish(&db.pool, &target.lake, fence, &file, bound)
            .await
            .unwrap();
    }
    as_before_apps(&db).await;

    // This release's first run: the rows adopted, the table evolved, new rows with the app.
    let sim = simulator(1, 20, |_| {});
    track_all(&db, &group_ids(&sim), 20).await;
    let out = run(&mut crate::iceberg::iceberg_run(&db, &sim, dir.path()));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let uri = crate::iceberg::sqlalchemy_url(&db);
    let schema = crate::tools::run_python(ICEBERG_READERS, &[&uri, "schema"]);
    let schema = stdout(&schema);
    assert!(schema.contains("[1, 2, 3, 4, 5, 6, 7]"), "{schema}");
    assert!(schema.contains("\"sdkappid\""), "{schema}");
    let pg = pg_rows(&db).await;
    let app = Some(SDKAPPID as i64);
    assert!(
        pg.iter().all(|r| r.1 == app),
        "Postgres: every row the default app's"
    );
    let want: Vec<Row> = pg
        .iter()
        .map(|r| {
            let app = if r.0 == run_id { None } else { r.1 };
            (r.0, app, r.2.clone(), r.3, r.4, r.5)
        })
        .collect();
    assert!(want.iter().any(|r| r.1.is_none()) && want.iter().any(|r| r.1 == app));
    for reader in ["pyiceberg", "duckdb"] {
        let out = crate::tools::run_python(ICEBERG_READERS, &[&uri, reader]);
        assert!(out.status.success(), "{reader}: {}", stderr(&out));
        assert_eq!(
            parse(&stdout(&out)),
            want,
            "{reader}: old rows null, new rows the app"
        );
    }
    // A second run is not another schema change: the table's current schema stays.
    let again = run(&mut crate::iceberg::iceberg_run(&db, &sim, dir.path()));
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert!(
        !stderr(&again).contains("gained the column"),
        "{}",
        stderr(&again)
    );
}
