//! Issue 26: many apps, one warehouse. Two simulators are two Chat apps (two SDKAppIDs, two
//! keys) with the same group ids; the default app is the TIM_* settings, the other is declared
//! as `apps/b.toml`. Rows never mix, each app's windows and budget are its own, and a wrong
//! key fails that app's runs only.

use crate::helpers::*;
use receipt_exporter::secret::Secret;
use receipt_exporter::sim::{generate_groups, SimConfig, Simulator};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

const SDKAPPID_B: u64 = 1_400_000_002;
const KEY_B: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

/// App b's simulator: the same group ids as the default app's (seed 1), other read counts.
fn simulator_b(groups: usize, messages: u64, tweak: impl FnOnce(&mut SimConfig)) -> Simulator {
    let mut config = SimConfig::new(SDKAPPID_B, Secret::new(KEY_B), "administrator");
    config.seed = 9;
    config.groups = generate_groups(1, groups, messages);
    tweak(&mut config);
    Simulator::start(config, "127.0.0.1:0".parse().unwrap()).expect("simulator starts")
}

/// `apps/b.toml` (and its key file) for app b at `api_base`, with `key`.
fn declare_b(dir: &Path, api_base: &str, key: &str) -> PathBuf {
    let apps = dir.join("apps");
    std::fs::create_dir_all(&apps).unwrap();
    std::fs::write(apps.join("b.key"), key).unwrap();
    std::fs::write(
        apps.join("b.toml"),
        format!(
            "sdkappid = {SDKAPPID_B}\napi_base = \"{api_base}\"\nidentifier = \"administrator\"\nsecret_key_file = \"b.key\"\n"
        ),
    )
    .unwrap();
    apps
}

/// Every snapshot in Postgres as (app, group, seq, read, unread).
type AppRow = (Option<i64>, String, i64, i32, i32);

async fn pg_rows(db: &TestDb) -> BTreeSet<AppRow> {
    sqlx::query_as(
        "SELECT sdkappid, group_id, msg_seq, read_num, unread_num FROM receipts.receipt_snapshots",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
    .into_iter()
    .collect()
}

/// Every snapshot row of the lake's Parquet files as (app, group, seq, read, unread).
fn lake_rows(lake: &Path) -> BTreeSet<AppRow> {
    use arrow::array::{AsArray, Int32Array, Int64Array};
    let mut out = BTreeSet::new();
    for b in parquet_batches(&lake.join("receipt_snapshots")) {
        let col = |name: &str| b.column_by_name(name).unwrap().clone();
        let (app, group, seq, read, unread) = (
            col("sdkappid"),
            col("group_id"),
            col("msg_seq"),
            col("read_num"),
            col("unread_num"),
        );
        let app = app.as_any().downcast_ref::<Int64Array>().unwrap();
        let group = group.as_string::<i32>();
        let seq = seq.as_any().downcast_ref::<Int64Array>().unwrap();
        let read = read.as_any().downcast_ref::<Int32Array>().unwrap();
        let unread = unread.as_any().downcast_ref::<Int32Array>().unwrap();
        for i in 0..b.num_rows() {
            use arrow::array::Array;
            out.insert((
                app.is_valid(i).then(|| app.value(i)),
                group.value(i).to_string(),
                seq.value(i),
                read.value(i),
                unread.value(i),
            ));
        }
    }
    out
}

/// What simulator `sim` of app `app` answers for `group`'s seqs `1..=to` (those with a
/// receipt: a seq answering an item code is not a snapshot).
fn expected(sim: &Simulator, app: u64, group: &str, to: u64) -> BTreeSet<AppRow> {
    (1..=to)
        .filter_map(|seq| {
            let (code, read, unread) = sim.expected(group, seq);
            (code == 0).then_some((seq, read, unread))
        })
        .map(|(seq, read, unread)| {
            (
                Some(app as i64),
                group.to_string(),
                seq as i64,
                read as i32,
                unread as i32,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_apps_in_one_database_never_mix_and_keep_their_own_windows() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let a = simulator(2, 30, |_| {});
    let b = simulator_b(2, 30, |_| {});
    let apps = declare_b(dir.path(), &b.base_url(), KEY_B);
    let (g1, g2) = ("@TGS#sim1-1", "@TGS#sim1-2");
    assert_eq!(group_ids(&a), group_ids(&b), "the two apps share group ids");
    let cmd = || {
        let mut c = exporter_for(&db, &a.base_url(), &lake);
        c.env("EXPORT_APPS_DIR", &apps);
        c
    };
    for g in [g1, g2] {
        assert_eq!(
            run(cmd().args(["track", "add", g, "--seqs", "1..30"]))
                .status
                .code(),
            Some(0)
        );
    }
    let added = run(cmd().args(["track", "add", g1, "--seqs", "1..10", "--app", "b"]));
    assert_eq!(added.status.code(), Some(0));

    assert_eq!(run(cmd().arg("run")).status.code(), Some(0));
    let out = run(cmd().args(["run", "--app", "b"]));
    assert_eq!(out.status.code(), Some(0));

    let mut want = expected(&a, SDKAPPID, g1, 30);
    want.extend(expected(&a, SDKAPPID, g2, 30));
    let want_b = expected(&b, SDKAPPID_B, g1, 10);
    let differ = want_b
        .iter()
        .filter(|(_, g, s, r, u)| !want.contains(&(Some(SDKAPPID as i64), g.clone(), *s, *r, *u)))
        .count();
    assert!(
        differ > 0,
        "the two apps answer differently for the same group id"
    );
    want.extend(want_b);
    assert_eq!(
        pg_rows(&db).await,
        want,
        "each app's rows with its app, none mixed"
    );
    assert_eq!(
        lake_rows(&lake),
        want,
        "the lake holds the same rows and apps"
    );

    let latest: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT sdkappid, count(*) FROM receipts.receipt_latest GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let count = |app: u64| want.iter().filter(|r| r.0 == Some(app as i64)).count() as i64;
    assert_eq!(
        latest,
        vec![
            (SDKAPPID as i64, count(SDKAPPID)),
            (SDKAPPID_B as i64, count(SDKAPPID_B))
        ]
    );
    let ledger: Vec<(String, Option<String>, Option<i64>)> =
        sqlx::query_as("SELECT job, app, sdkappid FROM receipts.export_runs ORDER BY run_id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        ledger,
        vec![
            (
                "default".into(),
                Some("default".into()),
                Some(SDKAPPID as i64)
            ),
            (
                "default.b".into(),
                Some("b".into()),
                Some(SDKAPPID_B as i64)
            ),
        ]
    );

    // The commands know apps: track list, runs list, status, each with --app.
    let listed: serde_json::Value =
        serde_json::from_str(&stdout(&run(cmd().args(["track", "list", "--json"])))).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 3, "{listed}");
    let listed_b: serde_json::Value = serde_json::from_str(&stdout(&run(
        cmd().args(["track", "list", "--json", "--app", "b"])
    )))
    .unwrap();
    let only = listed_b.as_array().unwrap();
    assert_eq!(only.len(), 1, "{listed_b}");
    assert_eq!(only[0]["sdkappid"], SDKAPPID_B);
    assert_eq!(only[0]["windows"][0]["to"], 10);
    let runs: serde_json::Value = serde_json::from_str(&stdout(&run(
        cmd().args(["runs", "list", "--json", "--app", "b"])
    )))
    .unwrap();
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["app"], "b");
    assert_eq!(runs[0]["sdkappid"], SDKAPPID_B);
    let status = run(cmd().args(["status", "--app", "b", "--json", "--max-age", "1h"]));
    assert_eq!(status.status.code(), Some(0));
    let status: serde_json::Value = serde_json::from_str(&stdout(&status)).unwrap();
    assert_eq!(status["job"], "default.b");
    assert_eq!(status["app"], "b");
    assert_eq!(status["fresh"], true);

    // A second round: each app's run pulls its own windows again, nothing crosses over.
    a.advance(1);
    assert_eq!(
        run(cmd().args(["run", "--app", "b"])).status.code(),
        Some(0)
    );
    let per_app: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT sdkappid, count(*) FROM receipts.receipt_snapshots GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        per_app[0],
        (SDKAPPID as i64, count(SDKAPPID)),
        "app b's run took none of a's"
    );
    assert!(per_app[1].1 >= count(SDKAPPID_B), "{per_app:?}");
}

/// A job file in `dir` (every enabled group of its app), named `name`.
fn job(dir: &Path, name: &str, app: Option<&str>) {
    let app = app.map(|a| format!("app = \"{a}\"\n")).unwrap_or_default();
    std::fs::write(
        dir.join(format!("{name}.toml")),
        format!("schedule = \"0 * * * *\"\n{app}"),
    )
    .unwrap();
}

/// Starts `run --job NAME`, waits until its API budget lease is held, returns the child (the
/// caller waits for it: [`finish`]).
#[allow(clippy::zombie_processes)]
async fn start_run(db: &TestDb, mut cmd: std::process::Command, name: &str) -> std::process::Child {
    let mut child = cmd
        .args(["run", "--job", name])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let held: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM receipts.rate_leases WHERE label LIKE '%(job ' || $1 || ')%'",
        )
        .bind(name)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        if held > 0 {
            return child;
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the run of {name} never joined the budget");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn finish(child: std::process::Child) -> (Option<i32>, String) {
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("--- exit {:?}\n{err}", out.status.code());
    (out.status.code(), err)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_app_has_its_own_budget_and_a_wrong_key_fails_that_app_only() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let jobs = dir.path().join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    // Slow answers and a low budget: each run lasts a few seconds, so two overlap.
    let slow = |c: &mut SimConfig| c.latency = Duration::from_millis(40);
    let a = simulator(6, 300, slow);
    let b = simulator_b(6, 300, slow);
    let apps = declare_b(dir.path(), &b.base_url(), KEY_B);
    job(&jobs, "a1", None);
    job(&jobs, "a2", None);
    job(&jobs, "b1", Some("b"));
    let cmd = || {
        let mut c = exporter_for(&db, &a.base_url(), &lake);
        c.env("EXPORT_APPS_DIR", &apps)
            .env("EXPORT_JOBS_DIR", &jobs)
            .env("EXPORT_RATE_LIMIT", "10")
            .env("EXPORT_BATCH_SIZE", "100");
        c
    };
    for g in group_ids(&a) {
        assert_eq!(
            run(cmd().args(["track", "add", &g, "--seqs", "1..300"]))
                .status
                .code(),
            Some(0)
        );
        let b_add = run(cmd().args(["track", "add", &g, "--seqs", "1..300", "--app", "b"]));
        assert_eq!(b_add.status.code(), Some(0));
    }

    // Two apps at once: neither shares its budget with the other.
    let first = start_run(&db, cmd(), "a1").await;
    let second = start_run(&db, cmd(), "b1").await;
    let apps_leased: Vec<(Option<i64>, i64)> =
        sqlx::query_as("SELECT sdkappid, count(*) FROM receipts.rate_leases GROUP BY 1 ORDER BY 1")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        apps_leased,
        vec![(Some(SDKAPPID as i64), 1), (Some(SDKAPPID_B as i64), 1)]
    );
    let (code_a, err_a) = finish(first);
    let (code_b, err_b) = finish(second);
    assert_eq!((code_a, code_b), (Some(0), Some(0)));
    for err in [&err_a, &err_b] {
        assert!(!err.contains("sharing the API budget"), "{err}");
    }
    // Two jobs of one app at once: they share its budget, as before apps.
    let first = start_run(&db, cmd(), "a1").await;
    let second = start_run(&db, cmd(), "a2").await;
    let (_, err_1) = finish(first);
    let (_, err_2) = finish(second);
    assert!(
        format!("{err_1}{err_2}").contains("sharing the API budget"),
        "two runs of one app share its budget"
    );
    let limited: i64 =
        sqlx::query_scalar("SELECT sum(rate_limited)::bigint FROM receipts.export_runs")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(limited, 0, "no run went past its app's limit");

    // App b's key is wrong: its job fails with the configuration exit; the default app's runs.
    std::fs::write(apps.join("b.key"), "f".repeat(64)).unwrap();
    let hook = crate::paged::Receiver::start(vec![]).await;
    let metrics = dir.path().join("metrics/exporter.prom");
    let refused = run(cmd()
        .env("EXPORT_ALERT_WEBHOOK", &hook.url)
        .env("EXPORT_METRICS_FILE", &metrics)
        .args(["run", "--job", "b1"]));
    assert_eq!(
        refused.status.code(),
        Some(2),
        "a refused key is a configuration error"
    );
    // The alert and the metrics say which app.
    let bodies = hook.bodies();
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    assert_eq!(bodies[0]["app"], "b");
    assert_eq!(bodies[0]["job"], "b1");
    assert!(
        bodies[0]["text"].as_str().unwrap().contains("app b"),
        "{bodies:?}"
    );
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        text.contains(r#"receipt_exporter_runs_total{export_job="b1",outcome="failed",app="b"}"#),
        "{text}"
    );
    assert!(
        text.contains(r#"export_job="a1""#) && text.contains(r#"app="default""#),
        "{text}"
    );
    assert_eq!(
        run(cmd().args(["run", "--job", "a1"])).status.code(),
        Some(0)
    );
    let doctor = run(cmd().arg("doctor"));
    let text = stdout(&doctor);
    assert!(
        text.lines()
            .any(|l| l.contains("FAIL") && l.contains("app b:")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("OK") && l.contains("chat api") && !l.contains("app b:")),
        "{text}"
    );
    assert!(
        !text.contains(KEY_B) && !text.contains(&"f".repeat(64)),
        "no key is printed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_or_bad_app_is_refused_with_what_to_fix() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let a = simulator(1, 5, |_| {});
    let apps = dir.path().join("apps");
    std::fs::create_dir_all(&apps).unwrap();
    std::fs::write(
        apps.join("c.toml"),
        "sdkappid = 1400000003\nsecret_key = \"x\"\n",
    )
    .unwrap();
    let cmd = || {
        let mut c = exporter_for(&db, &a.base_url(), &dir.path().join("lake"));
        c.env("EXPORT_APPS_DIR", &apps);
        c
    };
    let missing = run(cmd().args(["run", "--app", "nope"]));
    assert_eq!(missing.status.code(), Some(2));
    let err = stderr(&missing);
    assert!(
        err.contains("no such app") && err.contains("nope.toml") && err.contains("c"),
        "{err}"
    );
    let bad = run(cmd().args(["run", "--app", "c"]));
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("secret_key_file"), "{}", stderr(&bad));
    let name = run(cmd().args(["track", "list", "--app", "Prod"]));
    assert_eq!(name.status.code(), Some(2));
    assert!(stderr(&name).contains("lowercase"), "{}", stderr(&name));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_schedule_daemon_runs_the_jobs_of_two_apps_at_once() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let jobs = dir.path().join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    let slow = |c: &mut SimConfig| c.latency = Duration::from_millis(40);
    let a = simulator(4, 200, slow);
    let b = simulator_b(4, 200, slow);
    let apps = declare_b(dir.path(), &b.base_url(), KEY_B);
    // Both fire every 3 seconds; at 10 calls/s each run lasts about as long: they overlap.
    for (name, app) in [("a", ""), ("b", "app = \"b\"\n")] {
        std::fs::write(
            jobs.join(format!("{name}.toml")),
            format!("schedule = \"*/3 * * * * *\"\n{app}"),
        )
        .unwrap();
    }
    let listen = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let cmd = || {
        let mut c = exporter_for(&db, &a.base_url(), &dir.path().join("lake"));
        c.env("EXPORT_APPS_DIR", &apps)
            .env("EXPORT_RATE_LIMIT", "10")
            .env("EXPORT_BATCH_SIZE", "100")
            .env("EXPORT_METRICS_LISTEN", listen.to_string());
        c
    };
    for g in group_ids(&a) {
        let add = run(cmd().args(["track", "add", &g, "--seqs", "1..200"]));
        assert_eq!(add.status.code(), Some(0));
        let add = run(cmd().args(["track", "add", &g, "--seqs", "1..200", "--app", "b"]));
        assert_eq!(add.status.code(), Some(0));
    }
    let log = dir.path().join("schedule.log");
    let mut daemon = cmd()
        .args(["schedule", "--jobs"])
        .arg(&jobs)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // Until each app has a succeeded run, watching for two apps' leases held at once.
    let until = Instant::now() + Duration::from_secs(40);
    let mut together = false;
    loop {
        let leased: i64 = sqlx::query_scalar(
            "SELECT count(DISTINCT sdkappid) FROM receipts.rate_leases
             WHERE heartbeat_at > now() - interval '3 seconds'",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        together |= leased == 2;
        let done: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT app FROM receipts.export_runs WHERE status = 'succeeded' ORDER BY 1",
        )
        .fetch_all(&db.pool)
        .await
        .unwrap();
        if together && done == ["b", "default"] {
            break;
        }
        if Instant::now() > until || daemon.try_wait().unwrap().is_some() {
            let _ = daemon.kill();
            let _ = daemon.wait();
            panic!(
                "together {together}, succeeded {done:?}\n{}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let scraped = reqwest::get(format!("http://{listen}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let status = terminate_within(&mut daemon, Duration::from_secs(10)).await;
    let logs = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(0), "{logs}");
    assert!(
        scraped.contains(r#"export_job="a""#) && scraped.contains(r#"export_job="b""#),
        "{scraped}"
    );
    assert!(
        scraped.contains(r#"app="default""#) && scraped.contains(r#"app="b""#),
        "{scraped}"
    );
    let rows: Vec<(String, Option<String>, Option<i64>)> =
        sqlx::query_as("SELECT DISTINCT job, app, sdkappid FROM receipts.export_runs ORDER BY 1")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        rows,
        vec![
            ("a".into(), Some("default".into()), Some(SDKAPPID as i64)),
            ("b".into(), Some("b".into()), Some(SDKAPPID_B as i64)),
        ]
    );
    assert!(
        !logs.contains(KEY_B) && !logs.contains(KEY),
        "no key in the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_needs_the_api_settings_of_its_jobs_apps_only() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let b = simulator_b(1, 10, |_| {});
    let apps = declare_b(dir.path(), &b.base_url(), KEY_B);
    let jobs = dir.path().join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    job(&jobs, "only-b", Some("b"));
    // No TIM_* at all: the daemon serves app b's job.
    let daemon = || {
        let mut c = exporter();
        c.env("DATABASE_URL", &db.url)
            .env("EXPORT_APPS_DIR", &apps)
            .env("EXPORT_PARQUET_DIR", dir.path().join("lake"))
            .args(["schedule", "--jobs"])
            .arg(&jobs);
        c
    };
    let mut child = daemon().stderr(Stdio::piped()).spawn().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let early = child.try_wait().unwrap();
    let status = match early {
        Some(status) => status,
        None => terminate_within(&mut child, Duration::from_secs(10)).await,
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(early.is_none(), "the daemon exited at once: {err}");
    assert_eq!(status.code(), Some(0), "{err}");
    // A job of the default app without its TIM_* settings: refused before anything, by name.
    job(&jobs, "default-app", None);
    let out = run(&mut daemon());
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("job default-app (app default)") && err.contains("TIM_"),
        "{err}"
    );
}
