//! The runtime bookkeeping of failed steps on tokio's paused clock: a rate limit holds a
//! runner until GitHub's reset, a transient failure backs off doubling, a permanent one
//! shows in status until an edit.

use std::time::{Duration, Instant, SystemTime};

use super::status::runner_status;
use super::*;
use crate::config::Desired;
use crate::status::State;

/// A step that failed for a cause that passes (too many open files).
fn transient() -> StepError {
    StepError::io("start the listener")(std::io::Error::from_raw_os_error(24))
}

const ONE: &str = "base: { path: /opt/base }\nstate_dir: /tmp/s\ngithub: { url: https://github.com, token_env: T }\nrunners:\n  - name: a\n    repo: o/r\n";

fn one() -> Desired {
    crate::config::parse(ONE, std::path::Path::new("/etc/runners.yaml")).expect("config")
}

/// The monotonic and the wall clock, both following tokio's paused clock.
struct Clocks {
    start: tokio::time::Instant,
    wall: SystemTime,
}

impl Clocks {
    fn new() -> Self {
        Clocks {
            start: tokio::time::Instant::now(),
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        }
    }

    fn now(&self) -> (Instant, SystemTime) {
        let now = tokio::time::Instant::now();
        (now.into_std(), self.wall + (now - self.start))
    }
}

fn github(source: crate::github::GitHubError) -> StepError {
    StepError::GitHub {
        during: "registration token",
        source,
    }
}

#[tokio::test(start_paused = true)]
async fn a_rate_limited_step_is_held_until_the_reset_and_tried_at_it() {
    let clocks = Clocks::new();
    let desired = one();
    let mut rt = Runtime::default();
    let (now, wall) = clocks.now();
    let reset = wall + Duration::from_secs(600);
    let limited = github(crate::github::GitHubError::RateLimited {
        until: reset,
        secondary: false,
    });
    let wait = rt.step_result(Some(&limited), now, wall);
    assert_eq!(wait, Some(Duration::from_secs(600)), "exactly to the reset");
    let status = runner_status("a", &desired, None, &rt, None, now);
    assert_eq!(status.last_error_kind, Some(ErrorKind::RateLimited));
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("primary rate limit")),
        "{status:?}"
    );
    assert!(status.retry_at.is_some(), "{status:?}");
    assert_eq!(status.state, State::Backoff);
    tokio::time::advance(Duration::from_secs(599)).await;
    let (now, _) = clocks.now();
    assert_eq!(rt.hold(now), Duration::from_secs(1), "still held");
    tokio::time::advance(Duration::from_secs(1)).await;
    let (now, wall) = clocks.now();
    assert_eq!(rt.hold(now), Duration::ZERO, "free at the reset");
    // Limited again at the retry: held to the new reset, never a doubled wait.
    let again = github(crate::github::GitHubError::RateLimited {
        until: wall + Duration::from_secs(30),
        secondary: true,
    });
    assert_eq!(
        rt.step_result(Some(&again), now, wall),
        Some(Duration::from_secs(30))
    );
    tokio::time::advance(Duration::from_secs(30)).await;
    let (now, wall) = clocks.now();
    assert_eq!(rt.step_result(None, now, wall), None);
    assert_eq!(rt.hold(now), Duration::ZERO);
    // The rate limit counted no failure: a transient one now starts at a second.
    assert_eq!(
        rt.step_result(Some(&transient()), now, wall),
        Some(Duration::from_secs(1))
    );
}

#[tokio::test(start_paused = true)]
async fn a_transient_step_backs_off_doubling() {
    let clocks = Clocks::new();
    let mut rt = Runtime::default();
    let five_hundred = github(crate::github::GitHubError::Status {
        endpoint: "POST /x".into(),
        status: 502,
        message: "bad gateway".into(),
    });
    let mut waits = Vec::new();
    for _ in 0..5 {
        let (now, wall) = clocks.now();
        assert_eq!(rt.hold(now), Duration::ZERO, "tried once the wait is over");
        let wait = rt
            .step_result(Some(&five_hundred), now, wall)
            .expect("a wait");
        waits.push(wait.as_secs());
        assert_eq!(rt.last_error_kind, Some(ErrorKind::Transient));
        tokio::time::advance(wait.saturating_sub(Duration::from_millis(1))).await;
        let (now, _) = clocks.now();
        assert!(!rt.hold(now).is_zero(), "held until the wait is over");
        tokio::time::advance(Duration::from_millis(1)).await;
    }
    assert_eq!(waits, [1, 2, 4, 8, 16]);
}

#[tokio::test(start_paused = true)]
async fn a_permanent_error_shows_in_status_and_is_retried_after_an_edit() {
    let clocks = Clocks::new();
    let desired = one();
    let mut spec = desired.runners["a"].clone();
    let mut rt = Runtime::default();
    rt.applying(Some(&spec));
    let (now, wall) = clocks.now();
    let unauthorized = github(crate::github::GitHubError::Status {
        endpoint: "POST /repos/o/r/actions/runners/registration-token".into(),
        status: 401,
        message: "Bad credentials".into(),
    });
    let wait = rt.step_result(Some(&unauthorized), now, wall);
    assert_eq!(
        wait,
        Some(Duration::from_secs(60)),
        "tried again at the cap"
    );
    let status = runner_status("a", &desired, None, &rt, None, now);
    assert_eq!(status.state, State::Error);
    assert_eq!(status.last_error_kind, Some(ErrorKind::Permanent));
    assert_eq!(
        status.last_error.as_deref(),
        Some("registration token: POST /repos/o/r/actions/runners/registration-token: HTTP 401: Bad credentials")
    );
    tokio::time::advance(Duration::from_secs(5)).await;
    let (now, _) = clocks.now();
    assert_eq!(rt.hold(now), Duration::from_secs(55));
    rt.applying(Some(&spec));
    assert!(!rt.hold(now).is_zero(), "no edit: still held");
    spec.labels.push("fixed".into());
    rt.applying(Some(&spec));
    assert_eq!(rt.hold(now), Duration::ZERO, "an edit: tried at once");
}
