//! Following: rolling windows, settled and no-receipt skips, the per-run budget. The real
//! binary, a fresh database, the simulator in-process.

use crate::helpers::*;
use receipt_exporter::sim::{Simulator, MAX_SETTLE_STEPS};
use std::collections::BTreeSet;

/// Every (group, seq) a run observed: its snapshots and its item codes.
async fn observed(db: &TestDb, run_id: i64) -> BTreeSet<(String, i64)> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT group_id, msg_seq FROM receipts.receipt_snapshots WHERE run_id = $1
         UNION ALL
         SELECT group_id, msg_seq FROM receipts.receipt_item_codes WHERE run_id = $1",
    )
    .bind(run_id)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let set: BTreeSet<(String, i64)> = rows.iter().cloned().collect();
    assert_eq!(set.len(), rows.len(), "run {run_id} observed a seq twice");
    set
}

/// (api_calls, seqs_asked, seqs_skipped_settled, seqs_skipped_no_receipt, seqs_left, calls_left).
async fn follow_row(db: &TestDb, run_id: i64) -> (i64, i64, i64, i64, i64, i64) {
    sqlx::query_as(
        "SELECT api_calls, seqs_asked, seqs_skipped_settled, seqs_skipped_no_receipt, seqs_left, calls_left
         FROM receipts.export_runs WHERE run_id = $1",
    )
    .bind(run_id)
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

fn seqs_of(set: &BTreeSet<(String, i64)>) -> BTreeSet<i64> {
    set.iter().map(|(_, s)| *s).collect()
}

fn first_group(sim: &Simulator) -> String {
    sim.groups()[0].group_id.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latest_window_follows_new_messages_and_never_pulls_outside_it() {
    let db = TestDb::new().await;
    let sim = simulator(1, 150, |_| {});
    let dir = tempfile::tempdir().unwrap();
    let g = first_group(&sim);
    let exporter = || exporter_for(&db, &sim.base_url(), dir.path());

    let out = run(exporter().args(["track", "add", &g, "--latest", "100"]));
    assert_eq!(out.status.code(), Some(0));
    let out = run(exporter().args(["track", "list"]));
    assert!(stdout(&out).contains("latest 100"), "{}", stdout(&out));

    let out = run(exporter().arg("run"));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(seqs_of(&observed(&db, 1).await), (51..=150).collect());

    // 30 new messages: the window moves to 81..=180. Seqs 151..=180 were never observed, so
    // they are pulled whatever the skips; nothing below 81 is.
    sim.add_messages(&g, 30).unwrap();
    sim.advance(1);
    let out = run(exporter().arg("run"));
    assert_eq!(out.status.code(), Some(0));
    let second = seqs_of(&observed(&db, 2).await);
    assert!(second.iter().all(|s| (81..=180).contains(s)), "{second:?}");
    assert!((151..=180).all(|s| second.contains(&s)), "{second:?}");

    // With the skips off the run pulls exactly the newest 100.
    sim.add_messages(&g, 10).unwrap();
    let out = run(exporter().args(["run", "--include-settled"]));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(seqs_of(&observed(&db, 3).await), (91..=190).collect());
    let rolling: String = sqlx::query_scalar(
        "SELECT details->'follow'->'rolling'->>$1 FROM receipts.export_runs WHERE run_id = 3",
    )
    .bind(&g)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(rolling, "91..190");

    // A rolling window of a group the API does not know: a failed group, the run partial.
    let out = run(exporter().args(["track", "add", "@TGS#gone", "--latest", "5"]));
    assert_eq!(out.status.code(), Some(0));
    let out = run(exporter().arg("run"));
    assert_eq!(out.status.code(), Some(3), "partial");
    let (status, error): (String, Option<String>) =
        sqlx::query_as("SELECT status, error FROM receipts.export_runs WHERE run_id = 4")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(status, "partial");
    assert_eq!(error.as_deref(), Some("1 of 2 groups failed"));

    let out = run(exporter().args(["track", "remove", &g, "--latest"]));
    assert_eq!(out.status.code(), Some(0));
    let out = run(exporter().args(["track", "list"]));
    let text = stdout(&out);
    assert!(
        text.lines()
            .any(|l| l.starts_with(&g) && !l.contains("latest")),
        "{text}"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settled_messages_are_skipped_and_the_ledger_says_so() {
    let db = TestDb::new().await;
    let sim = simulator(1, 2000, |c| c.groups[0].member_num = 40);
    let dir = tempfile::tempdir().unwrap();
    let g = first_group(&sim);
    // Every count at its final value: 100 messages fully read (settled), 100 still unread.
    sim.advance(MAX_SETTLE_STEPS);
    let with_receipt = (1..2000u64).filter(|&s| sim.expected(&g, s).0 == 0);
    let (settled, open): (Vec<u64>, Vec<u64>) =
        with_receipt.partition(|&s| sim.expected(&g, s).2 == 0);
    let chosen: Vec<u64> = settled[..100].iter().chain(&open[..100]).copied().collect();
    sqlx::query("INSERT INTO receipts.tracked_groups (group_id) VALUES ($1)")
        .bind(&g)
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO receipts.seq_windows (group_id, from_seq, to_seq) SELECT $1, s, s FROM unnest($2::bigint[]) s",
    )
    .bind(&g)
    .bind(chosen.iter().map(|s| *s as i64).collect::<Vec<_>>())
    .execute(&db.pool)
    .await
    .unwrap();
    let exporter = || {
        let mut cmd = exporter_for(&db, &sim.base_url(), dir.path());
        cmd.env("EXPORT_BATCH_SIZE", "10");
        cmd
    };

    let out = run(exporter().arg("run"));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(follow_row(&db, 1).await, (20, 200, 0, 0, 0, 0));

    let out = run(exporter().args(["run", "--dry-run"]));
    let text = stdout(&out);
    assert!(
        text.contains("dry run: 1 group, 100 seqs, 10 API calls at 10 seqs per call")
            && text.contains(
                "skipped 100 settled and 0 no-receipt seqs (without skipping: 200 seqs, 20 calls"
            ),
        "{text}"
    );

    let out = run(exporter().arg("run"));
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout(&out).contains("skipped 100 settled"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        follow_row(&db, 2).await,
        (10, 100, 100, 0, 0, 0),
        "half the calls"
    );
    let open_set: BTreeSet<i64> = open[..100].iter().map(|s| *s as i64).collect();
    assert_eq!(seqs_of(&observed(&db, 2).await), open_set);

    // `--include-settled` pulls them all again.
    let out = run(exporter().args(["run", "--include-settled"]));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(follow_row(&db, 3).await, (20, 200, 0, 0, 0, 0));
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seqs_without_receipt_are_skipped_after_three_runs_below_the_newest_seq() {
    let db = TestDb::new().await;
    let sim = simulator(1, 300, |_| {});
    let dir = tempfile::tempdir().unwrap();
    let g = first_group(&sim);
    // 1..=320: the seqs past 300 do not exist yet, so they never count as "no receipt".
    track_all(&db, std::slice::from_ref(&g), 320).await;
    // Only below the highest seq with a receipt is a seq known to exist.
    let top = (1..=300)
        .rev()
        .find(|&s| sim.expected(&g, s).0 == 0)
        .unwrap();
    let none: BTreeSet<u64> = (1..top)
        .filter(|&s| sim.expected(&g, s).0 == 10062)
        .collect();
    assert!(none.len() > 10, "about one message in ten has no receipt");
    for _ in 0..3 {
        let out = run(exporter_for(&db, &sim.base_url(), dir.path()).args(["run"]));
        assert_eq!(out.status.code(), Some(0));
    }
    let out = run(exporter_for(&db, &sim.base_url(), dir.path()).args(["run"]));
    assert_eq!(out.status.code(), Some(0));
    let (_, _, _, skipped, _, _) = follow_row(&db, 4).await;
    assert_eq!(skipped, none.len() as i64);
    let fourth = seqs_of(&observed(&db, 4).await);
    assert!(none.iter().all(|s| !fourth.contains(&(*s as i64))));
    assert!(
        (301..=320).all(|s| fourth.contains(&s)),
        "seqs past the newest are still asked"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_run_cap_stops_the_run_and_the_next_run_covers_what_was_left_first() {
    let db = TestDb::new().await;
    let sim = simulator(2, 100, |_| {});
    let dir = tempfile::tempdir().unwrap();
    let groups: Vec<String> = sim.groups().into_iter().map(|g| g.group_id).collect();
    track_all(&db, &groups, 100).await;
    let job = dir.path().join("capped.toml");
    std::fs::write(
        &job,
        "schedule = \"@hourly\"\nmax_calls = 5\nskip_settled = false\nno_receipt_after = 0\n",
    )
    .unwrap();
    let parquet = dir.path().join("parquet");
    let capped_run = || {
        let mut cmd = exporter_for(&db, &sim.base_url(), &parquet);
        cmd.env("EXPORT_BATCH_SIZE", "10")
            .args(["run", "--job", job.to_str().unwrap()]);
        run(&mut cmd)
    };

    // 2 groups x 100 seqs at 10 per call: 20 calls, 5 per run.
    let out = capped_run();
    assert_eq!(out.status.code(), Some(0), "a cap is not a failure");
    assert!(
        stdout(&out).contains("succeeded") && stdout(&out).contains("left 150 seqs (15 calls)"),
        "{}",
        stdout(&out)
    );
    assert_eq!(follow_row(&db, 1).await, (5, 50, 0, 0, 150, 15));
    let stopped_by: String = sqlx::query_scalar(
        "SELECT details->'follow'->>'stopped_by' FROM receipts.export_runs WHERE run_id = 1",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(stopped_by, "max_calls");

    // Runs 2-4 take what was never observed first: each covers 50 new seqs.
    let mut seen = observed(&db, 1).await;
    for run_id in 2..=4 {
        sim.advance(1);
        assert_eq!(capped_run().status.code(), Some(0));
        let this = observed(&db, run_id).await;
        assert_eq!(this.len(), 50, "run {run_id}");
        assert!(
            this.is_disjoint(&seen),
            "run {run_id} pulled a seq again before all were seen"
        );
        seen.extend(this);
        // Each run plans all 200 seqs and leaves 150 of them.
        assert_eq!(follow_row(&db, run_id).await, (5, 50, 0, 0, 150, 15));
    }
    assert_eq!(seen.len(), 200, "four capped runs covered everything");
    // Then the stalest: exactly what run 1 pulled.
    assert_eq!(capped_run().status.code(), Some(0));
    assert_eq!(observed(&db, 5).await, observed(&db, 1).await);
    sim.shutdown().await;
}
