//! The listener of one scale set: adopt or create the set, hold its one message session,
//! long-poll it, acknowledge each message, acquire the jobs it offers (never more than the
//! pool can run), and publish what it learnt ([`EngineStatus`]) for the pool's planner.
//!
//! A session left by a previous corral that was killed (`kill -9` never closes it) blocks a
//! new one with `409` until the service lets it lapse: the engine shows `conflict` and tries
//! again every [`EngineConfig::retry`]. A session the service dropped is replaced; a queue
//! token that expired is refreshed (`session.rs`). On stop the session is closed.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{info, warn};

use super::client::ScaleSetClient;
use super::error::ScaleSetError;
use super::session::Session;
use super::types::{Message, Statistics};

/// What the engine needs to know of its pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// The scale set's name (workflows use it in `runs-on`).
    pub name: String,
    /// Its labels, the name first.
    pub labels: Vec<String>,
    /// Most runners the pool may run (`scale.max`): the capacity sent and acquired against.
    pub max: u32,
    /// `ownerName` of the session (the host id).
    pub owner: String,
    /// Wait before trying again after a conflict or an error.
    pub retry: Duration,
    /// An empty poll (202) is followed by the next one no sooner than this after it began:
    /// with the service's 50 s hold, one request a minute while idle. A message already
    /// waiting is then answered at once, so nothing is lost, at most delayed.
    pub idle_cycle: Duration,
}

/// Where the session stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionState {
    /// Not open yet.
    #[default]
    Connecting,
    /// Open and polled.
    Open,
    /// Another session holds the scale set (a leftover after a crash, or another host).
    Conflict,
    /// The last attempt failed; see `error`.
    Error,
    /// Closed on stop.
    Closed,
}

/// What the engine knows, published after every change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EngineStatus {
    /// The scale set's id, once adopted or created.
    pub scale_set_id: Option<u64>,
    /// The session's state.
    pub session: SessionState,
    /// The session's id while open.
    pub session_id: Option<String>,
    /// The last message's id (0: none yet).
    pub last_message_id: i64,
    /// When it came (RFC 3339), and what it held.
    pub last_message_at: Option<String>,
    /// Its job events by type, e.g. `JobAvailable×2`.
    pub last_message: Option<String>,
    /// The latest statistics.
    pub statistics: Statistics,
    /// Jobs acquired since start.
    pub acquired: u64,
    /// The last error, while it stands.
    pub error: Option<String>,
}

impl EngineStatus {
    /// Jobs assigned to the set and not running yet: what new runners are for.
    pub fn waiting_jobs(&self) -> u64 {
        self.statistics
            .total_assigned_jobs
            .saturating_sub(self.statistics.total_running_jobs)
    }
}

/// Runs the listener until `stop` turns true, publishing on `status`.
pub async fn run(
    client: ScaleSetClient,
    config: EngineConfig,
    status: watch::Sender<EngineStatus>,
    mut stop: watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        let opened = tokio::select! {
            opened = open(&client, &config, &status) => opened,
            _ = stop.changed() => break,
        };
        let Some(mut session) = opened else {
            tokio::select! {
                () = tokio::time::sleep(config.retry) => continue,
                _ = stop.changed() => break,
            }
        };
        let closed = tokio::select! {
            () = listen(&client, &config, &mut session, &status) => false,
            _ = stop.changed() => true,
        };
        if closed {
            if let Err(err) = client.delete_session(&session).await {
                warn!(scale_set = %config.name, error = %err, "cannot close the scale-set session");
            }
            break;
        }
        tokio::select! {
            () = tokio::time::sleep(config.retry) => {}
            _ = stop.changed() => break,
        }
    }
    status.send_modify(|s| {
        s.session = SessionState::Closed;
        s.session_id = None;
    });
}

/// Adopts or creates the scale set and opens its session; `None` (status says why) when
/// it cannot now.
async fn open(
    client: &ScaleSetClient,
    config: &EngineConfig,
    status: &watch::Sender<EngineStatus>,
) -> Option<Session> {
    let result = async {
        let set = client
            .ensure_scale_set(&config.name, &config.labels)
            .await?;
        status.send_modify(|s| s.scale_set_id = Some(set.id));
        client.create_session(set.id, &config.owner).await
    }
    .await;
    match result {
        Ok(session) => {
            info!(scale_set = %config.name, session = %session.id, "scale-set session open");
            status.send_modify(|s| {
                s.session = SessionState::Open;
                s.session_id = Some(session.id.clone());
                s.statistics = session.statistics;
                s.last_message_id = 0;
                s.error = None;
            });
            Some(session)
        }
        Err(err) => {
            let conflict = err.is_conflict();
            if conflict {
                info!(scale_set = %config.name, "another session holds the scale set; waiting for it to lapse");
            } else {
                warn!(scale_set = %config.name, error = %err, "cannot open the scale-set session");
            }
            status.send_modify(|s| {
                s.session = if conflict {
                    SessionState::Conflict
                } else {
                    SessionState::Error
                };
                s.session_id = None;
                s.error = Some(err.to_string());
            });
            None
        }
    }
}

/// Polls `session` until it fails in a way only a new session mends.
async fn listen(
    client: &ScaleSetClient,
    config: &EngineConfig,
    session: &mut Session,
    status: &watch::Sender<EngineStatus>,
) {
    let mut last = 0;
    // Jobs offered while the pool was full, oldest first: acquired once there is room.
    let mut pending: Vec<i64> = Vec::new();
    loop {
        let began = tokio::time::Instant::now();
        let message = client.get_message(session, last, config.max).await;
        let handled = match message {
            Ok(None) => {
                tokio::time::sleep_until(began + config.idle_cycle).await;
                acquire_pending(client, config, session, &mut pending, status).await
            }
            Ok(Some(message)) => {
                match handle(client, session, &message, &mut pending, status).await {
                    Ok(()) => acquire_pending(client, config, session, &mut pending, status).await,
                    Err(err) => Err(err),
                }
            }
            Err(err) => Err(err),
        };
        match handled {
            Ok(()) => {
                last = status.borrow().last_message_id;
            }
            Err(err) => {
                warn!(scale_set = %config.name, error = %err, "scale-set session lost");
                status.send_modify(|s| {
                    s.session = SessionState::Error;
                    s.error = Some(err.to_string());
                });
                return;
            }
        }
    }
}

/// Acquires pending jobs within the capacity left (`max` − jobs assigned already); those
/// the service does not give (taken elsewhere, cancelled) are dropped.
async fn acquire_pending(
    client: &ScaleSetClient,
    config: &EngineConfig,
    session: &mut Session,
    pending: &mut Vec<i64>,
    status: &watch::Sender<EngineStatus>,
) -> Result<(), ScaleSetError> {
    let assigned = status.borrow().statistics.total_assigned_jobs;
    let room = usize::try_from(u64::from(config.max).saturating_sub(assigned)).unwrap_or(0);
    if pending.is_empty() || room == 0 {
        return Ok(());
    }
    let asked: Vec<i64> = pending.drain(..room.min(pending.len())).collect();
    let acquired = client.acquire_jobs(session, &asked).await?;
    status.send_modify(|s| {
        // Acquired now counts as assigned, though the last statistics were taken before.
        s.statistics.total_assigned_jobs += acquired.len() as u64;
        s.acquired += acquired.len() as u64;
    });
    Ok(())
}

/// One message: its statistics, its acknowledgement, and the jobs it offers (pending).
async fn handle(
    client: &ScaleSetClient,
    session: &mut Session,
    message: &Message,
    pending: &mut Vec<i64>,
    status: &watch::Sender<EngineStatus>,
) -> Result<(), ScaleSetError> {
    let events = message.events();
    let counts = message.statistics.unwrap_or(status.borrow().statistics);
    client.ack(session, message.message_id).await?;
    for e in &events {
        let id = e.runner_request_id;
        match e.message_type.as_str() {
            "JobAvailable" if !pending.contains(&id) => pending.push(id),
            // Assigned (to this set) or gone: nothing left to acquire.
            "JobAssigned" | "JobCompleted" => pending.retain(|p| *p != id),
            _ => {}
        }
    }
    let mut kinds: Vec<(String, usize)> = Vec::new();
    for e in &events {
        match kinds.iter_mut().find(|(k, _)| *k == e.message_type) {
            Some((_, n)) => *n += 1,
            None => kinds.push((e.message_type.clone(), 1)),
        }
    }
    let summary = kinds
        .iter()
        .map(|(k, n)| format!("{k}×{n}"))
        .collect::<Vec<_>>()
        .join(", ");
    status.send_modify(|s| {
        s.last_message_id = message.message_id;
        s.last_message_at = Some(humantime::format_rfc3339_seconds(SystemTime::now()).to_string());
        s.last_message = Some(if summary.is_empty() {
            "no job events".into()
        } else {
            summary
        });
        s.statistics = counts;
        s.error = None;
    });
    Ok(())
}
