//! Reads what is on the host into [`Observed`]: runner directories, corral's records and live
//! listener processes. It only reads; the planner decides.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::config::BaseSource;
use crate::layout::{read_record, DirRecord, ProcessRecord, SpecRecord, StateLayout, TMP_PREFIX};
use crate::procfs::parse_stat;
pub use crate::procfs::process_start_time;

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

/// A job GitHub lists as queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedJob {
    /// Its id.
    pub id: u64,
    /// Its `runs-on` labels.
    pub labels: Vec<String>,
    /// Since when it is queued (its `created_at`, or when corral first saw it).
    pub queued_at: Option<SystemTime>,
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
        for (name, pid) in unrecorded_listeners(&runners_dir) {
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

/// Every process on the host, read once: start times, and which processes have a
/// `Runner.Worker` child (`reference/runner-contract.md` §5). One read of
/// `/proc/<pid>/stat` per process replaces a walk of every listener's threads' `children`.
#[derive(Debug, Default)]
pub struct ProcTable {
    start_times: HashMap<i32, u64>,
    parents: HashMap<i32, i32>,
    worker_parents: HashSet<i32>,
}

impl ProcTable {
    /// Scans `/proc`; processes that end meanwhile are simply missing.
    pub fn scan() -> Self {
        let mut table = ProcTable::default();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return table;
        };
        // A `stat` line is well under 1 KiB, and procfs hands it over in one read: open,
        // read, close, without the size probes of `read_to_string`.
        let mut buf = [0_u8; 4096];
        for entry in dir.filter_map(Result::ok) {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            let Ok(len) = std::fs::File::open(entry.path().join("stat"))
                .and_then(|mut f| std::io::Read::read(&mut f, &mut buf))
            else {
                continue;
            };
            // A command name may be any bytes; it is compared with an ASCII name only.
            let text = String::from_utf8_lossy(&buf[..len]);
            let Some(stat) = parse_stat(&text) else {
                continue;
            };
            if stat.comm == "Runner.Worker" {
                table.worker_parents.insert(stat.ppid);
            }
            table.parents.insert(pid, stat.ppid);
            table.start_times.insert(pid, stat.start_time);
        }
        table
    }

    /// The start time of `pid`, if it was alive at the scan.
    pub fn start_time(&self, pid: i32) -> Option<u64> {
        self.start_times.get(&pid).copied()
    }

    /// True when a `Runner.Worker` ran below `pid` at the scan: its child, or, for a
    /// listener started through a wrapper script, a child of the wrapper's descendants.
    pub fn has_worker_child(&self, pid: i32) -> bool {
        // A wrapper is a level or two; the bound keeps a cycle in a torn read finite.
        const DEPTH: usize = 4;
        self.worker_parents.iter().any(|&parent| {
            let mut at = parent;
            for _ in 0..DEPTH {
                if at == pid {
                    return true;
                }
                match self.parents.get(&at) {
                    Some(&up) if up > 1 => at = up,
                    _ => return false,
                }
            }
            false
        })
    }
}

/// When `pid` started, from its start time in ticks after boot and the boot time.
pub fn process_started_at(pid: i32) -> Option<std::time::SystemTime> {
    const TICKS: u64 = crate::procfs::TICKS_PER_SECOND;
    // The boot time never changes; `/proc/stat` is long and costly to format.
    static BOOT: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    let ticks = process_start_time(pid)?;
    let boot = (*BOOT.get_or_init(|| {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        stat.lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()
    }))?;
    let millis = boot * 1000 + ticks * 1000 / TICKS;
    Some(std::time::UNIX_EPOCH + std::time::Duration::from_millis(millis))
}

/// True when `rec` names a live process that started when recorded. corral's own record
/// (pid and start time, which a reused pid never matches) is the identity: whatever the
/// executable looks like (a wrapper script, an interpreter, a `state_dir` reached through a
/// symlink, another mount), a recorded listener that is alive is never started twice.
fn is_listener(rec: &ProcessRecord, procs: &ProcTable) -> bool {
    procs.start_time(rec.pid) == Some(rec.start_time)
}

/// True when a `Runner.Worker` runs below `pid` (`reference/runner-contract.md` §5); see
/// [`ProcTable::has_worker_child`].
pub fn has_worker_child(pid: i32) -> bool {
    ProcTable::scan().has_worker_child(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_scan_finds_start_times_and_worker_children() {
        // A child whose command name is `Runner.Worker`: a copy of `sleep` under that name.
        let dir = tempfile::tempdir().expect("tempdir");
        let worker = dir.path().join("Runner.Worker");
        let sleep = ["/bin/sleep", "/usr/bin/sleep"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("sleep");
        std::fs::copy(sleep, &worker).expect("copy sleep");
        // A test forking meanwhile may briefly hold the copy open for writing (ETXTBSY).
        let mut child = (0..50)
            .find_map(|_| {
                let spawned = std::process::Command::new(&worker).arg("30").spawn();
                if spawned.is_err() {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                spawned.ok()
            })
            .expect("start the fake worker");
        let me = std::process::id() as i32;
        let child_pid = child.id() as i32;
        let found = (0..100).any(|_| {
            let table = ProcTable::scan();
            let ok = table.has_worker_child(me)
                && table.start_time(child_pid) == process_start_time(child_pid);
            if !ok {
                // exec may not have renamed the child yet.
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            ok
        });
        let _ = child.kill();
        let _ = child.wait();
        assert!(found, "the scan sees our Runner.Worker child");
        let table = ProcTable::scan();
        assert_eq!(table.start_time(me), process_start_time(me));
        assert!(!table.has_worker_child(child_pid));
    }
}
