//! The one way a listener is stopped: SIGINT to it and its process group, as a terminal's
//! Ctrl-C (the runner finishes cleanly and cancels a job, a step's `docker build` stops),
//! then, once it is gone or after the grace, SIGKILL to every process still in its session.
//! The runner's cgroup is the caller's to empty after (`controller::listener::stop`).

use std::time::{Duration, Instant};

use rustix::process::Signal;

use super::{Listener, ListenerState};
use crate::layout::ProcessRecord;
use crate::process::{interrupt_group, kill_session};

/// How long a listener killed after its grace is waited for (it may be in an
/// uninterruptible sleep; the cgroup's kill catches whatever is left).
const KILL_WAIT: Duration = Duration::from_secs(5);

/// How a stop went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    /// The listener's pid.
    pub pid: i32,
    /// It ended within the grace (or was gone already): no SIGKILL was needed for it.
    pub clean: bool,
    /// Processes of its session killed afterwards (its own, and what its jobs left).
    pub killed: usize,
    /// When the stop began.
    pub since: Instant,
}

impl Listener {
    /// Stops the listener and its session (see the module's text); waits up to `grace` for
    /// it after SIGINT. Every signal is start-time checked and sent through a pidfd.
    pub async fn stop(&mut self, grace: Duration) -> Stopped {
        let since = Instant::now();
        let (pid, start_time) = (self.pid, self.start_time);
        let mut clean = true;
        if !matches!(self.state, ListenerState::Exited { .. }) {
            self.state = ListenerState::Stopping { since };
            if self.signal(Signal::INT).is_ok() {
                let _ = tokio::task::spawn_blocking(move || interrupt_group(pid, start_time)).await;
                clean = tokio::time::timeout(grace, self.wait()).await.is_ok();
            } else if self.is_alive() {
                // No pidfds on this kernel: the session kill below is all there is.
                clean = false;
            } else {
                // Gone already, or the pid names another process now.
                self.gone().await;
            }
        }
        let killed = kill_recorded_async(self.identity()).await;
        if !matches!(self.state, ListenerState::Exited { .. }) {
            let _ = tokio::time::timeout(KILL_WAIT, self.wait()).await;
        }
        Stopped {
            pid,
            clean,
            killed,
            since,
        }
    }

    /// SIGKILLs the listener and its whole session now (a second signal at shutdown).
    pub fn kill(&self) -> usize {
        kill_recorded(&self.identity())
    }
}

/// SIGKILLs every process in the session of the listener `rec` names, the listener
/// included, each checked by its start time (none can predate the listener; a session id
/// reused by a later process is told by the leader's start time). Works when the listener
/// itself is gone and its jobs' processes are not. Returns how many were killed.
pub fn kill_recorded(rec: &ProcessRecord) -> usize {
    kill_session(rec.pid, rec.start_time)
}

async fn kill_recorded_async(rec: ProcessRecord) -> usize {
    tokio::task::spawn_blocking(move || kill_recorded(&rec))
        .await
        .unwrap_or(0)
}
