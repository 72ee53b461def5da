//! Demand for the pools: queued jobs per repository, polled at `demand_poll_interval` (or at
//! once after a webhook), one conditional request per repository however many pools use it;
//! and which runners are idle since when. Both become inputs of the pure [`crate::scale`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Instant, SystemTime};

use tokio::task::JoinSet;

use super::Controller;
use crate::config::Repo;
use crate::github::Polled;
use crate::observe::Observed;

/// What the last polls said, per repository.
#[derive(Debug, Default)]
pub(super) struct Demand {
    /// By repository URL (lower case): the listing's `ETag` and its queued jobs' labels.
    repos: BTreeMap<String, (Option<String>, Vec<Vec<String>>)>,
    /// When the last poll started.
    last_poll: Option<Instant>,
    /// Poll at the next pass whatever the interval (a webhook said a job is queued).
    pub(super) due_now: bool,
    /// When each runner online without a job became so.
    idle_since: BTreeMap<String, SystemTime>,
    /// Runners busy at the last pass.
    busy: BTreeSet<String>,
}

impl Controller {
    /// Fills `observed` with demand (polled when due) and idle times, for the pools.
    pub(super) async fn observe_demand(&mut self, observed: &mut Observed) {
        self.track_idle(observed);
        if self.desired.pools.is_empty() {
            self.demand.repos.clear();
            return;
        }
        let now = Instant::now();
        let due = self.demand.due_now
            || self
                .demand
                .last_poll
                .is_none_or(|at| now.duration_since(at) >= self.desired.demand_poll_interval);
        if due {
            self.demand.due_now = false;
            self.demand.last_poll = Some(now);
            self.poll_demand().await;
        }
        observed.demand = self
            .demand
            .repos
            .iter()
            .map(|(url, (_, jobs))| (url.clone(), jobs.clone()))
            .collect();
    }

    /// Polls every pool's repository once, concurrently; a repository that fails keeps what
    /// it said last (demand is a hint: `min_idle` and busy runners stand regardless).
    async fn poll_demand(&mut self) {
        let Some(gh) = self.github_client() else {
            return;
        };
        let mut repos: Vec<Repo> = self
            .desired
            .pools
            .iter()
            .map(|p| p.spec.repo.clone())
            .collect();
        repos.sort();
        repos.dedup();
        self.demand
            .repos
            .retain(|url, _| repos.iter().any(|r| r.url.to_lowercase() == *url));
        let mut tasks = JoinSet::new();
        for repo in repos {
            let key = repo.url.to_lowercase();
            let etag = self.demand.repos.get(&key).and_then(|(e, _)| e.clone());
            let gh = gh.clone();
            tasks.spawn(async move { (gh.queued_jobs(&repo, etag.as_deref()).await, key) });
        }
        while let Some(Ok((polled, key))) = tasks.join_next().await {
            match polled {
                Ok(Polled::NotModified) => {
                    tracing::trace!(repo = %key, "queued jobs unchanged (304)");
                }
                Ok(Polled::Fresh { etag, value }) => {
                    tracing::debug!(repo = %key, queued = value.len(), "queued jobs polled");
                    let jobs = value.into_iter().map(|j| j.labels).collect();
                    self.demand.repos.insert(key, (etag, jobs));
                }
                Err(err) => tracing::warn!(repo = %key, error = %err, "cannot poll queued jobs"),
            }
        }
    }

    /// Which live runners are idle, since when, and which are busy by their log.
    fn track_idle(&mut self, observed: &mut Observed) {
        let now = observed.now.unwrap_or_else(SystemTime::now);
        let mut idle = BTreeMap::new();
        for (name, seen) in &observed.runners {
            let Some(process) = seen.process else {
                continue;
            };
            let runtime = self.runtimes.get(name);
            if process.busy || runtime.is_some_and(|r| r.view.job.is_some()) {
                observed.busy.insert(name.clone());
            } else if runtime.is_some_and(|r| r.view.online) {
                let since = self.demand.idle_since.get(name).copied().unwrap_or(now);
                idle.insert(name.clone(), since);
            }
        }
        self.demand.idle_since = idle;
        observed.idle_since = self.demand.idle_since.clone();
        // A runner that took a job took it off the queue: what was polled is stale now.
        if observed.busy.iter().any(|n| !self.demand.busy.contains(n)) {
            self.demand.due_now = true;
        }
        self.demand.busy.clone_from(&observed.busy);
    }
}
