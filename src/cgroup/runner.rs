//! One runner's cgroup: made, entered by its listener, limited, measured, killed, removed.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{keyed, read, why, write, CgroupError, Controller, Limits, Reasons, Usage};
use crate::procfs;

/// CFS period corral sets with a CPU quota: 100 ms, the kernel's default.
const CPU_PERIOD_MICROS: u64 = 100_000;
/// How long a kill waits for the cgroup to empty.
const EMPTY_WAIT: Duration = Duration::from_secs(5);

/// A limit that is not in force, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotApplied {
    /// Its controller.
    pub controller: Controller,
    /// Why.
    pub reason: String,
}

/// One runner's cgroup: its cgroup2 directory and, on a hybrid host, its v1 directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerCgroup {
    /// `<subtree>/<name>` in cgroup2: where its processes are tracked and killed.
    pub v2: PathBuf,
    /// Controllers its cgroup2 directory has.
    pub v2_controllers: Vec<Controller>,
    /// Its directory in each v1 hierarchy corral uses.
    pub v1: Vec<(Controller, PathBuf)>,
}

impl RunnerCgroup {
    /// Makes its directories (idempotent). A v1 directory that cannot be made is left out
    /// and reported in the returned reasons; the cgroup2 one is required.
    pub fn create(&mut self) -> Result<Reasons, CgroupError> {
        make_dir(&self.v2).map_err(|source| CgroupError::Create {
            path: self.v2.clone(),
            source,
        })?;
        let mut reasons = Reasons::new();
        self.v1.retain(|(controller, dir)| match make_dir(dir) {
            Ok(()) => true,
            Err(e) => {
                reasons.insert(
                    *controller,
                    format!("cannot create `{}`: {}", dir.display(), why(&e)),
                );
                false
            }
        });
        Ok(reasons)
    }

    /// Its `cgroup.procs` files opened for writing: a child writes itself into them between
    /// fork and exec ([`crate::process::in_own_session`]).
    pub fn enter(&self) -> Result<Vec<OwnedFd>, CgroupError> {
        let mut fds = Vec::new();
        for dir in std::iter::once(&self.v2).chain(self.v1.iter().map(|(_, d)| d)) {
            let path = dir.join("cgroup.procs");
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|source| CgroupError::Open {
                    path: path.clone(),
                    source,
                })?;
            fds.push(OwnedFd::from(file));
        }
        Ok(fds)
    }

    /// Sets `limits` (and lifts those no longer set) where its controllers are; returns the
    /// limits that are not in force, with `missing` telling why a controller is absent.
    pub fn apply(&self, limits: &Limits, missing: &Reasons) -> Vec<NotApplied> {
        let mut out = Vec::new();
        for controller in Controller::ALL {
            let wanted = limits.controllers().contains(&controller);
            let result = if self.v2_controllers.contains(&controller) {
                set_v2(&self.v2, controller, limits)
            } else if let Some((_, dir)) = self.v1.iter().find(|(c, _)| *c == controller) {
                set_v1(dir, controller, limits)
            } else if wanted {
                Err(missing.get(&controller).cloned().unwrap_or_else(|| {
                    format!("no `{controller}` controller for `{}`", self.v2.display())
                }))
            } else {
                Ok(())
            };
            match result {
                Err(reason) if wanted => out.push(NotApplied { controller, reason }),
                Err(reason) => {
                    tracing::debug!(cgroup = %self.v2.display(), %controller, reason, "cannot lift a limit");
                }
                Ok(()) => {}
            }
        }
        out
    }

    /// The processes in it now.
    pub fn procs(&self) -> Vec<i32> {
        read(&self.v2.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// True while any process is in it (or its directory cannot be read).
    pub fn populated(&self) -> bool {
        match read(&self.v2.join("cgroup.events")) {
            Some(events) => keyed(&events, "populated") != Some(0),
            None => self.v2.exists() && !self.procs().is_empty(),
        }
    }

    /// Freezes (`true`) or thaws it; true when the freezer answered (cgroup2, Linux 5.2+). A
    /// freeze waits up to a second for every task to stop.
    pub fn freeze(&self, on: bool) -> bool {
        if write(&self.v2.join("cgroup.freeze"), if on { "1" } else { "0" }).is_err() {
            return false;
        }
        if on {
            let deadline = Instant::now() + Duration::from_secs(1);
            while Instant::now() < deadline {
                let events = read(&self.v2.join("cgroup.events")).unwrap_or_default();
                if keyed(&events, "frozen") == Some(1) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        true
    }

    /// Kills every process in it and waits (a few seconds at most) until it is empty:
    /// `cgroup.kill` (Linux 5.14+), else freeze, SIGKILL each, thaw. Returns false when
    /// processes are still there.
    pub fn kill(&self) -> bool {
        if !self.v2.exists() {
            return true;
        }
        if write(&self.v2.join("cgroup.kill"), "1").is_err() {
            let frozen = self.freeze(true);
            for pid in self.procs() {
                kill_if_member(pid);
            }
            if frozen {
                self.freeze(false);
            }
        }
        let deadline = Instant::now() + EMPTY_WAIT;
        while self.populated() && Instant::now() < deadline {
            // A process forked before the kill reached it (no cgroup.kill): kill again.
            for pid in self.procs() {
                kill_if_member(pid);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        !self.populated()
    }

    /// Removes its directories once empty; absent is fine.
    pub fn remove(&self) {
        for dir in std::iter::once(&self.v2).chain(self.v1.iter().map(|(_, d)| d)) {
            let deadline = Instant::now() + Duration::from_secs(2);
            loop {
                match std::fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e) if Instant::now() > deadline => {
                        tracing::warn!(cgroup = %dir.display(), cause = %e, "cannot remove a runner's cgroup");
                        break;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
    }

    /// What it has used: CPU from cgroup2's `cpu.stat` (kept without a controller), memory
    /// from cgroup2's memory controller or the v1 one.
    pub fn usage(&self) -> Usage {
        let cpu = read(&self.v2.join("cpu.stat")).unwrap_or_default();
        let mut usage = Usage {
            cpu_micros: keyed(&cpu, "usage_usec").unwrap_or(0),
            processes: self.procs().len() as u64,
            ..Usage::default()
        };
        if self.v2_controllers.contains(&Controller::Memory) {
            usage.memory_bytes = number(&self.v2.join("memory.current"));
            usage.memory_peak_bytes = number(&self.v2.join("memory.peak"));
            usage.oom_kills =
                read(&self.v2.join("memory.events")).and_then(|e| keyed(&e, "oom_kill"));
        } else if let Some((_, dir)) = self.v1.iter().find(|(c, _)| *c == Controller::Memory) {
            usage.memory_bytes = number(&dir.join("memory.usage_in_bytes"));
            usage.memory_peak_bytes = number(&dir.join("memory.max_usage_in_bytes"));
            usage.oom_kills =
                read(&dir.join("memory.oom_control")).and_then(|e| keyed(&e, "oom_kill"));
        }
        usage
    }
}

fn make_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

fn number(path: &Path) -> Option<u64> {
    read(path)?.parse().ok()
}

/// Writes one limit file, the reason in words when it fails.
fn set(dir: &Path, file: &str, value: &str) -> Result<(), String> {
    let path = dir.join(file);
    write(&path, value)
        .map_err(|e| format!("cannot write {value} to `{}`: {}", path.display(), why(&e)))
}

/// A limit's value, or the controller's word for none.
fn or_unlimited(value: Option<u64>, unlimited: &str) -> String {
    value.map_or_else(|| unlimited.to_string(), |v| v.to_string())
}

fn set_v2(dir: &Path, controller: Controller, limits: &Limits) -> Result<(), String> {
    let cpu_quota = limits.cpu_millis.map(|m| u64::from(m) * 100);
    match controller {
        Controller::Cpu => set(
            dir,
            "cpu.max",
            &format!("{} {CPU_PERIOD_MICROS}", or_unlimited(cpu_quota, "max")),
        ),
        Controller::Memory => set(dir, "memory.max", &or_unlimited(limits.memory_bytes, "max")),
        Controller::Pids => set(
            dir,
            "pids.max",
            &or_unlimited(limits.pids.map(u64::from), "max"),
        ),
    }
}

fn set_v1(dir: &Path, controller: Controller, limits: &Limits) -> Result<(), String> {
    let cpu_quota = limits.cpu_millis.map(|m| u64::from(m) * 100);
    match controller {
        Controller::Cpu => {
            set(dir, "cpu.cfs_period_us", &CPU_PERIOD_MICROS.to_string())?;
            set(dir, "cpu.cfs_quota_us", &or_unlimited(cpu_quota, "-1"))
        }
        Controller::Memory => set(
            dir,
            "memory.limit_in_bytes",
            &or_unlimited(limits.memory_bytes, "-1"),
        ),
        Controller::Pids => set(
            dir,
            "pids.max",
            &or_unlimited(limits.pids.map(u64::from), "max"),
        ),
    }
}

/// SIGKILLs `pid` through a pidfd, checked by its start time after opening, so a pid that
/// was reused after `cgroup.procs` was read is never signalled.
fn kill_if_member(pid: i32) {
    let Some(started) = procfs::process_start_time(pid) else {
        return;
    };
    crate::process::kill_checked(pid, started);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(dir: &Path, files: &[(&str, &str)]) {
        std::fs::create_dir_all(dir).expect("mkdir");
        for (name, text) in files {
            std::fs::write(dir.join(name), text).expect("write");
        }
    }

    #[test]
    fn limits_go_to_v2_or_v1_and_absent_ones_are_reported() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let v2 = tmp.path().join("v2/r");
        let v1_pids = tmp.path().join("pids/r");
        fake(&v2, &[("memory.max", ""), ("cpu.max", "")]);
        fake(&v1_pids, &[("pids.max", "")]);
        let cg = RunnerCgroup {
            v2: v2.clone(),
            v2_controllers: vec![Controller::Memory],
            v1: vec![(Controller::Pids, v1_pids.clone())],
        };
        let limits = Limits {
            cpu_millis: Some(1500),
            memory_bytes: Some(64 << 20),
            pids: Some(100),
        };
        let mut missing = Reasons::new();
        missing.insert(Controller::Cpu, "no `cpu` controller: because".into());
        let not = cg.apply(&limits, &missing);
        assert_eq!(
            not,
            vec![NotApplied {
                controller: Controller::Cpu,
                reason: "no `cpu` controller: because".into()
            }]
        );
        let text = |p: &Path| std::fs::read_to_string(p).expect("read");
        assert_eq!(text(&v2.join("memory.max")), "67108864");
        assert_eq!(text(&v1_pids.join("pids.max")), "100");
        assert_eq!(text(&v2.join("cpu.max")), "", "cpu is not this cgroup's");
        // Lifted when no longer set.
        assert!(cg.apply(&Limits::default(), &missing).is_empty());
        assert_eq!(text(&v2.join("memory.max")), "max");
        assert_eq!(text(&v1_pids.join("pids.max")), "max");
    }

    #[test]
    fn cpu_quota_in_both_hierarchies() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let limits = Limits {
            cpu_millis: Some(2000),
            ..Limits::default()
        };
        let v2 = tmp.path().join("v2");
        fake(&v2, &[("cpu.max", "")]);
        set_v2(&v2, Controller::Cpu, &limits).expect("set");
        assert_eq!(
            std::fs::read_to_string(v2.join("cpu.max")).expect("read"),
            "200000 100000"
        );
        let v1 = tmp.path().join("v1");
        fake(&v1, &[("cpu.cfs_period_us", ""), ("cpu.cfs_quota_us", "")]);
        set_v1(&v1, Controller::Cpu, &limits).expect("set");
        assert_eq!(
            std::fs::read_to_string(v1.join("cpu.cfs_quota_us")).expect("read"),
            "200000"
        );
        let err = set_v1(
            &tmp.path().join("absent"),
            Controller::Memory,
            &limits.clone(),
        )
        .expect_err("no such file");
        assert!(err.contains("memory.limit_in_bytes"), "{err}");
    }

    #[test]
    fn usage_from_v2_and_from_v1() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let v2 = tmp.path().join("v2");
        fake(
            &v2,
            &[
                ("cpu.stat", "usage_usec 2500000\nuser_usec 2000000\n"),
                ("cgroup.procs", "10\n11\n"),
                ("memory.current", "4096\n"),
                ("memory.peak", "8192\n"),
                ("memory.events", "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n"),
            ],
        );
        let mut cg = RunnerCgroup {
            v2: v2.clone(),
            v2_controllers: vec![Controller::Memory],
            v1: Vec::new(),
        };
        let usage = cg.usage();
        assert_eq!(
            usage,
            Usage {
                cpu_micros: 2_500_000,
                memory_bytes: Some(4096),
                memory_peak_bytes: Some(8192),
                oom_kills: Some(1),
                processes: 2,
            }
        );
        let json = serde_json::to_value(usage).expect("json");
        assert_eq!(json["cpu_seconds"], 2.5);
        let v1 = tmp.path().join("memory");
        fake(
            &v1,
            &[
                ("memory.usage_in_bytes", "100"),
                ("memory.max_usage_in_bytes", "200"),
                (
                    "memory.oom_control",
                    "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
                ),
            ],
        );
        cg.v2_controllers.clear();
        cg.v1.push((Controller::Memory, v1));
        let usage = cg.usage();
        assert_eq!(
            (usage.memory_bytes, usage.memory_peak_bytes, usage.oom_kills),
            (Some(100), Some(200), Some(2))
        );
    }
}
