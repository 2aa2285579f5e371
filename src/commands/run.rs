//! `receipt-exporter run`: one export, as cron or a systemd timer starts it.

use crate::cli::RunArgs;
use crate::exit::Exit;
use crate::run::ledger::RunKind;
use crate::run::{self, RunRequest};
use crate::settings::Settings;
use tokio_util::sync::CancellationToken;

pub async fn run(settings: &Settings, args: RunArgs) -> anyhow::Result<Exit> {
    if args.dry_run {
        return dry_run(settings).await;
    }
    settings.require_api()?;
    let pool = super::connect_migrated(settings).await?;
    let request = RunRequest {
        job: "default".into(),
        kind: RunKind::Manual,
        selection: Default::default(),
    };
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
async fn dry_run(settings: &Settings) -> anyhow::Result<Exit> {
    let pool = super::connect_migrated(settings).await?;
    let plan = run::load_plan(&pool, &Default::default()).await?;
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
