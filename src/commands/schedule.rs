//! `receipt-exporter schedule`: the in-process scheduler, for hosts without cron or systemd
//! timers. SIGTERM/SIGINT stop it (running runs are interrupted cleanly, exit 0); SIGHUP
//! re-reads the job files. With `--metrics-listen` it serves `/metrics` meanwhile.

use crate::cli::JobsDirArgs;
use crate::exit::Exit;
use crate::ops::endpoint::{Endpoint, Scrape};
use crate::schedule::scheduler::Scheduler;
use crate::settings::Settings;
use sqlx::PgPool;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub async fn run(settings: &Settings, args: JobsDirArgs) -> anyhow::Result<Exit> {
    let jobs_dir = super::jobs::jobs_dir(settings, &args);
    check_apps(settings, &jobs_dir)?;
    // What the daemon reports through must work before it starts: exit 2 otherwise.
    if let Some(path) = &settings.metrics_file {
        crate::ops::metrics::check_writable(path).map_err(crate::exit::usage)?;
    }
    let endpoint = match settings.metrics_listen {
        Some(addr) => Some(Endpoint::bind(addr).await?),
        None => None,
    };
    let pool = super::connect_migrated(settings).await?;
    // Handlers are installed before the loop starts, so no signal is lost in between.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => tracing::warn!("SIGTERM: stopping the scheduler"),
            _ = int.recv() => tracing::warn!("SIGINT: stopping the scheduler"),
        }
    };
    let (reload_tx, reloads) = mpsc::channel(1);
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            // A reload already pending covers this one too.
            let _ = reload_tx.try_send(());
        }
    });
    let serving = CancellationToken::new();
    if let Some(endpoint) = endpoint {
        endpoint.serve(ledger_scrape(&pool, Some(&jobs_dir)), serving.clone());
    }
    tracing::info!(dir = %jobs_dir.display(), "scheduler starting");
    let done = Scheduler {
        settings: settings.clone(),
        pool,
        jobs_dir,
    }
    .run(shutdown, reloads)
    .await;
    serving.cancel();
    done?;
    Ok(Exit::Success)
}

/// A scrape of the ledger's series for the `/metrics` endpoint. With `jobs_dir`, the enabled
/// jobs of its files that never finished a run are shown too (their last success is 0), so a
/// staleness alert covers a job that has not run yet.
pub fn ledger_scrape(pool: &PgPool, jobs_dir: Option<&Path>) -> Scrape {
    let pool = pool.clone();
    let jobs_dir: Option<PathBuf> = jobs_dir.map(Path::to_path_buf);
    Arc::new(move || {
        let (pool, jobs_dir) = (pool.clone(), jobs_dir.clone());
        Box::pin(async move {
            let known = jobs_dir.as_deref().map(enabled_jobs).unwrap_or_default();
            crate::ops::metrics::scrape(&pool, &known).await
        })
    })
}

/// The names of the enabled jobs in `dir` (broken files left out: the scheduler logs them).
fn enabled_jobs(dir: &Path) -> Vec<String> {
    crate::schedule::job::load_dir(dir)
        .map(|files| {
            files
                .into_iter()
                .filter_map(|(_, job)| job.ok())
                .filter(|job| job.enabled)
                .map(|job| job.name)
                .collect()
        })
        .unwrap_or_default()
}

/// The API settings of every app the enabled jobs run for (each job's `app`, else `--app`,
/// else the default app's TIM_* settings) are complete before the daemon starts: exit 2 naming
/// the job. With no enabled job, the default app's (as before apps). A job file that does not
/// load is the scheduler's to report (it skips it and goes on).
fn check_apps(settings: &Settings, jobs_dir: &Path) -> anyhow::Result<()> {
    let jobs: Vec<_> = crate::schedule::job::load_dir(jobs_dir)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(_, job)| job.ok())
        .filter(|job| job.enabled)
        .collect();
    if jobs.is_empty() {
        settings.for_app(None)?.require_api()?;
    }
    for job in jobs {
        let app = job
            .settings_for(settings)
            .map_err(|e| crate::exit::usage(e.to_string()))?;
        app.require_api().map_err(|e| {
            crate::exit::usage(format!("job {} (app {}): {e}", job.name, app.app_name))
        })?;
    }
    Ok(())
}
