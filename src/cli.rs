//! The command line: clap types only. Values stay raw strings here; `settings` validates them
//! (so every message names its flag or variable the same way, whatever the source).

use crate::exit::EXIT_CODES_HELP;
use crate::settings::{self, RawSettings, Setting};
use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, Args, FromArgMatches, Parser, Subcommand};
use std::path::PathBuf;

/// The settings block of `--help`, one line per row of [`settings::ALL`].
fn settings_help() -> String {
    let mut text = String::from(
        "Settings (a flag, else the environment variable, else the --config TOML file, else the default):\n",
    );
    for s in settings::ALL {
        let default = s.default.map(|d| format!(" [default: {d}]"));
        text.push_str(&format!(
            "  {:<20} {:<25} {}{}\n",
            s.flag.unwrap_or("(no flag)"),
            s.env,
            s.help,
            default.unwrap_or_default()
        ));
    }
    text + "  RUST_LOG sets the log level (e.g. RUST_LOG=debug)."
}

/// Exports Tencent Cloud Chat group read receipts to Postgres and Parquet.
#[derive(Debug, Parser)]
#[command(name = "receipt-exporter", version, about, long_about = None)]
#[command(after_help = format!("{}\n\n{EXIT_CODES_HELP}", settings_help()))]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOpts,
    #[command(subcommand)]
    pub command: Command,
}

/// Settings shared by every command: one global flag with its variable per row of
/// [`settings::ALL`], kept as raw text tagged with its origin (`settings` validates them).
#[derive(Debug, Clone, Default)]
pub struct GlobalOpts {
    raw: RawSettings,
}

impl GlobalOpts {
    /// The raw settings, each tagged with the flag or variable it came from.
    pub fn raw_settings(&self) -> RawSettings {
        self.raw.clone()
    }

    /// A setting's raw value as given by its flag or variable.
    pub fn given(&self, setting: Setting) -> Option<&str> {
        if setting == settings::CONFIG {
            return self.raw.config_file.as_ref().and_then(|p| p.to_str());
        }
        self.raw.given.get(setting.key).map(|(v, _)| v.as_str())
    }
}

/// One row's global flag. No clap default: a default would hide the config file's value.
fn global_arg(setting: &Setting, flag: &'static str) -> Arg {
    let mut help = setting.help.to_string();
    if setting == &settings::CONFIG {
        let keys: Vec<&str> = settings::ALL
            .iter()
            .filter(|s| s.in_file)
            .map(|s| s.key)
            .collect();
        help = format!("A TOML file with settings (keys: {})", keys.join(", "));
    }
    if let Some(default) = setting.default {
        help.push_str(&format!(" [default: {default}]"));
    }
    Arg::new(setting.key)
        .long(flag.trim_start_matches("--"))
        .env(setting.env)
        .hide_env_values(setting.hide_env_value)
        .global(true)
        .value_name(setting.value_name)
        .help(help)
}

impl Args for GlobalOpts {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        settings::ALL.iter().fold(cmd, |cmd, s| match s.flag {
            Some(flag) => cmd.arg(global_arg(s, flag)),
            None => cmd,
        })
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for GlobalOpts {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut raw = RawSettings::default();
        for s in settings::ALL {
            if s.flag.is_none() {
                continue;
            }
            let value = matches.get_one::<String>(s.key).cloned();
            let from_env = matches.value_source(s.key) == Some(ValueSource::EnvVariable);
            raw.give(*s, value, from_env);
        }
        // The settings without a flag come from their variables only; the secret ones (the
        // key, the webhook URL) go straight into a `Secret`.
        let secret = |s: Setting| std::env::var(s.env).ok().map(crate::secret::Secret::new);
        raw.secret_key = secret(settings::SECRET_KEY);
        raw.alert_webhook = secret(settings::ALERT_WEBHOOK);
        raw.give(
            settings::ALERT_WEBHOOK_FILE,
            std::env::var(settings::ALERT_WEBHOOK_FILE.env).ok(),
            true,
        );
        Ok(GlobalOpts { raw })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
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
    /// Drop the months of snapshots older than --keep-months from Postgres, only when every run
    /// in them is wholly in the lake, by the manifest and by the lake itself (its files there;
    /// in Iceberg each run's rows in the table's live files); prune old item codes
    #[command(after_help = EXIT_CODES_HELP)]
    Retention(RetentionArgs),
    /// The lake against the manifest: every listed file there with its size and row count
    #[command(subcommand)]
    Lake(LakeCommand),
    /// The Iceberg table (`--table-format iceberg`): maintenance
    #[command(subcommand)]
    Iceberg(IcebergCommand),
    /// Each message's read progress (receipts.message_read_progress): what every run keeps
    #[command(subcommand)]
    Progress(ProgressCommand),
    /// Receive the read-receipt webhook (Group.CallbackAfterReadReceipt) at --listen: each
    /// delivery is checked (app, token), kept in Postgres before it is answered, and flushed
    /// into the data set (Postgres and the lake) as a live run of its own; SIGTERM flushes
    /// what was acknowledged and exits 0
    #[command(after_help = EXIT_CODES_HELP)]
    Listen(ListenArgs),
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
    /// Write one self-contained HTML page on how a range of messages was read (read ratio by
    /// age, time to 50%/90%, the groups that read least, the daily trend, members gone silent)
    Report(ReportArgs),
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
    /// Print JSON (job, app, fresh, the newest runs) instead of the line
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The HTML file to write (replaced atomically)
    #[arg(long, value_name = "FILE.html")]
    pub out: std::path::PathBuf,
    /// Messages first seen at or after this (RFC 3339 timestamp or date, e.g. 2026-12-01);
    /// default: 7 days before --until
    #[arg(long, value_name = "WHEN", value_parser = crate::report::parse_instant)]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Messages first seen before this (exclusive; RFC 3339 timestamp or date); default: now
    #[arg(long, value_name = "WHEN", value_parser = crate::report::parse_instant)]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// Only this group (repeat for more); default: every group
    #[arg(long = "group", value_name = "GROUP_ID")]
    pub groups: Vec<String>,
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
pub struct ListenArgs {
    /// Flush the inbox into the data set at least this often (when anything waits), 1..3600
    #[arg(long, default_value_t = 5, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub flush_every: u64,
    /// Flush as soon as this many inbox rows arrived; also the most rows one write batch
    /// takes, 1..100000
    #[arg(long, default_value_t = 5000, value_name = "ROWS",
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub flush_rows: u64,
    /// Keep the deliveries of groups that are not tracked (by default they are counted in
    /// the run's ledger details and dropped)
    #[arg(long)]
    pub keep_untracked: bool,
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
    /// Also record who read each message (one `get_group_msg_receipt_detail` call per message
    /// whose read count grew; see "Who read it" in the README)
    #[arg(long, conflicts_with = "no_details")]
    pub details: bool,
    /// Stop recording who read each message (the read events recorded stay)
    #[arg(long)]
    pub no_details: bool,
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
    /// Ask the Chat API first about every group of the file (one get_group_info call per 50):
    /// refuse the whole import (exit 2, nothing written) if any does not exist, has a type
    /// without read receipts or more than 200 members, naming each one
    #[arg(long)]
    pub check: bool,
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
pub enum LakeCommand {
    /// Check that every file the manifest lists exists with its recorded size and, in its
    /// footer, its row count, and list the files it does not know (in an object store, also
    /// uploads left under _pending/); in Iceberg, every live data file of the table and each
    /// run's rows in them; exits 0 when all is well, 1 when a problem is found (or left after
    /// --repair)
    #[command(after_help = EXIT_CODES_HELP)]
    Verify(LakeVerifyArgs),
    /// Record another location or table format as this database's lake, on purpose. Every
    /// command checks its EXPORT_PARQUET_DIR and EXPORT_TABLE_FORMAT against the recorded ones
    /// and refuses others (exit 2); this is the one way to change them. It moves no file: copy
    /// the lake's files to the new location first (Hive-style; an Iceberg table cannot move by
    /// copying), or point at a new, empty lake. The new location is claimed for this database
    /// (its _receipt_exporter.json); give runs the new settings afterwards
    #[command(after_help = EXIT_CODES_HELP)]
    Move(LakeMoveArgs),
}

#[derive(Debug, Args)]
pub struct LakeMoveArgs {
    /// The location recorded now, exactly as a refused command names it: saying it is what
    /// makes a move deliberate
    #[arg(long, value_name = "LOCATION")]
    pub from: String,
    /// The lake's location from now on: a directory, file:///PATH, s3://BUCKET/PREFIX, gs://...,
    /// az://...
    #[arg(long, value_name = "LOCATION")]
    pub to: String,
    /// The table format from now on, parquet or iceberg [default: the recorded one]
    #[arg(long, value_name = "FORMAT")]
    pub to_format: Option<String>,
}

#[derive(Debug, Args)]
pub struct LakeVerifyArgs {
    /// Rewrite missing or damaged files from Postgres (a snapshot file's whole capture date; in
    /// an object store the file under its own key, and left-over uploads deleted; in Iceberg a
    /// lost data file replaced by its rows in one overwrite commit; days with runs that
    /// retention removed from Postgres cannot be rewritten)
    #[arg(long)]
    pub repair: bool,
}

#[derive(Debug, Subcommand)]
pub enum IcebergCommand {
    /// Expire snapshots older than --expire-older-than (keeping the newest --retain-last), then
    /// remove orphan files (under the table, named by no metadata, metadata files out of the
    /// log included, older than --orphan-min-age; never a data file a run of ours may still
    /// commit), in the snapshots' table and then the read progress's
    /// (receipts.message_read_progress); all planned and checked first, so a failed check
    /// changes nothing; works after any engine's commits; compaction is Spark's
    /// rewrite_data_files (see the README)
    #[command(after_help = EXIT_CODES_HELP)]
    Maintain(IcebergMaintainArgs),
}

#[derive(Debug, Args)]
pub struct IcebergMaintainArgs {
    /// Snapshots older than this are expired (e.g. 7d, 12h)
    #[arg(long, value_name = "AGE", default_value = "7d", value_parser = humantime::parse_duration)]
    pub expire_older_than: std::time::Duration,
    /// The newest snapshots kept whatever their age
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub retain_last: u32,
    /// Files no metadata names are removed only when older than this: a younger one may be
    /// another engine's file about to be committed (our runs' files are never taken, whatever
    /// their age)
    #[arg(long, value_name = "AGE", default_value = "1d", value_parser = humantime::parse_duration)]
    pub orphan_min_age: std::time::Duration,
    /// Print what would be expired and removed, and change nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct RetentionArgs {
    /// Months kept before the current one (UTC): with 3 in November, August to November stay
    /// and July and older are dropped
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1200))]
    pub keep_months: u32,
    /// Item codes kept per seq (the newest): at least the largest `no_receipt_after` of the jobs
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub keep_codes: u32,
    /// Print what would be dropped and pruned, and change nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Subcommand)]
pub enum ProgressCommand {
    /// Recompute every message's read progress from the snapshots in Postgres (after its
    /// definition changed, or a table filled by hand); a message whose earlier snapshots
    /// retention removed keeps its row as it is, never recomputed from the rest. Runs wait for
    /// it
    #[command(after_help = EXIT_CODES_HELP)]
    Rebuild,
}

#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// Rewrite the Parquet partitions of these capture dates from Postgres (a lost disk, a new
    /// Parquet location), atomically per day, keeping the manifest true; in an object store,
    /// each listed file of those days rewritten under its own key
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
        assert_eq!(cli.global.given(settings::RATE_LIMIT), Some("50"));
        let Command::Simulate(args) = cli.command else {
            panic!("simulate")
        };
        assert_eq!(args.rate_limit, 0);
    }
}
