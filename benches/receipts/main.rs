//! The benchmark of issue 6: API throughput against the ceiling, both sinks against their
//! baselines, whole runs of the real binary, and how a run scales. See BENCHMARKS.md.
//!
//! `cargo bench` runs it all (about 5 minutes on 2 shared cores); `cargo bench -- --quick`
//! runs smaller sizes; `--only api,pg,parquet,run,scale,s3,iceberg,apps,listen,saved` picks sections. It
//! needs the local
//! Postgres (`DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`), creates
//! and drops its own databases, and `psql` and `/usr/bin/time` on the PATH.
//!
//! Shared machines are noisy: every figure is a median of several rounds (range shown), and
//! each comparison is a ratio of two things measured alternately in the same process. This
//! binary prints numbers; it asserts nothing (targets are shown as met or missed).

mod api;
mod apps;
mod db;
mod ice;
mod listen;
mod pg;
mod pq;
mod report;
mod s3;
mod saved;
// moto's S3 server from the project's Python environment, installed on first use as the
// tests install it.
#[path = "../../tests/it/tools.rs"]
mod tools;
mod whole;

use report::Report;

/// What the command line asked for.
#[derive(Debug, Clone)]
pub struct Opts {
    /// Smaller sizes and shorter runs (a smoke test of the benchmark itself).
    pub quick: bool,
    /// Sections to run; empty = all.
    pub only: Vec<String>,
    /// The server database to create bench databases from.
    pub admin_url: String,
}

impl Opts {
    fn parse() -> Opts {
        let mut opts = Opts {
            quick: false,
            only: Vec::new(),
            admin_url: std::env::var("DATABASE_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--quick" => opts.quick = true,
                "--only" => {
                    let list = args.next().unwrap_or_default();
                    opts.only = list.split(',').map(str::to_string).collect();
                }
                // `cargo bench` passes `--bench`; filters of other harnesses are ignored.
                _ => {}
            }
        }
        opts
    }

    fn wants(&self, section: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == section)
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(apps::SERVE_FLAG) {
        let num = |i: usize| args.get(i).and_then(|v| v.parse().ok()).unwrap_or(1);
        return apps::serve(num(2) as usize, num(3));
    }
    if args.get(1).map(String::as_str) == Some(whole::SERVE_FLAG) {
        return whole::serve(args.get(2).and_then(|g| g.parse().ok()).unwrap_or(1));
    }
    let opts = Opts::parse();
    let mut report = Report::default();
    report::machine(&opts);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if opts.wants("api") {
        runtime.block_on(api::bench(&opts, &mut report))?;
    }
    if opts.wants("pg") {
        runtime.block_on(pg::bench(&opts, &mut report))?;
    }
    if opts.wants("parquet") {
        pq::bench(&opts, &mut report)?;
    }
    if opts.wants("iceberg") {
        runtime.block_on(ice::bench(&opts, &mut report))?;
    }
    if opts.wants("run") || opts.wants("scale") {
        runtime.block_on(whole::bench(&opts, &mut report))?;
    }
    if opts.wants("s3") {
        runtime.block_on(s3::bench(&opts, &mut report))?;
    }
    if opts.wants("apps") {
        runtime.block_on(apps::bench(&opts, &mut report))?;
    }
    if opts.wants("listen") {
        runtime.block_on(listen::bench(&opts, &mut report))?;
    }
    if opts.wants("saved") {
        runtime.block_on(saved::bench(&opts, &mut report))?;
    }
    report.print_summary();
    Ok(())
}
