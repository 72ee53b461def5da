//! The status a user sees of each runner, built from what was observed and what corral
//! remembers ([`Runtime`]).

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime};

use crate::config::{Desired, RunnerSpec};
use crate::observe::{Observed, ObservedRunner};
use crate::reconcile::{runner_names, stage, Action, Stage};
use crate::status::{ErrorKind, GitHubStatus, RunnerStatus, State, Status};

use super::Runtime;

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

pub(super) fn runner_status(
    name: &str,
    desired: &Desired,
    seen: Option<&ObservedRunner>,
    rt: &Runtime,
    in_flight: Option<State>,
    now: Instant,
) -> RunnerStatus {
    let process = seen.and_then(|s| s.process);
    let spec = spec_of(name, desired, seen);
    let busy = process.is_some_and(|p| p.busy) || (process.is_some() && rt.view.job.is_some());
    RunnerStatus {
        name: name.to_string(),
        repo_url: spec.map(|s| s.repo.url.clone()).unwrap_or_default(),
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
        job_started_at: rt.view.job_started.filter(|_| busy).map(rfc3339),
        last_job: rt.view.last_job.clone(),
        labels: spec.map_or_else(Vec::new, RunnerSpec::registered_labels),
        version: rt.view.version.clone(),
        disk: rt.disk,
        started_at: process
            .and_then(|p| crate::procfs::process_started_at(p.pid))
            .map(rfc3339),
        restarts: rt.restarts,
        last_exit_code: rt.last_exit,
        registration: registration_of(rt, seen).into(),
        last_error: rt.last_error.clone(),
        last_error_kind: rt.last_error.as_ref().and(rt.last_error_kind),
        retry_at: retry_at(rt, now),
        docker: None,
        cgroup: rt.contain.cgroup.clone(),
        cleanup: cleanup_of(rt, spec),
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

fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

/// Whether GitHub knows the runner: `local-only` when corral cannot manage it there.
fn registration_of(rt: &Runtime, seen: Option<&ObservedRunner>) -> &'static str {
    if rt.local_only {
        "local-only"
    } else if seen.is_some_and(|s| s.configured) {
        "registered"
    } else {
        "unregistered"
    }
}

/// When a failed step of corral's is tried again, if it waits.
fn retry_at(rt: &Runtime, now: Instant) -> Option<String> {
    rt.last_error_kind
        .filter(|_| rt.last_error.is_some())
        .map(|_| rt.step_backoff.wait(now))
        .filter(|wait| !wait.is_zero())
        .map(|wait| rfc3339(SystemTime::now() + wait))
}

/// When what its jobs leave is cleaned up (or why it cannot be).
fn cleanup_of(rt: &Runtime, spec: Option<&RunnerSpec>) -> Option<String> {
    let cgroup = rt.contain.cgroup.as_ref()?;
    let keep = spec.is_some_and(|s| s.leftovers == crate::config::Leftovers::Keep);
    Some(if cgroup.starts_with("degraded") {
        cgroup.clone()
    } else if keep {
        "at removal (leftovers: keep)".to_string()
    } else {
        "after every job".to_string()
    })
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
