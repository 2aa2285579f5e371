//! The one process-wide pace of calls to the Chat API.
//!
//! A next-free-slot limiter (GCRA with a burst of one): each attempt, retries included, takes
//! the next slot, and slots are `1 / pace` apart. Calls are therefore spread evenly and no
//! sliding one-second window ever holds more than the limit, which a token bucket with a
//! full bucket would break. The pace stays a little under the limit because network jitter
//! bunches our evenly spaced sends on the server's side. Spacing alone is not enough: a task
//! that wakes late (a busy machine) sends late, right before the next slot's owner, so the
//! limiter also keeps the instants it let calls out at and never lets more than the paced
//! limit out in any sliding second, whatever the scheduler did. Built on `tokio::time`, so tests
//! can pause the clock. It does not decide *when* to slow down: the client tells it.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Fraction of the configured limit actually used.
const SAFETY: f64 = 0.98;
/// Pace multiplier applied on each rate-limit answer.
const PENALTY_STEP: f64 = 0.8;
/// The pace never drops below this fraction of the limit.
const MIN_FACTOR: f64 = 0.1;
/// How long a penalty holds at full strength.
const HOLD: Duration = Duration::from_secs(5);
/// After the hold, the pace climbs back linearly to the limit over this time.
const RECOVERY: Duration = Duration::from_secs(20);
/// The window the server counts calls in.
const WINDOW: Duration = Duration::from_secs(1);
/// Many in-flight calls get the same rate-limit answer at once: count them as one event.
const DEBOUNCE: Duration = Duration::from_secs(1);

/// Process-wide rate limiter; share it (it lives inside the client's `Arc`).
#[derive(Debug)]
pub struct RateLimiter {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// The configured limit, calls per second.
    rate: f64,
    /// The earliest instant the next call may go out.
    next_free: Instant,
    /// Pace factor right after the last penalty.
    penalty: f64,
    penalized_at: Option<Instant>,
    /// When the calls of the last second went out, oldest first (at most the per-second cap).
    sent: VecDeque<Instant>,
}

impl State {
    /// Calls allowed in any sliding second: the limit itself. The spacing keeps the pace
    /// under it; this only catches callers that woke late and would bunch.
    fn window_cap(&self) -> usize {
        (self.rate.floor() as usize).max(1)
    }

    /// Lets a call out now if the last second holds room for it; otherwise says when it will.
    fn admit(&mut self, now: Instant) -> Option<Instant> {
        while self
            .sent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= WINDOW)
        {
            self.sent.pop_front();
        }
        if self.sent.len() < self.window_cap() {
            self.sent.push_back(now);
            return None;
        }
        let oldest = *self.sent.front().expect("a full window is not empty");
        Some(oldest + WINDOW)
    }

    fn factor(&self, now: Instant) -> f64 {
        let Some(at) = self.penalized_at else {
            return 1.0;
        };
        let since = now.saturating_duration_since(at);
        if since <= HOLD {
            return self.penalty;
        }
        let progress = (since - HOLD).as_secs_f64() / RECOVERY.as_secs_f64();
        (self.penalty + (1.0 - self.penalty) * progress).min(1.0)
    }
}

impl RateLimiter {
    /// A limiter at `rate` calls per second (must be positive and finite).
    pub fn new(rate: f64) -> Self {
        assert!(
            rate.is_finite() && rate > 0.0,
            "rate limit must be positive"
        );
        let state = State {
            rate,
            next_free: Instant::now(),
            penalty: 1.0,
            penalized_at: None,
            sent: VecDeque::new(),
        };
        Self {
            state: Mutex::new(state),
        }
    }

    /// Waits for this caller's slot, then for room in the last second. Every attempt must
    /// call this once before sending.
    pub async fn acquire(&self) {
        let slot = {
            let mut st = self.state.lock().expect("limiter lock");
            let slot = st.next_free.max(Instant::now());
            let pace = st.rate * SAFETY * st.factor(slot);
            st.next_free = slot + Duration::from_secs_f64(1.0 / pace);
            slot
        };
        tokio::time::sleep_until(slot).await;
        loop {
            let room_at = self
                .state
                .lock()
                .expect("limiter lock")
                .admit(Instant::now());
            match room_at {
                None => return,
                Some(at) => tokio::time::sleep_until(at).await,
            }
        }
    }

    /// A rate-limit answer came back: slow down to 80% of the current pace for a while.
    pub fn penalize(&self) {
        let now = Instant::now();
        let mut st = self.state.lock().expect("limiter lock");
        if st
            .penalized_at
            .is_some_and(|at| now.saturating_duration_since(at) < DEBOUNCE)
        {
            return;
        }
        st.penalty = (st.factor(now) * PENALTY_STEP).max(MIN_FACTOR);
        st.penalized_at = Some(now);
    }

    /// No call at all for `pause` (70050: signature checks failing too often for the whole app).
    pub fn pause_for(&self, pause: Duration) {
        let until = Instant::now() + pause;
        let mut st = self.state.lock().expect("limiter lock");
        st.next_free = st.next_free.max(until);
    }

    /// Changes the limit (calls per second), e.g. when the budget is shared with another process.
    /// Ignores values that are not positive and finite.
    pub fn set_rate(&self, rate: f64) {
        if rate.is_finite() && rate > 0.0 {
            self.state.lock().expect("limiter lock").rate = rate;
        }
    }

    /// The configured limit, calls per second.
    pub fn rate(&self) -> f64 {
        self.state.lock().expect("limiter lock").rate
    }

    /// The pace in effect now (calls per second): limit × safety margin × current penalty.
    pub fn pace(&self) -> f64 {
        let st = self.state.lock().expect("limiter lock");
        st.rate * SAFETY * st.factor(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// The most sends in any window `[t, t + 1s)`.
    fn max_per_second(times: &[Instant]) -> usize {
        let mut sorted = times.to_vec();
        sorted.sort();
        let mut best = 0;
        let mut lo = 0;
        for hi in 0..sorted.len() {
            while sorted[hi] - sorted[lo] >= Duration::from_secs(1) {
                lo += 1;
            }
            best = best.max(hi - lo + 1);
        }
        best
    }

    #[tokio::test(start_paused = true)]
    async fn calls_are_spaced_evenly_at_the_pace() {
        let limiter = RateLimiter::new(200.0);
        let start = Instant::now();
        let mut times = Vec::new();
        for _ in 0..600 {
            limiter.acquire().await;
            times.push(Instant::now());
        }
        let elapsed = (Instant::now() - start).as_secs_f64();
        let expected = 599.0 / (200.0 * SAFETY);
        assert!(
            (elapsed - expected).abs() < 0.01,
            "elapsed {elapsed}, expected {expected}"
        );
        assert!(max_per_second(&times) <= 200);
        assert!(max_per_second(&times) >= 190, "not much slower than needed");
        let gap = times[1] - times[0];
        assert!(
            gap >= Duration::from_secs_f64(1.0 / 200.0),
            "burst of one: no two calls together"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn late_senders_never_overfill_a_sliding_second() {
        // Every caller's slot passes while the "machine" is busy (the clock jumps ahead), so
        // they all wake at once: only the window check keeps them from going out together.
        let limiter = std::sync::Arc::new(RateLimiter::new(50.0));
        let mut tasks = Vec::new();
        for _ in 0..120 {
            let l = limiter.clone();
            tasks.push(tokio::spawn(async move {
                l.acquire().await;
                Instant::now()
            }));
        }
        tokio::time::advance(Duration::from_secs(3)).await;
        let mut times = Vec::new();
        for t in tasks {
            times.push(t.await.unwrap());
        }
        times.sort();
        assert!(
            max_per_second(&times) <= 49,
            "{} calls in one second",
            max_per_second(&times)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_one_budget() {
        let limiter = Arc::new(RateLimiter::new(200.0));
        let mut tasks = Vec::new();
        for _ in 0..40 {
            let limiter = limiter.clone();
            tasks.push(tokio::spawn(async move {
                let mut times = Vec::new();
                for _ in 0..20 {
                    limiter.acquire().await;
                    times.push(Instant::now());
                }
                times
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        assert_eq!(all.len(), 800);
        assert!(max_per_second(&all) <= 200, "{}", max_per_second(&all));
    }

    #[tokio::test(start_paused = true)]
    async fn penalty_slows_down_then_recovers() {
        let limiter = RateLimiter::new(100.0);
        limiter.penalize();
        limiter.penalize(); // same burst of answers: counted once
        assert!((limiter.pace() - 100.0 * SAFETY * 0.8).abs() < 1e-9);
        let start = Instant::now();
        for _ in 0..79 {
            limiter.acquire().await;
        }
        let elapsed = (Instant::now() - start).as_secs_f64();
        let expected = 78.0 / (100.0 * SAFETY * 0.8);
        assert!(
            (elapsed - expected).abs() < 0.01,
            "elapsed {elapsed}, expected {expected}"
        );

        tokio::time::advance(Duration::from_secs(2)).await;
        limiter.penalize(); // a second event compounds
        assert!((limiter.pace() - 100.0 * SAFETY * 0.64).abs() < 1e-9);

        tokio::time::advance(HOLD + RECOVERY / 2).await;
        let halfway = limiter.pace();
        assert!(
            halfway > 100.0 * SAFETY * 0.64 && halfway < 100.0 * SAFETY,
            "{halfway}"
        );
        tokio::time::advance(RECOVERY).await;
        assert!(
            (limiter.pace() - 100.0 * SAFETY).abs() < 1e-9,
            "fully recovered"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn pause_and_set_rate() {
        let limiter = RateLimiter::new(50.0);
        limiter.pause_for(Duration::from_secs(60));
        let start = Instant::now();
        limiter.acquire().await;
        assert!(Instant::now() - start >= Duration::from_secs(60));

        limiter.set_rate(10.0);
        limiter.set_rate(f64::NAN);
        limiter.set_rate(-1.0);
        assert_eq!(limiter.rate(), 10.0);
        let start = Instant::now();
        for _ in 0..11 {
            limiter.acquire().await;
        }
        let elapsed = (Instant::now() - start).as_secs_f64();
        assert!(elapsed >= 10.0 / (10.0 * SAFETY) - 0.2, "{elapsed}");
    }
}
