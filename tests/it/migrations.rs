use crate::helpers::{migrate_before, TestDb};

#[tokio::test]
async fn migrations_apply_from_empty_and_then_apply_nothing() {
    let db = TestDb::empty().await;
    let first = receipt_exporter::db::migrate(&db.pool).await.unwrap();
    assert!(!first.is_empty(), "an empty database gets every migration");
    let second = receipt_exporter::db::migrate(&db.pool).await.unwrap();
    assert!(
        second.is_empty(),
        "a second migrate applies nothing, got {second:?}"
    );
    let outside: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(outside, 0, "every object lives in the schema receipts");
}

/// Issue 17: the smaller snapshot row. Rows written under the old table (group ids as text, a
/// month without its own partition in the DEFAULT one) come through the migration unchanged
/// behind the view of the same name.
#[tokio::test]
async fn the_smaller_row_migration_keeps_every_snapshot_and_the_view_reads_as_before() {
    const SMALLER_ROW: i64 = 20261204000017;
    let db = TestDb::empty().await;
    // The migrations before it, recorded in the ledger as `migrate` records them.
    migrate_before(&db, SMALLER_ROW).await;
    sqlx::raw_sql(
        "INSERT INTO receipts.export_runs (job, kind, status, host, pid, run_date)
         SELECT 'j', 'manual', 'succeeded', 'h', 0, d
         FROM unnest(ARRAY['2019-03-05', '2019-03-20', '2026-11-29']::date[]) d;
         INSERT INTO receipts.receipt_snapshots
         SELECT r.run_id, r.run_date, 1 + i / 100, r.run_date + make_interval(secs => i),
                'g-' || (i % 7) || E'\\\\\\'ü', i, i % 13, 20 - i % 13
         FROM receipts.export_runs r, generate_series(1, 3000) i;",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let all =
        "SELECT run_id, run_date, batch_no, captured_at, group_id, msg_seq, read_num, unread_num
               FROM receipts.receipt_snapshots ORDER BY run_id, group_id, msg_seq";
    type Row = (
        i64,
        chrono::NaiveDate,
        i32,
        chrono::DateTime<chrono::Utc>,
        String,
        i64,
        i32,
        i32,
    );
    let before: Vec<Row> = sqlx::query_as(all).fetch_all(&db.pool).await.unwrap();
    assert_eq!(before.len(), 9000);

    let applied = receipt_exporter::db::migrate(&db.pool).await.unwrap();
    assert!(!applied.is_empty());
    let after: Vec<Row> = sqlx::query_as(all).fetch_all(&db.pool).await.unwrap();
    assert_eq!(after, before, "every row, every column, through the view");
    let groups: i64 = sqlx::query_scalar("SELECT count(*) FROM receipts.snapshot_groups")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(groups, 7, "one key per group id");
    let in_default: i64 =
        sqlx::query_scalar("SELECT count(*) FROM receipts.receipt_snapshot_rows_default")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(in_default, 0, "the old months got partitions of their own");
    // The views built on the time series read it as before.
    let growth: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM receipts.receipt_growth WHERE read_delta IS NOT NULL",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        growth, 6000,
        "two later snapshots of each of 3,000 messages"
    );
}
