//! The plan: tracked windows → merged seq ranges per group → batches of API calls.
//!
//! Pure functions, no I/O. Overlapping or adjacent windows of a group merge, so a seq is never
//! pulled twice in one run; ranges stay ranges until a batch is cut, so a plan of millions of
//! seqs costs a few bytes per window, not per seq.

use std::fmt;
use std::time::Duration;

/// An inclusive window of message seqs, `from..=to`, with `1 <= from <= to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct SeqWindow {
    pub from: i64,
    pub to: i64,
}

impl SeqWindow {
    pub fn new(from: i64, to: i64) -> Result<Self, String> {
        if from < 1 {
            return Err(format!("window {from}..{to}: seqs start at 1"));
        }
        if to < from {
            return Err(format!("window {from}..{to}: TO must not be below FROM"));
        }
        Ok(SeqWindow { from, to })
    }

    /// Parses `FROM..TO` (inclusive; `FROM..=TO` is accepted too) or a single seq `N`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let form = "expected FROM..TO with 1 <= FROM <= TO, e.g. 1..500";
        let text = text.trim();
        let (from, to) = match text.split_once("..") {
            Some((from, to)) => (from, to.strip_prefix('=').unwrap_or(to)),
            None => (text, text),
        };
        let num = |s: &str| {
            s.trim()
                .parse::<i64>()
                .map_err(|_| format!("'{text}' is not a seq window: {form}"))
        };
        SeqWindow::new(num(from)?, num(to)?).map_err(|e| format!("{e} ({form})"))
    }

    pub fn len(&self) -> u64 {
        (self.to - self.from) as u64 + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

impl fmt::Display for SeqWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", self.from, self.to)
    }
}

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

    /// The group's seqs cut into batches of at most `batch_size`, lazily. Owning the plan, the
    /// iterator borrows nothing: a run's future holding it stays `Send`.
    pub fn into_batches(self, batch_size: usize) -> impl Iterator<Item = Vec<u64>> + Send {
        let mut seqs = self
            .ranges
            .into_iter()
            .flat_map(|w| w.from as u64..=w.to as u64)
            .peekable();
        std::iter::from_fn(move || {
            seqs.peek()?;
            Some(seqs.by_ref().take(batch_size).collect())
        })
    }

    /// The group's seqs cut into batches of at most `batch_size`, lazily (a copy of the
    /// ranges, a few bytes per window).
    pub fn batches(&self, batch_size: usize) -> impl Iterator<Item = Vec<u64>> + Send {
        self.clone().into_batches(batch_size)
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

/// A job's follow policy: which seqs a run may skip, and how much one run may spend.
///
/// The defaults skip settled messages and messages that answered 10062 three runs in a row,
/// and put no cap on a run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FollowPolicy {
    /// Skip messages whose last snapshot had `unread_num = 0`: their counts cannot change.
    pub skip_settled: bool,
    /// Skip messages that answered 10062 (no receipt) in this many consecutive observations,
    /// counted only below the group's newest known seq. `None`: never skip them.
    pub no_receipt_after: Option<u32>,
    /// Stop starting calls once this many were made (retries and group-info calls count).
    pub max_calls: Option<u64>,
    /// Stop starting calls once the run has lasted this long.
    #[serde(with = "opt_secs")]
    pub max_duration: Option<Duration>,
}

impl Default for FollowPolicy {
    fn default() -> Self {
        FollowPolicy {
            skip_settled: true,
            no_receipt_after: Some(3),
            max_calls: None,
            max_duration: None,
        }
    }
}

impl FollowPolicy {
    /// The policy with both skips turned off (`run --include-settled`); caps stay.
    pub fn including_settled(mut self) -> Self {
        self.skip_settled = false;
        self.no_receipt_after = None;
        self
    }
}

/// A rolling window's seqs: the newest `n` messages up to `newest` (`NextMsgSeq - 1`).
/// `None` when the group has no message yet.
pub fn rolling_range(newest: u64, n: u64) -> Option<SeqWindow> {
    if newest == 0 || n == 0 {
        return None;
    }
    let to = i64::try_from(newest).ok()?;
    let from = newest.saturating_sub(n.saturating_sub(1)).max(1) as i64;
    Some(SeqWindow { from, to })
}

/// Cuts a group's merged ranges at `newest`: seqs beyond it do not exist yet.
pub fn clamp(ranges: &[SeqWindow], newest: u64) -> Vec<SeqWindow> {
    let newest = i64::try_from(newest).unwrap_or(i64::MAX);
    ranges
        .iter()
        .filter(|w| w.from <= newest)
        .map(|w| SeqWindow {
            from: w.from,
            to: w.to.min(newest),
        })
        .collect()
}

/// One API call's worth of work: a batch of one group's seqs, and when the stalest of them
/// was last observed (`None`: at least one was never observed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkItem {
    pub group_id: std::sync::Arc<str>,
    pub seqs: SeqRuns,
    pub oldest_seen: Option<chrono::DateTime<chrono::Utc>>,
}

/// A batch's seqs, ascending, kept as runs of consecutive seqs until the batch is pulled: a
/// batch cut from a window without skipped seqs is one run (16 bytes, whatever the batch
/// size), so a run's work list costs bytes per batch, not per seq.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqRuns(Box<[SeqWindow]>);

impl SeqRuns {
    /// The runs of `seqs`, which must be ascending.
    pub fn from_ascending(seqs: &[u64]) -> SeqRuns {
        let mut runs: Vec<SeqWindow> = Vec::new();
        for &seq in seqs {
            let seq = seq as i64;
            match runs.last_mut() {
                Some(last) if last.to.checked_add(1) == Some(seq) => last.to = seq,
                _ => runs.push(SeqWindow { from: seq, to: seq }),
            }
        }
        SeqRuns(runs.into_boxed_slice())
    }

    /// How many seqs.
    pub fn len(&self) -> usize {
        self.0.iter().map(|w| w.len() as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The lowest seq.
    pub fn first(&self) -> Option<u64> {
        self.0.first().map(|w| w.from as u64)
    }

    /// Every seq, ascending: what a call asks for.
    pub fn to_vec(&self) -> Vec<u64> {
        let mut seqs = Vec::with_capacity(self.len());
        for w in self.0.iter() {
            seqs.extend(w.from as u64..=w.to as u64);
        }
        seqs
    }
}

/// Cuts one group's unskipped seqs (ascending, with when each was last observed) into batches
/// of at most `batch_size`, each keyed by its stalest seq.
pub fn cut_batches(
    group_id: &str,
    seqs: &[u64],
    last_seen: &[Option<chrono::DateTime<chrono::Utc>>],
    batch_size: usize,
) -> Vec<WorkItem> {
    let group_id: std::sync::Arc<str> = group_id.into();
    seqs.chunks(batch_size.max(1))
        .zip(last_seen.chunks(batch_size.max(1)))
        .map(|(seqs, seen)| WorkItem {
            group_id: group_id.clone(),
            seqs: SeqRuns::from_ascending(seqs),
            // `None` sorts below every time: a batch with a never-observed seq is the stalest.
            oldest_seen: seen.iter().copied().min().flatten(),
        })
        .collect()
}

/// A group's seqs to pull: its ranges without the `skipped` seqs, each with when it was last
/// observed (`seen`, ascending; a seq not in it was never observed). Both inputs ascending.
pub fn unskipped(
    ranges: &[SeqWindow],
    skipped: &[u64],
    seen: &[(u64, chrono::DateTime<chrono::Utc>)],
) -> (Vec<u64>, Vec<Option<chrono::DateTime<chrono::Utc>>>) {
    let (mut seqs, mut at) = (Vec::new(), Vec::new());
    let (mut skip, mut seen) = (skipped.iter().peekable(), seen.iter().peekable());
    for seq in ranges.iter().flat_map(|w| w.from as u64..=w.to as u64) {
        while skip.next_if(|s| **s < seq).is_some() {}
        if skip.next_if(|s| **s == seq).is_some() {
            continue;
        }
        while seen.next_if(|(s, _)| *s < seq).is_some() {}
        seqs.push(seq);
        at.push(seen.next_if(|(s, _)| *s == seq).map(|(_, t)| *t));
    }
    (seqs, at)
}

/// Orders the work so nothing starves under a budget: batches with a never-observed seq
/// first, then by their stalest seq's last observation; ties by group and seq, so the order
/// is stable from run to run.
pub fn order_work(work: &mut [WorkItem]) {
    work.sort_by(|a, b| {
        (a.oldest_seen, &a.group_id, a.seqs.first()).cmp(&(
            b.oldest_seen,
            &b.group_id,
            b.seqs.first(),
        ))
    });
}

/// Whether a run under `policy` may start another call: `committed` calls made or started so
/// far, `elapsed` since the run started.
pub fn within_budget(policy: &FollowPolicy, committed: u64, elapsed: Duration) -> bool {
    policy.max_calls.is_none_or(|cap| committed < cap)
        && policy.max_duration.is_none_or(|cap| elapsed < cap)
}

mod opt_secs {
    pub fn serialize<S: serde::Serializer>(
        d: &Option<std::time::Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_f64(d.as_secs_f64()),
            None => s.serialize_none(),
        }
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

    #[test]
    fn rolling_ranges_follow_the_newest_seq() {
        assert_eq!(rolling_range(1000, 100), Some(w(901, 1000)));
        assert_eq!(rolling_range(50, 100), Some(w(1, 50)));
        assert_eq!(rolling_range(100, 100), Some(w(1, 100)));
        assert_eq!(rolling_range(101, 100), Some(w(2, 101)));
        assert_eq!(rolling_range(7, 1), Some(w(7, 7)));
        assert_eq!(rolling_range(0, 100), None, "no message yet");
    }

    #[test]
    fn clamping_drops_seqs_beyond_the_newest() {
        let ranges = vec![w(1, 10), w(20, 30), w(40, 50)];
        assert_eq!(clamp(&ranges, 25), vec![w(1, 10), w(20, 25)]);
        assert_eq!(clamp(&ranges, 20), vec![w(1, 10), w(20, 20)]);
        assert_eq!(clamp(&ranges, 100), ranges);
        assert_eq!(clamp(&ranges, 0), vec![]);
    }

    fn at(secs: i64) -> Option<chrono::DateTime<chrono::Utc>> {
        chrono::DateTime::from_timestamp(secs, 0)
    }

    #[test]
    fn batches_carry_their_stalest_observation() {
        let seqs = [1, 2, 3, 7, 8];
        let seen = [at(5), at(3), at(9), None, at(1)];
        let b = cut_batches("g", &seqs, &seen, 3);
        assert_eq!(b.len(), 2);
        assert_eq!(
            (b[0].seqs.to_vec(), b[0].oldest_seen),
            (vec![1, 2, 3], at(3))
        );
        assert_eq!((b[1].seqs.to_vec(), b[1].oldest_seen), (vec![7, 8], None));
    }

    #[test]
    fn a_batch_keeps_its_seqs_as_runs() {
        let whole = SeqRuns::from_ascending(&(1..=500).collect::<Vec<_>>());
        assert_eq!(whole.0.len(), 1, "one run, whatever the batch size");
        assert_eq!((whole.len(), whole.first()), (500, Some(1)));
        assert_eq!(whole.to_vec(), (1..=500).collect::<Vec<_>>());
        let gaps = SeqRuns::from_ascending(&[3, 4, 5, 9, 11, 12]);
        assert_eq!(gaps.0.len(), 3);
        assert_eq!((gaps.len(), gaps.first()), (6, Some(3)));
        assert_eq!(gaps.to_vec(), vec![3, 4, 5, 9, 11, 12]);
        let none = SeqRuns::from_ascending(&[]);
        assert!(none.is_empty() && none.to_vec().is_empty() && none.first().is_none());
    }

    #[test]
    fn skipped_seqs_leave_the_ranges_and_seen_ones_keep_their_time() {
        let t = |s| at(s).unwrap();
        let (seqs, seen) = unskipped(
            &[w(1, 4), w(10, 11)],
            &[2, 3, 10, 50],
            &[(1, t(7)), (3, t(8)), (11, t(9))],
        );
        assert_eq!(seqs, vec![1, 4, 11]);
        assert_eq!(seen, vec![at(7), None, at(9)]);
    }

    #[test]
    fn never_observed_work_comes_first_then_the_stalest() {
        let item = |g: &str, first: u64, seen| WorkItem {
            group_id: g.into(),
            seqs: SeqRuns::from_ascending(&[first]),
            oldest_seen: seen,
        };
        let mut work = vec![
            item("a", 1, at(30)),
            item("b", 9, None),
            item("a", 5, at(10)),
            item("c", 1, at(20)),
            item("a", 3, None),
        ];
        order_work(&mut work);
        let order: Vec<(String, u64)> = work
            .iter()
            .map(|i| (i.group_id.to_string(), i.seqs.first().unwrap()))
            .collect();
        let expect = [("a", 3), ("b", 9), ("a", 5), ("c", 1), ("a", 1)];
        assert_eq!(order, expect.map(|(g, s)| (g.to_string(), s)).to_vec());
    }

    #[test]
    fn the_budget_stops_at_either_cap() {
        let mut p = FollowPolicy::default();
        assert!(within_budget(
            &p,
            u64::MAX - 1,
            Duration::from_secs(1 << 40)
        ));
        p.max_calls = Some(10);
        assert!(within_budget(&p, 9, Duration::ZERO));
        assert!(!within_budget(&p, 10, Duration::ZERO));
        p.max_calls = None;
        p.max_duration = Some(Duration::from_secs(60));
        assert!(within_budget(&p, 0, Duration::from_secs(59)));
        assert!(!within_budget(&p, 0, Duration::from_secs(60)));
        let all = FollowPolicy::default().including_settled();
        assert!(!all.skip_settled && all.no_receipt_after.is_none());
    }
}
