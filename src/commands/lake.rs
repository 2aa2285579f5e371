//! `receipt-exporter lake verify [--repair]`: the lake's files against the manifest, and with
//! `--repair` the missing or damaged ones rewritten from Postgres under the warehouse lock.
//! `receipt-exporter lake move --from RECORDED --to LOCATION [--to-format F]`: another lake
//! recorded as this database's, on purpose.

use crate::cli::{LakeCommand, LakeMoveArgs, LakeVerifyArgs};
use crate::exit::Exit;
use crate::ops::lake::{self, Report};
use crate::settings::{Settings, TableFormat};
use crate::sink::{Access, LakeTarget};

pub async fn run(settings: &Settings, cmd: LakeCommand) -> anyhow::Result<Exit> {
    match cmd {
        LakeCommand::Verify(args) => verify(settings, args).await,
        LakeCommand::Move(args) => move_lake(settings, args).await,
    }
}

/// `lake move --from RECORDED --to LOCATION [--to-format F]`: the one deliberate way to change
/// the lake this database records.
async fn move_lake(settings: &Settings, args: LakeMoveArgs) -> anyhow::Result<Exit> {
    let location = |flag: &str, value: &str| {
        crate::lake::parse_location(value)
            .map_err(|e| crate::exit::usage(format!("lake move: {flag}: {e}")))
    };
    let from = location("--from", &args.from)?.normalized();
    let to = location("--to", &args.to)?;
    let to_format = match args.to_format.as_deref() {
        None => None,
        Some(raw) => Some(TableFormat::parse(raw).ok_or_else(|| {
            crate::exit::usage(format!(
                "lake move: --to-format: invalid value '{raw}': expected parquet or iceberg"
            ))
        })?),
    };
    let to = to.open(settings.lake_timeout).map_err(crate::exit::usage)?;
    let pool = super::connect_migrated(settings).await?;
    let format = match to_format {
        Some(format) => format,
        None => match crate::sink::identity::recorded(&pool).await? {
            Some(recorded) => recorded.format,
            None => settings.table_format,
        },
    };
    let (old, new) = LakeTarget::relocate(&pool, &from, &to, format).await?;
    println!("this database's lake is now {new} (was {old}); no file was moved");
    println!(
        "give every process of this database EXPORT_PARQUET_DIR={} and EXPORT_TABLE_FORMAT={}: \
         others are refused (exit 2)",
        new.location,
        new.format.as_str()
    );
    Ok(Exit::Success)
}

async fn verify(settings: &Settings, args: LakeVerifyArgs) -> anyhow::Result<Exit> {
    let pool = super::connect_migrated(settings).await?;
    // Another database's lake is not this manifest's to judge or repair; a lake no database
    // claimed yet becomes this one's with --repair.
    let access = match args.repair {
        true => Access::Write,
        false => Access::Read,
    };
    let target = LakeTarget::open(&pool, &settings.lake, settings.table_format, access).await?;
    // Under the warehouse lock: no rebuild or repair changes the manifest while it is read.
    let lock = super::warehouse_lock(settings).await?;
    let outcome = async {
        let report = lake::verify(&pool, &target).await?;
        describe(&report);
        let repairable = !report.findings.is_empty()
            || !report.stray_uploads.is_empty()
            || !report.dropped.is_empty();
        if !args.repair || !repairable {
            return anyhow::Ok(report);
        }
        let done = lake::repair(&pool, &target, &report).await?;
        describe_repair(&done);
        let after = lake::verify(&pool, &target).await?;
        println!("after the repair:");
        describe(&after);
        Ok(after)
    }
    .await;
    lock.release().await;
    let report = outcome?;
    record(&pool, &report).await;
    Ok(if report.is_clean() {
        Exit::Success
    } else {
        Exit::Failed
    })
}

/// Records how the lake came out (after the repair, with `--repair`), for the metrics and the
/// alert on a lake that no longer matches its manifest.
async fn record(pool: &sqlx::PgPool, report: &Report) {
    let problems: Vec<String> = report
        .findings
        .iter()
        .map(|f| format!("{}: {}", f.file.path, f.problem))
        .chain(
            report
                .unknown
                .iter()
                .map(|p| format!("not in the manifest: {p}")),
        )
        .chain(
            report
                .stray_uploads
                .iter()
                .map(|k| format!("left-over upload: {k}")),
        )
        .chain(report.runs.iter().map(run_line))
        .chain(report.dropped.iter().map(|t| dropped_line(*t)))
        .collect();
    let detail = (!problems.is_empty()).then(|| {
        let shown: Vec<&str> = problems.iter().take(5).map(String::as_str).collect();
        shown.join("; ")
    });
    crate::ops::checks::record_or_warn(
        pool,
        crate::ops::checks::LAKE_VERIFY,
        report.is_clean(),
        problems.len(),
        detail.as_deref(),
    )
    .await;
}

/// What `--repair` did, one line per day, run or upload.
fn describe_repair(done: &lake::Repaired) {
    if done.uploads_removed > 0 {
        println!(
            "repaired: {} left-over upload(s) deleted from _pending/",
            done.uploads_removed
        );
    }
    for (day, rows) in &done.days {
        println!("repaired: capture date {day} rewritten from Postgres ({rows} rows)");
    }
    for (path, run_id, rows) in &done.replaced {
        println!(
            "repaired: {path} (run {run_id}, {rows} rows) replaced in the Iceberg table by its rows \
             written again from Postgres, in one overwrite commit"
        );
    }
    for line in &done.not_repaired {
        println!("not repaired: {line}");
    }
    for (day, runs) in &done.gone {
        let runs: Vec<String> = runs.iter().map(i64::to_string).collect();
        println!(
            "gone for good: capture date {day}: retention removed runs {} from Postgres; \
             their rows are only in the lake's files, which cannot be rewritten",
            runs.join(", ")
        );
    }
    for run_id in &done.read_event_runs {
        println!("repaired: the read-events files of run {run_id} rewritten from Postgres");
    }
    for path in &done.progress_files {
        println!("repaired: {path} rewritten from Postgres (the read-progress change log)");
    }
    if let Some(files) = done.progress_recreated {
        println!(
            "repaired: the Iceberg table receipts.message_read_progress created again, every change \
             row Postgres keeps committed to it ({files} data file(s))"
        );
    }
    for run_id in &done.events_gone {
        println!(
            "gone for good: the read-events files of run {run_id}: retention removed some of \
             its read events from Postgres; only the lake's files hold them, which cannot be \
             rewritten"
        );
    }
    for run_id in &done.skipped_running {
        println!("not repaired: run {run_id} is still running; it writes its read-events files");
    }
}

/// A run whose rows in an Iceberg table's live files differ from the manifest's count.
fn run_line(r: &lake::RunRows) -> String {
    let table = match r.table {
        lake::Table::Snapshots => "the Iceberg table",
        _ => "the Iceberg table receipts.message_read_progress",
    };
    let listed = match r.table {
        lake::Table::Snapshots => "the manifest lists",
        _ => "the change log committed",
    };
    format!(
        "run {}: {} rows in {table}'s live files, {listed} {}",
        r.run_id, r.in_table, r.listed
    )
}

/// An Iceberg table the catalog lost though files were committed to it.
fn dropped_line(table: lake::Table) -> String {
    let fix = match table {
        lake::Table::Progress => "--repair creates it again from the change rows Postgres keeps",
        _ => "`receipt-exporter run` says how to register its last metadata file again",
    };
    format!(
        "the Iceberg table {} is not in the catalog (receipts.iceberg_tables), though files were \
         committed to it: dropped by another engine or by hand ({fix})",
        table.iceberg_name()
    )
}

fn describe(report: &Report) {
    for f in &report.findings {
        println!("{f}");
    }
    for r in &report.runs {
        println!("{}", run_line(r));
    }
    for t in &report.dropped {
        println!("{}", dropped_line(*t));
    }
    for key in &report.stray_uploads {
        println!("left-over upload, in no manifest row: {key} (readers never see it; --repair deletes it)");
    }
    for path in &report.unknown {
        println!("not in the manifest: {path} (readers count its rows too: move it out of the lake if it should not be there)");
    }
    println!(
        "lake: {} listed file(s) checked, {} problem(s), {} file(s) the manifest does not know",
        report.listed,
        report.findings.len() + report.runs.len() + report.dropped.len(),
        report.unknown.len()
    );
}
