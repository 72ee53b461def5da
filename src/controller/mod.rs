//! The controller: `corral run`. Every trigger — a change of the config file, SIGHUP, a
//! listener's exit, the periodic resync, a requeue — runs the same observe → plan → apply
//! pass; passes never overlap, and no trigger carries a payload the planner trusts.
//!
//! Runners outlive corral only when corral is killed: a restarted corral adopts the live
//! listeners it recorded. SIGTERM/SIGINT stop every runner gracefully and exit 0; a second
//! signal forces.

mod apply;
mod passes;
mod runtime;
mod shutdown;

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::{self, ConfigErrors};

pub use runtime::{ExitMeaning, Runtime};

/// How long file events are collected before one pass (editors write in bursts).
const DEBOUNCE: Duration = Duration::from_millis(200);

/// A message to the controller loop.
#[derive(Debug)]
pub enum Trigger {
    /// A listener corral watches has exited.
    Exited {
        /// Runner name.
        name: String,
        /// Its pid.
        pid: i32,
        /// Exit code; `None` when killed by a signal or not known (an adopted process).
        code: Option<i32>,
    },
}

/// Why `corral run` could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The config file is invalid at start-up.
    #[error("{0}")]
    Config(ConfigErrors),
    /// The config directory cannot be watched.
    #[error("cannot watch `{}`", path.display())]
    Watch {
        /// The config file.
        path: PathBuf,
        /// Why.
        #[source]
        source: notify::Error,
    },
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers")]
    Signals(#[source] std::io::Error),
    /// The state directory cannot be created.
    #[error("cannot create the state directory `{}`", path.display())]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Runs the controller until SIGTERM or SIGINT.
pub async fn run(config_path: &Path) -> Result<(), RunError> {
    let config_path =
        std::path::absolute(config_path).unwrap_or_else(|_| config_path.to_path_buf());
    let desired = config::load(&config_path).map_err(RunError::Config)?;
    for dir in [
        desired.state_dir.join("runners"),
        desired.state_dir.join("records"),
    ] {
        std::fs::create_dir_all(&dir).map_err(|source| RunError::StateDir {
            path: dir.clone(),
            source,
        })?;
    }
    let (_watcher, mut file_events) =
        crate::watch::watch_config(&config_path).map_err(|source| RunError::Watch {
            path: config_path.clone(),
            source,
        })?;
    let mut sighup = signal(SignalKind::hangup()).map_err(RunError::Signals)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(RunError::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(RunError::Signals)?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut ctl = passes::Controller::new(config_path, desired, tx);
    tracing::info!(config = %ctl.config_path().display(), runners = ctl.desired().runners.len(), "corral started");
    let mut next = Instant::now();
    loop {
        let mut reload = false;
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            Some(()) = file_events.recv() => {
                // Collect the rest of the burst, then read the file once.
                tokio::time::sleep(DEBOUNCE).await;
                while file_events.try_recv().is_ok() {}
                reload = true;
            }
            _ = sighup.recv() => {
                tracing::info!("SIGHUP: reloading the config");
                reload = true;
            }
            Some(trigger) = rx.recv() => ctl.on_trigger(trigger),
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        }
        while let Ok(trigger) = rx.try_recv() {
            ctl.on_trigger(trigger);
        }
        // Every pass re-reads the file (a save the watch missed is caught by the resync); a
        // file event that changed nothing (another file in the directory) runs no pass.
        if !ctl.reload() && reload {
            continue;
        }
        let requeue = ctl.pass().await;
        next = Instant::now() + requeue;
    }
    tracing::info!("stopping every runner");
    let force = async move {
        tokio::select! {
            _ = sigterm.recv() => {}
            _ = sigint.recv() => {}
        }
    };
    shutdown::stop_all(&mut ctl, force).await;
    Ok(())
}
