//! Child processes of corral: how a runner process is launched (environment, user, session,
//! log file), and the start-time-checked signals a listener's session is stopped with
//! ([`crate::supervisor`] puts them in order).
//!
//! Runner processes start from an empty environment plus a few basics and the runner's own
//! `env`, so nothing of corral's (a `GITHUB_TOKEN` among it) reaches a job.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use std::os::fd::OwnedFd;

use nix::unistd::{Gid, Uid};
use rustix::process::{pidfd_open, pidfd_send_signal, PidfdFlags, Signal};

use crate::procfs;

/// Who a runner process runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunAs {
    /// corral's own user (corral is not root, or `allow_root: true`).
    Inherit,
    /// Drop to this user (corral is root).
    User {
        /// User id.
        uid: Uid,
        /// Primary group id.
        gid: Gid,
    },
}

/// Variables passed through from corral's environment when set.
const PASSED_THROUGH: &[&str] = &[
    "PATH",
    "LANG",
    "LC_ALL",
    "TZ",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
];
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A `Command` for a runner program: cleared environment, basics, the runner's `env`,
/// `RUNNER_ALLOW_RUNASROOT` when allowed, its own user.
pub fn runner_command(
    program: &Path,
    cwd: &Path,
    env: &BTreeMap<String, String>,
    run_as: RunAs,
    allow_root: bool,
    home: &Path,
) -> tokio::process::Command {
    let mut cmd = std::process::Command::new(program);
    cmd.current_dir(cwd).env_clear().stdin(Stdio::null());
    for var in PASSED_THROUGH {
        if let Ok(value) = std::env::var(var) {
            cmd.env(var, value);
        }
    }
    if std::env::var_os("PATH").is_none() {
        cmd.env("PATH", DEFAULT_PATH);
    }
    cmd.env("HOME", home);
    if allow_root {
        cmd.env("RUNNER_ALLOW_RUNASROOT", "1");
    }
    cmd.envs(env);
    if let RunAs::User { uid, gid } = run_as {
        // std drops supplementary groups (setgroups) before setuid when started as root.
        cmd.uid(uid.as_raw()).gid(gid.as_raw());
    }
    tokio::process::Command::from(cmd)
}

/// Sends stdout and stderr of `cmd` to `log`, appended, and starts it in a session of its
/// own (see [`in_own_session`]), so that it outlives corral (a restarted corral adopts it).
pub fn detach_to_log(
    cmd: &mut tokio::process::Command,
    log: &Path,
    enter: Vec<OwnedFd>,
) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    // corral's alone, like every record: it names the runner's jobs.
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(log)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    cmd.stdout(file.try_clone()?)
        .stderr(file)
        .kill_on_drop(false);
    in_own_session(cmd, enter);
    Ok(())
}

/// Makes `cmd` start in a session of its own, without a controlling terminal (`setsid`),
/// after writing itself into each of `enter` (`cgroup.procs` files corral opened, so that
/// the write works after the child dropped to the runner's user, and so that the child is
/// in its cgroups before it can start anything).
///
/// A job can leave a process group (`setpgid`) but not its session without leaving the
/// session for good (`setsid`), which the runner's cgroup then catches; without a terminal,
/// no job can open `/dev/tty` and type into the shell that started corral (`TIOCSTI`).
pub fn in_own_session(cmd: &mut tokio::process::Command, enter: Vec<OwnedFd>) {
    let hook = move || -> std::io::Result<()> {
        for procs in &enter {
            // "0" is the writing process itself; the descriptor keeps corral's credentials.
            rustix::io::write(procs, b"0")?;
        }
        rustix::process::setsid()?;
        Ok(())
    };
    // SAFETY: the hook runs in the forked child before exec; it only makes the `write` and
    // `setsid` system calls (async-signal-safe), allocates nothing and takes no lock.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(hook);
    }
}

/// SIGKILLs every process in the session of the listener `sid` (started at `start_time`),
/// the listener included, until none is left; returns how many were killed.
///
/// A session id stays taken while any process of the session lives, so the processes found
/// are the listener's own unless its whole session ended and `sid` was given to a new
/// process that made its own session: that one started later than the listener, and is
/// told by its start time when it is alive. Members are checked by start time (none can
/// predate the listener) and signalled through pidfds.
pub fn kill_session(sid: i32, start_time: u64) -> usize {
    let mut killed = 0;
    for _ in 0..ROUNDS {
        let members = session_members(sid, start_time);
        if members.is_empty() {
            break;
        }
        for (pid, started) in members {
            if signal_member(pid, started, sid) {
                killed += 1;
            }
        }
        // Forks made while the round ran are in the next one.
        std::thread::sleep(Duration::from_millis(10));
    }
    killed
}

/// SIGINTs the other members of the listener's process group (its Worker, the job's steps
/// that did not leave it), each checked and signalled through a pidfd.
pub fn interrupt_group(sid: i32, start_time: u64) {
    let mut buf = String::new();
    for (pid, started) in session_members(sid, start_time) {
        let in_group = procfs::read_stat(pid, &mut buf).is_some_and(|s| s.pgrp == sid);
        if pid != sid && in_group {
            signal_checked(pid, Signal::INT, |s| {
                s.pgrp == sid && s.start_time == started
            });
        }
    }
}

/// Rounds of [`kill_session`]: a session that keeps forking faster is the cgroup's to end.
const ROUNDS: usize = 20;

/// The live members of `sid`'s session, as (pid, start time); empty when `sid` now names
/// another process than the listener that started at `start_time`.
pub fn session_members(sid: i32, start_time: u64) -> Vec<(i32, u64)> {
    let mut buf = String::new();
    if let Some(leader) = procfs::read_stat(sid, &mut buf) {
        if leader.start_time != start_time {
            return Vec::new();
        }
    }
    procfs::pids()
        .into_iter()
        .filter_map(|pid| {
            let stat = procfs::read_stat(pid, &mut buf)?;
            // A zombie is past signals; counting it would only repeat the rounds.
            let member = stat.session == sid && stat.start_time >= start_time;
            (member && !stat.is_zombie()).then_some((pid, stat.start_time))
        })
        .collect()
}

/// SIGKILLs `pid` through a pidfd, if it is still the member of `sid` that started at
/// `started`.
fn signal_member(pid: i32, started: u64, sid: i32) -> bool {
    signal_checked(pid, Signal::KILL, |s| {
        s.session == sid && s.start_time == started
    })
}

/// SIGKILLs `pid` through a pidfd if it is still the process that started at `started`.
pub fn kill_checked(pid: i32, started: u64) -> bool {
    signal_checked(pid, Signal::KILL, |s| s.start_time == started)
}

/// Sends `signal` to `pid` through a pidfd opened before `check` approves of the process,
/// so the process checked is the one signalled.
fn signal_checked(pid: i32, signal: Signal, check: impl Fn(&procfs::Stat<'_>) -> bool) -> bool {
    let Some(fd) =
        rustix::process::Pid::from_raw(pid).and_then(|p| pidfd_open(p, PidfdFlags::empty()).ok())
    else {
        return false;
    };
    let mut buf = String::new();
    let approved = procfs::read_stat(pid, &mut buf).is_some_and(|s| check(&s));
    approved && pidfd_send_signal(&fd, signal).is_ok()
}

/// Caps a log file: past `max` bytes it moves to `<name>.log.1` (replacing an older one)
/// and starts again empty.
pub fn cap_log(path: &Path, max: u64) -> std::io::Result<()> {
    let len = std::fs::metadata(path).map_or(0, |m| m.len());
    if len <= max {
        return Ok(());
    }
    std::fs::copy(path, path.with_extension("log.1"))?;
    // Truncate in place rather than rename: the listener holds the file open with O_APPEND
    // and goes on writing at the new end.
    OpenOptions::new().write(true).open(path)?.set_len(0)
}
