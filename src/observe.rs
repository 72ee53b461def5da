//! Reads what is on the host into [`Observed`]: runner directories, corral's records and live
//! listener processes. It only reads; the planner decides.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::config::BaseSource;
use crate::layout::{read_record, ProcessRecord, SpecRecord, StateLayout, TMP_PREFIX};

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
    /// Queued jobs by repository URL (lower case), each as its `runs-on` labels, for the
    /// pools (filled by the controller from its last demand poll).
    pub demand: BTreeMap<String, Vec<Vec<String>>>,
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
    /// `runners/<name>/.runner` exists: `config.sh` (or a JIT config) registered it.
    pub configured: bool,
    /// What it was registered and started with, per corral's record.
    pub spec: Option<SpecRecord>,
    /// Its listener, when one is alive.
    pub process: Option<LiveProcess>,
    /// A listener has run in it (its `_diag` holds a log).
    pub used: bool,
    /// The base it is built from (where its `externals` link points, one level up).
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

/// Observes everything under `layout`. Unreadable parts count as absent.
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
    let mut runners: BTreeMap<String, ObservedRunner> = names
        .into_iter()
        .map(|name| {
            let runner = observe_runner(layout, &name);
            (name, runner)
        })
        .collect();
    if runners
        .values()
        .any(|r| r.provisioned && r.process.is_none())
    {
        // corral killed between starting a listener and recording it leaves one running
        // that no record names; starting another would make two listeners for one runner.
        for (name, pid) in unrecorded_listeners(&layout.runners_dir()) {
            if let Some(runner) = runners.get_mut(&name).filter(|r| r.process.is_none()) {
                runner.process = Some(LiveProcess {
                    pid,
                    busy: has_worker_child(pid),
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

fn observe_runner(layout: &StateLayout, name: &str) -> ObservedRunner {
    let dir = layout.runner_dir(name);
    let process = read_record::<ProcessRecord>(&layout.process_record(name))
        .filter(|rec| is_listener(rec, &dir))
        .map(|rec| LiveProcess {
            pid: rec.pid,
            busy: has_worker_child(rec.pid),
        });
    ObservedRunner {
        used: std::fs::read_dir(dir.join("_diag")).is_ok_and(|mut d| d.next().is_some()),
        base: std::fs::read_link(dir.join("externals"))
            .ok()
            .and_then(|t| t.parent().map(Path::to_path_buf)),
        provisioned: dir.is_dir(),
        configured: dir.join(".runner").is_file(),
        spec: read_record(&layout.spec_record(name)),
        process,
    }
}

/// Every live `Runner.Listener` run from `runners/<name>/bin/`, as (name, pid).
fn unrecorded_listeners(runners_dir: &Path) -> Vec<(String, i32)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(exe) = std::fs::read_link(entry.path().join("exe")) else {
            continue;
        };
        let Ok(rest) = exe.strip_prefix(runners_dir) else {
            continue;
        };
        let parts: Vec<_> = rest.iter().collect();
        if let [name, bin, listener] = parts[..] {
            if bin == "bin" && listener == "Runner.Listener" {
                found.push((name.to_string_lossy().into_owned(), pid));
            }
        }
    }
    found.sort();
    found
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

/// The process start time in clock ticks since boot, from `/proc/<pid>/stat`.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last `)`.
    let after = &stat[stat.rfind(')')? + 1..];
    // After the name: field 3 (state) is index 0, so field 22 (starttime) is index 19.
    after.split_whitespace().nth(19)?.parse().ok()
}

/// When `pid` started, from its start time in ticks after boot and the boot time.
pub fn process_started_at(pid: i32) -> Option<std::time::SystemTime> {
    // Clock ticks per second: 100 on every Linux this runs on (USER_HZ).
    const TICKS: u64 = 100;
    let ticks = process_start_time(pid)?;
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let boot: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let millis = boot * 1000 + ticks * 1000 / TICKS;
    Some(std::time::UNIX_EPOCH + std::time::Duration::from_millis(millis))
}

/// True when `rec` names a live process that started when recorded and, when its
/// executable can be read, runs from this runner's `bin/`.
fn is_listener(rec: &ProcessRecord, runner_dir: &Path) -> bool {
    if process_start_time(rec.pid) != Some(rec.start_time) {
        return false;
    }
    match std::fs::read_link(format!("/proc/{}/exe", rec.pid)) {
        Ok(exe) => exe.starts_with(runner_dir.join("bin")),
        // Another user's process cannot be read without privileges; the start time matched.
        Err(_) => true,
    }
}

/// True when `pid` has a child whose command name is `Runner.Worker`
/// (`reference/runner-contract.md` §5).
pub fn has_worker_child(pid: i32) -> bool {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten();
    tasks.filter_map(Result::ok).any(|task| {
        std::fs::read_to_string(task.path().join("children"))
            .unwrap_or_default()
            .split_whitespace()
            .any(|child| {
                std::fs::read_to_string(format!("/proc/{child}/comm"))
                    .is_ok_and(|comm| comm.trim_end() == "Runner.Worker")
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_start_time_is_readable() {
        let pid = std::process::id() as i32;
        assert!(process_start_time(pid).is_some());
        assert_eq!(process_start_time(-1), None);
    }
}
