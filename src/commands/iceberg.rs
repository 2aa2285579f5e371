//! `receipt-exporter iceberg maintain`: expire old snapshots, remove orphan files, in the
//! snapshots' table and the read progress's.

use crate::cli::{IcebergCommand, IcebergMaintainArgs};
use crate::exit::Exit;
use crate::ops::iceberg::{self, MaintainOptions};
use crate::settings::{Settings, TableFormat};
use crate::sink::{Access, LakeTarget};

pub async fn run(settings: &Settings, cmd: IcebergCommand) -> anyhow::Result<Exit> {
    match cmd {
        IcebergCommand::Maintain(args) => maintain(settings, args).await,
    }
}

async fn maintain(settings: &Settings, args: IcebergMaintainArgs) -> anyhow::Result<Exit> {
    if settings.table_format != TableFormat::Iceberg {
        return Err(crate::exit::usage(
            "iceberg maintain works on the Iceberg table: set --table-format iceberg / EXPORT_TABLE_FORMAT=iceberg (and the lake in --parquet-dir) as the runs do",
        ));
    }
    // A lake Iceberg cannot use (gs://, az://) is refused before any connection.
    crate::sink::iceberg::IcebergLake::new(&settings.lake)?;
    let pool = super::connect_migrated(settings).await?;
    let opts = MaintainOptions {
        expire_older_than: args.expire_older_than,
        retain_last: args.retain_last as usize,
        orphan_min_age: args.orphan_min_age,
        dry_run: args.dry_run,
    };
    // Only this database's lake, as recorded: another database's files are never its orphans.
    let access = match args.dry_run {
        true => Access::Read,
        false => Access::Write,
    };
    let target = LakeTarget::open(&pool, &settings.lake, settings.table_format, access).await?;
    let table = target.iceberg().expect("Iceberg mode, checked above");
    if !table.listed {
        println!(
            "iceberg: the catalog has no table yet: nothing to maintain (the first run creates it)"
        );
        return Ok(Exit::Success);
    }
    let report = iceberg::maintain(&pool, &table.lake, &opts).await?;
    print_report("iceberg", &report, &args);
    // The read progress's table, once a run created it, the same way.
    let progress = table.lake.with_table(crate::sink::iceberg::progress::TABLE);
    let mut conn = pool.acquire().await?;
    let listed = progress.load(&mut conn, false).await?.is_some();
    drop(conn);
    if listed {
        let report = iceberg::maintain(&pool, &progress, &opts).await?;
        print_report("iceberg receipts.message_read_progress", &report, &args);
    }
    Ok(Exit::Success)
}

/// What `maintain` did to one table, its orphans a line each, then one summary line.
fn print_report(table: &str, report: &iceberg::MaintainReport, args: &IcebergMaintainArgs) {
    let (expired, removed) = if args.dry_run {
        ("would expire", "would remove")
    } else {
        ("expired", "removed")
    };
    for path in &report.orphans {
        println!("{removed} orphan file: {path}");
    }
    println!(
        "{table}: {} of {} snapshot(s) {expired}; {} orphan file(s) {removed}; {} unreferenced file(s) younger than {} left; {} file(s) of runs still writing left; {} live data file(s)",
        report.snapshots_expired,
        report.snapshots_before,
        report.orphans.len(),
        report.young_unreferenced,
        humantime::format_duration(args.orphan_min_age),
        report.run_files,
        report.data_files,
    );
}
