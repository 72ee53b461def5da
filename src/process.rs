//! Child processes of corral: how a runner process is launched (environment, user, process
//! group, log file) and how a process group is stopped.
//!
//! Runner processes start from an empty environment plus a few basics and the runner's own
//! `env`, so nothing of corral's (a `GITHUB_TOKEN` among it) reaches a job.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::{Gid, Pid, Uid};

use crate::observe::process_start_time;

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

/// Sends stdout and stderr of `cmd` to `log`, appended, in its own process group so that a
/// stop reaches the listener, its Worker and the job's processes, and so that it outlives
/// corral (a restarted corral adopts it).
pub fn detach_to_log(cmd: &mut tokio::process::Command, log: &Path) -> std::io::Result<()> {
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
        .process_group(0)
        .kill_on_drop(false);
    Ok(())
}

/// True while `pid` is alive and is the process that started at `start_time`.
pub fn is_same_process(pid: i32, start_time: u64) -> bool {
    process_start_time(pid) == Some(start_time)
}

/// How often an adopted process is checked where pidfds are missing (Linux < 5.3).
const GONE_POLL: Duration = Duration::from_secs(1);

/// Resolves once the process `pid` that started at `start_time` is gone. For a process that
/// is not corral's child (a listener adopted after a restart), which cannot be waited for:
/// a pidfd becomes readable when the process exits, so nothing runs meanwhile. Without
/// pidfds (old kernels, no file descriptor left) its `/proc` entry is checked every second.
pub async fn wait_gone(pid: i32, start_time: u64) {
    if let Some(pidfd) = rustix::process::Pid::from_raw(pid)
        .and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::NONBLOCK).ok())
    {
        // Checked after opening: the pidfd then names the recorded process, not a reuse.
        if !is_same_process(pid, start_time) {
            return;
        }
        // Deprecated because a generic `AsRawFd` could close or swap its fd; an `OwnedFd`
        // owns it until the `AsyncFd` drops it, which is the condition it asks for.
        #[allow(
            deprecated,
            reason = "the safe constructor is sound for an OwnedFd; the new one is unsafe"
        )]
        let readable =
            tokio::io::unix::AsyncFd::with_interest(pidfd, tokio::io::Interest::READABLE);
        if let Ok(exit) = readable {
            let _ = exit.readable().await;
            return;
        }
    }
    while is_same_process(pid, start_time) {
        tokio::time::sleep(GONE_POLL).await;
    }
}

/// Stops the process group led by `pid` (started at `start_time`): SIGINT, which lets the
/// runner finish cleanly (and cancel a job), then SIGKILL to the group after `grace`.
/// Returns true when it ended within the grace period.
pub async fn stop_group(pid: i32, start_time: u64, grace: Duration) -> bool {
    let group = Pid::from_raw(pid);
    if !is_same_process(pid, start_time) {
        return true;
    }
    let _ = killpg(group, Signal::SIGINT);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !is_same_process(pid, start_time) {
            // The leader is gone; anything left in its group goes too.
            let _ = killpg(group, Signal::SIGKILL);
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = killpg(group, Signal::SIGKILL);
    false
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_gone_wakes_on_exit() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("start sleep");
        let pid = child.id() as i32;
        let start = process_start_time(pid).expect("start time");
        let waiting = tokio::spawn(wait_gone(pid, start));
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "sleep is still alive");
        child.kill().expect("kill sleep");
        child.wait().expect("reap sleep");
        tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("woken by the exit")
            .expect("task");
        // A recorded start time that does not match is a process long gone.
        tokio::time::timeout(Duration::from_secs(10), wait_gone(pid, start + 1))
            .await
            .expect("at once");
    }
}
