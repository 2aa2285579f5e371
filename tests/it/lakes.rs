//! Issue 23: one harness over the lake's forms, and one crash matrix and one attack matrix run
//! over all of them, through the binary. A [`TestLake`] is a lake in one form (Hive-style on
//! the local disk or on moto's S3, Iceberg on the local disk or on S3): it sets the binary up
//! for it and reads it back as an independent reader does (pyarrow over Hive-style files,
//! pyiceberg over the table through the test database's catalog).

use crate::helpers::*;
use crate::s3::{S3Server, ACCESS_KEY_ID, BUCKET, REGION, SECRET_ACCESS_KEY};
use receipt_exporter::sim::Simulator;
use std::collections::BTreeSet;
use std::process::{Command, Output};

/// The lake's forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    HiveLocal,
    HiveS3,
    IcebergLocal,
    IcebergS3,
}

impl Form {
    fn iceberg(self) -> bool {
        matches!(self, Form::IcebergLocal | Form::IcebergS3)
    }

    fn s3(self) -> bool {
        matches!(self, Form::HiveS3 | Form::IcebergS3)
    }
}

/// A lake in one form, and the place it is in (a local directory, or an S3 server of its own).
pub struct TestLake {
    pub form: Form,
    /// The local lakes' parent; for lakes in S3 the commands' working directory (nothing may
    /// land there).
    pub dir: tempfile::TempDir,
    s3: Option<S3Server>,
}

/// The lake every command is pointed at unless a test says otherwise.
const LAKE: &str = "lake";

impl TestLake {
    pub fn new(form: Form) -> TestLake {
        TestLake {
            form,
            dir: tempfile::tempdir().unwrap(),
            s3: form.s3().then(S3Server::start),
        }
    }

    /// `EXPORT_PARQUET_DIR` of the lake called `name` in this place.
    pub fn location_of(&self, name: &str) -> String {
        match &self.s3 {
            Some(s3) => s3.url(name),
            None => self.dir.path().join(name).display().to_string(),
        }
    }

    /// `EXPORT_PARQUET_DIR` of the lake.
    pub fn location(&self) -> String {
        self.location_of(LAKE)
    }

    /// The binary with `db` and the lake (its location, its table format, the store's
    /// variables), run in [`TestLake::dir`].
    pub fn command(&self, db: &TestDb) -> Command {
        let mut cmd = exporter();
        cmd.env("DATABASE_URL", &db.url)
            .env("EXPORT_PARQUET_DIR", self.location())
            .current_dir(self.dir.path());
        if self.form.iceberg() {
            cmd.env("EXPORT_TABLE_FORMAT", "iceberg");
        }
        if let Some(s3) = &self.s3 {
            s3.env(&mut cmd);
        }
        cmd
    }

    /// [`TestLake::command`] with the simulator's API settings.
    pub fn exporter(&self, db: &TestDb, sim: &Simulator) -> Command {
        let mut cmd = self.command(db);
        cmd.env("TIM_SDKAPPID", SDKAPPID.to_string())
            .env("TIM_SECRET_KEY", KEY)
            .env("TIM_API_BASE", sim.base_url());
        cmd
    }

    /// Every row a reader of the lake sees, sorted: pyarrow over the Hive-style files of the
    /// lake `name`, or pyiceberg over the table `db`'s catalog names.
    pub fn rows_at(&self, db: &TestDb, name: &str) -> Vec<Snap> {
        let text = match self.form.iceberg() {
            true => self.pyiceberg(db, "rows"),
            false => self.python(HIVE_READER, &[&self.hive_root(name)]),
        };
        parse_rows(&text)
    }

    /// [`TestLake::rows_at`] of the lake.
    pub fn rows(&self, db: &TestDb) -> Vec<Snap> {
        self.rows_at(db, LAKE)
    }

    /// The lake holds exactly Postgres's rows, none twice, and nothing is left unfinished: no
    /// batch out of the lake, no run running, no temporary file or pending upload; in Iceberg
    /// mode, after `iceberg maintain`, no data file the table does not name.
    pub async fn assert_complete(&self, db: &TestDb) {
        let pg = pg_snapshots(db).await;
        assert!(!pg.is_empty());
        assert_eq!(self.rows(db), pg, "the lake's readers see Postgres's rows");
        assert_nothing_left(db).await;
        if self.form.iceberg() {
            let out = run(self
                .command(db)
                .args(["iceberg", "maintain", "--orphan-min-age", "0s"]));
            assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
            assert_eq!(self.unnamed_data_files(db).await, 0, "orphan data files");
            return;
        }
        let files = self.files().await;
        let leftovers: Vec<&String> = files
            .iter()
            .filter(|f| f.split('/').any(|s| s.starts_with('.')) || f.starts_with("_pending"))
            .collect();
        assert!(leftovers.is_empty(), "left over: {leftovers:?}");
        let visible: BTreeSet<String> = files
            .into_iter()
            .filter(|f| f.starts_with("receipt_snapshots/") && f.ends_with(".parquet"))
            .collect();
        let listed = manifest_paths(db).await;
        assert_eq!(visible, listed, "the visible files are the manifest's");
    }

    /// How many data files under the table no snapshot of it names.
    pub async fn unnamed_data_files(&self, db: &TestDb) -> usize {
        let named: BTreeSet<String> = self
            .pyiceberg(db, "files")
            .lines()
            .map(|l| l.rsplit('/').next().unwrap().to_string())
            .collect();
        self.files()
            .await
            .iter()
            .filter(|f| f.starts_with("receipts/receipt_snapshots/data/"))
            .filter(|f| !named.contains(f.rsplit('/').next().unwrap()))
            .count()
    }

    /// Every file under the lake's root, relative to it, hidden ones too.
    pub async fn files(&self) -> BTreeSet<String> {
        self.files_at(LAKE).await
    }

    /// [`TestLake::files`] of the lake `name`.
    pub async fn files_at(&self, name: &str) -> BTreeSet<String> {
        match &self.s3 {
            Some(s3) => s3
                .keys(name)
                .await
                .into_iter()
                .map(|(k, _)| k.strip_prefix(&format!("{name}/")).unwrap().to_string())
                .collect(),
            None => {
                let root = self.dir.path().join(name);
                all_files(&root)
                    .into_iter()
                    .map(|p| p.strip_prefix(&root).unwrap().display().to_string())
                    .collect()
            }
        }
    }

    /// Removes `relative` under the lake's root (an operator's `rm`, a lifecycle rule).
    pub async fn remove(&self, relative: &str) {
        match &self.s3 {
            Some(s3) => {
                let key = object_store::path::Path::from(format!("{LAKE}/{relative}").as_str());
                object_store::ObjectStoreExt::delete(s3.store().as_ref(), &key)
                    .await
                    .unwrap();
            }
            None => std::fs::remove_file(self.dir.path().join(LAKE).join(relative)).unwrap(),
        }
    }

    /// Writes `bytes` at `relative` under the lake's root.
    pub async fn put(&self, relative: &str, bytes: &'static [u8]) {
        match &self.s3 {
            Some(s3) => {
                let key = object_store::path::Path::from(format!("{LAKE}/{relative}").as_str());
                object_store::ObjectStoreExt::put(s3.store().as_ref(), &key, bytes.into())
                    .await
                    .unwrap();
            }
            None => {
                let path = self.dir.path().join(LAKE).join(relative);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, bytes).unwrap();
            }
        }
    }

    /// Copies every file of the lake to the lake `name` (a lake moved by hand).
    pub async fn copy_to(&self, name: &str) {
        match &self.s3 {
            Some(s3) => {
                let store = s3.store();
                for (key, _) in s3.keys(LAKE).await {
                    let to = format!("{name}/{}", key.strip_prefix(&format!("{LAKE}/")).unwrap());
                    let (from, to) = (key.as_str().into(), to.as_str().into());
                    object_store::ObjectStoreExt::copy(store.as_ref(), &from, &to)
                        .await
                        .unwrap();
                }
            }
            None => {
                let status = Command::new("cp")
                    .arg("-a")
                    .arg(self.dir.path().join(LAKE))
                    .arg(self.dir.path().join(name))
                    .status()
                    .unwrap();
                assert!(status.success());
            }
        }
    }

    /// What pyiceberg prints for `what` (see [`crate::iceberg::READER`]), with S3 settings
    /// for a table in S3.
    pub fn pyiceberg(&self, db: &TestDb, what: &str) -> String {
        let url = crate::iceberg::sqlalchemy_url(db);
        let script = match &self.s3 {
            None => crate::iceberg::READER.to_string(),
            Some(s3) => crate::iceberg::READER.replace(
                "init_catalog_tables=\"false\")",
                &format!(
                    "init_catalog_tables=\"false\", **{{\"s3.endpoint\": \"{}\", \
                     \"s3.access-key-id\": \"{ACCESS_KEY_ID}\", \"s3.secret-access-key\": \
                     \"{SECRET_ACCESS_KEY}\", \"s3.region\": \"{REGION}\"}})",
                    s3.endpoint
                ),
            ),
        };
        self.python(&script, &[&url, what])
    }

    /// The table's root for pyarrow: a local path, or `bucket/prefix/...` in S3.
    fn hive_root(&self, name: &str) -> String {
        match &self.s3 {
            Some(_) => format!("{BUCKET}/{name}/receipt_snapshots"),
            None => self
                .dir
                .path()
                .join(name)
                .join("receipt_snapshots")
                .display()
                .to_string(),
        }
    }

    /// Runs a Python script with the store's settings in its environment; its stdout.
    fn python(&self, script: &str, args: &[&str]) -> String {
        let mut cmd = crate::tools::python();
        cmd.arg("-c").arg(script).args(args);
        if let Some(s3) = &self.s3 {
            cmd.envs(s3.vars()).env("TEST_S3_ENDPOINT", &s3.endpoint);
        }
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("python3 runs ({e})"));
        let text = stdout(&out);
        assert!(
            !text.contains("IMPORT-FAILED"),
            "install the readers: python3 -m pip install \"pyiceberg[sql-postgres,pyarrow]\"\n{text}"
        );
        assert!(out.status.success(), "the reader failed: {}", stderr(&out));
        text
    }
}

/// Reads the Hive-style snapshot files under a directory (argv[1]; in S3 `bucket/prefix/...`
/// with the endpoint in `TEST_S3_ENDPOINT`) with pyarrow's dataset reader, which skips
/// `.`- and `_`-prefixed names as engines do; one JSON line per row.
const HIVE_READER: &str = r#"
import json, os, sys
try:
    import pyarrow as pa, pyarrow.compute as pc, pyarrow.dataset as ds, pyarrow.fs as pafs
except ImportError as e:
    print("IMPORT-FAILED", e)
    sys.exit(3)
root, endpoint = sys.argv[1], os.environ.get("TEST_S3_ENDPOINT")
fs = None
if endpoint:
    fs = pafs.S3FileSystem(access_key=os.environ["AWS_ACCESS_KEY_ID"],
        secret_key=os.environ["AWS_SECRET_ACCESS_KEY"], region=os.environ["AWS_REGION"],
        endpoint_override=endpoint.split("://")[1], scheme="http")
try:
    table = ds.dataset(root, format="parquet", partitioning="hive", filesystem=fs).to_table()
except FileNotFoundError:
    sys.exit(0)
if table.num_rows == 0:
    sys.exit(0)
at = pc.cast(table["captured_at"], pa.int64())
for i, r in enumerate(table.drop_columns(["captured_at"]).to_pylist()):
    r["captured_at"] = at[i].as_py()
    r.pop("capture_date", None)
    print(json.dumps(r))
"#;

/// The readers' JSON lines as sorted snapshots.
fn parse_rows(text: &str) -> Vec<Snap> {
    crate::iceberg::parse_rows(text)
}

/// Everything a command said, stdout then stderr.
fn said(out: &Output) -> String {
    format!("{}{}", stdout(out), stderr(out))
}

/// A database with the simulator's 3 groups of 60 seqs tracked.
async fn tracked(sim: &Simulator) -> TestDb {
    let db = TestDb::new().await;
    track_all(&db, &group_ids(sim), 60).await;
    db
}

// ---------------------------------------------------------------------------------------------
// The crash matrix: a run killed at each moment of each form's protocol (see
// `receipt_exporter::sink::target`), then one more run: every committed row in the lake once.

/// Kills a run at `point`; checks that readers see only committed rows, none twice (and, in
/// Iceberg mode, whether a data file no commit names was left); runs again; checks the lake.
async fn killed_at(form: Form, point: &str, orphan_left: bool) {
    use std::os::unix::process::ExitStatusExt;
    let lake = TestLake::new(form);
    let sim = simulator(4, 300, |_| {});
    let db = TestDb::new().await;
    track_all(&db, &group_ids(&sim), 300).await;
    let out = run(lake
        .exporter(&db, &sim)
        .env("EXPORT_BATCH_SIZE", "10")
        .env("EXPORT_RATE_LIMIT", "100")
        .env("EXPORT_CONCURRENCY", "8")
        .env(receipt_exporter::crashpoint::ENV, point)
        .arg("run"));
    assert_eq!(out.status.signal(), Some(9), "killed at {point}");
    let pg_before = pg_snapshots(&db).await;
    let seen = lake.rows(&db);
    let distinct: BTreeSet<&Snap> = seen.iter().collect();
    assert_eq!(distinct.len(), seen.len(), "a row twice in the lake");
    assert!(
        seen.iter().all(|s| pg_before.contains(s)),
        "a row readers see that Postgres has not committed"
    );
    if form.iceberg() {
        let unnamed = lake.unnamed_data_files(&db).await;
        assert_eq!(unnamed > 0, orphan_left, "data files no commit names");
    }

    let again = run(lake.exporter(&db, &sim).arg("run"));
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    if form.s3() {
        assert!(
            all_files(lake.dir.path()).is_empty(),
            "nothing written locally"
        );
        for text in [said(&out), said(&again)] {
            assert!(
                !text.contains(SECRET_ACCESS_KEY),
                "the store's secret was printed"
            );
        }
    }
    assert_eq!(run_row(&db, 1).await.0, "abandoned");
    let pg = pg_snapshots(&db).await;
    assert_eq!(
        rows_of(&pg, 1),
        rows_of(&pg_before, 1),
        "the dead run's committed rows stay, nothing added"
    );
    assert_eq!(rows_of(&pg, 2), expected_rows(&sim.groups(), 300, 0));
    lake.assert_complete(&db).await;
}

macro_rules! crash {
    ($($name:ident: $form:ident, $point:literal, $orphan:literal;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            killed_at(Form::$form, $point, $orphan).await;
        }
    )*};
}

crash! {
    hive_local_killed_during_pulls: HiveLocal, "pull:15", false;
    hive_local_killed_during_a_postgres_write: HiveLocal, "pg_write:2", false;
    hive_local_killed_between_the_two_sinks: HiveLocal, "between_sinks:2", false;
    hive_local_killed_during_a_parquet_write: HiveLocal, "parquet_write:2", false;
    hive_local_killed_after_a_rename_before_the_manifest: HiveLocal, "after_rename:1", false;
    hive_s3_killed_between_the_two_sinks: HiveS3, "between_sinks:2", false;
    hive_s3_killed_during_the_upload: HiveS3, "during_upload:1", false;
    hive_s3_killed_between_the_manifest_commit_and_the_copy: HiveS3, "after_manifest_commit:1", false;
    hive_s3_killed_after_the_copy_before_the_manifest_knows: HiveS3, "after_copy:1", false;
    iceberg_local_killed_between_the_two_sinks: IcebergLocal, "between_sinks:2", true;
    iceberg_local_killed_between_a_data_file_and_its_commit: IcebergLocal, "iceberg_before_commit:1", true;
    iceberg_local_killed_with_the_metadata_written: IcebergLocal, "iceberg_metadata_written:1", true;
    iceberg_local_killed_right_after_a_commit: IcebergLocal, "iceberg_after_commit:1", false;
    iceberg_s3_killed_between_a_data_file_and_its_commit: IcebergS3, "iceberg_before_commit:1", true;
    iceberg_s3_killed_with_the_metadata_written: IcebergS3, "iceberg_metadata_written:1", true;
}

// ---------------------------------------------------------------------------------------------
// The attack matrix: the lake treated as the world treats it.

/// Two databases, one lake: the second's `run` (and in Iceberg mode its `iceberg maintain`, dry
/// or not) exits 2 naming both, its `doctor` says FAIL, nothing is written; the first's readers
/// still read exactly its Postgres rows, and it goes on.
async fn second_database_is_refused(form: Form) {
    let lake = TestLake::new(form);
    let sim = simulator(3, 60, |_| {});
    let (first, second) = (tracked(&sim).await, tracked(&sim).await);
    let out = run(lake.exporter(&first, &sim).arg("run"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let files = lake.files().await;
    let day = chrono::Utc::now().date_naive().to_string();
    let export = ["export", "parquet", "--since", &day, "--until", &day];
    let mut refused: Vec<(&[&str], i32)> = vec![
        (&["run"], 2),
        (&["doctor"], 1),
        (&["lake", "verify"], 2),
        (&["retention", "--keep-months", "1"], 2),
    ];
    if form.iceberg() {
        refused.push((&["iceberg", "maintain", "--orphan-min-age", "0s"], 2));
        refused.push((&["iceberg", "maintain", "--dry-run"], 2));
    } else {
        refused.push((&["lake", "verify", "--repair"], 2));
        refused.push((&export, 2));
    }
    for (args, code) in refused {
        let out = run(lake.exporter(&second, &sim).args(args));
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", said(&out));
        let text = said(&out);
        assert!(
            text.contains("is the lake of another database"),
            "{args:?}: {text}"
        );
        assert!(
            text.contains(&first.name) && text.contains(&second.name),
            "{args:?} names both databases: {text}"
        );
    }
    assert_eq!(
        lake.files().await,
        files,
        "the second database wrote nothing"
    );
    let calls: i64 =
        sqlx::query_scalar("SELECT coalesce(sum(api_calls), 0)::int8 FROM receipts.export_runs")
            .fetch_one(&second.pool)
            .await
            .unwrap();
    assert_eq!(calls, 0, "the refused run spent no API call");
    assert_eq!(lake.rows(&first), pg_snapshots(&first).await);
    let out = run(lake.exporter(&first, &sim).arg("run"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    lake.assert_complete(&first).await;
}

/// A marker this exporter did not write: refused (exit 2) by a run, naming this database and
/// what the marker holds; nothing written.
async fn garbage_marker_is_refused(form: Form) {
    let lake = TestLake::new(form);
    let sim = simulator(3, 60, |_| {});
    let db = tracked(&sim).await;
    lake.put("_receipt_exporter.json", b"{\"hello\": 1} not ours")
        .await;
    let files = lake.files().await;
    let out = run(lake.exporter(&db, &sim).arg("run"));
    assert_eq!(out.status.code(), Some(2), "{}", said(&out));
    let text = said(&out);
    assert!(
        text.contains("_receipt_exporter.json that names no database")
            && text.contains("not ours")
            && text.contains(&db.name),
        "{text}"
    );
    assert_eq!(lake.files().await, files, "nothing written");
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM receipts.lake_identity")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(recorded, 0, "a lake that never worked is not recorded");
}

/// The database records its lake: a run pointed at another location is refused (exit 2,
/// naming the recorded one), nothing written there; a wrong `--from` is refused; the README's
/// `lake move` records the new place, after which runs there work and runs at the old one are
/// refused. (An Iceberg table cannot move by copying: there `lake move` to another location is
/// refused, and a change of table format is the move shown.)
async fn a_changed_location_is_refused_until_the_lake_is_moved(form: Form) {
    let lake = TestLake::new(form);
    let sim = simulator(3, 60, |_| {});
    let db = tracked(&sim).await;
    let out = run(lake.exporter(&db, &sim).arg("run"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let recorded = match &lake.s3 {
        Some(_) => lake.location(),
        None => format!("file://{}", lake.location()),
    };
    let elsewhere = lake.location_of("elsewhere");
    let out = run(lake
        .exporter(&db, &sim)
        .env("EXPORT_PARQUET_DIR", &elsewhere)
        .arg("run"));
    assert_eq!(out.status.code(), Some(2), "{}", said(&out));
    assert!(
        stderr(&out).contains(&format!(
            "this database's lake is {} at {recorded}",
            fmt(form)
        )),
        "{}",
        stderr(&out)
    );
    assert!(
        lake.files_at("elsewhere").await.is_empty(),
        "nothing written elsewhere"
    );
    let mv = |from: &str, to: &str, extra: &[&str]| {
        run(lake
            .command(&db)
            .args(["lake", "move", "--from", from, "--to", to])
            .args(extra))
    };
    let wrong = mv(&elsewhere, &elsewhere, &[]);
    assert_eq!(wrong.status.code(), Some(2), "{}", said(&wrong));
    assert!(
        stderr(&wrong).contains("is not this database's lake"),
        "{}",
        said(&wrong)
    );
    if form.iceberg() {
        let out = mv(&recorded, &elsewhere, &[]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "an Iceberg table does not move: {}",
            said(&out)
        );
        let out = mv(&recorded, &lake.location(), &["--to-format", "parquet"]);
        assert_eq!(out.status.code(), Some(0), "{}", said(&out));
        let out = run(lake
            .exporter(&db, &sim)
            .env("EXPORT_TABLE_FORMAT", "parquet")
            .arg("run"));
        assert_eq!(out.status.code(), Some(0), "{}", said(&out));
        let hive = parse_rows(&lake.python(HIVE_READER, &[&lake.hive_root(LAKE)]));
        assert_eq!(hive, rows_of_run(&pg_snapshots(&db).await, 2));
        return;
    }
    lake.copy_to("elsewhere").await;
    let out = mv(&recorded, &elsewhere, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    assert!(
        stdout(&out).contains("is now parquet at"),
        "{}",
        stdout(&out)
    );
    let out = run(lake
        .exporter(&db, &sim)
        .env("EXPORT_PARQUET_DIR", &elsewhere)
        .arg("run"));
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    assert_eq!(lake.rows_at(&db, "elsewhere"), pg_snapshots(&db).await);
    let out = run(lake.exporter(&db, &sim).arg("run"));
    assert_eq!(
        out.status.code(),
        Some(2),
        "the old place is refused now: {}",
        said(&out)
    );
}

fn fmt(form: Form) -> &'static str {
    match form.iceberg() {
        true => "iceberg",
        false => "parquet",
    }
}

/// One run's rows, as full snapshots.
fn rows_of_run(pg: &[Snap], run_id: i64) -> Vec<Snap> {
    pg.iter().filter(|s| s.run_id == run_id).cloned().collect()
}

/// `EXPORT_TABLE_FORMAT` forgotten on an Iceberg deployment (the shipped units did not set it):
/// the run exits 2 naming the recorded lake, no file written. A database from before the
/// identity was recorded (its row deleted) is refused the same way, from its catalog.
async fn a_forgotten_table_format_is_refused(form: Form) {
    let lake = TestLake::new(form);
    let sim = simulator(3, 60, |_| {});
    let db = tracked(&sim).await;
    let out = run(lake.exporter(&db, &sim).arg("run"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let files = lake.files().await;
    for _ in ["recorded", "inferred"] {
        let out = run(lake
            .exporter(&db, &sim)
            .env_remove("EXPORT_TABLE_FORMAT")
            .arg("run"));
        assert_eq!(out.status.code(), Some(2), "{}", said(&out));
        assert!(
            stderr(&out).contains("this database's lake is iceberg at"),
            "{}",
            said(&out)
        );
        assert_eq!(lake.files().await, files, "no file written");
        sqlx::query("DELETE FROM receipts.lake_identity")
            .execute(&db.pool)
            .await
            .unwrap();
    }
    let out = run(lake.exporter(&db, &sim).arg("run"));
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    let format: String = sqlx::query_scalar("SELECT table_format FROM receipts.lake_identity")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        format, "iceberg",
        "recorded at the first run after the 'upgrade'"
    );
    lake.assert_complete(&db).await;
}

/// The table dropped from the catalog by another engine, its files kept (pyiceberg's
/// `drop_table`): a run exits 2 with the fix and recreates nothing, `iceberg maintain` deletes
/// nothing; the fix as printed registers the table again, and the next run adds to it.
async fn a_dropped_table_is_refused_and_registered_again(form: Form) {
    let lake = TestLake::new(form);
    let sim = simulator(3, 60, |_| {});
    let db = tracked(&sim).await;
    let out = run(lake.exporter(&db, &sim).arg("run"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let dropped = lake.pyiceberg(&db, "drop");
    assert!(dropped.contains("dropped"), "{dropped}");
    let files = lake.files().await;
    let out = run(lake.exporter(&db, &sim).arg("run"));
    assert_eq!(out.status.code(), Some(2), "{}", said(&out));
    let text = said(&out);
    assert!(
        text.contains("not in the catalog") && text.contains("register it again"),
        "{text}"
    );
    let out = run(lake.command(&db).args([
        "iceberg",
        "maintain",
        "--orphan-min-age",
        "0s",
        "--expire-older-than",
        "0s",
    ]));
    assert_eq!(out.status.code(), Some(2), "{}", said(&out));
    assert_eq!(
        lake.files().await,
        files,
        "nothing created, nothing deleted"
    );
    // (The read progress's table, `message_read_progress`, stays listed beside it.)
    let listed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM receipts.iceberg_tables WHERE table_name = 'receipt_snapshots'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(listed, 0, "no table created in the catalog");
    let start = text
        .find("INSERT INTO receipts.iceberg_tables")
        .expect("the fix's SQL");
    let end = start + text[start..].find("'TABLE');").expect("its end") + 9;
    sqlx::raw_sql(&text[start..end])
        .execute(&db.pool)
        .await
        .unwrap();
    sim.advance(1);
    let out = run(lake.exporter(&db, &sim).arg("run"));
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    lake.assert_complete(&db).await;
}

macro_rules! attack {
    ($check:ident: $($name:ident: $form:ident;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            $check(Form::$form).await;
        }
    )*};
}

attack! { second_database_is_refused:
    two_databases_one_local_hive_lake: HiveLocal;
    two_databases_one_s3_hive_lake: HiveS3;
    two_databases_one_local_iceberg_lake: IcebergLocal;
    two_databases_one_s3_iceberg_lake: IcebergS3;
}

attack! { garbage_marker_is_refused:
    a_garbage_marker_on_a_local_hive_lake: HiveLocal;
    a_garbage_marker_on_an_s3_hive_lake: HiveS3;
    a_garbage_marker_on_a_local_iceberg_lake: IcebergLocal;
    a_garbage_marker_on_an_s3_iceberg_lake: IcebergS3;
}

attack! { a_changed_location_is_refused_until_the_lake_is_moved:
    a_local_hive_lake_moved: HiveLocal;
    an_s3_hive_lake_moved: HiveS3;
    a_local_iceberg_lake_moved: IcebergLocal;
}

attack! { a_forgotten_table_format_is_refused:
    iceberg_local_without_its_table_format: IcebergLocal;
    iceberg_s3_without_its_table_format: IcebergS3;
}

attack! { a_dropped_table_is_refused_and_registered_again:
    a_dropped_local_table: IcebergLocal;
    a_dropped_s3_table: IcebergS3;
}

/// `s3:/bucket/x` (one slash) and `s3:x` are no location: exit 2 with the accepted forms,
/// nothing written (it used to become a local directory `s3:`); `file:/x`, `file:///x` and `/x`
/// are one lake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_location_is_one_place_however_it_is_written() {
    let lake = TestLake::new(Form::HiveLocal);
    let sim = simulator(3, 60, |_| {});
    let db = tracked(&sim).await;
    for bad in ["s3:/lake-test/x", "s3:lake-test"] {
        let out = run(lake
            .exporter(&db, &sim)
            .env("EXPORT_PARQUET_DIR", bad)
            .arg("run"));
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", said(&out));
        assert!(
            stderr(&out).contains("s3://BUCKET/PREFIX"),
            "{}",
            stderr(&out)
        );
    }
    assert!(
        all_files(lake.dir.path()).is_empty(),
        "no directory 's3:' or other"
    );
    let path = lake.location();
    for written in [
        format!("file:{path}"),
        format!("file://{path}"),
        path.clone(),
    ] {
        let out = run(lake
            .exporter(&db, &sim)
            .env("EXPORT_PARQUET_DIR", &written)
            .arg("run"));
        assert_eq!(out.status.code(), Some(0), "{written}: {}", said(&out));
        sim.advance(1);
    }
    lake.assert_complete(&db).await;
}
