//! `receipt-exporter report --out FILE.html [--since WHEN] [--until WHEN] [--group ID]...
//! [--app NAME]`: gathers the figures in Postgres, writes the page atomically (a temporary
//! file beside it, renamed), prints its path and what it covers.

use crate::cli::ReportArgs;
use crate::exit::Exit;
use crate::report::{self, Range};
use crate::settings::Settings;

pub async fn run(settings: &Settings, args: ReportArgs) -> anyhow::Result<Exit> {
    let until = args.until.unwrap_or_else(chrono::Utc::now);
    let since = args.since.unwrap_or(until - chrono::Duration::days(7));
    if since >= until {
        return Err(crate::exit::usage(format!(
            "--since {} is not before --until {}: the range is [since, until)",
            since.to_rfc3339(),
            until.to_rfc3339()
        )));
    }
    let range = Range {
        since,
        until,
        groups: args.groups,
        // `--app NAME` (global): only that app's messages.
        app: settings.app.as_ref().and_then(|_| settings.app_sdkappid()),
    };
    let pool = super::connect_migrated(settings).await?;
    let started = std::time::Instant::now();
    let figures = report::gather(&pool, &range).await?;
    let page = report::html::render(&figures, &range, chrono::Utc::now());
    write_atomically(&args.out, page.as_bytes())?;
    println!(
        "report: {} ({} messages in {} groups, first seen {} to {}; {:.2} s)",
        args.out.display(),
        figures.messages,
        figures.groups,
        range.since.to_rfc3339(),
        range.until.to_rfc3339(),
        started.elapsed().as_secs_f64()
    );
    Ok(Exit::Success)
}

/// Writes `bytes` to `path` through a temporary file beside it, renamed into place: a reader
/// never sees half a page.
pub fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use anyhow::Context;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let mut tmp = crate::files::create_beside(&dir, ".report-", ".html.tmp")
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    std::io::Write::write_all(&mut tmp, bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
