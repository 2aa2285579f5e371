//! The read-progress table (`receipts.message_read_progress`): what every write batch merges
//! into it against a hand-made series with known answers and against an independent SQL query
//! over the snapshots, exactly once across retries, kills and out-of-order backfills; and
//! `progress rebuild`, which keeps the rows retention cut.

use crate::helpers::*;
use chrono::{DateTime, NaiveDate, Utc};
use receipt_exporter::sink::postgres::{write_batch, WriteOutcome};
use receipt_exporter::sink::{progress, Fence, SnapshotRow, WriteBatch};
use sqlx::PgPool;
use std::sync::Arc;

/// One progress row: group, seq, first seen, members then, ratio, half read, 90% read.
type Progress = (
    String,
    i64,
    DateTime<Utc>,
    i32,
    Option<f64>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
);

/// The table as stored.
async fn stored(pool: &PgPool) -> Vec<Progress> {
    sqlx::query_as(
        "SELECT group_id, msg_seq, first_seen_at, members_at_first_seen, read_ratio,
                half_read_at, ninety_read_at
         FROM receipts.message_read_progress ORDER BY group_id COLLATE \"C\", msg_seq",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// The same columns computed from the snapshots by a query of its own (DISTINCT ON and
/// filtered minimums, not the merge's statement): what the table must equal.
async fn from_snapshots(pool: &PgPool) -> Vec<Progress> {
    sqlx::query_as(
        "WITH s AS (SELECT * FROM receipts.receipt_snapshots),
         first AS (
             SELECT DISTINCT ON (group_id, msg_seq) group_id, msg_seq, captured_at,
                    read_num + unread_num AS members
             FROM s ORDER BY group_id, msg_seq, captured_at),
         newest AS (
             SELECT DISTINCT ON (group_id, msg_seq) group_id, msg_seq,
                    CASE WHEN read_num + unread_num > 0
                         THEN read_num::float8 / (read_num + unread_num) END AS ratio
             FROM s ORDER BY group_id, msg_seq, captured_at DESC),
         half AS (
             SELECT group_id, msg_seq, min(captured_at) AS at FROM s
             WHERE read_num + unread_num > 0 AND read_num >= unread_num
             GROUP BY group_id, msg_seq),
         ninety AS (
             SELECT group_id, msg_seq, min(captured_at) AS at FROM s
             WHERE read_num + unread_num > 0 AND read_num >= 9 * unread_num
             GROUP BY group_id, msg_seq)
         SELECT f.group_id, f.msg_seq, f.captured_at, f.members, n.ratio, h.at, t.at
         FROM first f
         JOIN newest n USING (group_id, msg_seq)
         LEFT JOIN half h USING (group_id, msg_seq)
         LEFT JOIN ninety t USING (group_id, msg_seq)
         ORDER BY f.group_id COLLATE \"C\", f.msg_seq",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

const DAY: &str = "2026-11-25";

fn day() -> NaiveDate {
    DAY.parse().unwrap()
}

/// Minute `m` of the test's day.
fn at(m: u32) -> DateTime<Utc> {
    day().and_hms_opt(m / 60, m % 60, 0).unwrap().and_utc()
}

async fn new_run(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO receipts.export_runs (job, kind, status, host, pid, run_date)
         VALUES ('test', 'manual', 'running', 'host', 1, $1) RETURNING run_id",
    )
    .bind(day())
    .fetch_one(pool)
    .await
    .unwrap()
}

/// A snapshot of the hand-made series: group, seq, read, unread.
type Row = (&'static str, i64, i32, i32);

/// A batch of rows captured at minute `minute`.
fn batch(run_id: i64, batch_no: i32, minute: u32, rows: &[Row]) -> WriteBatch {
    WriteBatch {
        run_id,
        run_date: day(),
        batch_no,
        sdkappid: Some(1_400_000_000),
        capture_date: day(),
        rows: rows
            .iter()
            .map(|&(g, s, r, u)| SnapshotRow {
                captured_at: at(minute),
                group_id: Arc::from(g),
                msg_seq: s,
                read_num: r,
                unread_num: u,
            })
            .collect(),
        codes: vec![],
    }
}

async fn write(pool: &PgPool, b: &WriteBatch) -> WriteOutcome {
    write_batch(
        pool,
        Fence {
            run_id: b.run_id,
            epoch: 1,
        },
        b,
    )
    .await
    .unwrap()
}

/// The hand-made series: each batch is one capture of several messages.
///   g/1  10 members: 2/8 at 0, 5/5 at 10 (half), 8/2 at 20, 9/1 at 30 (90%), 10/0 at 40
///   g/2  never half: 1/9 at 0, 3/7 at 10 -> ratio 0.3
///   g/3  no member could read it (0/0): no ratio, never half
///   g/4  already past 90% when first seen: 19/1 at 10, both thresholds then
///   h/1  newest capture first (run 1, 6/4 at 30), then a backfill of older ones (run 2: 1/9
///        at 0, 5/5 at 20): first seen at 0 with 10 members, half at 20, ratio stays 0.6
async fn hand_made(pool: &PgPool) -> (i64, i64) {
    let run = new_run(pool).await;
    let series: [(u32, &[Row]); 5] = [
        (0, &[("g", 1, 2, 8), ("g", 2, 1, 9), ("g", 3, 0, 0)]),
        (10, &[("g", 1, 5, 5), ("g", 2, 3, 7), ("g", 4, 19, 1)]),
        (20, &[("g", 1, 8, 2)]),
        (30, &[("g", 1, 9, 1), ("h", 1, 6, 4)]),
        (40, &[("g", 1, 10, 0)]),
    ];
    for (no, (minute, rows)) in series.into_iter().enumerate() {
        let b = batch(run, no as i32 + 1, minute, rows);
        assert!(matches!(
            write(pool, &b).await,
            WriteOutcome::Written { .. }
        ));
    }
    let backfill = new_run(pool).await;
    write(pool, &batch(backfill, 1, 20, &[("h", 1, 5, 5)])).await;
    write(pool, &batch(backfill, 2, 0, &[("h", 1, 1, 9)])).await;
    (run, backfill)
}

#[tokio::test]
async fn the_progress_of_a_hand_made_series_is_known_and_equals_the_snapshots_query() {
    let db = TestDb::new().await;
    let (run, backfill) = hand_made(&db.pool).await;
    let want: Vec<Progress> = vec![
        (
            "g".into(),
            1,
            at(0),
            10,
            Some(1.0),
            Some(at(10)),
            Some(at(30)),
        ),
        ("g".into(), 2, at(0), 10, Some(0.3), None, None),
        ("g".into(), 3, at(0), 0, None, None, None),
        (
            "g".into(),
            4,
            at(10),
            20,
            Some(0.95),
            Some(at(10)),
            Some(at(10)),
        ),
        ("h".into(), 1, at(0), 10, Some(0.6), Some(at(20)), None),
    ];
    assert_eq!(stored(&db.pool).await, want);
    assert_eq!(from_snapshots(&db.pool).await, want);

    // The run that last changed each row: g/1 moved in every batch of run 1, h/1 in the
    // backfill (its first sighting and its half); g/3 never changed after its first batch.
    let changed_by: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT group_id, msg_seq, run_id FROM receipts.message_read_progress
         ORDER BY group_id, msg_seq",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let runs: Vec<i64> = changed_by.iter().map(|r| r.2).collect();
    assert_eq!(runs, vec![run, run, run, run, backfill]);
}

#[tokio::test]
async fn a_retried_or_repeated_batch_changes_nothing() {
    let db = TestDb::new().await;
    let (run, _) = hand_made(&db.pool).await;
    let before = stored(&db.pool).await;
    // The same batch number again (a retry after a lost COMMIT): a no-op.
    let again = batch(
        run,
        2,
        10,
        &[("g", 1, 5, 5), ("g", 2, 3, 7), ("g", 4, 19, 1)],
    );
    assert_eq!(
        write(&db.pool, &again).await,
        WriteOutcome::AlreadyCommitted
    );
    assert_eq!(stored(&db.pool).await, before);
    // And the merge itself, applied again to snapshots it has seen, changes no row.
    let mut tx = db.pool.begin().await.unwrap();
    for b in [again, batch(run, 9, 0, &[("g", 1, 2, 8), ("g", 3, 0, 0)])] {
        assert_eq!(progress::merge(&mut tx, &b).await.unwrap(), 0, "{b:?}");
    }
    tx.commit().await.unwrap();
    assert_eq!(stored(&db.pool).await, before);
}

#[tokio::test]
async fn each_app_has_its_own_row_for_the_same_group_and_seq() {
    let db = TestDb::new().await;
    let run = new_run(&db.pool).await;
    write(&db.pool, &batch(run, 1, 0, &[("g", 1, 1, 1)])).await;
    let other = new_run(&db.pool).await;
    let mut of_b = batch(other, 1, 5, &[("g", 1, 2, 0), ("g", 2, 1, 1)]);
    of_b.sdkappid = Some(1_400_000_123);
    write(&db.pool, &of_b).await;
    let apps: Vec<(Option<i64>, i64, Option<f64>)> = sqlx::query_as(
        "SELECT sdkappid, msg_seq, read_ratio FROM receipts.message_read_progress
         ORDER BY sdkappid, msg_seq",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    // Group ids are the apps' own: g/1 of one app and g/1 of the other are two messages, each
    // with its own ratio from its own app's latest snapshot.
    assert_eq!(
        apps,
        vec![
            (Some(1_400_000_000), 1, Some(0.5)),
            (Some(1_400_000_123), 1, Some(1.0)),
            (Some(1_400_000_123), 2, Some(0.5)),
        ]
    );
}

/// Three runs against the simulator, the read counts moving between them; the second is
/// killed at `point`. The table equals the snapshots' query and names the app.
async fn runs_with_a_kill(point: &str) {
    use std::os::unix::process::ExitStatusExt;
    let sim = simulator(3, 200, |_| {});
    let db = TestDb::new().await;
    track_all(&db, &group_ids(&sim), 200).await;
    let lake = tempfile::tempdir().unwrap();
    let exporter = || {
        let mut cmd = exporter_for(&db, &sim.base_url(), lake.path());
        // 60 calls at 50/s: more than a second, so a run commits several write batches.
        cmd.env("EXPORT_BATCH_SIZE", "10")
            .env("EXPORT_CONCURRENCY", "4")
            .env("EXPORT_RATE_LIMIT", "50");
        cmd
    };
    assert_eq!(run(exporter().arg("run")).status.code(), Some(0));
    sim.advance(1);
    let killed = run(exporter()
        .env(receipt_exporter::crashpoint::ENV, point)
        .arg("run"));
    assert_eq!(killed.status.signal(), Some(9), "killed at {point}");
    let mid = stored(&db.pool).await;
    assert_eq!(mid, from_snapshots(&db.pool).await, "after the kill");
    sim.advance(1);
    let last = run(exporter().arg("run"));
    assert_eq!(last.status.code(), Some(0), "{}", stderr(&last));
    let rows = stored(&db.pool).await;
    let messages: i64 = sqlx::query_scalar("SELECT count(*) FROM receipts.receipt_latest")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(rows.len() > 300, "{} rows", rows.len());
    assert_eq!(
        rows.len() as i64,
        messages,
        "every message with a receipt has its row"
    );
    assert_eq!(rows, from_snapshots(&db.pool).await, "after the next run");
    assert!(
        rows.iter().any(|r| r.5.is_some()) && rows.iter().any(|r| r.5.is_none()),
        "the simulator's series reach half read for some messages, not all"
    );
    let apps: Vec<Option<i64>> =
        sqlx::query_scalar("SELECT DISTINCT sdkappid FROM receipts.message_read_progress")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(apps, vec![Some(SDKAPPID as i64)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_is_exactly_once_when_a_run_is_killed_in_a_postgres_write() {
    runs_with_a_kill("pg_write:2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_is_exactly_once_when_a_run_is_killed_between_the_sinks() {
    runs_with_a_kill("between_sinks:2").await;
}

/// `progress rebuild` through the binary: its line.
fn rebuild(db: &TestDb) -> String {
    let out = run(exporter()
        .env("DATABASE_URL", &db.url)
        .args(["progress", "rebuild"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    stdout(&out)
}

#[tokio::test]
async fn rebuild_recomputes_from_the_snapshots_and_keeps_what_retention_cut() {
    let db = TestDb::new().await;
    hand_made(&db.pool).await;
    let good = stored(&db.pool).await;
    // The definition "changed": two rows no longer what the snapshots give.
    sqlx::raw_sql(&format!(
        "UPDATE receipts.message_read_progress
         SET members_at_first_seen = 99, half_read_at = NULL WHERE group_id = 'g' AND msg_seq = 1;
         UPDATE receipts.message_read_progress
         SET half_read_at = '{}' WHERE group_id = 'g' AND msg_seq = 2;",
        at(5).to_rfc3339()
    ))
    .execute(&db.pool)
    .await
    .unwrap();
    // Retention cut h/1's series (its first two captures) and all of g/4's.
    sqlx::raw_sql(
        "DELETE FROM receipts.receipt_snapshot_rows s USING receipts.snapshot_groups g
         WHERE g.group_key = s.group_key
           AND ((g.group_id = 'h' AND s.msg_seq = 1 AND s.captured_at < '2026-11-25T00:30:00Z')
                OR (g.group_id = 'g' AND s.msg_seq = 4))",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    assert_ne!(stored(&db.pool).await, good);

    let line = rebuild(&db);
    assert!(
        line.contains("2 rows changed; kept 2 rows as they were"),
        "{line}"
    );
    assert_eq!(
        stored(&db.pool).await,
        good,
        "recomputed, and the cut rows kept"
    );
    let line = rebuild(&db);
    assert!(line.contains(": 0 rows changed; kept 2 rows"), "{line}");
    assert_eq!(stored(&db.pool).await, good);
}

/// The README's query over the daily view, as printed there.
fn readme_daily_query() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split("### Read progress")
        .nth(1)
        .expect("the README has a section on read progress");
    let block = section.split("```sql\n").nth(1).expect("with a SQL block");
    block.split("```").next().unwrap().to_string()
}

#[tokio::test]
async fn the_daily_view_sums_up_groups_and_the_readme_query_runs() {
    let db = TestDb::new().await;
    hand_made(&db.pool).await;
    type Daily = (String, NaiveDate, i64, f64, f64, i64, i64);
    let daily: Vec<Daily> = sqlx::query_as(
        "SELECT group_id, day, messages, avg_members, avg_read_ratio, half_read, ninety_read
         FROM receipts.message_read_progress_daily ORDER BY group_id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    // g: 4 messages of 10, 10, 0 and 20 members; ratios 1.0, 0.3, (none), 0.95.
    assert_eq!(daily[0].0, "g");
    assert_eq!((daily[0].1, daily[0].2), (day(), 4));
    assert!((daily[0].3 - 10.0).abs() < 1e-9, "{daily:?}");
    assert!((daily[0].4 - 2.25 / 3.0).abs() < 1e-9, "{daily:?}");
    assert_eq!((daily[0].5, daily[0].6), (2, 2));
    assert_eq!((daily[1].0.as_str(), daily[1].5, daily[1].6), ("h", 1, 0));
    let median: (sqlx::postgres::types::PgInterval,) = sqlx::query_as(
        "SELECT median_time_to_half FROM receipts.message_read_progress_daily
         WHERE group_id = 'h'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        median.0.microseconds,
        20 * 60 * 1_000_000,
        "h/1: half 20 min after first seen"
    );

    // The README's query runs; the README's day filter is relative to today, so the test's day
    // (2026-11-25) is moved into it.
    let query = readme_daily_query().replace("current_date - 7", "'2026-11-18'");
    let rows: Vec<(String, i64, f64)> = sqlx::query_as(&format!(
        "SELECT group_id, messages::int8, read_ratio FROM ({}) q ORDER BY read_ratio",
        query.trim().trim_end_matches(';')
    ))
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(rows[0].0, "h", "h reads least: {rows:?}");
    assert_eq!(rows.len(), 2);
}

/// A database with snapshots from before the table existed: the migration fills it from them.
#[tokio::test]
async fn the_migration_fills_the_table_from_the_snapshots_taken_before_it() {
    const PROGRESS: i64 = 20261206000800;
    let db = TestDb::empty().await;
    migrate_before(&db, PROGRESS).await;
    // Three runs a day apart over 7 groups x 400 messages, read counts growing run by run.
    sqlx::raw_sql(
        "INSERT INTO receipts.export_runs (job, kind, status, host, pid, run_date)
         SELECT 'j', 'manual', 'succeeded', 'h', 0, d
         FROM unnest(ARRAY['2026-11-01', '2026-11-02', '2026-11-03']::date[]) d;
         INSERT INTO receipts.snapshot_groups (group_id)
         SELECT 'g-' || k FROM generate_series(0, 6) k;
         INSERT INTO receipts.receipt_snapshot_rows
             (captured_at, msg_seq, run_id, run_date, group_key, batch_no, read_num, unread_num)
         SELECT r.run_date + make_interval(secs => i), i, r.run_id, r.run_date, g.group_key, 1,
                least(20, (i % 13) * r.run_id::int), 20 - least(20, (i % 13) * r.run_id::int)
         FROM receipts.export_runs r, receipts.snapshot_groups g, generate_series(1, 400) i;",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    receipt_exporter::db::migrate(&db.pool).await.unwrap();
    let rows = stored(&db.pool).await;
    assert_eq!(rows.len(), 7 * 400);
    assert_eq!(rows, from_snapshots(&db.pool).await);
    let reached: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM receipts.message_read_progress
         WHERE half_read_at > first_seen_at AND ninety_read_at > half_read_at",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(
        reached > 0,
        "some messages passed each threshold at a later run"
    );
}
