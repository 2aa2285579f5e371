//! Operating the exporter: what the run ledger tells an operator and a monitoring system.
//!
//! [`history`] reads `receipts.export_runs` (runs list/show, freshness), [`metrics`] turns the
//! ledger into the Prometheus text format (a file for node_exporter, a Pushgateway push, the
//! scrapes of the `/metrics` [`endpoint`]), [`alert`] sends the failure webhook, [`groups`]
//! judges whether a group can have read receipts at all, and [`doctor`] is the checklist of
//! everything a run needs; [`retention`] drops the months of snapshots the lake holds whole,
//! [`lake`] checks the lake's files against the manifest, and [`iceberg`] expires the Iceberg
//! table's old snapshots and removes its orphan files. Nothing here prints: the commands do.
//! Nothing here writes to the ledger either: it is only read. The one table written here is
//! [`checks`]' (how `lake verify` and `doctor` came out, for the metrics).

pub mod alert;
pub mod checks;
pub mod doctor;
pub mod endpoint;
pub mod groups;
pub mod history;
pub mod iceberg;
pub mod lake;
pub mod metrics;
pub mod retention;

/// A failure of the operations layer.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("while reading the run ledger: {0}")]
    Ledger(#[from] sqlx::Error),
    #[error("while writing the metrics file {path}: {source}")]
    MetricsFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("while pushing metrics to the Pushgateway at {url}: {detail}")]
    Push { url: String, detail: String },
}
