//! Pools with `engine: scaleset`: one listener engine each (`crate::scaleset::engine`),
//! started when the pool appears in the file and restarted when its scale set's name, labels
//! or `max` change; stopped (its session closed) and its scale set deleted when it leaves
//! the file, the deletion tried again each pass while a runner of the set still runs a job.
//! Their statuses are the pools' demand ([`Observed::scalesets`]).

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::super::Trigger;
use super::Controller;
use crate::config::Pool;
use crate::observe::Observed;
use crate::scaleset::engine::{self, EngineConfig, EngineStatus};
use crate::scaleset::ScaleSetClient;

/// How long a stopping engine may take to close its session.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// An idle session is polled about once a minute (reference: the service holds a poll 50 s).
const IDLE_CYCLE: Duration = Duration::from_secs(60);

/// The engines, by pool key ([`Pool::scale_set_key`]).
#[derive(Default)]
pub(super) struct ScaleSetPools {
    engines: BTreeMap<String, Running>,
    /// Scale sets whose entry left the file, to delete once their engine stopped.
    retiring: BTreeMap<String, Retiring>,
}

struct Running {
    client: ScaleSetClient,
    config: EngineConfig,
    status: watch::Receiver<EngineStatus>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

struct Retiring {
    client: ScaleSetClient,
    set_id: Option<u64>,
    task: Option<JoinHandle<()>>,
}

impl Running {
    /// Asks the engine to close its session; returns what is left to wait for and delete.
    fn retire(self) -> Retiring {
        let _ = self.stop.send(true);
        Retiring {
            client: self.client,
            set_id: self.status.borrow().scale_set_id,
            task: Some(self.task),
        }
    }
}

impl Controller {
    /// Starts, restarts and stops engines to match the pools, deletes retired scale sets,
    /// and puts every engine's status in `observed`.
    pub(super) async fn observe_scalesets(&mut self, observed: &mut Observed) {
        let wanted: BTreeMap<String, Pool> = self
            .desired
            .pools
            .iter()
            .filter_map(|p| Some((p.scale_set_key()?, p.clone())))
            .collect();
        let api_url = self.github.as_ref().map(|(g, _)| g.api_url.clone());
        let gh = if wanted.is_empty() {
            None
        } else {
            self.github_client()
        };
        let host = self.desired.host_id.clone();
        let retry = self
            .desired
            .demand_poll_interval
            .clamp(Duration::from_secs(1), Duration::from_secs(30));
        let mut configs = BTreeMap::new();
        for (key, pool) in &wanted {
            configs.insert(key.clone(), engine_config(pool, &host, retry));
        }
        let pools = &mut self.scalesets;
        // Gone from the file, or changed: stop (and, when gone, delete the set).
        let stale: Vec<String> = pools
            .engines
            .iter()
            .filter(|(key, run)| configs.get(*key) != Some(&run.config))
            .map(|(key, _)| key.clone())
            .collect();
        for key in stale {
            if let Some(run) = pools.engines.remove(&key) {
                let mut retiring = run.retire();
                if wanted.contains_key(&key) {
                    // Changed: the next engine adopts and relabels the same set.
                    if let Some(task) = retiring.task.take() {
                        let _ = tokio::time::timeout(CLOSE_TIMEOUT, task).await;
                    }
                } else {
                    info!(pool = %key, "scale-set pool left the file: closing its session, deleting its scale set");
                    pools.retiring.insert(key, retiring);
                }
            }
        }
        let triggers = self.triggers.clone();
        let pools = &mut self.scalesets;
        if let (Some(gh), Some(api_url)) = (gh, api_url) {
            for (key, pool) in &wanted {
                if pools.engines.contains_key(key) {
                    continue;
                }
                let client = ScaleSetClient::new(gh.clone(), &api_url, pool.spec.repo.clone());
                let config = configs[key].clone();
                pools
                    .engines
                    .insert(key.clone(), start(client, config, triggers.clone()));
            }
        }
        delete_retired(pools).await;
        observed.scalesets = pools
            .engines
            .iter()
            .map(|(key, run)| (key.clone(), run.status.borrow().clone()))
            .collect();
    }

    /// For JIT registration: each open pool's client and scale set id, by pool key.
    pub(super) fn scaleset_clients(&self) -> BTreeMap<String, (ScaleSetClient, u64)> {
        self.scalesets
            .engines
            .iter()
            .filter_map(|(key, run)| {
                let id = run.status.borrow().scale_set_id?;
                Some((key.clone(), (run.client.clone(), id)))
            })
            .collect()
    }

    /// Closes every session (corral stops; the scale sets stay for the next start).
    pub async fn stop_scalesets(&mut self) {
        let engines = std::mem::take(&mut self.scalesets.engines);
        for (key, run) in engines {
            let retiring = run.retire();
            if let Some(task) = retiring.task {
                if tokio::time::timeout(CLOSE_TIMEOUT, task).await.is_err() {
                    warn!(pool = %key, "scale-set session not closed in time");
                }
            }
        }
    }
}

fn engine_config(pool: &Pool, host: &str, retry: Duration) -> EngineConfig {
    EngineConfig {
        name: pool.scale_set.clone().unwrap_or_default(),
        labels: pool.spec.registered_labels(),
        max: u32::try_from(pool.slots.len()).unwrap_or(u32::MAX),
        owner: host.to_string(),
        retry,
        idle_cycle: IDLE_CYCLE,
    }
}

/// Starts an engine; each change of its status wakes the controller for a pass.
fn start(
    client: ScaleSetClient,
    config: EngineConfig,
    triggers: mpsc::UnboundedSender<Trigger>,
) -> Running {
    let (status_tx, status) = watch::channel(EngineStatus::default());
    let (stop, stop_rx) = watch::channel(false);
    let mut changes = status.clone();
    tokio::spawn(async move {
        while changes.changed().await.is_ok() {
            if triggers.send(Trigger::ScaleSetChanged).is_err() {
                break;
            }
        }
    });
    let task = tokio::spawn(engine::run(
        client.clone(),
        config.clone(),
        status_tx,
        stop_rx,
    ));
    Running {
        client,
        config,
        status,
        stop,
        task,
    }
}

/// Deletes the scale sets of pools that left the file, once their engine has stopped; a
/// set a runner still runs a job for is tried again at the next pass.
async fn delete_retired(pools: &mut ScaleSetPools) {
    let keys: Vec<String> = pools.retiring.keys().cloned().collect();
    for key in keys {
        let Some(retiring) = pools.retiring.get_mut(&key) else {
            continue;
        };
        if retiring.task.as_ref().is_some_and(|t| !t.is_finished()) {
            continue;
        }
        retiring.task = None;
        let Some(id) = retiring.set_id else {
            pools.retiring.remove(&key);
            continue;
        };
        match retiring.client.delete_scale_set(id).await {
            Ok(()) => {
                info!(pool = %key, scale_set = id, "scale set deleted");
                pools.retiring.remove(&key);
            }
            Err(err) => {
                warn!(pool = %key, scale_set = id, error = %err, "cannot delete the scale set yet");
            }
        }
    }
}
