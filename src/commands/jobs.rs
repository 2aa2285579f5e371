//! `receipt-exporter jobs check`: validates the job files and shows when each fires next.
//! Also turns `run --job` into a run request (the job's name, groups and rate share).

use crate::cli::{JobsCommand, JobsDirArgs};
use crate::exit::{usage, Exit};
use crate::run::ledger::RunKind;
use crate::run::{RunRequest, Selection};
use crate::schedule::job::{self, Job};
use crate::schedule::scheduler::load_checked;
use crate::settings::Settings;
use chrono::Utc;
use std::path::PathBuf;

pub async fn run(settings: &Settings, cmd: JobsCommand) -> anyhow::Result<Exit> {
    match cmd {
        JobsCommand::Check(args) => check(settings, args),
    }
}

/// The jobs directory a command works on: `--jobs`, else the `jobs_dir` setting.
pub fn jobs_dir(settings: &Settings, args: &JobsDirArgs) -> PathBuf {
    args.jobs
        .clone()
        .unwrap_or_else(|| settings.jobs_dir.clone())
}

/// What `run` runs: the job named by `--job` (a path, or a name in the jobs directory) with
/// its rate share applied to the settings, or the job `default` over every enabled group.
pub fn run_request(
    settings: &Settings,
    job_arg: Option<&str>,
    kind: RunKind,
) -> anyhow::Result<(RunRequest, Settings, Option<Job>)> {
    let Some(arg) = job_arg else {
        // One default job per app, so two apps' runs never wait on each other's lock.
        let job = match settings.is_default_app() {
            true => "default".to_string(),
            false => format!("default.{}", settings.app_name),
        };
        let request = RunRequest {
            job,
            kind,
            selection: Selection::AllEnabled,
            follow: Default::default(),
        };
        return Ok((request, settings.clone(), None));
    };
    let path = job::job_path(arg, &settings.jobs_dir);
    let job = Job::load(&path).map_err(|e| usage(format!("--job {arg}: {e}")))?;
    let job_settings = job
        .settings_for(settings)
        .map_err(|e| usage(e.to_string()))?;
    let request = RunRequest {
        job: job.name.clone(),
        kind,
        selection: job.selection(),
        follow: job.follow.clone(),
    };
    Ok((request, job_settings, Some(job)))
}

fn check(settings: &Settings, args: JobsDirArgs) -> anyhow::Result<Exit> {
    let target = jobs_dir(settings, &args);
    let files = if target.is_file() {
        let job = Job::load(&target).and_then(|j| j.settings_for(settings).map(|_| j));
        vec![(target.clone(), job)]
    } else {
        load_checked(&target, settings).map_err(|e| usage(e.to_string()))?
    };
    if files.is_empty() {
        return Err(usage(format!(
            "no job files (*.toml) in {}",
            target.display()
        )));
    }
    let now = Utc::now();
    let mut broken = Vec::new();
    let mut shares = 0u64;
    for (_, loaded) in &files {
        match loaded {
            Ok(job) => {
                print_job(job, settings, now);
                if job.enabled {
                    shares += u64::from(job.rate_limit.unwrap_or(settings.rate_limit));
                }
            }
            Err(e) => broken.push(e.to_string()),
        }
    }
    let shared = f64::from(settings.rate_limit) * crate::run::budget::SHARED_MARGIN;
    if shares as f64 > shared && files.len() > 1 {
        println!(
            "note: the enabled jobs' caps add up to {shares} calls/s, above {shared:.0} calls/s \
             ({:.0}% of the app's budget of {} calls/s that jobs running at the same time split): \
             such jobs run below their caps, in proportion to them (set rate_limit in the job files)",
            crate::run::budget::SHARED_MARGIN * 100.0,
            settings.rate_limit
        );
    }
    if broken.is_empty() {
        println!("{} job file(s) ok", files.len());
        Ok(Exit::Success)
    } else {
        Err(usage(format!(
            "{} of {} job file(s) broken:\n{}",
            broken.len(),
            files.len(),
            broken.join("\n")
        )))
    }
}

fn print_job(job: &Job, settings: &Settings, now: chrono::DateTime<Utc>) {
    let groups = if job.tags.is_empty() {
        "every enabled group".to_string()
    } else {
        format!("enabled groups tagged {}", job.tags.join(" or "))
    };
    let rate = match job.rate_limit {
        Some(r) => format!("{r} calls/s"),
        None => format!("{} calls/s (the global limit)", settings.rate_limit),
    };
    let state = if job.enabled { "ok" } else { "ok (disabled)" };
    println!(
        "{state}  {}  {}: \"{}\" in {}, {groups}, {rate}, catch_up {}",
        job.name,
        job.path.display(),
        job.schedule.source(),
        job.timezone,
        job.catch_up.as_str()
    );
    if let Some(description) = &job.description {
        println!("    description: {}", crate::untrusted::escape(description));
    }
    println!("    read as (seconds first): {}", job.schedule.reading());
    if let Some(warning) = job.schedule.warning() {
        println!("    warning: schedule: {warning}");
    }
    let next: Vec<String> = job
        .upcoming(now, 3)
        .iter()
        .map(|t| t.format("%Y-%m-%d %a %H:%M:%S %Z").to_string())
        .collect();
    if next.is_empty() {
        println!("    next: never");
    } else {
        println!("    next: {}", next.join(", "));
    }
    println!("    {}", policy_line(job));
}

/// Every run-policy key as read: skips, budgets, read lists and retention (defaults shown too,
/// so a key that did not take is visible).
fn policy_line(job: &Job) -> String {
    let f = &job.follow;
    let or_none = |v: Option<String>| v.unwrap_or_else(|| "none".into());
    format!(
        "skip_settled {}, no_receipt_after {}, max_calls {}, max_duration {}, max_detail_calls {}, retention_keep_months {}",
        f.skip_settled,
        f.no_receipt_after.map_or("0 (never skip)".into(), |n| n.to_string()),
        or_none(f.max_calls.map(|n| n.to_string())),
        or_none(f.max_duration.map(|d| humantime::format_duration(d).to_string())),
        or_none(job.max_detail_calls.map(|n| n.to_string())),
        or_none(job.retention_keep_months.map(|n| n.to_string())),
    )
}
