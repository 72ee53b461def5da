//! The controller: `corral run`. Every trigger — a change of the config file, SIGHUP, a
//! listener's exit, the periodic resync, a requeue — runs the same observe → plan → apply
//! pass; passes never overlap, and no trigger carries a payload the planner trusts.
//!
//! Runners outlive corral only when corral is killed: a restarted corral adopts the live
//! listeners it recorded. SIGTERM/SIGINT stop every runner gracefully and exit 0; a second
//! signal forces.

mod apply;
mod base_source;
mod contain;
mod contain_pass;
mod demand;
mod docker_steps;
mod events;
mod follow;
mod github_steps;
mod job;
mod listener;
mod passes;
mod publish;
mod refresh;
mod runtime;
mod scalesets;
mod shutdown;
mod source_follow;
mod state;
mod step_error;
mod tasks;
mod workers;

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::{self, ConfigErrors};

pub use runtime::{ExitMeaning, Runtime};
use state::Controller;

/// How long file events are collected before one pass (editors write in bursts).
const DEBOUNCE: Duration = Duration::from_millis(200);
/// The same for listener log lines, which come one at a time.
const LOG_DEBOUNCE: Duration = Duration::from_millis(50);

/// The controller's one clock, for every deadline it computes (drain, requeue, backoff,
/// shutdown): tokio's, which is `std::time::Instant::now()` in the daemon and follows a
/// paused clock in tests, so that a test on paused time moves every deadline at once.
fn now() -> std::time::Instant {
    Instant::now().into_std()
}

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
    /// A valid webhook delivery said a job was queued: poll the demand now.
    JobQueued,
    /// A demand poll ended: its observation, for the next pass.
    DemandPolled(Box<demand::Polled>),
    /// A scale-set pool's engine learnt something (a message, a session change): plan now.
    ScaleSetChanged,
    /// A background install of `base.version` ended.
    ReleaseInstalled {
        /// The version as configured (`latest` included).
        version: String,
        /// The installed tree, or what went wrong.
        result: Result<std::path::PathBuf, std::sync::Arc<crate::bases::BasesError>>,
    },
    /// A background listing of the registrations ended: the next pass takes it.
    Listed,
    /// A fetch of `source.git` ended.
    SourceFetched(Box<crate::gitsource::Fetched>),
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
    /// The status API's token could not be read.
    #[error("cannot read the status API token")]
    ApiToken(#[source] crate::secret::SecretError),
    /// The webhook secret could not be read.
    #[error("cannot read the webhook secret")]
    WebhookSecret(#[source] crate::secret::SecretError),
    /// The status API's address could not be bound.
    #[error("cannot listen on {addr} for the status API")]
    ApiBind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
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

/// Why the loop woke up.
enum Wake {
    /// The requeue or resync time came.
    Timer,
    /// Something changed in the config's directory.
    ConfigEvent,
    /// A listener wrote to its log, or SIGHUP asked for a pass.
    Nudge,
    /// A message from a task.
    Trigger(Trigger),
    /// A runner's steps ended.
    WorkerEnded(workers::Done),
    /// SIGTERM or SIGINT.
    Stop,
}

/// Everything that wakes the loop, kept alive together.
struct Sources {
    _config_watch: notify::RecommendedWatcher,
    config_events: mpsc::Receiver<()>,
    _log_watch: notify::RecommendedWatcher,
    log_events: mpsc::Receiver<()>,
    sighup: Signal,
    sigterm: Signal,
    sigint: Signal,
    /// Stops asked for by the caller of [`run_until`], each counted as a signal.
    stops: Option<mpsc::UnboundedReceiver<()>>,
    triggers: mpsc::UnboundedReceiver<Trigger>,
}

impl Sources {
    fn new(
        config_path: &Path,
        records: &Path,
        triggers: mpsc::UnboundedReceiver<Trigger>,
        stops: Option<mpsc::UnboundedReceiver<()>>,
    ) -> Result<Self, RunError> {
        let watch_error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| RunError::Watch { path, source }
        };
        let (config_watch, config_events) =
            crate::watch::watch_config(config_path).map_err(watch_error(config_path))?;
        let (log_watch, log_events) =
            crate::watch::watch_listener_logs(records).map_err(watch_error(records))?;
        let signal = |kind| signal(kind).map_err(RunError::Signals);
        Ok(Sources {
            _config_watch: config_watch,
            config_events,
            _log_watch: log_watch,
            log_events,
            sighup: signal(SignalKind::hangup())?,
            sigterm: signal(SignalKind::terminate())?,
            sigint: signal(SignalKind::interrupt())?,
            stops,
            triggers,
        })
    }

    /// Waits for the next reason to act, at the latest until `deadline`.
    async fn next(&mut self, deadline: Instant) -> Wake {
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => Wake::Timer,
            Some(()) = self.config_events.recv() => {
                // Collect the rest of the burst, then read the file once.
                tokio::time::sleep(DEBOUNCE).await;
                while self.config_events.try_recv().is_ok() {}
                Wake::ConfigEvent
            }
            Some(()) = self.log_events.recv() => {
                // A listener came online, took or finished a job: pass now (a drain may end).
                tokio::time::sleep(LOG_DEBOUNCE).await;
                while self.log_events.try_recv().is_ok() {}
                Wake::Nudge
            }
            _ = self.sighup.recv() => {
                tracing::info!("SIGHUP: reloading the config");
                Wake::Nudge
            }
            Some(trigger) = self.triggers.recv() => Wake::Trigger(trigger),
            _ = self.sigterm.recv() => Wake::Stop,
            _ = self.sigint.recv() => Wake::Stop,
            () = next_stop(&mut self.stops) => Wake::Stop,
        }
    }

    /// Resolves at the next SIGTERM or SIGINT, or the next stop asked for.
    async fn stop_signal(&mut self) {
        tokio::select! {
            _ = self.sigterm.recv() => {}
            _ = self.sigint.recv() => {}
            () = next_stop(&mut self.stops) => {}
        }
    }
}

/// The next stop asked for; never, when there is no one to ask (or no longer).
async fn next_stop(stops: &mut Option<mpsc::UnboundedReceiver<()>>) {
    if let Some(rx) = stops {
        if rx.recv().await.is_some() {
            return;
        }
        *stops = None;
    }
    std::future::pending::<()>().await;
}

/// Binds the status API and serves it in the background; a valid webhook delivery of a
/// queued job becomes a `JobQueued` trigger.
async fn start_api(
    api: &crate::config::Api,
    triggers: mpsc::UnboundedSender<Trigger>,
    on_push: crate::api::OnPush,
    spawner: &tasks::Spawner,
) -> Result<crate::api::Shared, RunError> {
    let token = api
        .token
        .as_ref()
        .map(crate::secret::read)
        .transpose()
        .map_err(RunError::ApiToken)?;
    let webhook = api
        .webhook_secret
        .as_ref()
        .map(crate::secret::read)
        .transpose()
        .map_err(RunError::WebhookSecret)?
        .map(|secret| crate::api::Webhook {
            secret,
            on_queued: std::sync::Arc::new(move || {
                let _ = triggers.send(Trigger::JobQueued);
            }),
            on_push: Some(on_push),
        });
    let listener = tokio::net::TcpListener::bind(api.listen)
        .await
        .map_err(|source| RunError::ApiBind {
            addr: api.listen,
            source,
        })?;
    let shared = crate::api::Shared::default();
    tracing::info!(listen = %api.listen, token = token.is_some(), webhook = webhook.is_some(), "status API listening");
    spawner.spawn(crate::api::serve(listener, shared.clone(), token, webhook));
    Ok(shared)
}

/// Runs the controller for host `host_id` until SIGTERM or SIGINT.
pub async fn run(config_path: &Path, host_id: &str) -> Result<(), RunError> {
    run_on(config_path, host_id, None).await
}

/// [`run`], which also stops at a message on `stops` as at a signal: the first stops every
/// runner gracefully, a second forces. Signals still count. For an embedding caller, and
/// for tests that drive the controller on paused time.
pub async fn run_until(
    config_path: &Path,
    host_id: &str,
    stops: mpsc::UnboundedReceiver<()>,
) -> Result<(), RunError> {
    run_on(config_path, host_id, Some(stops)).await
}

async fn run_on(
    config_path: &Path,
    host_id: &str,
    stops: Option<mpsc::UnboundedReceiver<()>>,
) -> Result<(), RunError> {
    let config_path =
        std::path::absolute(config_path).unwrap_or_else(|_| config_path.to_path_buf());
    // The bytes are read before they are parsed: a save in between then shows as a change at
    // the first pass instead of being taken for the config already in force.
    let digest = std::fs::read(&config_path).unwrap_or_default();
    let desired = config::load_on(&config_path, host_id).map_err(RunError::Config)?;
    let records = desired.state_dir.join("records");
    for dir in [desired.state_dir.join("runners"), records.clone()] {
        std::fs::create_dir_all(&dir).map_err(|source| RunError::StateDir {
            path: dir.clone(),
            source,
        })?;
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let mut sources = Sources::new(&config_path, &records, rx, stops)?;
    let api_spec = desired.api.clone();
    let mut ctl = Controller::new(config_path, digest, desired, tx.clone());
    ctl.follow_source();
    let api = match &api_spec {
        Some(api) => Some(start_api(api, tx, ctl.source_on_push(), &ctl.spawner()).await?),
        None => None,
    };
    if let Some(shared) = api {
        ctl.publish_to(shared);
    }
    tracing::info!(config = %ctl.config_path().display(), host_id, runners = ctl.desired().runners.len(),
        elsewhere = ?ctl.desired().elsewhere, capped = ?ctl.desired().capped, "corral started");
    serve(&mut ctl, &mut sources).await;
    tracing::info!("stopping every runner");
    ctl.stop_workers().await;
    shutdown::stop_all(&mut ctl, sources.stop_signal()).await;
    // The status API served the final status until now; nothing corral spawned outlives it.
    ctl.stop_tasks().await;
    tracing::debug!("every task ended");
    Ok(())
}

/// The loop: wait for a reason, fold it in, run a pass; until SIGTERM or SIGINT.
async fn serve(ctl: &mut Controller, sources: &mut Sources) {
    let mut next = Instant::now();
    loop {
        let wake = tokio::select! {
            wake = sources.next(next) => wake,
            done = ctl.worker_ended() => Wake::WorkerEnded(done),
        };
        let config_event = match wake {
            Wake::Stop => break,
            Wake::Trigger(trigger) => {
                ctl.on_trigger(trigger);
                false
            }
            Wake::WorkerEnded(done) => {
                ctl.on_worker_ended(done);
                false
            }
            Wake::ConfigEvent => true,
            Wake::Timer | Wake::Nudge => false,
        };
        while let Ok(trigger) = sources.triggers.try_recv() {
            ctl.on_trigger(trigger);
        }
        // Every pass re-reads the file, so the resync catches a save the watch missed; an
        // event in the config's directory that left the file as it was runs no pass.
        let changed = ctl.reload();
        if config_event && !changed && !ctl.demand_due_now() {
            continue;
        }
        // A pass only reads the host and hands steps to workers, but a stop must not wait
        // even for that.
        let requeue = tokio::select! {
            biased;
            () = sources.stop_signal() => break,
            requeue = ctl.pass() => requeue,
        };
        next = Instant::now() + requeue;
    }
}
