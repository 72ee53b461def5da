//! Demand for the pools: queued jobs per repository, polled at `demand_poll_interval` (or at
//! once after a webhook), once per repository however many pools use it, with conditional
//! requests (`github::runs`); and which runners are idle since when. Both become inputs of the
//! pure [`crate::scale`].
//!
//! A poll runs in its own task, one at a time, cut at [`POLL_DEADLINE`]; it hands its
//! observation back as [`Trigger::DemandPolled`]. A pass plans from the latest observation
//! and never waits for GitHub.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use super::tasks::Spawner;
use super::{Controller, Trigger};
use crate::config::Repo;
use crate::github::{DemandCache, GitHubClient};
use crate::observe::{Observed, QueuedJob};

/// How long one poll of every repository may take. Shorter than the client's 30 s request
/// timeout: demand older than two default poll intervals is no better than none.
pub(super) const POLL_DEADLINE: Duration = Duration::from_secs(20);

/// One repository's polls.
#[derive(Debug, Default)]
struct RepoDemand {
    /// The listings as last read (`ETag`s included); taken by a poll in flight.
    cache: DemandCache,
    /// Its queued jobs, as of the last poll that read them.
    jobs: Vec<QueuedJob>,
}

/// How one repository's poll ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollOutcome {
    /// Read: this many requests, this many of them answered 304.
    Read {
        /// Requests sent.
        requests: u32,
        /// Of which `304 Not Modified`.
        not_modified: u32,
    },
    /// GitHub answered with an error (the message, without secrets).
    Failed(String),
    /// No answer before [`POLL_DEADLINE`].
    TimedOut,
}

/// One repository's part of an observation.
#[derive(Debug)]
pub struct RepoPolled {
    /// Repository URL, lower case.
    pub key: String,
    /// How its poll ended.
    pub outcome: PollOutcome,
    /// Its cache after the poll (even one cut short keeps what it read).
    cache: DemandCache,
}

/// What one poll observed, and when it began (its age).
#[derive(Debug)]
pub struct Polled {
    /// When the poll began.
    pub began: Instant,
    /// Every repository polled.
    pub repos: Vec<RepoPolled>,
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
    /// Runners busy at the last pass, and since when corral has seen them so.
    busy: BTreeMap<String, Instant>,
    /// The poll in flight.
    polling: Option<JoinHandle<()>>,
    /// When the observation in force began, and how each repository's poll ended.
    pub(super) last: Option<(Instant, Vec<(String, PollOutcome)>)>,
}

impl Demand {
    /// Starts a poll of `repos` unless one is in flight; it reports to `triggers`.
    fn start_poll(
        &mut self,
        spawner: &Spawner,
        gh: GitHubClient,
        repos: Vec<Repo>,
        triggers: mpsc::UnboundedSender<Trigger>,
    ) -> bool {
        if self.polling.as_ref().is_some_and(|t| !t.is_finished()) {
            return false;
        }
        let now = super::now();
        self.due_now = false;
        self.last_poll = Some(now);
        let work: Vec<(Repo, DemandCache)> = repos
            .into_iter()
            .map(|repo| {
                let cache = self
                    .repos
                    .get_mut(&repo.url.to_lowercase())
                    .map(|r| std::mem::take(&mut r.cache))
                    .unwrap_or_default();
                (repo, cache)
            })
            .collect();
        self.polling = Some(spawner.spawn(async move {
            let polled = poll(gh, work, now, POLL_DEADLINE).await;
            let _ = triggers.send(Trigger::DemandPolled(Box::new(polled)));
        }));
        true
    }

    /// Takes an observation in: each repository's jobs and cache.
    pub(super) fn polled(&mut self, polled: Polled) {
        let now = SystemTime::now();
        let mut outcomes = Vec::new();
        for RepoPolled {
            key,
            outcome,
            cache,
        } in polled.repos
        {
            match &outcome {
                PollOutcome::Read {
                    requests,
                    not_modified,
                } => tracing::debug!(repo = %key, requests, not_modified,
                    unread_runs = cache.unread_runs(), "queued jobs polled"),
                PollOutcome::Failed(err) => {
                    tracing::warn!(repo = %key, error = %err, "cannot poll queued jobs");
                }
                PollOutcome::TimedOut => tracing::warn!(repo = %key, deadline = ?POLL_DEADLINE,
                    "cannot poll queued jobs: no answer before the deadline"),
            }
            let entry = self.repos.entry(key.clone()).or_default();
            // Even a poll cut short leaves the cache with the best knowledge.
            entry.jobs = with_queued_since(cache.queued_jobs(), &entry.jobs, now);
            entry.cache = cache;
            outcomes.push((key, outcome));
        }
        self.last = Some((polled.began, outcomes));
    }

    /// Stops the poll in flight (corral is stopping).
    pub(super) fn abort(&mut self) {
        if let Some(task) = self.polling.take() {
            task.abort();
        }
    }
}

/// Polls every repository once, concurrently, each cut at `deadline`; a repository that
/// fails keeps what it said last (demand is a hint: `min_idle` and busy runners stand
/// regardless).
pub(super) async fn poll(
    gh: GitHubClient,
    work: Vec<(Repo, DemandCache)>,
    began: Instant,
    deadline: Duration,
) -> Polled {
    let mut tasks = JoinSet::new();
    for (repo, mut cache) in work {
        let gh = gh.clone();
        tasks.spawn(async move {
            let polled = tokio::time::timeout(deadline, gh.poll_demand(&repo, &mut cache)).await;
            let outcome = match polled {
                Ok(Ok(cost)) => PollOutcome::Read {
                    requests: cost.requests,
                    not_modified: cost.not_modified,
                },
                Ok(Err(err)) => PollOutcome::Failed(err.to_string()),
                Err(_) => PollOutcome::TimedOut,
            };
            RepoPolled {
                key: repo.url.to_lowercase(),
                outcome,
                cache,
            }
        });
    }
    let mut repos = Vec::new();
    while let Some(done) = tasks.join_next().await {
        if let Ok(repo) = done {
            repos.push(repo);
        }
    }
    Polled { began, repos }
}

impl Controller {
    /// Fills `observed` with demand (the latest observation) and idle times, for the pools;
    /// starts a poll in the background when one is due.
    pub(super) fn observe_demand(&mut self, observed: &mut Observed) {
        self.track_idle(observed);
        if self.desired.pools.iter().all(|p| p.scale_set.is_some()) {
            self.seen.demand.repos.clear();
            return;
        }
        let mut repos: Vec<Repo> = self
            .desired
            .pools
            .iter()
            .filter(|p| p.scale_set.is_none())
            .map(|p| p.spec.repo.clone())
            .collect();
        repos.sort();
        repos.dedup();
        self.seen
            .demand
            .repos
            .retain(|url, _| repos.iter().any(|r| r.url.to_lowercase() == *url));
        let now = super::now();
        let due = self.seen.demand.due_now
            || self
                .seen
                .demand
                .last_poll
                .is_none_or(|at| now.duration_since(at) >= self.desired.demand_poll_interval);
        if due {
            if let Some(gh) = self.github_client() {
                let spawner = self.tasks.spawner();
                self.seen
                    .demand
                    .start_poll(&spawner, gh, repos, self.triggers.clone());
            }
        }
        let mut demand = self
            .seen
            .demand
            .repos
            .iter()
            .map(|(url, repo)| (url.clone(), repo.jobs.clone()))
            .collect();
        self.discount_taken(&mut demand);
        observed.demand = demand;
    }

    /// Which live runners are idle, since when, and which are busy by their log.
    fn track_idle(&mut self, observed: &mut Observed) {
        let now = observed.now.unwrap_or_else(SystemTime::now);
        let mut idle = BTreeMap::new();
        for (name, seen) in &observed.runners {
            let Some(process) = seen.process else {
                continue;
            };
            let runtime = self.book.runtimes.get(name);
            if process.busy || runtime.is_some_and(|r| r.view.job.is_some()) {
                observed.busy.insert(name.clone());
            } else if runtime.is_some_and(|r| r.view.online) {
                let since = self
                    .seen
                    .demand
                    .idle_since
                    .get(name)
                    .copied()
                    .unwrap_or(now);
                idle.insert(name.clone(), since);
            }
        }
        self.seen.demand.idle_since = idle;
        observed.idle_since = self.seen.demand.idle_since.clone();
        // A runner that took a job took it off the queue: what was polled is stale now.
        let demand = &mut self.seen.demand;
        if observed.busy.iter().any(|n| !demand.busy.contains_key(n)) {
            demand.due_now = true;
        }
        let at = super::now();
        demand.busy = observed
            .busy
            .iter()
            .map(|n| (n.clone(), demand.busy.get(n).copied().unwrap_or(at)))
            .collect();
    }

    /// Takes off `demand` the job each runner took since the observation in force began (by
    /// its labels, the oldest that fits): until a poll that began after sees it gone, the
    /// job would otherwise ask for a second runner.
    fn discount_taken(&self, demand: &mut BTreeMap<String, Vec<QueuedJob>>) {
        let began = self.seen.demand.last.as_ref().map(|(at, _)| *at);
        for (name, since) in &self.seen.demand.busy {
            if began.is_none_or(|began| began > *since) {
                continue;
            }
            let spec = self
                .publish
                .effective
                .as_ref()
                .and_then(|d| d.runners.get(name).cloned())
                .or_else(|| self.desired.spec_for(name));
            let Some(spec) = spec else { continue };
            let Some(jobs) = demand.get_mut(&spec.repo.url.to_lowercase()) else {
                continue;
            };
            let labels = spec.all_labels();
            let oldest = jobs
                .iter()
                .enumerate()
                .filter(|(_, j)| crate::scale::job_matches(&j.labels, &labels))
                .min_by_key(|(_, j)| j.queued_at)
                .map(|(i, _)| i);
            if let Some(i) = oldest {
                jobs.remove(i);
            }
        }
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

#[cfg(test)]
mod tests {
    use super::super::tasks::Tasks;
    use super::*;
    use crate::config::{GitHub, GitHubAuth};

    /// The GitHub client's own timeout of one request (`github::TIMEOUT`).
    const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

    fn repo() -> Repo {
        Repo {
            owner: "owner".into(),
            name: "repo".into(),
            url: "https://github.com/owner/repo".into(),
        }
    }

    /// A client of a server at `addr`, with a token from a file in `dir`.
    fn client(addr: std::net::SocketAddr, dir: &std::path::Path) -> GitHubClient {
        let token = dir.join("token");
        std::fs::write(&token, "test-token").expect("write the token");
        GitHubClient::new(&GitHub {
            web_url: "https://github.com".into(),
            api_url: format!("http://{addr}"),
            auth: GitHubAuth::TokenFile(token),
            marker_label: None,
            cleanup_orphans: false,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_poll_nobody_answers_ends_at_its_deadline_while_the_last_jobs_stay_in_force() {
        // Accepts every connection and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let server = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let dir = tempfile::tempdir().expect("tempdir");
        let gh = client(addr, dir.path());
        let tasks = Tasks::default();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut demand = Demand::default();
        let queued = QueuedJob {
            id: 7,
            labels: vec!["self-hosted".into()],
            queued_at: Some(SystemTime::UNIX_EPOCH),
        };
        demand.repos.insert(
            repo().url,
            RepoDemand {
                cache: DemandCache::default(),
                jobs: vec![queued.clone()],
            },
        );
        let began = tokio::time::Instant::now();
        assert!(demand.start_poll(&tasks.spawner(), gh.clone(), vec![repo()], tx.clone()));
        // Starting it took no time, and one poll runs at a time.
        assert_eq!(began.elapsed(), Duration::ZERO);
        assert!(!demand.start_poll(&tasks.spawner(), gh, vec![repo()], tx));
        // While it runs, the pass plans from what the last poll said.
        assert_eq!(demand.repos[&repo().url].jobs, vec![queued]);
        let Some(Trigger::DemandPolled(polled)) = rx.recv().await else {
            panic!("the poll reports its observation");
        };
        let took = began.elapsed();
        assert!(
            took >= POLL_DEADLINE && took < CLIENT_TIMEOUT,
            "cut at its own deadline, before the client's: {took:?}"
        );
        assert_eq!(polled.repos.len(), 1);
        assert_eq!(polled.repos[0].outcome, PollOutcome::TimedOut);
        demand.polled(*polled);
        let (_, outcomes) = demand.last.as_ref().expect("an observation in force");
        assert_eq!(outcomes, &vec![(repo().url, PollOutcome::TimedOut)]);
        server.abort();
    }
}
