//! The `sim` subcommand: its flags, their validation into a [`SimConfig`], and `serve`.
//!
//! The clap wiring into the top-level CLI and the signal handling live with the lead's
//! `cli.rs`/`main.rs`; this file only knows the simulator.

use crate::secret::Secret;
use crate::sim::{generate_groups, load_groups, Background, Faults, SimConfig, Simulator};
use anyhow::Context;
use std::future::Future;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Flags of `receipt-exporter sim`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Port to listen on; 0 picks a free one (printed on stdout).
    #[arg(long, default_value_t = 8087)]
    pub port: u16,
    /// Groups from a JSON array of {"group_id", "group_type", "member_num", "next_msg_seq"}
    /// instead of generated ones.
    #[arg(long, value_name = "PATH")]
    pub groups_file: Option<PathBuf>,
    /// Seeds the read counts and the generated groups.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// How many groups to generate (without --groups-file).
    #[arg(long = "groups", value_name = "N", default_value_t = 5)]
    pub group_count: usize,
    /// Messages per generated group.
    #[arg(long, value_name = "M", default_value_t = 200)]
    pub messages: u64,
    /// Calls the simulator lets through per sliding second and API before it answers 60007;
    /// 0 = no limit. (Not `--rate-limit`: that is the exporter's own pace, a global flag.)
    #[arg(
        id = "sim_limit",
        long = "limit",
        value_name = "N",
        default_value_t = 200
    )]
    pub rate_limit: u32,
    /// Longest MsgSeqList accepted (10004 above it).
    #[arg(long, default_value_t = 100)]
    pub max_batch: usize,
    /// Mean round trip added to every call, e.g. 50ms, or with its jitter, 50ms±20ms (or
    /// 50ms+-20ms). A call counts against --limit when it arrives, half-way; each way is
    /// uniform in latency/2 ± jitter/2.
    #[arg(long, value_parser = parse_latency, default_value = "0s")]
    pub latency: Latency,
    /// The latency's jitter, when --latency does not give it.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub jitter: Option<Duration>,
    /// Another client of the same app sending RATE calls/s from FROM to TO after the first
    /// API call (e.g. 60@10s..30s), in the same sliding window as the exporter's calls. Repeat
    /// it for load that varies over time.
    #[arg(long, value_name = "RATE@FROM..TO", value_parser = parse_background)]
    pub background: Vec<Background>,
    /// Share of calls answered HTTP 502 with an HTML body (0..1).
    #[arg(long = "fault-502", value_parser = parse_rate, default_value_t = 0.0)]
    pub fault_502: f64,
    /// Share of calls answered ErrorCode 10002 (0..1).
    #[arg(long = "fault-10002", value_parser = parse_rate, default_value_t = 0.0)]
    pub fault_10002: f64,
    /// Share of calls whose connection is closed without an answer (0..1).
    #[arg(long = "fault-drop", value_parser = parse_rate, default_value_t = 0.0)]
    pub fault_drop: f64,
    /// Share of calls answered only after --slow-delay (0..1).
    #[arg(long = "fault-slow", value_parser = parse_rate, default_value_t = 0.0)]
    pub fault_slow: f64,
    /// The extra delay of a slow answer.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub slow_delay: Duration,
    /// Advance read counts one step this often, e.g. 10s (default: only via POST /sim/advance).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub step_every: Option<Duration>,
    /// Once started, deliver read-receipt callbacks (Group.CallbackAfterReadReceipt) of the
    /// simulated groups to this receiver (e.g. http://127.0.0.1:8270/callback), signed with
    /// the token of EXPORT_CALLBACK_TOKEN_FILE when set; prints what was sent and answered,
    /// then goes on serving the API
    #[arg(long, value_name = "URL")]
    pub deliver_to: Option<String>,
    /// How many callbacks --deliver-to sends (before loss and repeats)
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub callbacks: usize,
    /// Share of the callbacks never sent (0..1)
    #[arg(long, value_parser = parse_rate, default_value_t = 0.0)]
    pub callback_lose: f64,
    /// Share of the callbacks sent twice (0..1)
    #[arg(long, value_parser = parse_rate, default_value_t = 0.0)]
    pub callback_repeat: f64,
    /// Forged callbacks added, as a share of --callbacks (0..1): wrong app, wrong token, bad
    /// JSON, a 10 MB body, in turn
    #[arg(long, value_parser = parse_rate, default_value_t = 0.0)]
    pub callback_forge: f64,
    /// Send the callbacks in a shuffled order (otherwise in EventTime order)
    #[arg(long)]
    pub callback_reorder: bool,
    /// Each callback waits a random time up to this before it is sent, e.g. 20ms
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    pub callback_delay: Duration,
}

/// `--latency`: a mean, and a jitter when written `MEAN±JITTER` or `MEAN+-JITTER`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    pub mean: Duration,
    pub jitter: Option<Duration>,
}

fn parse_latency(s: &str) -> Result<Latency, String> {
    let (mean, jitter) = match s.split_once('±').or_else(|| s.split_once("+-")) {
        Some((mean, jitter)) => (mean, Some(jitter)),
        None => (s, None),
    };
    let duration = |v: &str| {
        humantime::parse_duration(v.trim()).map_err(|e| {
            format!("expected a duration or MEAN±JITTER (e.g. 50ms±20ms), got {s:?}: {e}")
        })
    };
    Ok(Latency {
        mean: duration(mean)?,
        jitter: jitter.map(duration).transpose()?,
    })
}

fn parse_background(s: &str) -> Result<Background, String> {
    let bad = |why: &str| format!("expected RATE@FROM..TO (e.g. 60@10s..30s), got {s:?}: {why}");
    let (rate, span) = s.split_once('@').ok_or_else(|| bad("no @"))?;
    let (from, until) = span.split_once("..").ok_or_else(|| bad("no .."))?;
    let rate: f64 = rate
        .trim()
        .parse()
        .ok()
        .filter(|r: &f64| r.is_finite() && *r > 0.0 && *r <= 100_000.0)
        .ok_or_else(|| bad("RATE is calls per second, above 0"))?;
    let duration = |v: &str| humantime::parse_duration(v.trim()).map_err(|e| bad(&e.to_string()));
    let (from, until) = (duration(from)?, duration(until)?);
    if until <= from {
        return Err(bad("TO must come after FROM"));
    }
    Ok(Background { rate, from, until })
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!(
            "expected a rate from 0 to 1 (e.g. 0.05), got {s:?}"
        )),
    }
}

impl SimArgs {
    /// What `--deliver-to` sends, validated; `None` without it.
    pub fn callbacks(
        &self,
        sdkappid: u64,
        token: Option<Secret>,
    ) -> anyhow::Result<Option<crate::sim::Callbacks>> {
        let Some(url) = &self.deliver_to else {
            return Ok(None);
        };
        let parsed = reqwest::Url::parse(url).ok();
        anyhow::ensure!(
            parsed.is_some_and(|u| matches!(u.scheme(), "http" | "https") && u.query().is_none()),
            "--deliver-to {url}: expected the receiver's callback URL without a query, e.g. http://127.0.0.1:8270/callback"
        );
        Ok(Some(crate::sim::Callbacks {
            url: url.clone(),
            sdkappid,
            token,
            deliveries: self.callbacks,
            max_messages: 3,
            lose: self.callback_lose,
            repeat: self.callback_repeat,
            forge: self.callback_forge,
            reorder: self.callback_reorder,
            max_delay: self.callback_delay,
            concurrency: 16,
            seed: self.seed,
            first_event_ms: chrono::Utc::now().timestamp_millis(),
        }))
    }

    /// The validated configuration for the given app and admin.
    pub fn config(
        &self,
        sdkappid: u64,
        key: Secret,
        identifier: String,
    ) -> anyhow::Result<SimConfig> {
        let groups = match &self.groups_file {
            Some(path) => load_groups(path)?,
            None => generate_groups(self.seed, self.group_count, self.messages),
        };
        let faults = Faults {
            http_502: self.fault_502,
            internal_10002: self.fault_10002,
            drop_connection: self.fault_drop,
            slow: self.fault_slow,
            slow_delay: self.slow_delay,
        };
        let total = faults.http_502 + faults.internal_10002 + faults.drop_connection + faults.slow;
        anyhow::ensure!(
            total <= 1.0,
            "--fault-502, --fault-10002, --fault-drop and --fault-slow add up to {total}: at most 1"
        );
        anyhow::ensure!(self.max_batch > 0, "--max-batch must be at least 1");
        anyhow::ensure!(
            self.latency.jitter.is_none() || self.jitter.is_none(),
            "--latency gives a jitter (MEAN±JITTER) and --jitter another: give one"
        );
        anyhow::ensure!(
            self.step_every.is_none_or(|d| !d.is_zero()),
            "--step-every must be above zero"
        );
        Ok(SimConfig {
            seed: self.seed,
            groups,
            rate_limit: self.rate_limit,
            max_batch: self.max_batch,
            latency: self.latency.mean,
            latency_jitter: self.latency.jitter.or(self.jitter).unwrap_or_default(),
            background: self.background.clone(),
            faults,
            step_every: self.step_every,
            ..SimConfig::new(sdkappid, key, identifier)
        })
    }
}

/// Runs the simulator until `shutdown` completes. Prints `listening on IP:PORT` on stdout
/// once bound, so that scripts (and tests) can find a port picked with `--port 0`.
pub async fn serve(
    args: SimArgs,
    sdkappid: u64,
    key: Secret,
    identifier: String,
    callback_token: Option<Secret>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let config = args.config(sdkappid, key, identifier)?;
    let deliveries = args.callbacks(sdkappid, callback_token)?;
    let groups = config.groups.len();
    // The ids to `track add`: nothing else tells a user trying the simulator what they are.
    let group_ids = match (config.groups.first(), config.groups.last()) {
        (Some(first), Some(last)) if groups > 1 => {
            format!("{} .. {}", first.group_id, last.group_id)
        }
        (Some(only), _) => only.group_id.clone(),
        _ => String::new(),
    };
    let addr = SocketAddr::new(args.host, args.port);
    let sim = Simulator::start(config, addr)
        .with_context(|| format!("while binding the simulator to {addr}"))?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {}", sim.addr())?;
        out.flush()?;
    }
    tracing::info!(groups, group_ids, sdkappid, "simulator ready");
    tokio::pin!(shutdown);
    if let Some(plan) = deliveries {
        tokio::select! {
            report = sim.deliver_callbacks(&plan) => {
                let mut out = std::io::stdout().lock();
                writeln!(out, "{}", report.summary())?;
                out.flush()?;
            }
            _ = &mut shutdown => {
                sim.shutdown().await;
                return Ok(());
            }
        }
    }
    shutdown.await;
    sim.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sim: SimArgs,
    }

    fn parse(args: &[&str]) -> Result<SimArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("sim").chain(args.iter().copied())).map(|c| c.sim)
    }

    fn config(args: &[&str]) -> anyhow::Result<SimConfig> {
        parse(args)
            .unwrap()
            .config(1400000001, Secret::new("k"), "admin".into())
    }

    #[test]
    fn defaults() {
        let args = parse(&[]).unwrap();
        assert_eq!(
            (args.host.to_string(), args.port),
            ("127.0.0.1".into(), 8087)
        );
        let c = config(&[]).unwrap();
        assert_eq!((c.rate_limit, c.max_batch, c.groups.len()), (200, 100, 5));
        assert_eq!(c.groups[0].next_msg_seq, 201);
        assert_eq!(c.faults, Faults::default());
        assert_eq!(c.step_every, None);
    }

    #[test]
    fn flags() {
        let c = config(&[
            "--seed",
            "9",
            "--groups",
            "3",
            "--messages",
            "10",
            "--limit",
            "0",
            "--max-batch",
            "7",
            "--latency",
            "20ms",
            "--jitter",
            "5ms",
            "--fault-502",
            "0.1",
            "--fault-10002",
            "0.2",
            "--fault-drop",
            "0.05",
            "--fault-slow",
            "0.01",
            "--slow-delay",
            "4s",
            "--step-every",
            "1m",
        ])
        .unwrap();
        assert_eq!(c.groups, generate_groups(9, 3, 10));
        assert_eq!((c.seed, c.rate_limit, c.max_batch), (9, 0, 7));
        assert_eq!(
            (c.latency, c.latency_jitter),
            (Duration::from_millis(20), Duration::from_millis(5))
        );
        assert_eq!(
            c.faults,
            Faults {
                http_502: 0.1,
                internal_10002: 0.2,
                drop_connection: 0.05,
                slow: 0.01,
                slow_delay: Duration::from_secs(4)
            }
        );
        assert_eq!(c.step_every, Some(Duration::from_secs(60)));
    }

    #[test]
    fn latency_with_its_jitter_and_background_load() {
        let ms = Duration::from_millis;
        for form in ["50ms±20ms", "50ms+-20ms", "50ms ± 20ms"] {
            let c = config(&["--latency", form]).unwrap();
            assert_eq!((c.latency, c.latency_jitter), (ms(50), ms(20)), "{form}");
        }
        let c = config(&["--latency", "150ms"]).unwrap();
        assert_eq!((c.latency, c.latency_jitter), (ms(150), Duration::ZERO));
        assert!(c.background.is_empty());
        let c = config(&["--background", "60@10s..30s", "--background", "20.5@0s..1m"]).unwrap();
        assert_eq!(
            c.background,
            [
                Background {
                    rate: 60.0,
                    from: Duration::from_secs(10),
                    until: Duration::from_secs(30)
                },
                Background {
                    rate: 20.5,
                    from: Duration::ZERO,
                    until: Duration::from_secs(60)
                }
            ]
        );
        for bad in [
            "60",
            "60@10s",
            "0@1s..2s",
            "x@1s..2s",
            "60@3s..2s",
            "60@1s..soon",
        ] {
            let err = parse(&["--background", bad]).err().unwrap().to_string();
            assert!(err.contains("RATE@FROM..TO"), "{bad}: {err}");
        }
        let err = parse(&["--latency", "50ms±fast"])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("MEAN±JITTER"), "{err}");
        let err = config(&["--latency", "50ms±20ms", "--jitter", "5ms"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--jitter"), "{err}");
    }

    #[test]
    fn refusals_name_the_flag() {
        let err = parse(&["--fault-502", "1.5"]).err().unwrap().to_string();
        assert!(
            err.contains("--fault-502") && err.contains("from 0 to 1"),
            "{err}"
        );
        assert!(parse(&["--latency", "fast"]).is_err());
        let err = config(&["--fault-502", "0.6", "--fault-drop", "0.6"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("at most 1"), "{err}");
        let err = config(&["--max-batch", "0"]).unwrap_err().to_string();
        assert!(err.contains("--max-batch"), "{err}");
        let err = config(&["--groups-file", "/nonexistent/groups.json"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/groups.json"), "{err}");
    }
}
