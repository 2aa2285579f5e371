//! Section 8, many apps (issue 26): N Chat apps at their ceilings from one `schedule` daemon of
//! the release binary. Each app is a simulator process of its own (its SDKAppID and key, 200
//! calls per sliding second counted on arrival, 50 ± 20 ms round trips), declared as
//! `apps/appK.toml`; each app's job (`app = "appK"`) fires at the same second. The daemon runs
//! under `/usr/bin/time -v` from its start to its SIGTERM after the runs finished: its CPU and
//! peak RSS are the whole deployment's. Each simulator samples its counters every 20 ms and
//! reports its accepted and refused calls and the time from its first call to its last, so an
//! app's pace is measured as in section 1: useful calls / (200 × that time). N = 1 (the baseline,
//! one app alone) and N = 4 alternate in one process, 2 rounds each (1 with `--quick`).

use crate::db::BenchDb;
use crate::report::{Report, Samples};
use crate::Opts;
use anyhow::Context;
use receipt_exporter::secret::Secret;
use receipt_exporter::sim::{generate_groups, SimConfig};
use std::io::{BufRead, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_receipt-exporter");
/// The flag that makes this binary one app's simulator.
pub const SERVE_FLAG: &str = "--serve-app-simulator";
const CEILING: f64 = 200.0;
const SEQS_PER_GROUP: u64 = 500;
const BATCH: u64 = 25;

fn sdkappid(k: usize) -> u64 {
    1_400_100_000 + k as u64
}

fn key(k: usize) -> String {
    format!("{k:02}").repeat(32)
}

/// One app's simulator (see the module header); prints `listening on IP:PORT`, then, when stdin
/// closes, one line of JSON with its counters.
pub fn serve(k: usize, groups: u64) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut config = SimConfig::new(sdkappid(k), Secret::new(key(k)), "administrator");
        config.groups = generate_groups(config.seed, groups as usize, SEQS_PER_GROUP);
        config.latency = Duration::from_millis(50);
        config.latency_jitter = Duration::from_millis(40);
        let sim = receipt_exporter::sim::Simulator::start(config, "127.0.0.1:0".parse()?)?;
        println!("listening on {}", sim.addr());
        std::io::stdout().flush()?;
        let endpoint = receipt_exporter::sim::Endpoint::GroupMsgReceipt;
        let (mut first, mut last, mut seen) = (None::<Instant>, None::<Instant>, 0);
        let mut timeline: Vec<(f64, u64, u64)> = Vec::new();
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 64];
        loop {
            let read = tokio::io::AsyncReadExt::read(&mut stdin, &mut buf);
            match tokio::time::timeout(Duration::from_millis(20), read).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                _ => {}
            }
            let stats = sim.stats().endpoint(endpoint);
            let calls = stats.calls;
            if let Some(f) = first {
                timeline.push((f.elapsed().as_secs_f64(), calls, stats.rate_limited));
            }
            if calls > seen {
                let now = Instant::now();
                first.get_or_insert(now);
                last = Some(now);
                seen = calls;
            }
        }
        let e = sim.stats().endpoint(endpoint);
        let span = match (first, last) {
            (Some(f), Some(l)) => (l - f).as_secs_f64(),
            _ => 0.0,
        };
        if std::env::var_os("BENCH_TIMELINE").is_some() {
            let mut line = String::new();
            let mut mark = 0.0;
            for (t, c, l) in &timeline {
                if *t >= mark {
                    line.push_str(&format!("{t:.1}s:{c}/{l} "));
                    mark += 0.5;
                }
            }
            eprintln!("timeline {line}");
        }
        println!(
            "{}",
            serde_json::json!({"calls": e.calls, "rate_limited": e.rate_limited, "span_s": span,
                               "max_accepted_in_any_second": e.max_accepted_in_any_second})
        );
        sim.shutdown().await;
        Ok(())
    })
}

/// An app's simulator process.
struct AppSim {
    child: Child,
    base_url: String,
}

impl AppSim {
    fn start(k: usize, groups: u64) -> anyhow::Result<AppSim> {
        let mut child = Command::new(std::env::current_exe()?)
            .args([SERVE_FLAG, &k.to_string(), &groups.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let mut out = std::io::BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        out.read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .with_context(|| format!("the simulator said {line:?}"))?
            .to_string();
        child.stdout = Some(out.into_inner());
        Ok(AppSim {
            child,
            base_url: format!("http://{addr}"),
        })
    }

    /// Closes stdin and reads the counters line: (useful calls, refused calls, span s).
    fn finish(mut self) -> anyhow::Result<(u64, u64, f64)> {
        drop(self.child.stdin.take());
        let out = self.child.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let v: serde_json::Value = serde_json::from_str(text.trim())?;
        let calls = v["calls"].as_u64().unwrap_or(0);
        let limited = v["rate_limited"].as_u64().unwrap_or(0);
        Ok((
            calls - limited,
            limited,
            v["span_s"].as_f64().unwrap_or(0.0),
        ))
    }
}

/// What one round with `n` apps measured.
struct Round {
    /// Per app: useful calls / (200 × its span).
    paces: Vec<f64>,
    /// Per app: refused / all calls.
    refused: Vec<f64>,
    calls: u64,
    /// The daemon's user + system CPU and peak RSS, and the runs' longest span.
    cpu_s: f64,
    rss_mb: f64,
    span_s: f64,
}

/// (Over 60 lines: one round's steps in order: apps, groups, jobs, the daemon under time, the
/// wait for the runs, the stop and every figure read back.)
async fn round(opts: &Opts, n: usize, groups: u64) -> anyhow::Result<Round> {
    let db = BenchDb::create(&opts.admin_url).await?;
    let dir = tempfile::tempdir()?;
    let (apps, jobs) = (dir.path().join("apps"), dir.path().join("jobs"));
    std::fs::create_dir_all(&apps)?;
    std::fs::create_dir_all(&jobs)?;
    let sims: Vec<AppSim> = (1..=n)
        .map(|k| AppSim::start(k, groups))
        .collect::<anyhow::Result<_>>()?;
    // Every job fires at the same second, a few seconds from now (catch-up off: only then).
    let at = chrono::Utc::now() + chrono::Duration::seconds(8);
    let cron = at.format("%S %M %H * * *").to_string();
    for (i, sim) in sims.iter().enumerate() {
        let k = i + 1;
        std::fs::write(apps.join(format!("app{k}.key")), key(k))?;
        std::fs::write(
            apps.join(format!("app{k}.toml")),
            format!(
                "sdkappid = {}\napi_base = \"{}\"\nsecret_key_file = \"app{k}.key\"\n",
                sdkappid(k),
                sim.base_url
            ),
        )?;
        std::fs::write(
            jobs.join(format!("job{k}.toml")),
            format!("schedule = \"{cron}\"\ncatch_up = \"skip\"\napp = \"app{k}\"\n"),
        )?;
        sqlx::query(
            "INSERT INTO receipts.tracked_groups (sdkappid, group_id)
             SELECT $1, '@TGS#sim1-' || g FROM generate_series(1, $2::bigint) AS g",
        )
        .bind(sdkappid(k) as i64)
        .bind(groups as i64)
        .execute(&db.pool)
        .await?;
    }
    sqlx::query(
        "INSERT INTO receipts.seq_windows (sdkappid, group_id, from_seq, to_seq)
         SELECT sdkappid, group_id, 1, $1 FROM receipts.tracked_groups",
    )
    .bind(SEQS_PER_GROUP as i64)
    .execute(&db.pool)
    .await?;
    let timing = dir.path().join("time.txt");
    let log = dir.path().join("schedule.log");
    let mut daemon = Command::new("/usr/bin/time")
        .args(["-v", "-o"])
        .arg(&timing)
        .arg(BIN)
        .args(["schedule", "--jobs"])
        .arg(&jobs)
        .env("DATABASE_URL", &db.url)
        .env("EXPORT_APPS_DIR", &apps)
        .env("EXPORT_PARQUET_DIR", dir.path().join("warehouse"))
        .env("EXPORT_BATCH_SIZE", BATCH.to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("running /usr/bin/time (apt-get install time)")?;
    let until = Instant::now() + Duration::from_secs(600);
    loop {
        let finished: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM receipts.export_runs WHERE status <> 'running'",
        )
        .fetch_one(&db.pool)
        .await?;
        if finished as usize >= n {
            break;
        }
        let gone = daemon.try_wait()?.is_some();
        anyhow::ensure!(
            !gone && Instant::now() < until,
            "the daemon {}: {}",
            if gone {
                "exited"
            } else {
                "did not finish the runs in 10 minutes"
            },
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // SIGTERM to the daemon (time's child): time then writes its figures and exits.
    let pid = std::fs::read_dir("/proc")?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| s.split_whitespace().nth(3).map(str::to_string))
                == Some(daemon.id().to_string())
        })
        .context("the daemon under time")?;
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    daemon.wait()?;
    let statuses: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT status, api_calls, rate_limited FROM receipts.export_runs ORDER BY run_id",
    )
    .fetch_all(&db.pool)
    .await?;
    anyhow::ensure!(
        statuses.iter().all(|s| s.0 == "succeeded"),
        "runs: {statuses:?}"
    );
    let (mut paces, mut refused, mut calls, mut span) = (Vec::new(), Vec::new(), 0, 0f64);
    for sim in sims {
        let (useful, limited, s) = sim.finish()?;
        paces.push(useful as f64 / (CEILING * s));
        refused.push(limited as f64 / (useful + limited).max(1) as f64);
        calls += useful;
        span = span.max(s);
    }
    let time = std::fs::read_to_string(&timing)?;
    let field = |name: &str| -> anyhow::Result<f64> {
        time.lines()
            .map(str::trim)
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(": ").next())
            .with_context(|| format!("no {name:?} in time's output"))?
            .parse::<f64>()
            .map_err(Into::into)
    };
    let cpu_s = field("User time (seconds)")? + field("System time (seconds)")?;
    let rss_mb = field("Maximum resident set size (kbytes)")? / 1024.0;
    db.drop_db().await?;
    Ok(Round {
        paces,
        refused,
        calls,
        cpu_s,
        rss_mb,
        span_s: span,
    })
}

/// (Over 60 lines: the rounds, then one printed line and one summary line per figure.)
pub async fn bench(opts: &Opts, report: &mut Report) -> anyhow::Result<()> {
    // 4,000 calls per app (2,000 with --quick): 20 s at the ceiling.
    let groups: u64 = if opts.quick { 100 } else { 200 };
    let rounds = if opts.quick { 1 } else { 2 };
    let calls_per_app = groups * SEQS_PER_GROUP / BATCH;
    println!(
        "\n== 8. Many apps from one schedule daemon: N simulators at 200/s, 50 ± 20 ms, \
         {calls_per_app} calls per app, beside one app alone =="
    );
    let mut by_n: Vec<(usize, Samples, Samples, Samples, Samples, Samples)> = Vec::new();
    for n in [1, 4] {
        by_n.push((
            n,
            Samples::default(),
            Samples::default(),
            Samples::default(),
            Samples::default(),
            Samples::default(),
        ));
    }
    for r in 1..=rounds {
        for entry in by_n.iter_mut() {
            let n = entry.0;
            let f = round(opts, n, groups).await?;
            let min_pace = f.paces.iter().copied().fold(f64::INFINITY, f64::min);
            let max_refused = f.refused.iter().copied().fold(0.0, f64::max);
            let cpu_per_k = f.cpu_s / (f.calls as f64 / 1000.0);
            println!(
                "  {n} app(s), round {r}: each app's pace {} of 200/s (min {min_pace:.3}), refused \
                 at most {:.2}%, daemon CPU {:.2} s = {cpu_per_k:.3} s per 1,000 calls, peak RSS \
                 {:.1} MB, longest run {:.1} s",
                f.paces.iter().map(|p| format!("{p:.3}")).collect::<Vec<_>>().join("/"),
                max_refused * 100.0,
                f.cpu_s,
                f.rss_mb,
                f.span_s
            );
            entry.1.push(min_pace);
            entry.2.push(max_refused * 100.0);
            entry.3.push(cpu_per_k);
            entry.4.push(f.rss_mb);
            entry.5.push(f.cpu_s / f.span_s);
        }
    }
    for (n, pace, refused, cpu_k, rss, cores) in &by_n {
        report.target(
            format!("apps {n}: slowest app's pace of its ceiling"),
            pace.show(3),
            pace.min() >= 0.97,
            "(target >= 0.97)",
        );
        report.target(
            format!("apps {n}: refused calls %, worst app"),
            refused.show(2),
            refused.max() <= 0.5,
            "(target <= 0.5%)",
        );
        report.figure(
            format!("apps {n}: daemon CPU s per 1,000 calls"),
            cpu_k.show(3),
        );
        report.figure(format!("apps {n}: daemon peak RSS MB"), rss.show(1));
        report.figure(
            format!("apps {n}: daemon cores busy while pulling"),
            cores.show(3),
        );
    }
    let (one, four) = (&by_n[0], &by_n[1]);
    let per_app_cores = four.5.median() / 4.0;
    let per_app_rss = (four.4.median() - one.4.median()) / 3.0;
    for apps in [8.0, 32.0] {
        report.figure(
            format!("apps: {apps} at their ceilings, extrapolated"),
            format!(
                "{:.2} cores, {:.0} MB RSS (per app {per_app_cores:.3} cores, {per_app_rss:.1} MB)",
                per_app_cores * apps,
                one.4.median() + per_app_rss * (apps - 1.0)
            ),
        );
    }
    Ok(())
}
