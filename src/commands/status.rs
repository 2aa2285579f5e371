//! `receipt-exporter status [--job NAME] [--max-age AGE]`: one line on a job's freshness; with
//! `--max-age`, exit 4 when its newest successful run is older (or absent): what a monitor calls.

use crate::cli::StatusArgs;
use crate::exit::Exit;
use crate::ops::history::{self, Freshness};
use crate::settings::Settings;
use std::time::Duration;

pub async fn run(settings: &Settings, args: StatusArgs) -> anyhow::Result<Exit> {
    let pool = super::connect_migrated(settings).await?;
    // `--app NAME` without `--job`: that app's default job (`run --app NAME`'s).
    let job = match (&settings.app, args.job.as_str()) {
        (Some(_), "default") if !settings.is_default_app() => {
            format!("default.{}", settings.app_name)
        }
        _ => args.job.clone(),
    };
    let known = known_jobs(settings, &pool).await?;
    if !known.contains(&job) {
        return Err(crate::exit::usage(format!(
            "no job '{}': no job file in {} and no run in the ledger; known jobs: {}",
            job,
            settings.jobs_dir.display(),
            known.into_iter().collect::<Vec<_>>().join(", ")
        )));
    }
    let app = settings.app.as_ref().map(|_| settings.app_name.as_str());
    let found = history::freshness(&pool, &job, app).await?;
    let (line, fresh) = judge(&job, &found, args.max_age);
    if args.json {
        let doc = serde_json::json!({
            "job": job,
            "app": found.last_run.as_ref().and_then(|r| r.app.clone()).or(app.map(str::to_string)),
            "fresh": fresh,
            "line": line,
            "last_success_run_id": found.last_success.as_ref().map(|s| s.0),
            "last_success_at": found.last_success.as_ref().map(|s| s.1),
            "last_success_age_seconds": found.last_success.as_ref().map(|s| s.2),
            "last_run": found.last_run,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!("{line}");
        if let Some((run_id, r)) = crate::listen::reconcile::latest(&pool, &job).await? {
            println!(
                "webhook (run {run_id}): {} of the pulled messages kept fresh by the webhook, {} changes the pull found that it missed",
                r.total.webhook_fresh, r.total.pull_found
            );
        }
    }
    Ok(if fresh { Exit::Success } else { Exit::Stale })
}

/// The jobs `status` can speak of: `default`, every job file of the jobs directory (also a
/// job that never ran: it is stale, not unknown), and every job of the ledger.
async fn known_jobs(
    settings: &Settings,
    pool: &sqlx::PgPool,
) -> anyhow::Result<std::collections::BTreeSet<String>> {
    let mut known: std::collections::BTreeSet<String> =
        history::jobs(pool).await?.into_iter().collect();
    known.insert("default".to_string());
    let files = crate::schedule::job::load_dir(&settings.jobs_dir).unwrap_or_default();
    known.extend(
        files
            .into_iter()
            .filter_map(|(_, job)| job.ok().map(|j| j.name)),
    );
    Ok(known)
}

fn ago(seconds: f64) -> String {
    let rounded = Duration::from_secs(seconds.max(0.0).round() as u64);
    format!("{} ago", humantime::format_duration(rounded))
}

/// The line and whether the job is fresh (always fresh without a bound).
pub fn judge(job: &str, f: &Freshness, max_age: Option<Duration>) -> (String, bool) {
    let fresh = match (&f.last_success, max_age) {
        (_, None) => true,
        (Some((_, _, age)), Some(max)) => *age <= max.as_secs_f64(),
        (None, Some(_)) => false,
    };
    let verdict = match (max_age, fresh) {
        (None, _) => String::new(),
        (Some(max), true) => format!("FRESH (max age {}): ", humantime::format_duration(max)),
        (Some(max), false) => format!("STALE (max age {}): ", humantime::format_duration(max)),
    };
    let success = match &f.last_success {
        Some((run_id, at, age)) => format!(
            "last success {} ({}, run {run_id})",
            at.format("%Y-%m-%d %H:%M:%S UTC"),
            ago(*age)
        ),
        None => "no successful run".to_string(),
    };
    let last = match (&f.last_run, f.last_run_age) {
        (None, _) => "no run at all".to_string(),
        (Some(r), None) => format!(
            "run {} {} since {}",
            r.run_id,
            r.status,
            r.started_at.format("%Y-%m-%d %H:%M:%S UTC")
        ),
        (Some(r), Some(age)) => {
            let error = r
                .error
                .as_deref()
                .map(|e| format!(": {}", e.lines().next().unwrap_or("")))
                .unwrap_or_default();
            format!(
                "last outcome {} ({}, run {}){error}",
                r.status,
                ago(age),
                r.run_id
            )
        }
    };
    (format!("job {job}: {verdict}{success}; {last}"), fresh)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    #[test]
    fn the_bound_decides_and_no_success_is_stale() {
        let f = Freshness {
            last_success: Some((7, Utc::now(), 3600.0)),
            ..Default::default()
        };
        let two_hours = Some(Duration::from_secs(7200));
        let (line, fresh) = judge("default", &f, two_hours);
        assert!(
            fresh && line.contains("FRESH") && line.contains("run 7"),
            "{line}"
        );
        let (line, fresh) = judge("default", &f, Some(Duration::from_secs(1800)));
        assert!(!fresh && line.contains("STALE"), "{line}");
        let (line, fresh) = judge("x", &Freshness::default(), two_hours);
        assert!(!fresh && line.contains("no successful run"), "{line}");
        assert!(judge("x", &Freshness::default(), None).1);
    }
}
