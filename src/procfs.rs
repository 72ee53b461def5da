//! What `/proc` says about processes: the fields of `/proc/<pid>/stat` corral acts on
//! (parent, process group, session, terminal, start time), every live pid, and the clock
//! that start times are measured in; which listeners run from a runners directory and
//! which have a `Runner.Worker` below them. Every read of `/proc` in corral is here.
//!
//! A pid alone never names a process to corral: a pid is reused once its process is gone,
//! so every record pairs it with the start time read here.

use std::collections::{HashMap, HashSet};
use std::path::Path;

/// The fields of one `/proc/<pid>/stat` line corral needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat<'a> {
    /// The command name (up to 15 bytes, any bytes).
    pub comm: &'a str,
    /// The state letter: `R`, `S`, `D`, … ; `Z` for a zombie (exited, not yet reaped).
    pub state: char,
    /// Parent pid.
    pub ppid: i32,
    /// Process group id.
    pub pgrp: i32,
    /// Session id.
    pub session: i32,
    /// The controlling terminal's device number, 0 for none.
    pub tty_nr: i32,
    /// Start time in clock ticks since boot.
    pub start_time: u64,
}

/// Parses the text of `/proc/<pid>/stat`.
pub fn parse_stat(stat: &str) -> Option<Stat<'_>> {
    // The command name may contain spaces and parentheses: fields start after the last `)`.
    let close = stat.rfind(')')?;
    let comm = &stat[stat.find('(')? + 1..close];
    // After the name: field 3 (state) is index 0, then ppid, pgrp, session, tty_nr; field 22
    // (starttime) is index 19.
    let mut fields = stat[close + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    let session = fields.next()?.parse().ok()?;
    let tty_nr = fields.next()?.parse().ok()?;
    let start_time = fields.nth(14)?.parse().ok()?;
    Some(Stat {
        comm,
        state,
        ppid,
        pgrp,
        session,
        tty_nr,
        start_time,
    })
}

/// Reads `/proc/<pid>/stat` into `buf` and parses it; `None` once the process is gone.
pub fn read_stat(pid: i32, buf: &mut String) -> Option<Stat<'_>> {
    buf.clear();
    let mut file = std::fs::File::open(format!("/proc/{pid}/stat")).ok()?;
    std::io::Read::read_to_string(&mut file, buf).ok()?;
    parse_stat(buf)
}

/// The process start time in clock ticks since boot, from `/proc/<pid>/stat`.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let mut buf = String::new();
    Some(read_stat(pid, &mut buf)?.start_time)
}

impl Stat<'_> {
    /// It exited: a zombie only its parent can still reap, or one being torn down (`X`).
    pub fn is_zombie(&self) -> bool {
        matches!(self.state, 'Z' | 'X')
    }
}

/// The start time of `pid` while it runs: `None` once it is gone or a zombie. A listener
/// whose parent (corral, killed) is gone may stay a zombie where nothing reaps orphans; it
/// is no listener any more.
pub fn live_start_time(pid: i32) -> Option<u64> {
    let mut buf = String::new();
    read_stat(pid, &mut buf)
        .filter(|s| !s.is_zombie())
        .map(|s| s.start_time)
}

/// Every pid in `/proc` now (processes come and go meanwhile).
pub fn pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// Clock ticks per second of start times: 100 on every Linux corral runs on (`USER_HZ`).
pub const TICKS_PER_SECOND: u64 = 100;

/// Now, in the clock of start times (ticks since boot): a process that starts later has a
/// larger start time.
pub fn now_ticks() -> Option<u64> {
    uptime_ticks(Path::new("/proc/uptime"))
}

fn uptime_ticks(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let seconds = text.split_whitespace().next()?;
    let (whole, frac) = seconds.split_once('.').unwrap_or((seconds, "0"));
    let frac: String = frac.chars().chain("00".chars()).take(2).collect();
    Some(whole.parse::<u64>().ok()? * TICKS_PER_SECOND + frac.parse::<u64>().ok()?)
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
            // An exited listener not yet reaped is not alive: it is never adopted.
            if !stat.is_zombie() {
                table.start_times.insert(pid, stat.start_time);
            }
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

/// True when a `Runner.Worker` runs below `pid` (`reference/runner-contract.md` §5); see
/// [`ProcTable::has_worker_child`].
pub fn has_worker_child(pid: i32) -> bool {
    ProcTable::scan().has_worker_child(pid)
}

/// Every live `Runner.Listener` run from `<runners_dir>/<name>/bin/`, as (name, pid), by
/// `/proc/<pid>/exe` (the kernel's real path: compare with a canonical `runners_dir`).
pub fn listeners_below(runners_dir: &Path) -> Vec<(String, i32)> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_survive_odd_command_names() {
        let stat = "42 (a) b (c)) S 7 40 39 34817 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 12345 0 0";
        let parsed = parse_stat(stat).expect("parses");
        assert_eq!(parsed.comm, "a) b (c)");
        assert_eq!(parsed.state, 'S');
        assert!(!parsed.is_zombie());
        assert_eq!(parsed.ppid, 7);
        assert_eq!(parsed.pgrp, 40);
        assert_eq!(parsed.session, 39);
        assert_eq!(parsed.tty_nr, 34817);
        assert_eq!(parsed.start_time, 12345);
    }

    #[test]
    fn own_stat_is_readable_and_now_is_later() {
        let me = std::process::id() as i32;
        let start = process_start_time(me).expect("own start time");
        assert!(now_ticks().expect("uptime") >= start);
        assert_eq!(process_start_time(-1), None);
        assert!(pids().contains(&me));
    }

    #[test]
    fn uptime_in_ticks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("uptime");
        std::fs::write(&file, "3512.47 7001.20\n").expect("write");
        assert_eq!(uptime_ticks(&file), Some(351_247));
        std::fs::write(&file, "12.5 1.0\n").expect("write");
        assert_eq!(uptime_ticks(&file), Some(1250));
    }

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
