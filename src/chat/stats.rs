//! Counters of the client, cheap enough to bump on every call from every task.
//!
//! Plain atomics plus a fixed latency histogram; [`Stats::snapshot`] turns them into a
//! serializable [`StatsSnapshot`] for progress lines and the run's summary.

use super::error::ErrorClass;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

/// Why an answer, or an item of it, was dropped instead of used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidReason {
    /// The body is not JSON.
    NonJson,
    /// JSON, but not the documented shape (missing list, item without a seq, counts not integers).
    WrongShape,
    /// An item for a seq (or group) that was not asked for.
    NotAsked,
    /// The same seq (or group) more than once in one answer: every copy is dropped.
    Duplicate,
    /// A seq that was asked for and has no item in the answer.
    Missing,
    /// A negative read/unread count.
    NegativeCount,
    /// A count above what the sinks store (int4): [`crate::chat::types::MAX_COUNT`].
    CountOutOfRange,
    /// The body is longer than [`super::client::MAX_ANSWER_BYTES`]: the whole answer is dropped.
    TooLarge,
}

impl InvalidReason {
    const ALL: [InvalidReason; 8] = [
        Self::NonJson,
        Self::WrongShape,
        Self::NotAsked,
        Self::Duplicate,
        Self::Missing,
        Self::NegativeCount,
        Self::CountOutOfRange,
        Self::TooLarge,
    ];

    /// The name used in logs and in [`StatsSnapshot::invalid_by_reason`].
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NonJson => "non_json",
            Self::WrongShape => "wrong_shape",
            Self::NotAsked => "not_asked",
            Self::Duplicate => "duplicate",
            Self::Missing => "missing",
            Self::NegativeCount => "negative_count",
            Self::CountOutOfRange => "count_out_of_range",
            Self::TooLarge => "too_large",
        }
    }
}

/// Latency buckets: upper bounds grow by 25% from 100 µs, the last one is about two minutes.
const BUCKETS: usize = 64;

fn bucket_bound_us(i: usize) -> f64 {
    100.0 * 1.25f64.powi(i as i32)
}

fn bucket_of(latency: Duration) -> usize {
    let us = latency.as_secs_f64() * 1e6;
    (0..BUCKETS)
        .find(|&i| us <= bucket_bound_us(i))
        .unwrap_or(BUCKETS - 1)
}

/// Live counters; see [`StatsSnapshot`] for their meaning.
#[derive(Debug)]
pub struct Stats {
    calls: AtomicU64,
    retries_rate_limited: AtomicU64,
    retries_cooldown: AtomicU64,
    retries_transient: AtomicU64,
    retries_usersig: AtomicU64,
    rate_limited_answers: AtomicU64,
    seqs_asked: AtomicU64,
    receipts: AtomicU64,
    item_codes: Mutex<BTreeMap<i32, u64>>,
    invalid: [AtomicU64; InvalidReason::ALL.len()],
    latency: [AtomicU64; BUCKETS],
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            calls: AtomicU64::new(0),
            retries_rate_limited: AtomicU64::new(0),
            retries_cooldown: AtomicU64::new(0),
            retries_transient: AtomicU64::new(0),
            retries_usersig: AtomicU64::new(0),
            rate_limited_answers: AtomicU64::new(0),
            seqs_asked: AtomicU64::new(0),
            receipts: AtomicU64::new(0),
            item_codes: Mutex::new(BTreeMap::new()),
            invalid: std::array::from_fn(|_| AtomicU64::new(0)),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Stats {
    pub(crate) fn call(&self) {
        self.calls.fetch_add(1, Relaxed);
    }

    pub(crate) fn retry(&self, class: ErrorClass) {
        let counter = match class {
            ErrorClass::RateLimited => &self.retries_rate_limited,
            ErrorClass::Cooldown => &self.retries_cooldown,
            ErrorClass::UserSig => &self.retries_usersig,
            _ => &self.retries_transient,
        };
        counter.fetch_add(1, Relaxed);
    }

    pub(crate) fn rate_limited_answer(&self) {
        self.rate_limited_answers.fetch_add(1, Relaxed);
    }

    pub(crate) fn seqs_asked(&self, n: usize) {
        self.seqs_asked.fetch_add(n as u64, Relaxed);
    }

    /// The item codes of one answer; one lock per answer, not per item.
    pub(crate) fn item_codes(&self, codes: impl IntoIterator<Item = i32>) {
        let mut map = self.item_codes.lock().expect("stats lock");
        for code in codes {
            if code == 0 {
                self.receipts.fetch_add(1, Relaxed);
            }
            *map.entry(code).or_default() += 1;
        }
    }

    pub(crate) fn invalid(&self, reason: InvalidReason, n: u64) {
        self.invalid[reason as usize].fetch_add(n, Relaxed);
    }

    pub(crate) fn latency(&self, latency: Duration) {
        self.latency[bucket_of(latency)].fetch_add(1, Relaxed);
    }

    /// A consistent-enough copy of all counters (each counter is read once).
    pub fn snapshot(&self) -> StatsSnapshot {
        let invalid_by_reason: BTreeMap<String, u64> = InvalidReason::ALL
            .iter()
            .map(|r| {
                (
                    r.as_str().to_string(),
                    self.invalid[*r as usize].load(Relaxed),
                )
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        StatsSnapshot {
            calls: self.calls.load(Relaxed),
            retries: RetryCounts {
                rate_limited: self.retries_rate_limited.load(Relaxed),
                cooldown: self.retries_cooldown.load(Relaxed),
                transient: self.retries_transient.load(Relaxed),
                usersig: self.retries_usersig.load(Relaxed),
            },
            rate_limited_answers: self.rate_limited_answers.load(Relaxed),
            seqs_asked: self.seqs_asked.load(Relaxed),
            receipts: self.receipts.load(Relaxed),
            item_codes: self.item_codes.lock().expect("stats lock").clone(),
            invalid_items: invalid_by_reason.values().sum(),
            invalid_by_reason,
            latency_ms: self.latency_snapshot(),
        }
    }

    fn latency_snapshot(&self) -> LatencySnapshot {
        let counts: Vec<u64> = self.latency.iter().map(|c| c.load(Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        let pct = |p: f64| -> f64 {
            if total == 0 {
                return 0.0;
            }
            let rank = (p * total as f64).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return (bucket_bound_us(i) / 1000.0 * 100.0).round() / 100.0;
                }
            }
            bucket_bound_us(BUCKETS - 1) / 1000.0
        };
        LatencySnapshot {
            count: total,
            p50: pct(0.50),
            p90: pct(0.90),
            p99: pct(0.99),
        }
    }
}

/// Counters at one moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatsSnapshot {
    /// HTTP attempts sent, retries included.
    pub calls: u64,
    pub retries: RetryCounts,
    /// Answers that said "too many calls" (60007, 60011, 60018, 60019, 10006, HTTP 429).
    pub rate_limited_answers: u64,
    /// Seqs put into a request (each batch once, retries not counted again).
    pub seqs_asked: u64,
    /// Receipt items with `Code` 0.
    pub receipts: u64,
    /// Receipt items by their `Code` (0 included; 10062 = no receipt; 10004 for a rejected single seq).
    pub item_codes: BTreeMap<i32, u64>,
    /// Dropped answers and items, all reasons together.
    pub invalid_items: u64,
    /// Dropped answers and items by reason (see [`InvalidReason::as_str`]); zero counts left out.
    pub invalid_by_reason: BTreeMap<String, u64>,
    pub latency_ms: LatencySnapshot,
}

/// Retries by the class of the failure that caused them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetryCounts {
    pub rate_limited: u64,
    pub cooldown: u64,
    pub transient: u64,
    pub usersig: u64,
}

/// Latency of answered attempts, milliseconds, as bucket upper bounds (within 25%).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatencySnapshot {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_histogram() {
        let stats = Stats::default();
        for _ in 0..90 {
            stats.latency(Duration::from_millis(10));
        }
        for _ in 0..9 {
            stats.latency(Duration::from_millis(200));
        }
        stats.latency(Duration::from_secs(2));
        let l = stats.snapshot().latency_ms;
        assert_eq!(l.count, 100);
        assert!(l.p50 >= 10.0 && l.p50 <= 12.5, "{l:?}");
        assert!(l.p90 >= 10.0 && l.p90 <= 12.5, "{l:?}");
        assert!(l.p99 >= 200.0 && l.p99 <= 250.0, "{l:?}");
        assert_eq!(Stats::default().snapshot().latency_ms.p99, 0.0);
    }

    #[test]
    fn counters_add_up() {
        let stats = Stats::default();
        stats.call();
        stats.call();
        stats.retry(ErrorClass::Transient);
        stats.retry(ErrorClass::RateLimited);
        stats.item_codes([0, 0]);
        stats.item_codes([10062]);
        stats.invalid(InvalidReason::Duplicate, 2);
        stats.invalid(InvalidReason::Missing, 1);
        let s = stats.snapshot();
        assert_eq!(
            (
                s.calls,
                s.retries.transient,
                s.retries.rate_limited,
                s.receipts
            ),
            (2, 1, 1, 2)
        );
        assert_eq!(s.item_codes, BTreeMap::from([(0, 2), (10062, 1)]));
        assert_eq!(s.invalid_items, 3);
        assert_eq!(s.invalid_by_reason.get("duplicate"), Some(&2));
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["item_codes"]["10062"], 1);
    }
}
