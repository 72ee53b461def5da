//! What a pass learns beyond the host at most once per resync interval: the registrations
//! GitHub lists, and each runner's disk.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tokio::task::JoinSet;

use super::base_source::Bases;
use super::Controller;
use crate::config::Repo;
use crate::layout::StateLayout;
use crate::observe::{Observed, ServerRunner, ServerView};
use crate::provision::Base;

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
    /// Unused releases are pruned on the same schedule.
    pub(super) async fn measure_disk(
        &mut self,
        layout: &StateLayout,
        observed: &Observed,
        bases: &Bases,
    ) {
        let now = Instant::now();
        if self
            .last_disk
            .is_some_and(|at| now.duration_since(at) < self.desired.resync_interval)
        {
            return;
        }
        self.last_disk = Some(now);
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
            self.runtimes.entry(name).or_default().disk = Some(disk);
        }
    }
}
