//! Issue 25: the engines analysts use, as tested readers of the table the exporter writes.
//! Spark (the README's `JdbcCatalog` settings), DuckDB (the README's `iceberg_scan` snippet) and
//! pyiceberg (the README's snippet) read it on the local disk and on S3 (moto) and must equal
//! Postgres; Spark's compaction and expiry run as the README prints them; the exporter's runs
//! and `iceberg maintain` must work after them. Every engine line comes from the README, with
//! only its placeholders (host, database, role, lake, keys, day) replaced.

use crate::helpers::*;
use crate::s3::S3Server;
use crate::tools;
use std::collections::BTreeMap;
use std::process::{Command, Output};

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap()
}

/// The README's section on the Iceberg table.
fn iceberg_section() -> String {
    let readme = readme();
    let start = readme.find("### The Iceberg table").expect("the section");
    let end = start
        + readme[start..]
            .find("### The lake on object storage")
            .unwrap();
    readme[start..end].to_string()
}

/// The fenced block of the section that holds `marker` (its lines between the fences).
fn block_with(marker: &str) -> String {
    let section = iceberg_section();
    let at = section
        .find(marker)
        .unwrap_or_else(|| panic!("the README says {marker}"));
    let start = section[..at].rfind("```").unwrap();
    let start = start + section[start..].find('\n').unwrap() + 1;
    let end = at + section[at..].find("```").unwrap();
    section[start..end].to_string()
}

/// The `key=value` lines of the README's block that holds `marker`.
fn settings_with(marker: &str) -> Vec<(String, String)> {
    block_with(marker)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (k, v) = l.split_once('=').expect("key=value");
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect()
}

/// The Python program of the README's `python3 - <<'PY'` snippet that holds `marker`.
fn snippet_with(marker: &str) -> String {
    let block = block_with(marker);
    let start = block.find("python3 - <<'PY'\n").expect("a python snippet") + 17;
    let end = start + block[start..].find("\nPY\n").expect("its end");
    block[start..end].to_string()
}

/// The settings Spark needs at start (the jars, Iceberg's SQL extensions), from the README.
const SPARK_CATALOG: &str = "spark.sql.catalog.receipt_exporter.type=jdbc";
const SPARK_S3: &str = "spark.hadoop.fs.s3.impl=";
const S3_JARS: [&str; 2] = ["hadoop-aws-3.3.1.jar", "aws-java-sdk-bundle-1.11.901.jar"];

/// The binary's Spark session, started with the README's `spark.jars` (plus the S3 jars the
/// README adds on S3) and `spark.sql.extensions`.
fn spark() -> &'static tools::Spark {
    let lines = settings_with(SPARK_CATALOG);
    let get = |key: &str| {
        lines
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("the README's Spark settings have {key}"))
    };
    let jars = get("spark.jars");
    let mut jars: Vec<&str> = jars.split(',').collect();
    let section = iceberg_section();
    let s3_jars = S3_JARS.join(",");
    assert!(
        section.contains(&s3_jars),
        "the README adds {s3_jars} on S3"
    );
    jars.extend(S3_JARS);
    let startup = vec![(
        "spark.sql.extensions".to_string(),
        get("spark.sql.extensions"),
    )];
    tools::spark(&jars, &startup)
}

/// The README's roles, under names of this test's own (roles belong to the whole server);
/// dropped when the test ends, after its database.
struct Roles {
    owner: String,
    writer: String,
    reader: String,
}

impl Roles {
    async fn create(db: &TestDb) -> Roles {
        let roles = Roles {
            owner: format!("{}_o", db.name),
            writer: format!("{}_w", db.name),
            reader: format!("{}_r", db.name),
        };
        let sql = crate::roles::readme_roles_sql()
            .replace("receipt_owner", &roles.owner)
            .replace("receipt_exporter", &roles.writer)
            .replace("receipt_analyst", &roles.reader)
            .replace("DATABASE analytics", &format!("DATABASE \"{}\"", db.name));
        sqlx::raw_sql(&sql).execute(&db.pool).await.unwrap();
        roles
    }
}

impl Drop for Roles {
    fn drop(&mut self) {
        admin_sql(format!(
            "DROP ROLE IF EXISTS \"{}\"; DROP ROLE IF EXISTS \"{}\"; DROP ROLE IF EXISTS \"{}\";",
            self.writer, self.reader, self.owner
        ));
    }
}

/// A test database with the README's roles, the simulator, and an Iceberg lake on the local
/// disk or in moto's S3.
struct Lab {
    db: TestDb,
    roles: Roles,
    sim: receipt_exporter::sim::Simulator,
    dir: tempfile::TempDir,
    moto: Option<S3Server>,
}

impl Lab {
    async fn new(on_s3: bool) -> Lab {
        let db = TestDb::new().await;
        let roles = Roles::create(&db).await;
        let sim = simulator(3, 40, |_| {});
        track_all(&db, &group_ids(&sim), 40).await;
        Lab {
            db,
            roles,
            sim,
            dir: tempfile::tempdir().unwrap(),
            moto: on_s3.then(S3Server::start),
        }
    }

    /// `EXPORT_PARQUET_DIR`: a local directory, or `s3://lake-test/wh`.
    fn lake(&self) -> String {
        match &self.moto {
            Some(moto) => moto.url("wh"),
            None => self.dir.path().join("lake").display().to_string(),
        }
    }

    /// The lake as a URL, as the README's `warehouse` setting gives it.
    fn warehouse(&self) -> String {
        match &self.moto {
            Some(_) => self.lake(),
            None => format!("file://{}", self.lake()),
        }
    }

    /// The standard AWS variables of the S3 lake (none on the local disk).
    fn aws(&self, cmd: &mut Command) {
        for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("AWS_")) {
            cmd.env_remove(key);
        }
        if let Some(moto) = &self.moto {
            moto.env(cmd);
        }
    }

    fn exporter(&self) -> Command {
        let mut cmd = exporter_for(
            &self.db,
            &self.sim.base_url(),
            std::path::Path::new(&self.lake()),
        );
        cmd.env("EXPORT_TABLE_FORMAT", "iceberg")
            .current_dir(self.dir.path());
        self.aws(&mut cmd);
        cmd
    }

    /// One exporter run, which must succeed.
    fn run(&self) {
        let out = run(self.exporter().arg("run"));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }

    fn maintain(&self, args: &[&str]) -> Output {
        run(self.exporter().args(["iceberg", "maintain"]).args(args))
    }

    /// Where the catalog points now.
    async fn pointer(&self) -> String {
        sqlx::query_scalar(
            "SELECT metadata_location FROM receipts.iceberg_tables
             WHERE table_name = 'receipt_snapshots'",
        )
        .fetch_one(&self.db.pool)
        .await
        .unwrap()
    }

    /// The table's metadata files on the local disk.
    fn metadata_files(&self) -> usize {
        let dir = self
            .dir
            .path()
            .join("lake/receipts/receipt_snapshots/metadata");
        all_files(&dir)
            .iter()
            .filter(|p| p.to_string_lossy().ends_with(".metadata.json"))
            .count()
    }

    /// The README's Spark settings for this lab, as `role`: the catalog lines, and on S3 the
    /// S3 lines, with the placeholders replaced.
    fn spark_settings(&self, role: &str) -> Vec<(String, String)> {
        let mut lines = settings_with(SPARK_CATALOG);
        if self.moto.is_some() {
            lines.extend(settings_with(SPARK_S3));
        }
        let mut out = BTreeMap::new();
        for (key, value) in lines {
            let value = match key.rsplit('.').take(2).collect::<Vec<_>>().as_slice() {
                ["jars", "spark"] | ["extensions", "sql"] => continue, // at the session's start
                ["uri", _] => {
                    assert!(value.contains("db.example:5432/analytics"), "{value}");
                    value.replace(
                        "db.example:5432/analytics",
                        &format!("127.0.0.1:5432/{}", self.db.name),
                    )
                }
                ["user", "jdbc"] => {
                    assert_eq!(value, "receipt_analyst", "the README reads as the analyst");
                    role.to_string()
                }
                ["warehouse", _] => self.warehouse(),
                ["key", "access"] => crate::s3::ACCESS_KEY_ID.to_string(),
                ["key", "secret"] => crate::s3::SECRET_ACCESS_KEY.to_string(),
                ["endpoint", "s3a"] => self.moto.as_ref().unwrap().endpoint.clone(),
                _ => value,
            };
            out.insert(key, value); // a later line (the S3 warehouse) replaces an earlier one
        }
        out.into_iter().collect()
    }

    /// Runs statements in Spark as `role`; what Spark said when it fails.
    fn spark_sql(&self, role: &str, statements: &[String]) -> Result<tools::SparkResults, String> {
        spark().sql(&self.spark_settings(role), statements)
    }

    /// Every row of the table as Spark reads it as the analyst, with the README's statement.
    fn spark_rows(&self) -> Vec<Snap> {
        let select = "SELECT * FROM receipt_exporter.receipts.receipt_snapshots";
        assert!(iceberg_section().contains(select));
        let rows = self
            .spark_sql(&self.roles.reader, &[select.to_string()])
            .unwrap_or_else(|e| panic!("Spark reads the table: {e}"));
        let mut snaps: Vec<Snap> = rows[0]
            .iter()
            .map(|r| Snap {
                run_id: r[0].as_i64().unwrap(),
                captured_at_us: r[1].as_i64().unwrap(),
                group_id: r[2].as_str().unwrap().to_string(),
                msg_seq: r[3].as_i64().unwrap(),
                read_num: r[4].as_i64().unwrap() as i32,
                unread_num: r[5].as_i64().unwrap() as i32,
            })
            .collect();
        snaps.sort();
        snaps
    }

    /// A README Python snippet for this lab: its database, and the lake's AWS variables.
    fn python(&self, script: &str) -> Output {
        let demo = "receipt_exporter_demo";
        assert!(script.contains(demo), "the snippet names the demo database");
        let script = script.replace(demo, &self.db.name);
        let mut cmd = tools::python();
        self.aws(&mut cmd);
        let out = cmd.arg("-c").arg(&script).output().unwrap();
        assert!(out.status.success(), "{script}\n{}", stderr(&out));
        out
    }

    /// Every row as pyiceberg reads it, configured by the README's snippet.
    fn pyiceberg_rows(&self) -> Vec<Snap> {
        let snippet = snippet_with(PYICEBERG);
        let setup = &snippet[..snippet.find("snapshots = ").expect("the scan")];
        crate::iceberg::parse_rows(&stdout(&self.python(&format!("{setup}{PYICEBERG_DUMP}"))))
    }

    /// Every row as DuckDB reads it, with the README's snippet's set-up.
    fn duckdb_rows(&self) -> Vec<Snap> {
        let snippet = snippet_with("import duckdb, duckdb_extensions, psycopg2");
        let setup = &snippet[..snippet.rfind("print(con.sql(").expect("the query")];
        crate::iceberg::parse_rows(&stdout(&self.python(&format!("{setup}{DUCKDB_DUMP}"))))
    }

    /// The README's DuckDB snippet as printed: its per-group counts and sums.
    fn duckdb_readme_groups(&self) -> BTreeMap<String, (i64, i64)> {
        let text =
            stdout(&self.python(&snippet_with("import duckdb, duckdb_extensions, psycopg2")));
        text.lines()
            .filter_map(|l| {
                let cells: Vec<&str> = l
                    .split('│')
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .collect();
                match cells.as_slice() {
                    [g, n, r] if g.starts_with("@TGS#") => {
                        Some((g.to_string(), (n.parse().ok()?, r.parse().ok()?)))
                    }
                    _ => None,
                }
            })
            .collect()
    }

    /// Spark, pyiceberg, DuckDB (its rows, and the README's query as printed) each read
    /// exactly Postgres's rows.
    async fn assert_every_reader_equals_postgres(&self, when: &str) {
        let pg = pg_snapshots(&self.db).await;
        assert!(!pg.is_empty());
        assert_eq!(self.spark_rows(), pg, "Spark reads Postgres's rows {when}");
        assert_eq!(
            self.pyiceberg_rows(),
            pg,
            "pyiceberg reads Postgres's rows {when}"
        );
        assert_eq!(
            self.duckdb_rows(),
            pg,
            "DuckDB reads Postgres's rows {when}"
        );
        let mut groups: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for s in &pg {
            let g = groups.entry(s.group_id.clone()).or_default();
            g.0 += 1;
            g.1 += s.read_num as i64;
        }
        assert_eq!(
            self.duckdb_readme_groups(),
            groups,
            "the README's DuckDB query {when}"
        );
        let printed = stdout(&self.python(&snippet_with(PYICEBERG)));
        for group in groups.keys() {
            assert!(
                printed.contains(group.as_str()),
                "the README's pyiceberg query {when}: {printed}"
            );
        }
    }
}

/// A line of the README's pyiceberg snippet.
const PYICEBERG: &str = "from pyiceberg.catalog.sql import SqlCatalog";

const PYICEBERG_DUMP: &str = r#"
import datetime, json
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
for r in catalog.load_table("receipts.receipt_snapshots").scan().to_arrow().to_pylist():
    r["captured_at"] = (r["captured_at"] - EPOCH) // datetime.timedelta(microseconds=1)
    print(json.dumps(r))
"#;

const DUCKDB_DUMP: &str = r#"
import json
for r in con.sql(f"""SELECT run_id, epoch_us(captured_at), group_id, msg_seq, read_num, unread_num
                     FROM iceberg_scan('{metadata}')""").fetchall():
    print(json.dumps(dict(zip(["run_id", "captured_at", "group_id", "msg_seq", "read_num", "unread_num"], r))))
"#;

/// The README's compaction and expiry statements, as printed but for the day: today's (UTC),
/// where the tests' runs put their rows.
fn readme_maintenance() -> Vec<String> {
    let block = block_with("CALL receipt_exporter.system.rewrite_data_files(");
    let today = chrono::Utc::now().date_naive();
    let (day, next) = ("2026-11-28 00:00:00 UTC", "2026-11-29 00:00:00 UTC");
    assert!(block.contains(day) && block.contains(next), "{block}");
    let block = block
        .replace(day, &format!("{today} 00:00:00 UTC"))
        .replace(next, &format!("{} 00:00:00 UTC", today.succ_opt().unwrap()));
    block
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Reads, compacts and expires with Spark as the README says, then an exporter run, then
/// `iceberg maintain`; every reader equals Postgres at each step.
async fn spark_compacts_then_the_exporter_and_maintain_go_on(on_s3: bool) {
    let lab = Lab::new(on_s3).await;
    lab.run();
    lab.run();
    lab.assert_every_reader_equals_postgres("after two exporter runs")
        .await;

    let statements = readme_maintenance();
    assert_eq!(statements.len(), 2, "{statements:?}");
    let results = lab
        .spark_sql(&lab.roles.writer, &statements)
        .unwrap_or_else(|e| panic!("the README's CALLs run as printed: {e}"));
    let (rewrite, expire) = (&results[0][0], &results[1][0]);
    assert!(
        rewrite[0].as_i64().unwrap() >= 2,
        "files rewritten: {rewrite:?}"
    );
    assert_eq!(rewrite[1], 1, "into one file: {rewrite:?}");
    assert!(
        expire[0].as_i64().unwrap() >= 2,
        "the replaced files deleted: {expire:?}"
    );
    lab.assert_every_reader_equals_postgres("after Spark's compaction")
        .await;
    if !on_s3 {
        // Spark's Hadoop file system names local files `file:/...`, the exporter `file:///...`.
        let pointer = lab.pointer().await;
        assert!(
            pointer.starts_with("file:/") && !pointer.starts_with("file://"),
            "{pointer}"
        );
    }

    lab.run(); // commits on top of Spark's metadata
    let out = lab.maintain(&["--expire-older-than", "0s", "--orphan-min-age", "0s"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "maintain after Spark: {}",
        stderr(&out)
    );
    assert!(
        stdout(&out).contains(" snapshot(s) expired"),
        "{}",
        stdout(&out)
    );
    lab.assert_every_reader_equals_postgres("after maintain")
        .await;
    let again = lab.maintain(&["--orphan-min-age", "0s"]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert!(
        stdout(&again).contains(" 0 orphan file(s) removed"),
        "nothing left to remove: {}",
        stdout(&again)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spark_reads_compacts_and_expires_and_maintain_works_after_it() {
    spark_compacts_then_the_exporter_and_maintain_go_on(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_s3_spark_reads_compacts_and_expires_and_maintain_works_after_it() {
    spark_compacts_then_the_exporter_and_maintain_go_on(true).await;
}

/// Commits that change one table property, `N` times over, with pyiceberg configured by the
/// README's snippet (`catalog`), retried on a conflict as pyiceberg's users do.
const FOREIGN_COMMITS: &str = r#"
from pyiceberg.exceptions import CommitFailedException
for i in range(N):
    while True:
        try:
            with catalog.load_table("receipts.receipt_snapshots").transaction() as tx:
                tx.set_properties({"foreign-writer.commit": str(i)})
            break
        except CommitFailedException:
            pass
"#;

/// After 1,000 commits of other writers (pyiceberg's and Spark's property updates), each
/// leaving a metadata file that every writer's log forgets after 100 versions and none deletes,
/// `maintain --orphan-min-age 0s` leaves at most `write.metadata.previous-versions-max` + 2
/// metadata files, and every reader still equals Postgres.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_thousand_foreign_commits_maintain_leaves_the_metadata_log_and_readers_agree() {
    let lab = Lab::new(false).await;
    lab.run();
    let snippet = snippet_with(PYICEBERG);
    let setup = &snippet[..snippet.find("snapshots = ").unwrap()];
    lab.python(&format!(
        "{setup}{}",
        FOREIGN_COMMITS.replace("range(N)", "range(980)")
    ));
    let spark: Vec<String> = (0..20)
        .map(|i| {
            format!("ALTER TABLE receipt_exporter.receipts.receipt_snapshots SET TBLPROPERTIES ('spark-writer.commit' = '{i}')")
        })
        .collect();
    lab.spark_sql(&lab.roles.writer, &spark)
        .unwrap_or_else(|e| panic!("Spark commits: {e}"));
    lab.run(); // the exporter commits after them
    let before = lab.metadata_files();
    assert!(before > 1_000, "{before} metadata files");

    let out = lab.maintain(&["--orphan-min-age", "0s"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let max = 100; // the table's write.metadata.previous-versions-max, checked below
    let after = lab.metadata_files();
    assert!(
        after <= max + 2,
        "{after} metadata files left of {before}: {}",
        stdout(&out)
    );
    lab.assert_every_reader_equals_postgres("after maintain")
        .await;
    let props = lab
        .spark_sql(
            &lab.roles.reader,
            &["SHOW TBLPROPERTIES receipt_exporter.receipts.receipt_snapshots".to_string()],
        )
        .unwrap();
    let prop = |key: &str| {
        props[0]
            .iter()
            .find(|r| r[0] == key)
            .map(|r| r[1].as_str().unwrap().to_string())
    };
    assert_eq!(
        prop("write.metadata.previous-versions-max").as_deref(),
        Some("100")
    );
    assert_eq!(
        prop("foreign-writer.commit").as_deref(),
        Some("979"),
        "every commit landed"
    );
    assert_eq!(prop("spark-writer.commit").as_deref(), Some("19"));
}

/// The lake given as `file:/ABSOLUTE/PATH` (Hadoop's spelling) is the lake `file:///...` and
/// the bare path name: a run writes the table there, and maintain with each spelling finds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lake_spelled_file_colon_slash_is_the_same_lake() {
    let lab = Lab::new(false).await;
    let path = lab.lake();
    let out = run(lab
        .exporter()
        .env("EXPORT_PARQUET_DIR", format!("file:{path}"))
        .arg("run"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(std::path::Path::new(&path)
        .join("receipts/receipt_snapshots/data")
        .is_dir());
    for spelling in [
        format!("file:{path}"),
        format!("file://{path}"),
        path.clone(),
    ] {
        let out = run(lab.exporter().env("EXPORT_PARQUET_DIR", &spelling).args([
            "iceberg",
            "maintain",
            "--orphan-min-age",
            "0s",
        ]));
        assert_eq!(out.status.code(), Some(0), "{spelling}: {}", stderr(&out));
        assert!(
            stdout(&out).contains(" 0 orphan file(s) removed"),
            "{}",
            stdout(&out)
        );
    }
    assert_eq!(lab.pyiceberg_rows(), pg_snapshots(&lab.db).await);
}

/// A check that fails changes nothing: with a live data file gone from the lake, maintain
/// refuses before it expires a snapshot (it used to commit the expiry, then fail).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintain_expires_nothing_when_its_check_of_the_lake_fails() {
    let lab = Lab::new(false).await;
    lab.run();
    lab.run();
    let pointer = lab.pointer().await;
    let data = lab.dir.path().join("lake/receipts/receipt_snapshots/data");
    let lost = visible_parquet_files(&data).remove(0);
    std::fs::remove_file(&lost).unwrap();
    let out = lab.maintain(&["--expire-older-than", "0s", "--orphan-min-age", "0s"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("changed nothing (no snapshot expired, no file removed)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(lab.pointer().await, pointer, "no expiry was committed");
}

/// The README's DuckDB queries over the Hive-style Parquet files (the read ratio per group and
/// hour, and who read each message with the first snapshot's time), run as printed in the
/// directory holding `warehouse/`: each equals the same computed from Postgres.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_duckdb_queries_over_the_parquet_files_work_as_printed() {
    let db = TestDb::new().await;
    let sim = simulator(2, 20, |_| {});
    let dir = tempfile::tempdir().unwrap();
    let exporter = || {
        let mut cmd = exporter_for(&db, &sim.base_url(), std::path::Path::new("warehouse"));
        cmd.current_dir(dir.path());
        cmd
    };
    for group in group_ids(&sim) {
        let out = run(exporter().args(["track", "add", &group, "--seqs", "1..20", "--details"]));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    for _ in 0..2 {
        let out = run(exporter().arg("run"));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    let readme = readme();
    let query = |marker: &str| -> Vec<Vec<serde_json::Value>> {
        let at = readme
            .find(marker)
            .unwrap_or_else(|| panic!("the README has {marker}"));
        let start = at + readme[at..].find("```sql\n").unwrap() + 7;
        let sql = &readme[start..start + readme[start..].find("```").unwrap()];
        // As text: Python's DuckDB needs pytz to hand over a timestamptz.
        let script = "import duckdb, json, sys\n\
                      q = sys.argv[1].strip().rstrip(';')\n\
                      rows = duckdb.sql(f'SELECT CAST(COLUMNS(*) AS VARCHAR) FROM ({q}) t').fetchall()\n\
                      print(json.dumps(rows))";
        let out = tools::python()
            .args(["-c", script, sql])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{sql}\n{}", stderr(&out));
        serde_json::from_str(&stdout(&out)).unwrap()
    };

    let ratios = query("Each group's read ratio over time, in DuckDB:");
    let expected: Vec<(String, String, f64)> = sqlx::query_as(
        "SELECT group_id, to_char(date_trunc('hour', captured_at AT TIME ZONE 'UTC'), 'YYYY-MM-DD HH24:MI:SS'),
                (sum(read_num)::float8 / sum(read_num + unread_num))
         FROM receipts.receipt_snapshots GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(ratios.len(), expected.len(), "{ratios:?}");
    for (row, (group, hour, ratio)) in ratios.iter().zip(&expected) {
        assert_eq!(row[0], group.as_str());
        assert!(row[1].as_str().unwrap().starts_with(hour), "{row:?} {hour}");
        let got: f64 = row[2].as_str().unwrap().parse().unwrap();
        assert!((got - ratio).abs() <= 0.0005, "{row:?} {ratio}");
    }

    let readers = query("The same from the lake, in DuckDB");
    let expected: Vec<(String, i64, String)> = sqlx::query_as(
        "SELECT group_id, msg_seq, member_account FROM receipts.message_readers
         WHERE NOT read_before_details ORDER BY group_id, msg_seq, first_seen_read_at, member_account",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(!expected.is_empty(), "the runs recorded who read");
    let mut got: Vec<(String, i64, String)> = readers
        .iter()
        .map(|r| {
            let text = |i: usize| r[i].as_str().unwrap().to_string();
            (text(0), text(1).parse().unwrap(), text(2))
        })
        .collect();
    let mut want = expected.clone();
    got.sort();
    want.sort();
    assert_eq!(got, want, "DuckDB's readers equal Postgres's");
}

/// The README's Spark SQL for the newest read-progress change row per message, as printed, run
/// by Spark as the analyst on the Iceberg lake: exactly `receipts.message_read_progress`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_spark_query_gives_the_read_progress_table() {
    let lab = Lab::new(false).await;
    lab.run();
    lab.sim.advance(1);
    lab.run();
    let readme = readme();
    let section = readme
        .split("#### Read progress in the lake")
        .nth(1)
        .expect("the README's section on the read progress in the lake");
    let block = section
        .split("```sql\n-- Spark SQL")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("its Spark SQL block");
    // Its lines less the comments (the first line is the rest of the opening comment).
    let query: Vec<&str> = block
        .lines()
        .skip(1)
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect();
    let query = query.join("\n");
    let select = format!(
        "SELECT group_id, msg_seq, members_at_first_seen, read_ratio, run_id FROM ({})",
        query.trim().trim_end_matches(';')
    );
    let results = lab
        .spark_sql(&lab.roles.reader, &[select])
        .unwrap_or_else(|e| panic!("Spark runs the README's query: {e}"));
    type Row = (String, i64, i64, Option<f64>, i64);
    let mut spark: Vec<Row> = results[0]
        .iter()
        .map(|r| {
            (
                r[0].as_str().unwrap().to_string(),
                r[1].as_i64().unwrap(),
                r[2].as_i64().unwrap(),
                r[3].as_f64(),
                r[4].as_i64().unwrap(),
            )
        })
        .collect();
    spark.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    let pg: Vec<(String, i64, i32, Option<f64>, i64)> = sqlx::query_as(
        "SELECT group_id, msg_seq, members_at_first_seen, read_ratio, run_id
         FROM receipts.message_read_progress ORDER BY group_id COLLATE \"C\", msg_seq",
    )
    .fetch_all(&lab.db.pool)
    .await
    .unwrap();
    assert!(pg.len() > 50, "{} rows", pg.len());
    assert_eq!(spark.len(), pg.len(), "one row per message");
    for (s, p) in spark.iter().zip(&pg) {
        let same_ratio = match (s.3, p.3) {
            (Some(a), Some(b)) => (a - b).abs() < 1e-12,
            (a, b) => a == b,
        };
        let same = s.0 == p.0 && s.1 == p.1 && s.2 == i64::from(p.2) && s.4 == p.4;
        assert!(same && same_ratio, "Spark {s:?}, Postgres {p:?}");
    }
}
