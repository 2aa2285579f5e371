//! `receipt-exporter track ...`: manage tracked groups and their seq windows.

use crate::cli::{TrackAddArgs, TrackCommand, TrackImportArgs, TrackListArgs, TrackRemoveArgs};
use crate::exit::{usage, Exit};
use crate::settings::Settings;
use crate::tracking::follow;
use crate::tracking::store::{self, TrackedGroup};
use crate::tracking::{validate_group_id, validate_tag, SeqWindow};
use crate::untrusted::escape;
use anyhow::Context;
use sqlx::PgPool;
use std::path::Path;

pub async fn run(settings: &Settings, cmd: TrackCommand) -> anyhow::Result<Exit> {
    // Validate the arguments before touching the database.
    match &cmd {
        TrackCommand::Add(a) => {
            validate_group_id(&a.group_id).map_err(usage)?;
            parse_windows(&a.seqs)?;
            for tag in &a.tags {
                validate_tag(tag).map_err(usage)?;
            }
        }
        TrackCommand::Remove(a) => {
            validate_group_id(&a.group_id).map_err(usage)?;
            parse_windows(&a.seqs)?;
        }
        TrackCommand::Disable(g) | TrackCommand::Enable(g) => {
            validate_group_id(&g.group_id).map_err(usage)?
        }
        TrackCommand::List(a) => {
            if let Some(tag) = &a.tag {
                validate_tag(tag).map_err(usage)?;
            }
        }
        TrackCommand::Import(_) => {}
    }
    let rows = match &cmd {
        TrackCommand::Import(a) => Some(read_csv(&a.file)?),
        _ => None,
    };
    match &cmd {
        TrackCommand::Add(a) if a.check => check_group(settings, &a.group_id).await?,
        TrackCommand::Import(a) if a.check => {
            check_import(settings, &a.file, rows.as_deref().unwrap_or_default()).await?
        }
        _ => {}
    }
    let pool = super::connect_migrated(settings).await?;
    if !matches!(cmd, TrackCommand::List(_)) {
        check_may_change(&pool).await?;
    }
    // The app the groups are of: `--app NAME`'s, else the default app's (TIM_SDKAPPID; when
    // unset, the groups are of no app until the default app's next run adopts them).
    let app = settings.app_sdkappid();
    match cmd {
        TrackCommand::Add(a) => add(&pool, app, a).await,
        TrackCommand::List(a) => {
            let filter = match settings.app {
                Some(_) => store::AppFilter::of(settings),
                None => store::AppFilter::All,
            };
            list(&pool, filter, a).await
        }
        TrackCommand::Remove(a) => remove(&pool, app, a).await,
        TrackCommand::Disable(g) => set_enabled(&pool, app, &g.group_id, false).await,
        TrackCommand::Enable(g) => set_enabled(&pool, app, &g.group_id, true).await,
        TrackCommand::Import(a) => import(&pool, app, &a, rows.unwrap_or_default()).await,
    }
}

/// Refuses (exit 2, nothing written) a role that may only read the tracked groups, as the
/// runs' role does: which groups are tracked is the operator's to change.
async fn check_may_change(pool: &PgPool) -> anyhow::Result<()> {
    if store::may_change(pool).await? {
        return Ok(());
    }
    let (role, _, _) = crate::db::roles::whoami(pool).await?;
    let owner = crate::db::roles::schema_owner(pool)
        .await?
        .unwrap_or_else(|| "the schema's owner".into());
    Err(usage(format!(
        "role {role} may only read the tracked groups (runs never change them): run `track` as \
         {owner}, the role that owns the schema receipts and runs `migrate`; or, to let {role} \
         change them, as {owner}: GRANT INSERT, UPDATE, DELETE ON receipts.tracked_groups, \
         receipts.seq_windows TO {role};"
    )))
}

/// `track add --check`: asks the Chat API about the group and refuses (exit 2, before anything
/// is written) one that cannot have read receipts.
async fn check_group(settings: &Settings, group_id: &str) -> anyhow::Result<()> {
    let api = settings.require_api()?;
    let client = crate::ops::groups::checking_client(settings, &api)?;
    let infos = client
        .get_group_info(&[group_id.to_string()])
        .await
        .with_context(|| format!("while checking group {group_id} with the Chat API"))?;
    let Some(info) = infos.first() else {
        anyhow::bail!(
            "the Chat API gave no valid answer about group {group_id}: see the log, then retry"
        );
    };
    crate::ops::groups::judge(info).map_err(|problem| {
        usage(format!(
            "not tracking {group_id}: {problem}; nothing was written"
        ))
    })?;
    println!(
        "checked {group_id}: {}, {} members",
        info.group_type.as_deref().unwrap_or("type not given"),
        info.member_num.map_or("?".into(), |n| n.to_string())
    );
    Ok(())
}

/// `track import --check`: asks the Chat API about every group of the file (one
/// `get_group_info` per 50) and refuses the whole import (exit 2, nothing written) when any
/// cannot have read receipts, one line per such group.
async fn check_import(settings: &Settings, file: &Path, rows: &[ImportRow]) -> anyhow::Result<()> {
    let mut ids: Vec<String> = rows.iter().map(|(g, _, _)| g.clone()).collect();
    ids.sort();
    ids.dedup();
    let api = settings.require_api()?;
    let client = crate::ops::groups::checking_client(settings, &api)?;
    let infos = client.get_group_info(&ids).await.with_context(|| {
        format!(
            "while checking the groups of {} with the Chat API",
            file.display()
        )
    })?;
    let mut refused = Vec::new();
    for info in &infos {
        if let Err(problem) = crate::ops::groups::judge(info) {
            refused.push(format!("{}: {problem}", info.group_id));
        }
    }
    let answered: std::collections::HashSet<&str> =
        infos.iter().map(|i| i.group_id.as_str()).collect();
    for id in ids.iter().filter(|id| !answered.contains(id.as_str())) {
        refused.push(format!(
            "{id}: the Chat API gave no valid answer about it (see the log)"
        ));
    }
    if !refused.is_empty() {
        return Err(usage(format!(
            "{}: {} of {} group(s) would never give a receipt, nothing imported:\n  {}",
            file.display(),
            refused.len(),
            ids.len(),
            refused.join("\n  ")
        )));
    }
    println!(
        "checked {} group(s) of {}: all can have read receipts",
        ids.len(),
        file.display()
    );
    Ok(())
}

fn parse_windows(texts: &[String]) -> anyhow::Result<Vec<SeqWindow>> {
    texts
        .iter()
        .map(|t| SeqWindow::parse(t).map_err(|e| usage(format!("--seqs: {e}"))))
        .collect()
}

async fn add(pool: &PgPool, app: Option<i64>, a: TrackAddArgs) -> anyhow::Result<Exit> {
    let windows = parse_windows(&a.seqs)?;
    let mut tx = pool.begin().await?;
    if windows.is_empty()
        && a.latest.is_none()
        && !store::exists(&mut *tx, app, &a.group_id).await?
    {
        return Err(usage(format!(
            "group {} is not tracked yet: give at least one --seqs FROM..TO window or --latest N",
            a.group_id
        )));
    }
    let created =
        store::upsert_group(&mut tx, app, &a.group_id, &a.tags, a.note.as_deref()).await?;
    let ids = vec![a.group_id.clone(); windows.len()];
    let added = store::add_windows(&mut tx, app, &ids, &windows).await?;
    let rolling = match a.latest {
        Some(n) => Some((n, follow::set_latest(&mut tx, app, &a.group_id, n).await?)),
        None => None,
    };
    let details = (a.details || a.no_details).then_some(a.details);
    if let Some(on) = details {
        crate::tracking::details::set_details(&mut *tx, app, &a.group_id, on).await?;
    }
    tx.commit().await?;
    let verb = if created { "now tracking" } else { "updated" };
    let mut line = format!(
        "{verb} {}: {added} new window(s), {} already there",
        a.group_id,
        windows.len() as u64 - added
    );
    match rolling {
        Some((n, Some(old))) if old != n => {
            line.push_str(&format!(", rolling window now the latest {n} (was {old})"))
        }
        Some((n, _)) => line.push_str(&format!(", rolling window: the latest {n}")),
        None => {}
    }
    match details {
        Some(true) => line.push_str(", read lists on (who read each message)"),
        Some(false) => line.push_str(", read lists off"),
        None => {}
    }
    println!("{line}");
    Ok(Exit::Success)
}

async fn list(pool: &PgPool, app: store::AppFilter, a: TrackListArgs) -> anyhow::Result<Exit> {
    let groups = store::list(pool, a.tag.as_deref(), app).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&groups)?);
    } else {
        print!("{}", table(&groups));
    }
    Ok(Exit::Success)
}

/// The `track list` table: one line per group, windows joined; with an `APP` column (the
/// SDKAppID, `-` for none yet) when the groups are of more than one app.
fn table(groups: &[TrackedGroup]) -> String {
    let apps: std::collections::BTreeSet<Option<i64>> = groups.iter().map(|g| g.sdkappid).collect();
    let with_app = apps.len() > 1;
    let rows: Vec<[String; 7]> = groups
        .iter()
        .map(|g| {
            let windows = g
                .windows
                .iter()
                .map(|w| w.to_string())
                .chain(g.latest.map(|n| format!("latest {n}")))
                .collect::<Vec<_>>()
                .join(",");
            let enabled = if g.enabled { "yes" } else { "no" };
            // A note (and, written by another tool, an id or a tag) may hold a newline or an
            // escape sequence: shown escaped, one line per group.
            let shown = |text: &str| escape(text).into_owned();
            [
                shown(&g.group_id),
                g.sdkappid
                    .map_or_else(|| "-".to_string(), |a| a.to_string()),
                enabled.into(),
                if g.details { "on" } else { "off" }.into(),
                shown(&g.tags.join(",")),
                windows,
                shown(g.note.as_deref().unwrap_or_default()),
            ]
        })
        .collect();
    let header = [
        "GROUP", "APP", "ENABLED", "DETAILS", "TAGS", "WINDOWS", "NOTE",
    ]
    .map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .enumerate()
            .filter(|(i, _)| with_app || *i != 1)
            .map(|(_, (cell, w))| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    if rows.is_empty() {
        out.push_str("(no tracked groups: add one with `receipt-exporter track add GROUP_ID --seqs FROM..TO`)\n");
    }
    out
}

async fn remove(pool: &PgPool, app: Option<i64>, a: TrackRemoveArgs) -> anyhow::Result<Exit> {
    let windows = parse_windows(&a.seqs)?;
    if a.latest {
        return remove_latest(pool, app, &a.group_id, &windows).await;
    }
    if windows.is_empty() {
        if !store::remove_group(pool, app, &a.group_id).await? {
            return Err(not_tracked(&a.group_id));
        }
        println!(
            "removed {} and its windows (its snapshots stay)",
            a.group_id
        );
        return Ok(Exit::Success);
    }
    let mut tx = pool.begin().await?;
    if !store::exists(&mut *tx, app, &a.group_id).await? {
        return Err(not_tracked(&a.group_id));
    }
    for w in &windows {
        if !store::remove_window(&mut tx, app, &a.group_id, *w).await? {
            return Err(usage(format!(
                "group {} has no window {w}: `receipt-exporter track list` shows its windows",
                a.group_id
            )));
        }
    }
    tx.commit().await?;
    println!("removed {} window(s) of {}", windows.len(), a.group_id);
    Ok(Exit::Success)
}

/// `track remove GROUP_ID --latest [--seqs ...]`: the rolling window (and those fixed windows).
async fn remove_latest(
    pool: &PgPool,
    app: Option<i64>,
    group_id: &str,
    windows: &[SeqWindow],
) -> anyhow::Result<Exit> {
    let mut tx = pool.begin().await?;
    if !store::exists(&mut *tx, app, group_id).await? {
        return Err(not_tracked(group_id));
    }
    if !follow::remove_latest(&mut *tx, app, group_id).await? {
        return Err(usage(format!(
            "group {group_id} has no rolling window: `receipt-exporter track list` shows its windows"
        )));
    }
    for w in windows {
        if !store::remove_window(&mut tx, app, group_id, *w).await? {
            return Err(usage(format!(
                "group {group_id} has no window {w}: `receipt-exporter track list` shows its windows"
            )));
        }
    }
    tx.commit().await?;
    println!(
        "removed the rolling window{} of {group_id}",
        if windows.is_empty() {
            ""
        } else {
            " and the given windows"
        }
    );
    Ok(Exit::Success)
}

async fn set_enabled(
    pool: &PgPool,
    app: Option<i64>,
    group_id: &str,
    enabled: bool,
) -> anyhow::Result<Exit> {
    if !store::set_enabled(pool, app, group_id, enabled).await? {
        return Err(not_tracked(group_id));
    }
    println!(
        "{} {group_id}",
        if enabled { "enabled" } else { "disabled" }
    );
    Ok(Exit::Success)
}

fn not_tracked(group_id: &str) -> anyhow::Error {
    usage(format!(
        "group {group_id} is not tracked (see `receipt-exporter track list`)"
    ))
}

/// Separates the tags of the optional `tags` column of `track import` (`vip;eu`).
pub const TAG_SEPARATOR: char = ';';

/// One line of an import: the group, its window, its tags (maybe none).
type ImportRow = (String, SeqWindow, Vec<String>);

/// Reads and validates the whole CSV before anything is written: every bad line is reported
/// with its line number, and one bad line means nothing is imported.
fn read_csv(path: &Path) -> anyhow::Result<Vec<ImportRow>> {
    let file = std::fs::File::open(path)
        .map_err(|e| usage(format!("cannot read {}: {e}", path.display())))?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .from_reader(file);
    let expected = ["group_id", "from_seq", "to_seq"];
    let headers = reader
        .headers()
        .map_err(|e| usage(format!("{}: {e}", path.display())))?
        .clone();
    let found: Vec<&str> = headers.iter().collect();
    if found != expected && found != ["group_id", "from_seq", "to_seq", "tags"] {
        return Err(usage(format!(
            "{}: line 1: the header must be exactly `group_id,from_seq,to_seq` or `group_id,from_seq,to_seq,tags`, found `{}`",
            path.display(),
            headers.iter().collect::<Vec<_>>().join(",")
        )));
    }
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for record in reader.records() {
        match record {
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                errors.push(format!("line {line}: {e}"));
            }
            Ok(r) => {
                let line = r.position().map_or(0, |p| p.line());
                match parse_row(&r) {
                    Ok(row) => rows.push(row),
                    Err(e) => errors.push(format!("line {line}: {e}")),
                }
            }
        }
    }
    if !errors.is_empty() {
        return Err(usage(format!(
            "{}: {} bad line(s), nothing imported:\n  {}",
            path.display(),
            errors.len(),
            errors.join("\n  ")
        )));
    }
    Ok(rows)
}

fn parse_row(r: &csv::StringRecord) -> Result<ImportRow, String> {
    let group_id = r.get(0).unwrap_or_default().to_string();
    validate_group_id(&group_id)?;
    let num = |i: usize, name: &str| {
        let text = r.get(i).unwrap_or_default();
        text.parse::<i64>()
            .map_err(|_| format!("{name} '{text}' is not a whole number"))
    };
    let window = SeqWindow::new(num(1, "from_seq")?, num(2, "to_seq")?)?;
    let mut tags = Vec::new();
    for tag in r.get(3).unwrap_or_default().split(TAG_SEPARATOR) {
        let tag = tag.trim();
        if !tag.is_empty() {
            validate_tag(tag)?;
            tags.push(tag.to_string());
        }
    }
    Ok((group_id, window, tags))
}

async fn import(
    pool: &PgPool,
    app: Option<i64>,
    a: &TrackImportArgs,
    rows: Vec<ImportRow>,
) -> anyhow::Result<Exit> {
    let mut tagged: Vec<(String, String)> = Vec::new();
    for (group_id, _, tags) in &rows {
        tagged.extend(tags.iter().map(|t| (group_id.clone(), t.clone())));
    }
    let (ids, windows): (Vec<String>, Vec<SeqWindow>) =
        rows.into_iter().map(|(g, w, _)| (g, w)).unzip();
    let mut tx = pool.begin().await?;
    let new_groups = store::insert_missing_groups(&mut tx, app, &ids).await?;
    let new_windows = store::add_windows(&mut tx, app, &ids, &windows).await?;
    store::add_tags(&mut tx, app, &tagged).await?;
    tx.commit()
        .await
        .with_context(|| format!("while importing {}", a.file.display()))?;
    println!(
        "imported {}: {} row(s), {new_groups} new group(s), {new_windows} new window(s)",
        a.file.display(),
        ids.len()
    );
    Ok(Exit::Success)
}
