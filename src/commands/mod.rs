//! One file per subcommand: glue between the command line and the library, and the only
//! place that writes to stdout. Settings are validated here, before any I/O.

pub mod backfill;
pub mod completions;
pub mod demo;
pub mod doctor;
pub mod export;
pub mod iceberg;
pub mod jobs;
pub mod lake;
pub mod listen;
pub mod logfmt;
pub mod migrate;
pub mod progress;
pub mod read_progress;
pub mod report;
pub mod retention;
pub mod run;
pub mod runs;
pub mod schedule;
pub mod simulate;
pub mod status;
pub mod track;
pub mod usersig;

use crate::cli::{Cli, Command};
use crate::exit::Exit;
use crate::settings::{self, LogFormat, Settings};
use sqlx::PgPool;
use tracing_subscriber::EnvFilter;

/// Runs the parsed command line; the `Exit` says how it ended when it did not fail outright.
/// Logging starts once the settings are validated (the log format is one of them).
pub async fn dispatch(cli: Cli) -> anyhow::Result<Exit> {
    // These need no settings, or (doctor) report bad ones as a line of their own.
    match cli.command {
        Command::Completions(args) => return completions::completions(args),
        Command::Man => return completions::man(),
        Command::Doctor => {
            let settings = settings::resolve(cli.global.raw_settings());
            init_tracing(settings.as_ref().map_or(LogFormat::Human, |s| s.log_format));
            return doctor::run(settings).await;
        }
        _ => {}
    }
    let settings = settings::resolve(cli.global.raw_settings())?;
    init_tracing(settings.log_format);
    for warning in &settings.warnings {
        tracing::warn!("{warning}");
    }
    // `--app NAME`: the command speaks for that app (its SDKAppID, endpoint, admin account and
    // key). A job names its own app: `run --job` and `schedule` apply it per job.
    let settings = match (&settings.app, &cli.command) {
        (Some(_), cmd) if !matches!(cmd, Command::Schedule(_) | Command::Jobs(_)) => {
            settings.for_app(None)?
        }
        _ => settings,
    };
    match cli.command {
        Command::Migrate => migrate::run(&settings).await,
        Command::Track(cmd) => track::run(&settings, cmd).await,
        Command::Run(args) => run::run(&settings, args).await,
        Command::Simulate(args) => simulate::run(&settings, args).await,
        Command::Usersig(args) => usersig::run(&settings, args).await,
        Command::Demo(args) => demo::run(&settings, args).await,
        Command::Jobs(cmd) => jobs::run(&settings, cmd).await,
        Command::Schedule(args) => schedule::run(&settings, args).await,
        Command::Runs(cmd) => runs::run(&settings, cmd).await,
        Command::Status(args) => status::run(&settings, args).await,
        Command::Report(args) => report::run(&settings, args).await,
        Command::Completions(_) | Command::Man | Command::Doctor => unreachable!("handled above"),
        Command::Backfill(args) => backfill::run(&settings, args).await,
        Command::Export(cmd) => export::run(&settings, cmd).await,
        Command::Retention(args) => retention::run(&settings, args).await,
        Command::Lake(cmd) => lake::run(&settings, cmd).await,
        Command::Iceberg(cmd) => iceberg::run(&settings, cmd).await,
        Command::Progress(cmd) => read_progress::run(&settings, cmd).await,
        Command::Listen(args) => listen::run(&settings, args).await,
    }
}

/// Logs go to stderr: readable lines by default, JSON for journald and log shippers.
/// `RUST_LOG` sets the level (default: info for receipt-exporter and its slow-statement lines,
/// warn for the rest). A slow statement is one line ([`logfmt::OneLineSql`]).
pub fn init_tracing(format: LogFormat) {
    // The object store's credentials, however a library reads them, never reach a log line.
    for name in ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"] {
        if let Ok(value) = std::env::var(name) {
            crate::secret::hide_in_logs(&value);
        }
    }
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("warn,receipt_exporter=info,sqlx::query=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(progress::LogWriter);
    let _ = match format {
        LogFormat::Human => {
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none();
            let lines = tracing_subscriber::fmt::format().with_target(false);
            builder
                .with_ansi(ansi)
                .event_format(logfmt::OneLineSql::new(lines, false))
                .try_init()
        }
        LogFormat::Json => {
            let lines = tracing_subscriber::fmt::format()
                .json()
                .with_current_span(false);
            builder
                .json()
                .event_format(logfmt::OneLineSql::new(lines, true))
                .try_init()
        }
    };
}

/// A pool on the configured database, after checking the schema is migrated.
pub async fn connect_migrated(settings: &Settings) -> anyhow::Result<PgPool> {
    let pool = crate::db::connect(settings.require_database()?).await?;
    let applied = crate::db::applied_migrations(&pool).await.ok();
    let known = crate::db::MIGRATOR.iter().count() as i64;
    match applied {
        Some(n) if n >= known => Ok(pool),
        _ => Err(crate::exit::usage(
            "the database is not migrated (or is behind this version): run `receipt-exporter migrate` first",
        )),
    }
}

/// The warehouse lock for a command that changes what the manifest says the lake holds,
/// waited for at most `EXPORT_LOCK_RECONNECT_TIMEOUT` (then exit 75, naming who holds it).
/// These commands keep SIGTERM's default (the process ends at once, having changed nothing
/// while it waited), so nothing cancels the wait.
pub async fn warehouse_lock(
    settings: &Settings,
) -> anyhow::Result<crate::sink::warehouse::WarehouseLock> {
    let options = settings.require_database()?;
    let never = tokio_util::sync::CancellationToken::new();
    Ok(crate::sink::warehouse::WarehouseLock::acquire(
        options,
        settings.lock_reconnect_timeout,
        &never,
    )
    .await?)
}

/// The one line a run ends with, on stdout (the logs on stderr stay logs).
pub fn emit_summary(line: &str) {
    println!("{line}");
}
