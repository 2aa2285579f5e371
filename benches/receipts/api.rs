//! Section 1, API throughput against the ceiling: the client, driven as the run's pipeline drives it,
//! against the in-process simulator enforcing 200 calls per sliding second, at 50 ms and
//! 150 ms mean latency (± half of it, uniform). Calls are counted by the simulator as they
//! arrive, sampled once a second after a warm-up; the figures are over the steady state.

use crate::report::{thousands, Report, Samples};
use crate::Opts;
use futures::StreamExt;
use receipt_exporter::chat::{ChatClient, ClientConfig};
use receipt_exporter::secret::Secret;
use receipt_exporter::settings::{resolve, RawSettings, Settings};
use receipt_exporter::sim::{generate_groups, Endpoint, SimConfig, Simulator};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const SDKAPPID: u64 = 1_400_000_001;
pub const KEY: &str = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";
pub const IDENTIFIER: &str = "administrator";
/// The documented ceiling: calls per sliding second, per app and API.
const CEILING: f64 = 200.0;
/// The shortest warm-up: connections opened, the pace settled.
const WARM_UP: Duration = Duration::from_secs(3);
/// The longest warm-up: a rate-limit answer at start-up slows the client for up to 25 s
/// (`chat::limiter`: 5 s hold, 20 s recovery); the steady state begins after that.
const MAX_WARM_UP: Duration = Duration::from_secs(30);

/// The settings a run has when nothing is set (`settings::ALL`'s defaults).
fn defaults() -> Settings {
    resolve(RawSettings::default()).expect("the defaults are valid")
}

pub async fn bench(opts: &Opts, report: &mut Report) -> anyhow::Result<()> {
    let steady = Duration::from_secs(if opts.quick { 8 } else { 22 });
    println!(
        "\n== 1. API throughput against the 200 calls/s ceiling ({}s steady state after a warm-up of \
         at least {}s and until the client's pace is back at full, {} seqs/call, concurrency {}) ==",
        steady.as_secs(),
        WARM_UP.as_secs(),
        defaults().batch_size,
        defaults().concurrency
    );
    for latency_ms in [50u64, 150] {
        let m = measure(Duration::from_millis(latency_ms), steady).await?;
        let label = format!("api {latency_ms}ms");
        report.figure(
            format!("{label}: calls/s per 1s window"),
            m.per_second.show(1),
        );
        report.target(
            format!("{label}: calls/s / ceiling"),
            format!(
                "{:.3} ({:.1} calls/s)",
                m.calls_per_s / CEILING,
                m.calls_per_s
            ),
            m.calls_per_s / CEILING >= 0.97,
            "(target >= 0.97)",
        );
        report.target(
            format!("{label}: rate-limited answers / calls"),
            format!(
                "{:.3}% ({} of {})",
                m.limited_share * 100.0,
                m.limited,
                m.calls
            ),
            m.limited_share < 0.005,
            "(target < 0.5%)",
        );
        report.figure(format!("{label}: receipts/s"), thousands(m.receipts_per_s));
        report.figure(
            format!("{label}: warm-up"),
            format!(
                "{:.1}s, {} rate-limited answers of {} calls; whole run {:.3} of the ceiling",
                m.warm_up.as_secs_f64(),
                m.warm_up_limited,
                m.warm_up_calls,
                m.whole_run_calls_per_s / CEILING
            ),
        );
        report.figure(
            format!("{label}: most arrivals in any sliding second"),
            m.max_in_any_second.to_string(),
        );
    }
    Ok(())
}

/// What one sustained run measured over its steady state.
struct Measured {
    per_second: Samples,
    calls_per_s: f64,
    calls: u64,
    limited: u64,
    limited_share: f64,
    receipts_per_s: f64,
    max_in_any_second: u64,
    warm_up: Duration,
    warm_up_calls: u64,
    warm_up_limited: u64,
    /// From the first call to the end, warm-up included.
    whole_run_calls_per_s: f64,
}

/// Counters at one instant.
#[derive(Clone, Copy)]
struct Tick {
    at: Instant,
    calls: u64,
    limited: u64,
    receipts: u64,
}

async fn measure(latency: Duration, steady: Duration) -> anyhow::Result<Measured> {
    // Enough work for the whole run at the ceiling, with room to spare.
    let seconds = (MAX_WARM_UP + steady).as_secs() + 5;
    let calls = seconds * CEILING as u64;
    let messages = 1_000u64;
    let groups = (calls * defaults().batch_size as u64).div_ceil(messages) as usize;
    let mut config = SimConfig::new(SDKAPPID, Secret::new(KEY), IDENTIFIER);
    config.groups = generate_groups(config.seed, groups, messages);
    config.rate_limit = CEILING as u32;
    config.latency = latency;
    config.latency_jitter = latency / 2;
    let sim = Simulator::start(config, "127.0.0.1:0".parse()?)?;
    let mut cfg = ClientConfig::new(sim.base_url(), SDKAPPID, IDENTIFIER, Secret::new(KEY));
    cfg.rate_limit = CEILING;
    cfg.batch_size = defaults().batch_size;
    let client = ChatClient::new(cfg)?;
    let receipts = Arc::new(AtomicU64::new(0));
    let ids: Vec<String> = sim.groups().into_iter().map(|g| g.group_id).collect();
    let observer = client.clone();
    let full_pace = client.limiter().pace();
    let start = Instant::now();
    let puller = tokio::spawn(pull_all(client, ids, messages, receipts.clone()));

    let tick = |sim: &Simulator| {
        let e = sim.stats().endpoint(Endpoint::GroupMsgReceipt);
        Tick {
            at: Instant::now(),
            calls: e.calls,
            limited: e.rate_limited,
            receipts: receipts.load(Ordering::Relaxed),
        }
    };
    tokio::time::sleep(WARM_UP).await;
    while observer.limiter().pace() < full_pace && start.elapsed() < MAX_WARM_UP {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first = tick(&sim);
    let mut last = first;
    let mut per_second = Samples::default();
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    interval.tick().await;
    for _ in 0..steady.as_secs() {
        interval.tick().await;
        let now = tick(&sim);
        per_second.push((now.calls - last.calls) as f64 / (now.at - last.at).as_secs_f64());
        last = now;
    }
    puller.abort();
    let secs = (last.at - first.at).as_secs_f64();
    let calls = last.calls - first.calls;
    let limited = last.limited - first.limited;
    let max_in_any_second = sim
        .stats()
        .endpoint(Endpoint::GroupMsgReceipt)
        .max_calls_in_any_second;
    sim.shutdown().await;
    Ok(Measured {
        per_second,
        calls_per_s: calls as f64 / secs,
        calls,
        limited,
        limited_share: limited as f64 / calls.max(1) as f64,
        receipts_per_s: (last.receipts - first.receipts) as f64 / secs,
        max_in_any_second,
        warm_up: first.at - start,
        warm_up_calls: first.calls,
        warm_up_limited: first.limited,
        whole_run_calls_per_s: last.calls as f64 / (last.at - start).as_secs_f64(),
    })
}

/// Pulls every group's seqs `1..=messages` in plan batches, the default concurrency's calls at a
/// time, as `run::pipeline` does; counts the receipts received.
async fn pull_all(client: ChatClient, ids: Vec<String>, messages: u64, receipts: Arc<AtomicU64>) {
    let batch = defaults().batch_size as u64;
    // Built before the clock starts (a few MB), so the stream owns its items.
    let mut work = Vec::new();
    for g in &ids {
        for i in 0..messages.div_ceil(batch) {
            let seqs: Vec<u64> = (i * batch + 1..=((i + 1) * batch).min(messages)).collect();
            work.push((g.clone(), seqs));
        }
    }
    let mut calls = futures::stream::iter(work)
        .map(|(group_id, seqs): (String, Vec<u64>)| {
            let client = client.clone();
            async move { client.pull_receipts(&group_id, &seqs).await }
        })
        .buffer_unordered(defaults().concurrency);
    while let Some(result) = calls.next().await {
        if let Ok(answers) = result {
            let n: usize = answers.iter().map(|a| a.items.len()).sum();
            receipts.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}
