//! What corral remembers about each runner between passes (restarts, backoff, drain, what
//! the listener's log said), how an exit is judged, and the status built from it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use crate::backoff::{Backoff, StepBackoff};
use crate::config::{Desired, RunnerSpec};
use crate::markers::{ListenerView, LogTail};
use crate::observe::{Observed, ObservedRunner};
use crate::reconcile::{runner_names, stage, Action, Stage};
use crate::status::{ErrorKind, GitHubStatus, RunnerStatus, State, Status};

use super::step_error::{error_policy, Policy, StepError};

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
    /// The pid whose exit is being watched.
    pub watched_pid: Option<i32>,
    /// corral itself is stopping this pid: its exit is not a failure.
    pub stopping_pid: Option<i32>,
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

impl Runtime {
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
        if self.watched_pid == Some(pid) {
            self.watched_pid = None;
        }
        self.last_exit = code;
        if self.stopping_pid == Some(pid) {
            self.stopping_pid = None;
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

/// Builds the status of every runner from what was observed and remembered.
pub fn build_status(
    desired: &Desired,
    observed: &Observed,
    runtimes: &BTreeMap<String, Runtime>,
    in_flight: &BTreeMap<String, State>,
    config_error: Option<String>,
    github: Option<GitHubStatus>,
    now: Instant,
) -> Status {
    let empty = Runtime::default();
    let runners = runner_names(desired, observed)
        .into_iter()
        .map(|name| {
            let runtime = runtimes.get(name).unwrap_or(&empty);
            let phase = in_flight.get(name).copied();
            runner_status(
                name,
                desired,
                observed.runners.get(name),
                runtime,
                phase,
                now,
            )
        })
        .collect();
    Status {
        updated_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        config_error,
        github,
        source: None,
        runners,
        not_created: desired.capped.clone(),
        pools: Vec::new(),
    }
}

fn runner_status(
    name: &str,
    desired: &Desired,
    seen: Option<&ObservedRunner>,
    rt: &Runtime,
    in_flight: Option<State>,
    now: Instant,
) -> RunnerStatus {
    let process = seen.and_then(|s| s.process);
    let configured = seen.is_some_and(|s| s.configured);
    let repo_url = spec_of(name, desired, seen).map(|s| s.repo.url.clone());
    let busy = process.is_some_and(|p| p.busy) || (process.is_some() && rt.view.job.is_some());
    let registration = if rt.local_only {
        "local-only"
    } else if configured {
        "registered"
    } else {
        "unregistered"
    };
    RunnerStatus {
        name: name.to_string(),
        repo_url: repo_url.unwrap_or_default(),
        status: if process.is_some() {
            "running"
        } else {
            "stopped"
        }
        .into(),
        pid: process.map(|p| p.pid),
        state: state_of(seen, rt, busy, in_flight, now),
        busy,
        job: if busy { rt.view.job.clone() } else { None },
        job_started_at: rt
            .view
            .job_started
            .filter(|_| busy)
            .map(|t| humantime::format_rfc3339_seconds(t).to_string()),
        last_job: rt.view.last_job.clone(),
        labels: spec_of(name, desired, seen).map_or_else(Vec::new, RunnerSpec::registered_labels),
        version: rt.view.version.clone(),
        disk: rt.disk,
        started_at: process
            .and_then(|p| crate::procfs::process_started_at(p.pid))
            .map(|t| humantime::format_rfc3339_seconds(t).to_string()),
        restarts: rt.restarts,
        last_exit_code: rt.last_exit,
        registration: registration.into(),
        last_error: rt.last_error.clone(),
        last_error_kind: rt.last_error.as_ref().and(rt.last_error_kind),
        retry_at: rt
            .last_error_kind
            .filter(|_| rt.last_error.is_some())
            .map(|_| rt.step_backoff.wait(now))
            .filter(|wait| !wait.is_zero())
            .map(|wait| humantime::format_rfc3339_seconds(SystemTime::now() + wait).to_string()),
        docker: None,
        cgroup: rt.contain.cgroup.clone(),
        cleanup: rt.contain.cgroup.as_ref().map(|cgroup| {
            let keep = spec_of(name, desired, seen)
                .is_some_and(|s| s.leftovers == crate::config::Leftovers::Keep);
            if cgroup.starts_with("degraded") {
                cgroup.clone()
            } else if keep {
                "at removal (leftovers: keep)".to_string()
            } else {
                "after every job".to_string()
            }
        }),
        usage: rt.contain.usage,
        limits_not_applied: rt
            .contain
            .not_applied
            .iter()
            .map(|n| format!("{}: {}", n.controller, n.reason))
            .collect(),
        leftovers_killed: rt.contain.leftovers_killed,
    }
}

/// The runner's spec: from the file, or, for one that left it, as it was registered.
fn spec_of<'a>(
    name: &str,
    desired: &'a Desired,
    seen: Option<&'a ObservedRunner>,
) -> Option<&'a RunnerSpec> {
    desired
        .runners
        .get(name)
        .or_else(|| seen.and_then(|s| s.spec.as_ref()?.spec.as_ref()))
}

/// The state a worker's steps put their runner in while they run: `provisioning` while
/// its directory is built (or moved onto a new base); otherwise the host tells.
pub fn phase_of(actions: &[Action]) -> Option<State> {
    actions
        .iter()
        .any(|a| matches!(a, Action::Provision { .. } | Action::Rebase { .. }))
        .then_some(State::Provisioning)
}

/// The one state a user sees, most telling first: from the host's stage
/// ([`crate::reconcile::stage`]), what corral remembers, and a worker's steps in flight.
pub fn state_of(
    seen: Option<&ObservedRunner>,
    rt: &Runtime,
    busy: bool,
    in_flight: Option<State>,
    now: Instant,
) -> State {
    let stage = stage(seen);
    let running = stage == Stage::Running;
    if rt.drain_started.is_some() {
        State::Draining
    } else if busy {
        State::Busy
    } else if let Some(phase) = in_flight {
        phase
    } else if running && rt.view.online {
        State::Idle
    } else if running {
        State::Starting
    } else if rt.backoff.crashloop() {
        State::Crashloop
    } else if rt.last_error.is_some() && rt.last_error_kind == Some(ErrorKind::Permanent) {
        // Held too, but waiting cannot fix it: someone must.
        State::Error
    } else if !rt.hold(now).is_zero() {
        State::Backoff
    } else if rt.last_error.is_some() {
        State::Error
    } else if stage == Stage::Provisioned {
        State::Registering
    } else {
        State::Stopped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
