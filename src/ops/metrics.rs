//! Metrics for a batch job, in the Prometheus text format (version 0.0.4), built from the
//! ledger so every job's series survive whichever process writes them.
//!
//! After each run (and each scheduler tick) [`publish`] rewrites the metrics file atomically
//! (a temporary file in the same directory, then a rename: node_exporter's textfile collector
//! never reads half a file; mode 0644, so the collector's user can read it) and pushes the
//! job's series to a Pushgateway; [`scrape`] renders the same for the `/metrics` endpoint
//! (`super::endpoint`). Names follow the Prometheus conventions: units in the name, `_total`
//! for counters, and the label `export_job` (not `job`, which Prometheus sets itself). The
//! `_total` counters sum the whole ledger: pruning old ledger rows looks like a counter reset,
//! which `rate()` tolerates. A job's `first_run_timestamp_seconds` exists from its first run
//! and its `last_success_timestamp_seconds` from its first finished run (0 until one
//! succeeds), so a staleness alert also fires for a job that never succeeded; the outcomes of
//! `lake verify` and `doctor` come from `receipts.check_outcomes`.

use super::checks::CheckOutcome;
use super::OpsError;
use crate::settings::Settings;
use crate::untrusted::Shown;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

/// The statuses a finished run can have: one `last_run_outcome` series each.
pub const OUTCOMES: [&str; 5] = ["succeeded", "partial", "failed", "interrupted", "abandoned"];

/// The Pushgateway's `job` label for everything we push.
pub const PUSH_JOB: &str = "receipt_exporter";

/// The newest finished run of a job.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct LastRun {
    pub job: String,
    pub status: String,
    pub finished_at: DateTime<Utc>,
    pub duration_seconds: f64,
    pub receipts_written: i64,
    pub api_calls: i64,
    pub retries: i64,
    pub rate_limited: i64,
    pub groups_failed: i32,
    /// Seqs the planner skipped: settled (unread 0), and without a receipt.
    pub seqs_skipped_settled: i64,
    pub seqs_skipped_no_receipt: i64,
    /// Seqs a per-run budget left for the next run.
    pub seqs_left: i64,
}

/// What the metrics say about one job.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobMetrics {
    pub job: String,
    /// The app of the job's newest run (`default`: the TIM_* settings): every series of the
    /// job carries it as the label `app`; empty (no label) for a job that never ran.
    pub app: String,
    pub last_success: Option<DateTime<Utc>>,
    /// When the job's first run (any status) started: a series from the first attempt on.
    pub first_run: Option<DateTime<Utc>>,
    pub last_run: Option<LastRun>,
    /// Finished runs by status.
    pub runs: BTreeMap<String, i64>,
    /// Sums over every finished run: receipts, calls, retries, rate-limited answers.
    pub receipts_total: i64,
    pub api_calls_total: i64,
    pub retries_total: i64,
    pub rate_limited_total: i64,
}

/// Every job's metrics from the ledger (running runs are left out until they finish). The
/// listener's live runs (`kind = 'listen'`) are left out too: one lasts as long as the
/// listener, so the staleness rule would page about it; `listen` serves its own `/metrics`.
///
/// (Over 60 lines: one query per figure of the ledger, each folded into the jobs' entries.)
pub async fn load(pool: &PgPool) -> sqlx::Result<Vec<JobMetrics>> {
    let mut jobs: BTreeMap<String, JobMetrics> = BTreeMap::new();
    let totals: Vec<(String, String, i64, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT job, status, count(*), sum(receipts_written)::bigint, sum(api_calls)::bigint,
                sum(retries)::bigint, sum(rate_limited)::bigint
         FROM receipts.export_runs WHERE status <> 'running' AND kind <> 'listen' GROUP BY job, status",
    )
    .fetch_all(pool)
    .await?;
    for (job, status, runs, receipts, calls, retries, limited) in totals {
        let m = jobs.entry(job.clone()).or_insert_with(|| JobMetrics {
            job,
            ..Default::default()
        });
        m.runs.insert(status, runs);
        m.receipts_total += receipts;
        m.api_calls_total += calls;
        m.retries_total += retries;
        m.rate_limited_total += limited;
    }
    let last: Vec<LastRun> = sqlx::query_as(
        "SELECT DISTINCT ON (job) job, status, finished_at,
                EXTRACT(EPOCH FROM finished_at - started_at)::float8 AS duration_seconds,
                receipts_written, api_calls, retries, rate_limited, groups_failed,
                seqs_skipped_settled, seqs_skipped_no_receipt, seqs_left
         FROM receipts.export_runs
         WHERE status <> 'running' AND finished_at IS NOT NULL AND kind <> 'listen'
         ORDER BY job, finished_at DESC, run_id DESC",
    )
    .fetch_all(pool)
    .await?;
    for run in last {
        if let Some(m) = jobs.get_mut(&run.job) {
            m.last_run = Some(run);
        }
    }
    let successes: Vec<(String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT job, max(finished_at) FROM receipts.export_runs
         WHERE status = 'succeeded' AND finished_at IS NOT NULL AND kind <> 'listen' GROUP BY job",
    )
    .fetch_all(pool)
    .await?;
    for (job, at) in successes {
        if let Some(m) = jobs.get_mut(&job) {
            m.last_success = Some(at);
        }
    }
    let apps: Vec<(String, String)> = sqlx::query_as(
        "SELECT DISTINCT ON (job) job, coalesce(app, 'default') FROM receipts.export_runs
         WHERE kind <> 'listen' ORDER BY job, started_at DESC, run_id DESC",
    )
    .fetch_all(pool)
    .await?;
    for (job, app) in apps {
        if let Some(m) = jobs.get_mut(&job) {
            m.app = app;
        }
    }
    let firsts: Vec<(String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT job, min(started_at) FROM receipts.export_runs WHERE kind <> 'listen' GROUP BY job",
    )
    .fetch_all(pool)
    .await?;
    for (job, at) in firsts {
        if let Some(m) = jobs.get_mut(&job) {
            m.first_run = Some(at);
        }
    }
    Ok(jobs.into_values().collect())
}

/// One metric family: its samples as (labels, value).
struct Family {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    samples: Vec<(Vec<(&'static str, String)>, f64)>,
}

fn seconds(at: DateTime<Utc>) -> f64 {
    at.timestamp_millis() as f64 / 1000.0
}

/// How a per-job sample is read from a job's figures.
type Get = fn(&JobMetrics) -> Option<f64>;

/// The families with one sample per job: name, help, type, and the sample.
const PER_JOB: [(&str, &str, &str, Get); 16] = [
    (
        "receipt_exporter_last_success_timestamp_seconds",
        "When the newest successful run of the job finished (Unix time); 0: it never succeeded.",
        "gauge",
        |m| {
            m.last_run
                .as_ref()
                .map(|_| m.last_success.map_or(0.0, seconds))
        },
    ),
    (
        "receipt_exporter_first_run_timestamp_seconds",
        "When the job's first run started (Unix time): the series exists from the first attempt.",
        "gauge",
        |m| m.first_run.map(seconds),
    ),
    (
        "receipt_exporter_last_run_timestamp_seconds",
        "When the newest finished run of the job finished (Unix time).",
        "gauge",
        |m| m.last_run.as_ref().map(|r| seconds(r.finished_at)),
    ),
    (
        "receipt_exporter_last_run_duration_seconds",
        "How long the newest finished run took.",
        "gauge",
        |m| m.last_run.as_ref().map(|r| r.duration_seconds),
    ),
    (
        "receipt_exporter_last_run_receipts",
        "Receipts the newest finished run wrote.",
        "gauge",
        |m| m.last_run.as_ref().map(|r| r.receipts_written as f64),
    ),
    (
        "receipt_exporter_last_run_api_calls",
        "Chat API calls of the newest finished run.",
        "gauge",
        |m| m.last_run.as_ref().map(|r| r.api_calls as f64),
    ),
    (
        "receipt_exporter_last_run_retries",
        "Retried API calls of the newest finished run.",
        "gauge",
        |m| m.last_run.as_ref().map(|r| r.retries as f64),
    ),
    (
        "receipt_exporter_last_run_rate_limited_answers",
        "Rate-limited API answers in the newest finished run.",
        "gauge",
        |m| m.last_run.as_ref().map(|r| r.rate_limited as f64),
    ),
    (
        "receipt_exporter_last_run_groups_failed",
        "Groups that failed in the newest finished run.",
        "gauge",
        |m| m.last_run.as_ref().map(|r| f64::from(r.groups_failed)),
    ),
    (
        "receipt_exporter_last_run_seqs_skipped_settled",
        "Seqs the newest finished run skipped because their last snapshot had unread_num 0.",
        "gauge",
        |m| m.last_run.as_ref().map(|r| r.seqs_skipped_settled as f64),
    ),
    (
        "receipt_exporter_last_run_seqs_skipped_no_receipt",
        "Seqs the newest finished run skipped because they answered 10062 run after run.",
        "gauge",
        |m| {
            m.last_run
                .as_ref()
                .map(|r| r.seqs_skipped_no_receipt as f64)
        },
    ),
    (
        "receipt_exporter_last_run_seqs_left",
        "Seqs the newest finished run's budget (max_calls, max_duration) left for the next run.",
        "gauge",
        |m| m.last_run.as_ref().map(|r| r.seqs_left as f64),
    ),
    (
        "receipt_exporter_receipts_total",
        "Receipts written by all finished runs in the ledger.",
        "counter",
        |m| Some(m.receipts_total as f64),
    ),
    (
        "receipt_exporter_api_calls_total",
        "Chat API calls of all finished runs in the ledger.",
        "counter",
        |m| Some(m.api_calls_total as f64),
    ),
    (
        "receipt_exporter_retries_total",
        "Retried API calls of all finished runs in the ledger.",
        "counter",
        |m| Some(m.retries_total as f64),
    ),
    (
        "receipt_exporter_rate_limited_answers_total",
        "Rate-limited API answers of all finished runs in the ledger.",
        "counter",
        |m| Some(m.rate_limited_total as f64),
    ),
];

/// `jobs` with an empty entry for each of `known` the ledger has no finished run of (a job
/// file that never ran): its `runs_total` series show it, at 0.
pub fn with_known(mut jobs: Vec<JobMetrics>, known: &[String]) -> Vec<JobMetrics> {
    for name in known {
        if !jobs.iter().any(|m| &m.job == name) {
            jobs.push(JobMetrics {
                job: name.clone(),
                ..Default::default()
            });
        }
    }
    jobs.sort_by(|a, b| a.job.cmp(&b.job));
    jobs
}

/// The families of the checks' outcomes (`lake verify`, `doctor`), one sample per check.
fn check_families(checks: &[CheckOutcome]) -> Vec<Family> {
    let per_check = |name, help, get: fn(&CheckOutcome) -> f64| Family {
        name,
        help,
        kind: "gauge",
        samples: checks
            .iter()
            .map(|c| (vec![("check", c.check_name.clone())], get(c)))
            .collect(),
    };
    vec![
        per_check(
            "receipt_exporter_check_success",
            "1 when the newest run of the check (lake_verify, doctor) found no problem, else 0.",
            |c| f64::from(u8::from(c.ok)),
        ),
        per_check(
            "receipt_exporter_check_problems",
            "Problems the newest run of the check found.",
            |c| f64::from(c.problems),
        ),
        per_check(
            "receipt_exporter_check_timestamp_seconds",
            "When the check last ran (Unix time).",
            |c| seconds(c.checked_at),
        ),
    ]
}

/// The families and their samples for `jobs`, in a fixed order.
fn families(jobs: &[JobMetrics]) -> Vec<Family> {
    let mut out: Vec<Family> = PER_JOB
        .into_iter()
        .map(|(name, help, kind, get)| Family {
            name,
            help,
            kind,
            samples: jobs
                .iter()
                .filter_map(|m| get(m).map(|v| (vec![("export_job", m.job.clone())], v)))
                .collect(),
        })
        .collect();
    out.insert(4, outcome_family(jobs));
    out.push(runs_family(jobs));
    // Every job's series carry its app (issue 26: one daemon, many apps).
    for family in &mut out {
        for (labels, _) in &mut family.samples {
            let app = labels
                .iter()
                .find(|(name, _)| *name == "export_job")
                .and_then(|(_, job)| jobs.iter().find(|m| &m.job == job))
                .map(|m| m.app.clone())
                .filter(|app| !app.is_empty());
            if let Some(app) = app {
                labels.push(("app", app));
            }
        }
    }
    out
}

/// One series per possible outcome, 1 for the newest finished run's, 0 for the others.
fn outcome_family(jobs: &[JobMetrics]) -> Family {
    let mut samples = Vec::new();
    for m in jobs {
        let Some(run) = &m.last_run else { continue };
        for outcome in OUTCOMES {
            let labels = vec![("export_job", m.job.clone()), ("outcome", outcome.into())];
            samples.push((labels, f64::from(u8::from(run.status == outcome))));
        }
    }
    Family {
        name: "receipt_exporter_last_run_outcome",
        help: "How the newest finished run of the job ended: 1 for its outcome, 0 for the others.",
        kind: "gauge",
        samples,
    }
}

fn runs_family(jobs: &[JobMetrics]) -> Family {
    let mut samples = Vec::new();
    for m in jobs {
        for outcome in OUTCOMES {
            let n = m.runs.get(outcome).copied().unwrap_or(0);
            let labels = vec![("export_job", m.job.clone()), ("outcome", outcome.into())];
            samples.push((labels, n as f64));
        }
    }
    Family {
        name: "receipt_exporter_runs_total",
        help: "Finished runs in the ledger, by outcome.",
        kind: "counter",
        samples,
    }
}

/// A label value as the text format wants it.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

/// The text format for `jobs`. Without `job_label` the `export_job` label is left out: a
/// Pushgateway adds it from the grouping key, and refuses pushed labels that repeat it.
pub fn render(jobs: &[JobMetrics], job_label: bool) -> String {
    render_families(families(jobs), job_label)
}

/// Everything a metrics file or a scrape shows: every job's series and the checks' outcomes.
pub fn render_all(jobs: &[JobMetrics], checks: &[CheckOutcome]) -> String {
    let mut families = families(jobs);
    families.extend(check_families(checks));
    render_families(families, true)
}

fn render_families(families: Vec<Family>, job_label: bool) -> String {
    let mut out = String::new();
    for family in families {
        if family.samples.is_empty() {
            continue;
        }
        let _ = writeln!(out, "# HELP {} {}", family.name, family.help);
        let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind);
        for (labels, value) in &family.samples {
            let shown: Vec<String> = labels
                .iter()
                .filter(|(name, _)| job_label || *name != "export_job")
                .map(|(name, v)| format!("{name}=\"{}\"", escape(v)))
                .collect();
            let labels = if shown.is_empty() {
                String::new()
            } else {
                format!("{{{}}}", shown.join(","))
            };
            let _ = writeln!(out, "{}{labels} {}", family.name, number(*value));
        }
    }
    out
}

/// What a scrape of the `/metrics` endpoint answers: every job's series from the ledger (and
/// an empty entry for each `known` job that never finished a run), the checks' outcomes.
pub async fn scrape(pool: &PgPool, known: &[String]) -> Result<String, String> {
    let read = async {
        let jobs = with_known(load(pool).await?, known);
        let checks = super::checks::load(pool).await?;
        sqlx::Result::Ok(render_all(&jobs, &checks))
    };
    read.await
        .map_err(|e| format!("the run ledger cannot be read: {}", OpsError::Ledger(e)))
}

/// Rebuilds the metrics file from the ledger: every job's series, written atomically.
pub async fn write_metrics_file(pool: &PgPool, path: &Path) -> Result<(), OpsError> {
    let checks = super::checks::load(pool).await?;
    let text = render_all(&load(pool).await?, &checks);
    write_atomically(path, text.as_bytes())
        .await
        .map_err(|source| OpsError::MetricsFile {
            path: path.display().to_string(),
            source,
        })
}

/// Writes a temporary file next to `path` (same file system), syncs it and renames it over
/// `path`. The temporary name does not end in `.prom`, so the collector never reads it; it is
/// created new under a random name, so a link planted in the directory cannot redirect the
/// write, and the rename replaces a link at `path` rather than writing through it.
async fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let prefix = format!(".{name}.");
    let (path, bytes) = (path.to_path_buf(), bytes.to_vec());
    // A missing directory is created, as the Parquet directory is (the first run makes it).
    tokio::fs::create_dir_all(&dir).await?;
    tokio::task::spawn_blocking(move || {
        let mut file = crate::files::create_beside(&dir, &prefix, ".tmp")?;
        // Metrics are no secret, and node_exporter reads them as another user.
        set_readable(file.as_file())?;
        std::io::Write::write_all(&mut file, &bytes)?;
        file.as_file().sync_all()?;
        // Dropped on an error, the temporary file is removed.
        file.persist(&path).map(|_| ()).map_err(|e| e.error)
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Mode 0644: the textfile collector runs as its own user.
fn set_readable(file: &std::fs::File) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(0o644))
}

/// Whether the metrics file can be written where it is configured: its directory (created if
/// missing, as a run would) takes a new file. `Err` says what is wrong and how to fix it.
pub fn check_writable(path: &Path) -> Result<String, String> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let probe = std::fs::create_dir_all(&dir)
        .and_then(|_| crate::files::create_beside(&dir, ".receipt-exporter-probe.", ".tmp"));
    match probe {
        Ok(_) => Ok(format!(
            "{} can be written (mode 0644, readable by node_exporter)",
            path.display()
        )),
        Err(e) => Err(format!(
            "EXPORT_METRICS_FILE {}: its directory {} does not take a new file: {e}; \
             create it writable for the exporter's user (see the README's deployment section), \
             or set EXPORT_METRICS_FILE elsewhere",
            path.display(),
            dir.display()
        )),
    }
}

/// The Pushgateway URL of one job's group: `/metrics/job/receipt_exporter/export_job/<job>`.
/// A job name with a `/` goes base64url-encoded, as the Pushgateway's `@base64` form allows.
pub fn push_url(base: &reqwest::Url, job: &str) -> String {
    use base64::Engine as _;
    let base = base.as_str().trim_end_matches('/');
    let value = if job.contains('/') || job.is_empty() {
        let encoded = base64::engine::general_purpose::URL_SAFE.encode(job);
        format!(
            "export_job@base64/{}",
            if encoded.is_empty() {
                "=".into()
            } else {
                encoded
            }
        )
    } else {
        format!(
            "export_job/{}",
            percent_encoding::utf8_percent_encode(job, percent_encoding::NON_ALPHANUMERIC)
        )
    };
    format!("{base}/metrics/job/{PUSH_JOB}/{value}")
}

/// Pushes `job`'s series (from the ledger) to the Pushgateway with PUT, which replaces that
/// job's group there and leaves the other jobs' groups alone.
///
/// (Over 60 lines: the request and its three outcomes (a redirect refused, an error with the start of its body, success), read top to bottom.)
pub async fn push_metrics(
    pool: &PgPool,
    gateway: &reqwest::Url,
    job: &str,
) -> Result<(), OpsError> {
    let jobs: Vec<JobMetrics> = load(pool)
        .await?
        .into_iter()
        .filter(|m| m.job == job)
        .collect();
    let url = push_url(gateway, job);
    let fail = |detail: String| OpsError::Push {
        url: url.clone(),
        detail,
    };
    // A Pushgateway never redirects: one that does is not the configured one, and is not
    // followed (nor told where the push came from).
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .referer(false)
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| fail(e.without_url().to_string()))?;
    let mut answer = client
        .put(&url)
        .header(reqwest::header::CONTENT_TYPE, "text/plain; version=0.0.4")
        .body(render(&jobs, false))
        .send()
        .await
        .map_err(|e| fail(e.without_url().to_string()))?;
    let status = answer.status();
    if status.is_redirection() {
        let target = answer
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .and_then(|l| gateway.join(l).ok())
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_else(|| "(no valid Location)".into());
        let host = gateway.host_str().unwrap_or_default();
        return Err(fail(format!(
            "the Pushgateway's host {host} answered HTTP {status}, redirecting to host {}: not followed; check EXPORT_PUSHGATEWAY_URL",
            Shown(&target)
        )));
    }
    if !status.is_success() {
        // The start of the gateway's explanation is enough: read no more of a body than that.
        let mut body = Vec::new();
        while let Ok(Some(chunk)) = answer.chunk().await {
            body.extend_from_slice(&chunk);
            if body.len() >= 4096 {
                break;
            }
        }
        let body = String::from_utf8_lossy(&body);
        return Err(fail(format!(
            "HTTP {status}: {}",
            crate::untrusted::server_text(body.trim(), &[], 200)
        )));
    }
    Ok(())
}

/// After a run or a scheduler tick: rewrites the metrics file and pushes `jobs` to the
/// Pushgateway, as configured. Failures are logged, never returned: metrics must not change
/// how a run ends.
pub async fn publish(settings: &Settings, pool: &PgPool, jobs: &[&str]) {
    if let Some(path) = &settings.metrics_file {
        if let Err(e) = write_metrics_file(pool, path).await {
            tracing::warn!("{e}");
        }
    }
    if let Some(gateway) = &settings.pushgateway_url {
        for job in jobs {
            if let Err(e) = push_metrics(pool, gateway, job).await {
                tracing::warn!("{e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_metrics_file_replaces_a_planted_link_and_never_writes_through_it() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let path = dir.path().join("receipts.prom");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        // The temporary name of earlier versions, planted too: no longer used.
        std::os::unix::fs::symlink(&victim, dir.path().join(".receipts.prom.1-0.tmp")).unwrap();
        write_atomically(&path, b"metric 1\n").await.unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(!std::fs::symlink_metadata(&path).unwrap().is_symlink());
        assert_eq!(std::fs::read(&path).unwrap(), b"metric 1\n");
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".tmp") && !n.contains(".1-0."))
            .collect();
        assert!(names.is_empty(), "temporary files left: {names:?}");
    }

    fn job(name: &str, status: &str) -> JobMetrics {
        let at = DateTime::parse_from_rfc3339("2026-11-25T10:00:00.5Z")
            .unwrap()
            .to_utc();
        JobMetrics {
            job: name.into(),
            app: String::new(),
            last_success: Some(at),
            first_run: Some(at),
            last_run: Some(LastRun {
                job: name.into(),
                status: status.into(),
                finished_at: at,
                duration_seconds: 12.25,
                receipts_written: 100,
                api_calls: 3,
                retries: 1,
                rate_limited: 1,
                groups_failed: 0,
                seqs_skipped_settled: 4,
                seqs_skipped_no_receipt: 2,
                seqs_left: 0,
            }),
            runs: [("succeeded".to_string(), 2)].into(),
            receipts_total: 200,
            api_calls_total: 6,
            retries_total: 1,
            rate_limited_total: 1,
        }
    }

    #[test]
    fn render_names_every_series_with_its_job_and_units() {
        let text = render(
            &[job("default", "partial"), job("night\"ly", "succeeded")],
            true,
        );
        assert!(
            text.contains("# TYPE receipt_exporter_receipts_total counter\n"),
            "{text}"
        );
        assert!(text.contains(
            "receipt_exporter_last_success_timestamp_seconds{export_job=\"default\"} 1795600800.5\n"
        ), "{text}");
        assert!(text.contains(
            "receipt_exporter_last_run_duration_seconds{export_job=\"default\"} 12.25\n"
        ));
        assert!(text.contains(
            "receipt_exporter_last_run_outcome{export_job=\"default\",outcome=\"partial\"} 1\n"
        ));
        assert!(text.contains(
            "receipt_exporter_last_run_outcome{export_job=\"default\",outcome=\"succeeded\"} 0\n"
        ));
        assert!(
            text.contains(
                "receipt_exporter_runs_total{export_job=\"night\\\"ly\",outcome=\"succeeded\"} 2\n"
            ),
            "{text}"
        );
        assert!(!text.contains("{job="), "{text}");
    }

    #[test]
    fn a_job_that_never_succeeded_has_its_series_from_the_first_attempt() {
        let mut failing = job("hourly", "failed");
        failing.last_success = None;
        let jobs = with_known(vec![failing], &["hourly".into(), "nightly".into()]);
        let text = render_all(&jobs, &[]);
        assert!(
            text.contains(
                "receipt_exporter_last_success_timestamp_seconds{export_job=\"hourly\"} 0\n"
            ),
            "{text}"
        );
        assert!(text.contains(
            "receipt_exporter_first_run_timestamp_seconds{export_job=\"hourly\"} 1795600800.5\n"
        ), "{text}");
        // A job file that never ran: known, at 0 runs, no timestamps to judge it by.
        assert!(
            text.contains(
                "receipt_exporter_runs_total{export_job=\"nightly\",outcome=\"failed\"} 0\n"
            ),
            "{text}"
        );
        assert!(
            !text.contains("timestamp_seconds{export_job=\"nightly\"}"),
            "{text}"
        );
        let check = CheckOutcome {
            check_name: "lake_verify".into(),
            checked_at: DateTime::parse_from_rfc3339("2026-11-25T10:00:00Z")
                .unwrap()
                .to_utc(),
            ok: false,
            problems: 2,
        };
        let text = render_all(&jobs, &[check]);
        assert!(
            text.contains("receipt_exporter_check_success{check=\"lake_verify\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("receipt_exporter_check_problems{check=\"lake_verify\"} 2\n"),
            "{text}"
        );
    }

    #[test]
    fn render_for_a_push_leaves_the_grouping_label_out() {
        let text = render(&[job("default", "succeeded")], false);
        assert!(!text.contains("export_job"), "{text}");
        assert!(
            text.contains("receipt_exporter_receipts_total 200\n"),
            "{text}"
        );
        assert!(
            text.contains("receipt_exporter_last_run_outcome{outcome=\"failed\"} 0\n"),
            "{text}"
        );
    }

    #[test]
    fn push_urls_encode_the_job() {
        let base = reqwest::Url::parse("http://pg:9091/").unwrap();
        assert_eq!(
            push_url(&base, "default"),
            "http://pg:9091/metrics/job/receipt_exporter/export_job/default"
        );
        assert_eq!(
            push_url(&base, "a b"),
            "http://pg:9091/metrics/job/receipt_exporter/export_job/a%20b"
        );
        assert_eq!(
            push_url(&base, "a/b"),
            "http://pg:9091/metrics/job/receipt_exporter/export_job@base64/YS9i"
        );
    }
}
