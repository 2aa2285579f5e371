//! The programs the tests run beside the binary, each installed on first use, so that the
//! README's `cargo test` needs nothing installed by hand but Rust, Postgres and Python 3.
//!
//! `tests/tools/install.py` does the installing, into `target/tools`: the pinned Python packages
//! of `tests/tools/requirements.txt` in a venv (pyiceberg, DuckDB with its extensions, moto,
//! boto3, pyspark), Spark's jars, and Debian packages (installed when the tests run as root;
//! otherwise the test fails with the one line naming what to install first). It holds a file
//! lock while it works, so test threads and test binaries starting together never race it.
//!
//! Every test that runs Python, moto, Spark, promtool, Chromium or systemd-analyze gets it
//! here: [`python`], [`moto_server`], [`spark`], [`promtool`], [`chromium`],
//! [`systemd_analyze`]. Nothing is skipped when a tool is missing.
#![allow(dead_code)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};

/// Where the tools go: `target/tools`, beside the build (kept between runs, never committed).
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR is target/tmp")
        .join("tools")
}

/// Runs the installer for one step (`python`, `spark`, `command NAME PACKAGE`); quick once done.
fn install(args: &[&str]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/install.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(dir())
        .args(args)
        .env_remove("PYTHONPATH")
        .env_remove("PYTHONHOME")
        .output()
        .unwrap_or_else(|e| {
            panic!("the tests install their tools with python3, which does not run ({e}): install Python 3 first (Debian: apt-get install python3 python3-venv)")
        });
    let said = String::from_utf8_lossy(&out.stderr);
    eprint!("{said}");
    assert!(
        out.status.success(),
        "installing the tests' tools failed: {said}"
    );
}

/// Runs `install(args)` once per test binary for each distinct `args`.
fn once(args: &[&str]) {
    static DONE: Mutex<Option<HashSet<Vec<String>>>> = Mutex::new(None);
    let key: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    let done = done.get_or_insert_with(HashSet::new);
    if !done.contains(&key) {
        install(args);
        done.insert(key);
    }
}

/// A program of the project's Python environment (`target/tools/venv/bin/NAME`), installed.
pub fn venv_bin(name: &str) -> PathBuf {
    once(&["python"]);
    dir().join("venv/bin").join(name)
}

/// The project's Python (with pyiceberg, DuckDB and its extensions, moto, boto3, pyspark).
pub fn python() -> Command {
    let mut cmd = Command::new(venv_bin("python"));
    cmd.env_remove("PYTHONPATH").env_remove("PYTHONHOME");
    cmd
}

/// Runs a Python script with arguments in the project's environment.
pub fn run_python(script: &str, args: &[&str]) -> Output {
    python()
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("the project's python runs")
}

/// moto's S3 server, from the project's environment.
pub fn moto_server() -> Command {
    Command::new(venv_bin("moto_server"))
}

/// A command from a Debian package, installed on first use (as root; otherwise the test fails
/// with the line naming the package).
pub fn debian(name: &str, package: &str) -> Command {
    once(&["command", name, package]);
    Command::new(name)
}

/// Prometheus's `promtool` (Debian `prometheus`).
pub fn promtool() -> Command {
    debian("promtool", "prometheus")
}

/// Headless Chromium (Debian `chromium`).
pub fn chromium() -> Command {
    debian("chromium", "chromium")
}

/// systemd's unit-file checker (Debian `systemd`).
pub fn systemd_analyze() -> Command {
    debian("systemd-analyze", "systemd")
}

/// Spark's jars (Iceberg's runtime, its relocated Jackson, hadoop-aws, the AWS SDK bundle, the
/// PostgreSQL JDBC driver), installed with pyspark and a Java runtime: `target/tools/jars`.
pub fn spark_jars() -> PathBuf {
    once(&["spark"]);
    dir().join("jars")
}

/// One Spark session (`local[1]`) for the whole test binary, started by the first test that
/// asks (about 20 s), shared by the others one request at a time: `tests/tools/spark_server.py`.
pub struct Spark {
    process: Mutex<SparkProcess>,
    /// What it was started with: a later caller asking for other settings is a test's mistake.
    started_with: Vec<(String, String)>,
}

struct SparkProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    log: PathBuf,
}

/// The rows of each statement of a request, each row a list of values (timestamps in
/// microseconds since the epoch).
pub type SparkResults = Vec<Vec<Vec<serde_json::Value>>>;

/// The binary's Spark session, started with `jars` (file names in [`spark_jars`]) and the
/// settings that must be there at start (`spark.sql.extensions`).
pub fn spark(jars: &[&str], startup: &[(String, String)]) -> &'static Spark {
    static SPARK: OnceLock<Spark> = OnceLock::new();
    let spark = SPARK.get_or_init(|| Spark::start(jars, startup));
    assert_eq!(
        spark.started_with, startup,
        "one Spark session per test binary: every test starts it the same way"
    );
    spark
}

impl Spark {
    fn start(jars: &[&str], startup: &[(String, String)]) -> Spark {
        let dir = spark_jars();
        let paths: Vec<String> = jars
            .iter()
            .map(|jar| {
                let path = dir.join(jar);
                assert!(
                    path.exists(),
                    "no {jar} among the installed jars in {}",
                    dir.display()
                );
                path.display().to_string()
            })
            .collect();
        let conf: serde_json::Map<String, serde_json::Value> = startup
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into()))
            .collect();
        let logs = dir.parent().unwrap().join("spark-logs");
        std::fs::create_dir_all(&logs).unwrap();
        let log = logs.join(format!("{}.log", std::process::id()));
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/spark_server.py");
        let mut child = python()
            .arg(script)
            .arg(paths.join(","))
            .arg(serde_json::Value::Object(conf).to_string())
            .env("TZ", "UTC")
            .env("PYSPARK_PYTHON", venv_bin("python"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("the Spark server starts");
        let mut process = SparkProcess {
            stdin: child.stdin.take().unwrap(),
            stdout: BufReader::new(child.stdout.take().unwrap()),
            child,
            log,
        };
        let hello = process.answer();
        assert!(hello["ok"] == true, "Spark did not start: {hello}");
        Spark {
            process: Mutex::new(process),
            started_with: startup.to_vec(),
        }
    }

    /// Runs `statements` in a new session with `settings` (`spark.sql.catalog.*`, and
    /// `spark.hadoop.*` for the Hadoop configuration); the rows of each, or what Spark said.
    pub fn sql(
        &self,
        settings: &[(String, String)],
        statements: &[String],
    ) -> Result<SparkResults, String> {
        let conf: serde_json::Map<String, serde_json::Value> = settings
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into()))
            .collect();
        let request = serde_json::json!({ "spark": conf, "sql": statements });
        let mut process = self.process.lock().unwrap_or_else(|e| e.into_inner());
        writeln!(process.stdin, "{request}").expect("the Spark server reads");
        process.stdin.flush().unwrap();
        let answer = process.answer();
        match answer["ok"] == true {
            true => Ok(serde_json::from_value(answer["results"].clone()).unwrap()),
            false => Err(answer["error"].as_str().unwrap_or_default().to_string()),
        }
    }
}

impl SparkProcess {
    /// The server's next JSON line; a server that died fails the test with its log's tail.
    fn answer(&mut self) -> serde_json::Value {
        let mut line = String::new();
        let read = self.stdout.read_line(&mut line).unwrap_or(0);
        if read == 0 {
            let status = self.child.try_wait().ok().flatten();
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: String = log
                .chars()
                .rev()
                .take(6000)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            panic!(
                "the Spark server ended ({status:?}); its log {}:\n{tail}",
                self.log.display()
            );
        }
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("Spark answered {line:?}: {e}"))
    }
}
