//! `receipt-exporter backfill`: pull older seqs once, as one resumable run, with progress on
//! stderr (a bar on a terminal, periodic log lines otherwise).

use crate::cli::BackfillArgs;
use crate::exit::{self, Exit};
use crate::ops::alert::{self, Alert};
use crate::run::backfill::{self, store, Backfill, Request, Started};
use crate::run::ledger::RunKind;
use crate::run::{self, RunRequest, Selection};
use crate::settings::Settings;
use sqlx::PgPool;
use std::io::IsTerminal;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How often progress is read from Postgres (the committed seqs are the progress).
const POLL: Duration = Duration::from_millis(500);
/// How often a progress line is logged when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(10);

pub async fn run(settings: &Settings, args: BackfillArgs) -> anyhow::Result<Exit> {
    let request = Request::new(args.all, &args.groups, &args.seqs).map_err(exit::usage)?;
    let rate = parse_rate(args.rate.as_deref())?;
    let request = request.for_app(settings.require_app_id()?, !settings.is_default_app());
    if args.dry_run {
        return dry_run(settings, &request, rate).await;
    }
    settings.require_api()?;
    let pool = super::connect_migrated(settings).await?;
    let backfill = Backfill::new(request.clone(), rate);
    let started = backfill.started.clone();
    let req = RunRequest {
        job: request.job(),
        kind: RunKind::Backfill,
        selection: Selection::Backfill(backfill),
        follow: Default::default(),
    };
    let done = CancellationToken::new();
    let progress = tokio::spawn(show_progress(pool.clone(), started.clone(), done.clone()));
    let report = run::execute(settings, &pool, &req, super::run::stop_on_signal()).await;
    done.cancel();
    let _ = progress.await;
    let report = match report {
        Ok(report) => report,
        Err(e) => {
            alert::notify(
                settings,
                Alert::not_started(&req.job, &settings.app_name, &e),
            )
            .await;
            return Err(e);
        }
    };
    let summary = report.summary(settings);
    super::run::log_outcome(&report, &summary);
    alert::notify(settings, Alert::for_run(&report, settings)).await;
    // Each failed group was logged once, when it failed; the ledger lists them all.
    if let Some(s) = started.get() {
        tracing::info!(
            "backfill run {} attempt {}: {} seqs in all, {} were done before this attempt",
            s.run_id,
            s.attempt,
            s.total_seqs,
            s.done_seqs
        );
    }
    super::emit_summary(&summary);
    Ok(crate::exit::for_run(&report))
}

/// `--rate N`: 1..10000 calls per second.
fn parse_rate(raw: Option<&str>) -> anyhow::Result<Option<u32>> {
    let Some(raw) = raw else { return Ok(None) };
    match raw.trim().parse::<u32>() {
        Ok(n) if (1..=10_000).contains(&n) => Ok(Some(n)),
        _ => Err(exit::usage(format!(
            "backfill: --rate '{raw}' is not a rate: expected calls per second, 1..10000"
        ))),
    }
}

/// Prints what the backfill covers, what is left of it if it was started before, and how
/// long that takes at this process's rate; touches nothing.
async fn dry_run(
    settings: &Settings,
    request: &Request,
    rate: Option<u32>,
) -> anyhow::Result<Exit> {
    let pool = super::connect_migrated(settings).await?;
    let plan = backfill::whole_plan(&pool, request).await?;
    let pace = rate.unwrap_or(settings.rate_limit).min(settings.rate_limit);
    let whole = crate::plan::estimate(&plan, settings.batch_size, pace);
    let mut line = format!(
        "dry run: backfill {} covers {} groups, {} seqs, {} API calls at {} seqs per call, about {} at {} calls/s",
        request.job(),
        whole.groups,
        whole.seqs,
        whole.calls,
        settings.batch_size,
        round(whole.duration),
        pace
    );
    if let Some((run_id, status, run_date)) = existing(&pool, request).await? {
        let done = store::done_ranges(&pool, run_id, run_date).await?;
        let left =
            crate::plan::estimate(&backfill::subtract(&plan, &done), settings.batch_size, pace);
        line.push_str(&format!(
            "; run {run_id} ({status}) started it: {} seqs left, {} calls, about {}",
            left.seqs,
            left.calls,
            round(left.duration)
        ));
    }
    println!("{line}; nothing was written");
    Ok(Exit::Success)
}

async fn existing(
    pool: &PgPool,
    request: &Request,
) -> anyhow::Result<Option<(i64, String, chrono::NaiveDate)>> {
    let Some((run_id, status, _)) = store::existing(pool, &request.hash()).await? else {
        return Ok(None);
    };
    let run_date = crate::run::ledger::run_date(pool, run_id).await?;
    Ok(Some((run_id, status, run_date)))
}

fn round(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(Duration::from_secs(d.as_secs_f64().ceil() as u64))
}

/// Shows the committed seqs against the backfill's size until `done`: a bar with rate and
/// ETA on a terminal, a log line every [`LOG_EVERY`] otherwise.
async fn show_progress(pool: PgPool, started: Arc<OnceLock<Started>>, done: CancellationToken) {
    let s = loop {
        if let Some(s) = started.get() {
            break *s;
        }
        tokio::select! {
            _ = done.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    };
    let bar = std::io::stderr().is_terminal().then(|| new_bar(&s));
    let since = Instant::now();
    let mut logged = Instant::now();
    loop {
        tokio::select! {
            _ = done.cancelled() => break,
            _ = tokio::time::sleep(POLL) => {}
        }
        let Ok(committed) = store::committed_seqs(&pool, s.run_id).await else {
            continue;
        };
        let committed = (committed as u64).min(s.total_seqs);
        match &bar {
            Some(bar) => bar.set_position(committed),
            None if logged.elapsed() >= LOG_EVERY => {
                logged = Instant::now();
                tracing::info!("{}", progress_line(&s, committed, since.elapsed()));
            }
            None => {}
        }
    }
    if let Some(bar) = bar {
        super::progress::hide();
        bar.finish_and_clear();
    }
}

/// The bar starts at what earlier attempts committed; its rate and ETA are this attempt's
/// (seqs committed since the bar appeared over the time since), never indicatif's estimate,
/// which counted the resumed position as if pulled in the first instant.
fn new_bar(s: &Started) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(s.total_seqs);
    let start = s.done_seqs;
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{wide_bar}] {pos}/{len} seqs  {attempt_rate}  ETA {attempt_eta}",
        )
        .expect("a valid template")
        .with_key(
            "attempt_rate",
            move |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{}", super::progress::rate(attempt_rate(state, start)));
            },
        )
        .with_key(
            "attempt_eta",
            move |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let rate = attempt_rate(state, start);
                let left = state.len().unwrap_or(0).saturating_sub(state.pos()) as f64;
                let _ = match rate > 0.0 {
                    true => write!(w, "{}", round(Duration::from_secs_f64(left / rate))),
                    false => write!(w, "unknown"),
                };
            },
        )
        .progress_chars("=> "),
    );
    bar.set_message(format!("backfill run {}", s.run_id));
    bar.set_position(start);
    super::progress::show(&bar);
    bar
}

/// Seqs per second this attempt: committed since the bar appeared (at `start`) over the time
/// since.
fn attempt_rate(state: &indicatif::ProgressState, start: u64) -> f64 {
    rate_since(state.pos(), start, state.elapsed())
}

/// Seqs per second from position `start` to `pos` in `elapsed`.
fn rate_since(pos: u64, start: u64, elapsed: Duration) -> f64 {
    super::progress::per_second(pos.saturating_sub(start), elapsed)
}

/// A progress line: committed of total, this attempt's rate and the time left at that rate.
fn progress_line(s: &Started, committed: u64, elapsed: Duration) -> String {
    let rate = super::progress::per_second(committed.saturating_sub(s.done_seqs), elapsed);
    let left = s.total_seqs.saturating_sub(committed) as f64;
    let eta = if rate > 0.0 {
        round(Duration::from_secs_f64(left / rate)).to_string()
    } else {
        "unknown".to_string()
    };
    format!(
        "backfill run {}: {committed} of {} seqs ({:.1}%), {rate:.0} seqs/s, ETA {eta}",
        s.run_id,
        s.total_seqs,
        100.0 * committed as f64 / (s.total_seqs.max(1) as f64)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_give_rate_and_eta_of_this_attempt() {
        let s = Started {
            run_id: 7,
            total_seqs: 1000,
            done_seqs: 200,
            attempt: 2,
        };
        assert_eq!(
            progress_line(&s, 400, Duration::from_secs(2)),
            "backfill run 7: 400 of 1000 seqs (40.0%), 100 seqs/s, ETA 6s"
        );
        assert!(progress_line(&s, 200, Duration::from_secs(2)).ends_with("ETA unknown"));
    }

    #[test]
    fn a_resumed_bar_counts_only_what_this_attempt_committed() {
        // The bar: 982,081,594 seqs/s from a resumed position counted as pulled at once.
        let rate = rate_since(982_081_694, 982_081_594, Duration::from_secs(2));
        assert_eq!(rate, 50.0);
        assert_eq!(rate_since(10, 20, Duration::from_secs(1)), 0.0);
    }

    #[test]
    fn rates_are_checked() {
        assert_eq!(parse_rate(None).unwrap(), None);
        assert_eq!(parse_rate(Some("50")).unwrap(), Some(50));
        for bad in ["0", "10001", "fast", "-3"] {
            let e = parse_rate(Some(bad)).unwrap_err().to_string();
            assert!(e.contains("--rate") && e.contains(bad), "{e}");
        }
    }
}
