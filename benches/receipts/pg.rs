//! Section 2, Postgres sink: the exporter's `write_batch` (batches of 20,000 rows, each claimed in
//! `write_batches`, snapshots by binary COPY, `receipt_latest` brought forward) against
//! `psql \copy` of the same rows as CSV into the same table. The two alternate, each into
//! freshly truncated tables after a CHECKPOINT; the ratio is taken within each round. Then the
//! size of a row: the same messages snapshotted by three runs (as in the measurement:
//! 588,657 rows of 196,000 messages), the snapshot partitions' total size (table and indexes)
//! over the row count.

use crate::db::BenchDb;
use crate::report::{thousands, Report, Samples};
use crate::Opts;
use anyhow::Context;
use chrono::{DateTime, NaiveDate, SubsecRound, Utc};
use receipt_exporter::sink::postgres::{write_batch, WriteOutcome};
use receipt_exporter::sink::{SnapshotRow, WriteBatch};
use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

/// Rows per write batch, as `run::pipeline` cuts them.
const BATCH_ROWS: usize = 20_000;
const SEQS_PER_GROUP: usize = 500;

pub async fn bench(opts: &Opts, report: &mut Report) -> anyhow::Result<()> {
    let (total, rounds) = if opts.quick {
        (200_000, 2)
    } else {
        (1_000_000, 3)
    };
    println!(
        "\n== 2. Postgres sink: {} rows in batches of {}, against psql \\copy, {rounds} rounds ==",
        thousands(total as f64),
        thousands(BATCH_ROWS as f64)
    );
    let db = BenchDb::create(&opts.admin_url).await?;
    let (run_id, run_date) = db.open_run().await?;
    // A new run's row holds epoch 1: its writer's fence.
    let fence = receipt_exporter::sink::Fence { run_id, epoch: 1 };
    let batches = make_batches(run_id, run_date, total);
    let dir = tempfile::tempdir()?;
    let csv = dir.path().join("snapshots.csv");
    let keys = group_keys(&db, &batches).await?;
    write_csv(&csv, &batches, &keys)?;
    let (mut ours, mut copy, mut ratio) =
        (Samples::default(), Samples::default(), Samples::default());
    for round in 1..=rounds {
        reset(&db).await?;
        let t = Instant::now();
        for batch in &batches {
            let outcome = write_batch(&db.pool, fence, batch).await?;
            anyhow::ensure!(
                matches!(outcome, WriteOutcome::Written { .. }),
                "batch {} not written",
                batch.batch_no
            );
        }
        let ours_s = t.elapsed().as_secs_f64();
        // A retried batch is a no-op: checked, not timed.
        let again = write_batch(&db.pool, fence, &batches[0]).await?;
        anyhow::ensure!(
            again == WriteOutcome::AlreadyCommitted,
            "a retried batch wrote again"
        );
        check_count(&db, total).await?;
        reset(&db).await?;
        let copy_s = psql_copy(&db, &csv)?;
        check_count(&db, total).await?;
        let (o, c) = (total as f64 / ours_s, total as f64 / copy_s);
        println!(
            "  round {round}: write_batch {:.2}s ({} rows/s), \\copy {:.2}s ({} rows/s), ratio {:.2}",
            ours_s,
            thousands(o),
            copy_s,
            thousands(c),
            o / c
        );
        ours.push(o);
        copy.push(c);
        ratio.push(o / c);
    }
    let per_row = bytes_per_row(&db, &batches).await?;
    println!(
        "  bytes per snapshot row, 3 runs over the same messages, indexes included: {per_row:.1}"
    );
    report.target(
        "pg: bytes per snapshot row (3 runs, indexes included)",
        format!("{per_row:.1}"),
        per_row <= 100.0,
        "(target <= 100)",
    );
    report.figure(
        "pg: write_batch rows/s (snapshots + receipt_latest)",
        ours.show(0),
    );
    report.figure("pg: psql \\copy rows/s", copy.show(0));
    report.target(
        "pg: write_batch / \\copy",
        ratio.show(3),
        ratio.median() >= 0.5,
        "(target >= 0.5)",
    );
    db.drop_db().await
}

/// Empty sink tables, and no dirty buffers of the previous round left to flush.
async fn reset(db: &BenchDb) -> anyhow::Result<()> {
    sqlx::query(
        "TRUNCATE receipts.receipt_snapshot_rows, receipts.receipt_latest, receipts.write_batches",
    )
    .execute(&db.pool)
    .await?;
    sqlx::query("CHECKPOINT").execute(&db.pool).await?;
    Ok(())
}

async fn check_count(db: &BenchDb, total: usize) -> anyhow::Result<()> {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM receipts.receipt_snapshots")
        .fetch_one(&db.pool)
        .await?;
    anyhow::ensure!(
        n as usize == total,
        "{n} rows in the table, {total} written"
    );
    Ok(())
}

/// `total` rows shaped like real ones: groups of 500 seqs, one capture instant per 500-row
/// API answer, read counts scattered over the group's members (so compression is not
/// flattered), cut into write batches of 20,000 rows.
pub fn make_batches(run_id: i64, run_date: NaiveDate, total: usize) -> Vec<WriteBatch> {
    let start: DateTime<Utc> = Utc::now().trunc_subsecs(6);
    let groups: Vec<Arc<str>> = (1..=total.div_ceil(SEQS_PER_GROUP))
        .map(|n| Arc::from(format!("@TGS#sim1-{n}")))
        .collect();
    let rows = (0..total).map(|i| {
        let group = i / SEQS_PER_GROUP;
        let members = 5 + (mix(group as u64) % 196) as i32;
        let read = (mix(i as u64) % (members as u64 + 1)) as i32;
        SnapshotRow {
            // Answers arrive about 100 us apart, as at 10,000 calls/s.
            captured_at: start + chrono::Duration::microseconds(group as i64 * 97),
            group_id: groups[group].clone(),
            msg_seq: (i % SEQS_PER_GROUP) as i64 + 1,
            read_num: read,
            unread_num: members - read,
        }
    });
    let mut batches = Vec::new();
    let mut rows = rows.peekable();
    while rows.peek().is_some() {
        batches.push(WriteBatch {
            run_id,
            run_date,
            batch_no: batches.len() as i32 + 1,
            sdkappid: Some(1_400_000_000),
            capture_date: start.date_naive(),
            rows: rows.by_ref().take(BATCH_ROWS).collect(),
            codes: Vec::new(),
        });
    }
    batches
}

/// A cheap hash (splitmix64's finalizer): reproducible scatter without a random generator.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Gives every group of the batches its key in `snapshot_groups` (as the first run that sees a
/// group does), and returns them, for the CSV the `\copy` loads.
async fn group_keys(
    db: &BenchDb,
    batches: &[WriteBatch],
) -> anyhow::Result<std::collections::HashMap<Arc<str>, i32>> {
    let mut ids: Vec<&str> = batches
        .iter()
        .flat_map(|b| b.rows.iter().map(|r| &*r.group_id))
        .collect();
    ids.dedup();
    sqlx::query(
        "INSERT INTO receipts.snapshot_groups (group_id) SELECT DISTINCT UNNEST($1::text[])
         ON CONFLICT DO NOTHING",
    )
    .bind(&ids)
    .execute(&db.pool)
    .await?;
    let keys: Vec<(String, i32)> =
        sqlx::query_as("SELECT group_id, group_key FROM receipts.snapshot_groups")
            .fetch_all(&db.pool)
            .await?;
    Ok(keys.into_iter().map(|(g, k)| (Arc::from(g), k)).collect())
}

/// Writes the batches' messages under three runs into emptied tables, then returns the
/// partitions' total relation size (heap, indexes, TOAST, free space map) over the rows.
async fn bytes_per_row(db: &BenchDb, batches: &[WriteBatch]) -> anyhow::Result<f64> {
    reset(db).await?;
    for _ in 0..3 {
        let (run_id, run_date) = db.open_run().await?;
        let fence = receipt_exporter::sink::Fence { run_id, epoch: 1 };
        for batch in batches {
            let batch = WriteBatch {
                run_id,
                run_date,
                ..batch.clone()
            };
            write_batch(&db.pool, fence, &batch).await?;
        }
    }
    sqlx::query("VACUUM ANALYZE receipts.receipt_snapshot_rows")
        .execute(&db.pool)
        .await?;
    let (bytes, rows): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT sum(pg_total_relation_size(relid))::bigint
                 FROM pg_partition_tree('receipts.receipt_snapshot_rows')),
                (SELECT count(*) FROM receipts.receipt_snapshot_rows)",
    )
    .fetch_one(&db.pool)
    .await?;
    anyhow::ensure!(rows > 0, "no rows written");
    Ok(bytes as f64 / rows as f64)
}

/// The same rows as CSV, in the table's column order.
fn write_csv(
    path: &std::path::Path,
    batches: &[WriteBatch],
    keys: &std::collections::HashMap<Arc<str>, i32>,
) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for b in batches {
        for r in &b.rows {
            writeln!(
                out,
                "{},{},{},{},{},{},{},{}",
                b.run_id,
                b.run_date,
                b.batch_no,
                r.captured_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                keys[&r.group_id],
                r.msg_seq,
                r.read_num,
                r.unread_num
            )?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Seconds `psql \copy` takes to load the CSV (its start-up and connection included).
fn psql_copy(db: &BenchDb, csv: &std::path::Path) -> anyhow::Result<f64> {
    let command = format!(
        "\\copy receipts.receipt_snapshot_rows (run_id, run_date, batch_no, captured_at, group_key, \
         msg_seq, read_num, unread_num) FROM '{}' WITH (FORMAT csv)",
        csv.display()
    );
    let t = Instant::now();
    let out = std::process::Command::new("psql")
        .args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            &db.url,
            "-c",
            &command,
        ])
        .output()
        .context("running psql (is it installed?)")?;
    let secs = t.elapsed().as_secs_f64();
    anyhow::ensure!(
        out.status.success(),
        "psql \\copy failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(secs)
}
