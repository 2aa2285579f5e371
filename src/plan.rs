//! The plan: tracked windows → merged seq ranges per group → batches of API calls.
//!
//! Pure functions, no I/O. Overlapping or adjacent windows of a group merge, so a seq is never
//! pulled twice in one run; ranges stay ranges until a batch is cut, so a plan of millions of
//! seqs costs a few bytes per window, not per seq.

use crate::tracking::SeqWindow;
use std::time::Duration;

/// One group's share of a run: its merged, sorted, disjoint seq ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupPlan {
    pub group_id: String,
    pub ranges: Vec<SeqWindow>,
}

impl GroupPlan {
    pub fn seq_count(&self) -> u64 {
        self.ranges.iter().map(SeqWindow::len).sum()
    }

    /// The API calls this group needs at `batch_size` seqs per call.
    pub fn calls(&self, batch_size: usize) -> u64 {
        self.seq_count().div_ceil(batch_size as u64)
    }

    /// The group's seqs cut into batches of at most `batch_size`, lazily.
    pub fn batches(&self, batch_size: usize) -> impl Iterator<Item = Vec<u64>> + '_ {
        let mut seqs = self
            .ranges
            .iter()
            .flat_map(|w| w.from as u64..=w.to as u64)
            .peekable();
        std::iter::from_fn(move || {
            seqs.peek()?;
            Some(seqs.by_ref().take(batch_size).collect())
        })
    }
}

/// Merges a group's windows: sorted, overlapping and adjacent ones joined.
pub fn merge_windows(mut windows: Vec<SeqWindow>) -> Vec<SeqWindow> {
    windows.sort();
    let mut merged: Vec<SeqWindow> = Vec::with_capacity(windows.len());
    for w in windows {
        match merged.last_mut() {
            Some(last) if w.from <= last.to.saturating_add(1) => last.to = last.to.max(w.to),
            _ => merged.push(w),
        }
    }
    merged
}

/// Builds the plan from `(group_id, window)` pairs in any order.
pub fn build(pairs: impl IntoIterator<Item = (String, SeqWindow)>) -> Vec<GroupPlan> {
    let mut by_group: std::collections::BTreeMap<String, Vec<SeqWindow>> = Default::default();
    for (group_id, window) in pairs {
        by_group.entry(group_id).or_default().push(window);
    }
    by_group
        .into_iter()
        .map(|(group_id, windows)| GroupPlan {
            group_id,
            ranges: merge_windows(windows),
        })
        .collect()
}

/// Splits off the groups that plan more than `cap` seqs (a window of a billion seqs written by
/// hand, say): they are refused with the reason, not attempted. Returns (kept, refused).
pub fn refuse_oversized(plan: Vec<GroupPlan>, cap: u64) -> (Vec<GroupPlan>, Vec<(String, String)>) {
    let (kept, over): (Vec<_>, Vec<_>) = plan.into_iter().partition(|g| g.seq_count() <= cap);
    let refused = over
        .into_iter()
        .map(|g| {
            let why = format!(
                "refused by the planner: its windows hold {} seqs, above the cap of {cap} per group per run \
                 (EXPORT_MAX_SEQS_PER_GROUP): narrow the windows, or use `backfill` for a one-off large pull",
                g.seq_count()
            );
            (g.group_id, why)
        })
        .collect();
    (kept, refused)
}

/// What `--dry-run` prints: the size of a plan and how long it takes at the rate limit.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Estimate {
    pub groups: u64,
    pub seqs: u64,
    pub calls: u64,
    #[serde(with = "humantime_serde_secs")]
    pub duration: Duration,
}

/// Sizes a plan at `batch_size` seqs per call and `rate_limit` calls per second.
pub fn estimate(plan: &[GroupPlan], batch_size: usize, rate_limit: u32) -> Estimate {
    let calls: u64 = plan.iter().map(|g| g.calls(batch_size)).sum();
    Estimate {
        groups: plan.len() as u64,
        seqs: plan.iter().map(GroupPlan::seq_count).sum(),
        calls,
        duration: Duration::from_secs_f64(calls as f64 / f64::from(rate_limit.max(1))),
    }
}

mod humantime_serde_secs {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(from: i64, to: i64) -> SeqWindow {
        SeqWindow { from, to }
    }

    #[test]
    fn overlapping_and_adjacent_windows_merge() {
        assert_eq!(
            merge_windows(vec![w(50, 200), w(1, 100), w(300, 310), w(201, 210)]),
            vec![w(1, 210), w(300, 310)]
        );
        assert_eq!(merge_windows(vec![w(5, 5), w(5, 5)]), vec![w(5, 5)]);
        assert_eq!(merge_windows(vec![w(1, 10), w(2, 3)]), vec![w(1, 10)]);
    }

    #[test]
    fn no_seq_is_planned_twice() {
        let plan = build(vec![
            ("g".into(), w(1, 100)),
            ("g".into(), w(50, 120)),
            ("h".into(), w(7, 7)),
        ]);
        let seqs: Vec<u64> = plan[0].batches(30).flatten().collect();
        assert_eq!(seqs, (1..=120).collect::<Vec<_>>());
        assert_eq!(
            plan[0].batches(30).map(|b| b.len()).collect::<Vec<_>>(),
            vec![30, 30, 30, 30]
        );
        assert_eq!(plan[1].group_id, "h");
    }

    #[test]
    fn oversized_groups_are_refused_with_the_reason() {
        let plan = build(vec![
            ("big".into(), w(1, 1_000_000_000)),
            ("ok".into(), w(1, 10)),
        ]);
        let (kept, refused) = refuse_oversized(plan, 1_000_000);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].group_id, "ok");
        assert_eq!(refused[0].0, "big");
        assert!(refused[0]
            .1
            .contains("1000000000 seqs, above the cap of 1000000"));
    }

    #[test]
    fn batches_span_ranges_and_estimates_add_up() {
        let plan = build(vec![("g".into(), w(1, 3)), ("g".into(), w(10, 11))]);
        assert_eq!(
            plan[0].batches(4).collect::<Vec<_>>(),
            vec![vec![1, 2, 3, 10], vec![11]]
        );
        let e = estimate(&plan, 4, 200);
        assert_eq!((e.groups, e.seqs, e.calls), (1, 5, 2));
        assert_eq!(e.duration, Duration::from_millis(10));
    }
}
