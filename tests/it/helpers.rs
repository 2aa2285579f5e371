//! Shared test helpers: a fresh database per test, and running the real binary.
#![allow(dead_code)]

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool};
use std::process::{Command, Output};
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};

/// The server the tests create their databases on. `DATABASE_URL` overrides the default
/// (the local Postgres with trust auth that every machine of this project has).
pub fn admin_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database of its own for one test, migrated, dropped when the test ends.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
}

impl TestDb {
    /// A fresh, migrated database.
    pub async fn new() -> TestDb {
        let db = Self::empty().await;
        receipt_exporter::db::migrate(&db.pool)
            .await
            .expect("migrations apply");
        db
    }

    /// A fresh database with nothing in it.
    pub async fn empty() -> TestDb {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "rexp_t_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            rand::random::<u32>()
        );
        let admin = admin_url();
        let mut conn = PgConnection::connect(&admin)
            .await
            .expect("the local Postgres is up");
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let url = with_database(&admin, &name);
        // The tests' own sessions are named apart from the exporter's, so a test can kill the
        // exporter's sessions (application_name = 'receipt-exporter') and keep its own.
        let options = receipt_exporter::db::connect_options(&url)
            .unwrap()
            .application_name("receipt-exporter-tests")
            .options([("search_path", "receipts")]);
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .expect("connect to test database");
        TestDb { name, url, pool }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        admin_sql(format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.name
        ));
    }
}

/// Runs `sql` on the admin database, ignoring errors, from a `Drop`: it may run inside the
/// test's runtime, so the async work happens on a thread of its own.
pub fn admin_sql(sql: String) {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            if let Ok(mut conn) = PgConnection::connect(&admin_url()).await {
                let _ = sqlx::raw_sql(&sql).execute(&mut conn).await;
            }
        });
    })
    .join()
    .ok();
}

/// `url` with its database name replaced.
pub fn with_database(url: &str, database: &str) -> String {
    PgConnectOptions::from_str(url).expect("DATABASE_URL is a valid Postgres URL");
    let without_query = url.split('?').next().unwrap();
    let (base, _) = without_query
        .rsplit_once('/')
        .expect("a URL with a database path");
    format!("{base}/{database}")
}

/// The real binary, with an environment cleared of our settings so a developer's shell
/// cannot leak into a test.
pub fn exporter() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_receipt-exporter"));
    for (key, _) in std::env::vars() {
        let store = ["AWS_", "GOOGLE_", "AZURE_"]
            .iter()
            .any(|p| key.starts_with(p));
        if key.starts_with("TIM_") || key.starts_with("EXPORT_") || key == "DATABASE_URL" || store {
            cmd.env_remove(key);
        }
    }
    cmd.env("NO_COLOR", "1");
    cmd
}

/// Runs the command and returns its output, printing both streams so a failing test shows them.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("the binary runs");
    eprintln!("--- {:?}\n--- exit: {:?}", cmd, out.status.code());
    eprintln!("--- stdout:\n{}", String::from_utf8_lossy(&out.stdout));
    eprintln!("--- stderr:\n{}", String::from_utf8_lossy(&out.stderr));
    out
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The simulator's app, shared with the exporter under test.
pub const SDKAPPID: u64 = 1_400_000_001;
pub const KEY: &str = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";

/// A simulator on 127.0.0.1:0 with `groups` generated groups of `messages` messages each.
pub fn simulator(
    groups: usize,
    messages: u64,
    tweak: impl FnOnce(&mut receipt_exporter::sim::SimConfig),
) -> receipt_exporter::sim::Simulator {
    let mut config = receipt_exporter::sim::SimConfig::new(
        SDKAPPID,
        receipt_exporter::secret::Secret::new(KEY),
        "administrator",
    );
    config.groups = receipt_exporter::sim::generate_groups(config.seed, groups, messages);
    tweak(&mut config);
    receipt_exporter::sim::Simulator::start(config, "127.0.0.1:0".parse().unwrap())
        .expect("simulator starts")
}

/// The binary set up for `db`, `sim` and a Parquet directory.
pub fn exporter_for(db: &TestDb, api_base: &str, parquet_dir: &std::path::Path) -> Command {
    let mut cmd = exporter();
    cmd.env("DATABASE_URL", &db.url)
        .env("TIM_SDKAPPID", SDKAPPID.to_string())
        .env("TIM_SECRET_KEY", KEY)
        .env("TIM_API_BASE", api_base)
        .env("EXPORT_PARQUET_DIR", parquet_dir);
    cmd
}

/// A snapshot as both sinks hold it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Snap {
    pub run_id: i64,
    pub group_id: String,
    pub msg_seq: i64,
    pub read_num: i32,
    pub unread_num: i32,
    pub captured_at_us: i64,
}

/// Every snapshot in Postgres, sorted.
pub async fn pg_snapshots(db: &TestDb) -> Vec<Snap> {
    pg_snapshots_in(&db.pool).await
}

/// [`pg_snapshots`] of any database (a private cluster's).
pub async fn pg_snapshots_in(pool: &PgPool) -> Vec<Snap> {
    let rows: Vec<(i64, String, i64, i32, i32, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "SELECT run_id, group_id, msg_seq, read_num, unread_num, captured_at FROM receipts.receipt_snapshots
         ORDER BY run_id, group_id, msg_seq",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(
            |(run_id, group_id, msg_seq, read_num, unread_num, at)| Snap {
                run_id,
                group_id,
                msg_seq,
                read_num,
                unread_num,
                captured_at_us: at.timestamp_micros(),
            },
        )
        .collect()
}

/// Every snapshot in the visible Parquet files under `dir` (the lake's root or the snapshots'
/// directory; hidden files skipped, as readers do, and so are the other tables' files), sorted;
/// read with the parquet crate.
pub fn parquet_snapshots(dir: &std::path::Path) -> Vec<Snap> {
    let mut out = Vec::new();
    for path in snapshot_files(dir) {
        let file = std::fs::File::open(&path).unwrap();
        push_snaps(file, &mut out);
    }
    out.sort();
    out
}

/// Appends the rows of one snapshot file (a local file, or an object's bytes).
pub fn push_snaps(file: impl parquet::file::reader::ChunkReader + 'static, out: &mut Vec<Snap>) {
    use arrow::array::{AsArray, Int32Array, Int64Array, TimestampMicrosecondArray};
    {
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let b = batch.unwrap();
            let col = |name: &str| {
                b.column_by_name(name)
                    .unwrap_or_else(|| panic!("column {name}"))
                    .clone()
            };
            let run_id = col("run_id");
            let run_id = run_id.as_any().downcast_ref::<Int64Array>().unwrap();
            let at = col("captured_at");
            let at = at
                .as_any()
                .downcast_ref::<TimestampMicrosecondArray>()
                .unwrap();
            let group = col("group_id");
            let group = group.as_string::<i32>();
            let seq = col("msg_seq");
            let seq = seq.as_any().downcast_ref::<Int64Array>().unwrap();
            let read = col("read_num");
            let read = read.as_any().downcast_ref::<Int32Array>().unwrap();
            let unread = col("unread_num");
            let unread = unread.as_any().downcast_ref::<Int32Array>().unwrap();
            for i in 0..b.num_rows() {
                out.push(Snap {
                    run_id: run_id.value(i),
                    group_id: group.value(i).to_string(),
                    msg_seq: seq.value(i),
                    read_num: read.value(i),
                    unread_num: unread.value(i),
                    captured_at_us: at.value(i),
                });
            }
        }
    }
}

/// The visible snapshot files under `dir` (the lake's root or the snapshots' directory): not
/// the read events' nor the read progress's, the other tables of a Hive-style lake.
pub fn snapshot_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let other = |p: &std::path::Path| {
        p.strip_prefix(dir).unwrap().components().any(|c| {
            let c = c.as_os_str();
            c == "read_events" || c == "message_read_progress"
        })
    };
    visible_parquet_files(dir)
        .into_iter()
        .filter(|p| !other(p))
        .collect()
}

/// Every record batch of the visible Parquet files under `dir`, file by file.
pub fn parquet_batches(dir: &std::path::Path) -> Vec<arrow::record_batch::RecordBatch> {
    visible_parquet_files(dir)
        .into_iter()
        .flat_map(|path| {
            let file = std::fs::File::open(&path).unwrap();
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                .unwrap()
                .build()
                .unwrap()
                .map(Result::unwrap)
        })
        .collect()
}

/// Visible `.parquet` files under `dir`, recursively.
pub fn visible_parquet_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    all_files(dir)
        .into_iter()
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            !name.starts_with('.') && !name.starts_with('_') && name.ends_with(".parquet")
        })
        .collect()
}

/// Every file under `dir`, recursively (hidden ones too).
pub fn all_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(all_files(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Tracks `groups` with the window 1..=to.
pub async fn track_all(db: &TestDb, groups: &[String], to: i64) {
    track_all_in(&db.pool, groups, to).await
}

/// [`track_all`] in any database (a private cluster's).
pub async fn track_all_in(pool: &PgPool, groups: &[String], to: i64) {
    for g in groups {
        sqlx::query("INSERT INTO receipts.tracked_groups (group_id) VALUES ($1)")
            .bind(g)
            .execute(pool)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO receipts.seq_windows (group_id, from_seq, to_seq) VALUES ($1, 1, $2)",
        )
        .bind(g)
        .bind(to)
        .execute(pool)
        .await
        .unwrap();
    }
}

/// The ledger row of a run: (status, receipts_written, api_calls, error).
pub async fn run_row(db: &TestDb, run_id: i64) -> (String, i64, i64, Option<String>) {
    sqlx::query_as("SELECT status, receipts_written, api_calls, error FROM receipts.export_runs WHERE run_id = $1")
        .bind(run_id)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

/// The ids of the simulator's groups.
pub fn group_ids(sim: &receipt_exporter::sim::Simulator) -> Vec<String> {
    sim.groups().into_iter().map(|g| g.group_id).collect()
}

/// Waits for a spawned binary and prints its streams, so a failing test shows them.
pub fn finish(child: std::process::Child) -> Output {
    let out = child.wait_with_output().unwrap();
    eprintln!(
        "--- exit: {:?}\n--- stdout:\n{}\n--- stderr:\n{}",
        out.status.code(),
        stdout(&out),
        stderr(&out)
    );
    out
}

/// The simulator's receipts (Code 0) for seqs 1..=n of `groups` at `step`, as `rows_of`
/// gives them: what a run over those groups must store.
pub fn expected_rows(
    groups: &[receipt_exporter::sim::SimGroup],
    n: u64,
    step: u64,
) -> std::collections::BTreeSet<(String, i64, i32, i32)> {
    let mut rows = std::collections::BTreeSet::new();
    for g in groups {
        for seq in 1..=n {
            let (code, read, unread) = receipt_exporter::sim::receipt_at(1, g, seq, step);
            if code == 0 {
                rows.insert((g.group_id.clone(), seq as i64, read as i32, unread as i32));
            }
        }
    }
    rows
}

/// One run's snapshots as (group, seq, read, unread).
pub fn rows_of(snaps: &[Snap], run_id: i64) -> std::collections::BTreeSet<(String, i64, i32, i32)> {
    snaps
        .iter()
        .filter(|s| s.run_id == run_id)
        .map(|s| (s.group_id.clone(), s.msg_seq, s.read_num, s.unread_num))
        .collect()
}

/// Sends `sig` (e.g. "TERM") to a spawned binary.
pub fn signal(child: &std::process::Child, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// Sends SIGTERM and waits for the exit, failing the test if it takes longer than `limit`.
pub async fn terminate_within(
    child: &mut std::process::Child,
    limit: std::time::Duration,
) -> std::process::ExitStatus {
    signal(child, "TERM");
    let sent = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            sent.elapsed() < limit,
            "still running {limit:?} after SIGTERM"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The API faults of the fault tests: 10% of calls, mixed (502 HTML, 10002, dropped
/// connections, answers slower than a 4 s client timeout).
pub fn ten_percent_faults() -> receipt_exporter::sim::Faults {
    receipt_exporter::sim::Faults {
        http_502: 0.03,
        internal_10002: 0.03,
        drop_connection: 0.02,
        slow: 0.02,
        slow_delay: std::time::Duration::from_secs(6),
    }
}

/// The whole warehouse agrees with Postgres: for every run the rows in Postgres equal the rows
/// in Parquet (no duplicates), every file the manifest lists is there and every visible file is
/// listed, no batch is left out of Parquet, no temporary file is left, no run is `running`.
pub async fn assert_warehouse_consistent(db: &TestDb, dir: &std::path::Path) {
    let pg = pg_snapshots(db).await;
    let pq = parquet_snapshots(dir);
    let keys: std::collections::BTreeSet<(i64, &str, i64)> = pg
        .iter()
        .map(|s| (s.run_id, s.group_id.as_str(), s.msg_seq))
        .collect();
    assert_eq!(keys.len(), pg.len(), "duplicates in Postgres");
    let runs: std::collections::BTreeSet<i64> = pg.iter().chain(&pq).map(|s| s.run_id).collect();
    for run_id in runs {
        assert_eq!(
            rows_of(&pg, run_id),
            rows_of(&pq, run_id),
            "run {run_id}: Postgres and Parquet differ"
        );
    }
    assert_eq!(
        pg, pq,
        "Postgres and Parquet differ (duplicates in Parquet?)"
    );
    let listed = manifest_paths(db).await;
    let on_disk: std::collections::BTreeSet<String> = snapshot_files(dir)
        .into_iter()
        .map(|p| p.strip_prefix(dir).unwrap().to_string_lossy().into_owned())
        .collect();
    let missing: Vec<_> = listed.difference(&on_disk).collect();
    let unlisted: Vec<_> = on_disk.difference(&listed).collect();
    assert!(
        missing.is_empty(),
        "listed in the manifest, missing on disk: {missing:?}"
    );
    assert!(
        unlisted.is_empty(),
        "on disk, not in the manifest: {unlisted:?}"
    );
    let hidden: Vec<_> = all_files(dir)
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "temporary files left: {hidden:?}");
    assert_nothing_left(db).await;
}

/// The paths of the files the manifest lists.
pub async fn manifest_paths(db: &TestDb) -> std::collections::BTreeSet<String> {
    sqlx::query_scalar("SELECT path FROM receipts.parquet_files")
        .fetch_all(&db.pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

/// No write batch is left out of the lake and no run is recorded as running.
pub async fn assert_nothing_left(db: &TestDb) {
    let (unexported, running): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM receipts.write_batches
                 WHERE parquet_file_id IS NULL AND row_count > 0),
                (SELECT count(*) FROM receipts.export_runs WHERE status = 'running')",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(unexported, 0, "write batches left out of the lake");
    assert_eq!(running, 0, "runs still recorded as running");
}

/// The backend pid of the session holding `job`'s lock, if one holds it.
pub async fn lock_session(db: &TestDb, job: &str) -> Option<i32> {
    sqlx::query_scalar(
        "SELECT l.pid FROM pg_locks l JOIN pg_database d ON d.oid = l.database
         WHERE l.locktype = 'advisory' AND l.granted AND d.datname = current_database()
           AND ((l.classid::bigint << 32) | l.objid::bigint)
               = hashtextextended('receipt-exporter:job:' || $1, 0)",
    )
    .bind(job)
    .fetch_optional(&db.pool)
    .await
    .unwrap()
}

/// Kills the session holding `job`'s lock (as a failover or a NAT timeout would); false when
/// no session held it.
pub async fn kill_lock_session(db: &TestDb, job: &str) -> bool {
    let Some(pid) = lock_session(db, job).await else {
        return false;
    };
    sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

/// Waits until `path` exists (a run reached its pause point), failing after `limit`.
pub async fn wait_for_file(path: &std::path::Path, limit: std::time::Duration) {
    let deadline = std::time::Instant::now() + limit;
    while !path.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} did not appear within {limit:?}",
            path.display()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The schema `receipts` migrated up to, not including, migration `version` (a database of an
/// older release, for the tests of a migration's upgrade).
pub async fn migrate_before(db: &TestDb, version: i64) {
    let mut older = sqlx::migrate!("./migrations");
    older.migrations = std::borrow::Cow::Owned(
        older
            .iter()
            .filter(|m| m.version < version)
            .cloned()
            .collect(),
    );
    sqlx::query("CREATE SCHEMA receipts")
        .execute(&db.pool)
        .await
        .unwrap();
    older.run(&db.pool).await.unwrap();
}

/// Reads a spawned binary's stderr until a line holds `marker`; returns what follows it on
/// that line, and the thread collecting all of stderr (joined for the whole log).
pub fn announced(
    child: &mut std::process::Child,
    marker: &str,
) -> (String, std::thread::JoinHandle<String>) {
    use std::io::{BufRead, BufReader};
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let wanted = marker.to_string();
    let rest = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines() {
            let line = line.unwrap();
            if let Some(at) = line.split(wanted.as_str()).nth(1) {
                let _ = tx.send(at.trim_end().to_string());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let found = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("never announced: {marker}"));
    (found, rest)
}
