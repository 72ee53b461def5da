//! Removing what a runner's jobs left: after each job, everything labelled with the runner
//! whose job (its `Runner.Worker`) is gone; at removal, everything labelled with it. Images
//! the jobs built are kept between jobs within the runner's image budget, oldest removed
//! first; at removal they all go. The engine's labels are the only record, so a restarted
//! corral reaps what an earlier one served.

use std::collections::BTreeSet;

use serde_json::Value;

use super::engine::{segment, Engine, EngineError};
use super::job::JobKey;
use super::policy::{with_runner_filter, JOB_LABEL};

/// What one sweep removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reaped {
    /// Containers (stopped or killed, with their anonymous volumes).
    pub containers: u64,
    /// Networks.
    pub networks: u64,
    /// Volumes.
    pub volumes: u64,
    /// Images (over the budget, or all at removal, and dangling build steps).
    pub images: u64,
    /// Bytes of the runner's images kept afterwards.
    pub image_bytes: u64,
}

/// Which objects a sweep removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sweep {
    /// Those of jobs whose Worker is gone; images beyond `budget` bytes.
    EndedJobs {
        /// Bytes of built images kept.
        budget: u64,
    },
    /// Every object of the runner (it is being removed).
    Everything,
}

impl Sweep {
    fn keeps(self, labels: Option<&Value>) -> bool {
        match self {
            Sweep::Everything => false,
            Sweep::EndedJobs { .. } => labels
                .and_then(|l| l.get(JOB_LABEL))
                .and_then(Value::as_str)
                .and_then(JobKey::parse)
                .is_some_and(|key| key.alive()),
        }
    }
}

/// Removes `runner`'s objects as `sweep` says, and the dangling images of `built` steps.
pub async fn sweep(
    engine: &Engine,
    runner: &str,
    sweep: Sweep,
    built: BTreeSet<String>,
) -> Result<Reaped, EngineError> {
    let filter = segment(&with_runner_filter(None, runner));
    let mut reaped = Reaped::default();
    for c in list(engine, &format!("/containers/json?all=1&filters={filter}")).await? {
        if !sweep.keeps(c.get("Labels")) {
            let id = c["Id"].as_str().unwrap_or_default();
            if engine
                .delete(&format!("/containers/{id}?force=1&v=1"))
                .await
                .unwrap_or(false)
            {
                reaped.containers += 1;
            }
        }
    }
    for n in list(engine, &format!("/networks?filters={filter}")).await? {
        if !sweep.keeps(n.get("Labels")) {
            let id = n["Id"].as_str().unwrap_or_default();
            if engine
                .delete(&format!("/networks/{id}"))
                .await
                .unwrap_or(false)
            {
                reaped.networks += 1;
            }
        }
    }
    let volumes = engine
        .get(&format!("/volumes?filters={filter}"))
        .await?
        .and_then(|v| v.get("Volumes").cloned())
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default();
    for v in volumes {
        if !sweep.keeps(v.get("Labels")) {
            let name = segment(v["Name"].as_str().unwrap_or_default());
            if engine
                .delete(&format!("/volumes/{name}"))
                .await
                .unwrap_or(false)
            {
                reaped.volumes += 1;
            }
        }
    }
    reaped.images += dangling_steps(engine, built).await;
    let budget = match sweep {
        Sweep::EndedJobs { budget } => budget,
        Sweep::Everything => 0,
    };
    let (removed, kept) = prune_images(engine, &filter, budget, sweep == Sweep::Everything).await?;
    reaped.images += removed;
    reaped.image_bytes = kept;
    Ok(reaped)
}

/// Removes step images of builds that are left untagged and unused (a build cut short);
/// the engine refuses those still used by an image or container, which then stay.
async fn dangling_steps(engine: &Engine, built: BTreeSet<String>) -> u64 {
    let mut removed = 0;
    for id in built {
        let Ok(Some(image)) = engine.get(&format!("/images/{id}/json")).await else {
            continue;
        };
        let tagged = image["RepoTags"].as_array().is_some_and(|t| !t.is_empty());
        let labelled = image
            .pointer("/Config/Labels")
            .and_then(|l| l.get(super::policy::RUNNER_LABEL))
            .is_some();
        if !tagged
            && !labelled
            && engine
                .delete(&format!("/images/{id}"))
                .await
                .unwrap_or(false)
        {
            removed += 1;
        }
    }
    removed
}

/// Removes the runner's oldest images until the rest fit in `budget` bytes (all of them
/// with `force`). Returns how many went and the bytes kept.
async fn prune_images(
    engine: &Engine,
    filter: &str,
    budget: u64,
    force: bool,
) -> Result<(u64, u64), EngineError> {
    let mut images = list(engine, &format!("/images/json?filters={filter}")).await?;
    images.sort_by_key(|i| std::cmp::Reverse(i["Created"].as_i64().unwrap_or(0)));
    let mut kept = 0u64;
    let mut removed = 0;
    for image in images {
        let size = image["Size"].as_u64().unwrap_or(0);
        if kept + size <= budget {
            kept += size;
            continue;
        }
        let id = image["Id"].as_str().unwrap_or_default();
        let force = if force { "?force=1" } else { "" };
        if engine
            .delete(&format!("/images/{id}{force}"))
            .await
            .unwrap_or(false)
        {
            removed += 1;
        } else {
            // In use by a container still running: it stays, and counts.
            kept += size;
        }
    }
    Ok((removed, kept))
}

async fn list(engine: &Engine, path: &str) -> Result<Vec<Value>, EngineError> {
    Ok(engine
        .get(path)
        .await?
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default())
}
