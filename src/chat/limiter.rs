//! The one process-wide pace of calls to the Chat API, and the controller that sets it.
//!
//! Pacing: a next-free-slot limiter (GCRA with a burst of one): each attempt, retries included,
//! takes the next slot, and slots are `1 / pace` apart, so calls are spread evenly. Spacing alone
//! is not enough: a task that wakes late (a busy machine) sends late, right before the next
//! slot's owner, so the limiter also keeps the instants it let calls out at and never lets more
//! than the pace (rounded up, and never more than the ceiling) out in any sliding second.
//!
//! The controller treats the server's answers as the measurement. The server counts a call
//! when it arrives, and network jitter bunches evenly spaced sends, so near the ceiling an
//! occasional rate-limit answer is the price of being there, not an alarm: the pace climbs
//! additively, by exactly what makes [`TARGET_SHARE`] of the answers rate-limited at
//! equilibrium, and each rate-limit answer cuts it by a small step, larger when answers come
//! densely (another client of the app took part of the budget: a quick, stable descent). After
//! a quiet [`QUIET`] well below its best pace (where the last answer met it at the level the
//! network allows), it probes back up with a growing step, so the pace returns within a few
//! seconds when that client leaves, and within a second after a hiccup of the machine. It starts at
//! the ceiling and never paces above it: the ceiling is this process's share of the app's budget
//! (`run::budget`), set with [`RateLimiter::set_rate`]. Built on `tokio::time`, so tests can
//! pause the clock. It does not classify answers: the client tells it.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// The share of answers that are rate-limited at equilibrium: low enough to cost nothing worth
/// counting, high enough that the pace finds the ceiling the network's jitter allows.
pub const TARGET_SHARE: f64 = 0.002;
/// The pace's cut per rate-limit answer, as a fraction of the pace, times how densely they
/// came: the number of [`BURST`]s with rate-limit answers in the last second (at most
/// [`DENSE`]).
const STEP: f64 = 0.003;
/// Answers within this of each other are one burst (one hiccup bunched some arrivals); a
/// budget taken by another client brings answers burst after burst.
const BURST: Duration = Duration::from_millis(50);
/// Densely arriving rate-limit answers cut up to this many steps each.
const DENSE: usize = 8;
/// Without a rate-limit answer for this long, a pace well below its best probes back up.
pub const QUIET: Duration = Duration::from_secs(1);
/// "Well below": under this fraction of the best pace.
const PROBE_BELOW: f64 = 0.99;
/// The probe's growth, per second, of the highest pace, per second of probing.
const PROBE_GROWTH: f64 = 0.4;
/// The pace never drops below this fraction of the ceiling.
const MIN_FACTOR: f64 = 0.1;
/// The window the server counts calls in.
const WINDOW: Duration = Duration::from_secs(1);

/// Process-wide rate limiter; share it (it lives inside the client's `Arc`).
#[derive(Debug)]
pub struct RateLimiter {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// This process's share of the app's budget, calls per second: the pace never exceeds it.
    ceiling: f64,
    /// The controller's pace, calls per second.
    pace: f64,
    /// The best pace (scaled with the ceiling): where the first rate-limit answer for a second
    /// met a pace not already well below it, or the highest pace since. A probe heads back here.
    top: f64,
    /// When `pace` was last brought up to date.
    updated: Instant,
    /// The last rate-limit answer.
    limited_at: Option<Instant>,
    /// The starts of the bursts of rate-limit answers of the last second, oldest first: how
    /// dense they come.
    recent: VecDeque<Instant>,
    /// The earliest instant the next call may go out.
    next_free: Instant,
    /// When the calls of the last second went out, oldest first (at most the window cap).
    sent: VecDeque<Instant>,
    /// The most calls let out in any sliding second so far: what the server could count at
    /// most without the network's jitter.
    busiest: usize,
}

impl State {
    /// Calls allowed in any sliding second. The spacing keeps the pace under it; this only
    /// catches callers that woke late and would bunch.
    fn window_cap(&self) -> usize {
        (self.pace.ceil().min(self.ceiling.floor()) as usize).max(1)
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
            self.busiest = self.busiest.max(self.sent.len());
            return None;
        }
        let oldest = *self.sent.front().expect("a full window is not empty");
        Some(oldest + WINDOW)
    }

    /// Brings the pace up to `now`: the additive climb, and the probe after a quiet spell.
    fn advance(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.updated).as_secs_f64();
        if dt <= 0.0 {
            return;
        }
        self.updated = now;
        // At equilibrium the climb equals the cuts: climb = share × pace × STEP × pace.
        let mut pace = self.pace + TARGET_SHARE * STEP * self.pace * self.pace * dt;
        let quiet = self.limited_at.map_or(f64::INFINITY, |at| {
            now.saturating_duration_since(at).as_secs_f64()
        });
        let probing = quiet - QUIET.as_secs_f64();
        if probing > 0.0 && self.pace < PROBE_BELOW * self.top {
            let probe = PROBE_GROWTH * self.top * probing.min(10.0) * dt;
            pace = pace.max((self.pace + probe).min(self.top));
        }
        self.pace = pace.min(self.ceiling);
        self.top = self.top.max(self.pace);
    }

    /// A rate-limit answer at `now`: cut the pace by a step per burst of the last second.
    fn limited(&mut self, now: Instant) {
        self.advance(now);
        while self
            .recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= WINDOW)
        {
            self.recent.pop_front();
        }
        if self.recent.is_empty() && self.pace >= PROBE_BELOW * self.top {
            // The first answer for a second, at about the best pace: the level the network
            // allows now. (Later answers are a descent, and a pace well below the best is one
            // or a probe: the best stays where to come back to.)
            self.top = self.pace;
        }
        if self
            .recent
            .back()
            .is_none_or(|t| now.saturating_duration_since(*t) >= BURST)
        {
            self.recent.push_back(now);
        }
        let steps = self.recent.len().min(DENSE) as f64;
        self.pace = (self.pace * (1.0 - STEP * steps)).max(self.ceiling * MIN_FACTOR);
        self.limited_at = Some(now);
    }
}

impl RateLimiter {
    /// A limiter whose ceiling is `rate` calls per second (must be positive and finite); it
    /// starts at the ceiling.
    pub fn new(rate: f64) -> Self {
        assert!(
            rate.is_finite() && rate > 0.0,
            "rate limit must be positive"
        );
        let now = Instant::now();
        let state = State {
            ceiling: rate,
            pace: rate,
            top: rate,
            updated: now,
            limited_at: None,
            recent: VecDeque::new(),
            next_free: now,
            sent: VecDeque::new(),
            busiest: 0,
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
            let now = Instant::now();
            st.advance(now);
            let slot = st.next_free.max(now);
            st.next_free = slot + Duration::from_secs_f64(1.0 / st.pace);
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

    /// A rate-limit answer came back: cut the pace a little (more when they come densely).
    pub fn penalize(&self) {
        self.state
            .lock()
            .expect("limiter lock")
            .limited(Instant::now());
    }

    /// No call at all for `pause` (70050: signature checks failing too often for the whole app).
    pub fn pause_for(&self, pause: Duration) {
        let until = Instant::now() + pause;
        let mut st = self.state.lock().expect("limiter lock");
        st.next_free = st.next_free.max(until);
    }

    /// Changes the ceiling (calls per second), e.g. when the budget is shared with another
    /// process: the pace and the highest pace move in proportion. Ignores values that are not
    /// positive and finite.
    pub fn set_rate(&self, rate: f64) {
        if !(rate.is_finite() && rate > 0.0) {
            return;
        }
        let mut st = self.state.lock().expect("limiter lock");
        st.advance(Instant::now());
        let scale = rate / st.ceiling;
        st.ceiling = rate;
        st.pace = (st.pace * scale).min(rate);
        st.top = (st.top * scale).min(rate);
    }

    /// The most calls let out in any sliding second since the limiter was made.
    pub fn busiest_second(&self) -> usize {
        self.state.lock().expect("limiter lock").busiest
    }

    /// The ceiling, calls per second.
    pub fn rate(&self) -> f64 {
        self.state.lock().expect("limiter lock").ceiling
    }

    /// The pace in effect now (calls per second), at most the ceiling.
    pub fn pace(&self) -> f64 {
        let mut st = self.state.lock().expect("limiter lock");
        st.advance(Instant::now());
        st.pace
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use std::collections::BinaryHeap;
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

    /// Acquires as fast as the limiter allows until `end`; returns the send instants.
    async fn send_until(limiter: &RateLimiter, end: Instant) -> Vec<Instant> {
        let mut times = Vec::new();
        while Instant::now() < end {
            limiter.acquire().await;
            times.push(Instant::now());
        }
        times
    }

    /// A server in the small, for the controller's tests: it counts a call when it arrives,
    /// a jittered one-way trip after the send, refuses it when its sliding second already holds
    /// `limit` accepted calls (another client's evenly spaced calls included), and answers a
    /// jittered trip later. The limiter hears of every rate-limit answer when it comes back.
    struct Server {
        limit: usize,
        /// The other client's calls/s as a function of seconds since the start.
        other: fn(f64) -> f64,
        start: Instant,
        other_next: f64,
        accepted: VecDeque<Instant>,
        /// Arrivals and answers not yet due, earliest first: (instant, is an answer, refused).
        due: BinaryHeap<std::cmp::Reverse<(Instant, bool, bool)>>,
        rng: rand::rngs::StdRng,
        refused: usize,
        calls: usize,
    }

    impl Server {
        fn new(limit: usize, other: fn(f64) -> f64) -> Server {
            Server {
                limit,
                other,
                start: Instant::now(),
                other_next: 0.0,
                accepted: VecDeque::new(),
                due: BinaryHeap::new(),
                rng: rand::rngs::StdRng::seed_from_u64(7),
                refused: 0,
                calls: 0,
            }
        }

        /// One way: 25 ms ± 10 ms (a round trip of 50 ± 20 ms).
        fn trip(&mut self) -> Duration {
            Duration::from_micros(self.rng.random_range(15_000..=35_000))
        }

        fn send(&mut self, now: Instant) {
            self.calls += 1;
            let at = now + self.trip();
            self.due.push(std::cmp::Reverse((at, false, false)));
        }

        fn admit(&mut self, at: Instant) -> bool {
            while self.accepted.front().is_some_and(|t| at - *t >= WINDOW) {
                self.accepted.pop_front();
            }
            let ok = self.accepted.len() < self.limit;
            if ok {
                self.accepted.push_back(at);
            }
            ok
        }

        /// Everything due by `now`, in order; rate-limit answers go to the limiter.
        fn run_until(&mut self, now: Instant, limiter: &RateLimiter) {
            while let Some(&std::cmp::Reverse((at, answer, refused))) = self.due.peek() {
                if at > now {
                    return;
                }
                self.due.pop();
                if answer {
                    if refused {
                        limiter.state.lock().unwrap().limited(at);
                    }
                    continue;
                }
                loop {
                    let t = self.start + Duration::from_secs_f64(self.other_next);
                    let rate = (self.other)(self.other_next);
                    if t > at {
                        break;
                    }
                    if rate > 0.0 {
                        self.admit(t);
                    }
                    self.other_next += if rate > 0.0 { 1.0 / rate } else { 0.01 };
                }
                let ok = self.admit(at);
                self.refused += usize::from(!ok);
                let back = at + self.trip();
                self.due.push(std::cmp::Reverse((back, true, !ok)));
            }
        }

        /// Sends as the limiter allows for `secs`; returns the pace after each second.
        async fn drive(&mut self, limiter: &RateLimiter, secs: u64) -> Vec<f64> {
            let mut paces = Vec::new();
            for _ in 0..secs {
                let end = Instant::now() + Duration::from_secs(1);
                while Instant::now() < end {
                    limiter.acquire().await;
                    let now = Instant::now();
                    self.run_until(now, limiter);
                    self.send(now);
                }
                paces.push(limiter.pace());
            }
            paces
        }
    }

    #[tokio::test(start_paused = true)]
    async fn starts_at_the_ceiling_and_spaces_calls_evenly() {
        let limiter = RateLimiter::new(200.0);
        let start = Instant::now();
        let mut times = Vec::new();
        for _ in 0..600 {
            limiter.acquire().await;
            times.push(Instant::now());
        }
        let elapsed = (Instant::now() - start).as_secs_f64();
        let expected = 599.0 / 200.0;
        assert!(
            (elapsed - expected).abs() < 0.01,
            "elapsed {elapsed}, expected {expected}"
        );
        assert_eq!(
            max_per_second(&times),
            200,
            "at the ceiling from the first second"
        );
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
        let limiter = Arc::new(RateLimiter::new(50.0));
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
        assert!(
            max_per_second(&times) <= 50,
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
    async fn one_isolated_rate_limit_answer_costs_at_most_five_calls() {
        let limiter = RateLimiter::new(200.0);
        send_until(&limiter, Instant::now() + Duration::from_secs(3)).await;
        let start = Instant::now();
        let undisturbed = send_until(&limiter, start + Duration::from_secs(10)).await;
        limiter.penalize();
        let start = Instant::now();
        let after = send_until(&limiter, start + Duration::from_secs(10)).await;
        let cost = undisturbed.len() as i64 - after.len() as i64;
        assert!(
            (0..=5).contains(&cost),
            "{} vs {}",
            after.len(),
            undisturbed.len()
        );
        assert_eq!(undisturbed.len(), 2000);
    }

    #[tokio::test(start_paused = true)]
    async fn answers_are_cheap_dense_ones_cut_deeper() {
        let limiter = RateLimiter::new(100.0);
        limiter.penalize();
        let one = limiter.pace();
        assert!((one - 100.0 * (1.0 - STEP)).abs() < 1e-6, "{one}");
        // A burst (arrivals bunched once): a step each.
        for _ in 0..4 {
            limiter.penalize();
        }
        let burst = limiter.pace();
        assert!(
            (burst - 100.0 * (1.0 - STEP).powi(5)).abs() < 1e-6,
            "{burst}"
        );
        // Burst after burst (the budget was cut): up to DENSE steps each.
        for _ in 0..20 {
            tokio::time::advance(BURST + Duration::from_millis(10)).await;
            limiter.penalize();
        }
        let many = limiter.pace();
        assert!((100.0 * MIN_FACTOR..100.0 * 0.8).contains(&many), "{many}");
        // Nothing more comes: after a quiet spell the pace heads back to where it was.
        tokio::time::advance(QUIET + Duration::from_secs(3)).await;
        assert!(limiter.pace() >= 100.0 * PROBE_BELOW, "{}", limiter.pace());
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(limiter.pace(), 100.0, "never above the ceiling");
    }

    #[tokio::test(start_paused = true)]
    async fn a_sustained_budget_cut_is_tracked_within_two_seconds_and_left_as_quickly() {
        // Another client takes 60 of the 200 calls/s from 10 s to 30 s.
        let limiter = RateLimiter::new(200.0);
        let mut server = Server::new(200, |t| if (10.0..30.0).contains(&t) { 60.0 } else { 0.0 });
        let before = server.drive(&limiter, 10).await;
        let during = server.drive(&limiter, 20).await;
        let after = server.drive(&limiter, 10).await;
        assert!(before.iter().all(|&p| p >= 190.0), "{before:?}");
        // From 2 s into the cut, the pace stays near what is left (140 calls/s).
        for &p in &during[2..] {
            assert!((130.0..=147.0).contains(&p), "{during:?}");
        }
        // Back at full pace within 3 s of the other client leaving.
        assert!(after[2..].iter().all(|&p| p >= 190.0), "{after:?}");
        let share = server.refused as f64 / server.calls as f64;
        assert!(
            share < 0.02,
            "{} of {} refused",
            server.refused,
            server.calls
        );
    }

    #[tokio::test(start_paused = true)]
    async fn steady_state_stays_within_two_percent() {
        // Jittered arrivals make an occasional rate-limit answer unavoidable near the ceiling.
        let limiter = RateLimiter::new(200.0);
        let mut server = Server::new(200, |_| 0.0);
        server.drive(&limiter, 10).await;
        let (calls, refused) = (server.calls, server.refused);
        let paces = server.drive(&limiter, 30).await;
        let mean = paces.iter().sum::<f64>() / paces.len() as f64;
        for &p in &paces {
            assert!((p - mean).abs() <= 0.02 * mean, "{p} vs {mean}: {paces:?}");
        }
        assert!(mean >= 190.0, "{mean}");
        let refused = (server.refused - refused) as f64 / (server.calls - calls) as f64;
        assert!(refused > 0.0 && refused < 0.005, "{refused}");
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
        assert_eq!(limiter.pace(), 10.0);
        let start = Instant::now();
        let times = send_until(&limiter, start + Duration::from_secs(5)).await;
        assert!(max_per_second(&times) <= 10, "{}", max_per_second(&times));
        // A cut pace keeps its place relative to a new ceiling.
        limiter.penalize();
        limiter.set_rate(20.0);
        assert!(
            (limiter.pace() - 20.0 * (1.0 - STEP)).abs() < 0.01,
            "{}",
            limiter.pace()
        );
    }
}
