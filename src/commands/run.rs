//! `receipt-exporter run`: one export, as cron or a systemd timer starts it.

use crate::cli::RunArgs;
use crate::exit::Exit;
use crate::ops::alert::{self, Alert};
use crate::run;
use crate::run::ledger::{RunKind, RunStatus};
use crate::schedule::job::Job;
use crate::settings::Settings;
use tokio_util::sync::CancellationToken;

pub async fn run(settings: &Settings, args: RunArgs) -> anyhow::Result<Exit> {
    let kind = if args.scheduled {
        RunKind::Scheduled
    } else {
        RunKind::Manual
    };
    // `--job`: the job file's name, groups and rate share; without it the job `default`.
    let (mut request, job_settings, job) =
        match super::jobs::run_request(settings, args.job.as_deref(), kind) {
            Ok(found) => found,
            Err(e) if !args.dry_run => {
                let job = args.job.as_deref().unwrap_or("default");
                alert::notify(settings, Alert::not_started(job, &settings.app_name, &e)).await;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
    if args.include_settled {
        request.follow = request.follow.including_settled();
    }
    let settings = &job_settings;
    if args.dry_run {
        return dry_run(settings, &request).await;
    }
    match export(settings, &request, job.as_ref()).await {
        Ok(exit) => Ok(exit),
        Err(e) => {
            alert::notify(
                settings,
                Alert::not_started(&request.job, &job_settings.app_name, &e),
            )
            .await;
            Err(e)
        }
    }
}

/// One run to its end: the metrics file checked and the endpoint bound before anything else
/// (exit 2 when they cannot be used), then the run, its metrics, retention after a scheduled
/// run, the log line, the alert and the summary. An error is a run that could not start.
async fn export(
    settings: &Settings,
    request: &run::RunRequest,
    job: Option<&Job>,
) -> anyhow::Result<Exit> {
    settings.require_api()?;
    if let Some(path) = &settings.metrics_file {
        crate::ops::metrics::check_writable(path).map_err(crate::exit::usage)?;
    }
    let endpoint = match settings.metrics_listen {
        Some(addr) => Some(crate::ops::endpoint::Endpoint::bind(addr).await?),
        None => None,
    };
    let pool = super::connect_migrated(settings).await?;
    let serving = CancellationToken::new();
    if let Some(endpoint) = endpoint {
        endpoint.serve(super::schedule::ledger_scrape(&pool, None), serving.clone());
    }
    let stop = stop_on_signal();
    let outcome = run::execute(settings, &pool, request, stop.clone()).await;
    crate::ops::metrics::publish(settings, &pool, &[&request.job]).await;
    serving.cancel();
    let report = outcome?;
    crate::listen::reconcile::record_or_warn(&pool, report.run_id).await;
    if request.kind == RunKind::Scheduled {
        if let Some(job) = job {
            job.retention_after_run(settings, &pool, report.run_id, &stop)
                .await;
        }
    }
    let summary = report.summary(settings);
    log_outcome(&report, &summary);
    alert::notify(settings, Alert::for_run(&report, settings)).await;
    // Each failed group was logged once, when it failed; the ledger lists them all.
    super::emit_summary(&summary);
    Ok(crate::exit::for_run(&report))
}

/// A failed (or fenced) run is an ERROR in the log, a partial one a WARN: what a log-based
/// alert (journald, a shipper) keys on. Any other outcome is told by the summary alone.
pub fn log_outcome(report: &run::RunReport, summary: &str) {
    let (run_id, job) = (report.run_id, report.job.as_str());
    match report.status {
        RunStatus::Failed | RunStatus::Abandoned => tracing::error!(run_id, job, "{summary}"),
        RunStatus::Partial => tracing::warn!(run_id, job, "{summary}"),
        _ => {}
    }
}

/// Prints the plan and writes nothing. Fixed windows need no API call; rolling windows need
/// each group's NextMsgSeq: one `get_group_info` call per 50 such groups when the API is
/// configured (said in the output), else they are left to be resolved at run time.
async fn dry_run(settings: &Settings, request: &run::RunRequest) -> anyhow::Result<Exit> {
    let pool = super::connect_migrated(settings).await?;
    let app = settings.require_app_id()?;
    crate::run::adopt(settings, &pool).await?;
    let plan = run::load_plan(&pool, app, &request.selection).await?;
    let (plan, refused) = crate::plan::refuse_oversized(plan, settings.max_seqs_per_group);
    for (group_id, why) in &refused {
        println!("{group_id}  {why}");
    }
    let client = match settings.require_api() {
        Ok(api) => Some(crate::ops::groups::checking_client(settings, &api)?),
        Err(_) => None,
    };
    let tags = run::selection_tags(&request.selection);
    let p = run::follow::prepare(
        &pool,
        client.as_ref(),
        &tags,
        plan,
        &refused,
        &request.follow,
        settings,
    )
    .await?;
    for f in &p.failed {
        println!("{}  failed ({}): {}", f.group_id, f.class, f.message);
    }
    print!("{}", dry_run_report(settings, request, &p, client.as_ref()));
    let bound = run::details::bound(&pool, app, &tags, &p).await?;
    if bound.groups > 0 || bound.settled_unrecorded > 0 {
        print!("{}", bound.line(settings.max_detail_calls));
    }
    if let Some(client) = &client {
        print!("{}", check_groups(client, &p).await);
    }
    Ok(Exit::Success)
}

/// Asks the API about every planned group (one `get_group_info` per 50) and says which ones
/// a run would fail on, one line each: a group that does not exist, or cannot have receipts.
async fn check_groups(client: &crate::chat::ChatClient, p: &run::follow::Prepared) -> String {
    use crate::text::count;
    let ids: Vec<String> = p.plan.iter().map(|g| g.group_id.clone()).collect();
    if ids.is_empty() {
        return String::new();
    }
    let before = client.stats().snapshot().calls;
    let infos = match client.get_group_info(&ids).await {
        Ok(infos) => infos,
        Err(e) => return format!("could not check the groups: {e}\n"),
    };
    let calls = client.stats().snapshot().calls - before;
    let mut lines = String::new();
    let mut failing = 0;
    for info in &infos {
        if let Err(problem) = crate::ops::groups::judge(info) {
            failing += 1;
            lines.push_str(&format!("{}  would fail: {problem}\n", info.group_id));
        }
    }
    let answered: std::collections::HashSet<&str> =
        infos.iter().map(|i| i.group_id.as_str()).collect();
    for id in ids.iter().filter(|id| !answered.contains(id.as_str())) {
        failing += 1;
        lines.push_str(&format!(
            "{id}  could not be checked: no valid answer about it\n"
        ));
    }
    format!(
        "checked {} with {}: {failing} would fail\n{lines}",
        count(ids.len() as u64, "group", "groups"),
        count(calls, "get_group_info call", "get_group_info calls"),
    )
}

/// The dry run's lines: one per group, then the totals and what the skips and budget save.
///
/// (Over 60 lines: the dry run's lines in the order printed: groups, totals, what skips and the budget save.)
fn dry_run_report(
    settings: &Settings,
    request: &run::RunRequest,
    p: &run::follow::Prepared,
    client: Option<&crate::chat::ChatClient>,
) -> String {
    let bs = settings.batch_size;
    let sizes = p.sizes(bs);
    let mut out = String::new();
    for (g, (_, seqs, calls)) in p.plan.iter().zip(&sizes) {
        let windows: Vec<String> = g.ranges.iter().map(|w| w.to_string()).collect();
        let (settled, none) = p.skipped.get(&g.group_id).copied().unwrap_or_default();
        out.push_str(&format!(
            "{}  {seqs} seqs  {calls} calls  [{}]  skipped {settled} settled, {none} no-receipt\n",
            g.group_id,
            windows.join(",")
        ));
    }
    let mut calls: u64 = sizes.iter().map(|s| s.2).sum();
    let seqs: u64 = sizes.iter().map(|s| s.1).sum();
    let e = crate::plan::estimate(&p.plan, bs, settings.own_rate());
    let at_rate = |calls: u64| {
        let secs = (calls as f64 / f64::from(settings.own_rate().max(1))).ceil() as u64;
        humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
    };
    if !p.rolling.is_empty() {
        let info_calls = client.map_or(0, |c| c.stats().snapshot().calls);
        out.push_str(&format!(
            "rolling windows of {} group(s) resolved with {info_calls} get_group_info call(s) (a run makes them too)\n",
            p.rolling.len()
        ));
        calls += info_calls;
    }
    if !p.unresolved.is_empty() {
        out.push_str(&format!(
            "rolling windows of {} group(s): resolved at run time (no API settings for get_group_info), not counted below\n",
            p.unresolved.len()
        ));
    }
    out.push_str(&format!(
        "dry run: {}, {}, {} at {bs} seqs per call, about {} at {} calls/s; \
         skipped {} settled and {} no-receipt seqs (without skipping: {} seqs, {} calls, about {})",
        crate::text::count(p.plan.len() as u64, "group", "groups"),
        crate::text::count(seqs, "seq", "seqs"),
        crate::text::count(calls, "API call", "API calls"),
        at_rate(calls),
        settings.own_rate(),
        p.skipped_settled,
        p.skipped_no_receipt,
        e.seqs,
        e.calls,
        at_rate(e.calls),
    ));
    if let Some(cap) = request.follow.max_calls.filter(|cap| *cap < calls) {
        out.push_str(&format!(
            "; max_calls {cap}: the run stops there, the rest goes first next run"
        ));
    }
    if let Some(d) = request.follow.max_duration {
        out.push_str(&format!("; max_duration {}", humantime::format_duration(d)));
    }
    out.push_str("; nothing was written\n");
    out
}

/// A token cancelled by the first SIGTERM or SIGINT: the run stops new calls, writes what it
/// received and ends `interrupted`.
pub fn stop_on_signal() -> CancellationToken {
    stop_on_signal_then("stopping new API calls, writing what was received")
}

/// A token cancelled by the first SIGTERM or SIGINT, logged as `SIGTERM: {then}`.
pub fn stop_on_signal_then(then: &'static str) -> CancellationToken {
    use tokio::signal::unix::{signal, SignalKind};
    let stop = CancellationToken::new();
    // Registered here, not in the task: a signal that comes right after the caller announced
    // itself (the task not yet polled on a busy host) is then caught, never the default
    // action that ends the process at once.
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return stop;
    };
    let token = stop.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::warn!("SIGTERM: {then}"),
            _ = int.recv() => tracing::warn!("SIGINT: {then}"),
        }
        token.cancel();
    });
    stop
}
