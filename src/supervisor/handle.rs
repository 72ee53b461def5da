//! The [`Listener`] handle: start, adopt, record, signal, wait.

use std::os::fd::{AsRawFd as _, OwnedFd};
use std::path::Path;
use std::time::Duration;

use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};

use super::{ListenerState, SupervisorError};
use crate::layout::{write_record, ProcessRecord};
use crate::procfs;

/// How often a process is checked where pidfds are missing (Linux < 5.3).
const GONE_POLL: Duration = Duration::from_secs(1);

/// One listener: its identity (pid and start time), a pidfd naming it when the kernel has
/// them, the child itself when corral started it, and its state.
#[derive(Debug)]
pub struct Listener {
    pub(super) pid: i32,
    pub(super) start_time: u64,
    pidfd: Option<OwnedFd>,
    child: Option<tokio::process::Child>,
    pub(super) state: ListenerState,
}

impl Listener {
    /// Starts `cmd` (made by [`crate::process::runner_command`], in a session of its own) and
    /// reads its identity. The result is [`ListenerState::Starting`] until [`Self::record`].
    pub fn start(cmd: &mut tokio::process::Command) -> Result<Self, SupervisorError> {
        let child = cmd.spawn().map_err(SupervisorError::Spawn)?;
        let pid = child.id().map_or(0, |p| p as i32);
        // Not reaped before `wait`, so its pid names it until then: a pidfd is opened only to
        // signal it (one file descriptor per runner, tokio's, not two).
        let start_time =
            procfs::process_start_time(pid).ok_or(SupervisorError::Vanished { pid })?;
        Ok(Listener {
            pid,
            start_time,
            pidfd: None,
            child: Some(child),
            state: ListenerState::Starting,
        })
    }

    /// Adopts the process `rec` names: only a live process with the recorded pid and start
    /// time, whatever its executable is (a wrapper, an interpreter, another mount).
    pub fn adopt(rec: &ProcessRecord) -> Result<Self, SupervisorError> {
        // Opened before the check: the pidfd then names the process checked, not a reuse.
        let pidfd = open_pidfd(rec.pid);
        let found = procfs::live_start_time(rec.pid);
        if found != Some(rec.start_time) {
            return Err(SupervisorError::NotRecorded {
                pid: rec.pid,
                expected: rec.start_time,
                found,
            });
        }
        Ok(Listener {
            pid: rec.pid,
            start_time: rec.start_time,
            pidfd,
            child: None,
            state: ListenerState::Running,
        })
    }

    /// Its pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Its identity, as corral records it.
    pub fn identity(&self) -> ProcessRecord {
        ProcessRecord {
            pid: self.pid,
            start_time: self.start_time,
        }
    }

    /// Where it is in its life.
    pub fn state(&self) -> ListenerState {
        self.state
    }

    /// Writes its identity to `path` (corral's process record), after which a restarted
    /// corral adopts it: [`ListenerState::Running`].
    pub fn record(&mut self, path: &Path) -> Result<(), SupervisorError> {
        write_record(path, &self.identity()).map_err(SupervisorError::Record)?;
        if self.state == ListenerState::Starting {
            self.state = ListenerState::Running;
        }
        Ok(())
    }

    /// True while the process it names runs (a zombie does not).
    pub fn is_alive(&self) -> bool {
        procfs::live_start_time(self.pid) == Some(self.start_time)
    }

    /// Sends `signal` to the listener alone, through its pidfd, after checking that the pid
    /// still names the process that started at its recorded start time. Refused (never sent
    /// by pid) where the kernel has no pidfds.
    pub fn signal(&self, signal: Signal) -> Result<(), SupervisorError> {
        let opened;
        let fd = match (&self.pidfd, &self.child) {
            (Some(fd), _) => fd,
            (None, Some(_)) => {
                opened = open_pidfd(self.pid);
                opened.as_ref().ok_or(SupervisorError::Signal {
                    pid: self.pid,
                    source: None,
                })?
            }
            (None, None) => {
                return Err(SupervisorError::Signal {
                    pid: self.pid,
                    source: None,
                })
            }
        };
        let found = procfs::live_start_time(self.pid);
        if found != Some(self.start_time) {
            return Err(SupervisorError::NotRecorded {
                pid: self.pid,
                expected: self.start_time,
                found,
            });
        }
        pidfd_send_signal(fd, signal).map_err(|e| SupervisorError::Signal {
            pid: self.pid,
            source: Some(e.into()),
        })
    }

    /// Waits until it is gone and returns its exit code when corral can know it (its own
    /// child that exited; `None` for a signal, or an adopted process). Cancel-safe: a
    /// dropped wait leaves the handle as it was.
    pub async fn wait(&mut self) -> Option<i32> {
        if let ListenerState::Exited { code } = self.state {
            return code;
        }
        let code = if let Some(child) = self.child.as_mut() {
            child.wait().await.ok().and_then(|s| s.code())
        } else {
            self.wait_gone().await;
            None
        };
        self.state = ListenerState::Exited { code };
        code
    }

    /// Notes that the process is gone (its start time no longer shows): corral's own child
    /// is reaped for its code; an adopted one has nothing to wait for, and its pidfd may name
    /// a process that is not the recorded one.
    pub(super) async fn gone(&mut self) {
        if self.child.is_some() {
            self.wait().await;
        } else {
            self.state = ListenerState::Exited { code: None };
        }
    }

    /// Resolves once an adopted process is gone: a pidfd becomes readable when the process
    /// exits, so nothing runs meanwhile; without one, `/proc` is checked every second.
    async fn wait_gone(&self) {
        if let Some(fd) = self.pidfd.as_ref() {
            // The handle's own pidfd, borrowed (not duplicated: one descriptor per adopted
            // runner). It outlives the `AsyncFd`, which only deregisters it when dropped.
            #[allow(
                deprecated,
                reason = "sound: the borrowed fd stays open while the AsyncFd lives"
            )]
            let readable = tokio::io::unix::AsyncFd::with_interest(
                Borrowed(fd.as_raw_fd()),
                tokio::io::Interest::READABLE,
            );
            if let Ok(exit) = readable {
                let _ = exit.readable().await;
                return;
            }
        }
        while self.is_alive() {
            tokio::time::sleep(GONE_POLL).await;
        }
    }
}

/// A descriptor the handle owns, lent to an `AsyncFd` that must not close it.
struct Borrowed(std::os::fd::RawFd);

impl std::os::fd::AsRawFd for Borrowed {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0
    }
}

/// A pidfd for `pid`, non-blocking so that it can be awaited; `None` on kernels without
/// pidfds, or once the pid is gone.
fn open_pidfd(pid: i32) -> Option<OwnedFd> {
    Pid::from_raw(pid).and_then(|p| pidfd_open(p, PidfdFlags::NONBLOCK).ok())
}
