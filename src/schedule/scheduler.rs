//! The scheduler: fires each job at its times, in this process, for hosts without cron or
//! systemd timers (containers).
//!
//! The decisions are pure functions of the jobs, what the scheduler remembers and a `now`
//! given by the caller ([`due`], [`missed`], [`reload`]), so tests control time. [`Scheduler::run`]
//! is the loop around them: it reads the clock, sleeps, starts runs (each one
//! `run::execute`, kind `scheduled`) and stops when its shutdown future completes, after
//! cancelling the running runs and waiting for them (mini-redis style).
//!
//! One run per job at a time: a job still running at its next time is skipped here, and the
//! run's own advisory lock keeps other hosts out.

use super::job::{self, CatchUp, Job, JobError, LoadedFile};
use crate::ops::alert::{self, Alert};
use crate::run::ledger::{RunKind, RunStatus};
use crate::run::{self, RunReport, RunRequest};
use crate::settings::Settings;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The loop looks at the wall clock at least this often (the clock may be set while it sleeps).
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// What the scheduler keeps about one job between ticks.
#[derive(Debug, Clone)]
pub struct Slot {
    pub job: Job,
    /// The job's next fire time; `None` when it never fires (disabled, or no time left).
    pub next: Option<DateTime<Utc>>,
    /// A run of it that this scheduler started is still going.
    pub running: bool,
}

impl Slot {
    /// A job as the scheduler first sees it at `now`.
    pub fn new(job: Job, now: DateTime<Utc>) -> Slot {
        let next = if job.enabled {
            job.next_fire(now)
        } else {
            None
        };
        Slot {
            job,
            next,
            running: false,
        }
    }
}

/// What to do about a job whose time came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Start a run now; `slot` is the fire time it stands for, `collapsed` how many later
    /// fire times (missed while the scheduler could not look) this one run also covers.
    Fire {
        job: String,
        slot: DateTime<Utc>,
        collapsed: usize,
    },
    /// The time came while the job's previous run is still going: no second run.
    SkipBusy { job: String, slot: DateTime<Utc> },
}

/// The jobs due at `now`. Each due job's next time moves past `now` (so slots missed in
/// between become one fire), and a fired job is marked running.
pub fn due(slots: &mut [Slot], now: DateTime<Utc>) -> Vec<Decision> {
    let mut decisions = Vec::new();
    for slot in slots.iter_mut() {
        let Some(time) = slot.next.filter(|t| *t <= now) else {
            continue;
        };
        let job = slot.job.name.clone();
        if slot.running {
            decisions.push(Decision::SkipBusy { job, slot: time });
        } else {
            let collapsed = count_until(&slot.job, time, now);
            slot.running = true;
            decisions.push(Decision::Fire {
                job,
                slot: time,
                collapsed,
            });
        }
        slot.next = slot.job.next_fire(now);
    }
    decisions
}

/// Fire times strictly after `from` and not after `now` (bounded: only for the log).
fn count_until(job: &Job, from: DateTime<Utc>, now: DateTime<Utc>) -> usize {
    let mut n = 0;
    let mut t = from;
    while let Some(next) = job.next_fire(t).filter(|x| *x <= now) {
        n += 1;
        t = next;
        if n == 10_000 {
            break;
        }
    }
    n
}

/// The fire time a job missed while no scheduler ran: its last fire time before `now`, when
/// the job's last run (any kind) started before it and the job says `catch_up = "once"`.
/// A job that never ran missed nothing: its schedule starts now.
pub fn missed(
    job: &Job,
    last_start: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    if !job.enabled || job.catch_up == CatchUp::Skip {
        return None;
    }
    let prev = job.prev_fire(now)?;
    (last_start? < prev).then_some(prev)
}

/// The earliest next fire time of all jobs.
pub fn wake_at(slots: &[Slot]) -> Option<DateTime<Utc>> {
    slots.iter().filter_map(|s| s.next).min()
}

/// The slots after re-reading the job files at `now`: a valid file replaces its job (keeping
/// whether it runs, and its next time when its schedule did not change), a broken file keeps
/// the job it defined before, a file that is gone takes its job away.
pub fn reload(old: Vec<Slot>, files: Vec<LoadedFile>, now: DateTime<Utc>) -> Vec<Slot> {
    let mut old: HashMap<PathBuf, Slot> =
        old.into_iter().map(|s| (s.job.path.clone(), s)).collect();
    let mut by_name: HashMap<String, bool> = old
        .values()
        .map(|s| (s.job.name.clone(), s.running))
        .collect();
    let mut slots = Vec::new();
    for (path, loaded) in files {
        let before = old.remove(&path);
        match (loaded, before) {
            (Ok(job), Some(before)) if same_times(&job, &before.job) => {
                tracing::info!(job = %job.name, "job reloaded");
                slots.push(Slot { job, ..before });
            }
            (Ok(job), _) => {
                tracing::info!(job = %job.name, file = %path.display(), "job (re)loaded with a new schedule");
                let running = by_name.remove(&job.name).unwrap_or(false);
                slots.push(Slot {
                    running,
                    ..Slot::new(job, now)
                });
            }
            (Err(e), Some(before)) => {
                tracing::error!(job = %before.job.name, "{e}: keeping the job's previous definition");
                slots.push(before);
            }
            (Err(e), None) => tracing::error!("{e}: the job is not scheduled"),
        }
    }
    for gone in old.into_values() {
        tracing::warn!(job = %gone.job.name, "the job's file is gone: no longer scheduled");
    }
    slots
}

fn same_times(a: &Job, b: &Job) -> bool {
    a.schedule.source() == b.schedule.source() && a.timezone == b.timezone && a.enabled == b.enabled
}

/// The jobs directory, each file checked against the global settings too (its rate share).
pub fn load_checked(
    dir: &std::path::Path,
    settings: &Settings,
) -> Result<Vec<LoadedFile>, JobError> {
    let files = job::load_dir(dir)?;
    Ok(files
        .into_iter()
        .map(|(path, loaded)| {
            let checked = loaded.and_then(|j| j.settings_for(settings).map(|_| j));
            (path, checked)
        })
        .collect())
}

/// Job files the scheduler cannot start with (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// The job directory or some of its files are unreadable or invalid (one line each).
    #[error("{0}")]
    Jobs(String),
    #[error("no job files (*.toml) in {}", .0.display())]
    NoJobs(std::path::PathBuf),
}

/// The scheduler's fixed inputs.
pub struct Scheduler {
    /// The global settings; each run gets its job's rate share on top.
    pub settings: Settings,
    pub pool: PgPool,
    /// Where the job files are; re-read on each reload.
    pub jobs_dir: PathBuf,
}

/// The runs the scheduler started, by task, so a finished task names its job.
struct Runs {
    tasks: JoinSet<anyhow::Result<RunReport>>,
    jobs: HashMap<tokio::task::Id, String>,
    /// Cancelled on shutdown: each run holds a child of it.
    stop: CancellationToken,
}

impl Scheduler {
    /// Runs until `shutdown` completes, then stops the running runs (cancelling them) and
    /// waits for them. Each message on `reloads` re-reads the job files. Fails at start only:
    /// a broken job file, no job at all, or the ledger unreadable.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()>,
        mut reloads: mpsc::Receiver<()>,
    ) -> anyhow::Result<()> {
        let mut slots = self.initial_slots()?;
        let mut runs = Runs {
            tasks: JoinSet::new(),
            jobs: HashMap::new(),
            stop: CancellationToken::new(),
        };
        self.catch_up(&mut slots, &mut runs).await?;
        tokio::pin!(shutdown);
        loop {
            for decision in due(&mut slots, Utc::now()) {
                self.act(decision, &slots, &mut runs);
            }
            let pause = match wake_at(&slots) {
                Some(t) => (t - Utc::now())
                    .to_std()
                    .unwrap_or(Duration::ZERO)
                    .min(MAX_SLEEP),
                None => MAX_SLEEP,
            };
            tokio::select! {
                _ = &mut shutdown => break,
                Some(()) = reloads.recv() => {
                    tracing::info!(dir = %self.jobs_dir.display(), "reloading the job files");
                    match load_checked(&self.jobs_dir, &self.settings) {
                        Ok(files) => slots = reload(slots, files, Utc::now()),
                        Err(e) => tracing::error!("{e}: keeping every job as it was"),
                    }
                }
                Some(done) = runs.tasks.join_next_with_id() => {
                    let job = self.finished(done, &mut slots, &mut runs);
                    crate::ops::metrics::publish(&self.settings, &self.pool, &[&job]).await;
                }
                _ = tokio::time::sleep(pause) => {}
            }
        }
        tracing::info!(
            running = runs.tasks.len(),
            "stopping: no new runs; interrupting the running ones"
        );
        runs.stop.cancel();
        while let Some(done) = runs.tasks.join_next_with_id().await {
            self.finished(done, &mut slots, &mut runs);
        }
        tracing::info!("scheduler stopped");
        Ok(())
    }

    fn initial_slots(&self) -> anyhow::Result<Vec<Slot>> {
        let files = load_checked(&self.jobs_dir, &self.settings)
            .map_err(|e| ScheduleError::Jobs(e.to_string()))?;
        let broken: Vec<String> = files
            .iter()
            .filter_map(|(_, r)| r.as_ref().err().map(|e| e.to_string()))
            .collect();
        if !broken.is_empty() {
            return Err(ScheduleError::Jobs(broken.join("\n")).into());
        }
        if files.is_empty() {
            return Err(ScheduleError::NoJobs(self.jobs_dir.clone()).into());
        }
        let now = Utc::now();
        let slots: Vec<Slot> = files
            .into_iter()
            .filter_map(|(_, r)| r.ok())
            .map(|job| Slot::new(job, now))
            .collect();
        for s in &slots {
            match s.next {
                Some(next) => {
                    tracing::info!(job = %s.job.name, schedule = %s.job.schedule.source(), timezone = %s.job.timezone, next = %next, "job scheduled")
                }
                None => {
                    tracing::info!(job = %s.job.name, "job not scheduled (disabled, or its schedule has no time left)")
                }
            }
        }
        Ok(slots)
    }

    /// Runs once each job that missed its last time while no scheduler ran.
    async fn catch_up(&self, slots: &mut [Slot], runs: &mut Runs) -> anyhow::Result<()> {
        let now = Utc::now();
        for slot in slots.iter_mut() {
            let last = crate::run::ledger::last_start(&self.pool, &slot.job.name).await?;
            if let Some(time) = missed(&slot.job, last, now) {
                slot.running = true;
                tracing::info!(job = %slot.job.name, missed = %time, "catching up a missed run once");
                self.start(&slot.job, runs);
            }
        }
        Ok(())
    }

    fn act(&self, decision: Decision, slots: &[Slot], runs: &mut Runs) {
        match decision {
            Decision::Fire {
                job,
                slot,
                collapsed,
            } => {
                if collapsed > 0 {
                    tracing::warn!(job, %slot, collapsed, "fire times passed unseen: one run stands for them all");
                }
                tracing::info!(job, %slot, "firing");
                if let Some(s) = slots.iter().find(|s| s.job.name == job) {
                    self.start(&s.job, runs);
                }
            }
            Decision::SkipBusy { job, slot } => {
                tracing::warn!(job, %slot, "skipped: the job's previous run is still going")
            }
        }
    }

    /// A run ended: log how, and let its job fire again. Returns the job's name.
    fn finished(
        &self,
        done: Result<(tokio::task::Id, anyhow::Result<RunReport>), tokio::task::JoinError>,
        slots: &mut [Slot],
        runs: &mut Runs,
    ) -> String {
        let (id, outcome) = match done {
            Ok((id, outcome)) => (id, Some(outcome)),
            Err(e) => (e.id(), None),
        };
        let job = runs.jobs.remove(&id).unwrap_or_default();
        if let Some(s) = slots.iter_mut().find(|s| s.job.name == job) {
            s.running = false;
        }
        match outcome {
            Some(Ok(report)) => log_finished(&job, &report, &report.summary(&self.settings)),
            Some(Err(e)) if e.chain().any(run::busy) => {
                tracing::warn!(job, "skipped: {e:#}")
            }
            Some(Err(e)) => tracing::error!(job, "run failed: {e:#}"),
            None => tracing::error!(job, "the run's task panicked"),
        }
        job
    }

    /// Starts one run of `job` as `run --job` would, kind `scheduled`.
    fn start(&self, job: &Job, runs: &mut Runs) {
        let settings = job.settings_for(&self.settings);
        let pool = self.pool.clone();
        let request = RunRequest {
            job: job.name.clone(),
            kind: RunKind::Scheduled,
            selection: job.selection(),
            follow: job.follow.clone(),
        };
        let stop = runs.stop.child_token();
        let owned = job.clone();
        let global = self.settings.clone();
        let app = job
            .app
            .clone()
            .or_else(|| global.app.clone())
            .unwrap_or_else(|| crate::settings::apps::DEFAULT_APP.to_string());
        let handle = runs.tasks.spawn(async move {
            let outcome = match settings {
                Ok(settings) => run::execute(&settings, &pool, &request, stop.clone())
                    .await
                    .map(|report| (report, settings)),
                Err(e) => Err(e.into()),
            };
            let (report, settings) = match outcome {
                Ok(done) => done,
                Err(e) => {
                    alert::notify(&global, Alert::not_started(&request.job, &app, &e)).await;
                    return Err(e);
                }
            };
            crate::listen::reconcile::record_or_warn(&pool, report.run_id).await;
            owned
                .retention_after_run(&settings, &pool, report.run_id, &stop)
                .await;
            alert::notify(&settings, Alert::for_run(&report, &settings)).await;
            Ok(report)
        });
        runs.jobs.insert(handle.id(), job.name.clone());
    }
}

/// A finished run's line: ERROR when it failed (or was fenced), WARN when partial, else INFO,
/// so a log-based alert can key on the level.
fn log_finished(job: &str, report: &RunReport, summary: &str) {
    let (run_id, status) = (report.run_id, report.status.as_str());
    match report.status {
        RunStatus::Failed | RunStatus::Abandoned => {
            tracing::error!(job, run_id, status, "run finished: {summary}")
        }
        RunStatus::Partial => tracing::warn!(job, run_id, status, "run finished: {summary}"),
        _ => tracing::info!(job, run_id, status, "run finished: {summary}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn job(name: &str, text: &str) -> Job {
        Job::parse(text, Path::new(&format!("/jobs/{name}.toml"))).unwrap()
    }

    fn hourly() -> Job {
        job("hourly", "schedule = \"5 * * * *\"\n")
    }

    fn fired(decisions: &[Decision]) -> Vec<(String, DateTime<Utc>)> {
        decisions
            .iter()
            .filter_map(|d| match d {
                Decision::Fire { job, slot, .. } => Some((job.clone(), *slot)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_job_fires_at_its_time_and_not_before() {
        let mut slots = vec![Slot::new(hourly(), at("2026-01-01T00:00:00Z"))];
        assert_eq!(slots[0].next, Some(at("2026-01-01T00:05:00Z")));
        assert!(due(&mut slots, at("2026-01-01T00:04:59Z")).is_empty());
        let d = due(&mut slots, at("2026-01-01T00:05:00Z"));
        assert_eq!(
            fired(&d),
            [("hourly".to_string(), at("2026-01-01T00:05:00Z"))]
        );
        assert!(slots[0].running);
        assert_eq!(slots[0].next, Some(at("2026-01-01T01:05:00Z")));
        // Nothing more until the next time.
        assert!(due(&mut slots, at("2026-01-01T00:30:00Z")).is_empty());
    }

    #[test]
    fn a_job_still_running_at_its_next_time_is_skipped_then_fires_again() {
        let mut slots = vec![Slot::new(hourly(), at("2026-01-01T00:00:00Z"))];
        due(&mut slots, at("2026-01-01T00:05:00Z"));
        let d = due(&mut slots, at("2026-01-01T01:05:01Z"));
        assert_eq!(
            d,
            [Decision::SkipBusy {
                job: "hourly".into(),
                slot: at("2026-01-01T01:05:00Z")
            }]
        );
        assert_eq!(slots[0].next, Some(at("2026-01-01T02:05:00Z")));
        slots[0].running = false;
        let d = due(&mut slots, at("2026-01-01T02:05:00Z"));
        assert_eq!(fired(&d).len(), 1);
    }

    #[test]
    fn slots_passed_unseen_become_one_fire() {
        let mut slots = vec![Slot::new(hourly(), at("2026-01-01T00:00:00Z"))];
        // The host slept from 00:00 to 03:30: 00:05, 01:05, 02:05 and 03:05 passed.
        let d = due(&mut slots, at("2026-01-01T03:30:00Z"));
        assert_eq!(
            d,
            [Decision::Fire {
                job: "hourly".into(),
                slot: at("2026-01-01T00:05:00Z"),
                collapsed: 3
            }]
        );
        assert_eq!(slots[0].next, Some(at("2026-01-01T04:05:00Z")));
    }

    #[test]
    fn several_jobs_fire_independently_and_disabled_ones_never() {
        let now = at("2026-01-01T00:00:00Z");
        let every2 = job("fast", "schedule = \"*/2 * * * * *\"\n");
        let off = job("off", "schedule = \"* * * * *\"\nenabled = false\n");
        let mut slots = vec![
            Slot::new(hourly(), now),
            Slot::new(every2, now),
            Slot::new(off, now),
        ];
        assert_eq!(wake_at(&slots), Some(at("2026-01-01T00:00:02Z")));
        let d = due(&mut slots, at("2026-01-01T00:00:02Z"));
        assert_eq!(
            fired(&d),
            [("fast".to_string(), at("2026-01-01T00:00:02Z"))]
        );
        slots[1].running = false;
        let d = due(&mut slots, at("2026-01-01T00:05:00Z"));
        let names: Vec<String> = fired(&d).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["hourly", "fast"]);
        assert_eq!(slots[2].next, None);
    }

    #[test]
    fn a_missed_time_is_caught_up_once_when_the_ledger_is_older() {
        let now = at("2026-01-01T03:30:00Z");
        let j = hourly();
        // Last run at 01:05: 02:05 and 03:05 were missed; one catch-up for 03:05.
        assert_eq!(
            missed(&j, Some(at("2026-01-01T01:05:01Z")), now),
            Some(at("2026-01-01T03:05:00Z"))
        );
        // The last run started after the last time: nothing missed.
        assert_eq!(missed(&j, Some(at("2026-01-01T03:05:02Z")), now), None);
        // Never ran: the schedule starts now.
        assert_eq!(missed(&j, None, now), None);
        let skip = job("s", "schedule = \"5 * * * *\"\ncatch_up = \"skip\"\n");
        assert_eq!(missed(&skip, Some(at("2025-01-01T00:00:00Z")), now), None);
    }

    #[test]
    fn reload_keeps_a_broken_files_old_job_and_drops_a_removed_one() {
        let now = at("2026-01-01T00:00:00Z");
        let a = hourly();
        let b = job("b", "schedule = \"0 * * * *\"\n");
        let mut slots = vec![Slot::new(a.clone(), now), Slot::new(b.clone(), now)];
        slots[0].running = true;
        let broken = JobError {
            path: b.path.clone(),
            position: Some((1, 1)),
            message: "bad".into(),
        };
        let new_a = job("hourly", "schedule = \"10 * * * *\"\n");
        let later = at("2026-01-01T00:01:00Z");
        let slots = reload(
            slots,
            vec![(a.path.clone(), Ok(new_a)), (b.path.clone(), Err(broken))],
            later,
        );
        assert_eq!(slots.len(), 2);
        assert_eq!(slots[0].next, Some(at("2026-01-01T00:10:00Z")));
        assert!(slots[0].running, "a reload does not forget a running run");
        assert_eq!(slots[1].job.schedule.source(), "0 * * * *");
        // b's file is gone now.
        let slots = reload(slots, vec![(a.path.clone(), Ok(hourly()))], later);
        assert_eq!(slots.len(), 1);
        assert_eq!(slots[0].job.name, "hourly");
    }
}
