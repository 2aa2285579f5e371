//! Section 10, the API calls the webhook saves (issue 27): the same workload pulled twice by
//! the real binary, an hourly job simulated as one `run` per simulator step.
//!
//! The simulator (in this process, no rate limit) serves `GROUPS` generated groups of 500
//! messages, all tracked; their read counts move for one to five steps, then stay (about a
//! third end read by everyone). Steps 0..=`STEPS`, one `run` after each:
//! (a) pull only; (b) `listen` running, and before each run the simulator delivers one
//! callback per message whose counts moved in that step (at step 0: per message read at
//! all), 10% of them lost (90% coverage), and the bench waits until the listener flushed
//! them. Both count the runs' `api_calls` from the ledger; the settled rule skips what the
//! webhook settled (unread 0) before the pull saw it.

use crate::api::{IDENTIFIER, KEY, SDKAPPID};
use crate::db::BenchDb;
use crate::report::{thousands, Report};
use crate::Opts;
use anyhow::Context;
use receipt_exporter::secret::Secret;
use receipt_exporter::sim::{generate_groups, Callbacks, SimConfig, Simulator};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_receipt-exporter");
/// The share of callbacks lost: the webhook covers 90% of reads.
const LOSE: f64 = 0.10;

/// One run's figures: (api_calls, seqs_asked, seqs_skipped_settled).
type RunRow = (i64, i64, i64);

pub async fn bench(opts: &Opts, report: &mut Report) -> anyhow::Result<()> {
    let (groups, steps) = if opts.quick { (4, 7) } else { (20, 23) };
    let seqs = groups * crate::whole::SEQS_PER_GROUP;
    println!(
        "\n== 10. saved: {groups} groups x {} messages ({} seqs), runs at steps 0..={steps}, \
         pull only vs. listen with {:.0}% of callbacks lost ==",
        crate::whole::SEQS_PER_GROUP,
        thousands(seqs as f64),
        LOSE * 100.0
    );
    let pull = workload(opts, groups, steps, false).await?;
    let webhook = workload(opts, groups, steps, true).await?;
    println!(
        "  step | pull only: calls (seqs asked, skipped settled) | webhook: calls (asked, skipped)"
    );
    for (step, (p, w)) in pull.iter().zip(&webhook).enumerate() {
        println!(
            "  {step:>4} | {:>5} ({:>6}, {:>6}) | {:>5} ({:>6}, {:>6})",
            p.0, p.1, p.2, w.0, w.1, w.2
        );
    }
    let total = |rows: &[RunRow]| rows.iter().map(|r| r.0).sum::<i64>() as f64;
    let (a, b) = (total(&pull), total(&webhook));
    let runs = pull.len() as f64;
    println!(
        "  total: pull only {a:.0} calls, with the webhook {b:.0} ({:.3} of pull only, {:.1}% saved)",
        b / a,
        (1.0 - b / a) * 100.0
    );
    report.figure(
        "saved: API calls over the runs, pull only",
        format!("{a:.0} ({runs:.0} runs, {} seqs)", thousands(seqs as f64)),
    );
    report.figure(
        "saved: API calls, webhook at 90% coverage",
        format!("{b:.0} ({:.3} of pull only)", b / a),
    );
    report.figure(
        format!("saved: calls a day, hourly job ({})", day_basis(pull.len())),
        format!(
            "pull only {}, webhook {}, saved {}",
            thousands(a / runs * 24.0),
            thousands(b / runs * 24.0),
            thousands((a - b) / runs * 24.0)
        ),
    );
    Ok(())
}

/// One workload in a database and simulator of their own; each run's figures, step by step.
async fn workload(
    opts: &Opts,
    groups: u64,
    steps: u64,
    webhook: bool,
) -> anyhow::Result<Vec<RunRow>> {
    let db = BenchDb::create(&opts.admin_url).await?;
    let measured = steps_in(&db, groups, steps, webhook).await;
    db.drop_db().await?;
    measured
}

async fn steps_in(
    db: &BenchDb,
    groups: u64,
    steps: u64,
    webhook: bool,
) -> anyhow::Result<Vec<RunRow>> {
    crate::whole::track(db, groups).await?;
    let mut config = SimConfig::new(SDKAPPID, Secret::new(KEY), IDENTIFIER);
    config.groups = generate_groups(config.seed, groups as usize, crate::whole::SEQS_PER_GROUP);
    config.rate_limit = 0;
    let sim = Simulator::start(config, "127.0.0.1:0".parse()?)?;
    let lake = tempfile::tempdir()?;
    let mut listener = match webhook {
        true => Some(Listener::start(&db.url, lake.path())?),
        false => None,
    };
    let mut rows = Vec::new();
    for step in 0..=steps {
        if step > 0 {
            sim.advance(1);
        }
        if let Some(listener) = &listener {
            let plan = Callbacks {
                url: listener.url.clone(),
                sdkappid: SDKAPPID,
                token: None,
                deliveries: 0,
                max_messages: 1,
                lose: LOSE,
                repeat: 0.0,
                forge: 0.0,
                reorder: true,
                max_delay: Duration::ZERO,
                concurrency: 16,
                seed: step,
                first_event_ms: chrono::Utc::now().timestamp_millis(),
            };
            let sent = sim.deliver_changes(&plan, step.checked_sub(1)).await;
            anyhow::ensure!(sent.unanswered.is_empty(), "{}", sent.summary());
            flushed(db).await?;
        }
        rows.push(run(db, &sim.base_url(), lake.path()).await?);
    }
    if let Some(listener) = &mut listener {
        listener.stop()?;
    }
    sim.shutdown().await;
    Ok(rows)
}

/// Waits until the listener flushed every acknowledged row (at most a minute).
async fn flushed(db: &BenchDb) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let pending: i64 =
            sqlx::query_scalar("SELECT count(*) FROM receipts.webhook_inbox WHERE run_id IS NULL")
                .fetch_one(&db.pool)
                .await?;
        if pending == 0 {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "{pending} inbox rows not flushed after a minute"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One `receipt-exporter run`; its ledger row's figures.
async fn run(db: &BenchDb, api: &str, lake: &std::path::Path) -> anyhow::Result<RunRow> {
    let out = Command::new(BIN)
        .arg("run")
        .envs(env(&db.url, lake))
        .env("TIM_API_BASE", api)
        .env("EXPORT_RATE_LIMIT", "10000")
        .stdout(Stdio::null())
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "the run failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(sqlx::query_as(
        "SELECT api_calls, seqs_asked, seqs_skipped_settled FROM receipts.export_runs
         WHERE kind <> 'listen' ORDER BY run_id DESC LIMIT 1",
    )
    .fetch_one(&db.pool)
    .await?)
}

/// The variables both commands share: the database, the app, the lake.
fn env(url: &str, lake: &std::path::Path) -> Vec<(String, String)> {
    [
        ("DATABASE_URL", url.to_string()),
        ("TIM_SDKAPPID", SDKAPPID.to_string()),
        ("TIM_SECRET_KEY", KEY.to_string()),
        ("TIM_IDENTIFIER", IDENTIFIER.to_string()),
        (
            "EXPORT_PARQUET_DIR",
            lake.join("warehouse").display().to_string(),
        ),
        ("RUST_LOG", "info".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// `receipt-exporter listen` flushing every second, without a token; stopped by SIGTERM.
struct Listener {
    child: Child,
    /// Its callback URL.
    url: String,
    /// Reads its stderr to the end, so it never blocks on a full pipe.
    log: Option<std::thread::JoinHandle<String>>,
}

impl Listener {
    fn start(db_url: &str, lake: &std::path::Path) -> anyhow::Result<Listener> {
        let mut child = Command::new(BIN)
            .args(["listen", "--flush-every", "1"])
            .envs(env(db_url, lake))
            .env("EXPORT_LISTEN", "127.0.0.1:0")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        let log = std::thread::spawn(move || {
            let mut all = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.split("receiving callbacks at ").nth(1) {
                    let url = at.split_whitespace().next().unwrap_or_default();
                    let _ = tx.send(url.to_string());
                }
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        let Ok(url) = rx.recv_timeout(Duration::from_secs(60)) else {
            let _ = child.kill();
            let log = log.join().unwrap_or_default();
            anyhow::bail!("listen never said where it receives callbacks:\n{log}");
        };
        Ok(Listener {
            child,
            url,
            log: Some(log),
        })
    }

    /// SIGTERM, then its exit, which must be 0.
    fn stop(&mut self) -> anyhow::Result<()> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .context("kill -TERM the listener")?;
        let status = self.child.wait()?;
        let log = self.log.take().map(|l| l.join().unwrap_or_default());
        anyhow::ensure!(
            status.success(),
            "listen exited {status}:\n{}",
            log.unwrap_or_default()
        );
        Ok(())
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if self.log.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// How the day's figure comes about: 24 hourly runs measured, or their mean times 24.
fn day_basis(runs: usize) -> &'static str {
    match runs {
        24 => "the 24 runs",
        _ => "mean run x 24",
    }
}
