//! Per-endpoint traffic: the sliding-window rate limit and the statistics tests assert on.
//!
//! Pure bookkeeping over instants handed in by the caller, so it is tested with made-up
//! instants rather than with sleeps. No I/O and no clock reads here.
//!
//! The rules, as the real API applies them: a call counts when it *arrives* (the caller hands
//! in the arrival instant, after the way there); a call that finds the limit's worth of accepted
//! calls in the sliding second ending at its arrival is refused (60007) and does not use up the
//! window. Another client of the same app ([`Background`]) takes its calls out of the same
//! window of `get_group_msg_receipt`.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;
use tokio::time::Instant;

/// The rate limit's window: the API allows N calls per second.
pub const WINDOW: Duration = Duration::from_secs(1);

/// The APIs the simulator answers; each has its own limit and statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    GroupMsgReceipt,
    GroupInfo,
    GroupMsgReceiptDetail,
}

impl Endpoint {
    pub const ALL: [Endpoint; 3] = [
        Endpoint::GroupMsgReceipt,
        Endpoint::GroupInfo,
        Endpoint::GroupMsgReceiptDetail,
    ];

    /// The command word in the URL, also the key in [`SimStats::endpoints`].
    pub fn command(self) -> &'static str {
        match self {
            Endpoint::GroupMsgReceipt => "get_group_msg_receipt",
            Endpoint::GroupInfo => "get_group_info",
            Endpoint::GroupMsgReceiptDetail => "get_group_msg_receipt_detail",
        }
    }

    /// The endpoint for a command word of `group_open_http_svc`.
    pub fn from_command(command: &str) -> Option<Endpoint> {
        Endpoint::ALL.into_iter().find(|e| e.command() == command)
    }
}

/// Everything the simulator counted, as `GET /sim/stats` answers it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SimStats {
    /// The current step of the read counts.
    pub step: u64,
    /// Keyed by command word (`get_group_msg_receipt`, `get_group_info`,
    /// `get_group_msg_receipt_detail`).
    pub endpoints: BTreeMap<String, EndpointStats>,
}

impl SimStats {
    /// The statistics of one endpoint (zero if it was never called).
    pub fn endpoint(&self, endpoint: Endpoint) -> EndpointStats {
        self.endpoints
            .get(endpoint.command())
            .cloned()
            .unwrap_or_default()
    }
}

/// One endpoint's counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EndpointStats {
    /// Every call that reached the endpoint, refused ones included.
    pub calls: u64,
    /// Calls answered 60007 because the window was full.
    pub rate_limited: u64,
    /// The most arrivals in any sliding one-second window: what a client sent.
    pub max_calls_in_any_second: u64,
    /// The most calls let through in any sliding one-second window, the other client's
    /// included: never above the limit.
    pub max_accepted_in_any_second: u64,
    /// Injected faults, by kind.
    pub faults: FaultStats,
    /// Calls of the simulated other client of the app ([`Background`]); not in `calls`.
    #[serde(default)]
    pub background_calls: u64,
    /// Of those, refused because the window was full.
    #[serde(default)]
    pub background_rate_limited: u64,
    /// How many answers carried each `ErrorCode` (0 included; dropped calls and 502s are not
    /// answers and are not counted here).
    pub error_codes: BTreeMap<i64, u64>,
}

/// Injected faults of one endpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FaultStats {
    pub http_502: u64,
    pub internal_10002: u64,
    pub dropped: u64,
    pub slow: u64,
}

/// Instants within the last [`WINDOW`], oldest first.
#[derive(Debug, Default)]
struct Window(VecDeque<Instant>);

impl Window {
    /// Forgets instants that no window ending at `now` contains, then counts the rest.
    fn count_at(&mut self, now: Instant) -> usize {
        while self
            .0
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) >= WINDOW)
        {
            self.0.pop_front();
        }
        self.0.len()
    }
}

/// Load from another client of the same app: `rate` calls per second, evenly spaced, from
/// `from` to `until` after the first API call the simulator received, on
/// `get_group_msg_receipt`. Its calls take room in the same sliding window as ours.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Background {
    pub rate: f64,
    pub from: Duration,
    pub until: Duration,
}

impl Background {
    /// When its `k`-th call arrives, counted from the first API call; `None` past `until`.
    fn at(&self, k: u64) -> Option<Duration> {
        let t = self.from + Duration::from_secs_f64(k as f64 / self.rate);
        (t < self.until).then_some(t)
    }
}

/// The live state of one endpoint.
#[derive(Debug, Default)]
struct EndpointTraffic {
    /// Our client's arrivals (for `max_calls_in_any_second`).
    arrivals: Window,
    /// Every accepted call, the other client's included: what the limit counts.
    accepted: Window,
    stats: EndpointStats,
}

impl EndpointTraffic {
    /// Lets a call arriving at `now` through if the window has room, and counts it.
    fn admit(&mut self, limit: usize, now: Instant) -> bool {
        if limit > 0 && self.accepted.count_at(now) >= limit {
            return false;
        }
        self.accepted.0.push_back(now);
        let accepted = self.accepted.count_at(now) as u64;
        self.stats.max_accepted_in_any_second = self.stats.max_accepted_in_any_second.max(accepted);
        true
    }
}

/// Traffic of all endpoints. Callers serialize access (one lock) and hand in non-decreasing
/// instants.
#[derive(Debug)]
pub struct Traffic {
    /// Calls allowed per window and endpoint; 0 turns the limit off.
    limit: u32,
    endpoints: [EndpointTraffic; Endpoint::ALL.len()],
    /// The other client's load, and how many calls of each segment arrived so far.
    background: Vec<(Background, u64)>,
    /// The first API call's arrival: the background's clock starts there.
    origin: Option<Instant>,
}

impl Traffic {
    pub fn new(limit: u32, background: &[Background]) -> Traffic {
        Traffic {
            limit,
            endpoints: Default::default(),
            background: background.iter().map(|b| (*b, 0)).collect(),
            origin: None,
        }
    }

    fn of(&mut self, endpoint: Endpoint) -> &mut EndpointTraffic {
        &mut self.endpoints[endpoint as usize]
    }

    /// Records a call arriving at `now` and says whether the limit lets it through. Refused
    /// calls do not use up the window: a client that backs off gets through again once the
    /// calls it was refused for are a second old. The other client's calls due by `now` are
    /// counted first, in their order.
    pub fn arrive(&mut self, endpoint: Endpoint, now: Instant) -> bool {
        let origin = *self.origin.get_or_insert(now);
        self.background_until(origin, now);
        let limit = self.limit as usize;
        let t = self.of(endpoint);
        t.stats.calls += 1;
        t.arrivals.0.push_back(now);
        let arrivals = t.arrivals.count_at(now) as u64;
        t.stats.max_calls_in_any_second = t.stats.max_calls_in_any_second.max(arrivals);
        if t.admit(limit, now) {
            return true;
        }
        t.stats.rate_limited += 1;
        false
    }

    /// Lets the other client's calls that arrived by `now` into the receipts window, oldest
    /// first.
    fn background_until(&mut self, origin: Instant, now: Instant) {
        let limit = self.limit as usize;
        loop {
            let next = self
                .background
                .iter()
                .enumerate()
                .filter_map(|(i, (b, k))| b.at(*k).map(|t| (origin + t, i)))
                .filter(|(t, _)| *t <= now)
                .min();
            let Some((at, i)) = next else { return };
            self.background[i].1 += 1;
            let t = self.of(Endpoint::GroupMsgReceipt);
            t.stats.background_calls += 1;
            if !t.admit(limit, at) {
                t.stats.background_rate_limited += 1;
            }
        }
    }

    /// Counts an answer's `ErrorCode`.
    pub fn answered(&mut self, endpoint: Endpoint, code: i64) {
        *self.of(endpoint).stats.error_codes.entry(code).or_default() += 1;
    }

    /// Counts an injected fault.
    pub fn fault(&mut self, endpoint: Endpoint, count: impl FnOnce(&mut FaultStats) -> &mut u64) {
        *count(&mut self.of(endpoint).stats.faults) += 1;
    }

    /// A snapshot of the counters.
    pub fn stats(&self, step: u64) -> SimStats {
        let endpoints = Endpoint::ALL
            .into_iter()
            .map(|e| {
                (
                    e.command().to_string(),
                    self.endpoints[e as usize].stats.clone(),
                )
            })
            .collect();
        SimStats { step, endpoints }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: Endpoint = Endpoint::GroupMsgReceipt;

    fn ms(base: Instant, n: u64) -> Instant {
        base + Duration::from_millis(n)
    }

    #[test]
    fn limit_holds_in_every_sliding_window() {
        let base = Instant::now();
        let mut t = Traffic::new(3, &[]);
        // Arrivals at 0, 100, 200, 300 ms: the fourth is refused.
        let first: Vec<bool> = [0, 100, 200, 300]
            .iter()
            .map(|&n| t.arrive(R, ms(base, n)))
            .collect();
        assert_eq!(first, [true, true, true, false]);
        // At 999 ms the window (‑1 ms, 999] still holds three accepted calls.
        assert!(!t.arrive(R, ms(base, 999)));
        // At 1000 ms the call from 0 ms has left the window: one slot.
        assert!(t.arrive(R, ms(base, 1000)));
        assert!(!t.arrive(R, ms(base, 1050)));
        // At 1100 ms the call from 100 ms has left.
        assert!(t.arrive(R, ms(base, 1100)));
        let s = t.stats(0).endpoint(R);
        assert_eq!(s.calls, 8);
        assert_eq!(s.rate_limited, 3);
        assert_eq!(s.max_accepted_in_any_second, 3);
        // (100, 1100] holds arrivals 200, 300, 999, 1000, 1050, 1100 = 6, the most of any window.
        assert_eq!(s.max_calls_in_any_second, 6);
    }

    #[test]
    fn max_arrivals_is_exact_for_a_burst_and_endpoints_are_separate() {
        let base = Instant::now();
        let mut t = Traffic::new(200, &[]);
        let accepted = (0..300).filter(|&i| t.arrive(R, ms(base, i))).count();
        assert_eq!(accepted, 200);
        // Another endpoint has a limit of its own.
        assert!(t.arrive(Endpoint::GroupInfo, ms(base, 300)));
        // Later arrivals spaced one second apart never share a window.
        for i in 0..5 {
            t.arrive(R, ms(base, 5_000 + i * 1_000));
        }
        let stats = t.stats(4);
        let s = stats.endpoint(R);
        assert_eq!((s.calls, s.rate_limited), (305, 100));
        assert_eq!(s.max_calls_in_any_second, 300);
        assert_eq!(s.max_accepted_in_any_second, 200);
        assert_eq!(stats.endpoint(Endpoint::GroupInfo).calls, 1);
        assert_eq!(stats.step, 4);
    }

    #[test]
    fn the_other_client_takes_room_in_the_same_window() {
        let base = Instant::now();
        // 10 calls/s of background from 1 s to 2 s after the first call; the limit is 11.
        let bg = Background {
            rate: 10.0,
            from: Duration::from_secs(1),
            until: Duration::from_secs(2),
        };
        let mut t = Traffic::new(11, &[bg]);
        assert!(
            t.arrive(R, base),
            "the first call starts the background's clock"
        );
        // At 1.95 s the background's 10 calls (1.0, 1.1, ... 1.9 s) fill the window but one:
        // room for one more of ours (the first call left the window at 1 s).
        assert!(t.arrive(R, ms(base, 1950)));
        assert!(!t.arrive(R, ms(base, 1960)));
        let s = t.stats(0).endpoint(R);
        assert_eq!((s.calls, s.rate_limited), (3, 1));
        assert_eq!((s.background_calls, s.background_rate_limited), (10, 0));
        assert_eq!(s.max_accepted_in_any_second, 11);
        assert_eq!(s.max_calls_in_any_second, 2, "only our calls");
        // After it stops, the window empties; ours fill it alone.
        let later = (0..20)
            .filter(|&i| t.arrive(R, ms(base, 5_000 + i)))
            .count();
        assert_eq!(later, 11);
        assert_eq!(t.stats(0).endpoint(R).background_calls, 10);
        // The other client is refused too when the window is full.
        let mut t = Traffic::new(5, &[bg]);
        assert!(t.arrive(R, base));
        assert_eq!(
            (0..4).filter(|&i| t.arrive(R, ms(base, 990 + i))).count(),
            4
        );
        t.arrive(R, ms(base, 1_950));
        let s = t.stats(0).endpoint(R);
        // Ours at 0.99 s fill it: the background's call at 1.0 s still fits (the one at 0 s
        // left), the other nine are refused.
        assert_eq!((s.background_calls, s.background_rate_limited), (10, 9));
    }

    #[test]
    fn zero_means_no_limit() {
        let base = Instant::now();
        let mut t = Traffic::new(0, &[]);
        assert!((0..1000).all(|_| t.arrive(R, base)));
        let s = t.stats(0).endpoint(R);
        assert_eq!((s.rate_limited, s.max_calls_in_any_second), (0, 1000));
    }

    #[test]
    fn answers_and_faults_are_counted() {
        let mut t = Traffic::new(0, &[]);
        t.answered(R, 0);
        t.answered(R, 0);
        t.answered(R, 60007);
        t.fault(R, |f| &mut f.dropped);
        let s = t.stats(0).endpoint(R);
        assert_eq!(s.error_codes, BTreeMap::from([(0, 2), (60007, 1)]));
        assert_eq!(s.faults.dropped, 1);
        let json = serde_json::to_string(&t.stats(0)).unwrap();
        let back: SimStats = serde_json::from_str(&json).unwrap();
        assert_eq!(back, t.stats(0));
    }
}
