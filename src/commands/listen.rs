//! `receipt-exporter listen`: the read-receipt webhook's receiver, as a daemon (systemd
//! service). SIGTERM/SIGINT stop it: it stops receiving, answers the deliveries in flight,
//! flushes every acknowledged one into the data set, closes its run and exits 0.

use crate::cli::ListenArgs;
use crate::exit::Exit;
use crate::listen::{self, flush, Receiver};
use crate::run::ledger::RunStatus;
use crate::settings::Settings;
use std::time::Duration;

pub async fn run(settings: &Settings, args: ListenArgs) -> anyhow::Result<Exit> {
    let addr = settings.listen.ok_or_else(|| {
        crate::exit::usage(
            "EXPORT_LISTEN / --listen: not set: set it to the address the callbacks come to, IP:PORT (e.g. 127.0.0.1:8270 behind a TLS proxy)",
        )
    })?;
    let sdkappid = settings.require_sdkappid()?;
    if settings.callback_token.is_none() {
        tracing::warn!(
            "no webhook authentication token (EXPORT_CALLBACK_TOKEN_FILE): callbacks are checked for the app only, so whoever reaches {addr} can post receipts; set a token in the Chat console and its file here"
        );
    }
    let listener = listen::bind(addr)
        .await
        .map_err(|e| crate::exit::usage(e.to_string()))?;
    let pool = super::connect_migrated(settings).await?;
    let stop =
        super::run::stop_on_signal_then("no more callbacks taken; flushing the acknowledged ones");
    let bound = listener.local_addr()?;
    tracing::info!(
        "receiving callbacks at http://{bound}{} (app {sdkappid})",
        settings.listen_path
    );
    let receiver = Receiver {
        path: settings.listen_path.clone(),
        sdkappid,
        token: settings.callback_token.clone(),
    };
    let policy = flush::Policy {
        every: Duration::from_secs(args.flush_every),
        rows: args.flush_rows,
        keep_untracked: args.keep_untracked,
    };
    let report = listen::serve(settings, &pool, listener, receiver, policy, stop).await?;
    let details = &report.figures.details["webhook"];
    let line = format!(
        "listen: run {} {}: {} written from the webhook ({} untracked rows dropped), {} in {}{}",
        report.run_id,
        report.status.as_str(),
        crate::text::count(report.figures.receipts_written, "receipt", "receipts"),
        details["rows_dropped_untracked"].as_u64().unwrap_or(0),
        crate::text::count(report.figures.parquet_files, "file", "files"),
        settings.lake,
        report
            .error
            .as_deref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default(),
    );
    super::emit_summary(&line);
    Ok(match (report.status, report.config_refused) {
        (RunStatus::Succeeded, _) => Exit::Success,
        (_, true) => Exit::Usage,
        _ => Exit::Failed,
    })
}
