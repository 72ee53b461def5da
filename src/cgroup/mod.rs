//! A cgroup per runner (issue 22): each listener, and so everything its jobs start, runs in
//! a cgroup of its own under a subtree corral owns, so that nothing a job starts outlives
//! it, limits hold per runner, and usage is measured per runner.
//!
//! # Where
//!
//! [`Host::detect`] finds the unified (v2) hierarchy — `/sys/fs/cgroup` on a pure cgroup2
//! host, `/sys/fs/cgroup/unified` on a hybrid one — and, on a hybrid host, the v1 hierarchies
//! of the `memory`, `pids` and `cpu` controllers. corral's subtree is
//! `<own cgroup>/corral-<id>`, where `<own cgroup>` is the cgroup corral runs in (a
//! delegated `corral.service` under systemd, a container's cgroup namespace root, the root
//! of a host) or its parent when corral runs in a `supervisor` child of it, and `<id>` is
//! derived from `state_dir`, so two corrals never share one. `CORRAL_CGROUP_ROOT` names
//! another cgroup2 directory to put it under. Each runner has `<subtree>/<name>` there and,
//! for the controllers only v1 offers, the same under corral's cgroup of that hierarchy.
//!
//! # Invariants
//!
//! - A listener enters its cgroups between fork and exec (through descriptors corral opened),
//!   so nothing it starts is ever outside them; its jobs' users cannot move out (the
//!   `cgroup.procs` files are root's).
//! - A process is killed only when it is provably the runner's: a member of the runner's
//!   cgroup, or, degraded, of the listener's session or of a runner's own user — always
//!   checked by start time and signalled through a pidfd.
//! - Where the tree cannot be made, corral runs degraded and says why (`Tree::Degraded`);
//!   a limit that cannot be applied is reported with its reason, never dropped silently.

mod detect;
mod runner;
mod sweep;
mod tree;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use detect::{Host, Mount};
pub use runner::{NotApplied, RunnerCgroup};
pub use sweep::{kill_user, select_leftovers, sweep_session, Member, Swept};
pub use tree::{assess, discard, subtree_name, Assessment, Subtree, Tree, ROOT_ENV};

/// Why a runner's cgroup cannot be made ready for its listener. A limit that cannot be set
/// is not an error (it is reported as [`NotApplied`]); these stop the listener's start.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// Its cgroup2 directory could not be made.
    #[error("cannot create `{}`", path.display())]
    Create {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A `cgroup.procs` file could not be opened for the listener to enter.
    #[error("cannot open `{}`", path.display())]
    Open {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// What an earlier listener left in it could not be killed.
    #[error("cannot empty the cgroup `{}` of what an earlier listener left", path.display())]
    NotEmptied {
        /// Its cgroup2 directory.
        path: std::path::PathBuf,
    },
}

/// A resource controller corral limits or measures with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Controller {
    /// CPU time (`cpu.max`, or v1 `cpu.cfs_quota_us`).
    Cpu,
    /// Memory (`memory.max`, or v1 `memory.limit_in_bytes`).
    Memory,
    /// Process and thread count (`pids.max`).
    Pids,
}

impl Controller {
    /// Every controller corral uses.
    pub const ALL: [Controller; 3] = [Controller::Cpu, Controller::Memory, Controller::Pids];

    /// The kernel's name.
    pub fn name(self) -> &'static str {
        match self {
            Controller::Cpu => "cpu",
            Controller::Memory => "memory",
            Controller::Pids => "pids",
        }
    }
}

impl std::fmt::Display for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One runner's limits, as resolved from `resources`; `None`: unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Limits {
    /// CPU in thousandths of a CPU (`cpu: 2` is 2000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_millis: Option<u32>,
    /// Memory in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// Processes and threads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u32>,
}

impl Limits {
    /// True when nothing is limited.
    pub fn is_empty(&self) -> bool {
        *self == Limits::default()
    }

    /// The controllers a limit is set for.
    pub fn controllers(&self) -> Vec<Controller> {
        let mut out = Vec::new();
        if self.cpu_millis.is_some() {
            out.push(Controller::Cpu);
        }
        if self.memory_bytes.is_some() {
            out.push(Controller::Memory);
        }
        if self.pids.is_some() {
            out.push(Controller::Pids);
        }
        out
    }
}

/// What a runner's cgroup has used, as the kernel counts it (its jobs included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// CPU time in microseconds (shown as `cpu_seconds`).
    #[serde(rename = "cpu_seconds", with = "micros_as_seconds")]
    pub cpu_micros: u64,
    /// Memory in use now, in bytes, where a memory controller counts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// The most memory it used at once, in bytes (kernel 5.19+ on cgroup2, or v1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_peak_bytes: Option<u64>,
    /// Processes the kernel's OOM killer killed in it (`memory.events` `oom_kill`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_kills: Option<u64>,
    /// Processes in it now.
    pub processes: u64,
}

mod micros_as_seconds {
    use serde::{Deserialize, Deserializer, Serializer};

    #[allow(
        clippy::cast_precision_loss,
        reason = "CPU microseconds stay far below 2^52"
    )]
    #[allow(
        clippy::trivially_copy_pass_by_ref,
        reason = "serde's serialize_with signature"
    )]
    pub fn serialize<S: Serializer>(micros: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(*micros as f64 / 1e6)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let seconds = f64::deserialize(d)?;
        Ok((seconds * 1e6).round() as u64)
    }
}

/// Why a limit is not in force, by controller.
pub type Reasons = BTreeMap<Controller, String>;

/// Reads a cgroup interface file, trimmed; `None` when absent or unreadable.
fn read(path: &std::path::Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Writes `value` to a cgroup interface file in one write, as the kernel wants it (the
/// truncation, which cgroupfs ignores as a shell's `>` does, keeps a fake tree's file whole).
fn write(path: &std::path::Path, value: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)?;
    file.write_all(value.as_bytes())
}

/// The value of `key` in a flat-keyed file (`key value` lines), e.g. `memory.events`.
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// An I/O error in words, for status and logs.
fn why(err: &std::io::Error) -> String {
    match err.raw_os_error() {
        Some(code) if code == rustix::io::Errno::BUSY.raw_os_error() => {
            format!("{err} (EBUSY)")
        }
        _ => err.to_string(),
    }
}
