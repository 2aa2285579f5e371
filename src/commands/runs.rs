//! `receipt-exporter runs list|show`: the run ledger for people.

use crate::cli::{RunsCommand, RunsListArgs, RunsShowArgs};
use crate::exit::{usage, Exit};
use crate::ops::history::{self, RunFilter, RunRow};
use crate::settings::Settings;
use serde_json::Value;
use sqlx::PgPool;

pub async fn run(settings: &Settings, cmd: RunsCommand) -> anyhow::Result<Exit> {
    let pool = super::connect_migrated(settings).await?;
    match cmd {
        RunsCommand::List(a) => list(&pool, settings.app.clone(), a).await,
        RunsCommand::Show(a) => show(&pool, a).await,
    }
}

async fn list(pool: &PgPool, app: Option<String>, a: RunsListArgs) -> anyhow::Result<Exit> {
    let filter = RunFilter {
        job: a.job,
        status: a.status.map(|s| s.as_str().to_string()),
        app,
        limit: a.limit,
    };
    let runs = history::list(pool, &filter).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&runs)?);
    } else {
        print!("{}", table(&runs));
    }
    Ok(Exit::Success)
}

fn duration(run: &RunRow) -> String {
    match run.duration_seconds {
        Some(s) => format!("{s:.3}s"),
        None => "-".into(),
    }
}

/// A resumed backfill's row spans its attempts (and the pauses between them): say so.
fn duration_of_attempts(run: &RunRow) -> String {
    match run.details.get("attempts").and_then(|a| a.as_i64()) {
        Some(n) if n > 1 && run.duration_seconds.is_some() => format!(
            "{} from the first attempt's start to the last one's end ({n} attempts)",
            duration(run)
        ),
        _ => duration(run),
    }
}

/// The `runs list` table, newest first; the error cut to one short line.
///
/// (Over 60 lines: a table: its columns, their widths and the rows.)
fn table(runs: &[RunRow]) -> String {
    let header = [
        "RUN",
        "JOB",
        "APP",
        "KIND",
        "STATUS",
        "STARTED (UTC)",
        "DURATION",
        "GROUPS",
        "FAILED",
        "RECEIPTS",
        "CALLS",
        "RETRIES",
        "ERROR",
    ]
    .map(String::from);
    let rows: Vec<[String; 13]> = runs
        .iter()
        .map(|r| {
            let error: String = r
                .error
                .as_deref()
                .unwrap_or("")
                .lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(60)
                .collect();
            [
                r.run_id.to_string(),
                r.job.clone(),
                r.app.clone().unwrap_or_else(|| "-".into()),
                r.kind.clone(),
                r.status.clone(),
                r.started_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                duration(r),
                (r.groups_ok + r.groups_failed).to_string(),
                r.groups_failed.to_string(),
                r.receipts_written.to_string(),
                r.api_calls.to_string(),
                r.retries.to_string(),
                error,
            ]
        })
        .collect();
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    if rows.is_empty() {
        out.push_str("(no runs match)\n");
    }
    out
}

/// `{"a": 1, "b": 2}` as `a 1, b 2` (or `none`).
fn counts(map: &Value) -> String {
    let parts: Vec<String> = map
        .as_object()
        .map(|o| o.iter().map(|(k, v)| format!("{k} {v}")).collect())
        .unwrap_or_default();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

/// `12 ok, 0 failed`, and the groups a run that stopped early did not finish.
fn groups(run: &RunRow) -> String {
    let unfinished = run
        .details
        .get("groups_unfinished")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let mut line = format!("{} ok, {} failed", run.groups_ok, run.groups_failed);
    if unfinished > 0 {
        line.push_str(&format!(
            ", {unfinished} not finished (the run stopped before it was done with them)"
        ));
    }
    line
}

/// What a run left for the next one: by its budget (`max_calls`, `max_duration`), or because
/// it stopped before pulling it.
fn left(run: &RunRow) -> (&'static str, String) {
    let stopped_by = run
        .details
        .pointer("/follow/stopped_by")
        .and_then(Value::as_str);
    let seqs = format!("{} seqs ({} calls)", run.seqs_left, run.calls_left);
    match stopped_by {
        Some(cap) => ("left by the budget", format!("{seqs}, {cap} reached")),
        None if run.seqs_left > 0 => ("not pulled", format!("{seqs}: the run stopped first")),
        None => ("left by the budget", "nothing (no budget reached)".into()),
    }
}

/// `details.retention` as one line.
fn retention_line(retention: &Value) -> String {
    if let Some(error) = retention.get("error").and_then(Value::as_str) {
        return format!("failed: {error}");
    }
    match serde_json::from_value::<crate::ops::retention::AfterRun>(retention.clone()) {
        Ok(done) => done.line(),
        Err(_) => retention.to_string(),
    }
}

/// (Over 60 lines: one line per ledger field, in the order shown.)
async fn show(pool: &PgPool, a: RunsShowArgs) -> anyhow::Result<Exit> {
    let Some(run) = history::get(pool, a.run_id).await? else {
        return Err(usage(format!(
            "run {} is not in the ledger (`receipt-exporter runs list` shows the runs)",
            a.run_id
        )));
    };
    let files = history::files(pool, a.run_id).await?;
    if a.json {
        let mut doc = serde_json::to_value(&run)?;
        doc["files"] = serde_json::to_value(&files)?;
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(Exit::Success);
    }
    let at = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string();
    let mut lines = vec![
        ("run", run.run_id.to_string()),
        ("job", run.job.clone()),
        ("kind", run.kind.clone()),
        ("status", run.status.clone()),
        ("started", at(run.started_at)),
        (
            "finished",
            run.finished_at.map(at).unwrap_or_else(|| "-".into()),
        ),
        ("duration", duration_of_attempts(&run)),
        ("host", run.host.clone()),
        ("pid", run.pid.to_string()),
        ("groups", groups(&run)),
        ("seqs asked", run.seqs_asked.to_string()),
        (
            "seqs skipped",
            format!(
                "{} settled, {} without a receipt",
                run.seqs_skipped_settled, run.seqs_skipped_no_receipt
            ),
        ),
        left(&run),
        ("receipts written", run.receipts_written.to_string()),
        ("api calls", run.api_calls.to_string()),
        (
            "retries",
            format!("{} ({})", run.retries, counts(&run.retries_by_class)),
        ),
        ("rate-limited answers", run.rate_limited.to_string()),
        ("item codes", counts(&run.item_codes)),
        ("parquet files", run.parquet_files.to_string()),
    ];
    if let Some(latency) = run.details.get("latency_ms").filter(|v| !v.is_null()) {
        lines.push(("latency ms", latency.to_string()));
    }
    if let Some(failed) = run
        .details
        .get("failed_groups")
        .filter(|v| v.as_object().is_some_and(|o| !o.is_empty()))
    {
        lines.push(("failed groups", failed.to_string()));
    }
    if let Some(retention) = run.details.get("retention") {
        lines.push(("retention", retention_line(retention)));
    }
    lines.push(("error", run.error.clone().unwrap_or_else(|| "-".into())));
    for (name, value) in lines {
        println!("{:<21} {value}", format!("{name}:"));
    }
    for f in files {
        println!(
            "file:                 {} ({} rows, {} bytes)",
            f.path, f.row_count, f.byte_size
        );
    }
    Ok(Exit::Success)
}
