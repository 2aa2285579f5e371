//! `receipt-exporter run`: one export, as cron or a systemd timer starts it.

use crate::cli::RunArgs;
use crate::exit::Exit;
use crate::run;
use crate::run::ledger::RunKind;
use crate::settings::Settings;
use tokio_util::sync::CancellationToken;

pub async fn run(settings: &Settings, args: RunArgs) -> anyhow::Result<Exit> {
    let kind = if args.scheduled {
        RunKind::Scheduled
    } else {
        RunKind::Manual
    };
    // `--job`: the job file's name, groups and rate share; without it the job `default`.
    let (request, job_settings) = super::jobs::run_request(settings, args.job.as_deref(), kind)?;
    let settings = &job_settings;
    if args.dry_run {
        return dry_run(settings, &request.selection).await;
    }
    settings.require_api()?;
    let pool = super::connect_migrated(settings).await?;
    let stop = stop_on_signal();
    let outcome = run::execute(settings, &pool, &request, stop).await;
    crate::ops::metrics::publish(settings, &pool, &[&request.job]).await;
    let report = outcome?;
    for (group, class, error) in &report.failed_groups {
        tracing::warn!(group_id = %group, class = %class, "{error}");
    }
    super::emit_summary(&report.summary(&settings.parquet_dir));
    Ok(report.exit)
}

/// Prints the plan and touches nothing.
async fn dry_run(settings: &Settings, selection: &run::Selection) -> anyhow::Result<Exit> {
    let pool = super::connect_migrated(settings).await?;
    let plan = run::load_plan(&pool, selection).await?;
    let (plan, refused) = crate::plan::refuse_oversized(plan, settings.max_seqs_per_group);
    for (group_id, why) in &refused {
        println!("{group_id}  {why}");
    }
    let e = crate::plan::estimate(&plan, settings.batch_size, settings.rate_limit);
    for g in &plan {
        let windows: Vec<String> = g.ranges.iter().map(|w| w.to_string()).collect();
        println!(
            "{}  {} seqs  {} calls  [{}]",
            g.group_id,
            g.seq_count(),
            g.calls(settings.batch_size),
            windows.join(",")
        );
    }
    println!(
        "dry run: {} groups, {} seqs, {} API calls at {} seqs per call, about {} at {} calls/s; nothing was written",
        e.groups,
        e.seqs,
        e.calls,
        settings.batch_size,
        humantime::format_duration(std::time::Duration::from_secs(e.duration.as_secs_f64().ceil() as u64)),
        settings.rate_limit
    );
    Ok(Exit::Success)
}

/// A token cancelled by the first SIGTERM or SIGINT: the run stops new calls, writes what it
/// received and ends `interrupted`.
pub fn stop_on_signal() -> CancellationToken {
    let stop = CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::warn!("SIGTERM: stopping new API calls, writing what was received"),
            _ = int.recv() => tracing::warn!("SIGINT: stopping new API calls, writing what was received"),
        }
        token.cancel();
    });
    stop
}
