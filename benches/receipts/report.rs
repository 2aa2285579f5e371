//! Medians, ranges, and the summary table printed at the end.

use crate::Opts;

/// Several measurements of one figure.
#[derive(Debug, Clone, Default)]
pub struct Samples(pub Vec<f64>);

impl Samples {
    pub fn push(&mut self, v: f64) {
        self.0.push(v);
    }

    pub fn median(&self) -> f64 {
        let mut v = self.0.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }

    pub fn min(&self) -> f64 {
        self.0.iter().copied().fold(f64::INFINITY, f64::min)
    }

    pub fn max(&self) -> f64 {
        self.0.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    }

    /// "median (min–max, n=N)" with `digits` decimals.
    pub fn show(&self, digits: usize) -> String {
        format!(
            "{:.digits$} (range {:.digits$}-{:.digits$}, n={})",
            self.median(),
            self.min(),
            self.max(),
            self.0.len()
        )
    }
}

/// One line of the summary: a figure, its value, and its target if it has one.
#[derive(Debug, Clone)]
struct Line {
    figure: String,
    value: String,
    verdict: String,
}

/// Every figure of the run, printed again together at the end.
#[derive(Debug, Default)]
pub struct Report {
    lines: Vec<Line>,
}

impl Report {
    /// A figure without a target.
    pub fn figure(&mut self, figure: impl Into<String>, value: impl Into<String>) {
        self.add(figure.into(), value.into(), String::new());
    }

    /// A figure and whether it met its target (described in `target`).
    pub fn target(
        &mut self,
        figure: impl Into<String>,
        value: impl Into<String>,
        met: bool,
        target: &str,
    ) {
        let verdict = format!("{} {target}", if met { "MET" } else { "MISSED" });
        self.add(figure.into(), value.into(), verdict);
    }

    fn add(&mut self, figure: String, value: String, verdict: String) {
        println!("  {figure}: {value} {verdict}");
        self.lines.push(Line {
            figure,
            value,
            verdict,
        });
    }

    pub fn print_summary(&self) {
        println!("\n== Summary (medians; ranges over rounds) ==");
        for l in &self.lines {
            println!("{:<48} {} {}", l.figure, l.value, l.verdict);
        }
    }
}

/// Prints what the numbers were measured on.
pub fn machine(opts: &Opts) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_kb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "== receipt-exporter benchmark{} ==\nmachine: {cpu}, {cores} cores, {:.1} GiB RAM; load average at start: {}",
        if opts.quick { " (--quick)" } else { "" },
        mem_kb as f64 / 1024.0 / 1024.0,
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
}

/// A rate with thousands separated, e.g. `1,234,567`.
pub fn thousands(v: f64) -> String {
    let s = format!("{:.0}", v);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 && c != '-' {
            out.push(',');
        }
        out.push(c);
    }
    out
}
