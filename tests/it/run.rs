//! The export run end to end: the real binary, a fresh database, the simulator over HTTP.

use crate::helpers::*;
use receipt_exporter::sim::{receipt_at, Simulator};
use std::collections::BTreeSet;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// Snapshots as (group, seq, read, unread).
type Rows = BTreeSet<(String, i64, i32, i32)>;
/// Item codes as (group, seq, code).
type Codes = BTreeSet<(String, i64, i32)>;

/// What the exporter must have stored for `seqs` of every group at simulator step `step`:
/// (snapshots as (group, seq, read, unread), item codes as (group, seq, code)).
fn expected(
    sim: &Simulator,
    seed: u64,
    seqs: std::ops::RangeInclusive<u64>,
    step: u64,
) -> (Rows, Codes) {
    let mut rows = BTreeSet::new();
    let mut codes = BTreeSet::new();
    for g in sim.groups() {
        for seq in seqs.clone() {
            let (code, read, unread) = receipt_at(seed, &g, seq, step);
            if code == 0 {
                rows.insert((g.group_id.clone(), seq as i64, read as i32, unread as i32));
            } else {
                codes.insert((g.group_id.clone(), seq as i64, code));
            }
        }
    }
    (rows, codes)
}

async fn codes_rows_of(db: &TestDb, run_id: i64) -> BTreeSet<(String, i64, i32)> {
    let rows: Vec<(String, i64, i32)> = sqlx::query_as(
        "SELECT group_id, msg_seq, code FROM receipts.receipt_item_codes WHERE run_id = $1",
    )
    .bind(run_id)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    rows.into_iter().collect()
}

/// Postgres and Parquet hold the same rows, captured_at included, with no duplicates.
fn assert_sinks_agree(pg: &[Snap], pq: &[Snap]) {
    let pq_set: BTreeSet<&Snap> = pq.iter().collect();
    assert_eq!(pq_set.len(), pq.len(), "Parquet holds duplicates");
    let keys: BTreeSet<(i64, &str, i64)> = pg
        .iter()
        .map(|s| (s.run_id, s.group_id.as_str(), s.msg_seq))
        .collect();
    assert_eq!(keys.len(), pg.len(), "Postgres holds duplicates");
    assert_eq!(pg.len(), pq.len(), "Postgres and Parquet differ in size");
    assert_eq!(pg, pq, "Postgres and Parquet differ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runs_store_exactly_the_simulators_counts_in_both_sinks() {
    let db = TestDb::new().await;
    let sim = simulator(4, 120, |_| {});
    let seed = 1;
    let dir = tempfile::tempdir().unwrap();
    let groups = group_ids(&sim);
    track_all(&db, &groups, 100).await;
    // An overlapping window, and seqs past the newest message (they answer 10062).
    sqlx::query(
        "INSERT INTO receipts.seq_windows (group_id, from_seq, to_seq) VALUES ($1, 90, 130)",
    )
    .bind(&groups[0])
    .execute(&db.pool)
    .await
    .unwrap();

    let out = run(exporter_for(&db, &sim.base_url(), dir.path()).arg("run"));
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout(&out).contains("run 1 (job default) succeeded"),
        "{}",
        stdout(&out)
    );
    sim.advance(3);
    let out = run(exporter_for(&db, &sim.base_url(), dir.path()).arg("run"));
    assert_eq!(out.status.code(), Some(0));

    let pg = pg_snapshots(&db).await;
    let pq = parquet_snapshots(dir.path());
    assert_sinks_agree(&pg, &pq);
    for (run_id, step) in [(1, 0), (2, 3)] {
        let (mut rows, mut codes) = expected(&sim, seed, 1..=100, step);
        let (extra_rows, extra_codes) = expected(&sim, seed, 101..=130, step);
        rows.extend(extra_rows.into_iter().filter(|r| r.0 == groups[0]));
        codes.extend(extra_codes.into_iter().filter(|r| r.0 == groups[0]));
        assert_eq!(
            rows_of(&pg, run_id),
            rows,
            "run {run_id}: snapshots differ from the simulator's counts"
        );
        assert_eq!(
            codes_rows_of(&db, run_id).await,
            codes,
            "run {run_id}: item codes"
        );
        let (status, written, calls, error) = run_row(&db, run_id).await;
        assert_eq!(
            (status.as_str(), written, error),
            ("succeeded", rows.len() as i64, None)
        );
        assert!(
            calls >= 9,
            "4 groups of 100-130 seqs at 50 per call take at least 9 calls, ledger says {calls}"
        );
    }
    // The counts moved between the runs, so the second run is not a copy of the first.
    assert_ne!(rows_of(&pg, 1), rows_of(&pg, 2));
    // receipt_latest holds the second run's values.
    let latest: Vec<(String, i64, i64, i32)> = sqlx::query_as(
        "SELECT group_id, msg_seq, run_id, read_num FROM receipts.receipt_latest ORDER BY 1, 2",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(latest.iter().all(|r| r.2 == 2));
    assert_eq!(latest.len(), rows_of(&pg, 2).len());
    // Files are laid out as documented.
    for f in visible_parquet_files(dir.path()) {
        let rel = f
            .strip_prefix(dir.path())
            .unwrap()
            .to_string_lossy()
            .to_string();
        let ok = (rel.starts_with("receipt_snapshots/capture_date=")
            || rel.starts_with("message_read_progress/capture_date="))
            && rel.contains("/run-")
            && rel.ends_with(".parquet");
        assert!(ok, "unexpected layout: {rel}");
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_prints_the_plan_checks_the_groups_and_writes_nothing() {
    let db = TestDb::new().await;
    let sim = simulator(2, 50, |_| {});
    let dir = tempfile::tempdir().unwrap();
    let mut groups = group_ids(&sim);
    groups.push("@TGS#2TTV7VSII".to_string()); // the quick start's example: no such group
    track_all(&db, &groups, 250).await;
    let out = run(exporter_for(&db, &sim.base_url(), dir.path()).args(["run", "--dry-run"]));
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(
        text.contains("dry run: 3 groups, 750 seqs, 15 API calls at 50 seqs per call"),
        "{text}"
    );
    assert!(
        text.contains("checked 3 groups with 1 get_group_info call: 1 would fail"),
        "{text}"
    );
    let failing: Vec<&str> = text.lines().filter(|l| l.contains("would fail:")).collect();
    assert_eq!(failing.len(), 1, "{text}");
    assert!(
        failing[0].starts_with("@TGS#2TTV7VSII  would fail: the API does not know it"),
        "{text}"
    );
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM receipts.export_runs")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(runs, 0);
    let calls = |endpoint: &str| sim.stats().endpoints.get(endpoint).map_or(0, |e| e.calls);
    assert_eq!(calls("get_group_msg_receipt"), 0, "a dry run pulls nothing");
    assert_eq!(calls("get_group_info"), 1, "one check per 50 groups");
    assert!(all_files(dir.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_that_no_longer_exists_makes_the_run_partial() {
    let db = TestDb::new().await;
    let sim = simulator(3, 60, |_| {});
    let dir = tempfile::tempdir().unwrap();
    let mut groups = group_ids(&sim);
    groups.push("@TGS#dissolved".to_string());
    track_all(&db, &groups, 60).await;
    let out = run(exporter_for(&db, &sim.base_url(), dir.path()).arg("run"));
    assert_eq!(out.status.code(), Some(3), "partial");
    assert_eq!(
        stderr(&out)
            .lines()
            .filter(|l| l.contains("@TGS#dissolved"))
            .count(),
        1,
        "the failed group is logged by id, once (not per batch)"
    );
    let (status, _, _, error) = run_row(&db, 1).await;
    assert_eq!(status, "partial");
    assert!(error.unwrap().contains("1 of 4 groups failed"));
    let (rows, _) = expected(&sim, 1, 1..=60, 0);
    let pg = pg_snapshots(&db).await;
    assert_eq!(rows_of(&pg, 1), rows, "every other group is exported");
    assert_sinks_agree(&pg, &parquet_snapshots(dir.path()));
    let failed: i32 =
        sqlx::query_scalar("SELECT groups_failed FROM receipts.export_runs WHERE run_id = 1")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(failed, 1);
}

/// A run that takes several seconds: 6 groups x 400 seqs at 10 seqs per call and 40 calls/s.
fn slow_run(db: &TestDb, sim: &Simulator, dir: &std::path::Path) -> Child {
    exporter_for(db, &sim.base_url(), dir)
        .env("EXPORT_BATCH_SIZE", "10")
        .env("EXPORT_RATE_LIMIT", "40")
        .env("EXPORT_CONCURRENCY", "4")
        .arg("run")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

async fn wait_for_batches(db: &TestDb, at_least: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM receipts.write_batches")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        if n >= at_least {
            return;
        }
        assert!(Instant::now() < deadline, "the run wrote no batch in 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_run_exits_130_within_5s_with_what_was_received_in_both_sinks() {
    let db = TestDb::new().await;
    let sim = simulator(6, 400, |c| c.latency = Duration::from_millis(30));
    let dir = tempfile::tempdir().unwrap();
    track_all(&db, &group_ids(&sim), 400).await;
    let child = slow_run(&db, &sim, dir.path());
    wait_for_batches(&db, 1).await;
    signal(&child, "TERM");
    let sent = Instant::now();
    let out = finish(child);
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "exited {:?} after SIGTERM",
        sent.elapsed()
    );
    assert_eq!(out.status.code(), Some(130));
    let (status, written, _, _) = run_row(&db, 1).await;
    assert_eq!(status, "interrupted");
    let pg = pg_snapshots(&db).await;
    assert!(
        written > 0 && (written as usize) < 6 * 400,
        "stopped part-way, wrote {written}"
    );
    assert_eq!(pg.len() as i64, written);
    assert_sinks_agree(&pg, &parquet_snapshots(dir.path()));
    assert!(all_files(dir.path()).iter().all(|p| !p
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with('.')));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_concurrent_run_exits_75_and_writes_nothing() {
    let db = TestDb::new().await;
    let sim = simulator(6, 400, |c| c.latency = Duration::from_millis(30));
    let dir = tempfile::tempdir().unwrap();
    track_all(&db, &group_ids(&sim), 400).await;
    let first = slow_run(&db, &sim, dir.path());
    wait_for_batches(&db, 1).await;
    let second = run(exporter_for(&db, &sim.base_url(), dir.path()).arg("run"));
    assert_eq!(second.status.code(), Some(75));
    let err = stderr(&second);
    assert!(
        err.contains("another run of job 'default' holds the lock: run 1 on host"),
        "{err}"
    );
    assert!(err.contains(&format!("(pid {})", first.id())), "{err}");
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM receipts.export_runs")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(runs, 1, "the second run recorded nothing");
    signal(&first, "TERM");
    finish(first);
    let others: i64 =
        sqlx::query_scalar("SELECT count(*) FROM receipts.receipt_snapshots WHERE run_id <> 1")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(others, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_run_then_the_next_run_repairs_and_both_sinks_agree() {
    let db = TestDb::new().await;
    let sim = simulator(6, 400, |c| c.latency = Duration::from_millis(30));
    let dir = tempfile::tempdir().unwrap();
    track_all(&db, &group_ids(&sim), 400).await;
    let mut child = slow_run(&db, &sim, dir.path());
    wait_for_batches(&db, 2).await;
    child.kill().unwrap(); // SIGKILL
    finish(child);
    // Whatever a reader sees now is complete: every visible file reads back.
    let visible_before = parquet_snapshots(dir.path());
    let pg_before = pg_snapshots(&db).await;
    assert!(visible_before.len() <= pg_before.len());

    let out = run(exporter_for(&db, &sim.base_url(), dir.path()).arg("run"));
    assert_eq!(out.status.code(), Some(0));
    let (status, written, _, _) = run_row(&db, 1).await;
    assert_eq!(status, "abandoned");
    let pg = pg_snapshots(&db).await;
    assert_eq!(
        pg.iter().filter(|s| s.run_id == 1).count() as i64,
        written,
        "the ledger counts what the dead run committed"
    );
    assert!(written > 0);
    assert_sinks_agree(&pg, &parquet_snapshots(dir.path()));
    let (rows, _) = expected(&sim, 1, 1..=400, 0);
    assert_eq!(rows_of(&pg, 2), rows, "the next run exported everything");
    let hidden: Vec<_> = all_files(dir.path())
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "temporary files left behind: {hidden:?}");
}

/// Nothing listens at the API's address: the run stops after the first seconds with one line
/// naming the host and the cause, instead of retrying every batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_api_stops_the_run_quietly_naming_host_and_cause() {
    let db = TestDb::new().await;
    let groups: Vec<String> = (0..30).map(|i| format!("@TGS#g{i}")).collect();
    track_all(&db, &groups, 500).await; // 300 batches
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let dir = tempfile::tempdir().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let out = run(exporter_for(&db, &base, dir.path()).arg("run"));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.lines().count() <= 20,
        "{} lines: {err}",
        err.lines().count()
    );
    let line = stdout(&out);
    assert!(
        line.contains(&format!(
            "the Chat API at 127.0.0.1:{port} cannot be reached"
        )) && line.contains("connection refused"),
        "{line}"
    );
    assert!(
        line.contains("30 groups planned (0 failed before it stopped)"),
        "{line}"
    );
    let (status, _, calls, error) = run_row(&db, 1).await;
    assert_eq!(status, "failed");
    assert!(error.unwrap().contains("cannot be reached"));
    // The 64 calls in flight tried a few times each; the 300 batches were not tried 8 times.
    assert!(calls < 1_000, "{calls} attempts");
}

/// A wrong key stops the run: the summary says it stopped before trying every group and what
/// it did not pull, and the failure is not logged once per call in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_run_says_what_it_did_not_do_and_does_not_repeat_itself() {
    let db = TestDb::new().await;
    let sim = simulator(3, 2000, |_| {});
    let dir = tempfile::tempdir().unwrap();
    track_all(&db, &group_ids(&sim), 2000).await; // 120 batches, 64 in flight
    let wrong = "0000000000000000000000000000000000000000000000000000000000c0ffee";
    let out = run(exporter_for(&db, &sim.base_url(), dir.path())
        .env("TIM_SECRET_KEY", wrong)
        .arg("run"));
    assert_eq!(out.status.code(), Some(2));
    let line = stdout(&out);
    assert!(
        line.contains("3 groups planned (0 failed before it stopped)")
            && line.contains("seqs not pulled")
            && line.contains("configuration error"),
        "{line}"
    );
    assert!(!line.contains("for the next run"), "not a budget: {line}");
    let err = stderr(&out);
    assert!(err.matches("retrying").count() <= 2, "{err}");
    assert!(err.lines().count() <= 10, "{err}");
}

/// "1 group", "1 call", "1 Parquet file": counts in the right number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_summary_of_a_one_call_run_speaks_in_the_singular() {
    let db = TestDb::new().await;
    let sim = simulator(1, 10, |_| {});
    let dir = tempfile::tempdir().unwrap();
    track_all(&db, &group_ids(&sim), 10).await;
    let out = run(exporter_for(&db, &sim.base_url(), dir.path()).arg("run"));
    assert_eq!(out.status.code(), Some(0));
    let line = stdout(&out);
    assert!(
        line.contains(": 1 group (0 failed), 10 seqs, ")
            && line.contains(" receipts, 1 call (0 retries, 0 rate-limited), ")
            && line.contains(", 1 Parquet file in "),
        "{line}"
    );
}
