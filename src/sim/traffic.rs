//! Per-endpoint traffic: the sliding-window rate limit and the statistics tests assert on.
//!
//! Pure bookkeeping over instants handed in by the caller, so it is tested with made-up
//! instants rather than with sleeps. No I/O and no clock reads here.

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
    /// The most calls let through in any sliding one-second window: never above the limit.
    pub max_accepted_in_any_second: u64,
    /// Injected faults, by kind.
    pub faults: FaultStats,
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

/// The live state of one endpoint.
#[derive(Debug, Default)]
struct EndpointTraffic {
    arrivals: Window,
    accepted: Window,
    stats: EndpointStats,
}

/// Traffic of all endpoints. Callers serialize access (one lock) and hand in non-decreasing
/// instants.
#[derive(Debug)]
pub struct Traffic {
    /// Calls allowed per window and endpoint; 0 turns the limit off.
    limit: u32,
    endpoints: [EndpointTraffic; Endpoint::ALL.len()],
}

impl Traffic {
    pub fn new(limit: u32) -> Traffic {
        Traffic {
            limit,
            endpoints: Default::default(),
        }
    }

    fn of(&mut self, endpoint: Endpoint) -> &mut EndpointTraffic {
        &mut self.endpoints[endpoint as usize]
    }

    /// Records a call arriving at `now` and says whether the limit lets it through. Refused
    /// calls do not use up the window: a client that backs off gets through again once the
    /// calls it was refused for are a second old.
    pub fn arrive(&mut self, endpoint: Endpoint, now: Instant) -> bool {
        let limit = self.limit as usize;
        let t = self.of(endpoint);
        t.stats.calls += 1;
        t.arrivals.0.push_back(now);
        let arrivals = t.arrivals.count_at(now) as u64;
        t.stats.max_calls_in_any_second = t.stats.max_calls_in_any_second.max(arrivals);
        if limit > 0 && t.accepted.count_at(now) >= limit {
            t.stats.rate_limited += 1;
            return false;
        }
        t.accepted.0.push_back(now);
        let accepted = t.accepted.count_at(now) as u64;
        t.stats.max_accepted_in_any_second = t.stats.max_accepted_in_any_second.max(accepted);
        true
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
        let mut t = Traffic::new(3);
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
        let mut t = Traffic::new(200);
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
    fn zero_means_no_limit() {
        let base = Instant::now();
        let mut t = Traffic::new(0);
        assert!((0..1000).all(|_| t.arrive(R, base)));
        let s = t.stats(0).endpoint(R);
        assert_eq!((s.rate_limited, s.max_calls_in_any_second), (0, 1000));
    }

    #[test]
    fn answers_and_faults_are_counted() {
        let mut t = Traffic::new(0);
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
