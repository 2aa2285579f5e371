//! `receipt-exporter retention --keep-months N [--keep-codes N] [--dry-run]`: drops the months
//! of snapshots the lake holds whole, under the warehouse lock (no rebuild or repair changes
//! the manifest meanwhile), and prunes old item codes. Refuses, naming the runs, when a month
//! holds a run that is not wholly in the lake: then nothing changes. Read events go with the
//! months, once the lake's read-events files hold them (else the same refusal).

use crate::cli::RetentionArgs;
use crate::exit::Exit;
use crate::ops::retention::{self, Plan};
use crate::settings::Settings;
use crate::sink::{Access, LakeTarget};

pub async fn run(settings: &Settings, args: RetentionArgs) -> anyhow::Result<Exit> {
    let pool = super::connect_migrated(settings).await?;
    // Retention counts on the lake: only this database's, the one it records.
    let access = match args.dry_run {
        true => Access::Read,
        false => Access::Write,
    };
    let target = LakeTarget::open(&pool, &settings.lake, settings.table_format, access).await?;
    let lock = super::warehouse_lock(settings).await?;
    let outcome = apply(&pool, &target, &args).await;
    lock.release().await;
    outcome
}

async fn apply(
    pool: &sqlx::PgPool,
    target: &LakeTarget,
    args: &RetentionArgs,
) -> anyhow::Result<Exit> {
    let mut plan = retention::plan(pool, args.keep_months, args.keep_codes).await?;
    retention::check_lake(pool, target, &mut plan).await?;
    describe(&plan);
    if !plan.lake_lacks.is_empty() {
        println!(
            "the lake ({target}) lacks what the manifest says it holds of the runs that would leave Postgres:"
        );
        for line in &plan.lake_lacks {
            println!("  {line}");
        }
    }
    if !plan.allowed() {
        let fix = match plan.lake_lacks.is_empty() {
            true => "a run of the job repairs a dead run; `lake verify --repair` a listed file",
            false => "`receipt-exporter lake verify --repair` writes the lost files' rows to the lake again from Postgres",
        };
        println!(
            "refused: nothing dropped or pruned; write those runs' rows to the lake first ({fix})"
        );
        return Ok(Exit::Failed);
    }
    if args.dry_run {
        println!("dry run: nothing changed");
        return Ok(Exit::Success);
    }
    let done = retention::apply(pool, &plan).await?;
    let rows: i64 = done.months.iter().map(|(_, r)| r).sum();
    println!(
        "dropped {} month(s) before {} ({rows} rows; their runs are listed in receipts.retired_runs, \
         their files stay in the lake); pruned {} item code(s); removed {} read event(s) of {} \
         message(s) (remembered in receipts.read_events_pruned; their files stay in the lake)",
        done.months.len(),
        plan.cutoff,
        done.codes,
        done.events,
        done.event_messages
    );
    Ok(Exit::Success)
}

fn describe(plan: &Plan) {
    if plan.months.is_empty() {
        println!("no month of snapshots before {} in Postgres", plan.cutoff);
    }
    for month in &plan.months {
        let blocking: Vec<String> = month
            .blocking()
            .map(|r| {
                format!(
                    "run {} ({}, {} rows in Postgres, {} in the lake)",
                    r.run_id, r.status, r.pg_rows, r.lake_rows
                )
            })
            .collect();
        let label = month.start.format("%Y-%m");
        if blocking.is_empty() && !plan.lake_lacks.is_empty() {
            println!(
                "{label}: {} run(s), {} rows, all in the lake by the manifest, but the lake lacks files of them (below): keep",
                month.runs.len(),
                month.rows()
            );
        } else if blocking.is_empty() {
            println!(
                "{label}: {} run(s), {} rows, all in the lake: drop",
                month.runs.len(),
                month.rows()
            );
        } else {
            println!(
                "{label}: not every run is in the lake: {}",
                blocking.join(", ")
            );
        }
    }
    println!(
        "item codes of runs before {}: {} beyond each seq's newest {}: prune",
        plan.cutoff, plan.codes, plan.keep_codes
    );
    describe_events(plan);
    if plan.default_rows > 0 {
        println!(
            "the DEFAULT partition holds {} rows of runs before {}: retention leaves them",
            plan.default_rows, plan.cutoff
        );
    }
}

/// The read events' lines: what would go, or the runs whose events the lake does not hold.
fn describe_events(plan: &Plan) {
    let blocking: Vec<String> = plan
        .events_blocking()
        .map(|r| {
            format!(
                "run {} ({}, {} read events in Postgres, {} in the lake)",
                r.run_id, r.status, r.pg_events, r.lake_events
            )
        })
        .collect();
    if !blocking.is_empty() {
        println!(
            "read events before {}: not every run is in the lake: {}",
            plan.cutoff,
            blocking.join(", ")
        );
    } else {
        println!(
            "read events of {} message(s) all first seen before {}: {} event(s), all in the lake: \
             remove (their read lists are never pulled again)",
            plan.event_messages,
            plan.cutoff,
            plan.events()
        );
    }
}
