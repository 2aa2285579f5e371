//! Issue 24: paged within minutes, never flooded. An outage that begins mid-run ends the run;
//! a run killed on this host is repaired at once by any job's next run; the failure webhook,
//! the `/metrics` endpoint, the alert rules under `promtool`, and the smaller points (a
//! missing group costs one call, `track import --check`, one-line slow statements). The real
//! binary throughout, the simulator over HTTP, a local HTTP receiver for the webhook.

use crate::fencing::{spawn, TwoJobs};
use crate::helpers::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `receipt-exporter simulate` as a process of its own, so that it can be killed: its base
/// URL once it listens.
fn simulator_process(groups: usize, messages: u64) -> (Child, String) {
    let mut child = exporter()
        .env("TIM_SDKAPPID", SDKAPPID.to_string())
        .env("TIM_SECRET_KEY", KEY)
        .args(["simulate", "--port", "0", "--limit", "0"])
        .args([
            "--groups",
            &groups.to_string(),
            "--messages",
            &messages.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = BufReader::new(stdout)
        .lines()
        .map(|l| l.unwrap())
        .find(|l| l.starts_with("listening on "))
        .expect("the simulator says where it listens");
    let addr = line.trim_start_matches("listening on ").trim().to_string();
    (child, format!("http://{addr}"))
}

/// Rows in a table of ours.
async fn count(db: &TestDb, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM receipts.{table}"))
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

async fn committed_batches(db: &TestDb) -> i64 {
    count(db, "write_batches").await
}

/// The outage: the API stops answering in the middle of a run (the simulator killed
/// after the first answers). At the default bound (30 s) the run ends `failed`, exit 1,
/// within 45 s of the kill, with one line naming the host and the cause and at most ~20
/// lines on stderr; the rows it committed before are in both sinks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_mid_run_ends_the_run_at_the_bound_with_its_rows_in_both_sinks() {
    let db = TestDb::new().await;
    let (mut sim, base) = simulator_process(12, 2_000);
    let groups: Vec<String> = (1..=12).map(|n| format!("@TGS#sim1-{n}")).collect();
    track_all(&db, &groups, 2_000).await; // 480 calls at 20 calls/s: 24 s without an outage
    let dir = tempfile::tempdir().unwrap();
    let child = exporter_for(&db, &base, dir.path())
        .env("EXPORT_RATE_LIMIT", "20")
        .arg("run")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while committed_batches(&db).await < 1 {
        assert!(Instant::now() < deadline, "the run committed nothing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sim.kill().unwrap(); // SIGKILL: refused from now on
    let killed = Instant::now();
    sim.wait().unwrap();
    let out = finish(child);
    let took = killed.elapsed();
    assert_eq!(out.status.code(), Some(1), "failed");
    assert!(
        took >= Duration::from_secs(29) && took < Duration::from_secs(45),
        "ended {took:?} after the kill: the 30 s bound ends it, nothing earlier"
    );
    let err = stderr(&out);
    assert!(
        err.lines().count() <= 20,
        "{} lines: {err}",
        err.lines().count()
    );
    let line = stdout(&out);
    let host = base.trim_start_matches("http://");
    assert!(
        line.contains(&format!("the Chat API at {host} stopped answering"))
            && line.contains("connection refused"),
        "{line}"
    );
    let (status, written, _, error) = run_row(&db, 1).await;
    assert_eq!(status, "failed");
    assert!(error.unwrap().contains("stopped answering"));
    assert!(written > 0, "rows were committed before the outage");
    assert_warehouse_consistent(&db, dir.path()).await;
    // `runs show` agrees with the status: not every group ok, the rest not pulled.
    let show = run(exporter_for(&db, &base, dir.path()).args(["runs", "show", "1"]));
    let text = stdout(&show);
    assert!(text.contains("not finished (the run stopped"), "{text}");
    assert!(
        text.contains("not pulled:") && !text.contains("left by the budget"),
        "{text}"
    );
    assert!(!text.contains("groups:               12 ok"), "{text}");
}

/// A run of job A killed (SIGKILL) while its lease runs; a run of job B started at once finds
/// its process gone from this host and repairs it without waiting for the lease: A is
/// `abandoned`, and the lake equals Postgres after B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_run_of_another_job_on_this_host_is_repaired_at_once() {
    let t = TwoJobs::new().await;
    let mut a = spawn(&mut t.run("a"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while committed_batches(&t.db).await < 1 {
        assert!(Instant::now() < deadline, "A committed nothing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.kill().unwrap();
    a.wait().unwrap();
    let started = Instant::now();
    let b = run(&mut t.run("b"));
    assert_eq!(b.status.code(), Some(0), "{}", stderr(&b));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "B did not wait for A's lease (70 s)"
    );
    let (status, _, _, error) = run_row(&t.db, 1).await;
    assert_eq!(status, "abandoned");
    assert!(
        error.unwrap().contains("is gone"),
        "the reason names the process"
    );
    assert!(
        stderr(&b).contains("died without finishing"),
        "{}",
        stderr(&b)
    );
    assert_warehouse_consistent(&t.db, t.dir.path()).await;
}

/// Random SIGKILLs of runs of two jobs and of backfills (each run starts with its repair, so
/// repairs are killed too), several at a time, then one clean run: nothing is left running
/// and the lake equals Postgres. `RECEIPT_EXPORTER_STORM_ROUNDS` (default 4) and
/// `RECEIPT_EXPORTER_STRESS_SEED` repeat it longer or exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_storm_ends_with_nothing_running_and_the_lake_equal_to_postgres() {
    let t = TwoJobs::new().await;
    let rounds: usize = std::env::var("RECEIPT_EXPORTER_STORM_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let seed: u64 = std::env::var("RECEIPT_EXPORTER_STRESS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("kill storm: seed {seed}, {rounds} rounds");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let groups = group_ids(&t.sim);
    let backfill = |group: &str| {
        let mut cmd = exporter_for(&t.db, &t.sim.base_url(), t.dir.path());
        cmd.env("EXPORT_BATCH_SIZE", "10")
            .env("EXPORT_RATE_LIMIT", "60")
            .args([
                "backfill", "--group", group, "--seqs", "1..300", "--rate", "40",
            ]);
        cmd
    };
    for _ in 0..rounds {
        let mut children: Vec<Child> = Vec::new();
        for _ in 0..rng.random_range(2..=3) {
            let mut cmd = match rng.random_range(0..4) {
                0 => t.run("a"),
                1 => t.run("b"),
                _ => backfill(&groups[rng.random_range(0..2)]),
            };
            children.push(spawn(&mut cmd));
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..400))).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..1500))).await;
        for mut child in children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
    let clean = run(&mut t.run("a"));
    assert_eq!(clean.status.code(), Some(0), "{}", stderr(&clean));
    assert_warehouse_consistent(&t.db, t.dir.path()).await;
}

/// A local HTTP receiver for the webhook: records each request's body and path, answers
/// with the statuses of `script` in turn (then 200).
pub(crate) struct Receiver {
    pub(crate) url: String,
    seen: Arc<Mutex<Vec<(String, Value)>>>,
}

impl Receiver {
    pub(crate) async fn start(script: Vec<u16>) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<(String, Value)>>> = Default::default();
        let script = Arc::new(Mutex::new(script.into_iter()));
        let log = seen.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (log, script) = (log.clone(), script.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (log, script) = (log.clone(), script.clone());
                        async move {
                            let path = req.uri().path().to_string();
                            let head = req.method() == hyper::Method::HEAD;
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            if !head {
                                let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
                                log.lock().unwrap().push((path, json));
                            }
                            let status = if head {
                                405
                            } else {
                                script.lock().unwrap().next().unwrap_or(200)
                            };
                            Ok::<_, hyper::Error>(
                                hyper::Response::builder()
                                    .status(status)
                                    .body(Full::new(Bytes::from_static(b"ok")))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Receiver {
            url: format!("http://{addr}/hooks/T0K3N-in-the-path-0123456789abcdef"),
            seen,
        }
    }

    pub(crate) fn bodies(&self) -> Vec<Value> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|(_, b)| b.clone())
            .collect()
    }
}

/// The failure webhook: a partial run is POSTed as one JSON object (job, run id, status, the
/// error, one human line), retried after a 500, without the key or the webhook's token in it;
/// a failed run logs at ERROR; a run that could not start is `not_started` with no run id; a
/// successful run sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_failure_webhook_gets_one_json_alert_per_failed_run_retried_on_500() {
    let db = TestDb::new().await;
    let sim = simulator(2, 30, |_| {});
    let dir = tempfile::tempdir().unwrap();
    let mut tracked = group_ids(&sim);
    tracked.push("@TGS#gone".into());
    track_all(&db, &tracked, 30).await;
    let hook = Receiver::start(vec![500]).await;
    // Every log line at every level, reqwest's and hyper's included: the token is in none.
    let out = run(exporter_for(&db, &sim.base_url(), dir.path())
        .env("EXPORT_ALERT_WEBHOOK", &hook.url)
        .env("RUST_LOG", "trace")
        .arg("run"));
    assert_eq!(out.status.code(), Some(3), "partial");
    let bodies = hook.bodies();
    assert_eq!(bodies.len(), 2, "the 500 was retried once: {bodies:?}");
    assert_eq!(bodies[0], bodies[1], "the same alert");
    let alert = &bodies[1];
    assert_eq!(alert["job"], "default");
    assert_eq!(alert["run_id"], 1);
    assert_eq!(alert["status"], "partial");
    assert_eq!(alert["error"], "1 of 3 groups failed");
    let text = alert["text"].as_str().unwrap();
    assert!(
        text.contains("run 1 (job default) partial: 1 of 3 groups failed") && !text.contains('\n'),
        "{text}"
    );
    let everything = format!("{} {} {}", alert, stdout(&out), stderr(&out));
    for secret in [KEY, "T0K3N-in-the-path", hook.url.as_str()] {
        assert!(
            !everything.contains(secret),
            "{secret} leaked: {everything}"
        );
    }
    assert!(stderr(&out).contains("alert sent to the webhook at host 127.0.0.1"));
    assert!(stderr(&out).contains(" TRACE "), "trace logging was on");

    // A run that could not start: Postgres is not there. No run id, the cause in the error.
    let hook = Receiver::start(vec![]).await;
    let out = run(exporter_for(&db, &sim.base_url(), dir.path())
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .env("EXPORT_ALERT_WEBHOOK", &hook.url)
        .args(["run", "--job", "nosuch"]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let bodies = hook.bodies();
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    assert_eq!(
        (&bodies[0]["status"], &bodies[0]["run_id"]),
        (&"not_started".into(), &Value::Null)
    );
    assert_eq!(bodies[0]["job"], "nosuch");
    assert!(
        bodies[0]["error"]
            .as_str()
            .unwrap()
            .contains("--job nosuch"),
        "{bodies:?}"
    );

    // A failed run (a wrong key) logs at ERROR; a successful one sends nothing.
    let hook = Receiver::start(vec![]).await;
    let wrong = "0000000000000000000000000000000000000000000000000000000000c0ffee";
    let out = run(exporter_for(&db, &sim.base_url(), dir.path())
        .env("TIM_SECRET_KEY", wrong)
        .env("EXPORT_ALERT_WEBHOOK", &hook.url)
        .arg("run"));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out)
            .lines()
            .any(|l| l.contains("ERROR") && l.contains("run 2 (job default) failed")),
        "{}",
        stderr(&out)
    );
    assert_eq!(hook.bodies()[0]["status"], "failed");
    assert!(!hook.bodies()[0].to_string().contains(wrong));
    sqlx::query("UPDATE receipts.tracked_groups SET enabled = false WHERE group_id = '@TGS#gone'")
        .execute(&db.pool)
        .await
        .unwrap();
    let hook = Receiver::start(vec![]).await;
    let out = run(exporter_for(&db, &sim.base_url(), dir.path())
        .env("EXPORT_ALERT_WEBHOOK", &hook.url)
        .arg("run"));
    assert_eq!(out.status.code(), Some(0));
    assert!(hook.bodies().is_empty());
    // doctor checks that the webhook's host answers without sending an alert.
    let out = run(exporter_for(&db, &sim.base_url(), dir.path())
        .env("EXPORT_ALERT_WEBHOOK", &hook.url)
        .arg("doctor"));
    assert!(
        stdout(&out).contains("OK    alert webhook: its host 127.0.0.1 answers"),
        "{}",
        stdout(&out)
    );
    assert!(hook.bodies().is_empty(), "doctor sent no alert");
}

/// What `/metrics` answers, parsed as Prometheus does.
async fn scrape(addr: &str) -> prometheus_parse::Scrape {
    let answer = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let ctype = answer.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    let text = answer.text().await.unwrap();
    let lines = text.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines).unwrap()
}

fn value(scrape: &prometheus_parse::Scrape, name: &str, label: (&str, &str)) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && s.labels.get(label.0) == Some(label.1))
        .map(|s| match s.value {
            prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

/// Waits for the line `serving metrics at http://ADDR/metrics` on a child's stderr.
fn metrics_addr(child: &mut Child) -> (String, std::thread::JoinHandle<String>) {
    let (rest, log) = crate::helpers::announced(child, "serving metrics at http://");
    (rest.trim_end_matches("/metrics").to_string(), log)
}

/// `schedule --metrics-listen`: `/metrics` serves every job's series from the ledger, parsed
/// as Prometheus parses them: a job whose runs all failed has its last success at 0 and its
/// first run's time; the outcome of `lake verify` is there; a job file that never ran shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_serves_metrics_that_prometheus_parses() {
    let db = TestDb::new().await;
    let sim = simulator(1, 20, |_| {});
    let dir = tempfile::tempdir().unwrap();
    track_all(&db, &group_ids(&sim), 20).await;
    let jobs = tempfile::tempdir().unwrap();
    std::fs::write(
        jobs.path().join("hourly.toml"),
        "schedule = \"5 * * * *\"\ncatch_up = \"skip\"\n",
    )
    .unwrap();
    std::fs::write(
        jobs.path().join("nightly.toml"),
        "schedule = \"0 3 * * *\"\ncatch_up = \"skip\"\n",
    )
    .unwrap();
    let ok = run(exporter_for(&db, &sim.base_url(), dir.path())
        .args(["run", "--job"])
        .arg(jobs.path().join("hourly.toml")));
    assert_eq!(ok.status.code(), Some(0));
    let wrong = "0000000000000000000000000000000000000000000000000000000000c0ffee";
    let failed = run(exporter_for(&db, &sim.base_url(), dir.path())
        .env("TIM_SECRET_KEY", wrong)
        .arg("run"));
    assert_eq!(failed.status.code(), Some(2));
    let verify = run(exporter_for(&db, &sim.base_url(), dir.path()).args(["lake", "verify"]));
    assert_eq!(verify.status.code(), Some(0));

    let mut daemon = exporter_for(&db, &sim.base_url(), dir.path())
        .env("EXPORT_METRICS_LISTEN", "127.0.0.1:0")
        .args(["schedule", "--jobs"])
        .arg(jobs.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (addr, _log) = metrics_addr(&mut daemon);
    let s = scrape(&addr).await;
    let success = "receipt_exporter_last_success_timestamp_seconds";
    assert!(value(&s, success, ("export_job", "hourly")).unwrap() > 1.7e9);
    assert_eq!(
        value(&s, success, ("export_job", "default")),
        Some(0.0),
        "never succeeded"
    );
    assert!(
        value(
            &s,
            "receipt_exporter_first_run_timestamp_seconds",
            ("export_job", "default")
        )
        .unwrap()
            > 1.7e9
    );
    let failed_outcome = s.samples.iter().find(|x| {
        x.metric == "receipt_exporter_last_run_outcome"
            && x.labels.get("export_job") == Some("default")
            && x.labels.get("outcome") == Some("failed")
    });
    assert!(matches!(failed_outcome.unwrap().value, prometheus_parse::Value::Gauge(v) if v == 1.0));
    assert_eq!(
        value(
            &s,
            "receipt_exporter_check_success",
            ("check", "lake_verify")
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&s, "receipt_exporter_runs_total", ("export_job", "nightly")),
        Some(0.0),
        "a job file that never ran"
    );
    let root = reqwest::get(format!("http://{addr}/")).await.unwrap();
    assert!(root.text().await.unwrap().contains("/metrics"));
    let other = reqwest::get(format!("http://{addr}/nope")).await.unwrap();
    assert_eq!(other.status(), 404);
    signal(&daemon, "TERM");
    assert_eq!(daemon.wait().unwrap().code(), Some(0));

    // The port is taken: the run refuses before doing anything (exit 2, no ledger row).
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let out = run(exporter_for(&db, &sim.base_url(), dir.path())
        .env(
            "EXPORT_METRICS_LISTEN",
            taken.local_addr().unwrap().to_string(),
        )
        .arg("run"));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("EXPORT_METRICS_LISTEN / --metrics-listen"),
        "{}",
        stderr(&out)
    );
    let runs = count(&db, "export_runs").await;
    assert_eq!(runs, 2);
}

/// The shipped alert rules pass `promtool check rules` and their unit tests (`promtool test
/// rules`), and every series they name is one the exporter writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alert_rules_pass_promtool_and_name_only_series_the_exporter_writes() {
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/jobs/prometheus/alerts.yml");
    let tests = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/jobs/prometheus/alerts.test.yml"
    );
    let promtool = |args: &[&str]| {
        // Installed on first use (Debian's prometheus), as every tool of the suite.
        let out = crate::tools::promtool().args(args).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "promtool {args:?}: {text}");
        text
    };
    assert!(promtool(&["check", "rules", rules]).contains("SUCCESS"));
    assert!(promtool(&["test", "rules", tests]).contains("SUCCESS"));

    // Every receipt_exporter_* name in the rules is in a real metrics file.
    let db = TestDb::new().await;
    let sim = simulator(1, 20, |_| {});
    let dir = tempfile::tempdir().unwrap();
    track_all(&db, &group_ids(&sim), 20).await;
    let prom = dir.path().join("m/receipt-exporter.prom");
    assert_eq!(
        run(exporter_for(&db, &sim.base_url(), dir.path()).args(["lake", "verify"]))
            .status
            .code(),
        Some(0)
    );
    let doctor = run(exporter_for(&db, &sim.base_url(), dir.path()).arg("doctor"));
    assert_eq!(doctor.status.code(), Some(0), "{}", stdout(&doctor));
    let out = run(exporter_for(&db, &sim.base_url(), dir.path())
        .env("EXPORT_METRICS_FILE", &prom)
        .arg("run"));
    assert_eq!(out.status.code(), Some(0));
    let written = std::fs::read_to_string(&prom).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&prom).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "node_exporter reads it as another user");
    let text = std::fs::read_to_string(rules).unwrap();
    let names: std::collections::BTreeSet<&str> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("receipt_exporter_"))
        .collect();
    assert!(names.len() >= 6, "{names:?}");
    for name in names {
        assert!(
            written.contains(&format!("\n{name}{{")),
            "{name} is not in a metrics file:\n{written}"
        );
    }
}

/// An unwritable metrics file refuses a run before anything (exit 2, no ledger row), and
/// doctor fails on it, with the fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_metrics_file_refuses_the_run_at_start_and_fails_doctor() {
    let db = TestDb::new().await;
    let sim = simulator(1, 10, |_| {});
    let dir = tempfile::tempdir().unwrap();
    track_all(&db, &group_ids(&sim), 10).await;
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, "x").unwrap();
    let prom = blocker.join("receipt-exporter.prom");
    let out = run(exporter_for(&db, &sim.base_url(), dir.path())
        .env("EXPORT_METRICS_FILE", &prom)
        .arg("run"));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("EXPORT_METRICS_FILE")
            && stderr(&out).contains("does not take a new file"),
        "{}",
        stderr(&out)
    );
    let runs = count(&db, "export_runs").await;
    assert_eq!(runs, 0, "nothing was done");
    let out = run(exporter_for(&db, &sim.base_url(), dir.path())
        .env("EXPORT_METRICS_FILE", &prom)
        .arg("doctor"));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("FAIL  metrics: EXPORT_METRICS_FILE"),
        "{}",
        stdout(&out)
    );
}

/// A group the API says does not exist costs one call per run, not one per batch: its first
/// batch goes alone and the others never leave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_group_costs_one_call_per_run() {
    use receipt_exporter::sim::Endpoint;
    let db = TestDb::new().await;
    let sim = simulator(1, 500, |_| {});
    let dir = tempfile::tempdir().unwrap();
    let mut tracked = group_ids(&sim);
    let missing: Vec<String> = (1..=4).map(|n| format!("@TGS#missing-{n}")).collect();
    tracked.extend(missing.iter().cloned());
    track_all(&db, &tracked, 2_000).await; // 40 batches of 50 each for the missing groups
    let out = run(exporter_for(&db, &sim.base_url(), dir.path()).arg("run"));
    assert_eq!(out.status.code(), Some(3), "partial");
    let (_, _, calls, _) = run_row(&db, 1).await;
    // The real group: 500 messages exist, its window asks 2000 seqs: 40 calls. Missing: 1 each.
    assert_eq!(calls, 40 + 4, "one call per missing group");
    assert_eq!(sim.stats().endpoint(Endpoint::GroupMsgReceipt).calls, 44);
}

/// `track import --check` asks the API about every group of the file and refuses the whole
/// import (exit 2, nothing written) naming each group that cannot have receipts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn track_import_check_refuses_a_file_with_a_group_that_cannot_have_receipts() {
    let db = TestDb::new().await;
    let sim = simulator(2, 30, |_| {});
    let dir = tempfile::tempdir().unwrap();
    let ids = group_ids(&sim);
    let csv = dir.path().join("groups.csv");
    std::fs::write(
        &csv,
        format!(
            "group_id,from_seq,to_seq\n{},1,10\n@TGS#gone,1,10\n{},5,9\n",
            ids[0], ids[1]
        ),
    )
    .unwrap();
    let out = run(exporter_for(&db, &sim.base_url(), dir.path())
        .args(["track", "import", "--check"])
        .arg(&csv));
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("1 of 3 group(s) would never give a receipt, nothing imported")
            && err.contains("@TGS#gone: "),
        "{err}"
    );
    let n = count(&db, "tracked_groups").await;
    assert_eq!(n, 0);
    std::fs::write(
        &csv,
        format!(
            "group_id,from_seq,to_seq\n{},1,10\n{},5,9\n",
            ids[0], ids[1]
        ),
    )
    .unwrap();
    let out = run(exporter_for(&db, &sim.base_url(), dir.path())
        .args(["track", "import", "--check"])
        .arg(&csv));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("checked 2 group(s)"),
        "{}",
        stdout(&out)
    );
}

/// A slow statement is one INFO line naming the statement and its duration, never its SQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_statement_is_one_info_line() {
    let db = TestDb::new().await;
    track_all(&db, &["@TGS#a".to_string()], 10).await;
    // Hold a lock the exporter's read must wait for, a little over the 1 s threshold.
    let mut tx = db.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE receipts.tracked_groups IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await
        .unwrap();
    let child = exporter()
        .env("DATABASE_URL", &db.url)
        .args(["track", "list"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_800)).await;
    tx.rollback().await.unwrap();
    let out = finish(child);
    assert_eq!(out.status.code(), Some(0));
    let err = stderr(&out);
    let slow: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("slow statement"))
        .collect();
    assert_eq!(slow.len(), 1, "{err}");
    assert!(
        slow[0].contains(" INFO slow statement: SELECT receipts.tracked_groups took "),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line, no SQL: {err}");
}

/// `TIM_REGION=mumbai` is accepted and means `adminapiind.im.qcloud.com` (doctor asks there;
/// without a network here it names that host as the one it could not reach).
#[test]
fn the_mumbai_region_is_accepted_and_asks_its_domain() {
    let out = run(exporter()
        .env("TIM_SDKAPPID", SDKAPPID.to_string())
        .env("TIM_SECRET_KEY", KEY)
        .env("TIM_REGION", "mumbai")
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .arg("doctor"));
    let text = stdout(&out);
    assert!(text.starts_with("OK    settings: valid"), "{text}");
    assert!(text.contains("adminapiind.im.qcloud.com"), "{text}");
}
