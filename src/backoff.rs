//! Capped exponential backoff: how long to wait before retrying, for every retry loop of the
//! house (the Chat API's calls, Postgres writes, the lock's session). Pure: the caller passes
//! the random draw.
//!
//! The ceiling doubles from `base` with each retry, up to `cap`. Two ways to draw under it:
//! **full jitter** (AWS architecture blog, "Exponential Backoff And Jitter"), uniform in
//! `0..=ceiling`, spreads the retries of many concurrent callers over the whole window, so a
//! burst of failures does not come back as a burst (the API's calls); **equal jitter**, in the
//! upper half, keeps a floor under each pause so a writer that lost its server does not hammer
//! it at once, while writers that lost the same server still do not return in step (Postgres).

use rand::Rng;
use std::time::Duration;

/// The ceiling before retry number `retry` (0 for the first retry): `min(cap, base * 2^retry)`.
pub fn ceiling(retry: u32, base: Duration, cap: Duration) -> Duration {
    base.saturating_mul(2u32.saturating_pow(retry.min(31)))
        .min(cap)
}

/// Full jitter: uniform in `0..=ceiling(retry, base, cap)`.
pub fn full_jitter(retry: u32, base: Duration, cap: Duration, rng: &mut impl Rng) -> Duration {
    let nanos = u64::try_from(ceiling(retry, base, cap).as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rng.random_range(0..=nanos))
}

/// Equal jitter: the upper half of the ceiling, `jitter` in [0, 1] picking the point in it.
pub fn equal_jitter(retry: u32, base: Duration, cap: Duration, jitter: f64) -> Duration {
    let half = u64::try_from(ceiling(retry, base, cap).as_nanos() / 2).unwrap_or(u64::MAX / 2);
    let extra = (half as f64 * jitter.clamp(0.0, 1.0)) as u64;
    Duration::from_nanos(half.saturating_add(extra))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn delays_stay_under_the_growing_ceiling_and_the_cap() {
        let mut rng = StdRng::seed_from_u64(7);
        let (base, cap) = (Duration::from_millis(100), Duration::from_secs(5));
        for retry in 0..40 {
            let ceiling = (base * 2u32.pow(retry.min(20))).min(cap);
            for _ in 0..200 {
                assert!(
                    full_jitter(retry, base, cap, &mut rng) <= ceiling,
                    "retry {retry}"
                );
            }
        }
    }

    #[test]
    fn delays_are_jittered_over_the_whole_window() {
        let mut rng = StdRng::seed_from_u64(42);
        let (base, cap) = (Duration::from_millis(100), Duration::from_secs(5));
        let draws: Vec<Duration> = (0..1000)
            .map(|_| full_jitter(10, base, cap, &mut rng))
            .collect();
        let min = draws.iter().min().unwrap();
        let max = draws.iter().max().unwrap();
        assert!(
            *min < Duration::from_millis(500),
            "full jitter reaches near zero: {min:?}"
        );
        assert!(
            *max > Duration::from_millis(4500),
            "and near the cap: {max:?}"
        );
        let mean = draws.iter().sum::<Duration>() / 1000;
        assert!(
            mean > Duration::from_millis(2200) && mean < Duration::from_millis(2800),
            "{mean:?}"
        );
    }

    #[test]
    fn huge_retry_numbers_do_not_overflow() {
        let mut rng = StdRng::seed_from_u64(1);
        let (base, cap) = (Duration::from_secs(1), Duration::from_secs(30));
        assert!(full_jitter(u32::MAX, base, cap, &mut rng) <= cap);
        assert_eq!(equal_jitter(u32::MAX, base, cap, 1.0), cap);
    }

    #[test]
    fn equal_jitter_stays_in_the_upper_half_of_the_ceiling() {
        let (base, cap) = (Duration::from_millis(200), Duration::from_secs(10));
        assert_eq!(equal_jitter(0, base, cap, 0.0), Duration::from_millis(100));
        assert_eq!(equal_jitter(0, base, cap, 1.0), Duration::from_millis(200));
        assert_eq!(equal_jitter(2, base, cap, 0.0), Duration::from_millis(400));
        assert_eq!(equal_jitter(29, base, cap, 0.0), Duration::from_secs(5));
        assert!(equal_jitter(29, base, cap, 0.999) <= cap);
    }
}
