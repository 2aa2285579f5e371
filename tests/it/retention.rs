//! Retention (issue 17): months of snapshots leave Postgres only once the lake holds them whole.

use crate::helpers::*;
use chrono::{Datelike, Months, NaiveDate, TimeZone, Utc};
use receipt_exporter::plan::{FollowPolicy, GroupPlan};
use receipt_exporter::sink::postgres::write_batch;
use receipt_exporter::sink::{Fence, ItemCodeRow, SnapshotRow, WriteBatch};
use receipt_exporter::tracking::SeqWindow;
use std::collections::HashMap;
use std::sync::Arc;

const NO_RECEIPT: i32 = 10062;

/// A finished run started on `day` that snapshotted seqs 1..=10 of groups g1..g3 and got "no
/// receipt" for seq 50 of g1, and (when `seq_51`) for seq 51 too.
async fn old_run(db: &TestDb, day: NaiveDate, seq_51: bool) -> i64 {
    let at = Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 1).unwrap());
    let run_id: i64 = sqlx::query_scalar(
        "INSERT INTO receipts.export_runs
            (job, kind, status, host, pid, run_date, started_at, finished_at, sdkappid, app)
         VALUES ('old', 'manual', 'succeeded', 'h', 0, $1, $2, $2, $3, 'default') RETURNING run_id",
    )
    .bind(day)
    .bind(at)
    .bind(SDKAPPID as i64)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let mut rows = Vec::new();
    for g in ["g1", "g2", "g3"] {
        for seq in 1..=10 {
            rows.push(SnapshotRow {
                captured_at: at + chrono::Duration::microseconds(seq),
                group_id: Arc::from(g),
                msg_seq: seq,
                read_num: (run_id as i32 + seq as i32) % 7,
                unread_num: 7,
            });
        }
    }
    let mut codes = vec![ItemCodeRow {
        captured_at: at,
        group_id: Arc::from("g1"),
        msg_seq: 50,
        code: NO_RECEIPT,
    }];
    if seq_51 {
        codes.push(ItemCodeRow {
            msg_seq: 51,
            ..codes[0].clone()
        });
    }
    let batch = WriteBatch {
        run_id,
        run_date: day,
        batch_no: 1,
        sdkappid: Some(SDKAPPID as i64),
        capture_date: day,
        rows,
        codes,
    };
    write_batch(&db.pool, Fence { run_id, epoch: 1 }, &batch)
        .await
        .unwrap();
    run_id
}

fn month_start(day: NaiveDate) -> NaiveDate {
    day.with_day(1).unwrap()
}

async fn create_month_partition(db: &TestDb, month: NaiveDate) {
    let next = month + Months::new(1);
    sqlx::query(&format!(
        "CREATE TABLE receipts.receipt_snapshot_rows_y{}m{:02} PARTITION OF receipts.receipt_snapshot_rows
         FOR VALUES FROM ('{month}') TO ('{next}')",
        month.year(),
        month.month()
    ))
    .execute(&db.pool)
    .await
    .unwrap();
}

async fn partitions(db: &TestDb) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'receipts.receipt_snapshot_rows'::regclass ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

async fn codes(db: &TestDb) -> Vec<(i64, String, i64)> {
    sqlx::query_as(
        "SELECT run_id, group_id, msg_seq FROM receipts.receipt_item_codes ORDER BY 1, 2, 3",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

/// What the planner skips for seqs 1..=60 of g1 with `no_receipt_after = 3`.
async fn skips(db: &TestDb) -> String {
    let plan = [GroupPlan {
        group_id: "g1".into(),
        ranges: vec![SeqWindow::new(1, 60).unwrap()],
    }];
    let newest = HashMap::from([("g1".to_string(), 60u64)]);
    let policy = FollowPolicy {
        no_receipt_after: Some(3),
        ..FollowPolicy::default()
    };
    let states = receipt_exporter::tracking::follow::classify(
        &db.pool,
        SDKAPPID as i64,
        &plan,
        &newest,
        &policy,
    )
    .await
    .unwrap();
    assert_eq!(states.len(), 1);
    assert_eq!(
        states[0].no_receipt,
        [50],
        "seq 50 answered 10062 in 5 runs"
    );
    format!("{states:?}")
}

/// Asserts the exit code and a line of stdout; returns stdout.
fn expect(out: &std::process::Output, code: i32, needle: &str) -> String {
    let text = stdout(out);
    assert_eq!(out.status.code(), Some(code), "{text}{}", stderr(out));
    assert!(text.contains(needle), "{text}");
    text
}

fn retention(db: &TestDb, dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    run(exporter_for(db, "http://127.0.0.1:9", dir)
        .arg("retention")
        .args(args))
}

fn export(
    db: &TestDb,
    dir: &std::path::Path,
    since: NaiveDate,
    until: NaiveDate,
) -> std::process::Output {
    run(exporter_for(db, "http://127.0.0.1:9", dir).args([
        "export",
        "parquet",
        "--since",
        &since.to_string(),
        "--until",
        &until.to_string(),
    ]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_only_months_the_lake_holds_whole_and_keeps_the_planner_skips() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let today = Utc::now().date_naive();
    let this_month = month_start(today);
    let (m4, m3) = (this_month - Months::new(4), this_month - Months::new(3));
    create_month_partition(&db, m4).await;
    create_month_partition(&db, m3).await;
    let days = [
        m4 + chrono::Days::new(4),
        m4 + chrono::Days::new(20),
        m3 + chrono::Days::new(2),
        m3 + chrono::Days::new(15),
    ];
    let mut runs = Vec::new();
    for (i, day) in days.iter().enumerate() {
        runs.push(old_run(&db, *day, i == 0).await);
    }
    let recent = old_run(&db, today, false).await;
    let all_rows = pg_snapshots(&db).await;
    assert_eq!(all_rows.len(), 5 * 30);
    let codes_before = codes(&db).await;
    let skips_before = skips(&db).await;
    let parts_before = partitions(&db).await;

    // Nothing in the lake yet: refused, naming the runs of both old months; nothing changed.
    let out = retention(&db, dir.path(), &["--keep-months", "1"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    for run_id in &runs {
        assert!(
            stdout(&out).contains(&format!(
                "run {run_id} (succeeded, 30 rows in Postgres, 0 in the lake)"
            )),
            "{}",
            stdout(&out)
        );
    }
    assert!(
        !stdout(&out).contains(&format!("run {recent} ")),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("refused"), "{}", stdout(&out));
    assert_eq!(partitions(&db).await, parts_before);
    assert_eq!(codes(&db).await, codes_before);

    // The older month in the lake: the newer old month still refuses, and names only its runs.
    let out = export(&db, dir.path(), m4, m3 - chrono::Days::new(1));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = retention(&db, dir.path(), &["--keep-months", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(!text.contains(&format!("run {} (", runs[0])), "{text}");
    assert!(!text.contains(&format!("run {} (", runs[1])), "{text}");
    assert!(
        text.contains(&format!(
            "run {} (succeeded, 30 rows in Postgres, 0 in the lake)",
            runs[2]
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "{}: 2 run(s), 60 rows, all in the lake: drop",
            m4.format("%Y-%m")
        )),
        "{text}"
    );
    assert_eq!(partitions(&db).await, parts_before);
    assert_eq!(codes(&db).await, codes_before);

    // Everything in the lake: a dry run says what it would do and does nothing.
    let out = export(&db, dir.path(), m3, today);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(parquet_snapshots(dir.path()), all_rows);
    let out = retention(&db, dir.path(), &["--keep-months", "1", "--dry-run"]);
    expect(&out, 0, ": 2 beyond each seq's newest 3: prune");
    assert_eq!(partitions(&db).await, parts_before);
    assert_eq!(codes(&db).await, codes_before);

    let out = retention(&db, dir.path(), &["--keep-months", "1"]);
    expect(&out, 0, "dropped 2 month(s)");
    let parts = partitions(&db).await;
    assert_eq!(parts.len(), parts_before.len() - 2, "{parts:?}");
    assert!(!parts
        .iter()
        .any(|p| p.ends_with(&format!("y{}m{:02}", m4.year(), m4.month()))));
    // Postgres keeps the recent run; the lake keeps every run.
    let recent_rows: Vec<Snap> = all_rows
        .iter()
        .filter(|s| s.run_id == recent)
        .cloned()
        .collect();
    assert_eq!(pg_snapshots(&db).await, recent_rows);
    assert_eq!(parquet_snapshots(dir.path()), all_rows);
    let retired: Vec<i64> =
        sqlx::query_scalar("SELECT run_id FROM receipts.retired_runs ORDER BY 1")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(retired, runs);
    // Item codes: seq 50 keeps its newest 3 (runs 3 and 4 of the old months and the recent one),
    // seq 51 its only one; the planner skips the same seqs.
    let kept = codes(&db).await;
    let want: Vec<_> = codes_before
        .iter()
        .filter(|(run_id, _, seq)| !(*seq == 50 && (*run_id == runs[0] || *run_id == runs[1])))
        .cloned()
        .collect();
    assert_eq!(kept, want);
    assert_eq!(kept.len(), codes_before.len() - 2);
    assert_eq!(skips(&db).await, skips_before);
    // The ledger, the manifest and receipt_latest stay.
    let (ledger, listed, latest): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM receipts.export_runs), (SELECT count(*) FROM receipts.parquet_files),
                (SELECT count(*) FROM receipts.receipt_latest)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((ledger, latest), (5, 30));
    assert!(listed >= 5, "{listed}");

    // A day retention removed cannot be rebuilt: refused, and its files stay as they are.
    let files_before: Vec<(std::path::PathBuf, Vec<u8>)> = all_files(dir.path())
        .into_iter()
        .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
        .collect();
    let out = export(&db, dir.path(), m4, today);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("{} (runs {})", days[0], runs[0])),
        "{}",
        stderr(&out)
    );
    let files_after: Vec<(std::path::PathBuf, Vec<u8>)> = all_files(dir.path())
        .into_iter()
        .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
        .collect();
    assert_eq!(files_after, files_before);
    // Today's day is still Postgres's to rebuild.
    let out = export(&db, dir.path(), today, today);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(parquet_snapshots(dir.path()), all_rows);

    // Again: nothing left to drop.
    let out = retention(&db, dir.path(), &["--keep-months", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("dropped 0 month(s)"),
        "{}",
        stdout(&out)
    );
}

#[tokio::test]
async fn the_drop_function_refuses_recent_months_and_months_not_in_the_lake() {
    let db = TestDb::new().await;
    let this_month = month_start(Utc::now().date_naive());
    for month in [this_month, this_month - Months::new(1)] {
        let err = sqlx::query("SELECT receipts.drop_snapshot_month($1)")
            .bind(month)
            .execute(&db.pool)
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("not the first day of a month before last month"),
            "{err}"
        );
    }
    let m2 = this_month - Months::new(2);
    create_month_partition(&db, m2).await;
    let run_id = old_run(&db, m2 + chrono::Days::new(3), false).await;
    // Called directly, past any check of the command: still refused, and nothing dropped.
    let err = sqlx::query("SELECT receipts.drop_snapshot_month($1)")
        .bind(m2)
        .execute(&db.pool)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "run {run_id} (succeeded, 30 rows in Postgres, 0 in the lake)"
        )),
        "{err}"
    );
    assert_eq!(pg_snapshots(&db).await.len(), 30);
    let retired: i64 = sqlx::query_scalar("SELECT count(*) FROM receipts.retired_runs")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(retired, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_with_retention_keep_months_applies_it_after_each_scheduled_run_only() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let jobs = tempfile::tempdir().unwrap();
    let job = jobs.path().join("hourly.toml");
    std::fs::write(
        &job,
        "schedule = \"5 * * * *\"\ntags = [\"none\"]\nretention_keep_months = 1\n",
    )
    .unwrap();
    let sim = simulator(1, 10, |_| {});
    let today = Utc::now().date_naive();
    let m4 = month_start(today) - Months::new(4);
    create_month_partition(&db, m4).await;
    let old = old_run(&db, m4 + chrono::Days::new(3), false).await;
    let parts_before = partitions(&db).await;
    let run_job = |scheduled: bool| {
        let mut cmd = exporter_for(&db, &sim.base_url(), dir.path());
        cmd.arg("run").args(["--job", job.to_str().unwrap()]);
        if scheduled {
            cmd.arg("--scheduled");
        }
        run(&mut cmd)
    };

    // A manual run of the job: its repair writes the old run's rows to the lake (they were
    // never exported), and no retention follows a manual run.
    assert_eq!(run_job(false).status.code(), Some(0));
    assert_eq!(rows_of(&parquet_snapshots(dir.path()), old).len(), 30);
    assert_eq!(partitions(&db).await, parts_before);
    // A scheduled run of the job drops the month the lake holds whole.
    let out = run_job(true);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("dropped 1 month(s)"),
        "{}",
        stderr(&out)
    );
    let parts = partitions(&db).await;
    assert_eq!(parts.len(), parts_before.len() - 1, "{parts:?}");
    assert!(pg_snapshots(&db).await.iter().all(|s| s.run_id != old));
    assert_eq!(
        rows_of(&parquet_snapshots(dir.path()), old).len(),
        30,
        "the lake keeps the retired run"
    );
    // Issue 24: the retention is in the scheduled run's ledger row, and `runs show` says it.
    let (run_id, dropped): (i64, serde_json::Value) = sqlx::query_as(
        "SELECT run_id, details->'retention'->'months_dropped' FROM receipts.export_runs
         WHERE kind = 'scheduled'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(dropped.as_array().map(Vec::len), Some(1), "{dropped}");
    let show = run(exporter_for(&db, &sim.base_url(), dir.path()).args([
        "runs",
        "show",
        &run_id.to_string(),
    ]));
    assert!(
        stdout(&show).contains(
            "retention:            retention (retention_keep_months = 1): dropped 1 month(s)"
        ),
        "{}",
        stdout(&show)
    );
    let manual: serde_json::Value = sqlx::query_scalar(
        "SELECT details FROM receipts.export_runs WHERE kind = 'manual' ORDER BY run_id DESC LIMIT 1",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(
        manual.get("retention").is_none(),
        "a manual run applies none"
    );
}

/// Issue 23: read events are pruned by retention too. Run 1 (moved into an old month) recorded
/// the readers of a details-on group; retention refuses while a read-events file of it is not
/// recorded, then removes its messages' events with the month (the lake's files keep them),
/// remembering each message; when their readers grow, the next run pulls none of their read
/// lists and records none of their members again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_events_go_with_their_month_and_a_pruned_message_is_never_recorded_again() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let group = receipt_exporter::sim::SimGroup {
        group_id: "@TGS#who-old".into(),
        group_type: receipt_exporter::sim::GroupType::Public,
        member_num: 40,
        next_msg_seq: 13,
    };
    let sim = simulator(0, 0, |c| c.groups = vec![group.clone()]);
    let exporter = || exporter_for(&db, &sim.base_url(), dir.path());
    let out = run(exporter().args([
        "track",
        "add",
        &group.group_id,
        "--seqs",
        "1..12",
        "--details",
    ]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = run(exporter().arg("run"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let recorded = crate::details::lake_events(dir.path());
    assert!(!recorded.is_empty(), "run 1 recorded readers");
    let old = month_start(Utc::now().date_naive()) - Months::new(3);
    create_month_partition(&db, old).await;
    sqlx::raw_sql(&format!(
        "UPDATE receipts.receipt_snapshot_rows SET run_date = '{old}' WHERE run_id = 1;
         UPDATE receipts.export_runs SET run_date = '{old}' WHERE run_id = 1;"
    ))
    .execute(&db.pool)
    .await
    .unwrap();
    let cutoff = month_start(Utc::now().date_naive()) - Months::new(1);

    // A read-events file of run 1 that the manifest does not record: refused, nothing changes.
    let files: Vec<(i64, NaiveDate, String, i64, i64)> = sqlx::query_as(
        "DELETE FROM receipts.read_event_files WHERE run_id = 1
         RETURNING run_id, capture_date, path, row_count, byte_size",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let out = retention(&db, dir.path(), &["--keep-months", "1"]);
    expect(
        &out,
        1,
        &format!("read events before {cutoff}: not every run is in the lake: run 1 (succeeded, {} read events in Postgres, 0 in the lake)", recorded.len()),
    );
    assert_eq!(crate::details::pg_events(&db).await.len(), recorded.len());
    assert!(partitions(&db)
        .await
        .iter()
        .any(|p| p.ends_with(&format!("m{:02}", old.month()))));
    for (run_id, day, path, rows, bytes) in files {
        sqlx::query("INSERT INTO receipts.read_event_files (run_id, capture_date, path, row_count, byte_size) VALUES ($1, $2, $3, $4, $5)")
            .bind(run_id).bind(day).bind(path).bind(rows).bind(bytes)
            .execute(&db.pool)
            .await
            .unwrap();
    }

    let messages: std::collections::BTreeSet<(String, i64)> =
        recorded.iter().map(|e| (e.0.clone(), e.1)).collect();
    let out = retention(&db, dir.path(), &["--keep-months", "1"]);
    expect(
        &out,
        0,
        &format!(
            "removed {} read event(s) of {} message(s)",
            recorded.len(),
            messages.len()
        ),
    );
    assert!(crate::details::pg_events(&db).await.is_empty());
    let pruned: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT group_id, msg_seq, events FROM receipts.read_events_pruned ORDER BY 1, 2",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let keys: std::collections::BTreeSet<(String, i64)> =
        pruned.iter().map(|p| (p.0.clone(), p.1)).collect();
    assert_eq!(keys, messages, "each pruned message is remembered");
    assert_eq!(
        crate::details::lake_events(dir.path()),
        recorded,
        "the lake keeps them"
    );

    // Their readers grow: without the tombstones, each would be due again.
    sim.advance(3);
    let grown: Vec<&(String, i64)> = messages
        .iter()
        .filter(|(g, seq)| {
            let now = sim.read_list(g, *seq as u64).unwrap_or_default().len();
            now > recorded.iter().filter(|e| e.0 == *g && e.1 == *seq).count()
        })
        .collect();
    assert!(!grown.is_empty(), "some pruned message gained readers");
    let out = run(exporter().arg("run"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let again: Vec<(String, i64)> = sqlx::query_as(
        "SELECT DISTINCT e.group_id, e.msg_seq FROM receipts.read_events e
         JOIN receipts.read_events_pruned t USING (group_id, msg_seq)",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(
        again.is_empty(),
        "members of pruned messages recorded again: {again:?}"
    );
    let due: i64 = sqlx::query_scalar(
        "SELECT (details->'read_lists'->>'due')::bigint FROM receipts.export_runs
         WHERE run_id = (SELECT max(run_id) FROM receipts.export_runs)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let unpruned_with_readers = (1..group.next_msg_seq)
        .filter(|seq| !messages.contains(&(group.group_id.clone(), *seq as i64)))
        .filter(|seq| {
            sim.read_list(&group.group_id, *seq)
                .is_some_and(|l| !l.is_empty())
        })
        .count() as i64;
    assert!(
        due <= unpruned_with_readers,
        "due {due}: only messages never pruned"
    );
    sim.shutdown().await;
}
