//! Section 3, Parquet sink: the exporter's `RunParquet` (write batches in, a committed file out:
//! Arrow columns built from the rows, ZSTD, footer, fsync, rename) against the parquet
//! crate alone writing the same rows from ready Arrow batches with the same properties (and
//! an fsync too). One thread, alternating rounds; the file is read back and checked.

use crate::pg::make_batches;
use crate::report::{thousands, Report, Samples};
use crate::Opts;
use arrow::array::{
    ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use receipt_exporter::sink::parquet::{arrow_schema, read_rows, RunParquet, ROW_GROUP_ROWS};
use receipt_exporter::sink::WriteBatch;
use std::sync::Arc;
use std::time::Instant;

/// The writer's target, rows per second on one core.
const TARGET: f64 = 4_000_000.0;

pub fn bench(opts: &Opts, report: &mut Report) -> anyhow::Result<()> {
    let rounds = if opts.quick { 3 } else { 5 };
    let total = 1_000_000;
    println!(
        "\n== 3. Parquet sink: {} rows in batches of 20,000, against the parquet crate alone, {rounds} rounds ==",
        thousands(total as f64)
    );
    let today = chrono::Utc::now().date_naive();
    let batches = make_batches(7, today, total);
    let ready: Vec<RecordBatch> = batches.iter().map(record_batch).collect();
    let dir = tempfile::tempdir()?;
    let (mut ours, mut alone, mut ratio, mut read) = (
        Samples::default(),
        Samples::default(),
        Samples::default(),
        Samples::default(),
    );
    let (mut ours_bytes, mut alone_bytes) = (0, 0);
    for round in 1..=rounds {
        let root = dir.path().join(format!("round-{round}"));
        let t = Instant::now();
        let mut run = RunParquet::new(&root, 7, 1);
        // The Parquet writer does its work synchronously: its futures are ready at once.
        for b in &batches {
            futures::executor::block_on(run.append(b))?;
        }
        let files = futures::executor::block_on(run.finish())?
            .into_iter()
            .map(|mut f| f.rename_into_place().map(|_| f.into_committed()))
            .collect::<Result<Vec<_>, _>>()?;
        let o = total as f64 / t.elapsed().as_secs_f64();
        ours_bytes = files.iter().map(|f| f.byte_size).sum::<u64>();

        let path = root.join("alone.parquet");
        let t = Instant::now();
        let file = std::fs::File::create(&path)?;
        let mut writer = ArrowWriter::try_new(file, arrow_schema(), Some(properties()))?;
        for b in &ready {
            writer.write(b)?;
        }
        writer.into_inner()?.sync_all()?;
        let a = total as f64 / t.elapsed().as_secs_f64();
        alone_bytes = std::fs::metadata(&path)?.len();

        let t = Instant::now();
        let rows = read_rows(&root.join(&files[0].relative_path))?;
        read.push(rows.len() as f64 / t.elapsed().as_secs_f64());
        anyhow::ensure!(
            rows.len() == total,
            "read back {} rows of {total}",
            rows.len()
        );
        let seqs: i64 = rows.iter().map(|r| r.msg_seq).sum();
        let want: i64 = batches
            .iter()
            .flat_map(|b| &b.rows)
            .map(|r| r.msg_seq)
            .sum();
        anyhow::ensure!(seqs == want, "read back other rows than were written");
        println!(
            "  round {round}: RunParquet {} rows/s, parquet alone {} rows/s, ratio {:.2}",
            thousands(o),
            thousands(a),
            o / a
        );
        ours.push(o);
        alone.push(a);
        ratio.push(o / a);
        std::fs::remove_dir_all(&root)?;
    }
    report.target(
        "parquet: RunParquet rows/s (one core)",
        ours.show(0),
        ours.median() >= TARGET,
        "(target >= 4,000,000)",
    );
    report.figure("parquet: parquet crate alone rows/s", alone.show(0));
    report.figure("parquet: RunParquet / parquet alone", ratio.show(2));
    report.figure(
        "parquet: bytes/row (RunParquet, alone)",
        format!(
            "{:.2}, {:.2}",
            ours_bytes as f64 / total as f64,
            alone_bytes as f64 / total as f64
        ),
    );
    report.figure("parquet: read back (read_rows) rows/s", read.show(0));
    Ok(())
}

/// The properties the sink writes with (see `sink::parquet`), metadata aside.
fn properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build()
}

/// The batch's rows as the sink's Arrow columns, built before the clock starts.
fn record_batch(batch: &WriteBatch) -> RecordBatch {
    let rows = &batch.rows;
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(vec![batch.run_id; rows.len()])),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(
                rows.iter().map(|r| r.captured_at.timestamp_micros()),
            )
            .with_timezone("UTC"),
        ),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| &*r.group_id),
        )),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.msg_seq))),
        Arc::new(Int32Array::from_iter_values(
            rows.iter().map(|r| r.read_num),
        )),
        Arc::new(Int32Array::from_iter_values(
            rows.iter().map(|r| r.unread_num),
        )),
    ];
    RecordBatch::try_new(arrow_schema(), columns).expect("columns built to the schema")
}
