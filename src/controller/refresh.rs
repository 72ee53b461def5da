//! What a pass learns beyond the host at most once per resync interval: the registrations
//! GitHub lists, and each runner's disk.

use std::time::Instant;

use tokio::task::JoinSet;

use super::Controller;
use crate::config::Repo;
use crate::layout::StateLayout;
use crate::observe::{Observed, ServerRunner, ServerView};

impl Controller {
    /// The registrations of every repository corral manages, at most once per resync
    /// interval (so requests grow with repositories, not runners); `None` when not due, when
    /// there is no credential, or for repositories that could not be listed.
    pub(super) async fn list_registrations(&mut self, observed: &Observed) -> Option<ServerView> {
        let gh = self.github_client()?;
        let now = Instant::now();
        if self
            .last_listing
            .is_some_and(|at| now.duration_since(at) < self.desired.resync_interval)
        {
            return None;
        }
        self.last_listing = Some(now);
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
        Some(view)
    }

    /// Measures every runner's disk (unique vs shared with the base), at most once per resync
    /// interval: a walk of each runner root is cheap but not free.
    pub(super) async fn measure_disk(&mut self, layout: &StateLayout, observed: &Observed) {
        let now = Instant::now();
        if self
            .last_disk
            .is_some_and(|at| now.duration_since(at) < self.desired.resync_interval)
        {
            return;
        }
        self.last_disk = Some(now);
        let Ok(base) = self.base() else { return };
        let names: Vec<String> = observed
            .runners
            .iter()
            .filter(|(_, r)| r.provisioned)
            .map(|(n, _)| n.clone())
            .collect();
        let layout = layout.clone();
        let measured = tokio::task::spawn_blocking(move || {
            let provisioner = crate::provision::Provisioner::new(layout, base, None);
            names
                .into_iter()
                .filter_map(|n| provisioner.disk_usage(&n).ok().map(|d| (n, d)))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for (name, disk) in measured {
            self.runtimes.entry(name).or_default().disk = Some(disk);
        }
    }
}
