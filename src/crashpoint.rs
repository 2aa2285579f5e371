//! Crash and pause points, for the fault tests. With `RECEIPT_EXPORTER_CRASH_AT=NAME:N` in its
//! environment the process SIGKILLs itself the Nth time it passes the point `NAME`, so a test
//! can kill a run at an exact moment (during a Postgres write, between the two sinks, ...)
//! instead of at a random one. With `RECEIPT_EXPORTER_PAUSE_AT=NAME:N` and
//! `RECEIPT_EXPORTER_PAUSE_FILE=PATH` it instead creates PATH the Nth time and waits there
//! until PATH is removed, so a test can act while a run stands at that moment (kill its lock
//! session, run another job's repair) and then let it go on. Unset, a point costs one check of
//! a value read once. Not meant for production.
//!
//! The points: `pull` (an API answer received, not yet written), `pg_write` (rows copied, the
//! transaction not committed), `between_sinks` (committed to Postgres, not in Parquet yet),
//! `parquet_write` (rows appended to a temporary Parquet file), `after_rename` (a Parquet file
//! renamed into place, its manifest row not yet written: inside the transaction that holds
//! the run's fence). In a lake on object storage (`sink::remote`): `during_upload` (the file
//! uploaded under `_pending/`, not yet recorded), `after_manifest_commit` (recorded, not yet
//! copied to its final key), `after_copy` (at its final key, the manifest still says pending),
//! `during_repair` (a repair about to finish a dead run's copy). In Iceberg mode:
//! `iceberg_before_commit` (a data file written and closed, its commit not begun),
//! `iceberg_metadata_written` (inside the commit's transaction: the manifest, manifest list and
//! metadata file written, the catalog pointer not moved) and `iceberg_after_commit` (the
//! pointer and the manifest row committed together: there is no window between the two).
//! `progress_lake`: a read-progress file of the lake put whole at its name, not yet recorded
//! (`sink::progress_lake`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// The variable that arms a crash point.
pub const ENV: &str = "RECEIPT_EXPORTER_CRASH_AT";
/// The variable that arms a pause point (`NAME:N`, like [`ENV`]).
pub const PAUSE_ENV: &str = "RECEIPT_EXPORTER_PAUSE_AT";
/// The file a paused process creates, and waits to see removed.
pub const PAUSE_FILE_ENV: &str = "RECEIPT_EXPORTER_PAUSE_FILE";

/// One armed point: its name, which pass fires, and the passes so far.
struct Armed {
    name: String,
    nth: u64,
    passes: AtomicU64,
}

impl Armed {
    fn from_env(var: &str) -> Option<Armed> {
        let value = std::env::var(var).ok()?;
        let (name, n) = value.split_once(':').unwrap_or((value.as_str(), "1"));
        Some(Armed {
            name: name.to_string(),
            nth: n.parse().unwrap_or(1),
            passes: AtomicU64::new(0),
        })
    }

    /// Whether this pass of `name` is the armed one.
    fn fires(&self, name: &str) -> bool {
        self.name == name && self.passes.fetch_add(1, Ordering::SeqCst) + 1 == self.nth
    }
}

static CRASH: OnceLock<Option<Armed>> = OnceLock::new();
static PAUSE: OnceLock<Option<(Armed, PathBuf)>> = OnceLock::new();

/// Passes the point `name`: kills the process if this is the armed crash, waits if it is the
/// armed pause.
pub async fn hit(name: &str) {
    let crash = CRASH.get_or_init(|| Armed::from_env(ENV));
    if crash.as_ref().is_some_and(|c| c.fires(name)) {
        tracing::warn!("crash point {name} reached: SIGKILL");
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    }
    let pause = PAUSE.get_or_init(|| {
        let armed = Armed::from_env(PAUSE_ENV)?;
        Some((armed, std::env::var_os(PAUSE_FILE_ENV)?.into()))
    });
    if let Some((armed, file)) = pause {
        if armed.fires(name) {
            hold(name, file).await;
        }
    }
}

async fn hold(name: &str, file: &PathBuf) {
    tracing::warn!(
        "pause point {name} reached: waiting until {} is removed",
        file.display()
    );
    if let Err(e) = std::fs::write(file, name) {
        tracing::error!("pause point {name}: cannot create {}: {e}", file.display());
        return;
    }
    while file.exists() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tracing::warn!("pause point {name} released");
}
