//! Capped exponential backoff with full jitter (AWS architecture blog, "Exponential Backoff And Jitter").
//!
//! Full jitter spreads the retries of many concurrent callers over the whole window, so a burst of
//! failures does not come back as a burst of retries. Pure: the caller passes the random source.

use rand::Rng;
use std::time::Duration;

/// The delay before retry number `retry` (0 for the first retry): uniform in
/// `0..=min(cap, base * 2^retry)`.
pub fn backoff_delay(retry: u32, base: Duration, cap: Duration, rng: &mut impl Rng) -> Duration {
    let ceiling = base
        .saturating_mul(2u32.saturating_pow(retry.min(31)))
        .min(cap);
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rng.random_range(0..=nanos))
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
                    backoff_delay(retry, base, cap, &mut rng) <= ceiling,
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
            .map(|_| backoff_delay(10, base, cap, &mut rng))
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
        let d = backoff_delay(
            u32::MAX,
            Duration::from_secs(1),
            Duration::from_secs(30),
            &mut rng,
        );
        assert!(d <= Duration::from_secs(30));
    }
}
