//! Section 7, Iceberg mode. (a) The writer: the same rows as section 3 through `RunIceberg`
//! (iceberg-rust's Parquet writer with the table's field ids, column statistics for the
//! manifest, one data file under the table's `data/`), against `RunParquet` (section 3's writer,
//! renamed into place) in the same process, alternating rounds. (b) Whole runs of the release
//! binary as in section 4, `EXPORT_TABLE_FORMAT=iceberg` (table creation, the writer, the
//! commit) alternating with `parquet`, start-up included.

use crate::pg::make_batches;
use crate::report::{thousands, Report, Samples};
use crate::Opts;
use receipt_exporter::sink::iceberg::writer::RunIceberg;
use receipt_exporter::sink::iceberg::IcebergLake;
use receipt_exporter::sink::parquet::RunParquet;
use std::time::Instant;

pub async fn bench(opts: &Opts, report: &mut Report) -> anyhow::Result<()> {
    let rounds = if opts.quick { 3 } else { 5 };
    let total = 1_000_000;
    println!(
        "\n== 7. Iceberg writer: {} rows in batches of 20,000, against RunParquet, {rounds} rounds ==",
        thousands(total as f64)
    );
    let today = chrono::Utc::now().date_naive();
    let batches = make_batches(7, today, total);
    let dir = tempfile::tempdir()?;
    // The writer records each data file as pending under its run's fence (one row per file).
    let db = crate::db::BenchDb::create(&opts.admin_url).await?;
    let (run_id, _) = db.open_run().await?;
    let fence = receipt_exporter::sink::Fence { run_id, epoch: 1 };
    let (mut ice, mut pq, mut ratio) = (Samples::default(), Samples::default(), Samples::default());
    let (mut ice_bytes, mut pq_bytes) = (0, 0);
    for round in 1..=rounds {
        let root = dir.path().join(format!("round-{round}"));
        let lake = IcebergLake::new(&receipt_exporter::lake::Lake::Local(root.join("lake")))?;
        let (location, metadata) = lake.first_metadata()?;
        let table = lake.table(location.to_string(), metadata)?;
        let t = Instant::now();
        let mut writer = RunIceberg::new(lake, table, db.pool.clone(), fence, round)?;
        for b in &batches {
            anyhow::ensure!(writer.append(b).await?.is_empty(), "one file per run");
        }
        let files = writer.finish().await?;
        let i = total as f64 / t.elapsed().as_secs_f64();
        anyhow::ensure!(
            files.iter().map(|f| f.info.row_count).sum::<u64>() == total as u64,
            "the data file holds every row"
        );
        ice_bytes = files.iter().map(|f| f.info.byte_size).sum::<u64>();

        let t = Instant::now();
        let mut run = RunParquet::new(root.join("parquet"), 7, 1);
        for b in &batches {
            run.append(b).await?;
        }
        for mut f in run.finish().await? {
            f.rename_into_place()?;
            pq_bytes = f.info().byte_size;
        }
        let p = total as f64 / t.elapsed().as_secs_f64();
        println!(
            "  round {round}: RunIceberg {} rows/s, RunParquet {} rows/s, ratio {:.2}",
            thousands(i),
            thousands(p),
            i / p
        );
        ice.push(i);
        pq.push(p);
        ratio.push(i / p);
        std::fs::remove_dir_all(&root)?;
    }
    whole_runs(opts, report).await?;
    report.figure("iceberg: RunIceberg rows/s", ice.show(0));
    report.figure("iceberg: RunParquet rows/s (same rounds)", pq.show(0));
    report.figure("iceberg: RunIceberg / RunParquet", ratio.show(2));
    report.figure(
        "iceberg: bytes/row (RunIceberg, RunParquet)",
        format!(
            "{:.2}, {:.2}",
            ice_bytes as f64 / total as f64,
            pq_bytes as f64 / total as f64
        ),
    );
    Ok(())
}

/// Whole runs, Iceberg and Parquet mode alternately, each in a database of its own.
async fn whole_runs(opts: &Opts, report: &mut Report) -> anyhow::Result<()> {
    let (receipts, rounds) = if opts.quick {
        (200_000, 2)
    } else {
        (1_000_000, 3)
    };
    let groups = receipts / crate::whole::SEQS_PER_GROUP;
    let (mut ice, mut pq, mut ratio, mut rss) = Default::default();
    for round in 1..=rounds {
        let format = |f: &str| [("EXPORT_TABLE_FORMAT".to_string(), f.to_string())];
        let i = crate::whole::whole_run_into(opts, groups, &format("iceberg")).await?;
        let p = crate::whole::whole_run_into(opts, groups, &format("parquet")).await?;
        println!(
            "  whole run of {} receipts, round {round}: iceberg {:.2}s ({:.1} MB), parquet {:.2}s ({:.1} MB)",
            thousands(receipts as f64),
            i.wall_s,
            i.rss_mb,
            p.wall_s,
            p.rss_mb
        );
        let (ice, pq, ratio, rss): (&mut Samples, &mut Samples, &mut Samples, &mut Samples) =
            (&mut ice, &mut pq, &mut ratio, &mut rss);
        ice.push(i.wall_s);
        pq.push(p.wall_s);
        ratio.push(i.wall_s / p.wall_s);
        rss.push(i.rss_mb);
    }
    let label = format!("iceberg: whole run {}", thousands(receipts as f64));
    report.figure(format!("{label}, Iceberg mode wall s"), ice.show(2));
    report.figure(format!("{label}, Parquet mode wall s"), pq.show(2));
    report.figure(format!("{label}, Iceberg / Parquet wall"), ratio.show(2));
    report.figure(format!("{label}, Iceberg mode peak RSS MB"), rss.show(1));
    Ok(())
}
