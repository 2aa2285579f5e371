//! Job files: one TOML file per job in the jobs directory, job-level keys only.
//!
//! A job names an export (the ledger's `job` and its lock key), when it fires (a cron
//! expression read in a time zone), which tracked groups it covers (tags), its share of the
//! rate budget and its run policies. Global settings (database, key, region, Parquet
//! location) never come from here. Unknown keys are errors, and every error carries the
//! file, line and column. This module reads files and nothing else: no clock, no database.

use super::cron::CronExpr;
use crate::plan::FollowPolicy;
use crate::run::Selection;
use crate::settings::{Settings, MAX_RATE_LIMIT};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// A job file that cannot be used, with where the problem is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct JobError {
    pub path: PathBuf,
    /// 1-based line and column in the file, when the problem has a place.
    pub position: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, col)) => {
                write!(f, "{}:{line}:{col}: {}", self.path.display(), self.message)
            }
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

/// What the scheduler does about fire times it missed while it was not running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CatchUp {
    /// Run the job once at start-up if its last fire time passed without a run.
    Once,
    /// Wait for the next fire time.
    Skip,
}

impl CatchUp {
    pub fn as_str(self) -> &'static str {
        match self {
            CatchUp::Once => "once",
            CatchUp::Skip => "skip",
        }
    }
}

/// The file as written. `deny_unknown_fields`: a typo must not pass silently.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobFile {
    name: Option<Spanned<String>>,
    description: Option<String>,
    schedule: Spanned<String>,
    timezone: Option<Spanned<String>>,
    tags: Option<Vec<Spanned<String>>>,
    rate_limit: Option<Spanned<i64>>,
    catch_up: Option<CatchUp>,
    enabled: Option<bool>,
    skip_settled: Option<bool>,
    no_receipt_after: Option<Spanned<i64>>,
    max_calls: Option<Spanned<i64>>,
    max_duration: Option<Spanned<String>>,
    max_detail_calls: Option<Spanned<i64>>,
    retention_keep_months: Option<Spanned<i64>>,
    app: Option<Spanned<String>>,
}

/// A valid job.
#[derive(Debug, Clone)]
pub struct Job {
    /// The ledger's `job` and the lock key (the file stem unless the file says `name`).
    pub name: String,
    /// The file it came from.
    pub path: PathBuf,
    pub description: Option<String>,
    pub schedule: CronExpr,
    /// The zone the schedule is read in (IANA name; UTC by default).
    pub timezone: Tz,
    /// The groups it covers: enabled groups with any of these tags, all enabled ones if empty.
    pub tags: Vec<String>,
    /// API calls per second for this job's runs (at most the global limit); `None`: the global.
    pub rate_limit: Option<u32>,
    pub catch_up: CatchUp,
    /// A disabled job still runs with `run --job`, but the scheduler never fires it.
    pub enabled: bool,
    /// What its runs skip (settled, no-receipt seqs) and how much one run may spend.
    pub follow: FollowPolicy,
    /// The most read-list calls one of its runs makes (overrides `EXPORT_MAX_DETAIL_CALLS`).
    pub max_detail_calls: Option<u64>,
    /// After each scheduled run of the job, retention keeping this many months before the
    /// current one (as `retention --keep-months N`); `None`: no retention.
    pub retention_keep_months: Option<u32>,
    /// The Chat app its runs export for (`apps/NAME.toml`); `None`: the app `--app` /
    /// `EXPORT_APP` names, else the default app (the TIM_* settings).
    pub app: Option<String>,
}

impl Job {
    /// Reads and validates a job file.
    pub fn load(path: &Path) -> Result<Job, JobError> {
        let text = std::fs::read_to_string(path).map_err(|e| JobError {
            path: path.to_path_buf(),
            position: None,
            message: format!("cannot read the job file: {e}"),
        })?;
        Job::parse(&text, path)
    }

    /// Validates a job file's text; `path` names it in errors and gives the default name.
    ///
    /// (Over 60 lines: one check per job-file field, in the file's order, each error pointing at its span.)
    pub fn parse(text: &str, path: &Path) -> Result<Job, JobError> {
        let fail = |span: Option<std::ops::Range<usize>>, message: String| JobError {
            path: path.to_path_buf(),
            position: span.map(|s| line_col(text, s.start)),
            message,
        };
        let file: JobFile =
            toml::from_str(text).map_err(|e| fail(e.span(), e.message().trim().to_string()))?;
        let name = match &file.name {
            Some(n) => check_name(n.get_ref()).map_err(|m| fail(Some(n.span()), m))?,
            None => {
                let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
                check_name(stem.as_deref().unwrap_or(""))
                    .map_err(|m| fail(None, format!("the file name gives the job name: {m}")))?
            }
        };
        let schedule = CronExpr::parse(file.schedule.get_ref()).map_err(|e| {
            // The expression starts one character after the value's opening quote.
            let at = file.schedule.span().start + 1 + e.column - 1;
            fail(Some(at..at), format!("schedule: {e}"))
        })?;
        let timezone = match &file.timezone {
            Some(tz) => tz.get_ref().parse::<Tz>().map_err(|_| {
                fail(
                    Some(tz.span()),
                    format!(
                        "timezone: '{}' is not an IANA time zone name (e.g. UTC, Europe/Berlin, Asia/Shanghai)",
                        tz.get_ref()
                    ),
                )
            })?,
            None => Tz::UTC,
        };
        let follow = follow_policy(&file).map_err(|(span, m)| fail(Some(span), m))?;
        let mut tags = Vec::new();
        for tag in file.tags.unwrap_or_default() {
            if tag.get_ref().trim().is_empty() {
                return Err(fail(Some(tag.span()), "tags: an empty tag".into()));
            }
            tags.push(tag.into_inner());
        }
        let rate_limit = match &file.rate_limit {
            Some(r) => Some(check_rate(*r.get_ref()).map_err(|m| fail(Some(r.span()), m))?),
            None => None,
        };
        let max_detail_calls = match &file.max_detail_calls {
            Some(n) if !(0..=1_000_000_000).contains(n.get_ref()) => {
                let msg = format!(
                    "max_detail_calls: {}: expected 0 to 1000000000 read-list calls per run",
                    n.get_ref()
                );
                return Err(fail(Some(n.span()), msg));
            }
            Some(n) => Some(*n.get_ref() as u64),
            None => None,
        };
        let retention_keep_months = match &file.retention_keep_months {
            Some(n) if !(1..=1200).contains(n.get_ref()) => {
                let msg = format!(
                    "retention_keep_months: {}: expected 1 to 1200 months kept before the current one",
                    n.get_ref()
                );
                return Err(fail(Some(n.span()), msg));
            }
            Some(n) => Some(*n.get_ref() as u32),
            None => None,
        };
        let app = match &file.app {
            Some(a) => Some(
                crate::settings::apps::parse_name(a.get_ref(), &crate::settings::Origin::Default)
                    .map_err(|e| fail(Some(a.span()), format!("app: {}", e.problem)))?,
            ),
            None => None,
        };
        Ok(Job {
            app,
            follow,
            max_detail_calls,
            retention_keep_months,
            name,
            path: path.to_path_buf(),
            description: file.description,
            schedule,
            timezone,
            tags,
            rate_limit,
            catch_up: file.catch_up.unwrap_or(CatchUp::Once),
            enabled: file.enabled.unwrap_or(true),
        })
    }

    /// Applies the job's `retention_keep_months` after its scheduled run `run_id` (nothing
    /// when the key is not set): logs what it did, one line, and records it in the run's
    /// ledger row (`details.retention`). Item codes kept: 3, or the job's `no_receipt_after` if
    /// larger. A refusal or a failure is a warning, never an error of the run.
    pub async fn retention_after_run(
        &self,
        settings: &Settings,
        pool: &sqlx::PgPool,
        run_id: i64,
        stop: &tokio_util::sync::CancellationToken,
    ) {
        let Some(months) = self.retention_keep_months else {
            return;
        };
        let codes = self.follow.no_receipt_after.unwrap_or(0).max(3);
        // Retention counts on the lake: only this database's, the one it records.
        let (lake, format) = (&settings.lake, settings.table_format);
        let access = crate::sink::Access::Write;
        let target = match crate::sink::LakeTarget::open(pool, lake, format, access).await {
            Ok(target) => target,
            Err(e) => {
                tracing::warn!(job = %self.name, "retention after the run left every month in Postgres: {e:#}");
                return;
            }
        };
        let done = match settings.require_database() {
            Ok(options) => {
                let wait = (settings.lock_reconnect_timeout, stop);
                crate::ops::retention::after_run(options, pool, &target, months, codes, wait).await
            }
            Err(e) => Err(e.into()),
        };
        let recorded = match done {
            Ok(done) if done.refused_by.is_empty() => {
                tracing::info!(job = %self.name, run_id, "{}", done.line());
                serde_json::json!(done)
            }
            Ok(done) => {
                tracing::warn!(job = %self.name, run_id, "{}", done.line());
                serde_json::json!(done)
            }
            Err(e) => {
                tracing::warn!(job = %self.name, run_id, "retention after the run failed: {e:#}");
                serde_json::json!({ "keep_months": months, "error": format!("{e:#}") })
            }
        };
        if let Err(e) = crate::run::ledger::record_retention(pool, run_id, &recorded).await {
            tracing::warn!(job = %self.name, run_id, "could not record the retention in the run's ledger row: {e}");
        }
    }

    /// The first fire time strictly after `t`.
    pub fn next_fire(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = t.with_timezone(&self.timezone);
        self.schedule
            .next_after(&local)
            .map(|d| d.with_timezone(&Utc))
    }

    /// The last fire time strictly before `t`.
    pub fn prev_fire(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = t.with_timezone(&self.timezone);
        self.schedule
            .prev_before(&local)
            .map(|d| d.with_timezone(&Utc))
    }

    /// The next `n` fire times after `t`, in the job's zone.
    pub fn upcoming(&self, t: DateTime<Utc>, n: usize) -> Vec<DateTime<Tz>> {
        let mut out = Vec::with_capacity(n);
        let mut at = t;
        while out.len() < n {
            let Some(next) = self.next_fire(at) else {
                break;
            };
            out.push(next.with_timezone(&self.timezone));
            at = next;
        }
        out
    }

    /// Which tracked groups the job's runs cover.
    pub fn selection(&self) -> Selection {
        if self.tags.is_empty() {
            Selection::AllEnabled
        } else {
            Selection::Tracked {
                tags: self.tags.clone(),
            }
        }
    }

    /// The settings a run of this job uses: the global ones with the job's own rate cap (the
    /// app's budget stays the global limit). Refused when the cap is above the global limit.
    pub fn settings_for(&self, global: &Settings) -> Result<Settings, JobError> {
        let fail = |message: String| JobError {
            path: self.path.clone(),
            position: None,
            message,
        };
        let mut settings = match (&self.app, &global.app) {
            (Some(mine), Some(given)) if mine != given => {
                return Err(fail(format!(
                    "the job's app is `{mine}` but --app / EXPORT_APP says `{given}`: a job runs for its own app (leave --app out, or run another job)"
                )))
            }
            (Some(mine), _) => global.for_app(Some(mine)),
            (None, _) => global.for_app(None),
        }
        .map_err(|e| fail(e.to_string()))?;
        if let Some(rate) = self.rate_limit {
            if rate > global.rate_limit {
                return Err(JobError {
                    path: self.path.clone(),
                    position: None,
                    message: format!(
                        "rate_limit = {rate} is above the global limit of {} calls/s (EXPORT_RATE_LIMIT): a job gets a share of the budget, never more",
                        global.rate_limit
                    ),
                });
            }
            settings.job_rate_cap = Some(rate);
        }
        if let Some(n) = self.max_detail_calls {
            settings.max_detail_calls = Some(n);
        }
        Ok(settings)
    }
}

/// Where `run --job ARG` finds its file: ARG itself when it looks like a path (has a `/` or
/// ends in `.toml`), else `JOBS_DIR/ARG.toml`.
pub fn job_path(arg: &str, jobs_dir: &Path) -> PathBuf {
    if arg.contains('/') || arg.ends_with(".toml") {
        PathBuf::from(arg)
    } else {
        jobs_dir.join(format!("{arg}.toml"))
    }
}

/// One file of a jobs directory: its path, and the job or why it was refused.
pub type LoadedFile = (PathBuf, Result<Job, JobError>);

/// Every `*.toml` file in `dir` (sorted), each loaded or refused. Two files naming the same
/// job: the later one is refused.
pub fn load_dir(dir: &Path) -> Result<Vec<LoadedFile>, JobError> {
    let entries = std::fs::read_dir(dir).map_err(|e| JobError {
        path: dir.to_path_buf(),
        position: None,
        message: format!("cannot read the jobs directory: {e}"),
    })?;
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    let mut out: Vec<LoadedFile> = Vec::with_capacity(paths.len());
    for path in paths {
        let mut loaded = Job::load(&path);
        if let Ok(job) = &loaded {
            let twin = out.iter().find_map(|(p, r)| match r {
                Ok(j) if j.name == job.name => Some(p.clone()),
                _ => None,
            });
            if let Some(twin) = twin {
                loaded = Err(JobError {
                    path: path.clone(),
                    position: None,
                    message: format!(
                        "job name '{}' is already used by {}",
                        job.name,
                        twin.display()
                    ),
                });
            }
        }
        out.push((path, loaded));
    }
    Ok(out)
}

/// The follow keys: `skip_settled`, `no_receipt_after` (0: never skip), `max_calls`,
/// `max_duration` (a humantime duration: "10m", "1h 30m").
fn follow_policy(file: &JobFile) -> Result<FollowPolicy, (std::ops::Range<usize>, String)> {
    let mut policy = FollowPolicy::default();
    if let Some(skip) = file.skip_settled {
        policy.skip_settled = skip;
    }
    if let Some(k) = &file.no_receipt_after {
        policy.no_receipt_after = match *k.get_ref() {
            0 => None,
            n @ 1..=1000 => Some(n as u32),
            n => return Err((k.span(), format!(
                "no_receipt_after: {n} is not a number of runs: expected 1 to 1000, or 0 to never skip seqs without receipt"
            ))),
        };
    }
    if let Some(cap) = &file.max_calls {
        let n = *cap.get_ref();
        if n < 1 {
            return Err((
                cap.span(),
                format!("max_calls: {n}: expected at least 1 call per run"),
            ));
        }
        policy.max_calls = Some(n as u64);
    }
    if let Some(d) = &file.max_duration {
        let parsed = humantime::parse_duration(d.get_ref())
            .ok()
            .filter(|d| !d.is_zero());
        let Some(parsed) = parsed else {
            return Err((
                d.span(),
                format!(
                "max_duration: '{}' is not a duration: expected e.g. \"10m\", \"1h 30m\", \"90s\"",
                d.get_ref()
            ),
            ));
        };
        policy.max_duration = Some(parsed);
    }
    Ok(policy)
}

fn check_name(name: &str) -> Result<String, String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(name.to_string())
    } else {
        Err(format!(
            "name: '{name}' is not a job name: 1 to 64 characters of A-Z a-z 0-9 - _ ."
        ))
    }
}

fn check_rate(rate: i64) -> Result<u32, String> {
    if (1..=i64::from(MAX_RATE_LIMIT)).contains(&rate) {
        Ok(rate as u32)
    } else {
        Err(format!(
            "rate_limit: {rate} is not a rate: expected calls per second from 1 to the global limit (at most {MAX_RATE_LIMIT})"
        ))
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Job, JobError> {
        Job::parse(text, Path::new("jobs/hourly.toml"))
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_minimal_job_takes_its_name_from_the_file_and_defaults() {
        let job = parse("schedule = \"5 * * * *\"\n").unwrap();
        assert_eq!(job.name, "hourly");
        assert_eq!(job.timezone, Tz::UTC);
        assert!(job.tags.is_empty() && job.enabled && job.rate_limit.is_none());
        assert_eq!(job.catch_up, CatchUp::Once);
        assert!(matches!(job.selection(), Selection::AllEnabled));
    }

    #[test]
    fn every_key_is_read() {
        let job = parse(
            "name = \"vip\"\ndescription = \"d\"\nschedule = \"0 9 * * mon\"\ntimezone = \"Asia/Shanghai\"\n\
             tags = [\"vip\", \"beta\"]\nrate_limit = 50\ncatch_up = \"skip\"\nenabled = false\n",
        )
        .unwrap();
        assert_eq!(job.name, "vip");
        assert_eq!(job.rate_limit, Some(50));
        assert_eq!(job.catch_up, CatchUp::Skip);
        assert!(!job.enabled);
        match job.selection() {
            Selection::Tracked { tags } => assert_eq!(tags, ["vip", "beta"]),
            other => panic!("{other:?}"),
        }
        // 09:00 in Shanghai on Monday 2026-01-05 is 01:00 UTC.
        assert_eq!(
            job.next_fire(at("2026-01-01T00:00:00Z")),
            Some(at("2026-01-05T01:00:00Z"))
        );
        assert_eq!(
            job.prev_fire(at("2026-01-06T00:00:00Z")),
            Some(at("2026-01-05T01:00:00Z"))
        );
    }

    #[test]
    fn unknown_keys_are_errors_with_their_position() {
        let e = parse("schedule = \"5 * * * *\"\nrate_limt = 5\n").unwrap_err();
        assert_eq!(e.position, Some((2, 1)), "{e}");
        assert!(e.message.contains("unknown field `rate_limt`"), "{e}");
        assert!(e.to_string().starts_with("jobs/hourly.toml:2:1: "), "{e}");
        let e = parse("schedule = \"5 * * * *\"\ndatabase_url = \"postgres://x\"\n").unwrap_err();
        assert!(e.message.contains("unknown field `database_url`"), "{e}");
    }

    #[test]
    fn a_bad_schedule_points_into_the_expression() {
        let e = parse("name = \"x\"\nschedule = \"0 9 * * 8\"\n").unwrap_err();
        // Line 2: `schedule = "` is 12 characters, the 9th character of the expression is the 8.
        assert_eq!(e.position, Some((2, 21)), "{e}");
        assert!(e.message.contains("field 5 (day of week)"), "{e}");
        let e = parse("timezone = \"UTC\"\n").unwrap_err();
        assert!(e.message.contains("missing field `schedule`"), "{e}");
    }

    #[test]
    fn bad_values_are_refused() {
        let e = parse("schedule = \"5 * * * *\"\ntimezone = \"Mars/Olympus\"\n").unwrap_err();
        assert_eq!(e.position, Some((2, 12)), "{e}");
        assert!(e.message.contains("IANA"), "{e}");
        let e = parse("schedule = \"5 * * * *\"\nrate_limit = 0\n").unwrap_err();
        assert!(e.message.contains("rate_limit"), "{e}");
        let e = parse("schedule = \"5 * * * *\"\ncatch_up = \"twice\"\n").unwrap_err();
        assert!(e.message.contains("unknown variant `twice`"), "{e}");
        let e = parse("schedule = \"5 * * * *\"\nname = \"a b\"\n").unwrap_err();
        assert!(e.message.contains("not a job name"), "{e}");
        let e = parse("schedule = 5\n").unwrap_err();
        assert_eq!(e.position, Some((1, 12)), "{e}");
    }

    #[test]
    fn the_rate_share_must_fit_the_global_limit() {
        let job = parse("schedule = \"5 * * * *\"\nrate_limit = 150\n").unwrap();
        let mut global = crate::settings::resolve(Default::default()).unwrap();
        let settings = job.settings_for(&global).unwrap();
        assert_eq!(
            (
                settings.rate_limit,
                settings.job_rate_cap,
                settings.own_rate()
            ),
            (200, Some(150), 150),
            "the job's cap is its own; the app's budget stays the global limit"
        );
        global.rate_limit = 100;
        let e = job.settings_for(&global).unwrap_err();
        assert!(e.message.contains("above the global limit of 100"), "{e}");
    }

    #[test]
    fn follow_keys_are_read_and_checked() {
        let job = parse("schedule = \"5 * * * *\"\n").unwrap();
        assert_eq!(job.follow, FollowPolicy::default());
        let job = parse(
            "schedule = \"5 * * * *\"\nskip_settled = false\nno_receipt_after = 0\n\
             max_calls = 100000\nmax_duration = \"10m\"\n",
        )
        .unwrap();
        assert!(!job.follow.skip_settled);
        assert_eq!(job.follow.no_receipt_after, None);
        assert_eq!(job.follow.max_calls, Some(100_000));
        assert_eq!(
            job.follow.max_duration,
            Some(std::time::Duration::from_secs(600))
        );
        let e = parse("schedule = \"5 * * * *\"\nmax_duration = \"soon\"\n").unwrap_err();
        assert_eq!(e.position, Some((2, 16)), "{e}");
        assert!(e.message.contains("not a duration"), "{e}");
        let job = parse("schedule = \"5 * * * *\"\nmax_detail_calls = 40\n").unwrap();
        assert_eq!(job.max_detail_calls, Some(40));
        let e = parse("schedule = \"5 * * * *\"\nmax_detail_calls = -1\n").unwrap_err();
        assert!(e.message.contains("max_detail_calls"), "{e}");
        let e = parse("schedule = \"5 * * * *\"\nmax_calls = 0\n").unwrap_err();
        assert!(e.message.contains("max_calls"), "{e}");
        let e = parse("schedule = \"5 * * * *\"\nno_receipt_after = -2\n").unwrap_err();
        assert!(e.message.contains("no_receipt_after"), "{e}");
        let job = parse("schedule = \"5 * * * *\"\nretention_keep_months = 6\n").unwrap();
        assert_eq!(job.retention_keep_months, Some(6));
        assert_eq!(hourly_default().retention_keep_months, None);
        for bad in ["0", "1201", "-1"] {
            let text = format!("schedule = \"5 * * * *\"\nretention_keep_months = {bad}\n");
            let e = parse(&text).unwrap_err();
            assert!(e.message.contains("retention_keep_months"), "{e}");
            assert_eq!(e.position, Some((2, 25)), "{e}");
        }
    }

    fn hourly_default() -> Job {
        parse("schedule = \"5 * * * *\"\n").unwrap()
    }

    #[test]
    fn job_arguments_are_paths_or_names() {
        let dir = Path::new("/etc/jobs");
        assert_eq!(
            job_path("hourly", dir),
            PathBuf::from("/etc/jobs/hourly.toml")
        );
        assert_eq!(job_path("jobs/x.toml", dir), PathBuf::from("jobs/x.toml"));
        assert_eq!(job_path("/abs/y", dir), PathBuf::from("/abs/y"));
    }

    #[test]
    fn a_directory_loads_each_file_and_refuses_twins() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.toml"), "schedule = \"5 * * * *\"\n").unwrap();
        std::fs::write(
            dir.path().join("b.toml"),
            "name = \"a\"\nschedule = \"@daily\"\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("c.toml"), "schedule = \"nope\"\n").unwrap();
        std::fs::write(dir.path().join("README.md"), "not a job").unwrap();
        let loaded = load_dir(dir.path()).unwrap();
        assert_eq!(loaded.len(), 3);
        assert!(loaded[0].1.is_ok());
        let twin = loaded[1].1.as_ref().unwrap_err();
        assert!(twin.message.contains("already used by"), "{twin}");
        assert!(loaded[2].1.is_err());
    }
}
