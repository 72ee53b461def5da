//! What a pass learns beyond the host at most once per resync interval: the registrations
//! GitHub lists (in the background: a pass never waits for GitHub), and each runner's disk.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::task::JoinSet;

use super::base_source::Bases;
use super::{Controller, Trigger};
use crate::config::Repo;
use crate::layout::StateLayout;
use crate::observe::{Observed, ServerRunner, ServerView};
use crate::provision::Base;

impl Controller {
    /// The registrations GitHub listed, once a listing begun by an earlier pass has ended,
    /// and a new listing begun in the background when due (at most once per resync
    /// interval, so requests grow with repositories, not runners). A pass never waits for
    /// GitHub: `None` while none has ended, without a credential, or for repositories that
    /// could not be listed. A repository where a worker ended since the listing began is left
    /// out (shown as not listed): the listing may predate what the worker did there.
    pub(super) async fn registrations(&mut self, observed: &Observed) -> Option<ServerView> {
        let view = self.take_listing().await;
        self.start_listing(observed);
        view
    }

    async fn take_listing(&mut self) -> Option<ServerView> {
        if !self.seen.listing.as_ref()?.1.is_finished() {
            return None;
        }
        let (began, handle) = self.seen.listing.take()?;
        // Finished: this await returns at once.
        let mut view = handle.await.ok()?;
        view.repos
            .retain(|repo, _| !self.book.workers.touched_since(repo, began));
        Some(view)
    }

    fn start_listing(&mut self, observed: &Observed) {
        let Some(gh) = self.github_client() else {
            return;
        };
        let now = super::now();
        let due = self
            .seen
            .last_listing
            .is_none_or(|at| now.duration_since(at) >= self.desired.resync_interval);
        if !due || self.seen.listing.is_some() {
            return;
        }
        self.seen.last_listing = Some(now);
        let recorded = observed
            .runners
            .values()
            .filter_map(|r| r.spec.as_ref()?.spec.as_ref())
            .map(|s| s.repo.clone());
        let mut repos: Vec<Repo> = self
            .desired
            .runners
            .values()
            .map(|s| s.repo.clone())
            .chain(recorded)
            .collect();
        repos.sort();
        repos.dedup();
        let triggers = self.triggers.clone();
        let handle = self.tasks.spawner().spawn(async move {
            let view = tokio::time::timeout(LISTING_DEADLINE, list_repos(gh, repos))
                .await
                .unwrap_or_else(|_| {
                    tracing::warn!(deadline = ?LISTING_DEADLINE, "listing registrations took too long");
                    ServerView::default()
                });
            let _ = triggers.send(Trigger::Listed);
            view
        });
        self.seen.listing = Some((now, handle));
    }

    /// Measures every runner's disk (unique vs shared with the base), at most once per resync
    /// interval: a walk of each runner root is cheap but not free.
    /// Unused releases are pruned on the same schedule.
    pub(super) async fn measure_disk(
        &mut self,
        layout: &StateLayout,
        observed: &Observed,
        bases: &Bases,
    ) {
        let now = super::now();
        if self
            .seen
            .last_disk
            .is_some_and(|at| now.duration_since(at) < self.desired.resync_interval)
        {
            return;
        }
        self.seen.last_disk = Some(now);
        self.prune_unused_releases(bases);
        // Each runner is measured against the base its externals link points at.
        let opened: Vec<Arc<Base>> = bases.values().flatten().cloned().collect();
        let main = self.main_base().ok();
        let runners: Vec<(String, Option<PathBuf>)> = observed
            .runners
            .iter()
            .filter(|(_, r)| r.provisioned)
            .map(|(n, r)| (n.clone(), r.base.clone()))
            .collect();
        let layout = layout.clone();
        let measured = tokio::task::spawn_blocking(move || {
            runners
                .into_iter()
                .filter_map(|(name, on)| {
                    let base = opened
                        .iter()
                        .find(|b| on.as_deref() == Some(b.path()))
                        .or(main.as_ref())?;
                    let provisioner =
                        crate::provision::Provisioner::new(layout.clone(), Arc::clone(base), None);
                    provisioner.disk_usage(&name).ok().map(|d| (name, d))
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for (name, disk) in measured {
            self.book.runtimes.entry(name).or_default().disk = Some(disk);
        }
    }
}

/// How long one listing of every repository may take before it is given up (the client's
/// own per-request timeout is shorter; this bounds retries and many repositories).
const LISTING_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

/// Lists every repository's registrations, concurrently.
async fn list_repos(gh: crate::github::GitHubClient, repos: Vec<Repo>) -> ServerView {
    let mut tasks = JoinSet::new();
    for repo in repos {
        let gh = gh.clone();
        tasks.spawn(async move { (gh.list_runners(&repo).await, repo) });
    }
    let mut view = ServerView::default();
    while let Some(Ok((listed, repo))) = tasks.join_next().await {
        match listed {
            Ok(registrations) => {
                let runners = registrations.into_iter().map(|r| ServerRunner {
                    custom_labels: r.custom_labels(),
                    online: r.status == "online",
                    id: r.id,
                    name: r.name,
                    busy: r.busy,
                    repo: repo.clone(),
                });
                view.repos
                    .insert(repo.url.to_lowercase(), runners.collect());
            }
            Err(err) => {
                tracing::warn!(repo = %repo.url, error = %err, "cannot list registrations");
            }
        }
    }
    view
}
