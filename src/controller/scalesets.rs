//! Pools with `engine: scaleset`: one listener engine each (`crate::scaleset::engine`),
//! started when the pool appears in the file and restarted when its scale set's name, labels
//! or `max` change; stopped (its session closed) and its scale set deleted when it leaves
//! the file, the deletion tried again each pass while a runner of the set still runs a job.
//! Their statuses are the pools' demand ([`Observed::scalesets`]).
//!
//! Closing a session and deleting a set are GitHub calls: each runs in a task of its own,
//! and the pass only looks at whether it has ended.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::tasks::Spawner;
use super::{Controller, Trigger};
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
    /// Engines of pools whose scale set changed, closing their session: the next engine of
    /// the pool starts once its predecessor is gone (it adopts and relabels the same set).
    closing: BTreeMap<String, JoinHandle<()>>,
    /// Scale sets whose entry left the file: each task closes the session, then deletes the
    /// set, tried again while a runner of the set still runs a job.
    retiring: BTreeMap<String, JoinHandle<()>>,
}

struct Running {
    client: ScaleSetClient,
    config: EngineConfig,
    status: watch::Receiver<EngineStatus>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Running {
    /// Asks the engine to close its session; returns its scale set and its task.
    fn retire(self) -> (Option<u64>, ScaleSetClient, JoinHandle<()>) {
        let _ = self.stop.send(true);
        let set_id = self.status.borrow().scale_set_id;
        (set_id, self.client, self.task)
    }
}

impl Controller {
    /// Starts, restarts and stops engines to match the pools, deletes retired scale sets,
    /// and puts every engine's status in `observed`.
    pub(super) fn observe_scalesets(&mut self, observed: &mut Observed) {
        let wanted: BTreeMap<String, Pool> = self
            .desired
            .pools
            .iter()
            .filter_map(|p| Some((p.scale_set_key()?, p.clone())))
            .collect();
        let api_url = self.seen.github.as_ref().map(|(g, _)| g.api_url.clone());
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
        let configs: BTreeMap<String, EngineConfig> = wanted
            .iter()
            .map(|(key, pool)| (key.clone(), engine_config(pool, &host, retry)))
            .collect();
        let (spawner, triggers) = (self.tasks.spawner(), self.triggers.clone());
        let pools = &mut self.seen.scalesets;
        pools.retire_stale(&configs, &spawner, &triggers, retry);
        pools.closing.retain(|_, task| !task.is_finished());
        pools.retiring.retain(|_, task| !task.is_finished());
        if let (Some(gh), Some(api_url)) = (gh, api_url) {
            for (key, pool) in &wanted {
                if pools.engines.contains_key(key)
                    || pools.closing.contains_key(key)
                    || pools.retiring.contains_key(key)
                {
                    continue;
                }
                let client = ScaleSetClient::new(gh.clone(), &api_url, pool.spec.repo.clone());
                let config = configs[key].clone();
                let run = start(&spawner, client, config, triggers.clone());
                pools.engines.insert(key.clone(), run);
            }
        }
        observed.scalesets = pools
            .engines
            .iter()
            .map(|(key, run)| (key.clone(), run.status.borrow().clone()))
            .collect();
    }

    /// For JIT registration: each open pool's client and scale set id, by pool key.
    pub(super) fn scaleset_clients(&self) -> BTreeMap<String, (ScaleSetClient, u64)> {
        self.seen
            .scalesets
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
        let pools = &mut self.seen.scalesets;
        let engines = std::mem::take(&mut pools.engines);
        let mut closing: Vec<(String, JoinHandle<()>)> = std::mem::take(&mut pools.closing)
            .into_iter()
            .chain(std::mem::take(&mut pools.retiring))
            .collect();
        for (key, run) in engines {
            closing.push((key, run.retire().2));
        }
        for (key, mut task) in closing {
            if tokio::time::timeout(CLOSE_TIMEOUT, &mut task)
                .await
                .is_err()
            {
                warn!(pool = %key, "scale-set session not closed in time");
                task.abort();
            }
        }
    }
}

impl ScaleSetPools {
    /// Stops the engines whose pool left the file or changed; a pool gone from the file has
    /// its scale set deleted once its session is closed.
    fn retire_stale(
        &mut self,
        configs: &BTreeMap<String, EngineConfig>,
        spawner: &Spawner,
        triggers: &mpsc::UnboundedSender<Trigger>,
        retry: Duration,
    ) {
        let stale: Vec<String> = self
            .engines
            .iter()
            .filter(|(key, run)| configs.get(*key) != Some(&run.config))
            .map(|(key, _)| key.clone())
            .collect();
        for key in stale {
            let Some(run) = self.engines.remove(&key) else {
                continue;
            };
            let (set_id, client, task) = run.retire();
            let triggers = triggers.clone();
            if configs.contains_key(&key) {
                let closing = spawner.spawn(async move {
                    closed(task).await;
                    let _ = triggers.send(Trigger::ScaleSetChanged);
                });
                self.closing.insert(key, closing);
            } else {
                info!(pool = %key, "scale-set pool left the file: closing its session, deleting its scale set");
                let pool = key.clone();
                let retiring = spawner.spawn(async move {
                    closed(task).await;
                    if let Some(id) = set_id {
                        delete(&pool, &client, id, retry).await;
                    }
                    let _ = triggers.send(Trigger::ScaleSetChanged);
                });
                self.retiring.insert(key, retiring);
            }
        }
    }
}

/// Waits for a stopping engine, at most [`CLOSE_TIMEOUT`].
async fn closed(mut task: JoinHandle<()>) {
    if tokio::time::timeout(CLOSE_TIMEOUT, &mut task)
        .await
        .is_err()
    {
        task.abort();
    }
}

/// Deletes a retired pool's scale set; while a runner of the set still runs a job GitHub
/// refuses, and it is tried again every `retry`.
async fn delete(pool: &str, client: &ScaleSetClient, id: u64, retry: Duration) {
    loop {
        match client.delete_scale_set(id).await {
            Ok(()) => {
                info!(pool = %pool, scale_set = id, "scale set deleted");
                return;
            }
            Err(err) => {
                warn!(pool = %pool, scale_set = id, error = %err, "cannot delete the scale set yet");
            }
        }
        tokio::time::sleep(retry).await;
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
    spawner: &Spawner,
    client: ScaleSetClient,
    config: EngineConfig,
    triggers: mpsc::UnboundedSender<Trigger>,
) -> Running {
    let (status_tx, status) = watch::channel(EngineStatus::default());
    let (stop, stop_rx) = watch::channel(false);
    let mut changes = status.clone();
    spawner.spawn(async move {
        while changes.changed().await.is_ok() {
            if triggers.send(Trigger::ScaleSetChanged).is_err() {
                break;
            }
        }
    });
    let task = spawner.spawn(engine::run(
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
