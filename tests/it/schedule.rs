//! The scheduler end to end: the real binary, a 2-second job, the simulator, a fresh database.

use crate::helpers::*;
use std::process::Stdio;
use std::time::{Duration, Instant};

async fn runs_of(db: &TestDb, job: &str) -> Vec<(String, String)> {
    sqlx::query_as("SELECT kind, status FROM receipts.export_runs WHERE job = $1 ORDER BY run_id")
        .bind(job)
        .fetch_all(&db.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_runs_a_two_second_job_twice_in_7s_and_exits_0_on_sigterm() {
    let db = TestDb::new().await;
    let sim = simulator(2, 30, |_| {});
    let groups: Vec<String> = sim.groups().into_iter().map(|g| g.group_id).collect();
    track_all(&db, &groups, 20).await;
    let jobs = tempfile::tempdir().unwrap();
    std::fs::write(
        jobs.path().join("every2s.toml"),
        "schedule = \"*/2 * * * * *\"\n",
    )
    .unwrap();
    let parquet = tempfile::tempdir().unwrap();
    let log = jobs.path().join("scheduler.log");
    let mut child = exporter_for(&db, &sim.base_url(), parquet.path())
        .args(["schedule", "--jobs"])
        .arg(jobs.path())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let succeeded = |runs: &[(String, String)]| {
        runs.iter()
            .filter(|(kind, status)| kind == "scheduled" && status == "succeeded")
            .count()
    };
    while started.elapsed() < Duration::from_secs(7)
        && succeeded(&runs_of(&db, "every2s").await) < 2
    {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the scheduler exited early: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let runs = runs_of(&db, "every2s").await;
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(
        succeeded(&runs) >= 2,
        "{runs:?} after {:?}\n{logs}",
        started.elapsed()
    );

    let status = terminate_within(&mut child, Duration::from_secs(5)).await;
    let logs = std::fs::read_to_string(&log).unwrap();
    eprintln!("{logs}");
    assert_eq!(status.code(), Some(0), "{logs}");
    assert!(logs.contains("firing"), "each fire is logged");
    assert!(logs.contains("run finished"), "each outcome is logged");
    assert!(!logs.contains(KEY), "the key never reaches a log");
    // No run was left running, and only this job ran.
    let all = runs_of(&db, "every2s").await;
    assert!(
        all.iter()
            .all(|(kind, status)| kind == "scheduled" && status != "running"),
        "{all:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_interrupts_a_running_scheduled_run_cleanly_and_exits_0() {
    let db = TestDb::new().await;
    let sim = simulator(6, 400, |c| c.latency = Duration::from_millis(30));
    let groups: Vec<String> = sim.groups().into_iter().map(|g| g.group_id).collect();
    track_all(&db, &groups, 400).await;
    let jobs = tempfile::tempdir().unwrap();
    std::fs::write(
        jobs.path().join("slow.toml"),
        "schedule = \"*/2 * * * * *\"\nrate_limit = 40\n",
    )
    .unwrap();
    let parquet = tempfile::tempdir().unwrap();
    let log = jobs.path().join("scheduler.log");
    let mut child = exporter_for(&db, &sim.base_url(), parquet.path())
        .env("EXPORT_BATCH_SIZE", "10")
        .env("EXPORT_CONCURRENCY", "4")
        .args(["schedule", "--jobs"])
        .arg(jobs.path())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // Wait until the first run has written a batch: it is mid-run (6 x 40 calls at 40/s).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM receipts.write_batches")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        if n > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no batch in 20 s: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = terminate_within(&mut child, Duration::from_secs(5)).await;
    let logs = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(0), "{logs}");
    let runs = runs_of(&db, "slow").await;
    assert_eq!(
        runs,
        [("scheduled".to_string(), "interrupted".to_string())],
        "{logs}"
    );
}
