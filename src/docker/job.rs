//! Which job a connection to a runner's socket comes from: the `Runner.Worker` process it
//! descends from (the runner starts one Worker per job, `reference/runner-contract.md` §5),
//! named by pid and start time so a reused pid is never taken for the same job.
//!
//! A client that is no Worker's descendant (a process inside a job's container that was
//! given the socket, or one that left its job's process tree) is counted to the Worker the
//! runner's socket saw last while that Worker lives, else to no job.

use std::fmt;

/// A job: its Worker's pid and start time (clock ticks after boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct JobKey {
    /// The Worker's pid.
    pub pid: i32,
    /// Its start time.
    pub start: u64,
}

impl fmt::Display for JobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.pid, self.start)
    }
}

impl JobKey {
    /// Parses what [`Display`](fmt::Display) wrote.
    pub fn parse(text: &str) -> Option<Self> {
        let (pid, start) = text.split_once('-')?;
        Some(JobKey {
            pid: pid.parse().ok()?,
            start: start.parse().ok()?,
        })
    }

    /// True while its Worker runs.
    pub fn alive(&self) -> bool {
        read_stat(self.pid).is_some_and(|s| s.start == self.start)
    }
}

/// The label value of no job.
pub const NO_JOB: &str = "none";

/// The fields of `/proc/<pid>/stat` used here.
struct Stat {
    comm: String,
    ppid: i32,
    start: u64,
}

fn read_stat(process: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{process}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last `)`.
    let close = text.rfind(')')?;
    let comm = text[text.find('(')? + 1..close].to_string();
    let mut fields = text[close + 1..].split_whitespace();
    let ppid = fields.nth(1)?.parse().ok()?;
    let start = fields.nth(17)?.parse().ok()?;
    Some(Stat { comm, ppid, start })
}

/// The `Runner.Worker` that `pid` descends from, if any.
pub fn worker_of(pid: i32) -> Option<JobKey> {
    let mut pid = pid;
    // Deep enough for any shell, `docker compose` and plugin chain; bounded for a loop.
    for _ in 0..64 {
        if pid <= 1 {
            return None;
        }
        let s = read_stat(pid)?;
        if s.comm == "Runner.Worker" {
            return Some(JobKey {
                pid,
                start: s.start,
            });
        }
        pid = s.ppid;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_die_with_their_process() {
        let me = std::process::id() as i32;
        let start = read_stat(me).expect("own stat").start;
        let key = JobKey { pid: me, start };
        assert_eq!(JobKey::parse(&key.to_string()), Some(key));
        assert!(key.alive());
        assert!(!JobKey {
            pid: me,
            start: start + 1
        }
        .alive());
        assert_eq!(JobKey::parse(NO_JOB), None);
        // The test binary is no Worker's descendant.
        assert_eq!(worker_of(me), None);
    }
}
