//! Probes ahead: the work list reordered so that each group's first batch (its probe, which the
//! group's other batches wait for: [`super::pipeline`]'s gates) goes out well before the rest
//! of the group.
//!
//! The plan lists batches group by group. With the probe first and the other batches right
//! behind it, those batches sit in the pipeline's in-flight slots waiting for the probe's
//! answer (a round trip), while the pacer may have nothing else ready: slots of the API's
//! budget go unused at every group's start. Here each group's probe is emitted as soon as the
//! group is read, and the group's other batches are held back until later groups' probes went
//! out, up to [`HELD`] batches held: by then their probe has usually answered. Within a group
//! the order stays the plan's, and the probe is still the group's first batch.

use std::collections::VecDeque;

/// Batches held back at most (a few hundred bytes each): about 2.5 s of calls at 200/s, many
/// probes' round trips.
pub const HELD: usize = 512;

/// `work` (group by group, `group` naming an item's group) with each group's first batch moved
/// ahead of earlier groups' later batches, holding at most `held` batches back. Reorder where
/// the work list is drawn from, not after a budget counted it: a held batch is not yet taken.
pub fn probes_ahead<T, K, I, F>(work: I, held: usize, group: F) -> impl Iterator<Item = T>
where
    I: Iterator<Item = T>,
    K: PartialEq,
    F: Fn(&T) -> K,
{
    let mut work = work;
    let mut queue: VecDeque<T> = VecDeque::new();
    // The group of the last batch read: a batch of another group starts a group.
    let mut current: Option<K> = None;
    std::iter::from_fn(move || loop {
        if queue.len() > held {
            return queue.pop_front();
        }
        let Some(item) = work.next() else {
            return queue.pop_front();
        };
        let key = group(&item);
        if current.as_ref() == Some(&key) {
            queue.push_back(item);
            continue;
        }
        // A group the plan lists again while its earlier batches are held waits behind them.
        let listed_again = queue.iter().any(|held| group(held) == key);
        current = Some(key);
        if listed_again {
            queue.push_back(item);
            continue;
        }
        return Some(item);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn work(groups: &[(&str, usize)]) -> Vec<(String, Vec<u64>)> {
        groups
            .iter()
            .flat_map(|&(g, n)| (0..n as u64).map(move |i| (g.to_string(), vec![i])))
            .collect()
    }

    fn by_group(item: &(String, Vec<u64>)) -> String {
        item.0.clone()
    }

    fn names(out: &[(String, Vec<u64>)]) -> Vec<String> {
        out.iter().map(|(g, s)| format!("{g}{}", s[0])).collect()
    }

    #[test]
    fn each_groups_probe_goes_before_earlier_groups_later_batches() {
        let out: Vec<_> = probes_ahead(
            work(&[("a", 3), ("b", 2), ("c", 1)]).into_iter(),
            4,
            by_group,
        )
        .collect();
        assert_eq!(names(&out), ["a0", "b0", "c0", "a1", "a2", "b1"]);
    }

    #[test]
    fn at_most_held_batches_wait_and_nothing_is_lost_or_doubled() {
        let input = work(&[("a", 5), ("b", 5), ("c", 5), ("d", 1)]);
        let out: Vec<_> = probes_ahead(input.clone().into_iter(), 3, by_group).collect();
        assert_eq!(
            names(&out),
            [
                "a0", "a1", "b0", "a2", "a3", "a4", "b1", "c0", "b2", "b3", "b4", "c1", "d0", "c2",
                "c3", "c4"
            ]
        );
        let mut sorted = out.clone();
        sorted.sort();
        let mut want = input;
        want.sort();
        assert_eq!(sorted, want);
    }

    #[test]
    fn a_group_listed_twice_keeps_its_order() {
        let mut input = work(&[("a", 2), ("b", 1)]);
        input.push(("a".to_string(), vec![9]));
        let out: Vec<_> = probes_ahead(input.into_iter(), 8, by_group).collect();
        assert_eq!(names(&out), ["a0", "b0", "a1", "a9"]);
    }
}
