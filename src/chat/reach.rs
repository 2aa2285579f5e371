//! Whether the Chat API can be reached at all, and how loud its failures may be.
//!
//! A wrong region, a DNS failure or an outage makes every attempt fail: retrying each batch
//! eight times would only flood the log and, mid-run, grind on for minutes. [`Reach`] tells
//! the client when to give up on the whole run instead: nothing has ever answered since the
//! client was made and every attempt for a while failed to connect ([`UNREACHABLE_AFTER`]);
//! or every attempt since the API last answered has failed as an outage makes it fail
//! (refused, DNS, timed out, closed, HTTP 5xx) for the outage bound (`EXPORT_OUTAGE_TIMEOUT`).
//! While some attempts get answers, failures stay per call and are retried as before.
//! [`Repeats`] folds identical warnings into one line with a count. Neither knows about runs,
//! Postgres or the terminal.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// How long every attempt may fail to connect, with no answer ever, before the run stops.
pub const UNREACHABLE_AFTER: Duration = Duration::from_secs(10);

/// The client's record of whether the API ever answered, and since when it has not.
#[derive(Debug, Default)]
pub struct Reach {
    /// Some attempt got past connecting (any HTTP answer, or a failure after connecting).
    connected: AtomicBool,
    /// When the first connection failure happened (while `connected` is false).
    first_failure: Mutex<Option<Instant>>,
    /// The outage so far: when the API last answered, and since when every attempt sent after
    /// that has failed (`None` while answers come).
    outage: Mutex<Outage>,
}

#[derive(Debug, Default)]
struct Outage {
    last_answer: Option<Instant>,
    failing_since: Option<Instant>,
}

impl Reach {
    /// An attempt got an answer from a live API (whatever it said, short of a 5xx): the
    /// outage, if there was one, is over.
    pub fn answered(&self) {
        let mut outage = self.outage.lock().unwrap();
        outage.last_answer = Some(Instant::now());
        outage.failing_since = None;
    }

    /// An attempt sent at `sent` failed as an outage makes it fail: since when every attempt
    /// has failed (never before the API's last answer).
    pub fn failed(&self, sent: Instant) -> Instant {
        let mut outage = self.outage.lock().unwrap();
        let start = outage.last_answer.map_or(sent, |last| last.max(sent));
        *outage.failing_since.get_or_insert(start)
    }

    /// Whether the outage going on began no later than `first`, the first failed attempt of a
    /// call: then every attempt since that call began failing has failed, and the call waits
    /// for the verdict on the whole API rather than giving up on its own.
    pub fn failing_since_before(&self, first: Instant) -> bool {
        let outage = self.outage.lock().unwrap();
        outage.failing_since.is_some_and(|since| since <= first)
    }

    /// An attempt got past connecting: from now on connection failures are transient.
    pub fn connected(&self) {
        self.connected.store(true, Ordering::Relaxed);
    }

    /// An attempt failed to connect: what that means for the whole API.
    pub fn connect_failed(&self, window: Duration) -> Verdict {
        if self.connected.load(Ordering::Relaxed) {
            return Verdict::Transient;
        }
        let now = Instant::now();
        let first = *self.first_failure.lock().unwrap().get_or_insert(now);
        if now.duration_since(first) >= window {
            Verdict::Unreachable
        } else {
            Verdict::NotYet
        }
    }
}

/// What a failure to connect means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The API answered before: an outage mid-run, retried like any passing failure.
    Transient,
    /// Nothing answered yet, but not for long: keep trying (whatever the call's attempts),
    /// so the run ends with one verdict on the API rather than group after group failing.
    NotYet,
    /// Nothing ever answered, and connecting has failed for the whole window: stop.
    Unreachable,
}

/// What a connection failure's text most likely means, for the one line the run stops with.
pub fn likely_cause(detail: &str) -> &'static str {
    let d = detail.to_ascii_lowercase();
    if d.contains("refused") {
        "connection refused: nothing listens at that address and port"
    } else if d.contains("dns") || d.contains("lookup") || d.contains("resolve") {
        "the host name does not resolve (DNS)"
    } else if d.contains("certificate") || d.contains("tls") || d.contains("handshake") {
        "the TLS handshake failed (a proxy, or not the Chat API)"
    } else if d.contains("timed out") || d.contains("timeout") {
        "connecting timed out (a firewall, or a wrong address)"
    } else if d.contains("unreachable") {
        "no route to the host (the network)"
    } else {
        "the connection could not be opened"
    }
}

/// How often a warning that keeps repeating is logged again, with its count.
pub const REPEAT_EVERY: Duration = Duration::from_secs(10);

/// Identical warnings, counted: the first is logged, the repeats are counted and logged as
/// one line with their count every [`REPEAT_EVERY`], and once more when this is dropped.
#[derive(Debug, Default)]
pub struct Repeats {
    /// Per warning text: repeats not logged yet, and when it was last logged.
    seen: Mutex<HashMap<String, (u64, Instant)>>,
}

impl Repeats {
    /// Whether to log `key` now: `Some(0)` the first time, `Some(n)` with the `n` repeats
    /// held back since it was last logged, `None` to hold this one back.
    pub fn note(&self, key: &str) -> Option<u64> {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap();
        match seen.get_mut(key) {
            None => {
                seen.insert(key.to_string(), (0, now));
                Some(0)
            }
            Some((held, last)) if now.duration_since(*last) >= REPEAT_EVERY => {
                let n = std::mem::take(held);
                *last = now;
                Some(n)
            }
            Some((held, _)) => {
                *held += 1;
                None
            }
        }
    }
}

impl Drop for Repeats {
    /// The repeats still held back when the client goes away get their line.
    fn drop(&mut self) {
        let seen = std::mem::take(self.seen.get_mut().unwrap_or_else(|e| e.into_inner()));
        for (key, (held, _)) in seen.into_iter().filter(|(_, (n, _))| *n > 0) {
            tracing::warn!(target: "receipt_exporter::chat", repeats = held,
                "{key} (repeated {held} more {})", if held == 1 { "time" } else { "times" });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn unreachable_only_without_any_answer_after_the_window() {
        let reach = Reach::default();
        assert_eq!(reach.connect_failed(UNREACHABLE_AFTER), Verdict::NotYet);
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(reach.connect_failed(UNREACHABLE_AFTER), Verdict::NotYet);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            reach.connect_failed(UNREACHABLE_AFTER),
            Verdict::Unreachable
        );

        let answered = Reach::default();
        answered.connected();
        assert_eq!(
            answered.connect_failed(UNREACHABLE_AFTER),
            Verdict::Transient
        );
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(
            answered.connect_failed(UNREACHABLE_AFTER),
            Verdict::Transient,
            "after an answer, connection failures stay transient"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_counts_from_the_first_failure_after_the_last_answer() {
        let reach = Reach::default();
        let t0 = Instant::now();
        tokio::time::advance(Duration::from_secs(5)).await;
        reach.answered();
        let answered_at = Instant::now();
        // Sent before the last answer: the outage counts from that answer.
        assert_eq!(reach.failed(t0), answered_at);
        tokio::time::advance(Duration::from_secs(1)).await;
        let later = Instant::now();
        assert_eq!(
            reach.failed(later),
            answered_at,
            "the first failure fixes the start"
        );
        assert!(reach.failing_since_before(later));
        reach.answered();
        tokio::time::advance(Duration::from_secs(1)).await;
        let sent = Instant::now();
        assert_eq!(reach.failed(sent), sent);
        assert!(
            !reach.failing_since_before(later),
            "the API answered after that call began failing"
        );
    }

    #[test]
    fn causes_are_named() {
        let refused =
            "client error (Connect): tcp connect error: Connection refused (os error 111)";
        assert!(likely_cause(refused).contains("refused"));
        let dns = "client error (Connect): dns error: failed to lookup address information";
        assert!(likely_cause(dns).contains("DNS"));
        assert!(likely_cause("invalid peer certificate: UnknownIssuer").contains("TLS"));
        assert!(likely_cause("operation timed out").contains("timed out"));
    }

    #[tokio::test(start_paused = true)]
    async fn repeats_are_counted_and_logged_again_after_a_while() {
        let r = Repeats::default();
        assert_eq!(r.note("a"), Some(0));
        assert_eq!(r.note("a"), None);
        assert_eq!(r.note("a"), None);
        assert_eq!(r.note("b"), Some(0), "another text is logged at once");
        tokio::time::advance(REPEAT_EVERY).await;
        assert_eq!(r.note("a"), Some(2));
        assert_eq!(r.note("a"), None);
    }
}
