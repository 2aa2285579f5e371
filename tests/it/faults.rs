//! Issue 7: faults survived on purpose. The real binary, a fresh database, the simulator.

use crate::helpers::*;
use receipt_exporter::sim::Simulator;
use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

/// Postgres and Parquet hold the same rows, no duplicates, and no hidden file is left.
fn assert_consistent(pg: &[Snap], dir: &std::path::Path) {
    let pq = parquet_snapshots(dir);
    let keys: BTreeSet<(i64, &str, i64)> = pg
        .iter()
        .map(|s| (s.run_id, s.group_id.as_str(), s.msg_seq))
        .collect();
    assert_eq!(keys.len(), pg.len(), "duplicates in Postgres");
    assert_eq!(pg, pq.as_slice(), "Postgres and Parquet differ");
    let hidden: Vec<_> = all_files(dir)
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "temporary files left: {hidden:?}");
}

/// A run long enough to hold several write batches: 4 groups x 300 seqs, 10 per call, 100 calls/s.
fn paced(db: &TestDb, sim: &Simulator, dir: &std::path::Path) -> Command {
    let mut cmd = exporter_for(db, &sim.base_url(), dir);
    cmd.env("EXPORT_BATCH_SIZE", "10")
        .env("EXPORT_RATE_LIMIT", "100")
        .env("EXPORT_CONCURRENCY", "8")
        .arg("run");
    cmd
}

// The runs killed at each moment of each lake form's protocol are the crash matrix of
// `lakes.rs`.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_percent_api_faults_still_store_every_receipt_once() {
    let db = TestDb::new().await;
    let sim = simulator(5, 200, |c| {
        c.rate_limit = 0;
        c.faults = ten_percent_faults();
    });
    let dir = tempfile::tempdir().unwrap();
    track_all(&db, &group_ids(&sim), 200).await;
    let out = run(exporter_for(&db, &sim.base_url(), dir.path())
        .env("EXPORT_REQUEST_TIMEOUT", "4")
        .env("EXPORT_BATCH_SIZE", "10")
        .arg("run"));
    assert_eq!(out.status.code(), Some(0));
    let pg = pg_snapshots(&db).await;
    assert_eq!(rows_of(&pg, 1), expected_rows(&sim.groups(), 200, 0));
    assert_consistent(&pg, dir.path());
    let retries: i64 =
        sqlx::query_scalar("SELECT retries FROM receipts.export_runs WHERE run_id = 1")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(retries > 0, "faults were met and retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_rate_limits_below_our_own_slow_the_run_down_and_it_completes() {
    let db = TestDb::new().await;
    // The app's backend shares the budget: the server lets only 40 calls/s through.
    let sim = simulator(4, 300, |c| c.rate_limit = 40);
    let dir = tempfile::tempdir().unwrap();
    track_all(&db, &group_ids(&sim), 300).await;
    let out = run(exporter_for(&db, &sim.base_url(), dir.path())
        .env("EXPORT_BATCH_SIZE", "10")
        .arg("run"));
    assert_eq!(out.status.code(), Some(0));
    let rate_limited: i64 =
        sqlx::query_scalar("SELECT rate_limited FROM receipts.export_runs WHERE run_id = 1")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(rate_limited > 0, "the server answered 60007");
    let pg = pg_snapshots(&db).await;
    assert_eq!(rows_of(&pg, 1), expected_rows(&sim.groups(), 300, 0));
    assert_consistent(&pg, dir.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_session_of_a_run_killed_again_and_again_loses_and_doubles_nothing() {
    let db = TestDb::new().await;
    let sim = simulator(4, 300, |_| {});
    let dir = tempfile::tempdir().unwrap();
    track_all(&db, &group_ids(&sim), 300).await;
    let mut child = paced(&db, &sim, dir.path())
        .env("EXPORT_RATE_LIMIT", "30")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM receipts.write_batches")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        if n >= 1 {
            break;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Three times during the run, every session of the exporter (its pool and its lock
    // session) is terminated, as a failover or a restart would.
    for round in 1..=3 {
        let killed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND application_name = 'receipt-exporter') t",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert!(
            killed >= 2 || (round > 1 && killed >= 1),
            "round {round}: the run's sessions were killed ({killed})"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "round {round}: still running"
        );
        tokio::time::sleep(Duration::from_millis(1200)).await;
    }
    let out = child.wait_with_output().unwrap();
    eprintln!("{}\n{}", stdout(&out), stderr(&out));
    assert_eq!(
        out.status.code(),
        Some(0),
        "the run retried its writes, took its lock again and completed"
    );
    assert!(
        stderr(&out).matches("took the job lock again").count() >= 3,
        "the lock's session was noticed dead and re-established each time"
    );
    assert_eq!(run_row(&db, 1).await.0, "succeeded");
    let pg = pg_snapshots(&db).await;
    assert_eq!(rows_of(&pg, 1), expected_rows(&sim.groups(), 300, 0));
    assert_consistent(&pg, dir.path());
}

/// The table's directory cannot be created mid-run (a file sits at its name, as a full or
/// read-only disk would refuse it): the run ends failed naming the path, its committed rows stay
/// in Postgres and the manifest lists no file; once the path is usable, the next run writes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_parquet_directory_fails_the_run_and_the_next_run_catches_up() {
    let db = TestDb::new().await;
    let sim = simulator(2, 100, |_| {});
    let dir = tempfile::tempdir().unwrap();
    let blocked = dir.path().join("receipt_snapshots");
    std::fs::write(&blocked, "a file where the table's directory should be").unwrap();
    track_all(&db, &group_ids(&sim), 100).await;
    let out = run(exporter_for(&db, &sim.base_url(), dir.path()).arg("run"));
    assert_eq!(out.status.code(), Some(1));
    let (status, _, _, error) = run_row(&db, 1).await;
    assert_eq!(status, "failed");
    let error = error.unwrap();
    assert!(
        error.contains(&blocked.display().to_string()),
        "the error names the path: {error}"
    );
    assert!(stdout(&out).contains("failed") && stdout(&out).contains("receipt_snapshots"));
    let files: i64 = sqlx::query_scalar("SELECT count(*) FROM receipts.parquet_files")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(files, 0, "the manifest lists no file that is not there");
    let committed = pg_snapshots(&db).await;
    assert!(
        !committed.is_empty(),
        "what was committed to Postgres stays"
    );

    std::fs::remove_file(&blocked).unwrap();
    let out = run(exporter_for(&db, &sim.base_url(), dir.path()).arg("run"));
    assert_eq!(out.status.code(), Some(0));
    assert_consistent(&pg_snapshots(&db).await, dir.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_lived_usersig_is_regenerated_and_the_pull_goes_on() {
    use receipt_exporter::chat::{ChatClient, ClientConfig};
    let sim = simulator(1, 200, |_| {});
    let mut cfg = ClientConfig::new(
        sim.base_url(),
        SDKAPPID,
        "administrator",
        receipt_exporter::secret::Secret::new(KEY),
    );
    cfg.usersig_ttl = Duration::from_secs(2);
    cfg.rate_limit = 40.0;
    cfg.batch_size = 1;
    let client = ChatClient::new(cfg).unwrap();
    let group = sim.groups()[0].group_id.clone();
    let started = Instant::now();
    let answers = client
        .pull_receipts(&group, &(1..=160).collect::<Vec<_>>())
        .await
        .into_result()
        .unwrap();
    assert!(
        started.elapsed() > Duration::from_secs(3),
        "the pull outlived its first UserSig"
    );
    assert_eq!(answers.iter().map(|a| a.items.len()).sum::<usize>(), 160);
    let stats = sim.stats();
    let refused: u64 = stats
        .endpoints
        .values()
        .flat_map(|e| e.error_codes.iter())
        .filter(|(code, _)| (70000..80000).contains(*code))
        .map(|(_, n)| n)
        .sum();
    assert!(
        refused <= 1,
        "UserSigs were renewed before they expired ({refused} refused)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_written_by_other_tools_are_refused_or_planned_safely() {
    let db = TestDb::new().await;
    let sim = simulator(2, 50, |_| {});
    let dir = tempfile::tempdir().unwrap();
    let groups = group_ids(&sim);
    track_all(&db, &groups, 50).await;
    // A backwards window cannot exist: the constraint refuses it.
    let err = sqlx::query(
        "INSERT INTO receipts.seq_windows (group_id, from_seq, to_seq) VALUES ($1, 10, 5)",
    )
    .bind(&groups[0])
    .execute(&db.pool)
    .await
    .unwrap_err();
    assert!(err.to_string().contains("check constraint"), "{err}");
    // A window of a billion seqs is refused by the planner, with the reason; the rest goes on.
    sqlx::query("INSERT INTO receipts.tracked_groups (group_id) VALUES ('@TGS#huge')")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO receipts.seq_windows (group_id, from_seq, to_seq) VALUES ('@TGS#huge', 1, 1000000000)")
        .execute(&db.pool)
        .await
        .unwrap();
    let out = run(exporter_for(&db, &sim.base_url(), dir.path()).args(["run", "--dry-run"]));
    assert!(stdout(&out)
        .contains("@TGS#huge  refused by the planner: its windows hold 1000000000 seqs"));
    let out = run(exporter_for(&db, &sim.base_url(), dir.path()).arg("run"));
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("EXPORT_MAX_SEQS_PER_GROUP"),
        "the reason is logged"
    );
    let calls_for_huge = sim.stats().endpoints.values().map(|e| e.calls).sum::<u64>();
    assert!(
        calls_for_huge <= 4,
        "the huge window was not attempted ({calls_for_huge} calls)"
    );
    let pg = pg_snapshots(&db).await;
    assert_eq!(rows_of(&pg, 1), expected_rows(&sim.groups(), 50, 0));
    // A higher cap lets it through the planner (dry run only: it would take days).
    let out = run(exporter_for(&db, &sim.base_url(), dir.path())
        .env("EXPORT_MAX_SEQS_PER_GROUP", "1000000000")
        .args(["run", "--dry-run"]));
    assert!(
        stdout(&out).contains("@TGS#huge  1000000000 seqs"),
        "{}",
        stdout(&out)
    );
}
