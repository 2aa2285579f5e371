//! Read counts as a pure function of (seed, group, seq, step).
//!
//! The simulator never stores a count: every answer is computed here, so a test (or a
//! benchmark) can predict any answer without replaying the calls that came before, and
//! re-asking never changes anything. Only the step moves counts, and only upwards.

use crate::sim::groups::SimGroup;

/// Per-item `Code`: no read receipt exists for this seq.
pub const NO_RECEIPT: i32 = 10062;

/// Receipts exist only in groups with at most this many members.
pub const MAX_RECEIPT_MEMBERS: u32 = 200;

/// The most steps a message takes to reach its final read count.
pub const MAX_SETTLE_STEPS: u64 = 5;

/// `(Code, ReadNum, UnreadNum)` for message `seq` of `group` at `step`.
///
/// - `Code` 10062 with zero counts for a seq outside `1..next_msg_seq`, a group of more than
///   200 members, or a message sent without a receipt request (about one in ten).
/// - Otherwise `ReadNum + UnreadNum = member_num - 1` (the sender does not count), `ReadNum`
///   starts somewhere below its final value and grows with `step` until, after one to five
///   steps, it stays there. About a third of the messages end fully read (unread 0).
pub fn receipt_at(seed: u64, group: &SimGroup, seq: u64, step: u64) -> (i32, u32, u32) {
    if seq == 0 || seq >= group.next_msg_seq || group.member_num > MAX_RECEIPT_MEMBERS {
        return (NO_RECEIPT, 0, 0);
    }
    let h = mix(mix(seed, fnv1a(&group.group_id)), seq);
    if h.is_multiple_of(10) {
        return (NO_RECEIPT, 0, 0);
    }
    let readers = u64::from(group.member_num.saturating_sub(1));
    let target = if (h >> 8).is_multiple_of(3) {
        readers
    } else {
        readers * ((h >> 16) % 100) / 100
    };
    let settle_steps = 1 + (h >> 24) % MAX_SETTLE_STEPS;
    let start = target * ((h >> 32) % 50) / 100;
    let read = start + (target - start) * step.min(settle_steps) / settle_steps;
    // Both fit: read <= readers < 200.
    (0, read as u32, (readers - read) as u32)
}

/// A well-mixed 64-bit value of two inputs (splitmix64 finalizer). Hand-written rather than
/// `std`'s hasher, whose output may change between Rust releases: answers must not.
pub(crate) fn mix(a: u64, b: u64) -> u64 {
    splitmix64(a ^ splitmix64(b))
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::groups::GroupType;

    fn group(members: u32, messages: u64) -> SimGroup {
        SimGroup {
            group_id: "@TGS#unit".into(),
            group_type: GroupType::Public,
            member_num: members,
            next_msg_seq: messages + 1,
        }
    }

    #[test]
    fn pinned_values_do_not_drift() {
        // If this changes, every recorded benchmark and demo answer changes with it.
        let g = group(50, 10);
        let at = |step| -> Vec<_> { (1..=6).map(|seq| receipt_at(1, &g, seq, step)).collect() };
        assert_eq!(
            at(0),
            [
                (0, 7, 42),
                (0, 12, 37),
                (0, 0, 49),
                (0, 5, 44),
                (0, 3, 46),
                (0, 13, 36)
            ]
        );
        assert_eq!(
            at(MAX_SETTLE_STEPS),
            [
                (0, 24, 25),
                (0, 27, 22),
                (0, 11, 38),
                (0, 28, 21),
                (0, 49, 0),
                (0, 49, 0)
            ]
        );
    }

    #[test]
    fn pure_monotone_and_consistent() {
        let g = group(120, 2000);
        for seq in 1..=2000 {
            let mut last_read = 0;
            for step in 0..=MAX_SETTLE_STEPS + 3 {
                let (code, read, unread) = receipt_at(3, &g, seq, step);
                assert_eq!((code, read, unread), receipt_at(3, &g, seq, step));
                if code == NO_RECEIPT {
                    assert_eq!((read, unread), (0, 0));
                    continue;
                }
                assert_eq!(code, 0);
                assert_eq!(read + unread, 119);
                assert!(read >= last_read, "seq {seq} step {step}");
                last_read = read;
            }
            // Settled: nothing moves after the last settle step.
            assert_eq!(
                receipt_at(3, &g, seq, MAX_SETTLE_STEPS),
                receipt_at(3, &g, seq, 1000)
            );
        }
    }

    #[test]
    fn shape_of_the_population() {
        let g = group(60, 3000);
        let g = &g;
        let at = |step| (1..=3000).map(move |seq| receipt_at(9, g, seq, step));
        let missing = at(0).filter(|r| r.0 == NO_RECEIPT).count();
        assert!(
            (200..=400).contains(&missing),
            "about 10% without receipt: {missing}"
        );
        let settled_late = at(MAX_SETTLE_STEPS)
            .filter(|r| r.0 == 0 && r.2 == 0)
            .count();
        let settled_early = at(0).filter(|r| r.0 == 0 && r.2 == 0).count();
        assert!(
            settled_late > 700,
            "about a third end fully read: {settled_late}"
        );
        assert!(settled_early < settled_late / 4, "{settled_early}");
        let moved = (1..=3000)
            .filter(|&seq| receipt_at(9, g, seq, 0) != receipt_at(9, g, seq, 1))
            .count();
        assert!(moved > 1000, "one step moves many counts: {moved}");
    }

    #[test]
    fn no_receipt_cases() {
        let g = group(10, 5);
        assert_eq!(receipt_at(1, &g, 0, 3), (NO_RECEIPT, 0, 0));
        assert_eq!(receipt_at(1, &g, 6, 3), (NO_RECEIPT, 0, 0));
        let big = group(201, 100);
        assert!((1..=100).all(|seq| receipt_at(1, &big, seq, 2) == (NO_RECEIPT, 0, 0)));
        let limit = group(200, 100);
        assert!((1..=100).any(|seq| receipt_at(1, &limit, seq, 2).0 == 0));
    }

    #[test]
    fn seed_and_group_matter() {
        let a = group(100, 200);
        let mut b = a.clone();
        b.group_id = "@TGS#other".into();
        let answers = |seed, g: &SimGroup| -> Vec<_> {
            (1..=200).map(|seq| receipt_at(seed, g, seq, 0)).collect()
        };
        assert_ne!(answers(1, &a), answers(2, &a));
        assert_ne!(answers(1, &a), answers(1, &b));
    }
}
