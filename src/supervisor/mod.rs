//! One listener's life behind one handle: [`Listener`] starts it (or adopts one corral
//! recorded), signals it, waits for it and stops it; its [`ListenerState`] says where it is.
//!
//! A listener is named by its pid *and* its start time (corral's [`ProcessRecord`]), never by
//! its executable: a pid is reused once its process is gone, and a listener may be a wrapper
//! script or run from a path that differs from the one corral knows. Every signal goes
//! through a pidfd opened before the start time is checked, so the process checked is the
//! one signalled.
//!
//! The pieces below it: [`crate::process`] launches a runner program and signals single
//! processes and sessions (start time checked); [`crate::procfs`] reads `/proc`.
//!
//! ```text
//!   Listener::start(cmd) ─▶ Starting ─record()─▶ Running ─stop(grace)─▶ Stopping ─▶ Exited
//!   Listener::adopt(rec) ─────────────────────▶ Running ─wait()──────────────────▶ Exited
//! ```

mod handle;
mod stop;
#[cfg(test)]
mod tests;

pub use handle::Listener;
pub use stop::{kill_recorded, Stopped};

use std::time::{Duration, Instant};

use crate::layout::ProcessRecord;

/// How long a listener may take to stop after SIGINT (it finishes cleanly and cancels a job)
/// before its session is killed. The one stop grace: every stop goes through
/// [`Listener::stop`].
pub const STOP_GRACE: Duration = Duration::from_secs(30);

/// Where a listener is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerState {
    /// Spawned; its identity is not recorded yet (a restarted corral could not adopt it).
    Starting,
    /// Recorded (or adopted from corral's record) and alive as far as corral knows.
    Running,
    /// corral asked it to stop at `since`: its exit is expected.
    Stopping {
        /// When the SIGINT went out.
        since: Instant,
    },
    /// It is gone; `code` is its exit code when corral could learn it (its own child,
    /// not killed by a signal).
    Exited {
        /// The exit code.
        code: Option<i32>,
    },
}

/// What can go wrong with a listener's handle. No variant carries anything secret: a
/// listener's environment and arguments never appear here.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// The program could not be started.
    #[error("start the listener")]
    Spawn(#[source] std::io::Error),
    /// It exited before corral could read its start time, so it cannot be recorded.
    #[error("the listener (pid {pid}) exited before it could be recorded")]
    Vanished {
        /// Its pid.
        pid: i32,
    },
    /// `pid` is not (or no longer) the process corral recorded: gone, or a reused pid.
    #[error(
        "pid {pid} is not the recorded listener (started at tick {expected}, found {found:?})"
    )]
    NotRecorded {
        /// The recorded pid.
        pid: i32,
        /// The recorded start time.
        expected: u64,
        /// The start time `/proc` shows for the pid now, if any.
        found: Option<u64>,
    },
    /// The signal could not be sent (no pidfd on this kernel, or the kernel refused).
    #[error("cannot signal the listener (pid {pid})")]
    Signal {
        /// Its pid.
        pid: i32,
        /// The cause, when the kernel gave one.
        #[source]
        source: Option<std::io::Error>,
    },
    /// Its record could not be written.
    #[error("write the process record")]
    Record(#[source] std::io::Error),
}

/// True while `rec` names a running process (not a zombie) that started when recorded.
pub fn is_alive(rec: &ProcessRecord) -> bool {
    crate::procfs::live_start_time(rec.pid) == Some(rec.start_time)
}
