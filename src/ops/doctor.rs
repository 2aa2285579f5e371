//! `doctor`: one checklist of everything a run needs, each line OK, WARN or FAIL with the fix.
//!
//! Checks read, never change: the only side effects are a probe file created and removed in
//! the Parquet directory and in the metrics file's, one HEAD request to the alert webhook (no
//! alert is sent), and each job's advisory lock taken and given back at once (a run starting
//! in that instant would exit 75 and be retried by its timer). The command records how the
//! checklist came out (`receipts.check_outcomes`) for the metrics.

use super::groups::{self, GroupProblem};
use super::history;
use crate::chat::ChatClient;
use crate::db::roles;
use crate::lake::Lake;
use crate::run::{ledger, lock};
use crate::settings::{Settings, SettingsError};
use crate::sink::{Access, LakeTarget};
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use std::path::Path;

/// Below this much free space a run may not finish writing its Parquet files.
const FAIL_BELOW_BYTES: u64 = 100 << 20;
const WARN_BELOW_BYTES: u64 = 1 << 30;
/// Group lines shown per check before "... and N more".
const MAX_LINES: usize = 20;
/// Asked about when nothing is tracked, to check the key: the API answers 10010 for it.
const PROBE_GROUP: &str = "@TGS#receipt-exporter-doctor-probe";

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "OK",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        }
    }
}

/// One line of the checklist.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    pub level: Level,
    /// What was checked: `settings`, `postgres`, `chat api`, ...
    pub topic: &'static str,
    pub detail: String,
    /// What to do about a WARN or FAIL.
    pub fix: Option<String>,
}

fn ok(topic: &'static str, detail: impl Into<String>) -> Check {
    Check {
        level: Level::Ok,
        topic,
        detail: detail.into(),
        fix: None,
    }
}

fn warn(topic: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        level: Level::Warn,
        topic,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}

fn fail(topic: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        level: Level::Fail,
        ..warn(topic, detail, fix)
    }
}

/// The checklist as printed: one line per check, its fix indented below.
pub fn render(checks: &[Check]) -> String {
    let mut out = String::new();
    for c in checks {
        out.push_str(&format!(
            "{:<5} {}: {}\n",
            c.level.as_str(),
            c.topic,
            c.detail
        ));
        if let Some(fix) = &c.fix {
            out.push_str(&format!("      fix: {fix}\n"));
        }
    }
    let count = |l: Level| checks.iter().filter(|c| c.level == l).count();
    out.push_str(&format!(
        "doctor: {} OK, {} WARN, {} FAIL\n",
        count(Level::Ok),
        count(Level::Warn),
        count(Level::Fail)
    ));
    out
}

/// Runs every check that the settings allow.
pub async fn diagnose(settings: Result<Settings, SettingsError>) -> Vec<Check> {
    let mut out = Vec::new();
    let settings = match settings {
        Ok(s) => s,
        Err(e) => {
            out.push(fail("settings", e.to_string(), "correct that value (`receipt-exporter --help` lists every setting), then run doctor again"));
            return out;
        }
    };
    out.push(ok("settings", "valid"));
    for w in settings
        .warnings
        .iter()
        .map(String::as_str)
        .chain(settings.take_key_warning())
    {
        out.push(warn("settings", w.to_string(), "see the warning"));
    }
    let pool = postgres(&settings, &mut out).await;
    apps(&settings, pool.as_ref(), &mut out).await;
    if let Some(pool) = &pool {
        without_receipts(pool, &mut out).await;
    }
    match &settings.lake {
        Lake::Local(dir) => out.extend(parquet_dir(dir)),
        Lake::Remote(remote) => out.push(object_store(remote).await),
    }
    if let Some(pool) = &pool {
        out.extend(lake_target(&settings, pool).await);
        locks(&settings, pool, &mut out).await;
    }
    out.push(metrics_output(&settings));
    if let Some(check) = listener(&settings, pool.as_ref()).await {
        out.push(check);
    }
    if let Some(check) = webhook(&settings).await {
        out.push(check);
    }
    if let Some(pool) = &pool {
        record(pool, &out).await;
    }
    out
}

/// Records how the checklist came out, for the metrics.
async fn record(pool: &PgPool, checks: &[Check]) {
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| c.level == Level::Fail)
        .map(|c| format!("{}: {}", c.topic, c.detail))
        .collect();
    let detail = (!failed.is_empty()).then(|| {
        let shown: Vec<&str> = failed.iter().take(5).map(String::as_str).collect();
        shown.join("; ")
    });
    let ok = failed.is_empty();
    super::checks::record_or_warn(
        pool,
        super::checks::DOCTOR,
        ok,
        failed.len(),
        detail.as_deref(),
    )
    .await;
}

/// Where a run's outcome reaches Prometheus: the metrics file can be written (its directory
/// takes a new file, mode 0644 for node_exporter), or the endpoint or a Pushgateway is set.
fn metrics_output(settings: &Settings) -> Check {
    const TOPIC: &str = "metrics";
    if let Some(path) = &settings.metrics_file {
        return match super::metrics::check_writable(path) {
            Ok(detail) => ok(TOPIC, detail),
            Err(problem) => fail(TOPIC, problem, "create the directory writable for the exporter's user (the systemd units: see the README's deployment section), or fix EXPORT_METRICS_FILE"),
        };
    }
    match (&settings.metrics_listen, &settings.pushgateway_url) {
        (Some(addr), _) => ok(TOPIC, format!("served at http://{addr}/metrics while `schedule` (or a run) goes")),
        (None, Some(url)) => ok(TOPIC, format!("pushed to the Pushgateway at {} after each run", url.host_str().unwrap_or("?"))),
        (None, None) => warn(TOPIC, "no metrics output: a failed or stale job reaches no Prometheus alert", "set EXPORT_METRICS_FILE (node_exporter's textfile collector), EXPORT_METRICS_LISTEN (with `schedule`) or EXPORT_PUSHGATEWAY_URL; the alert rules are in jobs/prometheus/alerts.yml"),
    }
}

/// The read-receipt webhook's receiver (`listen`), when `EXPORT_LISTEN` is set: the app it
/// checks deliveries for, its token, and whether its inbox is being flushed.
async fn listener(settings: &Settings, pool: Option<&PgPool>) -> Option<Check> {
    const TOPIC: &str = "listen";
    let addr = settings.listen?;
    let Some(app) = settings.sdkappid else {
        return Some(fail(TOPIC, "EXPORT_LISTEN is set but TIM_SDKAPPID is not: `listen` cannot check which app a callback is for", "set TIM_SDKAPPID to the app whose callbacks come to it"));
    };
    let at = format!(
        "callbacks at http://{addr}{} for app {app}",
        settings.listen_path
    );
    let backlog = match pool {
        Some(pool) => crate::listen::inbox::backlog(pool).await.ok(),
        None => None,
    };
    Some(match (backlog, &settings.callback_token) {
        (Some((pending, lag)), _) if lag > 600.0 => fail(TOPIC, format!("{at}: {pending} inbox rows wait, the oldest for {lag:.0} s"), "start `receipt-exporter listen` (its unit), or look at its log: its flush is not running"),
        (_, None) => warn(TOPIC, format!("{at}, without a webhook authentication token: whoever reaches it can post receipts"), "set the token in the Chat console and its file in EXPORT_CALLBACK_TOKEN_FILE"),
        (_, Some(_)) => ok(TOPIC, format!("{at}, each checked against the webhook authentication token")),
    })
}

/// Whether the failure webhook's host answers: one HEAD request, no alert sent.
async fn webhook(settings: &Settings) -> Option<Check> {
    const TOPIC: &str = "alert webhook";
    let hook = super::alert::Webhook::from_settings(settings)?;
    let host = hook.host().to_string();
    Some(match hook.probe().await {
        Ok(status) if status < 500 => ok(TOPIC, format!("its host {host} answers (HTTP {status} to a HEAD request; no alert was sent)")),
        Ok(status) => fail(TOPIC, format!("its host {host} answered HTTP {status} to a HEAD request (no alert was sent)"), "check the receiver (its status page) and EXPORT_ALERT_WEBHOOK"),
        Err(e) => fail(TOPIC, format!("its host {host} does not answer: {e}"), "check EXPORT_ALERT_WEBHOOK (or the file EXPORT_ALERT_WEBHOOK_FILE names) and the network path to the receiver (proxy, firewall)"),
    })
}

/// Reachable, migrated, privileged: returns the pool when the tables can be read.
async fn postgres(settings: &Settings, out: &mut Vec<Check>) -> Option<PgPool> {
    let options = match settings.require_database() {
        Ok(o) => o,
        Err(e) => {
            out.push(fail("postgres", e.to_string(), "set DATABASE_URL"));
            return None;
        }
    };
    let pool = match crate::db::connect(options).await {
        Ok(p) => p,
        Err(e) => {
            out.push(fail(
                "postgres",
                e.to_string(),
                "start Postgres, or correct DATABASE_URL (host, port, database, user, password)",
            ));
            return None;
        }
    };
    let version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&pool)
        .await
        .unwrap_or_default();
    out.push(ok(
        "postgres",
        format!(
            "reachable at {} (server {version})",
            crate::db::describe(options)
        ),
    ));
    if !migrations(&pool, out).await {
        return None;
    }
    privileges(&pool, out).await;
    Some(pool)
}

/// Whether every migration of this version is applied (then the tables exist).
async fn migrations(pool: &PgPool, out: &mut Vec<Check>) -> bool {
    let applied: Vec<i64> = sqlx::query_scalar(
        "SELECT version FROM receipts._sqlx_migrations WHERE success ORDER BY version",
    )
    .fetch_all(pool)
    .await
    .unwrap_or_default();
    let known: Vec<(i64, String)> = crate::db::MIGRATOR
        .iter()
        .map(|m| (m.version, m.description.to_string()))
        .collect();
    let missing: Vec<String> = known
        .iter()
        .filter(|(v, _)| !applied.contains(v))
        .map(|(v, d)| format!("{v} {d}"))
        .collect();
    let unknown: Vec<String> = applied
        .iter()
        .filter(|v| !known.iter().any(|(k, _)| k == *v))
        .map(|v| v.to_string())
        .collect();
    if !missing.is_empty() {
        out.push(fail("migrations", format!("{} of {} not applied: {}", missing.len(), known.len(), missing.join(", ")), "run `receipt-exporter migrate` (as a role that may create tables in the schema receipts)"));
        return false;
    }
    if unknown.is_empty() {
        out.push(ok("migrations", format!("all {} applied", known.len())));
    } else {
        out.push(warn("migrations", format!("the database has migrations this version does not know ({}): a newer receipt-exporter migrated it", unknown.join(", ")), "run the newer receipt-exporter, or check that this one is the version you meant to deploy"));
    }
    true
}

/// The rights runs, backfills, retention and maintenance use ([`roles::NEEDS`]), probed as
/// this role (its group roles' included), never by trying: FAIL naming each one it lacks and
/// who needs it; WARN for rights with which a writer could rewrite what it recorded.
async fn privileges(pool: &PgPool, out: &mut Vec<Check>) {
    const TOPIC: &str = "privileges";
    let probed = async {
        let who = roles::whoami(pool).await?;
        let lacking = roles::lacking(pool, roles::NEEDS).await?;
        let excess = roles::holding(pool, roles::EXCESS).await?;
        Ok::<_, sqlx::Error>((who, lacking, excess))
    };
    let ((role, member, owner), lacking, excess) = match probed.await {
        Ok(p) => p,
        Err(e) => {
            return out.push(fail(
                TOPIC,
                format!("cannot read the role's rights: {e}"),
                "see the postgres line",
            ))
        }
    };
    if !lacking.is_empty() {
        let fix = if member {
            format!("{role} is a member of {}, which lacks them: run `receipt-exporter migrate` as the schema's owner (it grants {} what this version needs)", roles::WRITER, roles::WRITER)
        } else {
            format!("as a superuser or a role with CREATEROLE: GRANT {} TO {role}; (the README's \"Least-privilege Postgres roles\")", roles::WRITER)
        };
        return out.push(fail(
            TOPIC,
            format!("role {role} lacks {}", by_use(&lacking)),
            fix,
        ));
    }
    let checked: usize = roles::NEEDS
        .iter()
        .map(|n| n.right.split(", ").count())
        .sum();
    let has = format!("role {role} has every right runs, backfills, retention and maintenance need ({checked} checked)");
    if owner {
        out.push(ok(TOPIC, format!("{has}: it owns the schema receipts (or is a superuser) and may do anything; runs are better off as a member of {}", roles::WRITER)));
    } else if !excess.is_empty() {
        out.push(warn(TOPIC, format!("{has}, and more than a writer should: {}", excess.join(", ")), format!("make {role} a member of {} and revoke what it was granted itself (the README's upgrade lines under \"Least-privilege Postgres roles\")", roles::WRITER)));
    } else {
        let via = if member {
            format!(", as a member of {}", roles::WRITER)
        } else {
            String::new()
        };
        out.push(ok(TOPIC, format!("{has}{via}")));
    }
}

/// `for runs and backfills: A, B; for retention: C`.
fn by_use(rights: &[(roles::Use, String)]) -> String {
    let mut uses: Vec<roles::Use> = rights.iter().map(|(u, _)| *u).collect();
    uses.dedup();
    let parts: Vec<String> = uses
        .into_iter()
        .map(|u| {
            let names: Vec<&str> = rights
                .iter()
                .filter(|(w, _)| *w == u)
                .map(|(_, n)| n.as_str())
                .collect();
            format!("for {}: {}", u.as_str(), names.join(", "))
        })
        .collect();
    parts.join("; ")
}

/// Every app's key, account and endpoint ([`chat_api`]): the one `--app` names, else the
/// default app (when its TIM_* settings are given, or no app is declared) and each app of the
/// apps directory, each line naming its app.
async fn apps(settings: &Settings, pool: Option<&PgPool>, out: &mut Vec<Check>) {
    let declared = crate::settings::apps::names(&settings.apps_dir);
    let names: Vec<Option<String>> = match &settings.app {
        Some(_) => vec![None],
        None => {
            let default = (settings.sdkappid.is_some() || declared.is_empty()).then_some(None);
            default
                .into_iter()
                .chain(declared.into_iter().map(Some))
                .collect()
        }
    };
    for name in names {
        let first = out.len();
        match settings.for_app(name.as_deref()) {
            Ok(app) => chat_api(&app, pool, out).await,
            Err(e) => out.push(fail(
                "chat api",
                e.to_string(),
                "correct the app file (README, \"Many apps\"), then run doctor again",
            )),
        }
        let label = name.or_else(|| settings.app.clone());
        if let Some(label) = label.filter(|l| l != crate::settings::apps::DEFAULT_APP) {
            for check in &mut out[first..] {
                check.detail = format!("app {label}: {}", check.detail);
            }
        }
    }
}

/// The key, account and endpoint, with one `get_group_info` call about the tracked groups
/// (or a probe id when none are tracked); then each tracked group's verdict.
async fn chat_api(settings: &Settings, pool: Option<&PgPool>, out: &mut Vec<Check>) {
    let fix_config = "check TIM_SDKAPPID, the secret key, TIM_IDENTIFIER (an app admin account) and TIM_REGION / TIM_API_BASE against the Chat console";
    let api = match settings.require_api() {
        Ok(a) => a,
        Err(e) => return out.push(fail("chat api", e.to_string(), fix_config)),
    };
    let client: ChatClient = match groups::checking_client(settings, &api) {
        Ok(c) => c,
        Err(e) => return out.push(fail("chat api", e.to_string(), fix_config)),
    };
    let tracked = match pool {
        Some(pool) => crate::tracking::store::list(
            pool,
            None,
            crate::tracking::store::AppFilter::of(settings),
        )
        .await
        .map(|gs| {
            gs.into_iter()
                .filter(|g| g.enabled)
                .map(|g| g.group_id)
                .collect()
        })
        .unwrap_or_default(),
        None => Vec::new(),
    };
    let asked = if tracked.is_empty() {
        vec![PROBE_GROUP.to_string()]
    } else {
        tracked.clone()
    };
    let infos = match client.get_group_info(&asked).await {
        Ok(infos) => infos,
        Err(e) if e.is_config() => return out.push(fail("chat api", e.to_string(), fix_config)),
        Err(e) => {
            return out.push(fail(
                "chat api",
                e.to_string(),
                "check the network path to the API (proxy, firewall, TIM_REGION); then retry",
            ))
        }
    };
    out.push(ok(
        "chat api",
        format!(
            "{} accepted the key and the admin account {} (SDKAppID {})",
            api.endpoint.base_url(),
            api.identifier,
            api.sdkappid
        ),
    ));
    if pool.is_some() {
        tracked_groups(&tracked, &infos, out);
    }
}

fn tracked_groups(tracked: &[String], infos: &[crate::chat::GroupInfo], out: &mut Vec<Check>) {
    if tracked.is_empty() {
        return out.push(warn(
            "tracked groups",
            "no enabled tracked group: a run exports nothing",
            "`receipt-exporter track add GROUP_ID --seqs FROM..TO --check`",
        ));
    }
    let mut problems: Vec<(String, GroupProblem)> = Vec::new();
    for info in infos {
        if let Err(p) = groups::judge(info) {
            problems.push((info.group_id.clone(), p));
        }
    }
    let answered = infos.len();
    if problems.is_empty() && answered == tracked.len() {
        return out.push(ok("tracked groups", format!("all {answered} enabled groups exist, have a type with read receipts and at most 200 members")));
    }
    for (group, problem) in problems.iter().take(MAX_LINES) {
        let fix = match problem {
            GroupProblem::Missing { .. } => format!("`receipt-exporter track remove {group}` (its snapshots stay)"),
            _ => format!("`receipt-exporter track disable {group}` or `track remove {group}`: it will never give a receipt"),
        };
        out.push(fail(
            "tracked groups",
            format!("group {group}: {problem}"),
            fix,
        ));
    }
    if problems.len() > MAX_LINES {
        out.push(fail(
            "tracked groups",
            format!(
                "... and {} more groups like these",
                problems.len() - MAX_LINES
            ),
            "`receipt-exporter track list` and the lines above",
        ));
    }
    if answered < tracked.len() {
        out.push(warn("tracked groups", format!("the API answered for {answered} of {} groups (invalid answers were dropped, see the log)", tracked.len()), "run doctor again; if it persists, check the group ids"));
    }
}

/// Groups whose every seq answered 10062 in the newest run.
async fn without_receipts(pool: &PgPool, out: &mut Vec<Check>) {
    let found = match history::groups_without_receipts(pool).await {
        Ok(f) => f,
        Err(e) => {
            return out.push(fail(
                "receipts",
                format!("cannot read the last run's item codes: {e}"),
                "see the privileges line",
            ))
        }
    };
    let Some((run_id, groups)) = found else {
        return out.push(ok("receipts", "no finished run yet"));
    };
    if groups.is_empty() {
        return out.push(ok("receipts", format!("every group of run {run_id} had at least one read receipt (or no answer of 10062 only)")));
    }
    for g in groups.iter().take(MAX_LINES) {
        out.push(warn("receipts", format!("group {g}: every seq answered 10062 (no read receipt) in run {run_id}: read receipts are probably not enabled, or its messages were sent without a receipt request"), "switch read receipts on for the group type in the Chat console (a paid edition), and send messages with a read receipt requested; else untrack the group"));
    }
    if groups.len() > MAX_LINES {
        out.push(warn(
            "receipts",
            format!(
                "... and {} more groups without a single receipt in run {run_id}",
                groups.len() - MAX_LINES
            ),
            "see the lines above",
        ));
    }
}

/// The lake as a run would open it (reading only): in Iceberg mode the role's rights on the
/// catalog and the table where the lake says; then the cheap part of `lake verify`, every file
/// the lake should hold there with its recorded size (Hive-style the manifest's files; in
/// Iceberg the live data files of the table's current snapshot, which compaction may have
/// replaced the manifest's with, and the read-events files).
async fn lake_target(settings: &Settings, pool: &PgPool) -> Vec<Check> {
    let iceberg = settings.table_format == crate::settings::TableFormat::Iceberg;
    if iceberg {
        if let Some(missing) = catalog_rights(pool).await {
            return vec![missing];
        }
    }
    let opened = LakeTarget::open(pool, &settings.lake, settings.table_format, Access::Read).await;
    let target = match opened {
        Ok(target) => target,
        Err(e) => return vec![lake_refused(settings, &e)],
    };
    let identity = crate::sink::identity::Identity::of(&settings.lake, settings.table_format);
    let owner = ok(
        "lake owner",
        format!("{identity}: this database's lake (no other database's marker)"),
    );
    let mut checks = vec![owner];
    if let Some(table) = target.iceberg() {
        checks.push(iceberg_table(table));
    }
    checks.push(lake_files(pool, &target).await);
    checks
}

/// The FAIL line of a lake a run would refuse, with the fix for its reason.
fn lake_refused(settings: &Settings, e: &anyhow::Error) -> Check {
    use crate::sink::SinkError;
    let iceberg = settings.table_format == crate::settings::TableFormat::Iceberg;
    let (topic, fix) = match e.downcast_ref::<SinkError>() {
        _ if e.is::<crate::sink::owner::NotOurLake>() || e.is::<crate::sink::identity::OtherLake>() => {
            ("lake owner", "see the line: a run with these settings exits 2 and writes nothing")
        }
        Some(SinkError::IcebergElsewhere { .. }) => {
            ("iceberg", "point EXPORT_PARQUET_DIR at the lake that holds the table")
        }
        Some(SinkError::Config(_)) if iceberg => ("iceberg", "see the line"),
        Some(SinkError::Store { .. }) => ("lake", OBJECT_STORE_FIX),
        _ if iceberg => (
            "iceberg",
            "check that the lake holds the metadata file the catalog names (receipts.iceberg_tables)",
        ),
        _ => ("lake", "see the line"),
    };
    fail(topic, format!("{e:#}"), fix)
}

/// The cheap part of `lake verify`: every file the lake should hold is there with its recorded
/// size ([`LakeTarget::presence`]).
async fn lake_files(pool: &PgPool, target: &LakeTarget) -> Check {
    const TOPIC: &str = "lake";
    let (listed, found, dropped) = match target.presence(pool).await {
        Ok(found) => found,
        Err(e @ crate::sink::SinkError::Postgres { .. }) => {
            return fail(
                TOPIC,
                format!("the manifest cannot be read: {e}"),
                "grant the role SELECT on receipts.parquet_files and receipts.read_event_files",
            )
        }
        Err(e) => {
            return fail(
                TOPIC,
                format!("{target} cannot be listed: {e}"),
                OBJECT_STORE_FIX,
            )
        }
    };
    if let Some(table) = dropped.first() {
        return fail(
            TOPIC,
            format!(
                "the Iceberg table {} is not in the catalog (receipts.iceberg_tables), though files \
                 were committed to it: another engine or a hand dropped it",
                table.iceberg_name()
            ),
            "run `receipt-exporter lake verify --repair`: it creates the read progress's table again \
             from the change rows Postgres keeps (the snapshots' table: register its last metadata \
             file again, as `receipt-exporter run` says)",
        );
    }
    if found.is_empty() {
        return ok(
            TOPIC,
            format!("all {listed} file(s) the lake should hold are in {target} with their sizes"),
        );
    }
    const SHOWN: usize = 5;
    let mut names: Vec<String> = found
        .iter()
        .take(SHOWN)
        .map(|f| format!("{} ({})", f.file.path, f.problem))
        .collect();
    if found.len() > SHOWN {
        names.push(format!("{} more", found.len() - SHOWN));
    }
    fail(
        TOPIC,
        format!(
            "{} of {listed} file(s) the lake should hold are missing from {target} or of another size: {}",
            found.len(),
            names.join(", ")
        ),
        "run `receipt-exporter lake verify --repair`: it rewrites them from Postgres",
    )
}

/// A FAIL when the role cannot read, insert and update the catalog table.
async fn catalog_rights(pool: &PgPool) -> Option<Check> {
    let rights: sqlx::Result<(bool, bool, bool)> = sqlx::query_as(
        "SELECT has_table_privilege('receipts.iceberg_tables', 'SELECT'),
                has_table_privilege('receipts.iceberg_tables', 'INSERT'),
                has_column_privilege('receipts.iceberg_tables', 'metadata_location', 'UPDATE')",
    )
    .fetch_one(pool)
    .await;
    if !matches!(rights, Ok((true, true, true))) {
        return Some(fail(
            "iceberg",
            "the role cannot read, insert and update receipts.iceberg_tables (the catalog)",
            "make the exporter's role a member of receipt_writer (the README's \"Least-privilege Postgres roles\"), then run `receipt-exporter migrate` as the schema's owner",
        ));
    }
    None
}

/// In Iceberg mode: the table where the lake says, or not created yet.
fn iceberg_table(target: &crate::sink::iceberg::IcebergTarget) -> Check {
    const TOPIC: &str = "iceberg";
    let location = target.lake.table_location();
    if !target.listed {
        return ok(
            TOPIC,
            format!("the catalog has no table yet: the first run creates receipts.receipt_snapshots at {location}"),
        );
    }
    let metadata = target.table.metadata();
    ok(
        TOPIC,
        format!(
            "receipts.receipt_snapshots at {location}: {} snapshot(s), metadata {}",
            metadata.snapshots().len(),
            target.table.metadata_location().unwrap_or("-")
        ),
    )
}

const OBJECT_STORE_FIX: &str = "check the bucket name and the store's variables (AWS_REGION, AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY; GOOGLE_*; AZURE_*) and the credentials' rights to list, read, write and delete under the prefix";

/// A lake in an object store answers (whose lake it is, is the `lake` line's).
async fn object_store(remote: &crate::lake::Remote) -> Check {
    const TOPIC: &str = "parquet dir";
    match crate::sink::remote::answers(remote).await {
        Ok(()) => ok(TOPIC, format!("{} answers", remote.location())),
        Err(e) => fail(
            TOPIC,
            format!("{} cannot be used: {e:#}", remote.location()),
            OBJECT_STORE_FIX,
        ),
    }
}

/// Writable, with free space (the directory, or the nearest existing parent a run would
/// create it in).
pub fn parquet_dir(dir: &Path) -> Vec<Check> {
    const TOPIC: &str = "parquet dir";
    let fix = "create the directory for the exporter's user (or set EXPORT_PARQUET_DIR to one it may write)";
    let mut existing = dir;
    while !existing.exists() {
        match existing.parent() {
            Some(p) if !p.as_os_str().is_empty() => existing = p,
            _ => {
                existing = Path::new(".");
                break;
            }
        }
    }
    if !existing.is_dir() {
        return vec![fail(
            TOPIC,
            format!(
                "{} cannot be used: {} is not a directory",
                dir.display(),
                existing.display()
            ),
            fix,
        )];
    }
    let probe = existing.join(format!(".receipt-exporter-doctor-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir(&probe).and_then(|_| std::fs::remove_dir(&probe)) {
        return vec![fail(
            TOPIC,
            format!("{} is not writable: {e}", existing.display()),
            fix,
        )];
    }
    let state = if existing == dir {
        format!("{} is writable", dir.display())
    } else {
        format!(
            "{} does not exist yet; a run creates it in {} (writable)",
            dir.display(),
            existing.display()
        )
    };
    match free_bytes(existing) {
        Some(free) if free < FAIL_BELOW_BYTES => vec![fail(
            TOPIC,
            format!("{state}, but only {} free", size(free)),
            "free space on that file system, or move EXPORT_PARQUET_DIR",
        )],
        Some(free) if free < WARN_BELOW_BYTES => vec![warn(
            TOPIC,
            format!("{state}, {} free", size(free)),
            "free space soon: a run writes a few hundred bytes per receipt before compression",
        )],
        Some(free) => vec![ok(TOPIC, format!("{state}, {} free", size(free)))],
        None => vec![ok(TOPIC, state)],
    }
}

#[cfg(target_os = "linux")]
fn free_bytes(path: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(path).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

#[cfg(not(target_os = "linux"))]
fn free_bytes(_path: &Path) -> Option<u64> {
    None
}

fn size(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// Each job's lock: free, or held by a run the ledger says is running.
async fn locks(settings: &Settings, pool: &PgPool, out: &mut Vec<Check>) {
    const TOPIC: &str = "locks";
    let Ok(options) = settings.require_database() else {
        return;
    };
    let mut jobs = history::jobs(pool).await.unwrap_or_default();
    if !jobs.iter().any(|j| j == "default") {
        jobs.insert(0, "default".into());
    }
    let mut conn = match crate::db::connect_single(options).await {
        Ok(c) => c,
        Err(e) => return out.push(fail(TOPIC, e.to_string(), "see the postgres line")),
    };
    let mut free_jobs = Vec::new();
    for job in jobs {
        let free = lock::is_free(&mut conn, &job).await;
        let holder = ledger::holder(pool, &job).await.ok().flatten();
        match (free, holder) {
            (Err(e), _) => out.push(fail(TOPIC, format!("job {job}: cannot test the lock: {e}"), "see the postgres line")),
            (Ok(true), None) => free_jobs.push(job),
            (Ok(false), Some(r)) => out.push(ok(TOPIC, format!("job {job}: held by the live run {} on {} (pid {}) since {}", r.run_id, r.host, r.pid, r.started_at.format("%Y-%m-%d %H:%M:%S UTC")))),
            (Ok(false), None) => out.push(warn(TOPIC, format!("job {job}: held by a session with no running run in the ledger (a run starting right now, or another tool)"), "wait a moment and run doctor again; pg_locks (locktype advisory) shows the session")),
            (Ok(true), Some(r)) => out.push(lost_lock(&job, &r, Utc::now())),
        }
    }
    if !free_jobs.is_empty() {
        out.push(ok(TOPIC, format!("free for {}", free_jobs.join(", "))));
    }
    out.extend(warehouse_lock(&mut conn).await);
}

/// The warehouse lock, taken and given back at once: a WARN naming the session that holds it
/// (a run's repair, a rebuild, retention, or any session that took it: runs wait for it at
/// most EXPORT_LOCK_RECONNECT_TIMEOUT, then exit 75).
async fn warehouse_lock(conn: &mut sqlx::PgConnection) -> Option<Check> {
    use crate::sink::warehouse::{self, WarehouseLockError};
    let never = tokio_util::sync::CancellationToken::new();
    match warehouse::lock(conn, std::time::Duration::ZERO, &never).await {
        Ok(()) => {
            let _ = warehouse::unlock(conn).await;
            None
        }
        Err(WarehouseLockError::Busy { holder, end_it, .. }) => Some(warn(
            "locks",
            format!("the warehouse lock is held by {holder}: runs wait for it at most EXPORT_LOCK_RECONNECT_TIMEOUT, then exit 75"),
            format!("a run's repair, a rebuild or retention lets go when done: run doctor again in a minute{end_it}"),
        )),
        Err(e) => Some(fail("locks", format!("cannot test the warehouse lock: {e}"), "see the postgres line")),
    }
}

/// A running run whose lock is free: dead, or within its lease and perhaps reconnecting after
/// a Postgres restart (it is fenced if it comes back after the lease).
fn lost_lock(job: &str, r: &ledger::RunningRun, now: DateTime<Utc>) -> Check {
    const TOPIC: &str = "locks";
    let who = format!(
        "job {job}: run {} on {} (pid {}) is recorded as running, but its lock is free",
        r.run_id, r.host, r.pid
    );
    match r.lease_until {
        Some(until) if until > now => warn(
            TOPIC,
            format!("{who}: it lost its Postgres session and may be reconnecting (its lease runs until {})", until.format("%Y-%m-%d %H:%M:%S UTC")),
            "nothing to do by hand: it resumes if it reconnects in time; after the lease the next run of the job marks it abandoned and repairs its files",
        ),
        _ => warn(
            TOPIC,
            format!("{who} and its lease has run out: its process died or went silent"),
            "nothing to do by hand: the next run of the job marks it abandoned and repairs its files",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_with_a_free_lock_is_dead_only_after_its_lease() {
        let now = Utc::now();
        let run = |lease_until| ledger::RunningRun {
            run_id: 7,
            job: "default".into(),
            host: "h".into(),
            pid: 1,
            started_at: now,
            lease_until,
            boot_id: None,
            pid_namespace: None,
            process_start: None,
        };
        let within = lost_lock(
            "default",
            &run(Some(now + chrono::Duration::seconds(30))),
            now,
        );
        assert!(
            within.detail.contains("may be reconnecting"),
            "{}",
            within.detail
        );
        assert!(!within.detail.contains("died"), "{}", within.detail);
        for lease in [Some(now - chrono::Duration::seconds(1)), None] {
            let past = lost_lock("default", &run(lease), now);
            assert!(past.detail.contains("its process died"), "{}", past.detail);
        }
    }

    #[test]
    fn missing_rights_are_told_by_who_needs_them() {
        use roles::Use;
        let rights = vec![
            (Use::Run, "INSERT on receipts.export_runs".to_string()),
            (Use::Run, "SELECT on receipts.seq_windows".to_string()),
            (
                Use::Retention,
                "EXECUTE on receipts.drop_snapshot_month(date)".to_string(),
            ),
        ];
        assert_eq!(
            by_use(&rights),
            "for runs and backfills: INSERT on receipts.export_runs, SELECT on receipts.seq_windows; \
             for retention: EXECUTE on receipts.drop_snapshot_month(date)"
        );
    }
}
