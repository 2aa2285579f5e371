//! The command line: clap types only. Values stay raw strings here; `settings` validates them
//! (so every message names its flag or variable the same way, whatever the source).

use crate::exit::EXIT_CODES_HELP;
use crate::settings::{self, RawSettings, Spec};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

const SETTINGS_HELP: &str = "\
Settings (a flag, else the environment variable, else the --config TOML file, else the default):
  --database-url      DATABASE_URL         postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE
  --sdkappid          TIM_SDKAPPID         the SDKAppID from the Chat console
  (no flag)           TIM_SECRET_KEY       the app's secret key (never printed)
  --secret-key-file   TIM_SECRET_KEY_FILE  a file holding the key (systemd credentials); not with TIM_SECRET_KEY
  --identifier        TIM_IDENTIFIER       the app admin account [default: administrator]
  --region            TIM_REGION           china, singapore, seoul, tokyo, frankfurt, silicon-valley, jakarta
  --api-base          TIM_API_BASE         a base URL that overrides the region (simulator, proxy)
  --parquet-dir       EXPORT_PARQUET_DIR   where Parquet files go [default: ./warehouse]
  --rate-limit        EXPORT_RATE_LIMIT    API calls per second, 1..10000 [default: 200]
  --batch-size        EXPORT_BATCH_SIZE    seqs per API call, 1..1000 [default: 50]
  --concurrency       EXPORT_CONCURRENCY   API requests in flight, 1..1000 [default: 64]
  --request-timeout   EXPORT_REQUEST_TIMEOUT seconds one API request may take, 4..300 [default: 10]
  --max-seqs-per-group EXPORT_MAX_SEQS_PER_GROUP  a run refuses a group planning more seqs [default: 1000000]
  --jobs-dir          EXPORT_JOBS_DIR      where `run --job NAME` looks for NAME.toml [default: ./jobs]
  --log-format        EXPORT_LOG_FORMAT    human or json [default: human]
  --metrics-file      EXPORT_METRICS_FILE  a *.prom file rewritten after each run (node_exporter)
  --pushgateway-url   EXPORT_PUSHGATEWAY_URL  a Pushgateway each run pushes its metrics to
  RUST_LOG sets the log level (e.g. RUST_LOG=debug).";

/// Exports Tencent Cloud Chat group read receipts to Postgres and Parquet.
#[derive(Debug, Parser)]
#[command(name = "receipt-exporter", version, about, long_about = None)]
#[command(after_help = format!("{SETTINGS_HELP}\n\n{EXIT_CODES_HELP}"))]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOpts,
    #[command(subcommand)]
    pub command: Command,
}

/// Settings shared by every command; see `settings` for their meaning and validation.
#[derive(Debug, Args)]
pub struct GlobalOpts {
    /// A TOML file with settings (keys: database_url, sdkappid, secret_key_file, identifier, region,
    /// api_base, parquet_dir, rate_limit, batch_size, concurrency, request_timeout,
    /// max_seqs_per_group, jobs_dir, metrics_file, pushgateway_url)
    #[arg(long, global = true, env = "EXPORT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Postgres connection URL (a password here shows in `ps`: use DATABASE_URL or PGPASSFILE)
    #[arg(
        long,
        global = true,
        env = "DATABASE_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub database_url: Option<String>,
    /// The app's SDKAppID
    #[arg(long, global = true, env = "TIM_SDKAPPID", value_name = "ID")]
    pub sdkappid: Option<String>,
    /// A file holding the secret key (the key itself only ever comes from TIM_SECRET_KEY)
    #[arg(long, global = true, env = "TIM_SECRET_KEY_FILE", value_name = "PATH")]
    pub secret_key_file: Option<String>,
    /// The app admin account [default: administrator]
    #[arg(long, global = true, env = "TIM_IDENTIFIER", value_name = "ID")]
    pub identifier: Option<String>,
    /// The app's region: china, singapore, seoul, tokyo, frankfurt, silicon-valley, jakarta
    #[arg(long, global = true, env = "TIM_REGION", value_name = "REGION")]
    pub region: Option<String>,
    /// A base URL that overrides the region (the simulator, a proxy)
    #[arg(long, global = true, env = "TIM_API_BASE", value_name = "URL")]
    pub api_base: Option<String>,
    /// Where Parquet files go [default: ./warehouse]
    #[arg(long, global = true, env = "EXPORT_PARQUET_DIR", value_name = "DIR")]
    pub parquet_dir: Option<String>,
    /// API calls per second for this process [default: 200]
    #[arg(long, global = true, env = "EXPORT_RATE_LIMIT", value_name = "N")]
    pub rate_limit: Option<String>,
    /// Seqs per API call [default: 50]
    #[arg(long, global = true, env = "EXPORT_BATCH_SIZE", value_name = "N")]
    pub batch_size: Option<String>,
    /// API requests in flight [default: 64]
    #[arg(long, global = true, env = "EXPORT_CONCURRENCY", value_name = "N")]
    pub concurrency: Option<String>,
    /// Seconds one API request may take, 4..300 (the server gives up after 3 s) [default: 10]
    #[arg(
        long,
        global = true,
        env = "EXPORT_REQUEST_TIMEOUT",
        value_name = "SECONDS"
    )]
    pub request_timeout: Option<String>,
    /// A run refuses (does not attempt) a group that plans more seqs than this [default: 1000000]
    #[arg(
        long,
        global = true,
        env = "EXPORT_MAX_SEQS_PER_GROUP",
        value_name = "N"
    )]
    pub max_seqs_per_group: Option<String>,
    /// Where job files are looked up by name [default: ./jobs]
    #[arg(long, global = true, env = "EXPORT_JOBS_DIR", value_name = "DIR")]
    pub jobs_dir: Option<String>,
    /// The Prometheus text file written after each run, for node_exporter's textfile collector
    #[arg(long, global = true, env = "EXPORT_METRICS_FILE", value_name = "PATH")]
    pub metrics_file: Option<String>,
    /// A Pushgateway (base URL) each job's metrics are pushed to after each run
    #[arg(
        long,
        global = true,
        env = "EXPORT_PUSHGATEWAY_URL",
        value_name = "URL"
    )]
    pub pushgateway_url: Option<String>,
    /// Log format on stderr
    #[arg(long, global = true, env = "EXPORT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Readable lines
    Human,
    /// One JSON object per line (journald, log shippers)
    Json,
}

impl GlobalOpts {
    /// The raw settings, each tagged with the flag or variable it came from.
    pub fn raw_settings(&self, matches: &ArgMatches) -> RawSettings {
        let mut raw = RawSettings {
            config_file: self.config.clone(),
            ..Default::default()
        };
        let from_env = |id: &str| matches.value_source(id) == Some(ValueSource::EnvVariable);
        let mut give = |spec: Spec, id: &str, value: &Option<String>| {
            raw.give(spec, value.clone(), from_env(id))
        };
        give(settings::DATABASE_URL, "database_url", &self.database_url);
        give(settings::SDKAPPID, "sdkappid", &self.sdkappid);
        give(
            settings::SECRET_KEY_FILE,
            "secret_key_file",
            &self.secret_key_file,
        );
        give(settings::IDENTIFIER, "identifier", &self.identifier);
        give(settings::REGION, "region", &self.region);
        give(settings::API_BASE, "api_base", &self.api_base);
        give(settings::PARQUET_DIR, "parquet_dir", &self.parquet_dir);
        give(settings::RATE_LIMIT, "rate_limit", &self.rate_limit);
        give(settings::BATCH_SIZE, "batch_size", &self.batch_size);
        give(settings::CONCURRENCY, "concurrency", &self.concurrency);
        give(settings::JOBS_DIR, "jobs_dir", &self.jobs_dir);
        give(
            settings::REQUEST_TIMEOUT,
            "request_timeout",
            &self.request_timeout,
        );
        give(
            settings::MAX_SEQS_PER_GROUP,
            "max_seqs_per_group",
            &self.max_seqs_per_group,
        );
        give(settings::METRICS_FILE, "metrics_file", &self.metrics_file);
        give(
            settings::PUSHGATEWAY_URL,
            "pushgateway_url",
            &self.pushgateway_url,
        );
        raw.secret_key = std::env::var(settings::SECRET_KEY_ENV)
            .ok()
            .map(crate::secret::Secret::new);
        raw
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply the database migrations (idempotent: says what it applied)
    Migrate,
    /// Manage the tracked groups and their message-seq windows
    #[command(subcommand)]
    Track(TrackCommand),
    /// Run one export: pull the receipts of every enabled group's windows, write them to
    /// Postgres and Parquet
    #[command(after_help = EXIT_CODES_HELP)]
    Run(RunArgs),
    /// Pull the current receipts of older seqs once (a new group, a window never exported, an
    /// outage's gap) as one resumable run: the same command again continues where it stopped
    #[command(after_help = EXIT_CODES_HELP)]
    Backfill(BackfillArgs),
    /// Rewrite exported data from Postgres (the source of truth)
    #[command(subcommand)]
    Export(ExportCommand),
    /// Run the main job end to end on local defaults: the built-in simulator, a database of its
    /// own on the local Postgres, sample groups, one export
    Demo(DemoArgs),
    /// Serve the Chat API simulator (uses TIM_SDKAPPID, TIM_SECRET_KEY, TIM_IDENTIFIER)
    Simulate(crate::sim::SimArgs),
    /// Print a UserSig for the admin account, to debug with curl (the only command that prints one)
    Usersig(UsersigArgs),
    /// Job files: check them and show their next fire times
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Fire every job of the jobs directory at its times, in this process (for hosts without
    /// cron or systemd timers); SIGHUP reloads the job files, SIGTERM/SIGINT stop it
    Schedule(JobsDirArgs),
    /// The run ledger: recent runs, or every figure of one run
    #[command(subcommand)]
    Runs(RunsCommand),
    /// One line on a job's freshness; with --max-age, exits 4 when its newest successful run is
    /// older than that (the check a monitoring system calls)
    #[command(after_help = EXIT_CODES_HELP)]
    Status(StatusArgs),
    /// Check settings, Postgres, the API key, the tracked groups, the Parquet directory and the
    /// job locks: one line each, OK/WARN/FAIL with the fix; exits 1 when any check fails
    Doctor,
    /// Print a shell completion script (e.g. `receipt-exporter completions bash > /etc/bash_completion.d/receipt-exporter`)
    Completions(CompletionsArgs),
    /// Print the man page in roff (e.g. `receipt-exporter man > receipt-exporter.1`)
    Man,
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Validate every job file (exit 2 naming the file and position of a broken one) and print
    /// each job's next three fire times
    Check(JobsDirArgs),
}

#[derive(Debug, Args)]
pub struct JobsDirArgs {
    /// The jobs directory (or one job file) [default: --jobs-dir / EXPORT_JOBS_DIR / ./jobs]
    #[arg(long = "jobs", value_name = "DIR")]
    pub jobs: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// The newest runs first, as a table
    List(RunsListArgs),
    /// Every figure the ledger holds about one run
    Show(RunsShowArgs),
}

#[derive(Debug, Args)]
pub struct RunsListArgs {
    /// Only runs of this job
    #[arg(long, value_name = "NAME")]
    pub job: Option<String>,
    /// Only runs that ended (or are) so
    #[arg(long, value_enum, value_name = "STATUS")]
    pub status: Option<crate::run::ledger::RunStatus>,
    /// At most this many runs
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(i64).range(1..=100_000))]
    pub limit: i64,
    /// Print JSON (one array) instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RunsShowArgs {
    /// The run's id (the first column of `runs list`)
    pub run_id: i64,
    /// Print JSON instead of lines
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The job to check
    #[arg(long, default_value = "default", value_name = "NAME")]
    pub job: String,
    /// The oldest the newest successful run may be (e.g. 2h, 90m, 1d); without it, only report
    #[arg(long, value_name = "AGE", value_parser = humantime::parse_duration)]
    pub max_age: Option<std::time::Duration>,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The local Postgres server to create the demo database on (the database in this URL is
    /// only used to connect; DATABASE_URL is ignored)
    #[arg(
        long,
        env = "DEMO_ADMIN_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres",
        hide_env_values = true
    )]
    pub admin_url: String,
    /// Where the demo's Parquet files go (under DIR/warehouse)
    #[arg(long, default_value = "./demo")]
    pub dir: PathBuf,
    /// How many sample groups
    #[arg(long, default_value_t = 8)]
    pub groups: usize,
    /// How many messages in each sample group
    #[arg(long, default_value_t = 300)]
    pub messages: u64,
}

#[derive(Debug, Args)]
pub struct UsersigArgs {
    /// Seconds the UserSig is valid (default 180 days; at most 50 years)
    #[arg(long, default_value_t = 15_552_000, value_parser = clap::value_parser!(i64).range(1..=1_576_800_000))]
    pub expire: i64,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Print the plan (groups, seqs, API calls, time at the rate limit) and touch nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Run this job: a job file's path, or a NAME looked up as NAME.toml in --jobs-dir
    /// [default: the job `default`, every enabled group]
    #[arg(long, value_name = "NAME|PATH")]
    pub job: Option<String>,
    /// Record the run as started by a scheduler (systemd timer, cron), not by hand
    #[arg(long, env = "EXPORT_SCHEDULED")]
    pub scheduled: bool,
    /// Pull settled seqs (last unread count 0) and seqs without receipt too, this run only
    #[arg(long)]
    pub include_settled: bool,
}

#[derive(Debug, Subcommand)]
pub enum TrackCommand {
    /// Track a group (or add windows and tags to a tracked one)
    Add(TrackAddArgs),
    /// List the tracked groups and their windows
    List(TrackListArgs),
    /// Stop tracking a group, or only some of its windows (snapshots already taken stay)
    Remove(TrackRemoveArgs),
    /// Keep a group tracked but leave it out of runs
    Disable(GroupArg),
    /// Put a disabled group back into runs
    Enable(GroupArg),
    /// Import windows from a CSV file (header: group_id,from_seq,to_seq[,tags]; tags separated
    /// by `;`), all or nothing
    Import(TrackImportArgs),
}

#[derive(Debug, Args)]
pub struct TrackAddArgs {
    /// The group id (at most 48 bytes, no spaces)
    pub group_id: String,
    /// A window of message seqs to snapshot, inclusive: FROM..TO (repeatable)
    #[arg(long = "seqs", value_name = "FROM..TO")]
    pub seqs: Vec<String>,
    /// A rolling window: the group's newest N messages, resolved at each run (one per group;
    /// a new N replaces the old one)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(1..))]
    pub latest: Option<i64>,
    /// A tag that jobs select groups by (repeatable)
    #[arg(long = "tag", value_name = "NAME")]
    pub tags: Vec<String>,
    /// A free note
    #[arg(long)]
    pub note: Option<String>,
    /// Ask the Chat API first: refuse (exit 2, nothing written) a group that does not exist, has
    /// a type without read receipts (AVChatRoom, Community) or more than 200 members
    #[arg(long)]
    pub check: bool,
}

#[derive(Debug, Args)]
pub struct TrackListArgs {
    /// Print JSON (one array) instead of a table
    #[arg(long)]
    pub json: bool,
    /// Only groups with this tag
    #[arg(long, value_name = "NAME")]
    pub tag: Option<String>,
}

#[derive(Debug, Args)]
pub struct TrackRemoveArgs {
    pub group_id: String,
    /// Remove only this window (repeatable); without it the whole group is removed
    #[arg(long = "seqs", value_name = "FROM..TO")]
    pub seqs: Vec<String>,
    /// Remove only the group's rolling window (`track add --latest N`)
    #[arg(long)]
    pub latest: bool,
}

#[derive(Debug, Args)]
pub struct GroupArg {
    pub group_id: String,
}

#[derive(Debug, Args)]
pub struct TrackImportArgs {
    /// The CSV file
    pub file: PathBuf,
}

#[derive(Debug, Args)]
pub struct BackfillArgs {
    /// A group to backfill (repeatable); or --all
    #[arg(long = "group", value_name = "ID")]
    pub groups: Vec<String>,
    /// Every enabled tracked group (as found at the backfill's first start)
    #[arg(long)]
    pub all: bool,
    /// A window of message seqs, inclusive: FROM..TO (repeatable; every window for every group)
    #[arg(long = "seqs", value_name = "FROM..TO")]
    pub seqs: Vec<String>,
    /// This process's cap on the app's shared API budget, calls per second (1..10000)
    #[arg(long, value_name = "N")]
    pub rate: Option<String>,
    /// Print the seqs, API calls and time at the rate limit, and touch nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// Rewrite the Parquet partitions of these capture dates from Postgres (a lost disk, a new
    /// Parquet location), atomically per day, keeping the manifest true
    Parquet(ExportParquetArgs),
}

#[derive(Debug, Args)]
pub struct ExportParquetArgs {
    /// The first capture date (UTC), YYYY-MM-DD
    #[arg(long, value_name = "DATE")]
    pub since: Option<String>,
    /// The last capture date (UTC, included), YYYY-MM-DD
    #[arg(long, value_name = "DATE")]
    pub until: Option<String>,
    /// Rebuild into a Parquet directory that holds none of the manifest's files (a lost disk,
    /// or the warehouse moving there): the manifest then lists the rebuilt days' files there
    #[arg(long)]
    pub relocate: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// clap's own consistency checks: a flag defined twice (a subcommand's and a global one)
    /// would otherwise only panic when someone passes it.
    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn simulate_takes_its_own_limit_beside_the_global_rate_limit() {
        let cli = Cli::try_parse_from([
            "receipt-exporter",
            "--rate-limit",
            "50",
            "simulate",
            "--limit",
            "0",
        ])
        .unwrap();
        assert_eq!(cli.global.rate_limit.as_deref(), Some("50"));
        let Command::Simulate(args) = cli.command else {
            panic!("simulate")
        };
        assert_eq!(args.rate_limit, 0);
    }
}
