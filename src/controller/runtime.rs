//! What corral remembers about each runner between passes (restarts, backoff, drain, what
//! the listener's log said), how an exit is judged, and the status built from it.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::backoff::Backoff;
use crate::config::{Desired, RunnerSpec};
use crate::markers::{ListenerView, LogTail};
use crate::observe::{Observed, ObservedRunner};
use crate::reconcile::runner_names;
use crate::status::{GitHubStatus, RunnerStatus, State, Status};

/// One runner's memory.
#[derive(Debug, Default)]
pub struct Runtime {
    /// Restart backoff.
    pub backoff: Backoff,
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
    config_error: Option<String>,
    github: Option<GitHubStatus>,
    now: Instant,
) -> Status {
    let empty = Runtime::default();
    let runners = runner_names(desired, observed)
        .into_iter()
        .map(|name| {
            let runtime = runtimes.get(name).unwrap_or(&empty);
            runner_status(name, desired, observed.runners.get(name), runtime, now)
        })
        .collect();
    Status {
        updated_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        config_error,
        github,
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
        state: state_of(seen, rt, busy, now),
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
            .and_then(|p| crate::observe::process_started_at(p.pid))
            .map(|t| humantime::format_rfc3339_seconds(t).to_string()),
        restarts: rt.restarts,
        last_exit_code: rt.last_exit,
        registration: registration.into(),
        last_error: rt.last_error.clone(),
        docker: None,
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

/// The one state a user sees, most telling first.
fn state_of(seen: Option<&ObservedRunner>, rt: &Runtime, busy: bool, now: Instant) -> State {
    let running = seen.is_some_and(|s| s.process.is_some());
    if rt.drain_started.is_some() {
        State::Draining
    } else if busy {
        State::Busy
    } else if running && rt.view.online {
        State::Idle
    } else if running {
        State::Starting
    } else if rt.backoff.crashloop() {
        State::Crashloop
    } else if !rt.backoff.wait(now).is_zero() {
        State::Backoff
    } else if rt.last_error.is_some() {
        State::Error
    } else if seen.is_some_and(|s| s.provisioned && !s.configured) {
        State::Registering
    } else {
        State::Stopped
    }
}
