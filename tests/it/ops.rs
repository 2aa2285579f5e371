//! Operating it: run history, freshness, metrics, doctor, `track add --check`, completions.
//! The real binary against a fresh database and the simulator.

use crate::helpers::*;
use receipt_exporter::sim::{GroupType, SimGroup, Simulator};
use std::process::Output;
use std::sync::{Arc, Mutex};

fn group(id: &str, group_type: GroupType, member_num: u32) -> SimGroup {
    SimGroup {
        group_id: id.into(),
        group_type,
        member_num,
        next_msg_seq: 31,
    }
}

/// A healthy group, one of a type without receipts, one too large for receipts.
fn mixed_simulator() -> Simulator {
    simulator(0, 0, |c| {
        c.groups = vec![
            group("@TGS#good", GroupType::Private, 12),
            group("@TGS#live", GroupType::AVChatRoom, 50),
            group("@TGS#big", GroupType::Public, 500),
        ]
    })
}

/// A finished ledger row of `job` with `status`, finished `ago` (a Postgres interval) ago.
async fn ledger_row(db: &TestDb, job: &str, status: &str, ago: &str, error: Option<&str>) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO receipts.export_runs
            (job, kind, status, started_at, finished_at, host, pid, receipts_written, api_calls, error)
         VALUES ($1, 'manual', $2, now() - $3::interval - interval '90 seconds',
                 now() - $3::interval, 'testhost', 4242, 17, 3, $4)
         RETURNING run_id",
    )
    .bind(job)
    .bind(status)
    .bind(ago)
    .bind(error)
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

fn code(out: &Output) -> Option<i32> {
    out.status.code()
}

/// An HTTP server on 127.0.0.1:0 that answers 200 to everything and records
/// (method, path, body): a stand-in for the Pushgateway.
async fn capture_server() -> (String, Arc<Mutex<Vec<(String, String, String)>>>) {
    use http_body_util::BodyExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let log = log.clone();
                        async move {
                            let method = req.method().to_string();
                            let path = req.uri().path().to_string();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let body = String::from_utf8_lossy(&body).into_owned();
                            log.lock().unwrap().push((method, path, body));
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                http_body_util::Full::new(bytes::Bytes::new()),
                            ))
                        }
                    },
                );
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, svc)
                    .await;
            });
        }
    });
    (format!("http://{addr}"), seen)
}

/// The samples of a metrics text, parsed by a real parser.
fn parse_metrics(text: &str) -> prometheus_parse::Scrape {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines).expect("the metrics parse")
}

fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("{name}: unexpected value {other:?}"),
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_writes_metrics_for_every_job_pushes_its_own_and_runs_show_has_every_figure() {
    let db = TestDb::new().await;
    let sim = simulator(2, 30, |_| {});
    let ids: Vec<String> = sim.groups().into_iter().map(|g| g.group_id).collect();
    track_all(&db, &ids, 40).await; // seqs 31..=40 answer 10062
    let nightly = ledger_row(&db, "nightly", "succeeded", "1 hour", None).await;
    let dir = tempfile::tempdir().unwrap();
    let metrics_dir = tempfile::tempdir().unwrap();
    // Its directory does not exist yet: the run creates it.
    let textfile_dir = metrics_dir.path().join("textfile");
    let metrics = textfile_dir.join("receipt_exporter.prom");
    let (gateway, pushed) = capture_server().await;

    let out = run(exporter_for(&db, &sim.base_url(), dir.path())
        .env("EXPORT_METRICS_FILE", &metrics)
        .env("EXPORT_PUSHGATEWAY_URL", &gateway)
        .arg("run"));
    assert_eq!(code(&out), Some(0));
    let (run_id, receipts, calls, no_receipt): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT run_id, receipts_written, api_calls, (item_codes->>'10062')::bigint
         FROM receipts.export_runs WHERE job = 'default'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    // 2 groups x 40 seqs; seqs 31..=40 do not exist, so they answer 10062.
    assert_eq!(receipts + no_receipt, 80);
    assert!(no_receipt >= 20);

    // The file: both jobs' series, and no temporary file left next to it.
    let text = std::fs::read_to_string(&metrics).unwrap();
    let scrape = parse_metrics(&text);
    let default = [("export_job", "default")];
    let night = [("export_job", "nightly")];
    assert_eq!(
        sample(&scrape, "receipt_exporter_last_run_receipts", &default),
        Some(receipts as f64),
        "{text}"
    );
    assert_eq!(
        sample(&scrape, "receipt_exporter_api_calls_total", &default),
        Some(calls as f64)
    );
    let skipped: i64 = sqlx::query_scalar(
        "SELECT seqs_skipped_settled FROM receipts.export_runs WHERE job = 'default' ORDER BY run_id DESC LIMIT 1",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        sample(
            &scrape,
            "receipt_exporter_last_run_seqs_skipped_settled",
            &default
        ),
        Some(skipped as f64),
        "the planner's skips are exported"
    );
    assert_eq!(
        sample(&scrape, "receipt_exporter_last_run_seqs_left", &default),
        Some(0.0)
    );
    assert_eq!(
        sample(&scrape, "receipt_exporter_receipts_total", &night),
        Some(17.0)
    );
    assert_eq!(
        sample(
            &scrape,
            "receipt_exporter_last_run_outcome",
            &[("export_job", "default"), ("outcome", "succeeded")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &scrape,
            "receipt_exporter_last_run_outcome",
            &[("export_job", "default"), ("outcome", "failed")]
        ),
        Some(0.0)
    );
    let now = chrono::Utc::now().timestamp() as f64;
    let success = sample(
        &scrape,
        "receipt_exporter_last_success_timestamp_seconds",
        &default,
    )
    .unwrap();
    assert!((now - success).abs() < 120.0, "{success} vs {now}");
    let night_success = sample(
        &scrape,
        "receipt_exporter_last_success_timestamp_seconds",
        &night,
    )
    .unwrap();
    assert!(
        (now - 3600.0 - night_success).abs() < 120.0,
        "{night_success}"
    );
    assert!(
        sample(
            &scrape,
            "receipt_exporter_last_run_duration_seconds",
            &default
        )
        .unwrap()
            > 0.0
    );
    assert!(
        scrape.samples.iter().all(|s| s.labels.get("job").is_none()),
        "no `job` label"
    );
    let names: Vec<String> = std::fs::read_dir(&textfile_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["receipt_exporter.prom"]);

    // The push: only the job that ran, under its grouping key, without the label itself.
    let pushed = pushed.lock().unwrap().clone();
    assert_eq!(pushed.len(), 1, "{pushed:?}");
    let (method, path, body) = &pushed[0];
    assert_eq!(
        (method.as_str(), path.as_str()),
        ("PUT", "/metrics/job/receipt_exporter/export_job/default")
    );
    let scrape = parse_metrics(body);
    assert_eq!(
        sample(&scrape, "receipt_exporter_last_run_receipts", &[]),
        Some(receipts as f64)
    );
    assert!(
        !body.contains("export_job") && !body.contains("nightly"),
        "{body}"
    );

    // runs list and show.
    let list = |args: &[&str]| {
        let out = run(exporter_for(&db, &sim.base_url(), dir.path())
            .args(["runs", "list"])
            .args(args));
        assert_eq!(code(&out), Some(0));
        stdout(&out)
    };
    let all: Vec<serde_json::Value> = serde_json::from_str(&list(&["--json"])).unwrap();
    assert_eq!(
        all.iter()
            .map(|r| r["run_id"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        [run_id, nightly]
    );
    let only: Vec<serde_json::Value> =
        serde_json::from_str(&list(&["--json", "--job", "nightly"])).unwrap();
    assert_eq!(only.len(), 1);
    assert_eq!(only[0]["host"], "testhost");
    let limited: Vec<serde_json::Value> =
        serde_json::from_str(&list(&["--json", "--status", "succeeded", "--limit", "1"])).unwrap();
    assert_eq!(limited[0]["run_id"].as_i64(), Some(run_id));
    let none: Vec<serde_json::Value> =
        serde_json::from_str(&list(&["--json", "--status", "failed"])).unwrap();
    assert!(none.is_empty());
    let table = list(&[]);
    assert!(
        table.starts_with("RUN") && table.contains("nightly") && table.contains("succeeded"),
        "{table}"
    );

    let out = run(exporter_for(&db, &sim.base_url(), dir.path()).args([
        "runs",
        "show",
        &run_id.to_string(),
    ]));
    assert_eq!(code(&out), Some(0));
    let text = stdout(&out);
    for needle in [
        "status:               succeeded".to_string(),
        "groups:               2 ok, 0 failed".to_string(),
        "seqs asked:           80".to_string(),
        "seqs skipped:         0 settled, 0 without a receipt".to_string(),
        "left by the budget:   0 seqs (0 calls)".to_string(),
        format!("receipts written:     {receipts}"),
        format!("api calls:            {calls}"),
        format!("10062 {no_receipt}"),
        "pid:                  ".to_string(),
        "file:                 receipt_snapshots/capture_date=".to_string(),
        "error:                -".to_string(),
    ] {
        assert!(text.contains(&needle), "missing `{needle}` in:\n{text}");
    }
    let out = run(exporter_for(&db, &sim.base_url(), dir.path()).args(["runs", "show", "999999"]));
    assert_eq!(code(&out), Some(2));
    assert!(stderr(&out).contains("run 999999 is not in the ledger"));
    sim.shutdown().await;
}

#[tokio::test]
async fn status_max_age_passes_below_the_bound_and_exits_4_above_it() {
    let db = TestDb::new().await;
    // The job `weekly` has a file but has never run.
    let jobs = tempfile::tempdir().unwrap();
    std::fs::write(
        jobs.path().join("weekly.toml"),
        "schedule = \"0 3 * * 1\"\n",
    )
    .unwrap();
    let status = |args: &[&str]| {
        let mut cmd = exporter();
        cmd.env("DATABASE_URL", &db.url)
            .env("EXPORT_JOBS_DIR", jobs.path())
            .arg("status")
            .args(args);
        let out = run(&mut cmd);
        (code(&out), stdout(&out))
    };
    ledger_row(&db, "default", "succeeded", "3 hours", None).await;
    let (c, line) = status(&["--max-age", "2h"]);
    assert_eq!(c, Some(4), "{line}");
    assert!(
        line.starts_with("job default: STALE (max age 2h): last success") && line.contains("3h"),
        "{line}"
    );
    let (c, _) = status(&["--max-age", "4h"]);
    assert_eq!(c, Some(0));

    let fresh = ledger_row(&db, "default", "succeeded", "30 minutes", None).await;
    ledger_row(
        &db,
        "default",
        "failed",
        "5 minutes",
        Some("all 3 groups failed"),
    )
    .await;
    let (c, line) = status(&["--max-age", "2h"]);
    assert_eq!(c, Some(0), "{line}");
    assert!(
        line.contains("FRESH") && line.contains(&format!("run {fresh})")),
        "{line}"
    );
    assert!(
        line.contains("last outcome failed") && line.contains("all 3 groups failed"),
        "{line}"
    );
    let (c, _) = status(&["--max-age", "20m"]);
    assert_eq!(c, Some(4));

    let (c, line) = status(&["--job", "weekly", "--max-age", "2h"]);
    assert_eq!(c, Some(4));
    assert!(
        line.contains("no successful run") && line.contains("no run at all"),
        "{line}"
    );
    let (c, _) = status(&["--job", "weekly"]);
    assert_eq!(c, Some(0), "without a bound, status only reports");
    let (c, _) = status(&["--max-age", "soon"]);
    assert_eq!(c, Some(2), "a bad bound is a usage error");

    // No job file and no ledger row: a typo, not a stale job.
    let out = run(exporter()
        .env("DATABASE_URL", &db.url)
        .env("EXPORT_JOBS_DIR", jobs.path())
        .args(["status", "--job", "nosuchjob"]));
    assert_eq!(code(&out), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("no job 'nosuchjob'") && err.contains("known jobs: default, weekly"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_names_groups_without_receipts_and_exits_1() {
    let db = TestDb::new().await;
    let sim = mixed_simulator();
    let dir = tempfile::tempdir().unwrap();
    let tracked: Vec<String> = ["@TGS#good", "@TGS#live", "@TGS#big", "@TGS#gone"]
        .map(String::from)
        .into();
    track_all(&db, &tracked, 30).await;
    // One run, so the big group's seqs all answer 10062 in the ledger.
    let out = run(exporter_for(&db, &sim.base_url(), dir.path()).arg("run"));
    assert_eq!(
        code(&out),
        Some(3),
        "partial: the live and gone groups fail"
    );

    let out = run(exporter_for(&db, &sim.base_url(), dir.path()).arg("doctor"));
    assert_eq!(code(&out), Some(1));
    let text = stdout(&out);
    for needle in [
        "OK    settings: valid",
        "OK    postgres: reachable",
        "OK    migrations: all",
        "OK    privileges: role postgres",
        "OK    chat api: ",
        "FAIL  tracked groups: group @TGS#live: its type AVChatRoom has no read receipts",
        "FAIL  tracked groups: group @TGS#big: it has 500 members",
        "FAIL  tracked groups: group @TGS#gone: the API does not know it (error 10010",
        "WARN  receipts: group @TGS#big: every seq answered 10062",
        "OK    parquet dir: ",
        "OK    locks: free for default",
        "doctor: ",
    ] {
        assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
    }
    assert!(!text.contains("group @TGS#good"), "{text}");
    assert!(
        text.contains("fix: `receipt-exporter track remove @TGS#gone`"),
        "{text}"
    );
    assert!(!text.contains(KEY) && !stderr(&out).contains(KEY));
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_passes_when_all_is_well_and_reports_who_holds_a_lock() {
    let db = TestDb::new().await;
    let sim = simulator(2, 30, |_| {});
    let ids: Vec<String> = sim.groups().into_iter().map(|g| g.group_id).collect();
    track_all(&db, &ids, 30).await;
    let dir = tempfile::tempdir().unwrap();
    // A live run of `default` holds its lock; a dead one of `dead` left a running row.
    let options = receipt_exporter::db::connect_options(&db.url).unwrap();
    let held = receipt_exporter::run::lock::JobLock::try_acquire(&options, "default")
        .await
        .unwrap()
        .unwrap();
    let live = receipt_exporter::run::ledger::start(
        &db.pool,
        "default",
        receipt_exporter::run::ledger::RunKind::Manual,
        "hostA",
        11,
        std::time::Duration::from_secs(70),
    )
    .await
    .unwrap()
    .0;
    let dead = receipt_exporter::run::ledger::start(
        &db.pool,
        "dead",
        receipt_exporter::run::ledger::RunKind::Manual,
        "hostB",
        22,
        std::time::Duration::from_secs(70),
    )
    .await
    .unwrap()
    .0;

    let out = run(exporter_for(&db, &sim.base_url(), dir.path()).arg("doctor"));
    let text = stdout(&out);
    assert_eq!(code(&out), Some(0), "{text}");
    assert!(!text.contains("\nFAIL "), "{text}");
    assert!(
        text.contains("OK    tracked groups: all 2 enabled groups exist"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "OK    locks: job default: held by the live run {live} on hostA (pid 11)"
        )),
        "{text}"
    );
    assert!(text.contains(&format!("WARN  locks: job dead: run {dead} on hostB (pid 22) is recorded as running, but its lock is free")), "{text}");
    assert!(
        text.contains("OK    parquet dir: ") && text.contains("GiB free"),
        "{text}"
    );
    held.release().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_fails_on_a_wrong_key_an_unmigrated_database_and_an_unusable_directory() {
    let db = TestDb::empty().await;
    let sim = simulator(1, 10, |_| {});
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let wrong_key = "0000000000000000000000000000000000000000000000000000000000000000";
    let out = run(exporter_for(&db, &sim.base_url(), &file.join("warehouse"))
        .env("TIM_SECRET_KEY", wrong_key)
        .arg("doctor"));
    assert_eq!(code(&out), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "FAIL  migrations: {n} of {n} not applied",
            n = receipt_exporter::db::MIGRATOR.iter().count()
        )),
        "{text}"
    );
    assert!(
        text.contains("fix: run `receipt-exporter migrate`"),
        "{text}"
    );
    assert!(
        text.contains("FAIL  chat api: configuration error"),
        "{text}"
    );
    assert!(
        text.contains("FAIL  parquet dir: ") && text.contains("is not a directory"),
        "{text}"
    );
    assert!(!text.contains(wrong_key) && !stderr(&out).contains(wrong_key));

    // A bad setting is the first line of the checklist, not an early exit 2.
    let out = run(exporter_for(&db, &sim.base_url(), tmp.path())
        .env("EXPORT_RATE_LIMIT", "0")
        .arg("doctor"));
    assert_eq!(code(&out), Some(1));
    assert!(
        stdout(&out).starts_with("FAIL  settings: EXPORT_RATE_LIMIT: invalid value '0'"),
        "{}",
        stdout(&out)
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn track_add_check_refuses_groups_without_receipts_and_writes_nothing() {
    let db = TestDb::new().await;
    let sim = mixed_simulator();
    let dir = tempfile::tempdir().unwrap();
    let add = |group: &str| {
        run(exporter_for(&db, &sim.base_url(), dir.path())
            .args(["track", "add", group, "--seqs", "1..30", "--check"]))
    };
    for (group, reason) in [
        ("@TGS#live", "its type AVChatRoom has no read receipts"),
        (
            "@TGS#big",
            "it has 500 members: read receipts exist only in groups of at most 200 members",
        ),
        ("@TGS#gone", "does not exist or was dissolved"),
    ] {
        let out = add(group);
        assert_eq!(code(&out), Some(2), "{group}");
        let err = stderr(&out);
        assert!(
            err.contains(&format!("not tracking {group}: ")) && err.contains(reason),
            "{err}"
        );
        assert!(err.contains("nothing was written"), "{err}");
    }
    let tracked: i64 = sqlx::query_scalar("SELECT count(*) FROM receipts.tracked_groups")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(tracked, 0);
    let out = add("@TGS#good");
    assert_eq!(code(&out), Some(0));
    assert!(
        stdout(&out).contains("checked @TGS#good: Private, 12 members"),
        "{}",
        stdout(&out)
    );
    let tracked: Vec<String> = sqlx::query_scalar("SELECT group_id FROM receipts.tracked_groups")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(tracked, ["@TGS#good"]);
    sim.shutdown().await;
}

#[test]
fn completions_and_the_man_page_need_no_settings() {
    for (shell, needle) in [
        ("bash", "_receipt__exporter()"),
        ("zsh", "#compdef receipt-exporter"),
        ("fish", "complete -c receipt-exporter"),
    ] {
        // Even a bad setting in the environment does not stop them.
        let out = run(exporter()
            .env("EXPORT_RATE_LIMIT", "0")
            .args(["completions", shell]));
        assert_eq!(code(&out), Some(0), "{shell}");
        let text = stdout(&out);
        assert!(
            text.contains(needle) && text.contains("doctor"),
            "{shell}: {text}"
        );
    }
    let out = run(exporter().arg("man"));
    assert_eq!(code(&out), Some(0));
    let page = stdout(&out);
    assert!(
        page.starts_with(".ie") || page.contains(".TH receipt-exporter 1"),
        "{page}"
    );
    assert!(
        page.contains("status") && page.contains("EXPORT_METRICS_FILE"),
        "{page}"
    );
}

/// `completions zsh | head -3`: a reader that went away is not an error.
#[test]
fn completions_and_man_into_a_closed_pipe_exit_0_quietly() {
    for args in [&["completions", "zsh"][..], &["man"]] {
        // The write end of a pipe whose reader has exited: every write fails with EPIPE.
        let mut reader = std::process::Command::new("true")
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let closed = reader.stdin.take().unwrap();
        reader.wait().unwrap();
        let out = run(exporter().args(args).stdout(closed));
        assert_eq!(code(&out), Some(0), "{args:?}");
        assert_eq!(stderr(&out), "", "{args:?}");
    }
}
