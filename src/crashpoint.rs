//! Crash points, for the fault tests: with `RECEIPT_EXPORTER_CRASH_AT=NAME:N` in its
//! environment the process SIGKILLs itself the Nth time it passes the point `NAME`, so a test
//! can kill a run at an exact moment (during a Postgres write, between the two sinks, ...)
//! instead of at a random one. Unset, a point costs one check of a value read once.
//!
//! The points: `pull` (an API answer received, not yet written), `pg_write` (rows copied, the
//! transaction not committed), `between_sinks` (committed to Postgres, not in Parquet yet),
//! `parquet_write` (rows appended to a temporary Parquet file), `after_rename` (a Parquet file
//! renamed into place, not yet in the manifest).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The variable that arms a crash point.
pub const ENV: &str = "RECEIPT_EXPORTER_CRASH_AT";

static ARMED: OnceLock<Option<(String, u64)>> = OnceLock::new();
static PASSES: AtomicU64 = AtomicU64::new(0);

fn armed() -> &'static Option<(String, u64)> {
    ARMED.get_or_init(|| {
        let value = std::env::var(ENV).ok()?;
        let (name, n) = value.split_once(':').unwrap_or((value.as_str(), "1"));
        Some((name.to_string(), n.parse().unwrap_or(1)))
    })
}

/// Passes the point `name`: kills the process if this is the armed pass.
pub fn hit(name: &str) {
    let Some((armed_name, n)) = armed() else {
        return;
    };
    if armed_name == name && PASSES.fetch_add(1, Ordering::SeqCst) + 1 == *n {
        tracing::warn!("crash point {name} reached: SIGKILL");
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    }
}
