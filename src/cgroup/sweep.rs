//! After a job: every process it left behind is killed, the listener and what it runs now
//! are kept. In the runner's cgroup when there is one (frozen meanwhile, so nothing forks
//! or exits while it is sorted), else in the listener's session and, with a user of the
//! runner's own, among that user's processes.
//!
//! The race with the next job: a leftover is a process that is not the listener or one of
//! its descendants and that started before the job now running did (its `Runner.Worker`'s
//! start time), or before now when none runs. The next job's processes, daemons included,
//! all started after its Worker, so they are never taken for the last job's.

use std::collections::HashMap;

use super::RunnerCgroup;
use crate::procfs;

/// A process as the sweep sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// Its pid.
    pub pid: i32,
    /// Its parent's pid.
    pub ppid: i32,
    /// Its start time (ticks since boot).
    pub start_time: u64,
    /// Its command name is `Runner.Worker`.
    pub worker: bool,
}

/// What a sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Leftover processes killed.
    pub killed: usize,
    /// A job's `Runner.Worker` was running (the next job had started).
    pub worker: bool,
}

/// The leftovers among `members` (pid and start time), and whether a Worker of the
/// listener runs now. Pure: `now` is the start-time clock at the sweep.
pub fn select_leftovers(members: &[Member], listener: i32, now: u64) -> (Vec<(i32, u64)>, bool) {
    let parent: HashMap<i32, i32> = members.iter().map(|m| (m.pid, m.ppid)).collect();
    let descends = |mut pid: i32| {
        // Up the parents that are members; a parent outside (init, a subreaper) ends it.
        for _ in 0..=members.len() {
            if pid == listener {
                return true;
            }
            match parent.get(&pid) {
                Some(&p) if p != pid => pid = p,
                _ => return false,
            }
        }
        false
    };
    let worker = members
        .iter()
        .filter(|m| m.worker && m.ppid == listener)
        .map(|m| m.start_time)
        .min();
    let cutoff = worker.unwrap_or(now);
    let leftovers = members
        .iter()
        .filter(|m| !descends(m.pid) && m.start_time < cutoff)
        .map(|m| (m.pid, m.start_time))
        .collect();
    (leftovers, worker.is_some())
}

/// The members among `pids`, read from `/proc` (those gone meanwhile are left out).
fn members_of(pids: impl IntoIterator<Item = i32>) -> Vec<Member> {
    let mut buf = String::new();
    pids.into_iter()
        .filter_map(|pid| {
            let stat = procfs::read_stat(pid, &mut buf)?;
            Some(Member {
                pid,
                ppid: stat.ppid,
                start_time: stat.start_time,
                worker: stat.comm == "Runner.Worker",
            })
        })
        .collect()
}

/// Kills the leftovers among `members`; `None` when the listener (`pid`, started at
/// `start`) is not among them.
fn kill_leftovers(members: &[Member], listener: i32, start: u64) -> Option<Swept> {
    if !members
        .iter()
        .any(|m| m.pid == listener && m.start_time == start)
    {
        return None;
    }
    // Everything listed started by now; one tick more keeps "before" strict.
    let now = procfs::now_ticks()? + 1;
    let (leftovers, worker) = select_leftovers(members, listener, now);
    let killed = leftovers
        .into_iter()
        .filter(|&(pid, started)| crate::process::kill_checked(pid, started))
        .count();
    Some(Swept { killed, worker })
}

impl RunnerCgroup {
    /// Kills what the last job left in this cgroup, keeping the listener `pid` (started at
    /// `start`) and its descendants; `None` when the listener is not in it.
    pub fn sweep(&self, listener: i32, start: u64) -> Option<Swept> {
        let frozen = self.freeze(true);
        let swept = kill_leftovers(&members_of(self.procs()), listener, start);
        if frozen {
            self.freeze(false);
        }
        swept
    }
}

/// Degraded: kills what the last job left in the listener's session and, with `uid` (a
/// user of the runner's own), among that user's processes.
pub fn sweep_session(listener: i32, start: u64, uid: Option<u32>) -> Option<Swept> {
    let mut pids: Vec<i32> = crate::process::session_members(listener, start)
        .into_iter()
        .map(|(pid, _)| pid)
        .collect();
    if let Some(uid) = uid {
        pids.extend(pids_of_user(uid));
    }
    pids.sort_unstable();
    pids.dedup();
    kill_leftovers(&members_of(pids), listener, start)
}

/// Kills every process of `uid` (a user of one runner's own, at its removal); returns how
/// many.
pub fn kill_user(uid: u32) -> usize {
    let mut killed = 0;
    for _ in 0..10 {
        let victims: Vec<(i32, u64)> = pids_of_user(uid)
            .into_iter()
            .filter_map(|pid| Some((pid, procfs::process_start_time(pid)?)))
            .collect();
        if victims.is_empty() {
            break;
        }
        killed += victims
            .into_iter()
            .filter(|&(pid, started)| crate::process::kill_checked(pid, started))
            .count();
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    killed
}

/// Every process whose real uid is `uid`.
fn pids_of_user(uid: u32) -> Vec<i32> {
    procfs::pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Uid:"))
                    .and_then(|ids| ids.split_whitespace().next()?.parse::<u32>().ok())
                    == Some(uid)
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pid: i32, parent: i32, start_time: u64) -> Member {
        Member {
            pid,
            ppid: parent,
            start_time,
            worker: false,
        }
    }

    #[test]
    fn leftovers_are_what_left_the_listener_before_the_next_job() {
        let listener = 100;
        let mut worker = m(200, listener, 50);
        worker.worker = true;
        let members = [
            m(listener, 1, 10),
            // The last job's daemon (double fork, parent init) and its child.
            m(150, 1, 30),
            m(151, 150, 31),
            // The next job: its Worker, a step, and a daemon it already started.
            worker,
            m(201, 200, 51),
            m(202, 1, 52),
        ];
        let (leftovers, busy) = select_leftovers(&members, listener, 60);
        assert_eq!(leftovers, vec![(150, 30), (151, 31)]);
        assert!(busy);
        // Between jobs everything not under the listener goes.
        let idle = [m(listener, 1, 10), m(150, 1, 30), m(300, listener, 40)];
        let (leftovers, busy) = select_leftovers(&idle, listener, 60);
        assert_eq!(leftovers, vec![(150, 30)]);
        assert!(!busy, "no worker");
        // A loop in the parents (a reused pid read half-way) does not hang it.
        let odd = [m(listener, 1, 10), m(5, 6, 20), m(6, 5, 20)];
        assert_eq!(select_leftovers(&odd, listener, 60).0.len(), 2);
    }
}
