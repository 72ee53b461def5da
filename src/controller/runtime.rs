//! What corral remembers about each runner between passes (restarts, backoff, drain, what
//! the listener's log said), how an exit is judged, and the status built from it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use crate::backoff::{Backoff, StepBackoff};
use crate::config::RunnerSpec;
use crate::markers::{ListenerView, LogTail};
use crate::status::ErrorKind;
use crate::supervisor::{ListenerState, STOP_GRACE};

use super::step_error::{error_policy, Policy, StepError};

mod status;
pub use status::{build_status, phase_of};

/// One runner's memory.
#[derive(Debug, Default)]
pub struct Runtime {
    /// Restart backoff of the listener (its crash loop).
    pub backoff: Backoff,
    /// Backoff of corral's own steps for this runner (provision, register, spawn): it never
    /// makes a crash loop, and any step that succeeds again clears it.
    pub step_backoff: StepBackoff,
    /// Its steps asked to be tried again no sooner than this (a drain waiting on a job); a
    /// change in its job clears it.
    pub retry_at: Option<Instant>,
    /// The entry as last applied: a change clears both backoffs, since the cause may be gone.
    pub applied_spec: Option<RunnerSpec>,
    /// Restarts after unexpected exits.
    pub restarts: u32,
    /// The last exit code.
    pub last_exit: Option<i32>,
    /// What its log said.
    pub view: ListenerView,
    /// Where its log was read up to.
    pub tail: Option<LogTail>,
    /// When draining began (removed from the file while busy).
    pub drain_started: Option<Instant>,
    /// The last error, shown in status.
    pub last_error: Option<String>,
    /// What is done about it, when a step of corral's failed (`None` after a listener exit).
    pub last_error_kind: Option<ErrorKind>,
    /// The listeners whose exit is not judged yet, by pid: at most one `Running` (the one
    /// corral started or adopted last) and those corral is stopping (a restart has both).
    pub listeners: BTreeMap<i32, ListenerState>,
    /// The registration on GitHub cannot be managed (no API credential).
    pub local_only: bool,
    /// A JIT configuration generated and not yet given to a listener.
    pub pending_jit: Option<crate::secret::Secret>,
    /// Its last disk measurement.
    pub disk: Option<crate::provision::DiskUsage>,
    /// Its cgroup, limits, usage and the clean-up after its jobs.
    pub contain: ContainState,
}

/// What corral knows of a runner's cgroup and the clean-up after its jobs.
#[derive(Debug, Default)]
pub struct ContainState {
    /// Its cgroup's path, or `degraded (reason)`.
    pub cgroup: Option<String>,
    /// The listener `cgroup` was read for.
    pub described_pid: Option<i32>,
    /// What it used, as last measured.
    pub usage: Option<crate::cgroup::Usage>,
    /// Limits not in force, and why.
    pub not_applied: Vec<crate::cgroup::NotApplied>,
    /// The limits last set on the cgroup of listener `applied_pid`.
    pub applied: Option<crate::cgroup::Limits>,
    /// That listener.
    pub applied_pid: Option<i32>,
    /// A job ended (or may have, while corral was down): kill what it left.
    pub sweep_due: bool,
    /// A job ended: empty `_work` (`clean: workspace`).
    pub clean_due: bool,
    /// Processes its jobs left that corral killed.
    pub leftovers_killed: u64,
}

/// What the exit of a listener means (`reference/runner-contract.md` §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitMeaning {
    /// corral stopped it, or an ephemeral runner finished its job.
    Expected,
    /// The registration is gone on the server: forget the local identity and register again.
    RegistrationDeleted,
    /// A restart after a backoff.
    Failure,
}

/// A stopped listener whose exit was never reported this long after its stop (it was gone
/// before corral could wait for it) is no longer watched.
const STOP_FORGOTTEN_AFTER: Duration = STOP_GRACE.saturating_mul(2);

impl Runtime {
    /// Watches `pid`, the runner's listener from now on (just started, or adopted). Another
    /// `Running` one is no longer watched: only one listener is the runner's own.
    pub fn watch(&mut self, pid: i32) {
        self.listeners
            .retain(|_, state| matches!(state, ListenerState::Stopping { .. }));
        self.listeners.insert(pid, ListenerState::Running);
    }

    /// corral stopped `pid` at `since`: its exit, when reported, is expected.
    pub fn stopping(&mut self, pid: i32, since: Instant) {
        self.listeners
            .insert(pid, ListenerState::Stopping { since });
    }

    /// True while `pid`'s exit is watched for.
    pub fn watches(&self, pid: i32) -> bool {
        self.listeners.contains_key(&pid)
    }

    /// The listener watched as the runner's own, if any.
    pub fn running_listener(&self) -> Option<i32> {
        self.listeners
            .iter()
            .find(|(_, state)| **state == ListenerState::Running)
            .map(|(pid, _)| *pid)
    }

    /// Stops watching stopped listeners whose exit never came (see [`STOP_FORGOTTEN_AFTER`]).
    pub fn forget_old_stops(&mut self, now: Instant) {
        self.listeners.retain(|_, state| match state {
            ListenerState::Stopping { since } => {
                now.saturating_duration_since(*since) < STOP_FORGOTTEN_AFTER
            }
            _ => true,
        });
    }

    /// How long its steps are held back: the longer of the two backoffs.
    pub fn hold(&self, now: Instant) -> std::time::Duration {
        self.backoff.wait(now).max(self.step_backoff.wait(now))
    }

    /// Notes the entry about to be applied; a changed or removed entry clears both backoffs.
    pub fn applying(&mut self, spec: Option<&RunnerSpec>) {
        if self.applied_spec.as_ref() != spec {
            // An edit, or the entry's removal (its removal steps are not held back by the
            // failures of the steps it no longer needs).
            if self.applied_spec.is_some() {
                self.backoff.reset();
                self.step_backoff.reset();
                self.retry_at = None;
            }
            self.applied_spec = spec.cloned();
        }
    }

    /// Folds a step failure (`Some`) or a pass of steps that all succeeded (`None`) into the
    /// step backoff, as [`error_policy`] says; returns how long to wait before the next try.
    /// `now` and `wall` are the same moment on the monotonic and the wall clock (GitHub's
    /// reset is wall-clock time).
    pub fn step_result(
        &mut self,
        failure: Option<&StepError>,
        now: Instant,
        wall: SystemTime,
    ) -> Option<Duration> {
        if let Some(err) = failure {
            self.last_error = Some(err.chain());
            let (kind, wait) = match error_policy(err, wall) {
                Policy::RequeueAt(until) => {
                    let wait = until.duration_since(wall).unwrap_or_default();
                    self.step_backoff.hold_until(now + wait);
                    (ErrorKind::RateLimited, wait)
                }
                Policy::Backoff => (ErrorKind::Transient, self.step_backoff.failed(now)),
                Policy::Permanent => (ErrorKind::Permanent, self.step_backoff.give_up(now)),
            };
            self.last_error_kind = Some(kind);
            return Some(wait);
        }
        // Steps ran only if nothing held them: then their cause is gone.
        if self.step_backoff.wait(now).is_zero() {
            self.step_backoff.reset();
        }
        None
    }
    /// Judges the exit of `pid` with `code` (`None`: killed by a signal, or an adopted
    /// process whose code corral cannot know) and updates the backoff.
    pub fn exited(
        &mut self,
        pid: i32,
        code: Option<i32>,
        ephemeral: bool,
        now: Instant,
    ) -> ExitMeaning {
        let watched = self.listeners.remove(&pid);
        self.last_exit = code;
        if matches!(watched, Some(ListenerState::Stopping { .. })) {
            return ExitMeaning::Expected;
        }
        self.last_error_kind = None;
        if self.view.registration_deleted {
            self.last_error =
                Some("the registration was deleted on GitHub; registering again".into());
            self.backoff.failed(now);
            return ExitMeaning::RegistrationDeleted;
        }
        if code == Some(0) && ephemeral && self.view.last_job.is_some() {
            self.backoff.reset();
            return ExitMeaning::Expected;
        }
        self.restarts += 1;
        let delay = self.backoff.failed(now);
        self.last_error = Some(match code {
            Some(5) => {
                "session conflict: another listener is using this registration (exit 5)".into()
            }
            Some(7) => "the runner version is deprecated: upgrade the base (exit 7)".into(),
            Some(c) => self.view.last_error.clone().map_or_else(
                || format!("the listener exited with {c}"),
                |e| format!("the listener exited with {c}: {e}"),
            ),
            None => "the listener was killed by a signal".into(),
        });
        tracing::warn!(pid, code = ?code, retry_in = ?delay, "listener exited");
        ExitMeaning::Failure
    }
}

#[cfg(test)]
mod tests {
    use super::status::state_of;
    use super::*;
    use crate::observe::ObservedRunner;
    use crate::reconcile::{stage, Action, Stage};
    use crate::status::State;

    /// A step that failed for a cause that passes (too many open files).
    fn transient() -> StepError {
        StepError::io("start the listener")(std::io::Error::from_raw_os_error(24))
    }

    #[test]
    fn failing_steps_never_make_a_crash_loop_and_clear_once_a_step_succeeds() {
        let t0 = Instant::now();
        let mut rt = Runtime::default();
        let mut at = t0;
        for _ in 0..12 {
            let wait = rt
                .step_result(Some(&transient()), at, SystemTime::now())
                .expect("a wait");
            assert!(wait <= Duration::from_secs(60), "{wait:?}");
            assert_ne!(state_of(None, &rt, false, None, at), State::Crashloop);
            at += wait;
        }
        let second_before = at
            .checked_sub(Duration::from_secs(1))
            .expect("a clock past 1 s");
        assert_eq!(rt.hold(second_before), Duration::from_secs(1));
        // The wait passed, the steps ran and succeeded: nothing is held any more, and the next
        // failure starts again at one second.
        assert_eq!(rt.step_result(None, at, SystemTime::now()), None);
        assert_eq!(rt.hold(at), Duration::ZERO);
        assert_eq!(
            rt.step_result(Some(&transient()), at, SystemTime::now()),
            Some(Duration::from_secs(1))
        );
    }

    #[test]
    fn a_restart_watches_both_listeners_and_only_the_new_ones_exit_is_a_failure() {
        let t0 = Instant::now();
        let mut rt = Runtime::default();
        rt.watch(100);
        // A restart: 100 is stopped, 200 started; both exits are still to come.
        rt.stopping(100, t0);
        rt.watch(200);
        assert!(rt.watches(100) && rt.watches(200));
        assert_eq!(rt.running_listener(), Some(200));
        // The new one's exit may be reported first: it is a crash, the old one's is not.
        assert_eq!(rt.exited(200, Some(1), false, t0), ExitMeaning::Failure);
        assert_eq!(rt.exited(100, None, false, t0), ExitMeaning::Expected);
        assert_eq!(rt.restarts, 1);
        assert!(rt.listeners.is_empty(), "{:?}", rt.listeners);
    }

    #[test]
    fn watching_a_new_listener_replaces_the_running_one_and_old_stops_are_forgotten() {
        let t0 = Instant::now();
        let mut rt = Runtime::default();
        rt.watch(100);
        rt.watch(101);
        assert!(!rt.watches(100), "only one listener is the runner's own");
        assert_eq!(rt.running_listener(), Some(101));
        rt.stopping(101, t0);
        assert_eq!(rt.running_listener(), None);
        rt.forget_old_stops(t0 + STOP_GRACE);
        assert!(rt.watches(101), "a stop within its grace is still watched");
        rt.forget_old_stops(t0 + STOP_FORGOTTEN_AFTER);
        assert!(
            !rt.watches(101),
            "a stop whose exit never came is forgotten"
        );
        // An exit nobody watched is judged as a listener's own.
        assert_eq!(rt.exited(101, Some(2), false, t0), ExitMeaning::Failure);
    }

    #[test]
    fn a_pass_held_by_the_backoff_does_not_clear_it() {
        let t0 = Instant::now();
        let mut rt = Runtime::default();
        rt.step_result(Some(&transient()), t0, SystemTime::now());
        rt.step_result(Some(&transient()), t0, SystemTime::now());
        assert_eq!(rt.step_result(None, t0, SystemTime::now()), None);
        assert_eq!(rt.hold(t0), Duration::from_secs(2));
    }

    #[test]
    fn an_edited_entry_clears_the_crash_loop() {
        let t0 = Instant::now();
        let mut rt = Runtime::default();
        let text = "base: { path: /opt/base }\nstate_dir: /tmp/s\ngithub: { url: https://github.com, token_env: T }\nrunners:\n  - name: a\n    repo: o/r\n";
        let desired =
            crate::config::parse(text, std::path::Path::new("/etc/runners.yaml")).expect("config");
        let mut spec = desired.runners["a"].clone();
        rt.applying(Some(&spec));
        for _ in 0..6 {
            rt.backoff.failed(t0);
        }
        assert_eq!(state_of(None, &rt, false, None, t0), State::Crashloop);
        rt.applying(Some(&spec));
        assert_eq!(
            state_of(None, &rt, false, None, t0),
            State::Crashloop,
            "unchanged: kept"
        );
        spec.labels.push("new".into());
        rt.applying(Some(&spec));
        assert_eq!(rt.hold(t0), Duration::ZERO);
        assert_ne!(state_of(None, &rt, false, None, t0), State::Crashloop);
    }

    #[test]
    fn a_runner_is_provisioning_while_its_directory_is_built_and_busy_before_all() {
        let rt = Runtime::default();
        let at = Instant::now();
        let provision = [
            Action::Provision { runner: "a".into() },
            Action::Register { runner: "a".into() },
        ];
        let phase = phase_of(&provision);
        assert_eq!(phase, Some(State::Provisioning));
        assert_eq!(state_of(None, &rt, false, phase, at), State::Provisioning);
        assert_eq!(state_of(None, &rt, true, phase, at), State::Busy);
        // Steps that build nothing leave the state to the host.
        let start = [Action::Stop { runner: "a".into() }];
        assert_eq!(phase_of(&start), None);
        assert_eq!(state_of(None, &rt, false, None, at), State::Stopped);
        let unregistered = ObservedRunner {
            provisioned: true,
            ..ObservedRunner::default()
        };
        assert_eq!(stage(Some(&unregistered)), Stage::Provisioned);
        assert_eq!(
            state_of(Some(&unregistered), &rt, false, None, at),
            State::Registering
        );
        assert_eq!(stage(None), Stage::Absent);
    }
}

#[cfg(test)]
mod paused_tests;
