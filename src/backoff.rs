//! Restart backoff for a runner's listener: 1 s doubling to 5 min, reset after 10 min of
//! healthy running. Pure: the caller passes the clock.

use std::time::{Duration, Instant};

const FIRST: Duration = Duration::from_secs(1);
const MAX: Duration = Duration::from_secs(300);
const HEALTHY: Duration = Duration::from_secs(600);
/// Consecutive failures from which status calls it a crash loop.
pub const CRASHLOOP_AFTER: u32 = 5;

/// One runner's restart backoff.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backoff {
    failures: u32,
    started: Option<Instant>,
    not_before: Option<Instant>,
}

impl Backoff {
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
        let delay = FIRST.saturating_mul(1 << self.failures.min(16)).min(MAX);
        self.failures = self.failures.saturating_add(1);
        self.started = None;
        self.not_before = Some(now + delay);
        delay
    }

    /// Clears the failures (a deliberate stop or a fresh registration).
    pub fn reset(&mut self) {
        *self = Backoff::default();
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
}
