//! The pure planner: `plan(&Desired, &Observed) -> Vec<Action>`.
//!
//! No I/O, no clock, no tokio: the same inputs always give the same steps, so it is tested
//! with plain tables. Apply steps are idempotent; a pass that stops half-way is finished by
//! the next one, because the next plan starts again from what is observed.

use std::fmt;
use std::path::PathBuf;

use crate::config::{Desired, RunnerSpec};
use crate::observe::{Observed, ObservedRunner};

/// One step on the host or on GitHub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Delete a half-built runner directory left by a crash.
    RemoveLeftover {
        /// The `runners/.tmp-*` directory.
        path: PathBuf,
    },
    /// Build the runner's directory from the base.
    Provision {
        /// Runner name.
        runner: String,
    },
    /// Register the runner with GitHub (`config.sh` or a JIT config).
    Register {
        /// Runner name.
        runner: String,
    },
    /// Start its listener.
    Start {
        /// Runner name.
        runner: String,
        /// Why it is not running.
        reason: StartReason,
    },
    /// Stop and start its listener (its runtime settings changed).
    Restart {
        /// Runner name.
        runner: String,
    },
    /// Remove the registration; refused by GitHub while a job runs, so it also drains.
    Deregister {
        /// Runner name.
        runner: String,
    },
    /// Stop its listener: SIGINT to the group, then SIGKILL after a grace period.
    Stop {
        /// Runner name.
        runner: String,
    },
    /// Delete its directory and records.
    Deprovision {
        /// Runner name.
        runner: String,
    },
}

/// Why a listener is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartReason {
    /// Just registered.
    New,
    /// Registered but no live listener: it exited or crashed.
    NotRunning,
}

impl Action {
    /// The runner this step is about, if any.
    pub fn runner(&self) -> Option<&str> {
        match self {
            Action::RemoveLeftover { .. } => None,
            Action::Provision { runner }
            | Action::Register { runner }
            | Action::Start { runner, .. }
            | Action::Restart { runner }
            | Action::Deregister { runner }
            | Action::Stop { runner }
            | Action::Deprovision { runner } => Some(runner),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::RemoveLeftover { path } => write!(f, "remove leftover {}", path.display()),
            Action::Provision { .. } => f.write_str("provision"),
            Action::Register { .. } => f.write_str("register"),
            Action::Start {
                reason: StartReason::New,
                ..
            } => f.write_str("start"),
            Action::Start {
                reason: StartReason::NotRunning,
                ..
            } => f.write_str("start (listener not running)"),
            Action::Restart { .. } => f.write_str("restart (settings changed)"),
            Action::Deregister { .. } => f.write_str("deregister (waits for a running job)"),
            Action::Stop { .. } => f.write_str("stop"),
            Action::Deprovision { .. } => f.write_str("deprovision"),
        }
    }
}

/// The steps that make `observed` equal to `desired`: leftovers first, then runners by name.
pub fn plan(desired: &Desired, observed: &Observed) -> Vec<Action> {
    let mut actions: Vec<Action> = observed
        .leftovers
        .iter()
        .map(|path| Action::RemoveLeftover { path: path.clone() })
        .collect();
    let empty = ObservedRunner::default();
    let names = runner_names(desired, observed);
    for name in names {
        let seen = observed.runners.get(name).unwrap_or(&empty);
        match desired.runners.get(name) {
            Some(spec) => plan_desired(spec, seen, &mut actions),
            None => plan_removed(name, seen, &mut actions),
        }
    }
    actions
}

/// Every runner that is desired or found, sorted, each once.
pub fn runner_names<'a>(desired: &'a Desired, observed: &'a Observed) -> Vec<&'a String> {
    let mut names: Vec<&String> = desired
        .runners
        .keys()
        .chain(observed.runners.keys())
        .collect();
    names.sort();
    names.dedup();
    names
}

fn plan_desired(spec: &RunnerSpec, seen: &ObservedRunner, out: &mut Vec<Action>) {
    let runner = || spec.name.clone();
    if !seen.provisioned {
        if seen.process.is_some() {
            out.push(Action::Stop { runner: runner() });
        }
        out.push(Action::Provision { runner: runner() });
        out.push(Action::Register { runner: runner() });
        out.push(Action::Start {
            runner: runner(),
            reason: StartReason::New,
        });
        return;
    }
    let registered_as_now = seen
        .spec
        .as_ref()
        .is_some_and(|rec| rec.registration_hash == spec.registration_hash());
    if seen.configured && !registered_as_now {
        // Repo, labels, name or mode changed (or corral lost its record): register afresh.
        out.push(Action::Deregister { runner: runner() });
        if seen.process.is_some() {
            out.push(Action::Stop { runner: runner() });
        }
        out.extend(fresh(runner()));
        return;
    }
    if !seen.configured {
        if seen.process.is_some() {
            out.push(Action::Stop { runner: runner() });
        }
        // An ephemeral runner that has had its job comes back with a clean directory.
        if spec.ephemeral && seen.spec.is_some() {
            out.extend(fresh(runner()));
        } else {
            out.push(Action::Register { runner: runner() });
            out.push(Action::Start {
                runner: runner(),
                reason: StartReason::New,
            });
        }
        return;
    }
    match &seen.process {
        None => out.push(Action::Start {
            runner: runner(),
            reason: StartReason::NotRunning,
        }),
        Some(_)
            if seen
                .spec
                .as_ref()
                .is_some_and(|r| r.runtime_hash != spec.runtime_hash()) =>
        {
            out.push(Action::Restart { runner: runner() });
        }
        Some(_) => {}
    }
}

fn fresh(runner: String) -> [Action; 4] {
    [
        Action::Deprovision {
            runner: runner.clone(),
        },
        Action::Provision {
            runner: runner.clone(),
        },
        Action::Register {
            runner: runner.clone(),
        },
        Action::Start {
            runner,
            reason: StartReason::New,
        },
    ]
}

fn plan_removed(name: &str, seen: &ObservedRunner, out: &mut Vec<Action>) {
    let runner = || name.to_string();
    if seen.configured {
        out.push(Action::Deregister { runner: runner() });
    }
    if seen.process.is_some() {
        out.push(Action::Stop { runner: runner() });
    }
    out.push(Action::Deprovision { runner: runner() });
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod tests;
