//! Demand for the pools: queued jobs per repository, polled at `demand_poll_interval` (or at
//! once after a webhook), once per repository however many pools use it, with conditional
//! requests (`github::runs`); and which runners are idle since when. Both become inputs of the
//! pure [`crate::scale`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Instant, SystemTime};

use tokio::task::JoinSet;

use super::Controller;
use crate::config::Repo;
use crate::github::DemandCache;
use crate::observe::{Observed, QueuedJob};

/// One repository's polls.
#[derive(Debug, Default)]
struct RepoDemand {
    /// The listings as last read (`ETag`s included).
    cache: DemandCache,
    /// Its queued jobs, as of the last poll that read them.
    jobs: Vec<QueuedJob>,
}

/// What the last polls said, per repository.
#[derive(Debug, Default)]
pub(super) struct Demand {
    /// By repository URL (lower case): what its polls read.
    repos: BTreeMap<String, RepoDemand>,
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
        if self.desired.pools.iter().all(|p| p.scale_set.is_some()) {
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
            .map(|(url, repo)| (url.clone(), repo.jobs.clone()))
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
            .filter(|p| p.scale_set.is_none())
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
            let mut cache = self
                .demand
                .repos
                .get_mut(&key)
                .map(|r| std::mem::take(&mut r.cache))
                .unwrap_or_default();
            let gh = gh.clone();
            tasks.spawn(async move {
                let polled = gh.poll_demand(&repo, &mut cache).await;
                (polled, cache, key)
            });
        }
        let now = SystemTime::now();
        while let Some(Ok((polled, cache, key))) = tasks.join_next().await {
            let entry = self.demand.repos.entry(key.clone()).or_default();
            match polled {
                Ok(cost) => {
                    tracing::debug!(repo = %key, requests = cost.requests, not_modified = cost.not_modified,
                        unread_runs = cache.unread_runs(), "queued jobs polled");
                }
                Err(err) => tracing::warn!(repo = %key, error = %err, "cannot poll queued jobs"),
            }
            // Even a poll cut short by an error leaves the cache with the best knowledge.
            entry.jobs = with_queued_since(cache.queued_jobs(), &entry.jobs, now);
            entry.cache = cache;
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

/// `jobs` with a `queued_at` for each: GitHub's `created_at`, else when it was first seen.
fn with_queued_since(
    mut jobs: Vec<QueuedJob>,
    before: &[QueuedJob],
    now: SystemTime,
) -> Vec<QueuedJob> {
    for job in &mut jobs {
        if job.queued_at.is_none() {
            job.queued_at = Some(
                before
                    .iter()
                    .find(|b| b.id == job.id)
                    .and_then(|b| b.queued_at)
                    .unwrap_or(now),
            );
        }
    }
    jobs
}
