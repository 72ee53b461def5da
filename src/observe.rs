//! Reads what is on the host into [`Observed`]: runner directories, corral's records and live
//! listener processes. It only reads; the planner decides.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::config::BaseSource;
// A queued job is GitHub's concept (`github::runs` lists them); `Observed` only carries them.
pub use crate::github::QueuedJob;
use crate::layout::{read_record, DirRecord, ProcessRecord, SpecRecord, StateLayout, TMP_PREFIX};
use crate::procfs::{self, ProcTable};

/// What corral sees on the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// Every runner that has a directory or a record, by name.
    pub runners: BTreeMap<String, ObservedRunner>,
    /// Half-built runner directories (`runners/.tmp-*`) left by a crash.
    pub leftovers: Vec<PathBuf>,
    /// What GitHub listed, when corral could ask (filled by the controller, not by `observe`).
    pub server: Option<ServerView>,
    /// The tree each base source in use resolves to, once it is ready (filled by the
    /// controller).
    pub bases: BTreeMap<BaseSource, PathBuf>,
    /// Queued jobs by repository URL (lower case), oldest first, for the pools (filled by
    /// the controller from its last demand poll).
    pub demand: BTreeMap<String, Vec<QueuedJob>>,
    /// The engines of pools with `engine: scaleset`, by pool key (filled by the controller).
    pub scalesets: BTreeMap<String, crate::scaleset::EngineStatus>,
    /// Runners online without a job, and since when (filled by the controller).
    pub idle_since: BTreeMap<String, SystemTime>,
    /// Runners whose log says a job runs, though no worker process shows yet.
    pub busy: BTreeSet<String>,
    /// When this was observed; pools' idle times are measured against it.
    pub now: Option<SystemTime>,
}

/// Registrations GitHub listed, for the repositories that could be listed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerView {
    /// By repository URL (lower case), every registration listed there.
    pub repos: BTreeMap<String, Vec<ServerRunner>>,
}

/// One registration on GitHub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerRunner {
    /// Its id.
    pub id: u64,
    /// Its name.
    pub name: String,
    /// Its repository.
    pub repo: crate::config::Repo,
    /// A listener holds a session.
    pub online: bool,
    /// Running a job.
    pub busy: bool,
    /// Its custom labels.
    pub custom_labels: Vec<String>,
}

/// One runner as found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedRunner {
    /// `runners/<name>` exists.
    pub provisioned: bool,
    /// `runners/<name>/.runner` exists: the runner has an identity to run with.
    pub configured: bool,
    /// What it was registered and started with, per corral's record.
    pub spec: Option<SpecRecord>,
    /// Its listener, when one is alive.
    pub process: Option<LiveProcess>,
    /// corral started a listener in it since it was built (corral's record; an ephemeral
    /// runner's directory is then rebuilt before the next one).
    pub used: bool,
    /// The base it is built from, by corral's record (`None`: no record, e.g. built by an
    /// older corral).
    pub base: Option<PathBuf>,
}

/// A live listener: the one corral's record names, or one run from the runner's `bin/` that
/// no record names (corral was killed right after starting it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveProcess {
    /// Process id.
    pub pid: i32,
    /// A `Runner.Worker` child exists: a job is running.
    pub busy: bool,
}

/// Observes everything under `layout`. Unreadable parts count as absent. Live processes
/// come from one scan of `/proc` ([`ProcTable`]), whatever the number of runners.
pub fn observe(layout: &StateLayout) -> Observed {
    let mut names = BTreeSet::new();
    let mut leftovers = Vec::new();
    for entry in list_dir(&layout.runners_dir()) {
        if entry.starts_with(TMP_PREFIX) {
            leftovers.push(layout.runners_dir().join(&entry));
        } else {
            names.insert(entry);
        }
    }
    names.extend(list_dir(&layout.records_dir()));
    let records: Vec<(String, Option<ProcessRecord>)> = names
        .into_iter()
        .map(|name| {
            let record = read_record::<ProcessRecord>(&layout.process_record(&name));
            (name, record)
        })
        .collect();
    let procs = if records.iter().any(|(_, r)| r.is_some()) {
        ProcTable::scan()
    } else {
        ProcTable::default()
    };
    let mut runners: BTreeMap<String, ObservedRunner> = records
        .into_iter()
        .map(|(name, record)| {
            let runner = observe_runner(layout, &name, record, &procs);
            (name, runner)
        })
        .collect();
    if runners
        .values()
        .any(|r| r.provisioned && r.process.is_none())
    {
        // corral killed between starting a listener and recording it leaves one running
        // that no record names; starting another would make two listeners for one runner.
        // The kernel names executables by their real path: a `state_dir` reached through a
        // symlink must be compared in that form too.
        let runners_dir =
            std::fs::canonicalize(layout.runners_dir()).unwrap_or_else(|_| layout.runners_dir());
        for (name, pid) in procfs::listeners_below(&runners_dir) {
            if let Some(runner) = runners.get_mut(&name).filter(|r| r.process.is_none()) {
                runner.process = Some(LiveProcess {
                    pid,
                    busy: procfs::has_worker_child(pid),
                });
            }
        }
    }
    Observed {
        runners,
        leftovers,
        now: Some(SystemTime::now()),
        ..Observed::default()
    }
}

fn observe_runner(
    layout: &StateLayout,
    name: &str,
    record: Option<ProcessRecord>,
    procs: &ProcTable,
) -> ObservedRunner {
    let dir = layout.runner_dir(name);
    let process = record
        .filter(|rec| is_listener(rec, procs))
        .map(|rec| LiveProcess {
            pid: rec.pid,
            busy: procs.has_worker_child(rec.pid),
        });
    // corral's records, never the runner's directory, say what the directory is: a job
    // writes that directory (it can empty `_diag` or repoint a link).
    let built = read_record::<DirRecord>(&layout.dir_record(name));
    ObservedRunner {
        used: built.as_ref().is_some_and(|r| r.started),
        base: built.map(|r| r.base),
        provisioned: dir.symlink_metadata().is_ok_and(|m| m.is_dir()),
        configured: dir
            .join(".runner")
            .symlink_metadata()
            .is_ok_and(|m| m.is_file()),
        spec: read_record(&layout.spec_record(name)),
        process,
    }
}

/// Sorted names in `dir`, skipping anything that is not valid UTF-8 (never a runner name).
fn list_dir(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// True when `rec` names a live process that started when recorded. corral's own record
/// (pid and start time, which a reused pid never matches) is the identity: whatever the
/// executable looks like (a wrapper script, an interpreter, a `state_dir` reached through a
/// symlink, another mount), a recorded listener that is alive is never started twice.
fn is_listener(rec: &ProcessRecord, procs: &ProcTable) -> bool {
    procs.start_time(rec.pid) == Some(rec.start_time)
}
