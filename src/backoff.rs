//! Restart backoff: 1 s doubling to a cap. A listener's crash loop (capped at 5 min) resets
//! after 10 min of healthy running; corral's own failing steps (capped at 1 min, see
//! [`Backoff::for_steps`]) reset as soon as a step succeeds again, so a cause that is gone
//! (a descriptor flood, a full disk, GitHub unreachable) leaves no wait behind.
//! Pure: the caller passes the clock.

use std::time::{Duration, Instant};

const FIRST: Duration = Duration::from_secs(1);
const MAX: Duration = Duration::from_secs(300);
const STEP_MAX: Duration = Duration::from_secs(60);
const HEALTHY: Duration = Duration::from_secs(600);
/// Consecutive failures from which status calls it a crash loop.
pub const CRASHLOOP_AFTER: u32 = 5;

/// One runner's restart backoff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    failures: u32,
    started: Option<Instant>,
    not_before: Option<Instant>,
    max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            failures: 0,
            started: None,
            not_before: None,
            max: MAX,
        }
    }
}

impl Backoff {
    /// The backoff of corral's own steps for one runner (provisioning, registration, spawning):
    /// a shorter cap, since the cause is usually the host's and passes.
    pub fn for_steps() -> Self {
        Backoff {
            max: STEP_MAX,
            ..Backoff::default()
        }
    }

    /// The listener was started at `now`.
    pub fn started(&mut self, now: Instant) {
        self.started = Some(now);
        self.not_before = None;
    }

    /// The listener ended unexpectedly at `now`; returns how long to wait before a restart.
    pub fn failed(&mut self, now: Instant) -> Duration {
        let ran = self
            .started
            .map_or(Duration::ZERO, |s| now.saturating_duration_since(s));
        if ran >= HEALTHY {
            self.failures = 0;
        }
        let delay = FIRST
            .saturating_mul(1 << self.failures.min(16))
            .min(self.max);
        self.failures = self.failures.saturating_add(1);
        self.started = None;
        self.not_before = Some(now + delay);
        delay
    }

    /// Holds until exactly `at` (a rate limit's reset): no failure is counted, so the wait
    /// does not double and the next transient failure still starts at 1 s.
    pub fn hold_until(&mut self, at: Instant) {
        self.not_before = Some(at);
    }

    /// A failure that retrying will not fix: held for the cap, after which one try is made
    /// (the cause may have been fixed outside corral's view, such as a secret file).
    pub fn give_up(&mut self, now: Instant) -> Duration {
        self.not_before = Some(now + self.max);
        self.max
    }

    /// Clears the failures (a deliberate stop, a fresh registration, a step that succeeded,
    /// an entry the user changed).
    pub fn reset(&mut self) {
        *self = Backoff {
            max: self.max,
            ..Backoff::default()
        };
    }

    /// How long until a restart is allowed; zero when it is.
    pub fn wait(&self, now: Instant) -> Duration {
        self.not_before
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(now))
    }

    /// Consecutive failures.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// In a crash loop.
    pub fn crashloop(&self) -> bool {
        self.failures >= CRASHLOOP_AFTER
    }
}

/// The backoff of corral's own steps for one runner: a [`Backoff`] made by
/// [`Backoff::for_steps`], so that a runner's memory can derive `Default`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepBackoff(pub Backoff);

impl Default for StepBackoff {
    fn default() -> Self {
        StepBackoff(Backoff::for_steps())
    }
}

impl std::ops::Deref for StepBackoff {
    type Target = Backoff;
    fn deref(&self) -> &Backoff {
        &self.0
    }
}

impl std::ops::DerefMut for StepBackoff {
    fn deref_mut(&mut self) -> &mut Backoff {
        &mut self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_caps_and_resets_after_healthy_running() {
        let t0 = Instant::now();
        let mut b = Backoff::default();
        b.started(t0);
        let delays: Vec<u64> = (0..12).map(|_| b.failed(t0).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert!(b.crashloop());
        assert_eq!(b.wait(t0).as_secs(), 300);
        assert_eq!(b.wait(t0 + Duration::from_secs(301)), Duration::ZERO);
        b.started(t0);
        assert_eq!(
            b.failed(t0 + HEALTHY).as_secs(),
            1,
            "reset after 10 min healthy"
        );
    }

    #[test]
    fn step_backoff_caps_at_a_minute_and_reset_keeps_the_cap() {
        let t0 = Instant::now();
        let mut b = Backoff::for_steps();
        let delays: Vec<u64> = (0..9).map(|_| b.failed(t0).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        b.reset();
        assert_eq!(b.wait(t0), Duration::ZERO);
        assert_eq!(b.failures(), 0);
        let delays: Vec<u64> = (0..8).map(|_| b.failed(t0).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60]);
    }

    #[test]
    fn a_hold_until_a_reset_is_exact_and_counts_no_failure() {
        let t0 = Instant::now();
        let mut b = Backoff::for_steps();
        b.failed(t0);
        let reset = t0 + Duration::from_secs(600);
        b.hold_until(reset);
        assert_eq!(b.wait(t0), Duration::from_secs(600));
        assert_eq!(b.wait(reset), Duration::ZERO);
        assert_eq!(b.failures(), 1, "the hold is not a failure");
        assert_eq!(b.failed(reset).as_secs(), 2);
    }

    #[test]
    fn giving_up_holds_for_the_cap() {
        let t0 = Instant::now();
        let mut b = Backoff::for_steps();
        assert_eq!(b.give_up(t0), STEP_MAX);
        assert_eq!(b.wait(t0 + Duration::from_secs(59)), Duration::from_secs(1));
        assert_eq!(b.wait(t0 + STEP_MAX), Duration::ZERO);
    }
}
