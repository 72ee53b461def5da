//! The pure planner: `plan(&Desired, &Observed) -> Vec<Action>`.
//!
//! No I/O, no clock, no tokio: the same inputs always give the same steps, so it is tested
//! with plain tables. Apply steps are idempotent; a pass that stops half-way is finished by
//! the next one, because the next plan starts again from what is observed.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;

use crate::config::{Desired, GitHubAuth, Repo, RunnerSpec};
use crate::observe::{Observed, ObservedRunner, ServerRunner, ServerView};

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
    /// Set its custom labels on GitHub to the file's (no new registration, no restart).
    SyncLabels {
        /// Runner name.
        runner: String,
    },
    /// Forget its local registration, which GitHub no longer has.
    Forget {
        /// Runner name.
        runner: String,
    },
    /// Move it onto the base in force, keeping its registration (stops its listener first).
    Rebase {
        /// Runner name.
        runner: String,
    },
    /// Delete a registration of this corral that no runner owns any more.
    DeleteOrphan {
        /// Its name on GitHub.
        name: String,
        /// Its repository.
        repo: Repo,
        /// Its id.
        id: u64,
    },
}

/// Where a runner is in its life on the host, from what was observed (DESIGN.md §4): the
/// one reading of the host's facts that the planner and the status share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// No runner directory (or only a half-built one).
    Absent,
    /// Its directory is built; no registration on disk.
    Provisioned,
    /// Registered, listener not running.
    Registered,
    /// Its listener runs.
    Running,
}

/// The stage `seen` shows (`None`: nothing of it on the host).
pub fn stage(seen: Option<&ObservedRunner>) -> Stage {
    match seen {
        Some(s) if s.process.is_some() => Stage::Running,
        Some(s) if s.provisioned && s.configured => Stage::Registered,
        Some(s) if s.provisioned => Stage::Provisioned,
        _ => Stage::Absent,
    }
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
            Action::RemoveLeftover { .. } | Action::DeleteOrphan { .. } => None,
            Action::Provision { runner }
            | Action::Register { runner }
            | Action::Start { runner, .. }
            | Action::Restart { runner }
            | Action::Deregister { runner }
            | Action::Stop { runner }
            | Action::Deprovision { runner }
            | Action::SyncLabels { runner }
            | Action::Rebase { runner }
            | Action::Forget { runner } => Some(runner),
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
            Action::SyncLabels { .. } => f.write_str("set labels on GitHub"),
            Action::Rebase { .. } => f.write_str("move to the new base (keeps its registration)"),
            Action::Forget { .. } => f.write_str("forget the registration GitHub deleted"),
            Action::DeleteOrphan { name, repo, id } => {
                write!(
                    f,
                    "delete orphan registration {name} (id {id}) in {}",
                    repo.url
                )
            }
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
    let ctx = Ctx {
        server: observed.server.as_ref(),
        listed: listed_by_name(observed.server.as_ref()),
        labels_in_place: desired
            .github
            .as_ref()
            .is_some_and(|g| g.auth != GitHubAuth::None),
        rebase: rebase_now(desired, observed),
    };
    let empty = ObservedRunner::default();
    for name in runner_names(desired, observed) {
        let seen = observed.runners.get(name).unwrap_or(&empty);
        match desired.runners.get(name) {
            Some(spec) => plan_desired(&ctx, spec, seen, &mut actions),
            None => plan_removed(name, seen, &mut actions),
        }
    }
    plan_orphans(desired, observed, &mut actions);
    actions
}

/// What the planner knows beyond one runner.
struct Ctx<'a> {
    /// Registrations GitHub listed this pass, where it could.
    server: Option<&'a ServerView>,
    /// The same by repository URL and name, both lower case: one look-up per runner, not a
    /// walk of its repository's list (which made a pass quadratic in runners per repository).
    listed: HashMap<(String, String), &'a ServerRunner>,
    /// Labels can be changed on GitHub without registering again (corral has a credential).
    labels_in_place: bool,
    /// Runners moved to the new base in this pass.
    rebase: Vec<String>,
}

/// The runners to move to another base now: registered ones whose base, by corral's record,
/// is not the one their version resolves to (once that one is ready; no record counts as
/// another base), idle ones only (a busy one moves after its job), at most
/// `max_unavailable`, by name.
fn rebase_now(desired: &Desired, observed: &Observed) -> Vec<String> {
    desired
        .runners
        .values()
        .filter(|spec| {
            let Some(target) = observed.bases.get(&desired.base_of(spec)) else {
                return false;
            };
            observed.runners.get(&spec.name).is_some_and(|r| {
                r.provisioned
                    && r.configured
                    && r.base.as_ref() != Some(target)
                    && !r.process.is_some_and(|p| p.busy)
            })
        })
        .take(desired.max_unavailable as usize)
        .map(|spec| spec.name.clone())
        .collect()
}

/// What GitHub said about one runner's registration this pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnGitHub<'a> {
    /// Its repository was not listed this pass.
    Unknown,
    /// Listed, and no registration has its name.
    Absent,
    /// Listed.
    Present(&'a ServerRunner),
}

impl Ctx<'_> {
    fn registration(&self, spec: &RunnerSpec) -> OnGitHub<'_> {
        let repo = spec.repo.url.to_lowercase();
        if !self.server.is_some_and(|s| s.repos.contains_key(&repo)) {
            return OnGitHub::Unknown;
        }
        self.listed
            .get(&(repo, spec.name.to_ascii_lowercase()))
            .map_or(OnGitHub::Absent, |r| OnGitHub::Present(r))
    }
}

/// Every listed registration by (repository URL, name), lower case; the first of a name wins.
fn listed_by_name(server: Option<&ServerView>) -> HashMap<(String, String), &ServerRunner> {
    let mut listed = HashMap::new();
    for (repo, registrations) in server.iter().flat_map(|s| &s.repos) {
        for r in registrations {
            listed
                .entry((repo.clone(), r.name.to_ascii_lowercase()))
                .or_insert(r);
        }
    }
    listed
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

/// A desired runner: its directory first (missing, registered otherwise, to be rebuilt, not
/// configured yet), then [`plan_configured`].
fn plan_desired(ctx: &Ctx<'_>, spec: &RunnerSpec, seen: &ObservedRunner, out: &mut Vec<Action>) {
    let runner = || spec.name.clone();
    if !seen.provisioned {
        // A listener in a directory that is gone (`stage` says `Running`) is stopped first.
        if seen.process.is_some() {
            out.push(Action::Stop { runner: runner() });
        }
        out.extend(fresh(runner()).into_iter().skip(1));
        return;
    }
    let registered_as_now = seen
        .spec
        .as_ref()
        .is_some_and(|rec| rec.registration_hash == spec.registration_hash());
    if seen.configured && !registered_as_now {
        // Repo, name or mode changed (or corral lost its record): register afresh.
        register_afresh(spec, seen, out);
        return;
    }
    if seen.process.is_none()
        && (spec.ephemeral && seen.used || !seen.configured && seen.base.is_none())
    {
        // An ephemeral runner's directory after its listener (a job ran, or may have: its
        // leftovers are not the next job's), or one corral has no record of building: rebuilt,
        // whatever is in it.
        out.extend(fresh(runner()));
        return;
    }
    if !seen.configured {
        plan_unconfigured(spec, seen, out);
        return;
    }
    plan_configured(ctx, spec, seen, out);
}

/// A runner whose directory holds the identity its spec asks for: its registration on
/// GitHub, its labels, a move to another base, then its listener.
fn plan_configured(ctx: &Ctx<'_>, spec: &RunnerSpec, seen: &ObservedRunner, out: &mut Vec<Action>) {
    let runner = || spec.name.clone();
    if ctx.registration(spec) == OnGitHub::Absent && seen.process.is_none() {
        // Deleted on GitHub (a running listener finds out itself and exits).
        out.push(Action::Forget { runner: runner() });
        out.push(Action::Register { runner: runner() });
        out.push(Action::Start {
            runner: runner(),
            reason: StartReason::New,
        });
        return;
    }
    if labels_changed(ctx, spec, seen) {
        if !ctx.labels_in_place {
            register_afresh(spec, seen, out);
            return;
        }
        out.push(Action::SyncLabels { runner: runner() });
    }
    if ctx.rebase.contains(&spec.name) && spec.ephemeral {
        // An ephemeral runner is never moved: it gets a fresh directory on the new base.
        out.push(Action::Stop { runner: runner() });
        out.extend(fresh(runner()));
        return;
    }
    if ctx.rebase.contains(&spec.name) {
        out.push(Action::Rebase { runner: runner() });
        out.push(Action::Start {
            runner: runner(),
            reason: StartReason::New,
        });
        return;
    }
    plan_process(spec, seen, out);
}

fn register_afresh(spec: &RunnerSpec, seen: &ObservedRunner, out: &mut Vec<Action>) {
    let runner = || spec.name.clone();
    out.push(Action::Deregister { runner: runner() });
    if seen.process.is_some() {
        out.push(Action::Stop { runner: runner() });
    }
    out.extend(fresh(runner()));
}

/// Provisioned but without a registration on disk.
fn plan_unconfigured(spec: &RunnerSpec, seen: &ObservedRunner, out: &mut Vec<Action>) {
    let runner = || spec.name.clone();
    if seen.process.is_some() {
        // One that lost its registration and is exiting (an ephemeral one after its job):
        // its exit (or its log) brings the next pass.
        return;
    }
    out.push(Action::Register { runner: runner() });
    out.push(Action::Start {
        runner: runner(),
        reason: StartReason::New,
    });
}

/// True when the labels on GitHub (when listed) or in corral's record differ from the file.
fn labels_changed(ctx: &Ctx<'_>, spec: &RunnerSpec, seen: &ObservedRunner) -> bool {
    let on_server = match ctx.registration(spec) {
        OnGitHub::Present(r) => Some(r.custom_labels.as_slice()),
        OnGitHub::Unknown | OnGitHub::Absent => None,
    };
    let recorded = seen
        .spec
        .as_ref()
        .and_then(|rec| rec.spec.as_ref())
        .map(RunnerSpec::registered_labels);
    on_server.is_some_and(|labels| !spec.same_labels(labels))
        || recorded.is_some_and(|labels| !spec.same_labels(&labels))
}

fn plan_process(spec: &RunnerSpec, seen: &ObservedRunner, out: &mut Vec<Action>) {
    let runner = || spec.name.clone();
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
            if spec.ephemeral {
                // Its directory is used: the new listener gets a fresh one.
                out.push(Action::Stop { runner: runner() });
                out.extend(fresh(runner()));
            } else {
                out.push(Action::Restart { runner: runner() });
            }
        }
        Some(_) => {}
    }
}

/// Registrations in the listed repositories that carry this corral's marker, belong to no
/// runner in the file or on disk, and are offline and idle: left behind by a crash or a lost
/// state directory. Never a busy one.
fn plan_orphans(desired: &Desired, observed: &Observed, out: &mut Vec<Action>) {
    let Some(github) = desired.github.as_ref().filter(|g| g.cleanup_orphans) else {
        return;
    };
    let (Some(marker), Some(server)) = (&github.marker_label, &observed.server) else {
        return;
    };
    // A set, not a walk of every runner for each registration.
    let known: HashSet<String> = desired
        .runners
        .keys()
        .chain(observed.runners.keys())
        .map(|n| n.to_ascii_lowercase())
        .collect();
    for registration in server.repos.values().flatten() {
        let carries_marker = registration
            .custom_labels
            .iter()
            .any(|l| l.eq_ignore_ascii_case(marker));
        if carries_marker
            && !known.contains(&registration.name.to_ascii_lowercase())
            && !registration.online
            && !registration.busy
        {
            out.push(Action::DeleteOrphan {
                name: registration.name.clone(),
                repo: registration.repo.clone(),
                id: registration.id,
            });
        }
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
#[path = "reconcile_tests/mod.rs"]
mod tests;
