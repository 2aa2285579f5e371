//! `receipt-exporter schedule`: the in-process scheduler, for hosts without cron or systemd
//! timers. SIGTERM/SIGINT stop it (running runs are interrupted cleanly, exit 0); SIGHUP
//! re-reads the job files.

use crate::cli::JobsDirArgs;
use crate::exit::Exit;
use crate::schedule::scheduler::Scheduler;
use crate::settings::Settings;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

pub async fn run(settings: &Settings, args: JobsDirArgs) -> anyhow::Result<Exit> {
    settings.require_api()?;
    let jobs_dir = super::jobs::jobs_dir(settings, &args);
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
    tracing::info!(dir = %jobs_dir.display(), "scheduler starting");
    Scheduler {
        settings: settings.clone(),
        pool,
        jobs_dir,
    }
    .run(shutdown, reloads)
    .await?;
    Ok(Exit::Success)
}
