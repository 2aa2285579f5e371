//! Exit codes, chosen on purpose and documented in `--help` and the README.
//!
//! An error reaches `main` as an `anyhow::Error`; [`code_for`] walks its chain for a typed
//! cause that says which code it deserves. Anything unrecognised is a plain failure (1).

use std::fmt;

/// The process exit codes of receipt-exporter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything asked for was done.
    Success = 0,
    /// The run failed (Postgres unreachable, nothing exported, ...).
    Failed = 1,
    /// A usage or configuration error, found before any I/O or revealed by the API.
    Usage = 2,
    /// Some groups failed, the others were exported.
    Partial = 3,
    /// `status --max-age`: the job's newest successful run is older than the bound, or there is
    /// none. Distinct from 1 so a monitor tells "stale data" from "could not check".
    Stale = 4,
    /// Another run of the same job holds the lock, or the warehouse lock stayed held past its
    /// bound (EX_TEMPFAIL: try later).
    Locked = 75,
    /// Stopped by SIGINT or SIGTERM.
    Interrupted = 130,
}

impl Exit {
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// The exit codes as `--help` and the README show them.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0    success
  1    failed (e.g. Postgres unreachable, nothing exported), or fenced: another run declared
       this run dead and took it over; retention refused; lake verify found a problem
  2    usage or configuration error (a bad flag, variable or input file; or the API refused
       the key, the admin account or the region)
  3    partial: some groups failed, the others were exported
  4    stale (`status --max-age`): no successful run of the job within the bound
  75   another run of the same job holds the lock, or the warehouse lock stayed held for
       EXPORT_LOCK_RECONNECT_TIMEOUT (try later; the message names the session)
  130  interrupted by SIGINT/SIGTERM";

/// An error that is the user's to fix: a bad flag, variable, config file, input file or row.
/// Exits with code 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Shorthand for a usage error as an `anyhow::Error`.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    UsageError(message.into()).into()
}

/// The exit code an error deserves.
pub fn code_for(err: &anyhow::Error) -> Exit {
    for cause in err.chain() {
        if cause.is::<UsageError>()
            || cause.is::<crate::settings::SettingsError>()
            || cause.is::<crate::run::backfill::BackfillError>()
            || cause.is::<crate::schedule::scheduler::ScheduleError>()
            || cause.is::<crate::sink::owner::NotOurLake>()
            || cause.is::<crate::sink::identity::OtherLake>()
            || cause.is::<crate::ops::endpoint::ListenError>()
        {
            return Exit::Usage;
        }
        if cause.is::<crate::run::LockHeld>() {
            return Exit::Locked;
        }
        match cause.downcast_ref::<crate::sink::warehouse::WarehouseLockError>() {
            Some(crate::sink::warehouse::WarehouseLockError::Busy { .. }) => return Exit::Locked,
            Some(crate::sink::warehouse::WarehouseLockError::Interrupted { .. }) => {
                return Exit::Interrupted
            }
            _ => {}
        }
        if let Some(sink) = cause.downcast_ref::<crate::sink::SinkError>() {
            if sink.is_config() {
                return Exit::Usage;
            }
        }
        if let Some(db) = cause.downcast_ref::<crate::db::DbError>() {
            if db.is_config() {
                return Exit::Usage;
            }
        }
        if let Some(chat) = cause.downcast_ref::<crate::chat::ChatError>() {
            if chat.is_config() {
                return Exit::Usage;
            }
        }
    }
    Exit::Failed
}

/// The exit code of a run that reached its end (a run that could not start is an error, see
/// [`code_for`]).
pub fn for_run(report: &crate::run::RunReport) -> Exit {
    for_status(report.status, report.config_refused)
}

/// The exit code of a run's ledger status; a failed run whose configuration the API refused
/// is the user's to fix (2).
pub fn for_status(status: crate::run::ledger::RunStatus, config_refused: bool) -> Exit {
    use crate::run::ledger::RunStatus;
    match status {
        RunStatus::Succeeded => Exit::Success,
        RunStatus::Partial => Exit::Partial,
        RunStatus::Failed if config_refused => Exit::Usage,
        RunStatus::Interrupted => Exit::Interrupted,
        RunStatus::Failed | RunStatus::Abandoned | RunStatus::Running => Exit::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::ledger::RunStatus;

    #[test]
    fn each_run_status_has_its_code() {
        assert_eq!(for_status(RunStatus::Succeeded, false), Exit::Success);
        assert_eq!(for_status(RunStatus::Partial, false), Exit::Partial);
        assert_eq!(for_status(RunStatus::Failed, false), Exit::Failed);
        assert_eq!(for_status(RunStatus::Failed, true), Exit::Usage);
        assert_eq!(for_status(RunStatus::Interrupted, false), Exit::Interrupted);
        assert_eq!(for_status(RunStatus::Abandoned, false), Exit::Failed);
    }

    #[test]
    fn library_errors_of_the_users_making_exit_2() {
        let e = anyhow::Error::from(crate::run::backfill::BackfillError::NoEnabledGroup);
        assert_eq!(code_for(&e.context("while planning")), Exit::Usage);
        let e = crate::schedule::scheduler::ScheduleError::NoJobs("jobs".into());
        assert_eq!(code_for(&e.into()), Exit::Usage);
        assert_eq!(code_for(&anyhow::anyhow!("disk full")), Exit::Failed);
    }
}
