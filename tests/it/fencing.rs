//! Issue 12: exactly once when a run's lock session dies. Two jobs on one database and one
//! warehouse; a run whose job-lock session is killed at an exact moment or at random ones
//! while the other job's run repairs; a run frozen past its lease and fenced; every session of
//! a run killed; a real restart of a private Postgres cluster. The real binary throughout.

use crate::cluster::Cluster;
use crate::helpers::*;
use rand::{Rng, SeedableRng};
use receipt_exporter::crashpoint::{PAUSE_ENV, PAUSE_FILE_ENV};
use receipt_exporter::sim::Simulator;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Two jobs, `a` and `b`, each over 4 groups of its own (by tag), sharing one database, one
/// simulator and one Parquet directory.
pub struct TwoJobs {
    pub db: TestDb,
    pub sim: Simulator,
    pub jobs: tempfile::TempDir,
    pub dir: tempfile::TempDir,
}

impl TwoJobs {
    pub async fn new() -> TwoJobs {
        let db = TestDb::new().await;
        let sim = simulator(8, 300, |_| {});
        let groups = group_ids(&sim);
        track_all(&db, &groups, 300).await;
        let jobs = tempfile::tempdir().unwrap();
        for (job, mine) in [("a", &groups[..4]), ("b", &groups[4..])] {
            sqlx::query(
                "UPDATE receipts.tracked_groups SET tags = ARRAY[$1] WHERE group_id = ANY($2)",
            )
            .bind(job)
            .bind(mine)
            .execute(&db.pool)
            .await
            .unwrap();
            std::fs::write(
                jobs.path().join(format!("{job}.toml")),
                format!("schedule = \"@daily\"\ntags = [\"{job}\"]\n"),
            )
            .unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        TwoJobs { db, sim, jobs, dir }
    }

    /// A run of `job` that takes a few seconds: 120 calls at 60 calls/s shared by both jobs.
    pub fn run(&self, job: &str) -> Command {
        let mut cmd = exporter_for(&self.db, &self.sim.base_url(), self.dir.path());
        cmd.env("EXPORT_JOBS_DIR", self.jobs.path())
            .env("EXPORT_BATCH_SIZE", "10")
            .env("EXPORT_RATE_LIMIT", "60")
            .env("EXPORT_CONCURRENCY", "4")
            .args(["run", "--job", job]);
        cmd
    }

    /// The simulator's receipts (Code 0) for a job's groups, at step 0.
    fn expected(&self, job: &str) -> BTreeSet<(String, i64, i32, i32)> {
        let groups = self.sim.groups();
        let mine = if job == "a" {
            &groups[..4]
        } else {
            &groups[4..]
        };
        expected_rows(mine, 300, 0)
    }

    pub async fn status(&self, run_id: i64) -> String {
        run_row(&self.db, run_id).await.0
    }
}

pub fn spawn(cmd: &mut Command) -> Child {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The run id the summary line of a finished run names.
fn run_id_of(out: &Output) -> i64 {
    let text = stdout(out);
    let rest = text
        .split("run ")
        .nth(1)
        .unwrap_or_else(|| panic!("no summary line: {text}"));
    rest.split_whitespace().next().unwrap().parse().unwrap()
}

/// The race, at the exact moment: run A (job a) has renamed its Parquet file and not
/// yet recorded it when its lock session dies; a run of job b repairs meanwhile. Nothing of A
/// may be deleted or declared dead under it: A is still leased (it is reconnecting), and its
/// rename and record are one fenced transaction that no repair can split.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_jobs_repair_while_a_run_stands_between_rename_and_record_loses_nothing() {
    let t = TwoJobs::new().await;
    let pauses = tempfile::tempdir().unwrap();
    let pause = pauses.path().join("a-after-rename");
    let a = spawn(
        t.run("a")
            .env(PAUSE_ENV, "after_rename:1")
            .env(PAUSE_FILE_ENV, &pause),
    );
    wait_for_file(&pause, Duration::from_secs(60)).await;
    let renamed = visible_parquet_files(t.dir.path());
    assert_eq!(renamed.len(), 1, "A's file is in place, not yet recorded");
    assert!(kill_lock_session(&t.db, "a").await, "A held its job lock");

    let b = run(&mut t.run("b"));
    assert_eq!(b.status.code(), Some(0));
    assert_eq!(t.status(1).await, "running", "the repair left A alone");
    assert!(renamed[0].exists(), "the repair did not sweep A's file");

    std::fs::remove_file(&pause).unwrap();
    let a = finish(a);
    assert_eq!(a.status.code(), Some(0), "A rode out the lost session");
    assert!(stderr(&a).contains("took the job lock again"));
    assert_eq!(
        (t.status(1).await, t.status(2).await),
        ("succeeded".into(), "succeeded".into())
    );
    let pg = pg_snapshots(&t.db).await;
    assert_eq!(rows_of(&pg, 1), t.expected("a"));
    assert_eq!(rows_of(&pg, 2), t.expected("b"));

    let more = run(&mut t.run("a"));
    assert_eq!(more.status.code(), Some(0));
    assert_warehouse_consistent(&t.db, t.dir.path()).await;
}

/// A run frozen (SIGSTOP: a VM pause, a stalled host) with its lock session gone, past its
/// lease: the other job's repair declares it dead, fences it, sweeps its files and writes its
/// committed batches to Parquet. Woken up, it writes nothing more, keeps `abandoned`, says who
/// fenced it and exits 1; after one more run both sinks agree for every run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_frozen_past_its_lease_is_fenced_keeps_abandoned_and_nothing_is_lost() {
    let t = TwoJobs::new().await;
    let pauses = tempfile::tempdir().unwrap();
    let pause = pauses.path().join("a-between-sinks");
    let a = spawn(
        t.run("a")
            .env("EXPORT_LOCK_RECONNECT_TIMEOUT", "5")
            .env(PAUSE_ENV, "between_sinks:2")
            .env(PAUSE_FILE_ENV, &pause),
    );
    wait_for_file(&pause, Duration::from_secs(60)).await;
    signal(&a, "STOP");
    assert!(kill_lock_session(&t.db, "a").await);
    wait_for_lease_to_run_out(&t.db, 1).await;

    let b = run(&mut t.run("b"));
    assert_eq!(b.status.code(), Some(0));
    assert!(
        stderr(&b).contains("died without finishing: marked abandoned, its writer fenced"),
        "{}",
        stderr(&b)
    );
    let fenced_by: String =
        sqlx::query_scalar("SELECT fenced_by FROM receipts.export_runs WHERE run_id = 1")
            .fetch_one(&t.db.pool)
            .await
            .unwrap();
    assert!(
        fenced_by.starts_with("run 2 (job b) on host "),
        "{fenced_by}"
    );
    let committed_before = rows_of(&pg_snapshots(&t.db).await, 1);
    assert!(!committed_before.is_empty());

    std::fs::remove_file(&pause).unwrap();
    signal(&a, "CONT");
    let a = finish(a);
    assert_eq!(a.status.code(), Some(1), "a fenced run exits 1");
    assert!(
        stderr(&a).contains("fenced by run 2 (job b)"),
        "{}",
        stderr(&a)
    );
    assert!(
        stdout(&a).contains("run 1 (job a) abandoned"),
        "{}",
        stdout(&a)
    );
    assert_eq!(
        t.status(1).await,
        "abandoned",
        "its own end did not overwrite the repairer's"
    );
    assert_eq!(
        rows_of(&pg_snapshots(&t.db).await, 1),
        committed_before,
        "the fenced run committed nothing more"
    );

    let more = run(&mut t.run("a"));
    assert_eq!(more.status.code(), Some(0));
    let pg = pg_snapshots(&t.db).await;
    assert_eq!(rows_of(&pg, 3), t.expected("a"));
    assert_warehouse_consistent(&t.db, t.dir.path()).await;
}

/// Waits (up to 30 s) until the run's lease has run out by the database's clock.
pub async fn wait_for_lease_to_run_out(db: &TestDb, run_id: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out: Option<bool> = sqlx::query_scalar(
            "SELECT lease_until < now() FROM receipts.export_runs WHERE run_id = $1",
        )
        .bind(run_id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        if out != Some(false) {
            return;
        }
        assert!(Instant::now() < deadline, "the lease did not run out");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// How the stress test disturbs run A after killing its lock session.
#[derive(Debug, Clone, Copy)]
enum Disturb {
    /// Nothing more: A reconnects while B runs.
    KillOnly,
    /// A is frozen for a moment shorter than its lease.
    FreezeBriefly(Duration),
    /// A is frozen until its lease ran out, so B's repair fences it.
    FreezePastLease,
}

/// The acceptance's race at random moments: job a's run loses its lock session at a random
/// moment (sometimes also frozen, briefly or past its lease) while job b's run starts at
/// another; after one more run, every run agrees row for row between Postgres and Parquet, no
/// listed file is missing, none is unlisted, and no run is `abandoned` yet rewritten by its
/// dead owner. `RECEIPT_EXPORTER_STRESS_ITERATIONS` (default 3) sets the rounds,
/// `RECEIPT_EXPORTER_STRESS_SEED` repeats a printed run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_jobs_and_a_lock_session_dying_at_random_moments() {
    let asked: Option<usize> = std::env::var("RECEIPT_EXPORTER_STRESS_ITERATIONS")
        .ok()
        .map(|v| {
            v.parse()
                .expect("RECEIPT_EXPORTER_STRESS_ITERATIONS is a number")
        });
    let iterations = asked.unwrap_or(3);
    // A freeze past the lease takes ~20 s: the default suite draws at most one.
    let mut long_freezes = if asked.is_some() { usize::MAX } else { 1 };
    let seed: u64 = std::env::var("RECEIPT_EXPORTER_STRESS_SEED")
        .ok()
        .map(|v| v.parse().expect("RECEIPT_EXPORTER_STRESS_SEED is a number"))
        .unwrap_or_else(rand::random);
    eprintln!("stress: seed {seed}, {iterations} iterations (RECEIPT_EXPORTER_STRESS_SEED={seed} repeats them)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let t = TwoJobs::new().await;
    let (mut kills, mut fenced) = (0, 0);
    for i in 1..=iterations {
        let disturb = match rng.random_range(0..4) {
            0 | 1 => Disturb::KillOnly,
            2 => Disturb::FreezeBriefly(Duration::from_millis(rng.random_range(100..3000))),
            _ if long_freezes > 0 => {
                long_freezes -= 1;
                Disturb::FreezePastLease
            }
            _ => Disturb::KillOnly,
        };
        let kill_after = Duration::from_millis(rng.random_range(0..2500));
        let b_after = Duration::from_millis(rng.random_range(0..2000));
        eprintln!("stress iteration {i}: kill A's lock session after {kill_after:?}, then {disturb:?}; B starts {b_after:?} after the kill");

        let a = spawn(t.run("a").env("EXPORT_LOCK_RECONNECT_TIMEOUT", "5"));
        tokio::time::sleep(kill_after).await;
        let killed = kill_lock_session(&t.db, "a").await;
        kills += usize::from(killed);
        let a_run: Option<i64> = sqlx::query_scalar(
            "SELECT max(run_id) FROM receipts.export_runs WHERE job = 'a' AND status = 'running'",
        )
        .fetch_one(&t.db.pool)
        .await
        .unwrap();
        let frozen = match disturb {
            Disturb::KillOnly => false,
            Disturb::FreezeBriefly(d) => {
                signal(&a, "STOP");
                tokio::time::sleep(d).await;
                signal(&a, "CONT");
                false
            }
            Disturb::FreezePastLease => {
                signal(&a, "STOP");
                if let Some(run_id) = a_run {
                    wait_for_lease_to_run_out(&t.db, run_id).await;
                }
                true
            }
        };
        tokio::time::sleep(b_after).await;
        let mut b = spawn(&mut t.run("b"));
        if frozen {
            // B may wait for something A holds (the warehouse lock, A's row in a commit):
            // A wakes up after B is done or 15 s, whichever comes first.
            let until = Instant::now() + Duration::from_secs(15);
            while b.try_wait().unwrap().is_none() && Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            signal(&a, "CONT");
        }
        let (a, b) = (finish(a), finish(b));
        assert_eq!(b.status.code(), Some(0), "iteration {i}: B");
        let a_id = run_id_of(&a);
        let a_status = t.status(a_id).await;
        match a.status.code() {
            Some(0) => assert_eq!(a_status, "succeeded", "iteration {i}"),
            Some(1) => {
                fenced += 1;
                assert_eq!(
                    a_status, "abandoned",
                    "iteration {i}: a fenced run keeps abandoned"
                );
                assert!(stderr(&a).contains("fenced by run"), "iteration {i}");
            }
            other => panic!("iteration {i}: A exited {other:?}"),
        }
        let more = run(&mut t.run("a"));
        assert_eq!(more.status.code(), Some(0), "iteration {i}: one more run");
        assert_warehouse_consistent(&t.db, t.dir.path()).await;
    }
    eprintln!("stress: seed {seed}: {iterations} iterations, {kills} lock sessions killed, {fenced} runs fenced: all consistent");
}

/// A real restart of Postgres in the middle of a run: every session dies, the server refuses
/// connections for a moment, then comes back. The run retries its writes, re-establishes its
/// lock session, takes the job lock again and ends `succeeded` with exact data, exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_mid_run_is_ridden_out_and_the_run_succeeds_with_exact_data() {
    let cluster = Cluster::start();
    let admin = sqlx::PgPool::connect(&cluster.url("postgres"))
        .await
        .unwrap();
    sqlx::query("CREATE DATABASE restarted")
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let url = cluster.url("restarted");
    let options = receipt_exporter::db::connect_options(&url)
        .unwrap()
        .options([("search_path", "receipts")]);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options.clone())
        .await
        .unwrap();
    receipt_exporter::db::migrate(&pool).await.unwrap();
    let sim = simulator(4, 400, |_| {});
    track_all_in(&pool, &group_ids(&sim), 400).await;
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn(
        exporter()
            .env("DATABASE_URL", &url)
            .env("TIM_SDKAPPID", SDKAPPID.to_string())
            .env("TIM_SECRET_KEY", KEY)
            .env("TIM_API_BASE", sim.base_url())
            .env("EXPORT_PARQUET_DIR", dir.path())
            .env("EXPORT_BATCH_SIZE", "10")
            .env("EXPORT_RATE_LIMIT", "40")
            .env("EXPORT_CONCURRENCY", "4")
            .arg("run"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM receipts.write_batches")
            .fetch_one(&pool)
            .await
            .unwrap();
        if n >= 1 {
            break;
        }
        if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
            finish(child);
            panic!("the run wrote no batch");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pool.close().await;
    cluster.restart(Duration::from_secs(3));
    let out = finish(child);
    assert_eq!(out.status.code(), Some(0), "the run rode out the restart");
    let err = stderr(&out);
    assert!(err.contains("took the job lock again"), "{err}");

    let pool = sqlx::PgPool::connect_with(options).await.unwrap();
    let status: String =
        sqlx::query_scalar("SELECT status FROM receipts.export_runs WHERE run_id = 1")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(status, "succeeded");
    let pg = pg_snapshots_in(&pool).await;
    let want = expected_rows(&sim.groups(), 400, 0);
    assert_eq!(rows_of(&pg, 1), want, "exact data");
    assert_eq!(
        pg,
        parquet_snapshots(dir.path()),
        "Postgres and Parquet agree"
    );
    let hidden: Vec<_> = all_files(dir.path())
        .into_iter()
        .filter(|p: &PathBuf| p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "{hidden:?}");
    pool.close().await;
}

/// The same race in a lake on object storage: run A (job a) has uploaded its file under
/// `_pending/` and not yet recorded it when it freezes past its lease; job b's repair takes it
/// over, deletes the unrecorded upload and writes A's committed batches anew. Woken up, A
/// cannot record (fenced) and its upload never becomes visible: the bucket holds each row once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_object_storage_a_frozen_runs_unrecorded_upload_never_becomes_visible() {
    let s3 = crate::s3::S3Server::start();
    let t = TwoJobs::new().await;
    let on_s3 = |mut cmd: Command| {
        s3.env(&mut cmd).env("EXPORT_PARQUET_DIR", s3.url("fenced"));
        cmd
    };
    let pauses = tempfile::tempdir().unwrap();
    let pause = pauses.path().join("a-during-upload");
    let a = spawn(
        on_s3(t.run("a"))
            .env("EXPORT_LOCK_RECONNECT_TIMEOUT", "5")
            .env(PAUSE_ENV, "during_upload:1")
            .env(PAUSE_FILE_ENV, &pause),
    );
    wait_for_file(&pause, Duration::from_secs(60)).await;
    let uploads = s3.keys("fenced/_pending").await;
    assert_eq!(uploads.len(), 1, "A's upload waits under _pending/");
    assert!(s3.visible("fenced").await.is_empty());
    signal(&a, "STOP");
    assert!(kill_lock_session(&t.db, "a").await);
    wait_for_lease_to_run_out(&t.db, 1).await;

    let b = run(&mut on_s3(t.run("b")));
    assert_eq!(b.status.code(), Some(0));
    assert_eq!(t.status(1).await, "abandoned");
    let pending: Vec<String> = s3
        .keys("fenced/_pending")
        .await
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert!(
        !pending.contains(&uploads[0].0),
        "the repair deleted A's unrecorded upload"
    );
    assert_eq!(s3.snapshots("fenced").await, pg_snapshots(&t.db).await);

    std::fs::remove_file(&pause).unwrap();
    signal(&a, "CONT");
    let a = finish(a);
    assert_eq!(a.status.code(), Some(1), "a fenced run exits 1");
    assert!(
        stderr(&a).contains("fenced by run 2 (job b)"),
        "{}",
        stderr(&a)
    );
    let pg = pg_snapshots(&t.db).await;
    assert_eq!(rows_of(&pg, 1), t.expected("a"));
    assert_eq!(
        s3.snapshots("fenced").await,
        pg,
        "each row once in the bucket"
    );
    assert!(
        s3.keys("fenced/_pending").await.is_empty(),
        "no upload left"
    );
    assert!(s3.unfinished_uploads().is_empty());
}
