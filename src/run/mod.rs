//! The export run: plan from Postgres, pull through the client, write both sinks exactly once,
//! record everything in the ledger.
//!
//! Order of a run: settings → job lock (or exit 75) → repair after dead runs → ledger row →
//! plan → pipeline → ledger figures → lock released. Nothing here prints: the command layer
//! turns the [`RunReport`] into a summary line and an exit code.

pub mod details;
pub mod follow;
pub mod ledger;
pub mod lock;
pub mod pipeline;
pub mod repair;

use crate::chat::{ChatClient, ClientConfig};
use crate::exit::Exit;
use crate::plan::{self, GroupPlan};
use crate::settings::Settings;
use crate::tracking::SeqWindow;
use ledger::{RunFigures, RunKind, RunStatus};
use lock::JobLock;
use pipeline::{Halt, Pipeline};
use sqlx::PgPool;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How often the run checks that the session holding its lock is alive.
const LOCK_CHECK_EVERY: Duration = Duration::from_secs(2);

/// Another run of the same job holds the lock. Exits with code 75.
#[derive(Debug, thiserror::Error)]
#[error("another run of job '{job}' holds the lock: {holder}; try later")]
pub struct LockHeld {
    pub job: String,
    pub holder: String,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// The job's name: the ledger's `job`, and the key of its advisory lock.
    pub job: String,
    pub kind: RunKind,
    /// Which groups and seqs the run covers.
    pub selection: Selection,
    /// What the run may skip and spend (ignored by a backfill, which pulls everything).
    pub follow: crate::plan::FollowPolicy,
}

/// Which tracked groups a run covers.
#[derive(Debug, Clone, Default)]
pub enum Selection {
    /// Every enabled group with any of `tags` (every enabled group when `tags` is empty),
    /// with their tracked windows.
    Tracked { tags: Vec<String> },
    /// Every enabled group and its tracked windows.
    #[default]
    AllEnabled,
    /// A backfill: its own groups × windows, resumable (see [`crate::backfill`]).
    Backfill(crate::backfill::Backfill),
}

/// A run's ledger row, opened, and what it has left to pull.
#[derive(Debug)]
pub struct OpenedRun {
    pub run_id: i64,
    pub run_date: chrono::NaiveDate,
    pub plan: Vec<GroupPlan>,
    /// Write batches continue after those committed by earlier attempts.
    pub first_batch_no: i32,
    /// The figures of earlier attempts of a resumable run (a backfill): the ledger counts the
    /// whole run. `None` for ordinary runs.
    pub prior: Option<RunFigures>,
}

/// Opens the run's ledger row: a new one, or a backfill's row re-opened for another attempt.
async fn open(pool: &PgPool, req: &RunRequest, host: &str, pid: u32) -> anyhow::Result<OpenedRun> {
    if let Selection::Backfill(backfill) = &req.selection {
        return crate::backfill::open(pool, backfill, &req.job, host, pid).await;
    }
    let (run_id, run_date) = ledger::start(pool, &req.job, req.kind, host, pid).await?;
    Ok(OpenedRun {
        run_id,
        run_date,
        plan: load_plan(pool, &req.selection).await?,
        first_batch_no: 1,
        prior: None,
    })
}

/// How a run ended.
#[derive(Debug)]
pub struct RunReport {
    pub run_id: i64,
    pub job: String,
    pub status: RunStatus,
    pub exit: Exit,
    pub figures: RunFigures,
    pub error: Option<String>,
    pub elapsed: Duration,
    pub failed_groups: Vec<(String, String, String)>,
    /// What following skipped and left (`None`: a backfill).
    pub follow: Option<follow::FollowFigures>,
    /// A resumed backfill's attempt number and this attempt's own figures (`figures` count
    /// every attempt); `None` for ordinary runs and a backfill's first attempt.
    pub attempt: Option<(i32, RunFigures)>,
    /// What the read lists of details-on groups took and gave (`None`: none were due).
    pub read_lists: Option<details::DetailFigures>,
}

impl RunReport {
    /// The one line a run ends with. Its figures, rate and time are this attempt's; a resumed
    /// backfill's line says so, and adds the whole backfill's totals.
    pub fn summary(&self, parquet_dir: &std::path::Path) -> String {
        use crate::text::count;
        let f = self.attempt.as_ref().map_or(&self.figures, |(_, f)| f);
        let secs = self.elapsed.as_secs_f64();
        let groups = f.groups_ok + f.groups_failed;
        // A run stopped early (configuration, lost lock, signal) did not try every group.
        let groups = match self.status {
            RunStatus::Failed | RunStatus::Interrupted if f.groups_failed < groups => format!(
                "{} planned ({} failed before it stopped)",
                count(groups, "group", "groups"),
                f.groups_failed
            ),
            _ => format!(
                "{} ({} failed)",
                count(groups, "group", "groups"),
                f.groups_failed
            ),
        };
        let attempt = match &self.attempt {
            Some((n, _)) => format!(", attempt {n}: this attempt"),
            None => String::new(),
        };
        let mut line = format!(
            "run {} (job {}) {}{attempt}: {groups}, {}, {}, {} ({}, {} rate-limited), {:.1} calls/s, {:.2} s",
            self.run_id,
            self.job,
            self.status.as_str(),
            count(f.seqs_asked, "seq", "seqs"),
            count(f.receipts_written, "receipt", "receipts"),
            count(f.api_calls, "call", "calls"),
            count(f.retries, "retry", "retries"),
            f.rate_limited,
            f.api_calls as f64 / secs.max(1e-9),
            secs,
        );
        if self.attempt.is_some() {
            let w = &self.figures;
            line.push_str(&format!(
                "; the whole backfill: {}, {}, {}",
                count(w.seqs_asked, "seq", "seqs"),
                count(w.receipts_written, "receipt", "receipts"),
                count(w.api_calls, "call", "calls"),
            ));
        }
        line.push_str(&format!(
            ", {} in {}",
            count(f.parquet_files, "Parquet file", "Parquet files"),
            parquet_dir.display()
        ));
        if let Some(f) = &self.follow {
            line.push_str(&f.summary());
        }
        if let Some(d) = self.read_lists.as_ref().filter(|d| d.due > 0) {
            line.push_str(&d.summary());
        }
        if let Some(error) = &self.error {
            line.push_str(&format!(": {error}"));
        }
        line
    }
}

/// Reads the selected enabled groups' windows and merges them into a plan.
pub async fn load_plan(pool: &PgPool, selection: &Selection) -> anyhow::Result<Vec<GroupPlan>> {
    let tags: Vec<String> = match selection {
        Selection::Tracked { tags } => tags.clone(),
        Selection::AllEnabled => Vec::new(),
        Selection::Backfill(b) => return crate::backfill::whole_plan(pool, &b.request).await,
    };
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT g.group_id, w.from_seq, w.to_seq
         FROM receipts.tracked_groups g JOIN receipts.seq_windows w USING (group_id)
         WHERE g.enabled AND w.kind = 'fixed' AND (cardinality($1::text[]) = 0 OR g.tags && $1)",
    )
    .bind(&tags)
    .fetch_all(pool)
    .await?;
    let mut pairs = Vec::with_capacity(rows.len());
    for (group_id, from, to) in rows {
        match SeqWindow::new(from, to) {
            Ok(w) => pairs.push((group_id, w)),
            Err(e) => tracing::warn!(
                group_id,
                "skipping an invalid window written by another tool: {e}"
            ),
        }
    }
    Ok(plan::build(pairs))
}

/// Runs one export to its end. `stop` is cancelled by SIGTERM/SIGINT.
pub async fn execute(
    settings: &Settings,
    pool: &PgPool,
    req: &RunRequest,
    stop: CancellationToken,
) -> anyhow::Result<RunReport> {
    let api = settings.require_api()?;
    let options = settings.require_database()?;
    let Some(mut job_lock) = JobLock::try_acquire(options, &req.job).await? else {
        let holder = match ledger::holder(pool, &req.job).await? {
            Some(r) => format!(
                "run {} on host {} (pid {}) since {}",
                r.run_id, r.host, r.pid, r.started_at
            ),
            None => "a session that has not recorded its run yet".to_string(),
        };
        return Err(LockHeld {
            job: req.job.clone(),
            holder,
        }
        .into());
    };
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let pid = std::process::id();
    let label = format!("a run of job {} on {host} (pid {pid})", req.job);
    repair::repair(&mut job_lock, pool, &settings.parquet_dir, &label).await?;
    if let Err(e) = sqlx::query("SELECT receipts.ensure_snapshot_partitions(3)")
        .execute(pool)
        .await
    {
        tracing::warn!("could not create the coming months' snapshot partitions (rows go to the default partition): {e}");
    }

    let started = Instant::now();
    let mut opened = open(pool, req, &host, pid).await?;
    let (run_id, run_date) = (opened.run_id, opened.run_date);
    tracing::info!(run_id, job = %req.job, "run started");
    // A backfill is a deliberate large pull: the per-run cap guards scheduled runs only.
    let (plan, refused) = match req.selection {
        Selection::Backfill(_) => (std::mem::take(&mut opened.plan), Vec::new()),
        _ => plan::refuse_oversized(
            std::mem::take(&mut opened.plan),
            settings.max_seqs_per_group,
        ),
    };
    for (group_id, why) in &refused {
        tracing::warn!(group_id = %group_id, "group failed for this run: {why}");
    }

    let client = ChatClient::new(client_config(settings, &api))?;
    let lease = crate::budget::Lease::join(
        pool,
        &client,
        f64::from(settings.rate_limit),
        rate_cap(settings, req),
        &label,
    )
    .await?;
    let pipeline_stop = stop.child_token();
    let (watchdog, lock_lost) = watch_lock(job_lock, options.clone(), pipeline_stop.clone());
    let checkpoint = opened.prior.as_ref().map(|p| {
        let prior = (p.api_calls, p.seqs_asked);
        crate::backfill::checkpoint_calls(
            pool.clone(),
            run_id,
            prior,
            client.clone(),
            pipeline_stop.clone(),
        )
    });
    let pipeline = Pipeline {
        pool: pool.clone(),
        client: client.clone(),
        run_id,
        run_date,
        parquet_dir: settings.parquet_dir.clone(),
        batch_size: settings.batch_size,
        concurrency: settings.concurrency,
        stop: pipeline_stop.clone(),
        first_batch_no: opened.first_batch_no,
    };
    let (mut outcome, follow) = match &req.selection {
        Selection::Backfill(_) => (pipeline.run(plan).await, None),
        selection => {
            let ctx = follow::RunContext {
                pool,
                client: &client,
                tags: &selection_tags(selection),
                refused: &refused,
                policy: &req.follow,
                settings,
                started,
            };
            let (outcome, figures) = follow::run(pipeline, ctx, plan).await;
            (outcome, Some(figures))
        }
    };
    // Issue 19: who read the messages of details-on groups (not for backfills, nor when stopped).
    let read_lists = match (&req.selection, &outcome.halt) {
        (Selection::Backfill(_), _) | (_, Some(_)) => None,
        (selection, None) => Some(
            details::pull(
                pool,
                &client,
                settings,
                run_id,
                &selection_tags(selection),
                &pipeline_stop,
            )
            .await
            .unwrap_or_else(details::DetailFigures::failed),
        ),
    };
    outcome.groups_planned += refused.len();
    for (group_id, why) in refused {
        outcome
            .failed_groups
            .insert(group_id, ("Plan".to_string(), why));
    }
    pipeline_stop.cancel(); // ends the watchdog (and a backfill's checkpoints)
    lease.leave().await;
    let job_lock = watchdog.await.ok().flatten();
    if let Some(task) = checkpoint {
        let _ = task.await;
    }

    let lost = lock_lost.is_cancelled();
    let failed = outcome.failed_groups.len();
    let planned = outcome.groups_planned;
    let (status, exit, error) = match &outcome.halt {
        Some(Halt::Config(e)) => {
            let exit = if e.is_config() {
                Exit::Usage
            } else {
                Exit::Failed
            };
            (RunStatus::Failed, exit, Some(e.to_string()))
        }
        Some(Halt::Sink(e)) => (RunStatus::Failed, Exit::Failed, Some(format!("{e:#}"))),
        Some(Halt::Stopped) if lost => (
            RunStatus::Failed,
            Exit::Failed,
            Some("lost the Postgres session that holds the job lock: stopped pulling".to_string()),
        ),
        Some(Halt::Stopped) => (
            RunStatus::Interrupted,
            Exit::Interrupted,
            Some("interrupted by a signal".to_string()),
        ),
        None if failed == 0 => (RunStatus::Succeeded, Exit::Success, None),
        None if failed < planned => (
            RunStatus::Partial,
            Exit::Partial,
            Some(format!("{failed} of {planned} groups failed")),
        ),
        None => (
            RunStatus::Failed,
            Exit::Failed,
            Some(format!("all {planned} groups failed")),
        ),
    };
    let detail_failed = read_lists.as_ref().map_or(0, |d| d.failed_groups.len());
    let (status, exit, error) = match status {
        RunStatus::Succeeded if detail_failed > 0 => (
            RunStatus::Partial,
            Exit::Partial,
            Some(format!(
                "the read lists of {detail_failed} group(s) failed (their counts are written)"
            )),
        ),
        _ => (status, exit, error),
    };
    let mut figures = figures(&client, &outcome, planned);
    if let Some(d) = &read_lists {
        figures.details["read_lists"] = serde_json::json!(d);
    }
    let mut attempt = None;
    if let (Some(prior), Selection::Backfill(b)) = (&opened.prior, &req.selection) {
        let n = b.started.get().map_or(1, |s| s.attempt);
        let this = figures.clone();
        figures = crate::backfill::cumulative(prior, figures, n);
        attempt = (n > 1).then_some((n, this));
    }
    ledger::finish(pool, run_id, status, &figures, error.as_deref()).await?;
    if let Some(f) = &follow {
        ledger::record_follow(pool, run_id, f).await?;
    }
    if let Some(l) = job_lock {
        l.release().await;
    }
    Ok(RunReport {
        run_id,
        job: req.job.clone(),
        status,
        exit,
        figures,
        error,
        elapsed: started.elapsed(),
        failed_groups: outcome
            .failed_groups
            .into_iter()
            .map(|(g, (class, msg))| (g, class, msg))
            .collect(),
        follow,
        attempt,
        read_lists,
    })
}

/// The tags a selection filters on (empty: every enabled group).
pub fn selection_tags(selection: &Selection) -> Vec<String> {
    match selection {
        Selection::Tracked { tags } => tags.clone(),
        _ => Vec::new(),
    }
}

/// This process's own cap on the shared API budget (calls/s): a backfill's `--rate`, else
/// the job's `rate_limit`, else the app's budget.
fn rate_cap(settings: &Settings, req: &RunRequest) -> f64 {
    match &req.selection {
        Selection::Backfill(b) => f64::from(b.rate.unwrap_or(settings.rate_limit)),
        _ => f64::from(settings.own_rate()),
    }
}

/// The client configuration a run uses: the API settings, the pace, batch size and timeout.
pub fn client_config(settings: &Settings, api: &crate::settings::ApiSettings) -> ClientConfig {
    ClientConfig {
        base_url: api.endpoint.base_url(),
        sdkappid: api.sdkappid,
        identifier: api.identifier.clone(),
        key: api.secret_key.clone(),
        rate_limit: f64::from(settings.own_rate()),
        batch_size: settings.batch_size,
        timeout: settings.request_timeout,
        max_attempts: 8,
        usersig_ttl: Duration::from_secs(86_400),
    }
}

/// Pings the lock's session while the run goes on. If the session dies (Postgres restarted,
/// the connection killed), the lock died with it: the run takes it again on a new session if it
/// is still free, and otherwise stops pulling, since another run may now hold it. Returns the
/// task (which hands the lock back) and a token cancelled when the lock was lost.
fn watch_lock(
    mut lock: JobLock,
    options: sqlx::postgres::PgConnectOptions,
    stop: CancellationToken,
) -> (tokio::task::JoinHandle<Option<JobLock>>, CancellationToken) {
    let lost = CancellationToken::new();
    let lost_flag = lost.clone();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Some(lock),
                _ = tokio::time::sleep(LOCK_CHECK_EVERY) => {}
            }
            if lock.is_alive().await {
                continue;
            }
            let job = lock.job().to_string();
            tracing::warn!(job = %job, "the Postgres session holding the job lock died: taking the lock again");
            match JobLock::try_acquire(&options, &job).await {
                Ok(Some(again)) => lock = again,
                outcome => {
                    let why = match outcome {
                        Ok(_) => "another session took it".to_string(),
                        Err(e) => e.to_string(),
                    };
                    tracing::error!(job = %job, "lost the job lock ({why}): stopping the run");
                    lost_flag.cancel();
                    stop.cancel();
                    return None;
                }
            }
        }
    });
    (task, lost)
}

fn figures(client: &ChatClient, outcome: &pipeline::Outcome, planned: usize) -> RunFigures {
    let stats = client.stats().snapshot();
    let r = &stats.retries;
    let retries_by_class = [
        ("rate_limited", r.rate_limited),
        ("cooldown", r.cooldown),
        ("transient", r.transient),
        ("usersig", r.usersig),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .map(|(k, n)| (k.to_string(), n))
    .collect();
    let failed = outcome.failed_groups.len();
    RunFigures {
        groups_ok: (planned - failed.min(planned)) as i32,
        groups_failed: failed as i32,
        seqs_asked: outcome.seqs_asked as i64,
        receipts_written: outcome.receipts_written as i64,
        api_calls: stats.calls as i64,
        retries: (r.rate_limited + r.cooldown + r.transient + r.usersig) as i64,
        retries_by_class,
        rate_limited: stats.rate_limited_answers as i64,
        item_codes: stats
            .item_codes
            .iter()
            .map(|(code, n)| (code.to_string(), *n))
            .collect(),
        parquet_files: outcome.files.len() as i32,
        details: serde_json::json!({
            "latency_ms": stats.latency_ms,
            "invalid_items": stats.invalid_by_reason,
            "item_codes_written": outcome.codes_written,
            "failed_groups": outcome.failed_groups,
            "files": outcome.files.iter().map(|f| f.relative_path.clone()).collect::<Vec<_>>(),
        }),
    }
}
