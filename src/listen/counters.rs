//! What the receiver and its flush counted, for `/metrics` and the run's ledger details; and
//! the one log line per kind of refused delivery.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Every outcome of a delivery, as the `outcome` label of the deliveries metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Stored: at least one of its messages was new.
    Stored,
    /// Every message was stored before (a repeated delivery): answered OK, nothing stored.
    Repeated,
    /// Another callback command: answered OK, not stored.
    Ignored,
    /// 400: not a read-receipt body we can read.
    Malformed,
    /// 403: not this receiver's app.
    WrongApp,
    /// 401: the token check failed (no Sign, a wrong one, expired).
    BadToken,
    /// 413: a body over the cap.
    TooLarge,
    /// 503: the inbox could not be written (Postgres): not acknowledged.
    Failed,
}

impl Outcome {
    pub const ALL: [Outcome; 8] = [
        Outcome::Stored,
        Outcome::Repeated,
        Outcome::Ignored,
        Outcome::Malformed,
        Outcome::WrongApp,
        Outcome::BadToken,
        Outcome::TooLarge,
        Outcome::Failed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Stored => "stored",
            Outcome::Repeated => "repeated",
            Outcome::Ignored => "ignored",
            Outcome::Malformed => "malformed",
            Outcome::WrongApp => "wrong_app",
            Outcome::BadToken => "bad_token",
            Outcome::TooLarge => "too_large",
            Outcome::Failed => "failed",
        }
    }

    /// Whether the delivery was refused (logged once per kind).
    pub fn refused(self) -> bool {
        !matches!(self, Outcome::Stored | Outcome::Repeated | Outcome::Ignored)
    }
}

/// The receiver's counters since it started.
#[derive(Debug, Default)]
pub struct Counters {
    deliveries: [AtomicU64; 8],
    said: [AtomicBool; 8],
    /// Inbox rows written since the last flush: the flush is woken at its row threshold.
    pub since_flush: AtomicU64,
    /// Rows the flush wrote as snapshots, and rows it dropped (untracked groups).
    pub flushed: AtomicU64,
    pub dropped_untracked: AtomicU64,
}

impl Counters {
    /// Counts a delivery; a refusal is logged the first time its kind occurs (then only
    /// counted: a flood of forged deliveries must not flood the log).
    pub fn count(&self, outcome: Outcome, why: &dyn std::fmt::Display) {
        let i = outcome as usize;
        self.deliveries[i].fetch_add(1, Ordering::Relaxed);
        if outcome.refused() && !self.said[i].swap(true, Ordering::Relaxed) {
            tracing::warn!(
                outcome = outcome.label(),
                "refused a callback: {why} (said once per kind; /metrics counts every one)"
            );
        }
    }

    pub fn deliveries(&self, outcome: Outcome) -> u64 {
        self.deliveries[outcome as usize].load(Ordering::Relaxed)
    }

    /// The Prometheus text of the counters and of the inbox's backlog (`pending` rows, the
    /// oldest `lag` seconds old; `None` when the database did not answer).
    pub fn render(&self, backlog: Option<(i64, f64)>) -> String {
        let mut out = String::from(
            "# HELP receipt_exporter_webhook_deliveries_total Callbacks received by `listen`, by outcome.\n\
             # TYPE receipt_exporter_webhook_deliveries_total counter\n",
        );
        for o in Outcome::ALL {
            out.push_str(&format!(
                "receipt_exporter_webhook_deliveries_total{{outcome=\"{}\"}} {}\n",
                o.label(),
                self.deliveries(o)
            ));
        }
        let rows = [
            ("flushed", self.flushed.load(Ordering::Relaxed)),
            (
                "dropped_untracked",
                self.dropped_untracked.load(Ordering::Relaxed),
            ),
        ];
        out.push_str(
            "# HELP receipt_exporter_webhook_rows_total Inbox rows the flush wrote as snapshots, or dropped.\n\
             # TYPE receipt_exporter_webhook_rows_total counter\n",
        );
        for (what, n) in rows {
            out.push_str(&format!(
                "receipt_exporter_webhook_rows_total{{outcome=\"{what}\"}} {n}\n"
            ));
        }
        if let Some((pending, lag)) = backlog {
            out.push_str(&format!(
                "# HELP receipt_exporter_webhook_inbox_pending Inbox rows acknowledged and not yet flushed.\n\
                 # TYPE receipt_exporter_webhook_inbox_pending gauge\n\
                 receipt_exporter_webhook_inbox_pending {pending}\n\
                 # HELP receipt_exporter_webhook_inbox_lag_seconds Age of the oldest inbox row not yet flushed (0: none).\n\
                 # TYPE receipt_exporter_webhook_inbox_lag_seconds gauge\n\
                 receipt_exporter_webhook_inbox_lag_seconds {lag:.3}\n"
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_is_rendered_with_its_count() {
        let c = Counters::default();
        c.count(Outcome::Stored, &"ok");
        c.count(Outcome::BadToken, &"no sign");
        c.count(Outcome::BadToken, &"no sign");
        let text = c.render(Some((3, 1.5)));
        assert!(
            text.contains("deliveries_total{outcome=\"stored\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("deliveries_total{outcome=\"bad_token\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("deliveries_total{outcome=\"too_large\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("receipt_exporter_webhook_inbox_pending 3\n"),
            "{text}"
        );
        assert!(text.contains("inbox_lag_seconds 1.500\n"), "{text}");
        assert!(!c.render(None).contains("inbox_pending"));
    }
}
