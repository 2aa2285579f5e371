//! Sections 4 and 5, whole runs of the real release binary: the simulator in a process of its own
//! (no latency, no rate limit, 1,000 seqs per call accepted), a fresh database with
//! N groups of 500 seqs tracked, then `/usr/bin/time -v receipt-exporter run` with
//! `EXPORT_RATE_LIMIT=10000` and `EXPORT_BATCH_SIZE=500`, so the exporter itself is the
//! bottleneck. Wall time, CPU and peak RSS come from GNU time; the simulator's CPU from /proc.

use crate::api::{IDENTIFIER, KEY, SDKAPPID};
use crate::db::BenchDb;
use crate::report::{thousands, Report, Samples};
use crate::Opts;
use anyhow::Context;
use receipt_exporter::secret::Secret;
use receipt_exporter::sim::{generate_groups, SimConfig};
use std::io::{BufRead, Write};
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_receipt-exporter");
pub const SEQS_PER_GROUP: u64 = 500;
/// Peak RSS target of a run, MB (issue 26: at most 64 MB whatever the run's size).
const RSS_TARGET_MB: f64 = 64.0;

/// What one run measured.
pub struct RunFigures {
    pub wall_s: f64,
    pub cpu_s: f64,
    pub rss_mb: f64,
    pub sim_cpu_s: f64,
}

pub async fn bench(opts: &Opts, report: &mut Report) -> anyhow::Result<()> {
    // (receipts, rounds): the middle size is section 4, all three are section 5.
    let sizes: [(u64, usize); 3] = if opts.quick {
        [(50_000, 1), (200_000, 1), (400_000, 1)]
    } else {
        [(100_000, 3), (1_000_000, 3), (4_000_000, 1)]
    };
    println!(
        "\n== 4./5. Whole runs of the release binary, simulator without latency or limit, \
         {SEQS_PER_GROUP} seqs per group, EXPORT_BATCH_SIZE=500 =="
    );
    let mut points = Vec::new();
    for (receipts, rounds) in sizes {
        let groups = receipts / SEQS_PER_GROUP;
        let (mut wall, mut cpu, mut rss, mut sim_cpu) = Default::default();
        for round in 1..=rounds {
            let f = whole_run(opts, groups).await?;
            println!(
                "  {} receipts ({groups} groups), round {round}: wall {:.2}s, exporter CPU {:.2}s, \
                 peak RSS {:.1} MB, simulator CPU {:.2}s",
                thousands(receipts as f64),
                f.wall_s,
                f.cpu_s,
                f.rss_mb,
                f.sim_cpu_s
            );
            let samples: [&mut Samples; 4] = [&mut wall, &mut cpu, &mut rss, &mut sim_cpu];
            for (s, v) in samples
                .into_iter()
                .zip([f.wall_s, f.cpu_s, f.rss_mb, f.sim_cpu_s])
            {
                s.push(v);
            }
        }
        points.push((receipts, wall, cpu, rss, sim_cpu));
    }
    let (receipts, wall, cpu, rss, sim_cpu) = &points[1];
    let million = *receipts as f64 / 1e6;
    if opts.wants("run") {
        let label = format!("run {}", thousands(*receipts as f64));
        report.figure(format!("{label}: wall s"), wall.show(2));
        report.figure(
            format!("{label}: receipts/s"),
            thousands(*receipts as f64 / wall.median()),
        );
        report.figure(
            format!("{label}: exporter CPU s per million receipts"),
            format!("{:.2}", cpu.median() / million),
        );
        report.figure(
            format!("{label}: simulator CPU s per million"),
            format!("{:.2}", sim_cpu.median() / million),
        );
        report.target(
            format!("{label}: peak RSS MB"),
            rss.show(1),
            rss.max() <= RSS_TARGET_MB,
            "(target <= 64 MB)",
        );
    }
    if opts.wants("scale") {
        for (receipts, wall, cpu, rss, _) in &points {
            let m = *receipts as f64 / 1e6;
            report.target(
                format!("scale {}", thousands(*receipts as f64)),
                format!(
                    "wall {:.2}s = {:.2} s/M, CPU {:.2} s/M, peak RSS {:.1} MB",
                    wall.median(),
                    wall.median() / m,
                    cpu.median() / m,
                    rss.max()
                ),
                rss.max() <= RSS_TARGET_MB,
                "(RSS <= 64 MB)",
            );
        }
    }
    Ok(())
}

/// One run over `groups` x 500 seqs, in a database and simulator of its own; the database is
/// dropped whatever happened.
async fn whole_run(opts: &Opts, groups: u64) -> anyhow::Result<RunFigures> {
    whole_run_into(opts, groups, &[]).await
}

/// [`whole_run`] with more variables for the binary (`EXPORT_PARQUET_DIR=s3://...` and the
/// store's variables: the lake elsewhere).
pub async fn whole_run_into(
    opts: &Opts,
    groups: u64,
    env: &[(String, String)],
) -> anyhow::Result<RunFigures> {
    let db = BenchDb::create(&opts.admin_url).await?;
    let measured = run_in(&db, groups, env).await;
    db.drop_db().await?;
    measured
}

async fn run_in(db: &BenchDb, groups: u64, env: &[(String, String)]) -> anyhow::Result<RunFigures> {
    track(db, groups).await?;
    let mut sim = SimProcess::start(groups)?;
    let parquet = tempfile::tempdir()?;
    let timing = parquet.path().join("time.txt");
    let sim_cpu_before = sim.cpu_seconds()?;
    let out = Command::new("/usr/bin/time")
        .arg("-v")
        .arg("-o")
        .arg(&timing)
        .arg(BIN)
        .arg("run")
        .env("DATABASE_URL", &db.url)
        .env("TIM_SDKAPPID", SDKAPPID.to_string())
        .env("TIM_SECRET_KEY", KEY)
        .env("TIM_API_BASE", &sim.base_url)
        .env("EXPORT_PARQUET_DIR", parquet.path().join("warehouse"))
        .env("EXPORT_RATE_LIMIT", "10000")
        .env("EXPORT_BATCH_SIZE", "500")
        .env("RUST_LOG", "warn")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .output()
        .context("running /usr/bin/time (apt-get install time)")?;
    let sim_cpu_s = sim.cpu_seconds()? - sim_cpu_before;
    sim.stop();
    anyhow::ensure!(
        out.status.success(),
        "the run failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // Every seq asked once; the sim answers some with a per-item code (no receipt), which
    // go to receipt_item_codes instead of the snapshots.
    let (asked, written): (i64, i64) = sqlx::query_as(
        "SELECT seqs_asked, receipts_written FROM receipts.export_runs WHERE status = 'succeeded'",
    )
    .fetch_one(&db.pool)
    .await?;
    anyhow::ensure!(
        asked as u64 == groups * SEQS_PER_GROUP && written > 0,
        "the run asked {asked} seqs of {} and wrote {written} receipts",
        groups * SEQS_PER_GROUP
    );
    let time = std::fs::read_to_string(&timing)?;
    Ok(RunFigures {
        wall_s: wall_clock(&time)?,
        cpu_s: field(&time, "User time (seconds)")? + field(&time, "System time (seconds)")?,
        rss_mb: field(&time, "Maximum resident set size (kbytes)")? / 1024.0,
        sim_cpu_s,
    })
}

/// Tracks groups `@TGS#sim1-1..=groups`, seqs 1..=500 each (the simulator's generated ids).
pub async fn track(db: &BenchDb, groups: u64) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO receipts.tracked_groups (group_id)
         SELECT '@TGS#sim1-' || n FROM generate_series(1, $1::bigint) AS n",
    )
    .bind(groups as i64)
    .execute(&db.pool)
    .await?;
    sqlx::query(
        "INSERT INTO receipts.seq_windows (group_id, from_seq, to_seq)
         SELECT group_id, 1, $1 FROM receipts.tracked_groups",
    )
    .bind(SEQS_PER_GROUP as i64)
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// The flag that makes this binary a simulator process instead of a benchmark.
pub const SERVE_FLAG: &str = "--serve-simulator";

/// The simulator process: `groups` generated groups of 500 messages, no latency, no rate
/// limit, `MsgSeqList`s up to 1,000. Prints `listening on IP:PORT`, serves until stdin closes.
///
/// (`receipt-exporter simulate --rate-limit 0` would do the same, but that subcommand panics
/// in clap: its `--rate-limit` shares the id `rate_limit` with the global flag of that name.)
pub fn serve(groups: u64) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut config = SimConfig::new(SDKAPPID, Secret::new(KEY), IDENTIFIER);
        config.groups = generate_groups(config.seed, groups as usize, SEQS_PER_GROUP);
        config.rate_limit = 0;
        config.max_batch = 1000;
        let sim = receipt_exporter::sim::Simulator::start(config, "127.0.0.1:0".parse()?)?;
        println!("listening on {}", sim.addr());
        std::io::stdout().flush()?;
        // Until the parent closes stdin (or dies).
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 64];
        while tokio::io::AsyncReadExt::read(&mut stdin, &mut buf).await? > 0 {}
        sim.shutdown().await;
        Ok(())
    })
}

/// The simulator as a child process; killed by [`SimProcess::stop`] or on drop.
struct SimProcess {
    child: Child,
    base_url: String,
}

impl SimProcess {
    /// Starts this benchmark binary again as the simulator (see [`serve`]).
    fn start(groups: u64) -> anyhow::Result<SimProcess> {
        let mut child = Command::new(std::env::current_exe()?)
            .args([SERVE_FLAG, &groups.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().expect("piped");
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        let Some(addr) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            anyhow::bail!("the simulator said {line:?} instead of `listening on ...`");
        };
        let base_url = format!("http://{addr}");
        Ok(SimProcess { child, base_url })
    }

    /// User + system CPU seconds so far, from /proc/PID/stat (fields 14 and 15, in ticks).
    fn cpu_seconds(&self) -> anyhow::Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        // The command name (field 2) is in parentheses and may hold spaces: count after it.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
        Ok(ticks / 100.0)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// "Elapsed (wall clock) time (h:mm:ss or m:ss): 0:12.34" in seconds.
fn wall_clock(time: &str) -> anyhow::Result<f64> {
    let value = value_of(time, "Elapsed (wall clock) time")?;
    Ok(value
        .split(':')
        .try_fold(0.0, |acc, part| part.parse::<f64>().map(|v| acc * 60.0 + v))?)
}

fn field(time: &str, name: &str) -> anyhow::Result<f64> {
    Ok(value_of(time, name)?.parse()?)
}

/// The value after the last ": " of the line starting with `name`.
fn value_of<'a>(time: &'a str, name: &str) -> anyhow::Result<&'a str> {
    time.lines()
        .map(str::trim)
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(": ").next())
        .with_context(|| format!("no {name:?} in the output of /usr/bin/time -v"))
}
