//! The export run: plan from Postgres, pull through the client, write both sinks exactly once,
//! record everything in the ledger.
//!
//! Order of a run: settings → job lock (or exit 75) → ledger row (the run's fence) → watchdog
//! (heartbeats, the lock's session kept or re-established, see [`watch`]) → repair after dead
//! runs → plan → pipeline → ledger figures → lock released. Nothing here prints: the command
//! layer turns the [`RunReport`] into a summary line and an exit code.

pub mod ahead;
pub mod backfill;
pub mod budget;
pub mod details;
pub mod follow;
pub mod ledger;
pub mod live;
pub mod liveness;
pub mod lock;
pub mod pipeline;
pub mod repair;
pub mod watch;

use crate::chat::{ChatClient, ClientConfig};
use crate::plan::{self, GroupPlan};
use crate::settings::{Settings, TableFormat};
use crate::sink::warehouse::WarehouseLock;
use crate::sink::{Access, Fence, LakeTarget};
use crate::tracking::SeqWindow;
use ledger::{RunFigures, RunKind, RunStatus};
use lock::JobLock;
use pipeline::{FailedGroup, Halt, Outcome, Pipeline};
use sqlx::PgPool;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use watch::Lost;

/// Another run of the same job holds the lock. Exits with code 75.
#[derive(Debug, thiserror::Error)]
#[error("another run of job '{job}' holds the lock: {holder}; try later")]
pub struct LockHeld {
    pub job: String,
    pub holder: String,
}

/// A run that did not start because a lock was held (its job's, or the warehouse's past its
/// bound), or that was stopped while it waited for one: skipped, tried again at the next fire
/// time; nothing of it failed, and nobody is paged about it.
pub fn busy(cause: &(dyn std::error::Error + 'static)) -> bool {
    use crate::sink::warehouse::WarehouseLockError;
    cause.is::<LockHeld>()
        || matches!(
            cause.downcast_ref::<WarehouseLockError>(),
            Some(WarehouseLockError::Busy { .. } | WarehouseLockError::Interrupted { .. })
        )
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
    /// A backfill: its own groups × windows, resumable (see [`crate::run::backfill`]).
    Backfill(crate::run::backfill::Backfill),
}

/// A run's ledger row, opened, and what it has left to pull.
#[derive(Debug)]
pub struct OpenedRun {
    /// The run's id and the epoch this process writes under.
    pub fence: Fence,
    pub run_date: chrono::NaiveDate,
    /// The app the run exports for (its SDKAppID): its rows carry it.
    pub sdkappid: i64,
    pub plan: Vec<GroupPlan>,
    /// Write batches continue after those committed by earlier attempts.
    pub first_batch_no: i32,
    /// The figures of earlier attempts of a resumable run (a backfill): the ledger counts the
    /// whole run. `None` for ordinary runs.
    pub prior: Option<RunFigures>,
}

/// Opens the run's ledger row, with its first `lease`: a new one, or a backfill's row
/// re-opened for another attempt; records the app it exports for (`export_runs.sdkappid`).
/// A run of the default app first adopts the rows of no app ([`adopt`]).
async fn open(
    pool: &PgPool,
    req: &RunRequest,
    me: &liveness::Identity,
    lease: Duration,
    settings: &Settings,
) -> anyhow::Result<OpenedRun> {
    let app = settings.require_app_id()?;
    adopt(settings, pool).await?;
    let opened = if let Selection::Backfill(backfill) = &req.selection {
        crate::run::backfill::open(pool, backfill, &req.job, me, lease).await?
    } else {
        let (run_id, run_date, epoch) = ledger::start(pool, &req.job, req.kind, me, lease).await?;
        OpenedRun {
            fence: Fence { run_id, epoch },
            run_date,
            sdkappid: app,
            plan: load_plan(pool, app, &req.selection).await?,
            first_batch_no: 1,
            prior: None,
        }
    };
    crate::sink::progress::record_app(pool, opened.fence.run_id, app, &settings.app_name).await?;
    Ok(opened)
}

/// The default app's rows from before apps (and groups tracked since without an app) become
/// its rows: `receipts.adopt_default_app`, at a run of the default app (the TIM_* settings),
/// whose SDKAppID `migrate` cannot know. Nothing for another app's run.
pub async fn adopt(settings: &Settings, pool: &PgPool) -> anyhow::Result<()> {
    if !settings.is_default_app() {
        return Ok(());
    }
    let app = settings.require_app_id()?;
    let adopted: i64 = sqlx::query_scalar("SELECT receipts.adopt_default_app($1)")
        .bind(app)
        .fetch_one(pool)
        .await
        .map_err(|e| {
            anyhow::anyhow!("adopting the rows of no app for the default app (SDKAppID {app}): {e}")
        })?;
    if adopted > 0 {
        tracing::info!(
            sdkappid = app,
            rows = adopted,
            "rows recorded before apps (or tracked without one) now belong to the default app"
        );
    }
    Ok(())
}

/// How a run ended.
#[derive(Debug)]
pub struct RunReport {
    pub run_id: i64,
    pub job: String,
    pub status: RunStatus,
    /// A failed run whose configuration the API refused (the key, the admin account, the
    /// region): the user's to fix. The command layer maps status and this to an exit code.
    pub config_refused: bool,
    pub figures: RunFigures,
    pub error: Option<String>,
    pub elapsed: Duration,
    pub failed_groups: Vec<FailedGroup>,
    /// What following skipped and left (`None`: a backfill).
    pub follow: Option<follow::FollowFigures>,
    /// A resumed backfill's attempt number and this attempt's own figures (`figures` count
    /// every attempt); `None` for ordinary runs and a backfill's first attempt.
    pub attempt: Option<(i32, RunFigures)>,
    /// What the read lists of details-on groups took and gave (`None`: none were due).
    pub read_lists: Option<details::DetailFigures>,
}

/// The run's files as its summary tells them: Parquet files, or the Iceberg table's data files.
fn files_told(n: i32, format: TableFormat) -> String {
    use crate::text::count;
    match format {
        TableFormat::Parquet => count(n, "Parquet file", "Parquet files"),
        TableFormat::Iceberg => count(
            n,
            "data file committed to the Iceberg table",
            "data files committed to the Iceberg table",
        ),
    }
}

/// `20 groups (0 failed)`; a run stopped early (configuration, lost lock, signal, an outage)
/// did not try every group: `47 groups planned (0 failed before it stopped)`.
fn groups_told(f: &RunFigures, status: RunStatus) -> String {
    use crate::text::count;
    let unfinished = f.details.get("groups_unfinished").and_then(|n| n.as_i64());
    let groups = f.groups_ok + f.groups_failed + unfinished.unwrap_or(0) as i32;
    match status {
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
    }
}

impl RunReport {
    /// The one line a run ends with. Its figures, rate and time are this attempt's; a resumed
    /// backfill's line says so, and adds the whole backfill's totals.
    pub fn summary(&self, settings: &Settings) -> String {
        use crate::text::count;
        let f = self.attempt.as_ref().map_or(&self.figures, |(_, f)| f);
        let secs = self.elapsed.as_secs_f64();
        let groups = groups_told(f, self.status);
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
            files_told(f.parquet_files, settings.table_format),
            settings.lake
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
pub async fn load_plan(
    pool: &PgPool,
    app: i64,
    selection: &Selection,
) -> anyhow::Result<Vec<GroupPlan>> {
    let tags: Vec<String> = match selection {
        Selection::Tracked { tags } => tags.clone(),
        Selection::AllEnabled => Vec::new(),
        Selection::Backfill(b) => return crate::run::backfill::whole_plan(pool, &b.request).await,
    };
    let rows = crate::tracking::store::enabled_windows(pool, app, &tags).await?;
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
///
/// The phases: take the job's lock and open the run's ledger row (`begin`); do the run's
/// work under the watchdog (`watched`: repair, plan, pull and write); judge how it ended
/// (`verdict`, pure) and record that in the ledger (`close`); release the lock.
pub async fn execute(
    settings: &Settings,
    pool: &PgPool,
    req: &RunRequest,
    stop: CancellationToken,
) -> anyhow::Result<RunReport> {
    let api = settings.require_api()?;
    settings.require_database()?;
    let client = ChatClient::new(client_config(settings, &api))?;
    // A lake this run may not open (exit 2): refused now, before the run's ledger row.
    LakeTarget::precheck(pool, &settings.lake, settings.table_format).await?;
    let begun = begin(settings, pool, req, &stop).await?;
    let (fence, prior, started) = (
        begun.opened.fence,
        begun.opened.prior.clone(),
        begun.started,
    );
    tracing::info!(run_id = fence.run_id, job = %req.job, "run started");
    let (worked, job_lock, lost) = watched(settings, pool, req, &client, begun, stop).await;
    let progress = match &worked {
        Ok(_) => Some(progress_lake(settings, pool, fence.run_id).await),
        Err(_) => None,
    };
    let (outcome, follow, read_lists) = worked.unwrap_or_else(|e| {
        let outcome = Outcome {
            halt: Some(Halt::Sink(e)),
            ..Default::default()
        };
        (outcome, None, None)
    });
    let (mut figures, attempt) = tally(&client, &outcome, read_lists.as_ref(), prior, req);
    let ended = with_read_lists(verdict(&outcome, lost.as_ref()), read_lists.as_ref());
    let ended = with_progress_lake(ended, &mut figures, progress);
    let reconnect = settings.lock_reconnect_timeout;
    let Verdict {
        status,
        config_refused,
        error,
    } = close(pool, fence, reconnect, ended, &figures, &follow).await?;
    if let Some(l) = job_lock {
        l.release().await;
    }
    Ok(RunReport {
        run_id: fence.run_id,
        job: req.job.clone(),
        status,
        config_refused,
        figures,
        error,
        elapsed: started.elapsed(),
        failed_groups: outcome.failed_groups.into_values().collect(),
        follow,
        attempt,
        read_lists,
    })
}

/// A run that has begun: its job's lock and the warehouse lock held, its ledger row open.
struct Begun {
    job_lock: JobLock,
    /// Held for the repair at the start of the run's work, which releases it.
    warehouse: WarehouseLock,
    /// The connection the lock's session is re-established with.
    options: sqlx::postgres::PgConnectOptions,
    opened: OpenedRun,
    /// `run N (job J) on host H, pid P`, for the repairer's records.
    label: String,
    /// When the lock was taken: the run's time counts from here.
    started: Instant,
}

/// The watchdog's task and what the run's work needs of a begun run.
type Watching = (
    tokio::task::JoinHandle<(Option<JobLock>, Option<Lost>)>,
    WarehouseLock,
    OpenedRun,
    String,
);

impl Begun {
    /// Starts the watchdog over the run's lock and lease (it cancels `stop` when the run lost
    /// them, and ends when `stop` is cancelled); hands back the watchdog's task, the warehouse
    /// lock for the repair, the opened run and its label.
    fn watched(self, settings: &Settings, pool: &PgPool, stop: &CancellationToken) -> Watching {
        let Begun {
            job_lock,
            warehouse,
            options,
            opened,
            label,
            ..
        } = self;
        let watchdog = watch::Watch {
            options,
            pool: pool.clone(),
            fence: opened.fence,
            reconnect: settings.lock_reconnect_timeout,
        }
        .start(job_lock, stop.clone());
        (watchdog, warehouse, opened, label)
    }
}

/// Takes the job's lock (or fails with [`LockHeld`]), then the warehouse lock for the repair
/// (waiting at most `EXPORT_LOCK_RECONNECT_TIMEOUT`, and not past `stop`), and opens the run's
/// ledger row under them. A run that gets neither lock leaves no ledger row: it exits 75 (130
/// when stopped while waiting) having changed nothing.
async fn begin(
    settings: &Settings,
    pool: &PgPool,
    req: &RunRequest,
    stop: &CancellationToken,
) -> anyhow::Result<Begun> {
    let options = settings.require_database()?.clone();
    let job_lock = acquire(&options, pool, &req.job).await?;
    let bound = settings.lock_reconnect_timeout;
    let warehouse = match WarehouseLock::acquire(&options, bound, stop).await {
        Ok(w) => w,
        Err(e) => {
            job_lock.release().await;
            return Err(e.into());
        }
    };
    let started = Instant::now();
    let me = liveness::Identity::this();
    let lease = watch::lease(settings.lock_reconnect_timeout);
    match open(pool, req, &me, lease, settings).await {
        Ok(opened) => {
            let run_id = opened.fence.run_id;
            let label = format!(
                "run {run_id} (job {}) on host {}, pid {}",
                req.job, me.host, me.pid
            );
            Ok(Begun {
                job_lock,
                warehouse,
                options,
                opened,
                label,
                started,
            })
        }
        Err(e) => {
            warehouse.release().await;
            job_lock.release().await;
            Err(e)
        }
    }
}

/// The run's work under its watchdog (heartbeats, the lock's session kept or re-established):
/// returns what the work gave, the lock if the watchdog still holds it, and how it was lost
/// if it was.
async fn watched(
    settings: &Settings,
    pool: &PgPool,
    req: &RunRequest,
    client: &ChatClient,
    begun: Begun,
    stop: CancellationToken,
) -> (anyhow::Result<Worked>, Option<JobLock>, Option<Lost>) {
    let pipeline_stop = stop.child_token();
    let (watchdog, warehouse, opened, label) = begun.watched(settings, pool, &pipeline_stop);
    let worked = work(
        settings,
        pool,
        req,
        client,
        (opened, warehouse),
        &label,
        &pipeline_stop,
    )
    .await;
    pipeline_stop.cancel(); // ends the watchdog (and a backfill's checkpoints)
    let (job_lock, lost) = watchdog.await.unwrap_or((None, None));
    (worked, job_lock, lost)
}

/// The run's figures for the ledger, and a resumed backfill's attempt: its number and this
/// attempt's own figures (the ledger's count every attempt).
fn tally(
    client: &ChatClient,
    outcome: &Outcome,
    read_lists: Option<&details::DetailFigures>,
    prior: Option<RunFigures>,
    req: &RunRequest,
) -> (RunFigures, Option<(i32, RunFigures)>) {
    let mut figures = figures(client, outcome, outcome.groups_planned);
    if let Some(d) = read_lists {
        figures.details["read_lists"] = serde_json::json!(d);
    }
    match (prior, &req.selection) {
        (Some(prior), Selection::Backfill(b)) => {
            let n = b.started.get().map_or(1, |s| s.attempt);
            let this = figures.clone();
            let figures = backfill::cumulative(&prior, figures, n);
            (figures, (n > 1).then_some((n, this)))
        }
        _ => (figures, None),
    }
}

/// A run that succeeded but whose read lists failed for some groups is partial.
fn with_read_lists(verdict: Verdict, read_lists: Option<&details::DetailFigures>) -> Verdict {
    let failed = read_lists.map_or(0, |d| d.failed_groups.len());
    if verdict.status != RunStatus::Succeeded || failed == 0 {
        return verdict;
    }
    Verdict::failed(
        RunStatus::Partial,
        format!("the read lists of {failed} group(s) failed (their counts are written)"),
    )
}

/// Writes the lake's read-progress change rows of this run, which has written its last batch,
/// and of ended runs whose files are due ([`crate::sink::progress_lake`]). Returns the files
/// written, or the error as the run reports it.
pub(super) async fn progress_lake(
    settings: &Settings,
    pool: &PgPool,
    run_id: i64,
) -> Result<u64, String> {
    let form = crate::sink::progress_lake::Form::of(&settings.lake, settings.table_format);
    let written = match form {
        Ok(form) => crate::sink::progress_lake::export(pool, &form, Some(run_id)).await,
        Err(e) => Err(e),
    };
    written.map_err(|e| {
        let error = format!(
            "the lake's read-progress files were not written (the next run writes them): {e}"
        );
        tracing::warn!("{error}");
        error
    })
}

/// The read-progress files in the run's figures (`details.progress_lake`); a run that
/// succeeded but could not write them is partial.
fn with_progress_lake(
    verdict: Verdict,
    figures: &mut RunFigures,
    progress: Option<Result<u64, String>>,
) -> Verdict {
    match progress {
        None => verdict,
        Some(Ok(files)) => {
            figures.details["progress_lake"] = serde_json::json!({ "files": files });
            verdict
        }
        Some(Err(error)) => {
            figures.details["progress_lake"] = serde_json::json!({ "error": error });
            match verdict.status {
                RunStatus::Succeeded => Verdict::failed(RunStatus::Partial, error),
                _ => verdict,
            }
        }
    }
}

/// Records how the run ended, unless it was fenced: only a run still `running` under this
/// process's epoch is closed, so the `abandoned` of whoever took it over stands (also when the
/// take-over happened while this run finished). Returns what the run reports.
async fn close(
    pool: &PgPool,
    fence: Fence,
    reconnect: Duration,
    verdict: Verdict,
    figures: &RunFigures,
    follow: &Option<follow::FollowFigures>,
) -> anyhow::Result<Verdict> {
    let Verdict { status, error, .. } = &verdict;
    let status = *status;
    if status != RunStatus::Abandoned {
        let closed = ledger_retrying(reconnect, || {
            ledger::finish(pool, fence, status, figures, error.as_deref())
        })
        .await?;
        if closed {
            if let Some(f) = follow {
                ledger_retrying(reconnect, || ledger::record_follow(pool, fence.run_id, f)).await?;
            }
            return Ok(verdict);
        }
    }
    let error = match verdict.error.filter(|_| status == RunStatus::Abandoned) {
        Some(error) => error,
        None => Lost::Fenced(ledger::fenced_by(pool, fence.run_id).await?).reason(),
    };
    tracing::error!(
        run_id = fence.run_id,
        "run {} {error}; its ledger row stays as its new owner recorded it",
        fence.run_id
    );
    Ok(Verdict::failed(RunStatus::Abandoned, error))
}

/// Takes the job's lock, or says which run holds it (exit 75).
async fn acquire(
    options: &sqlx::postgres::PgConnectOptions,
    pool: &PgPool,
    job: &str,
) -> anyhow::Result<JobLock> {
    if let Some(lock) = JobLock::try_acquire(options, job).await? {
        return Ok(lock);
    }
    let holder = match ledger::holder(pool, job).await? {
        Some(r) => format!(
            "run {} on host {} (pid {}) since {}",
            r.run_id, r.host, r.pid, r.started_at
        ),
        None => lock::holder(options, job).await,
    };
    Err(LockHeld {
        job: job.to_string(),
        holder,
    }
    .into())
}

/// The run's work under its fence: repair (under the warehouse lock `begin` took), plan, pull
/// and write, then the read lists. Cancels `stop` when done. (Over 60 lines: the steps in
/// their order, each a call, with the budget's lease and a backfill's checkpoints held across
/// them.)
async fn work(
    settings: &Settings,
    pool: &PgPool,
    req: &RunRequest,
    client: &ChatClient,
    (mut opened, warehouse): (OpenedRun, WarehouseLock),
    label: &str,
    stop: &CancellationToken,
) -> anyhow::Result<Worked> {
    let me = repair::Repairer {
        job: &req.job,
        fence: opened.fence,
        label,
    };
    let target = LakeTarget::open(pool, &settings.lake, settings.table_format, Access::Run).await?;
    repair::repair(warehouse, pool, &target, &me).await?;
    if let Err(e) = crate::db::ensure_snapshot_partitions(pool, 3).await {
        tracing::warn!("could not create the coming months' snapshot partitions (rows go to the default partition): {e}");
    }
    let started = Instant::now(); // a budget's max_duration counts from here
    let (plan, refused) = capped(std::mem::take(&mut opened.plan), settings, req);
    let lease = budget::Lease::join(
        pool,
        client,
        opened.sdkappid,
        f64::from(settings.rate_limit),
        rate_cap(settings, req),
        label,
    )
    .await?;
    let checkpoint = opened.prior.as_ref().map(|p| {
        let prior = (p.api_calls, p.seqs_asked);
        backfill::checkpoint_calls(
            pool.clone(),
            opened.fence,
            prior,
            client.clone(),
            stop.clone(),
        )
    });
    let pipeline = pipeline(settings, pool, client, &opened, stop, target);
    let (mut outcome, follow) = match &req.selection {
        Selection::Backfill(_) => (pipeline.run(plan).await, None),
        selection => {
            let ctx = follow::RunContext {
                pool,
                client,
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
    let read_lists = read_lists(settings, pool, req, client, &outcome, opened.fence, stop).await;
    outcome.groups_planned += refused.len();
    for (group_id, why) in refused {
        outcome.fail(FailedGroup::new(group_id, "Plan", why));
    }
    stop.cancel();
    lease.leave().await;
    if let Some(task) = checkpoint {
        let _ = task.await;
    }
    Ok((outcome, follow, read_lists))
}

/// The plan without the groups over the per-run cap (`max_seqs_per_group`), and those groups
/// with the reason. A backfill is a deliberate large pull: the cap guards other runs only.
fn capped(
    plan: Vec<GroupPlan>,
    settings: &Settings,
    req: &RunRequest,
) -> (Vec<GroupPlan>, Vec<(String, String)>) {
    let (plan, refused) = match req.selection {
        Selection::Backfill(_) => (plan, Vec::new()),
        _ => plan::refuse_oversized(plan, settings.max_seqs_per_group),
    };
    for (group_id, why) in &refused {
        tracing::warn!(group_id = %group_id, "group failed for this run: {why}");
    }
    (plan, refused)
}

/// The pipeline of the opened run, under the run's settings, writing to `target`.
fn pipeline(
    settings: &Settings,
    pool: &PgPool,
    client: &ChatClient,
    opened: &OpenedRun,
    stop: &CancellationToken,
    target: LakeTarget,
) -> Pipeline {
    Pipeline {
        pool: pool.clone(),
        client: client.clone(),
        fence: opened.fence,
        run_date: opened.run_date,
        sdkappid: opened.sdkappid,
        target,
        batch_size: settings.batch_size,
        concurrency: settings.concurrency,
        stop: stop.clone(),
        first_batch_no: opened.first_batch_no,
        reconnect: settings.lock_reconnect_timeout,
    }
}

/// Who read the messages of details-on groups: not for backfills, nor for a run that was
/// stopped; called while the run's lease and lock are still held.
async fn read_lists(
    settings: &Settings,
    pool: &PgPool,
    req: &RunRequest,
    client: &ChatClient,
    outcome: &Outcome,
    fence: Fence,
    stop: &CancellationToken,
) -> Option<details::DetailFigures> {
    match (&req.selection, &outcome.halt) {
        (Selection::Backfill(_), _) | (_, Some(_)) => None,
        (selection, None) => {
            let tags = selection_tags(selection);
            let pulled = details::pull(pool, client, settings, fence.run_id, &tags, stop).await;
            Some(pulled.unwrap_or_else(details::DetailFigures::failed))
        }
    }
}

/// What the run's work gave: the pipeline's outcome, what following skipped and left, and
/// what the read lists took and gave.
type Worked = (
    Outcome,
    Option<follow::FollowFigures>,
    Option<details::DetailFigures>,
);

/// How a run ended: its ledger status, whether the API refused the configuration, and the
/// error it reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub status: RunStatus,
    pub config_refused: bool,
    pub error: Option<String>,
}

impl Verdict {
    fn failed(status: RunStatus, error: String) -> Self {
        Verdict {
            status,
            config_refused: false,
            error: Some(error),
        }
    }
}

/// How the run ended, from what its work gave and whether its lock was lost; pure. A fenced
/// run is `abandoned` (as the repairer recorded it); a run stopped because it lost its lock is
/// `failed`, with the reason.
fn verdict(outcome: &Outcome, lost: Option<&Lost>) -> Verdict {
    let failed = outcome.failed_groups.len();
    let planned = outcome.groups_planned;
    let fenced = match (lost, &outcome.halt) {
        (Some(Lost::Fenced(by)), _) | (_, Some(Halt::Fenced(by))) => Some(by),
        _ => None,
    };
    if let Some(by) = fenced {
        return Verdict::failed(RunStatus::Abandoned, Lost::Fenced(by.clone()).reason());
    }
    match &outcome.halt {
        // A configuration the API refused exits 2; an API never reached exits 1.
        Some(Halt::Config(e)) => Verdict {
            status: RunStatus::Failed,
            config_refused: e.is_config(),
            error: Some(e.to_string()),
        },
        // A lake of another database, or another lake than the recorded one, is the user's to
        // fix (2).
        Some(Halt::Sink(e)) => Verdict {
            status: RunStatus::Failed,
            config_refused: e.chain().any(|c| {
                c.is::<crate::sink::owner::NotOurLake>()
                    || c.is::<crate::sink::identity::OtherLake>()
                    || c.downcast_ref::<crate::sink::SinkError>()
                        .is_some_and(crate::sink::SinkError::is_config)
            }),
            error: Some(format!("{e:#}")),
        },
        Some(Halt::Stopped | Halt::Fenced(_)) => match lost {
            Some(lost) => Verdict::failed(RunStatus::Failed, lost.reason()),
            None => Verdict::failed(RunStatus::Interrupted, "interrupted by a signal".into()),
        },
        None if failed == 0 => Verdict {
            status: RunStatus::Succeeded,
            config_refused: false,
            error: None,
        },
        None if failed < planned => Verdict::failed(
            RunStatus::Partial,
            format!("{failed} of {planned} groups failed"),
        ),
        None => Verdict::failed(RunStatus::Failed, format!("all {planned} groups failed")),
    }
}

/// A ledger statement, repeated on connection failures for up to `bound`.
async fn ledger_retrying<T, F, Fut>(bound: Duration, op: F) -> sqlx::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = sqlx::Result<T>>,
{
    crate::sink::postgres::retry_for(bound, crate::sink::postgres::is_connection_error, op).await
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
        outage_timeout: settings.outage_timeout,
    }
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
    // A run that stopped early finished only some groups: the rest are neither ok nor failed.
    let ok = match outcome.halt {
        Some(_) => outcome.groups_done.min(planned - failed.min(planned)),
        None => planned - failed.min(planned),
    };
    RunFigures {
        groups_ok: ok as i32,
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
            // Each failed group as {id: [class, message]}.
            "failed_groups": outcome
                .failed_groups
                .iter()
                .map(|(g, f)| (g.clone(), serde_json::json!([f.class, f.message])))
                .collect::<serde_json::Map<_, _>>(),
            "files": outcome.files.iter().map(|f| f.relative_path.clone()).collect::<Vec<_>>(),
            "groups_unfinished": planned - failed.min(planned) - ok,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(planned: usize, failed: usize, halt: Option<Halt>) -> Outcome {
        Outcome {
            groups_planned: planned,
            failed_groups: (0..failed)
                .map(|i| {
                    let f = FailedGroup::new(format!("g{i}"), "Transient", "timed out");
                    (f.group_id.clone(), f)
                })
                .collect(),
            halt,
            ..Default::default()
        }
    }

    #[test]
    fn the_verdict_counts_failed_groups_against_the_planned() {
        let v = verdict(&outcome(3, 0, None), None);
        assert_eq!((v.status, v.error), (RunStatus::Succeeded, None));
        let v = verdict(&outcome(3, 1, None), None);
        assert_eq!(v.status, RunStatus::Partial);
        assert_eq!(v.error.as_deref(), Some("1 of 3 groups failed"));
        let v = verdict(&outcome(3, 3, None), None);
        assert_eq!(v.status, RunStatus::Failed);
        assert_eq!(v.error.as_deref(), Some("all 3 groups failed"));
        assert!(!v.config_refused);
    }

    #[test]
    fn a_stopped_run_is_interrupted_unless_it_lost_its_lock() {
        let v = verdict(&outcome(3, 0, Some(Halt::Stopped)), None);
        assert_eq!(v.status, RunStatus::Interrupted);
        let lost = Lost::TimedOut("the lock".into());
        let v = verdict(&outcome(3, 0, Some(Halt::Stopped)), Some(&lost));
        assert_eq!(v.status, RunStatus::Failed);
        assert_eq!(v.error, Some(lost.reason()));
    }

    #[test]
    fn a_fenced_run_is_abandoned_whoever_noticed() {
        let by = "run 9 on host h".to_string();
        let from_watch = verdict(&outcome(3, 0, None), Some(&Lost::Fenced(by.clone())));
        let from_pipeline = verdict(&outcome(3, 1, Some(Halt::Fenced(by.clone()))), None);
        for v in [from_watch, from_pipeline] {
            assert_eq!(v.status, RunStatus::Abandoned);
            assert_eq!(v.error, Some(Lost::Fenced(by.clone()).reason()));
        }
    }

    #[test]
    fn a_sink_failure_fails_the_run_with_its_chain() {
        let e = anyhow::anyhow!("disk full").context("while writing Parquet");
        let v = verdict(&outcome(3, 0, Some(Halt::Sink(e))), None);
        assert_eq!(v.status, RunStatus::Failed);
        assert_eq!(v.error.as_deref(), Some("while writing Parquet: disk full"));
    }
}
