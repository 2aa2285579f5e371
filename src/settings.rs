//! Settings: flags, else environment variables, else the optional TOML file (`--config`),
//! else defaults, turned into validated [`Settings`] before any I/O. Each setting is declared
//! once, as a row of [`ALL`]; the command line, the config keys and `--help` come from there.
//!
//! Every rejected value names where it came from (flag, variable or file key), shows the bad
//! value (never a secret) and the accepted form. The secret key comes only from
//! `TIM_SECRET_KEY` or a file (`TIM_SECRET_KEY_FILE`): no flag takes it, and a config file
//! may name a key file, never the key.

pub mod apps;

use crate::secret::Secret;
use sqlx::postgres::PgConnectOptions;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The regions of Tencent Cloud Chat and their REST API domains.
pub const REGIONS: &[(&str, &str)] = &[
    ("china", "console.tim.qq.com"),
    ("singapore", "adminapisgp.im.qcloud.com"),
    ("seoul", "adminapikr.im.qcloud.com"),
    ("tokyo", "adminapijpn.im.qcloud.com"),
    ("frankfurt", "adminapiger.im.qcloud.com"),
    ("silicon-valley", "adminapiusa.im.qcloud.com"),
    ("jakarta", "adminapiidn.im.qcloud.com"),
    // Listed on the vendor's page of `get_group_msg_receipt_detail` (2024).
    ("mumbai", "adminapiind.im.qcloud.com"),
];

/// The highest `rate_limit` (global or a job's): far above the API's 200 calls/s.
pub const MAX_RATE_LIMIT: u32 = 10_000;
pub const MAX_BATCH_SIZE: usize = 1_000;
pub const MAX_CONCURRENCY: usize = 1_000;
/// A key file holds one key of 64 characters: anything far larger is the wrong file (or a
/// device such as /dev/zero, which would otherwise be read until memory runs out).
pub const MAX_KEY_FILE_BYTES: u64 = 4 << 10;
/// The longest webhook authentication token the vendor accepts (`set_callback_token`: "The
/// maximum length of the token is 128, and the minimum length is 1").
pub const MAX_CALLBACK_TOKEN_CHARS: usize = 128;
/// A config file naming every key is under 2 KB.
pub const MAX_CONFIG_FILE_BYTES: u64 = 1 << 20;

/// A value rejected while building [`Settings`]. Exits with code 2.
#[derive(Debug, thiserror::Error)]
#[error("{origin}: {problem}")]
pub struct SettingsError {
    /// Where the value came from: `--flag`, `VARIABLE` or `key in FILE`.
    pub origin: String,
    pub problem: String,
}

fn invalid(origin: &Origin, shown: &str, expected: &str) -> SettingsError {
    SettingsError {
        origin: origin.to_string(),
        problem: format!("invalid value '{shown}': expected {expected}"),
    }
}

/// Where one raw value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Flag(&'static str),
    Env(&'static str),
    File { path: PathBuf, key: &'static str },
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(flag) => write!(f, "{flag}"),
            Origin::Env(var) => write!(f, "{var}"),
            Origin::File { path, key } => write!(f, "key `{key}` in {}", path.display()),
            Origin::Default => write!(f, "default"),
        }
    }
}

/// One global setting, declared once. The command line (`cli::GlobalOpts`), the environment
/// variables, the config file's keys, the settings block of `--help` and the check of the
/// README's table are all derived from these rows; `resolve` validates each one's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// Its key in a `--config` file, its id on the command line and in [`RawSettings`].
    pub key: &'static str,
    /// Its long flag (`--rate-limit`); `None` for the secret key, which would show in `ps`.
    pub flag: Option<&'static str>,
    /// Its environment variable.
    pub env: &'static str,
    /// Whether a `--config` file may set it (not the key itself, not `--config`).
    pub in_file: bool,
    /// Its default, as text, validated like a given value; `None`: unset unless given.
    pub default: Option<&'static str>,
    /// The flag's value in `--help` (`N`, `URL`).
    pub value_name: &'static str,
    /// What it is, in one line of `--help`.
    pub help: &'static str,
    /// `--help` does not show its variable's current value (it may hold a password).
    pub hide_env_value: bool,
}

impl Setting {
    /// The fields most rows share: no default, settable from the config file.
    const ROW: Setting = Setting {
        key: "",
        flag: None,
        env: "",
        in_file: true,
        default: None,
        value_name: "VALUE",
        help: "",
        hide_env_value: false,
    };
}

pub const CONFIG: Setting = Setting {
    key: "config",
    flag: Some("--config"),
    env: "EXPORT_CONFIG",
    in_file: false,
    value_name: "FILE",
    help: "a TOML file setting any of these by key",
    ..Setting::ROW
};
pub const DATABASE_URL: Setting = Setting {
    key: "database_url",
    flag: Some("--database-url"),
    env: "DATABASE_URL",
    value_name: "URL",
    help: "postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE",
    hide_env_value: true,
    ..Setting::ROW
};
pub const SDKAPPID: Setting = Setting {
    key: "sdkappid",
    flag: Some("--sdkappid"),
    env: "TIM_SDKAPPID",
    value_name: "ID",
    help: "the SDKAppID from the Chat console",
    ..Setting::ROW
};
pub const SECRET_KEY: Setting = Setting {
    key: "secret_key",
    env: "TIM_SECRET_KEY",
    in_file: false,
    help: "the app's secret key (never printed)",
    ..Setting::ROW
};
pub const SECRET_KEY_FILE: Setting = Setting {
    key: "secret_key_file",
    flag: Some("--secret-key-file"),
    env: "TIM_SECRET_KEY_FILE",
    value_name: "PATH",
    help: "a file holding the key; not with TIM_SECRET_KEY",
    ..Setting::ROW
};
pub const IDENTIFIER: Setting = Setting {
    key: "identifier",
    flag: Some("--identifier"),
    env: "TIM_IDENTIFIER",
    default: Some("administrator"),
    value_name: "ID",
    help: "the app admin account",
    ..Setting::ROW
};
pub const REGION: Setting = Setting {
    key: "region",
    flag: Some("--region"),
    env: "TIM_REGION",
    value_name: "REGION",
    help: "china, singapore, seoul, tokyo, frankfurt, silicon-valley, jakarta, mumbai",
    ..Setting::ROW
};
pub const API_BASE: Setting = Setting {
    key: "api_base",
    flag: Some("--api-base"),
    env: "TIM_API_BASE",
    value_name: "URL",
    help: "a base URL overriding the region (simulator)",
    ..Setting::ROW
};
pub const PARQUET_DIR: Setting = Setting {
    key: "parquet_dir",
    flag: Some("--parquet-dir"),
    env: "EXPORT_PARQUET_DIR",
    default: Some("./warehouse"),
    value_name: "DIR|URL",
    help: "the lake: a directory (or file:/PATH), or s3://BUCKET/PREFIX, gs://..., az://... (credentials from AWS_*, GOOGLE_*, AZURE_* variables); in Iceberg mode where the table lives (a directory or s3://); recorded by the database on first use, other values refused (`lake move` changes it)",
    ..Setting::ROW
};
/// `iceberg`: the snapshots go to the Iceberg table `receipts.receipt_snapshots` in the lake,
/// its catalog in Postgres (`src/sink/iceberg`), instead of Hive-style Parquet directories.
pub const TABLE_FORMAT: Setting = Setting {
    key: "table_format",
    flag: Some("--table-format"),
    env: "EXPORT_TABLE_FORMAT",
    default: Some("parquet"),
    value_name: "FORMAT",
    help: "parquet (Hive-style directories) or iceberg (an Iceberg table, catalog in Postgres); recorded with the lake on first use, the other refused (`lake move --to-format` changes it)",
    ..Setting::ROW
};
/// object_store retries a failed request for up to 3 minutes by default, silently: a lake that
/// does not answer would hold a run that long before it says anything.
pub const LAKE_TIMEOUT: Setting = Setting {
    key: "lake_timeout",
    flag: Some("--lake-timeout"),
    env: "EXPORT_LAKE_TIMEOUT",
    default: Some("60"),
    value_name: "SECONDS",
    help: "seconds one request to the lake (an object store's or the Iceberg table's, retries included) may take before the command gives up, 5..3600",
    ..Setting::ROW
};
/// The API's own ceiling is 200 calls/s; a paid add-on raises it.
pub const RATE_LIMIT: Setting = Setting {
    key: "rate_limit",
    flag: Some("--rate-limit"),
    env: "EXPORT_RATE_LIMIT",
    default: Some("200"),
    value_name: "N",
    help: "API calls per second, 1..10000",
    ..Setting::ROW
};
/// No maximum list length is documented: a conservative default, halved on 10004 at run time.
pub const BATCH_SIZE: Setting = Setting {
    key: "batch_size",
    flag: Some("--batch-size"),
    env: "EXPORT_BATCH_SIZE",
    default: Some("50"),
    value_name: "N",
    help: "seqs per API call, 1..1000",
    ..Setting::ROW
};
/// Enough requests in flight to reach 200 calls/s with a 150 ms round trip, with room for jitter.
pub const CONCURRENCY: Setting = Setting {
    key: "concurrency",
    flag: Some("--concurrency"),
    env: "EXPORT_CONCURRENCY",
    default: Some("64"),
    value_name: "N",
    help: "API requests in flight, 1..1000",
    ..Setting::ROW
};
/// The server gives up after about 3 s: a client timeout must be above that.
pub const REQUEST_TIMEOUT: Setting = Setting {
    key: "request_timeout",
    flag: Some("--request-timeout"),
    env: "EXPORT_REQUEST_TIMEOUT",
    default: Some("10"),
    value_name: "SECONDS",
    help: "seconds one API request may take, 4..300",
    ..Setting::ROW
};
/// A run refuses a group that plans more seqs than this (a hand-written window of a billion).
pub const MAX_SEQS_PER_GROUP: Setting = Setting {
    key: "max_seqs_per_group",
    flag: Some("--max-seqs-per-group"),
    env: "EXPORT_MAX_SEQS_PER_GROUP",
    default: Some("1000000"),
    value_name: "N",
    help: "a run refuses a group planning more seqs",
    ..Setting::ROW
};
/// A Postgres restart or failover takes seconds to a minute: a run rides out that long.
pub const LOCK_RECONNECT_TIMEOUT: Setting = Setting {
    key: "lock_reconnect_timeout",
    flag: Some("--lock-reconnect-timeout"),
    env: "EXPORT_LOCK_RECONNECT_TIMEOUT",
    default: Some("60"),
    value_name: "SECONDS",
    help: "seconds a run rides out a lost Postgres session, and the longest a run or a \
           command waits for the warehouse lock, 5..600",
    ..Setting::ROW
};
pub const APP: Setting = Setting {
    key: "app",
    flag: Some("--app"),
    env: "EXPORT_APP",
    value_name: "NAME",
    help: "the Chat app: NAME.toml in the apps directory; `default` (or unset): the TIM_* settings",
    ..Setting::ROW
};
pub const APPS_DIR: Setting = Setting {
    key: "apps_dir",
    flag: Some("--apps-dir"),
    env: "EXPORT_APPS_DIR",
    default: Some("./apps"),
    value_name: "DIR",
    help: "where `--app NAME` finds NAME.toml (sdkappid, region or api_base, identifier, secret_key_file)",
    ..Setting::ROW
};
pub const JOBS_DIR: Setting = Setting {
    key: "jobs_dir",
    flag: Some("--jobs-dir"),
    env: "EXPORT_JOBS_DIR",
    default: Some("./jobs"),
    value_name: "DIR",
    help: "where `run --job NAME` finds NAME.toml",
    ..Setting::ROW
};
pub const LOG_FORMAT: Setting = Setting {
    key: "log_format",
    flag: Some("--log-format"),
    env: "EXPORT_LOG_FORMAT",
    default: Some("human"),
    value_name: "FORMAT",
    help: "human or json (stderr)",
    ..Setting::ROW
};
pub const METRICS_FILE: Setting = Setting {
    key: "metrics_file",
    flag: Some("--metrics-file"),
    env: "EXPORT_METRICS_FILE",
    value_name: "PATH",
    help: "a *.prom file rewritten after each run",
    ..Setting::ROW
};
pub const PUSHGATEWAY_URL: Setting = Setting {
    key: "pushgateway_url",
    flag: Some("--pushgateway-url"),
    env: "EXPORT_PUSHGATEWAY_URL",
    value_name: "URL",
    help: "a Pushgateway each run pushes its metrics to",
    ..Setting::ROW
};
/// Issue 19: the most `get_group_msg_receipt_detail` calls one run makes (a job's
/// `max_detail_calls` overrides it).
pub const MAX_DETAIL_CALLS: Setting = Setting {
    key: "max_detail_calls",
    flag: Some("--max-detail-calls"),
    env: "EXPORT_MAX_DETAIL_CALLS",
    value_name: "N",
    help: "the most read-list calls one run makes, 0..1000000000 (none: the dry run's bound)",
    ..Setting::ROW
};
/// Whether the detail API shares the receipt API's calls per second: not documented.
pub const DETAIL_BUDGET: Setting = Setting {
    key: "detail_budget",
    flag: Some("--detail-budget"),
    env: "EXPORT_DETAIL_BUDGET",
    default: Some("shared"),
    value_name: "shared|own",
    help: "read-list calls share the rate limit with receipt calls, or have their own",
    ..Setting::ROW
};
/// A key that turns member accounts into keyed hashes before they are stored.
pub const MEMBER_HASH_KEY_FILE: Setting = Setting {
    key: "member_hash_key_file",
    flag: Some("--member-hash-key-file"),
    env: "EXPORT_MEMBER_HASH_KEY_FILE",
    value_name: "FILE",
    help: "store read events' member accounts as HMAC-SHA256 with the key in FILE",
    ..Setting::ROW
};

/// Issue 24: a `/metrics` endpoint (Prometheus) while `schedule` runs, or during a `run`.
pub const METRICS_LISTEN: Setting = Setting {
    key: "metrics_listen",
    flag: Some("--metrics-listen"),
    env: "EXPORT_METRICS_LISTEN",
    value_name: "ADDR",
    help:
        "serve /metrics (Prometheus) on IP:PORT while schedule (or a run) goes, e.g. 127.0.0.1:9899",
    ..Setting::ROW
};
/// Issue 24: an API that stops answering mid-run ends the run after this long, instead of
/// each batch using up its retries.
pub const OUTAGE_TIMEOUT: Setting = Setting {
    key: "outage_timeout",
    flag: Some("--outage-timeout"),
    env: "EXPORT_OUTAGE_TIMEOUT",
    default: Some("30"),
    value_name: "SECONDS",
    help: "seconds every API attempt may fail (refused, timed out, 5xx, DNS) before the run stops as failed, 5..3600",
    ..Setting::ROW
};
/// Issue 24: where a failed, partial or not started run is reported. Its URL embeds tokens:
/// no flag (it would show in `ps`), never printed, never in a config file.
pub const ALERT_WEBHOOK: Setting = Setting {
    key: "alert_webhook",
    env: "EXPORT_ALERT_WEBHOOK",
    in_file: false,
    value_name: "URL",
    help: "a webhook URL (Slack, Mattermost, Teams, any JSON receiver) each failed, partial or not started run is POSTed to (never printed)",
    hide_env_value: true,
    ..Setting::ROW
};
pub const ALERT_WEBHOOK_FILE: Setting = Setting {
    key: "alert_webhook_file",
    env: "EXPORT_ALERT_WEBHOOK_FILE",
    value_name: "PATH",
    help: "a file holding the alert webhook's URL; not with EXPORT_ALERT_WEBHOOK",
    ..Setting::ROW
};

/// Issue 27: where `listen` receives the Chat service's callbacks (the read-receipt webhook).
pub const LISTEN: Setting = Setting {
    key: "listen",
    flag: Some("--listen"),
    env: "EXPORT_LISTEN",
    value_name: "ADDR",
    help: "where `listen` receives the read-receipt webhook, IP:PORT, e.g. 127.0.0.1:8270 (behind a TLS proxy)",
    ..Setting::ROW
};
/// Issue 27: the URL path the callbacks are POSTed to.
pub const LISTEN_PATH: Setting = Setting {
    key: "listen_path",
    flag: Some("--listen-path"),
    env: "EXPORT_LISTEN_PATH",
    default: Some("/callback"),
    value_name: "PATH",
    help: "the path of the callback URL `listen` answers on",
    ..Setting::ROW
};
/// Issue 27: the webhook authentication token (the console's, or `set_callback_token`'s),
/// from a file only: never a flag, a variable's value or a config key (it would show).
pub const CALLBACK_TOKEN_FILE: Setting = Setting {
    key: "callback_token_file",
    flag: Some("--callback-token-file"),
    env: "EXPORT_CALLBACK_TOKEN_FILE",
    value_name: "PATH",
    help: "a file holding the webhook authentication token `listen` checks each callback's Sign with (never printed)",
    ..Setting::ROW
};

/// Every global setting, in the order of `--help` and the README's table. A row missing here
/// is missing everywhere: no flag, no variable, no config key (and `resolve` panics on it).
///
/// A new setting: a `Setting` row above, listed here; its typed field in [`Settings`] and the
/// line of [`resolve`] that validates it; its row in the README's settings table and its sample
/// values in the walk of `tests/it/cli.rs` (both tests fail until they are there).
pub const ALL: &[Setting] = &[
    CONFIG,
    DATABASE_URL,
    SDKAPPID,
    SECRET_KEY,
    SECRET_KEY_FILE,
    IDENTIFIER,
    REGION,
    API_BASE,
    APP,
    APPS_DIR,
    PARQUET_DIR,
    LAKE_TIMEOUT,
    TABLE_FORMAT,
    RATE_LIMIT,
    BATCH_SIZE,
    CONCURRENCY,
    REQUEST_TIMEOUT,
    MAX_SEQS_PER_GROUP,
    LOCK_RECONNECT_TIMEOUT,
    JOBS_DIR,
    LOG_FORMAT,
    METRICS_FILE,
    PUSHGATEWAY_URL,
    METRICS_LISTEN,
    OUTAGE_TIMEOUT,
    ALERT_WEBHOOK,
    ALERT_WEBHOOK_FILE,
    MAX_DETAIL_CALLS,
    DETAIL_BUDGET,
    MEMBER_HASH_KEY_FILE,
    LISTEN,
    LISTEN_PATH,
    CALLBACK_TOKEN_FILE,
];

/// Raw values before validation: what the command line and environment gave (clap resolves
/// flag-before-variable), plus the config file, looked up by key.
#[derive(Debug, Default, Clone)]
pub struct RawSettings {
    /// Values from flags or variables, by key, with their origin.
    pub given: BTreeMap<&'static str, (String, Origin)>,
    /// `TIM_SECRET_KEY`, read from the environment by the caller.
    pub secret_key: Option<Secret>,
    /// `EXPORT_ALERT_WEBHOOK`, read from the environment by the caller.
    pub alert_webhook: Option<Secret>,
    pub config_file: Option<PathBuf>,
    /// The config file was named by `EXPORT_CONFIG`, not `--config` (for messages).
    pub config_from_env: bool,
}

impl RawSettings {
    /// Records a flag-or-variable value (`from_env` says which of the two clap took).
    pub fn give(&mut self, setting: Setting, value: Option<String>, from_env: bool) {
        let Some(value) = value else { return };
        if setting == CONFIG {
            self.config_file = Some(PathBuf::from(value));
            self.config_from_env = from_env;
            return;
        }
        let origin = match setting.flag {
            Some(flag) if !from_env => Origin::Flag(flag),
            _ => Origin::Env(setting.env),
        };
        self.given.insert(setting.key, (value, origin));
    }
}

/// Where the Chat API is: a region's domain, or a base URL that overrides it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiEndpoint {
    Region(String),
    Base(String),
}

impl ApiEndpoint {
    /// The base URL requests go to (no trailing slash).
    pub fn base_url(&self) -> String {
        match self {
            ApiEndpoint::Region(region) => {
                let domain = REGIONS
                    .iter()
                    .find(|(name, _)| name == region)
                    .map(|(_, d)| *d)
                    .unwrap_or_default();
                format!("https://{domain}")
            }
            ApiEndpoint::Base(url) => url.trim_end_matches('/').to_string(),
        }
    }
}

/// Whether `get_group_msg_receipt_detail` calls share the receipt API's calls per second
/// (the documentation says the limit is per API, but the app's backend may share it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetailBudget {
    /// One limiter for both APIs (the default: never more than `rate_limit` calls/s in all).
    Shared,
    /// A limiter of its own, at `rate_limit` too.
    Own,
}

/// How the snapshots are laid out in the lake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableFormat {
    /// `receipt_snapshots/capture_date=YYYY-MM-DD/run-<run_id>-<part>.parquet`, as always.
    Parquet,
    /// The Iceberg table `receipts.receipt_snapshots` (format v2), catalog in Postgres.
    Iceberg,
}

impl TableFormat {
    /// `parquet` or `iceberg` (any case, spaces around), as the setting is written.
    pub fn parse(text: &str) -> Option<TableFormat> {
        match text.trim().to_ascii_lowercase().as_str() {
            "parquet" => Some(TableFormat::Parquet),
            "iceberg" => Some(TableFormat::Iceberg),
            _ => None,
        }
    }

    /// The setting's value for this format.
    pub fn as_str(self) -> &'static str {
        match self {
            TableFormat::Parquet => "parquet",
            TableFormat::Iceberg => "iceberg",
        }
    }
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Readable lines.
    Human,
    /// One JSON object per line (journald, log shippers).
    Json,
}

/// Validated settings. A setting a command does not need may be absent; the command asks for
/// it with a `require_*` method, which says how to set it.
#[derive(Debug, Clone)]
pub struct Settings {
    pub database: Option<PgConnectOptions>,
    /// The app given by `--app` / `EXPORT_APP` (`None`: not given, the default app); a
    /// command resolves it with [`Settings::for_app`].
    pub app: Option<String>,
    /// The app these settings' TIM_* values are: `default`, or the name of the file they came
    /// from once [`Settings::for_app`] applied it.
    pub app_name: String,
    /// Where `--app NAME` finds `NAME.toml`.
    pub apps_dir: PathBuf,
    pub sdkappid: Option<u64>,
    pub secret_key: Option<Secret>,
    pub identifier: String,
    pub api: Option<ApiEndpoint>,
    /// The lake: where Parquet files go (a directory or an object store prefix).
    pub lake: crate::lake::Lake,
    /// Hive-style Parquet files or an Iceberg table (`--table-format`).
    pub table_format: TableFormat,
    /// How long one request to a lake in an object store is retried (`--lake-timeout`): for
    /// opening another location than `lake` (`lake move --to`).
    pub lake_timeout: std::time::Duration,
    /// The app's API budget, calls per second, shared by every process and job.
    pub rate_limit: u32,
    /// A job's own cap (its `rate_limit`), at most `rate_limit`: it limits that job only.
    pub job_rate_cap: Option<u32>,
    pub batch_size: usize,
    pub concurrency: usize,
    pub jobs_dir: PathBuf,
    /// The most seqs a run plans for one group; a group above it is refused, not attempted.
    pub max_seqs_per_group: u64,
    /// How long one API request may take before it counts as a transient failure.
    pub request_timeout: std::time::Duration,
    /// How long a run re-establishes a lost Postgres session (its job lock, its writes)
    /// before it stops as `failed`; and the longest anything waits for the warehouse lock.
    pub lock_reconnect_timeout: std::time::Duration,
    /// Where the Prometheus text file goes after each run (node_exporter's textfile collector).
    pub metrics_file: Option<PathBuf>,
    /// A Pushgateway to push each job's series to after each run.
    pub pushgateway_url: Option<reqwest::Url>,
    /// Where `/metrics` is served while `schedule` (or a run) goes.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// How long every API attempt may fail, with none answered, before the run stops.
    pub outage_timeout: std::time::Duration,
    /// Where failed, partial and not started runs are reported (its URL is never printed).
    pub alert_webhook: Option<Secret>,
    /// How log lines look on stderr.
    pub log_format: LogFormat,
    /// The most read-list calls one run makes; `None`: as many as the dry run's bound.
    pub max_detail_calls: Option<u64>,
    /// Whether read-list calls share the receipt calls' rate limit.
    pub detail_budget: DetailBudget,
    /// The key member accounts are hashed with before they are stored (never printed).
    pub member_hash_key: Option<Secret>,
    /// Where `listen` receives callbacks.
    pub listen: Option<std::net::SocketAddr>,
    /// The callback URL's path (`/callback`).
    pub listen_path: String,
    /// The webhook authentication token callbacks are signed with (never printed).
    pub callback_token: Option<Secret>,
    /// Problems worth a warning but not a refusal (a metrics file not named `*.prom`).
    pub warnings: Vec<String>,
    /// A key file readable by others: said once, by the first command step that reads the key
    /// (see [`Settings::take_key_warning`]), never by commands that do not use it.
    pub key_warning: Option<String>,
}

/// What the Chat API needs, all present.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    pub sdkappid: u64,
    pub secret_key: Secret,
    pub identifier: String,
    pub endpoint: ApiEndpoint,
}

impl Settings {
    /// The most calls per second this process may make: the job's cap, else the app's budget.
    pub fn own_rate(&self) -> u32 {
        self.job_rate_cap
            .unwrap_or(self.rate_limit)
            .min(self.rate_limit)
    }

    pub fn require_database(&self) -> Result<&PgConnectOptions, SettingsError> {
        self.database.as_ref().ok_or_else(|| SettingsError {
            origin: "DATABASE_URL".into(),
            problem: "not set: set DATABASE_URL or --database-url to postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
                .into(),
        })
    }

    pub fn require_sdkappid(&self) -> Result<u64, SettingsError> {
        self.sdkappid.ok_or_else(|| SettingsError {
            origin: "TIM_SDKAPPID".into(),
            problem:
                "not set: set TIM_SDKAPPID or --sdkappid to the SDKAppID from the Chat console"
                    .into(),
        })
    }

    pub fn require_secret_key(&self) -> Result<Secret, SettingsError> {
        if let Some(warning) = self.take_key_warning() {
            tracing::warn!("{warning}");
        }
        self.secret_key.clone().ok_or_else(|| SettingsError {
            origin: "TIM_SECRET_KEY".into(),
            problem:
                "not set: set TIM_SECRET_KEY, or TIM_SECRET_KEY_FILE to a file holding the key"
                    .into(),
        })
    }

    /// The key file's warning, the first time it is asked for in this process (settings are
    /// cloned per job, the warning is said once).
    pub fn take_key_warning(&self) -> Option<&str> {
        static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        let warning = self.key_warning.as_deref()?;
        (!SAID.swap(true, std::sync::atomic::Ordering::Relaxed)).then_some(warning)
    }

    /// Everything a call to the Chat API needs.
    pub fn require_api(&self) -> Result<ApiSettings, SettingsError> {
        let endpoint = self.api.clone().ok_or_else(|| SettingsError {
            origin: "TIM_REGION".into(),
            problem: format!(
                "not set: set TIM_REGION or --region to one of {}, or TIM_API_BASE / --api-base to a base URL",
                region_names()
            ),
        })?;
        Ok(ApiSettings {
            sdkappid: self.require_sdkappid()?,
            secret_key: self.require_secret_key()?,
            identifier: self.identifier.clone(),
            endpoint,
        })
    }
}

fn region_names() -> String {
    REGIONS
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where each setting's raw value is looked up: given (flag or variable), else the config
/// file, else its default.
struct Sources {
    given: BTreeMap<&'static str, (String, Origin)>,
    file: BTreeMap<&'static str, (String, Origin)>,
}

impl Sources {
    /// The setting's raw value and where it came from; `None` when it is unset and has no
    /// default.
    fn pick(&self, setting: Setting) -> Option<(String, Origin)> {
        assert!(
            ALL.contains(&setting),
            "{} is not in settings::ALL",
            setting.key
        );
        let found = self
            .given
            .get(setting.key)
            .or_else(|| self.file.get(setting.key));
        found
            .cloned()
            .or_else(|| setting.default.map(|d| (d.to_string(), Origin::Default)))
    }

    /// The value of a setting that has a default.
    fn get(&self, setting: Setting) -> (String, Origin) {
        self.pick(setting)
            .unwrap_or_else(|| panic!("{} has no default", setting.key))
    }
}

/// Validates raw settings (reading the config file and the key file, nothing else).
///
/// (Over 60 lines: one statement per setting, in the order of `Settings`' fields; split, they would scatter.)
pub fn resolve(raw: RawSettings) -> Result<Settings, SettingsError> {
    let file = match &raw.config_file {
        Some(path) => read_config_file(path, raw.config_from_env)?,
        None => BTreeMap::new(),
    };
    let src = Sources {
        given: raw.given,
        file,
    };
    let mut warnings = Vec::new();
    let bounded = |setting: Setting, min: u64, max: u64, unit: &str| {
        let (v, o) = src.get(setting);
        parse_bounded(&v, &o, min, max, unit)
    };
    let path = |setting: Setting| {
        let (v, o) = src.get(setting);
        parse_path(&v, &o)
    };

    let database = src
        .pick(DATABASE_URL)
        .map(|(v, o)| parse_database_url(&v, &o, &mut warnings))
        .transpose()?;
    let sdkappid = src
        .pick(SDKAPPID)
        .map(|(v, o)| parse_sdkappid(&v, &o))
        .transpose()?;
    let mut key_warnings = Vec::new();
    let secret_key = secret_key(raw.secret_key, src.pick(SECRET_KEY_FILE), &mut key_warnings)?;
    let (v, o) = src.get(IDENTIFIER);
    let identifier = parse_identifier(&v, &o)?;
    // A region is validated even when a base URL overrides it: every value is.
    let region = src
        .pick(REGION)
        .map(|(v, o)| parse_region(&v, &o))
        .transpose()?;
    let api = match (src.pick(API_BASE), region) {
        (Some((v, o)), _) => Some(ApiEndpoint::Base(parse_api_base(&v, &o)?)),
        (None, Some(region)) => Some(ApiEndpoint::Region(region)),
        (None, None) => None,
    };
    let (v, o) = src.get(LOG_FORMAT);
    let log_format = parse_log_format(&v, &o)?;
    let metrics_file = src
        .pick(METRICS_FILE)
        .map(|(v, o)| parse_metrics_file(&v, &o, &mut warnings))
        .transpose()?;
    let pushgateway_url = src
        .pick(PUSHGATEWAY_URL)
        .map(|(v, o)| parse_pushgateway_url(&v, &o))
        .transpose()?;
    let metrics_listen = src
        .pick(METRICS_LISTEN)
        .map(|(v, o)| parse_listen(&v, &o))
        .transpose()?;
    let alert_webhook = alert_webhook(
        raw.alert_webhook,
        src.pick(ALERT_WEBHOOK_FILE),
        &mut warnings,
    )?;
    let max_detail_calls = src
        .pick(MAX_DETAIL_CALLS)
        .map(|(v, o)| parse_bounded(&v, &o, 0, 1_000_000_000, "calls"))
        .transpose()?;
    let (v, o) = src.get(DETAIL_BUDGET);
    let detail_budget = match v.trim().to_ascii_lowercase().as_str() {
        "shared" => DetailBudget::Shared,
        "own" => DetailBudget::Own,
        _ => return Err(invalid(&o, &v, "shared or own")),
    };
    let member_hash_key = src
        .pick(MEMBER_HASH_KEY_FILE)
        .map(|(v, o)| {
            let key = read_key_file(Path::new(&v), &o, &mut warnings)?;
            check_key(key, &o)
        })
        .transpose()?;
    let listen = src
        .pick(LISTEN)
        .map(|(v, o)| parse_listen(&v, &o))
        .transpose()?;
    let (v, o) = src.get(LISTEN_PATH);
    let listen_path = parse_listen_path(&v, &o)?;
    let callback_token = src
        .pick(CALLBACK_TOKEN_FILE)
        .map(|(v, o)| read_callback_token(Path::new(&v), &o, &mut warnings))
        .transpose()?;
    let (v, o) = src.get(TABLE_FORMAT);
    let table_format =
        TableFormat::parse(&v).ok_or_else(|| invalid(&o, &v, "parquet or iceberg"))?;
    let lake_timeout = std::time::Duration::from_secs(bounded(LAKE_TIMEOUT, 5, 3600, "seconds")?);
    let max = MAX_RATE_LIMIT as u64;
    let app = src
        .pick(APP)
        .map(|(v, o)| apps::parse_name(&v, &o))
        .transpose()?;
    Ok(Settings {
        database,
        app,
        app_name: apps::DEFAULT_APP.to_string(),
        apps_dir: path(APPS_DIR)?,
        sdkappid,
        secret_key,
        identifier,
        api,
        lake: lake(src.get(PARQUET_DIR), lake_timeout)?,
        table_format,
        lake_timeout,
        rate_limit: bounded(RATE_LIMIT, 1, max, "calls per second")? as u32,
        job_rate_cap: None,
        batch_size: bounded(BATCH_SIZE, 1, MAX_BATCH_SIZE as u64, "seqs per call")? as usize,
        concurrency: bounded(CONCURRENCY, 1, MAX_CONCURRENCY as u64, "requests in flight")?
            as usize,
        jobs_dir: path(JOBS_DIR)?,
        max_seqs_per_group: bounded(MAX_SEQS_PER_GROUP, 1, 1_000_000_000, "seqs")?,
        request_timeout: std::time::Duration::from_secs(bounded(
            REQUEST_TIMEOUT,
            4,
            300,
            "seconds (above the server's 3 s)",
        )?),
        lock_reconnect_timeout: std::time::Duration::from_secs(bounded(
            LOCK_RECONNECT_TIMEOUT,
            5,
            600,
            "seconds",
        )?),
        log_format,
        metrics_file,
        pushgateway_url,
        metrics_listen,
        outage_timeout: std::time::Duration::from_secs(bounded(
            OUTAGE_TIMEOUT,
            5,
            3600,
            "seconds",
        )?),
        alert_webhook,
        max_detail_calls,
        detail_budget,
        member_hash_key,
        listen,
        listen_path,
        callback_token,
        warnings,
        key_warning: key_warnings.pop(),
    })
}

fn parse_log_format(value: &str, origin: &Origin) -> Result<LogFormat, SettingsError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "human" => Ok(LogFormat::Human),
        "json" => Ok(LogFormat::Json),
        _ => Err(invalid(origin, value, "human or json")),
    }
}

/// Reads the TOML config file into raw values by key. Unknown keys are refused (a typo would
/// otherwise be silently ignored), and so is the key itself.
///
/// (Over 60 lines: reading, the refusals (size, TOML, the key, unknown keys, wrong types) and the values, each refusal naming the file.)
fn read_config_file(
    path: &Path,
    from_env: bool,
) -> Result<BTreeMap<&'static str, (String, Origin)>, SettingsError> {
    let named_by = match CONFIG.flag {
        Some(flag) if !from_env => flag,
        _ => CONFIG.env,
    };
    let origin = |problem: String| SettingsError {
        origin: format!("{named_by} {}", path.display()),
        problem,
    };
    let text = read_small_file(path, MAX_CONFIG_FILE_BYTES).map_err(|e| {
        origin(format!(
            "cannot read the config file: {e} (a config file is a few lines of TOML)"
        ))
    })?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| origin(format!("not valid TOML: {}", e.message())))?;
    let mut values = BTreeMap::new();
    for (key, value) in table {
        if key == SECRET_KEY.key || key == "tim_secret_key" {
            return Err(origin(
                "a config file may name a key file (`secret_key_file`), never the key itself: \
                 remove `secret_key` and use secret_key_file or TIM_SECRET_KEY"
                    .into(),
            ));
        }
        if key == ALERT_WEBHOOK.key {
            return Err(origin(
                "a config file may name a file holding the alert webhook's URL \
                 (`alert_webhook_file`), never the URL itself: it carries the receiver's token"
                    .into(),
            ));
        }
        let Some(spec) = ALL.iter().find(|s| s.in_file && s.key == key) else {
            let known = ALL
                .iter()
                .filter(|s| s.in_file)
                .map(|s| s.key)
                .collect::<Vec<_>>()
                .join(", ");
            return Err(origin(format!(
                "unknown key `{key}`: the known keys are {known}"
            )));
        };
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(n) => n.to_string(),
            other => {
                return Err(origin(format!(
                    "key `{key}`: expected a string or an integer, got {}",
                    other.type_str()
                )))
            }
        };
        values.insert(
            spec.key,
            (
                text,
                Origin::File {
                    path: path.to_path_buf(),
                    key: spec.key,
                },
            ),
        );
    }
    Ok(values)
}

/// Reads a text file of at most `max` bytes; a larger one is refused after reading `max + 1`.
fn read_small_file(path: &Path, max: u64) -> Result<String, String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(max + 1).read_to_end(&mut bytes))
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > max {
        return Err(format!("it is larger than {max} bytes"));
    }
    String::from_utf8(bytes).map_err(|_| "it is not UTF-8 text".to_string())
}

fn parse_database_url(
    value: &str,
    origin: &Origin,
    warnings: &mut Vec<String>,
) -> Result<PgConnectOptions, SettingsError> {
    let expected = "postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE";
    let shown = redact_url_password(value);
    if !(value.starts_with("postgres://") || value.starts_with("postgresql://")) {
        return Err(invalid(origin, &shown, expected));
    }
    let options =
        PgConnectOptions::from_str(value).map_err(|_| invalid(origin, &shown, expected))?;
    let has_password = url::Url::parse(value).is_ok_and(|u| u.password().is_some());
    if has_password && matches!(origin, Origin::Flag(_)) {
        warnings.push(format!(
            "{origin} holds a password, which any local user can read in `ps` (/proc/PID/cmdline): \
             set DATABASE_URL in the environment instead, or leave the password out of the URL and \
             keep it in a password file (PGPASSFILE, default ~/.pgpass, mode 0600)"
        ));
    }
    Ok(options)
}

/// A URL with its password replaced, for messages.
pub fn redact_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:[redacted]@{host}"),
        None => url.to_string(),
    }
}

fn parse_sdkappid(value: &str, origin: &Origin) -> Result<u64, SettingsError> {
    match value.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(invalid(
            origin,
            value,
            "a positive integer: the SDKAppID from the Chat console, e.g. 1400000000",
        )),
    }
}

fn parse_identifier(value: &str, origin: &Origin) -> Result<String, SettingsError> {
    let ok = !value.is_empty()
        && value.len() <= 32
        && !value.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(value.to_string())
    } else {
        Err(invalid(
            origin,
            value,
            "an app admin account id: 1 to 32 bytes, no spaces",
        ))
    }
}

fn parse_region(value: &str, origin: &Origin) -> Result<String, SettingsError> {
    let lower = value.trim().to_ascii_lowercase().replace('_', "-");
    if REGIONS.iter().any(|(name, _)| *name == lower) {
        Ok(lower)
    } else {
        Err(invalid(
            origin,
            value,
            &format!("one of {}", region_names()),
        ))
    }
}

/// An API base URL: https anywhere, plain http only on a loopback address (the simulator, a
/// local proxy): the real API is never spoken to without TLS.
fn parse_api_base(value: &str, origin: &Origin) -> Result<String, SettingsError> {
    let expected = "a base URL such as https://adminapisgp.im.qcloud.com, or http://127.0.0.1:PORT for the simulator";
    let url = reqwest::Url::parse(value).map_err(|_| invalid(origin, value, expected))?;
    let loopback = is_loopback(&url);
    let scheme_ok = url.scheme() == "https" || (url.scheme() == "http" && loopback);
    if !scheme_ok || url.query().is_some() || !url.username().is_empty() {
        let why = if url.scheme() == "http" {
            "https (plain http only for a loopback address such as http://127.0.0.1:PORT)"
        } else {
            expected
        };
        return Err(invalid(origin, value, why));
    }
    Ok(value.trim_end_matches('/').to_string())
}

/// The lake's location, opened (an object store reads its environment variables here).
fn lake(
    (value, origin): (String, Origin),
    bound: std::time::Duration,
) -> Result<crate::lake::Lake, SettingsError> {
    let problem = |problem| SettingsError {
        origin: origin.to_string(),
        problem,
    };
    crate::lake::set_request_bound(bound);
    crate::lake::parse_location(&value)
        .map_err(problem)?
        .open(bound)
        .map_err(problem)
}

fn parse_path(value: &str, origin: &Origin) -> Result<PathBuf, SettingsError> {
    if value.is_empty() {
        return Err(invalid(origin, value, "a directory path"));
    }
    Ok(PathBuf::from(value))
}

/// A file path; a name without `.prom` is allowed but warned about, since node_exporter's
/// textfile collector reads only `*.prom` files.
fn parse_metrics_file(
    value: &str,
    origin: &Origin,
    warnings: &mut Vec<String>,
) -> Result<PathBuf, SettingsError> {
    let path = PathBuf::from(value);
    if value.is_empty() || value.ends_with('/') || path.file_name().is_none() {
        return Err(invalid(
            origin,
            value,
            "a file path such as /var/lib/node_exporter/textfile/receipt_exporter.prom",
        ));
    }
    if path.extension().is_none_or(|e| e != "prom") {
        warnings.push(format!(
            "{origin}: {value} does not end in .prom: node_exporter's textfile collector reads only *.prom files"
        ));
    }
    Ok(path)
}

/// The Pushgateway's base URL (http or https; the `/metrics/job/...` path is added per push).
/// Credentials in the URL are refused: they would show in `ps` and in messages.
fn parse_pushgateway_url(value: &str, origin: &Origin) -> Result<reqwest::Url, SettingsError> {
    let expected = "the Pushgateway's base URL, e.g. http://pushgateway:9091 (no path /metrics/job/..., no query, no credentials)";
    let shown = redact_url_password(value);
    let url = reqwest::Url::parse(value).map_err(|_| invalid(origin, &shown, expected))?;
    let ok = matches!(url.scheme(), "http" | "https")
        && url.host().is_some()
        && url.username().is_empty()
        && url.password().is_none()
        && url.query().is_none()
        && url.fragment().is_none()
        && !url.path().contains("/metrics");
    if !ok {
        return Err(invalid(origin, &shown, expected));
    }
    Ok(url)
}

/// The address `/metrics` is served on: `IP:PORT` (no name lookup before any I/O).
fn parse_listen(value: &str, origin: &Origin) -> Result<std::net::SocketAddr, SettingsError> {
    value.trim().parse().map_err(|_| {
        invalid(
            origin,
            value,
            "an address to listen on, IP:PORT, e.g. 127.0.0.1:9899 or [::]:9899",
        )
    })
}

/// The callback URL's path: `/` and then letters, digits and `/-_.~` (no query, no spaces).
fn parse_listen_path(value: &str, origin: &Origin) -> Result<String, SettingsError> {
    let ok = value.starts_with('/')
        && value.len() <= 200
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_' | '.' | '~'));
    if !ok {
        return Err(invalid(
            origin,
            value,
            "a URL path such as /callback (a leading /, then letters, digits and / - _ . ~)",
        ));
    }
    Ok(value.to_string())
}

/// The webhook authentication token, from its file: 1 to 128 characters without spaces, as
/// the vendor's `set_callback_token` accepts. Registered with the log scrubber.
fn read_callback_token(
    path: &Path,
    origin: &Origin,
    warnings: &mut Vec<String>,
) -> Result<Secret, SettingsError> {
    let token = read_secret_file(path, origin, warnings, "callback token")?;
    let trimmed = token.expose().trim();
    let chars = trimmed.chars().count();
    if chars == 0
        || chars > MAX_CALLBACK_TOKEN_CHARS
        || trimmed.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(SettingsError {
            origin: origin.to_string(),
            problem: format!(
                "the callback token is empty, longer than {} characters or contains spaces: \
                 expected the webhook authentication token from the Chat console (value not shown)",
                MAX_CALLBACK_TOKEN_CHARS
            ),
        });
    }
    crate::secret::hide_in_logs(trimmed);
    Ok(Secret::new(trimmed))
}

/// The alert webhook: from `EXPORT_ALERT_WEBHOOK` or from the file named by
/// `EXPORT_ALERT_WEBHOOK_FILE` (or its config key), never both. Its value is never shown:
/// the URL carries the receiver's token.
fn alert_webhook(
    from_env: Option<Secret>,
    file: Option<(String, Origin)>,
    warnings: &mut Vec<String>,
) -> Result<Option<Secret>, SettingsError> {
    let (url, origin) = match (from_env, file) {
        (Some(_), Some((_, origin))) => {
            return Err(SettingsError {
                origin: format!("{} and {origin}", ALERT_WEBHOOK.env),
                problem: "both are set: keep exactly one".into(),
            })
        }
        (Some(url), None) => (url, Origin::Env(ALERT_WEBHOOK.env)),
        (None, Some((path, origin))) => {
            let url = read_secret_file(Path::new(&path), &origin, warnings, "webhook URL")?;
            (url, origin)
        }
        (None, None) => return Ok(None),
    };
    let trimmed = url.expose().trim();
    let parsed = reqwest::Url::parse(trimmed).ok();
    let ok = parsed.as_ref().is_some_and(|u| {
        u.host().is_some() && (u.scheme() == "https" || (u.scheme() == "http" && is_loopback(u)))
    });
    if !ok {
        return Err(SettingsError {
            origin: origin.to_string(),
            problem: "invalid value (not shown: a webhook URL holds its receiver's token): expected an https:// URL (plain http only for a loopback address such as http://127.0.0.1:PORT/hook)".into(),
        });
    }
    crate::secret::hide_in_logs(trimmed);
    Ok(Some(Secret::new(trimmed)))
}

/// Whether a URL's host is this machine (plain http is accepted only there).
fn is_loopback(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

fn parse_bounded(
    value: &str,
    origin: &Origin,
    min: u64,
    max: u64,
    unit: &str,
) -> Result<u64, SettingsError> {
    match value.trim().parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(invalid(
            origin,
            value,
            &format!("a whole number of {unit} from {min} to {max}"),
        )),
    }
}

/// The key: from `TIM_SECRET_KEY` or from the file named by `TIM_SECRET_KEY_FILE` (or the
/// flag / config key), never both.
fn secret_key(
    from_env: Option<Secret>,
    file: Option<(String, Origin)>,
    warnings: &mut Vec<String>,
) -> Result<Option<Secret>, SettingsError> {
    match (from_env, file) {
        (Some(_), Some((_, origin))) => Err(SettingsError {
            origin: format!("{} and {origin}", SECRET_KEY.env),
            problem: "both are set: keep exactly one (TIM_SECRET_KEY_FILE is meant for systemd credentials)".into(),
        }),
        (Some(key), None) => check_key(key, &Origin::Env(SECRET_KEY.env)).map(Some),
        (None, Some((path, origin))) => {
            let key = read_key_file(Path::new(&path), &origin, warnings)?;
            check_key(key, &origin).map(Some)
        }
        (None, None) => Ok(None),
    }
}

fn check_key(key: Secret, origin: &Origin) -> Result<Secret, SettingsError> {
    let trimmed = key.expose().trim();
    if trimmed.is_empty() || trimmed.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(SettingsError {
            origin: origin.to_string(),
            problem: "the secret key is empty or contains spaces: expected the key from the Chat console \
                      (value not shown)"
                .into(),
        });
    }
    crate::secret::hide_in_logs(trimmed);
    Ok(Secret::new(trimmed))
}

fn read_key_file(
    path: &Path,
    origin: &Origin,
    warnings: &mut Vec<String>,
) -> Result<Secret, SettingsError> {
    read_secret_file(path, origin, warnings, "key")
}

/// A small file holding one secret (`what`: "key", "webhook URL"); a mode that lets others
/// read it warns.
fn read_secret_file(
    path: &Path,
    origin: &Origin,
    warnings: &mut Vec<String>,
    what: &str,
) -> Result<Secret, SettingsError> {
    let text = read_small_file(path, MAX_KEY_FILE_BYTES).map_err(|e| SettingsError {
        origin: origin.to_string(),
        problem: format!(
            "cannot read the {what} file {}: {e} (it should hold only the {what})",
            path.display()
        ),
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                warnings.push(format!(
                    "the {what} file {} is readable by others (mode {mode:04o}): chmod 600 it",
                    path.display()
                ));
            }
        }
    }
    Ok(Secret::new(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(pairs: &[(Setting, &str)]) -> RawSettings {
        let mut raw = RawSettings::default();
        for (spec, value) in pairs {
            raw.give(*spec, Some(value.to_string()), true);
        }
        raw
    }

    fn err(raw: RawSettings) -> String {
        resolve(raw).unwrap_err().to_string()
    }

    #[test]
    fn defaults_apply_when_nothing_is_given() {
        let s = resolve(RawSettings::default()).unwrap();
        assert_eq!(s.rate_limit, 200);
        assert_eq!(s.batch_size, 50);
        assert_eq!(s.concurrency, 64);
        assert_eq!(s.request_timeout, std::time::Duration::from_secs(10));
        assert_eq!(s.max_seqs_per_group, 1_000_000);
        assert_eq!(s.lock_reconnect_timeout, std::time::Duration::from_secs(60));
        assert_eq!(s.jobs_dir, PathBuf::from("./jobs"));
        assert_eq!(s.log_format, LogFormat::Human);
        assert_eq!(s.identifier, "administrator");
        assert_eq!(s.lake.local_dir(), Some(Path::new("./warehouse")));
        assert!(s
            .require_database()
            .unwrap_err()
            .to_string()
            .contains("DATABASE_URL"));
    }

    #[test]
    fn bad_numbers_name_the_variable_the_value_and_the_form() {
        let e = err(raw(&[(SDKAPPID, "abc")]));
        assert!(e.starts_with("TIM_SDKAPPID: invalid value 'abc'"), "{e}");
        let e = err(raw(&[(RATE_LIMIT, "0")]));
        assert!(
            e.contains("EXPORT_RATE_LIMIT") && e.contains("from 1 to 10000"),
            "{e}"
        );
        let e = err(raw(&[(RATE_LIMIT, "20000")]));
        assert!(e.contains("'20000'"), "{e}");
        let e = err(raw(&[(BATCH_SIZE, "0")]));
        assert!(e.contains("EXPORT_BATCH_SIZE"), "{e}");
        let e = err(raw(&[(CONCURRENCY, "-3")]));
        assert!(e.contains("EXPORT_CONCURRENCY"), "{e}");
    }

    #[test]
    fn metrics_settings_are_validated_and_named() {
        let s = resolve(raw(&[
            (METRICS_FILE, "/tmp/x/receipt_exporter.prom"),
            (PUSHGATEWAY_URL, "http://pushgateway:9091/"),
        ]))
        .unwrap();
        assert_eq!(
            s.metrics_file.unwrap(),
            PathBuf::from("/tmp/x/receipt_exporter.prom")
        );
        assert_eq!(s.pushgateway_url.unwrap().host_str(), Some("pushgateway"));
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        let s = resolve(raw(&[(METRICS_FILE, "/tmp/metrics.txt")])).unwrap();
        assert!(s.warnings[0].contains(".prom"), "{:?}", s.warnings);
        let e = err(raw(&[(METRICS_FILE, "/tmp/dir/")]));
        assert!(e.starts_with("EXPORT_METRICS_FILE: invalid value"), "{e}");
        for bad in [
            "pushgateway:9091",
            "ftp://pg:9091",
            "http://pg:9091/metrics/job/x",
            "http://pg:9091/?a=b",
        ] {
            let e = err(raw(&[(PUSHGATEWAY_URL, bad)]));
            assert!(
                e.starts_with("EXPORT_PUSHGATEWAY_URL: invalid value"),
                "{e}"
            );
        }
        let e = err(raw(&[(PUSHGATEWAY_URL, "http://u:hunter2@pg:9091")]));
        assert!(e.contains("[redacted]") && !e.contains("hunter2"), "{e}");
    }

    #[test]
    fn a_flag_is_named_as_a_flag() {
        let mut r = RawSettings::default();
        r.give(REGION, Some("mars".into()), false);
        let e = err(r);
        assert!(
            e.starts_with("--region: invalid value 'mars'") && e.contains("singapore"),
            "{e}"
        );
    }

    #[test]
    fn database_url_errors_hide_the_password() {
        let e = err(raw(&[(DATABASE_URL, "mysql://bob:hunter2@db/x")]));
        assert!(e.contains("DATABASE_URL") && !e.contains("hunter2"), "{e}");
    }

    #[test]
    fn a_password_on_the_command_line_warns_and_names_the_alternatives() {
        let mut r = RawSettings::default();
        r.give(
            DATABASE_URL,
            Some("postgres://bob:hunter2@db/x".into()),
            false,
        );
        let s = resolve(r).unwrap();
        assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
        let w = &s.warnings[0];
        assert!(w.starts_with("--database-url holds a password"), "{w}");
        assert!(
            w.contains("PGPASSFILE") && w.contains("DATABASE_URL") && !w.contains("hunter2"),
            "{w}"
        );
        // From the environment, or without a password: nothing to warn about.
        assert!(
            resolve(raw(&[(DATABASE_URL, "postgres://bob:hunter2@db/x")]))
                .unwrap()
                .warnings
                .is_empty()
        );
        let mut r = RawSettings::default();
        r.give(DATABASE_URL, Some("postgres://bob@db/x".into()), false);
        assert!(resolve(r).unwrap().warnings.is_empty());
    }

    #[test]
    fn oversized_key_and_config_files_are_refused_by_name() {
        let e = err(raw(&[(SECRET_KEY_FILE, "/dev/zero")]));
        assert!(
            e.contains("cannot read the key file /dev/zero: it is larger than 4096 bytes"),
            "{e}"
        );
        let e = err(RawSettings {
            config_file: Some("/dev/zero".into()),
            ..Default::default()
        });
        assert!(
            e.starts_with(
                "--config /dev/zero: cannot read the config file: it is larger than 1048576 bytes"
            ),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, [0xff, 0xfe, b'k']).unwrap();
        let e = err(raw(&[(SECRET_KEY_FILE, path.to_str().unwrap())]));
        assert!(e.contains("it is not UTF-8 text"), "{e}");
    }

    #[test]
    fn api_base_needs_https_except_on_loopback() {
        assert!(resolve(raw(&[(API_BASE, "http://127.0.0.1:8087")])).is_ok());
        assert!(resolve(raw(&[(API_BASE, "https://adminapisgp.im.qcloud.com/")])).is_ok());
        let e = err(raw(&[(API_BASE, "http://adminapisgp.im.qcloud.com")]));
        assert!(e.contains("TIM_API_BASE") && e.contains("https"), "{e}");
        let base = resolve(raw(&[(API_BASE, "http://localhost:9/")]))
            .unwrap()
            .api
            .unwrap();
        assert_eq!(base.base_url(), "http://localhost:9");
    }

    #[test]
    fn region_maps_to_its_domain_and_base_overrides_it() {
        let s = resolve(raw(&[(REGION, "Silicon_Valley")])).unwrap();
        assert_eq!(
            s.api.unwrap().base_url(),
            "https://adminapiusa.im.qcloud.com"
        );
        let s = resolve(raw(&[(REGION, "Mumbai")])).unwrap();
        assert_eq!(
            s.api.unwrap().base_url(),
            "https://adminapiind.im.qcloud.com"
        );
        let s = resolve(raw(&[(REGION, "tokyo"), (API_BASE, "http://127.0.0.1:1")])).unwrap();
        assert_eq!(s.api.unwrap().base_url(), "http://127.0.0.1:1");
        let e = err(raw(&[(REGION, "mars"), (API_BASE, "http://127.0.0.1:1")]));
        assert!(
            e.contains("invalid value 'mars'"),
            "a bad region fails under a base: {e}"
        );
    }

    #[test]
    fn key_and_key_file_together_are_refused() {
        let mut r = raw(&[(SECRET_KEY_FILE, "/nonexistent")]);
        r.secret_key = Some(Secret::new("abc"));
        let e = err(r);
        assert!(e.contains("both are set"), "{e}");
    }

    #[test]
    fn key_file_is_read_trimmed_and_a_wide_mode_warns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "s3cr3t\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let s = resolve(raw(&[(SECRET_KEY_FILE, path.to_str().unwrap())])).unwrap();
        assert_eq!(s.secret_key.as_ref().unwrap().expose(), "s3cr3t");
        assert!(
            s.warnings.is_empty(),
            "not for commands that never read the key"
        );
        let warning = s.key_warning.as_deref().unwrap();
        assert!(warning.contains("readable by others"), "{warning}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let s = resolve(raw(&[(SECRET_KEY_FILE, path.to_str().unwrap())])).unwrap();
        assert!(s.warnings.is_empty() && s.key_warning.is_none());
        let e = err(raw(&[(SECRET_KEY_FILE, "/nonexistent/key")]));
        assert!(
            e.contains("cannot read the key file /nonexistent/key"),
            "{e}"
        );
    }

    #[test]
    fn config_file_fills_in_below_flags_and_refuses_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "rate_limit = 50\nbatch_size = 20\nregion = \"seoul\"\n",
        )
        .unwrap();
        let mut r = raw(&[(BATCH_SIZE, "30")]);
        r.config_file = Some(path.clone());
        let s = resolve(r).unwrap();
        assert_eq!((s.rate_limit, s.batch_size), (50, 30));
        std::fs::write(&path, "secret_key = \"abc\"\n").unwrap();
        let r = RawSettings {
            config_file: Some(path.clone()),
            ..Default::default()
        };
        let e = err(r);
        assert!(
            e.contains("never the key itself") && !e.contains("abc"),
            "{e}"
        );
        std::fs::write(&path, "rate_limt = 5\n").unwrap();
        let e = err(RawSettings {
            config_file: Some(path.clone()),
            ..Default::default()
        });
        assert!(e.contains("unknown key `rate_limt`"), "{e}");
        std::fs::write(&path, "rate_limit = 0\n").unwrap();
        let e = err(RawSettings {
            config_file: Some(path),
            ..Default::default()
        });
        assert!(e.starts_with("key `rate_limit` in "), "{e}");
    }
}
