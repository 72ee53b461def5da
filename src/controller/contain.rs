//! The controller's side of "nothing outlives its job": each runner's cgroup made and
//! limited before its listener starts, emptied after every job and whenever its listener is
//! gone, killed and removed with the runner; or, without cgroups, the listener's session and
//! a runner's own user. Every function here blocks (it writes cgroup files and waits for a
//! cgroup to empty): callers run it on the blocking pool.

use std::os::fd::OwnedFd;
use std::path::Path;

use tracing::{info, warn};

use crate::cgroup::{self, Host, Limits, NotApplied, RunnerCgroup, Swept, Tree, Usage};
use crate::config::{Isolation, RunnerSpec};

/// What a listener needs to start in its cgroup.
#[derive(Debug, Default)]
pub struct Entry {
    /// `cgroup.procs` descriptors it writes itself into before exec.
    pub fds: Vec<OwnedFd>,
    /// Limits not in force, with the reason.
    pub not_applied: Vec<NotApplied>,
}

/// corral's cgroups for one state directory.
#[derive(Debug)]
pub struct Contain {
    tree: Tree,
}

impl Contain {
    /// Finds or makes corral's subtree for `state_dir` (under `CORRAL_CGROUP_ROOT` when set).
    pub fn establish(state_dir: &Path) -> Self {
        let root = std::env::var_os(cgroup::ROOT_ENV).map(std::path::PathBuf::from);
        let tree = Tree::establish(&Host::detect(), state_dir, root.as_deref());
        match &tree {
            Tree::Ready(sub) => info!(
                cgroup = %sub.dir.display(),
                v2 = ?sub.v2,
                v1 = ?sub.v1.keys().collect::<Vec<_>>(),
                missing = ?sub.missing,
                "runners get cgroups of their own"
            ),
            Tree::Degraded(reason) => warn!(
                reason,
                "no cgroups for runners: clean-up falls back to sessions and runners' own users"
            ),
        }
        Contain { tree }
    }

    /// Before `spec`'s listener starts: its cgroup made, emptied of what an earlier listener
    /// left, limited; the descriptors to enter it.
    pub fn prepare(&self, spec: &RunnerSpec) -> Result<Entry, cgroup::CgroupError> {
        let Tree::Ready(sub) = &self.tree else {
            return Ok(Entry {
                fds: Vec::new(),
                not_applied: degraded_limits(&spec.resources, &self.reason()),
            });
        };
        let mut cg = sub.runner(&spec.name);
        let mut missing = cg.create()?;
        missing.extend(sub.missing.clone());
        if cg.populated() && !cg.kill() {
            return Err(cgroup::CgroupError::NotEmptied { path: cg.v2 });
        }
        let not_applied = cg.apply(&spec.resources, &missing);
        Ok(Entry {
            fds: cg.enter()?,
            not_applied,
        })
    }

    /// The cgroup runner `name`'s listener `pid` is in, when it is one of corral's; with no
    /// listener, where its cgroup is made.
    pub fn cgroup_of(&self, name: &str, pid: Option<i32>) -> Option<RunnerCgroup> {
        let sub = self.tree.subtree()?;
        match pid {
            Some(pid) => sub.runner_of_pid(name, pid),
            None => Some(sub.runner(name)),
        }
    }

    /// Sets `limits` on the live listener `pid`'s cgroup; returns what is not in force.
    pub fn apply_limits(&self, name: &str, pid: i32, limits: &Limits) -> Vec<NotApplied> {
        match (&self.tree, self.cgroup_of(name, Some(pid))) {
            (Tree::Ready(sub), Some(cg)) => cg.apply(limits, &sub.missing),
            (Tree::Ready(_), None) => degraded_limits(limits, &outside(pid)),
            (Tree::Degraded(reason), _) => degraded_limits(limits, reason),
        }
    }

    /// After a job of `name`'s listener `pid` (started at `start`): kills what it left.
    pub fn sweep(&self, name: &str, pid: i32, start: u64, uid: Option<u32>) -> Option<Swept> {
        match self.cgroup_of(name, Some(pid)) {
            Some(cg) => cg.sweep(pid, start),
            None => cgroup::sweep_session(pid, start, uid),
        }
    }

    /// Runner `name` has no listener: everything left in its cgroup (or, degraded, of its
    /// own user) is killed. Returns how many processes were there.
    pub fn reap(&self, name: &str, uid: Option<u32>) -> usize {
        match self.cgroup_of(name, None) {
            Some(cg) if cg.populated() => {
                let count = cg.procs().len();
                cg.kill();
                count
            }
            Some(_) => 0,
            None => uid.map_or(0, cgroup::kill_user),
        }
    }

    /// Runner `name` goes: its cgroup is killed and removed.
    pub fn remove(&self, name: &str, uid: Option<u32>) {
        self.reap(name, uid);
        if let Some(cg) = self.cgroup_of(name, None) {
            cg.remove();
        }
    }

    /// What status says of runner `name` (listener `pid` if alive): its cgroup's path, or
    /// `degraded (reason)`, and its usage.
    pub fn describe(&self, name: &str, pid: Option<i32>) -> (String, Option<Usage>) {
        if let Tree::Degraded(reason) = &self.tree {
            return (format!("degraded ({reason})"), None);
        }
        match self.cgroup_of(name, pid) {
            Some(cg) => (cg.v2.display().to_string(), Some(cg.usage())),
            None => (format!("degraded ({})", outside(pid.unwrap_or(0))), None),
        }
    }

    /// Why there are no cgroups (empty when there are).
    fn reason(&self) -> String {
        match &self.tree {
            Tree::Degraded(reason) => reason.clone(),
            Tree::Ready(_) => String::new(),
        }
    }

    /// Removes corral's subtree directories once every runner's cgroup is gone.
    pub fn remove_empty(&self) {
        self.tree.remove_empty();
    }
}

fn outside(pid: i32) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let at = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or("?");
    format!("the listener was started outside corral's cgroups, in `{at}`; it gets one when it restarts")
}

fn degraded_limits(limits: &Limits, reason: &str) -> Vec<NotApplied> {
    limits
        .controllers()
        .into_iter()
        .map(|controller| NotApplied {
            controller,
            reason: format!("no cgroup for the runner: {reason}"),
        })
        .collect()
}

/// The uid of runner `name`'s own user (`isolation: user-per-runner`), when it exists: its
/// processes are provably the runner's.
pub fn own_uid(name: &str, isolation: Option<Isolation>) -> Option<u32> {
    if isolation != Some(Isolation::UserPerRunner) {
        return None;
    }
    nix::unistd::User::from_name(&crate::users::per_runner_name(name))
        .ok()
        .flatten()
        .map(|u| u.uid.as_raw())
        .filter(|&uid| uid != 0)
}

/// One runner's containment work in a pass.
#[derive(Debug)]
pub struct Work {
    /// Runner name.
    pub name: String,
    /// Its live listener and that one's start time.
    pub listener: Option<(i32, u64)>,
    /// Its isolation (for its own user's uid, degraded).
    pub isolation: Option<Isolation>,
    /// Kill what its last job left.
    pub sweep: bool,
    /// Empty `_work` (`clean: workspace`): its root and `runners/`.
    pub clean: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// Set these limits on its live cgroup.
    pub limits: Option<Limits>,
    /// Read its cgroup and usage.
    pub measure: bool,
}

/// Why a workspace could not be emptied after a job.
#[derive(Debug, thiserror::Error)]
pub enum CleanError {
    /// `_work` could not be moved out of the runner's root.
    #[error("cannot move `_work` aside")]
    Stash(#[source] std::io::Error),
    /// The moved-aside workspace could not be removed.
    #[error("cannot remove `{}`", path.display())]
    Remove {
        /// Where it was moved.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What the work did.
#[derive(Debug, Default)]
pub struct Done {
    /// Runner name.
    pub name: String,
    /// Its live listener, when there was one.
    pub listener: Option<i32>,
    /// A sweep was asked for.
    pub sweep_asked: bool,
    /// The sweep ran (`None`: not asked, or the listener was not found).
    pub swept: Option<Swept>,
    /// The clean-up: entries removed, or why not; `None` when not asked or postponed
    /// because the next job had started.
    pub cleaned: Option<Result<usize, CleanError>>,
    /// The clean-up was postponed: a job runs.
    pub clean_postponed: bool,
    /// Processes killed because no listener was alive.
    pub reaped: usize,
    /// Limits not in force, when limits were set.
    pub not_applied: Option<Vec<NotApplied>>,
    /// Its cgroup (or why none) and usage, when measured.
    pub described: Option<(String, Option<Usage>)>,
}

impl Contain {
    /// Does `work`.
    pub fn run(&self, work: &Work) -> Done {
        let uid = || own_uid(&work.name, work.isolation);
        let mut done = Done {
            name: work.name.clone(),
            listener: work.listener.map(|(pid, _)| pid),
            ..Done::default()
        };
        match work.listener {
            None => done.reaped = self.reap(&work.name, uid()),
            Some((pid, start)) => {
                if work.sweep {
                    done.sweep_asked = true;
                    done.swept = self.sweep(&work.name, pid, start, uid());
                }
                if let Some((root, runners)) = &work.clean {
                    match self.clean(&work.name, pid, root, runners) {
                        Some(result) => done.cleaned = Some(result),
                        None => done.clean_postponed = true,
                    }
                }
                if let Some(limits) = &work.limits {
                    done.not_applied = Some(self.apply_limits(&work.name, pid, limits));
                }
            }
        }
        if work.measure {
            done.described = Some(self.describe(&work.name, work.listener.map(|(p, _)| p)));
        }
        done
    }

    /// Empties the workspace of runner `name` while its cgroup is frozen (nothing starts or
    /// writes meanwhile); `None` when a job runs (the next one started first).
    fn clean(
        &self,
        name: &str,
        pid: i32,
        root: &Path,
        runners: &Path,
    ) -> Option<Result<usize, CleanError>> {
        let cg = self.cgroup_of(name, Some(pid));
        let frozen = cg.as_ref().is_some_and(|c| c.freeze(true));
        let stashed = if crate::procfs::has_worker_child(pid) {
            None
        } else {
            Some(crate::provision::clean::stash_workspace(
                root, runners, name,
            ))
        };
        if let (true, Some(cg)) = (frozen, &cg) {
            cg.freeze(false);
        }
        Some(match stashed? {
            Ok((stash, moved)) => crate::provision::clean::remove_stash(&stash)
                .map(|()| moved)
                .map_err(|source| CleanError::Remove {
                    path: stash,
                    source,
                }),
            Err(e) => Err(CleanError::Stash(e)),
        })
    }
}
