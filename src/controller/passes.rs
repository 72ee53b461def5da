//! One observe → plan → apply pass: observe the host, take the latest observations of the
//! sources, plan, and hand each runner's steps to its worker. A pass awaits only the host
//! (reads of /proc and the state directory, cgroup writes, Docker sockets), never GitHub.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::apply::{self, ApplyCtx, Job};
use super::base_source::Bases;
use super::step_error::BaseUnavailable;
use super::Controller;
use crate::config::Desired;
use crate::layout::StateLayout;
use crate::observe::{self, Observed};
use crate::reconcile::{self, Action};

impl Controller {
    /// One pass; returns when the next one is due at the latest.
    pub async fn pass(&mut self) -> Duration {
        let started = Instant::now();
        let mut requeue = self.pass_inner().await;
        if let Some(at) = self.book.requeue_at.take() {
            requeue = requeue.min(at.saturating_duration_since(super::now()));
        }
        if let Some(api) = &self.publish.api {
            api.with(|p| p.metrics.observe_pass(started.elapsed().as_secs_f64()));
        }
        requeue
    }

    async fn pass_inner(&mut self) -> Duration {
        let layout = self.layout();
        let mut observed = self.observe_host(&layout).await;
        if self
            .desired
            .source
            .as_ref()
            .is_some_and(|s| s.revision.is_none())
        {
            // No revision of the runner list yet (first start, remote not reached): planning
            // would remove every runner this host has. Wait for the first good fetch.
            self.write_status(&layout, &observed);
            return Duration::from_secs(5);
        }
        let bases = self.take_observations(&layout, &mut observed).await;
        let (desired, queues) = crate::scale::plan_pools(&self.desired, &observed);
        self.publish.pool_queues = queues;
        let actions = reconcile::plan(&desired, &observed);
        let requeue = self.requeue_for(&desired, &actions);
        if !actions.is_empty() {
            self.apply(&layout, actions, &desired, &observed, &bases);
        }
        self.publish.effective = Some(desired);
        self.publish_pass(&layout).await;
        requeue
    }

    /// The host as it is: runner directories, records, live listeners; their logs read and
    /// their cgroups kept up.
    async fn observe_host(&mut self, layout: &StateLayout) -> Observed {
        // A worker may be building a runner directory under a temporary name right now:
        // temporary directories are leftovers only when none runs.
        let quiet = !self.book.workers.any();
        let mut observed = {
            let layout = layout.clone();
            tokio::task::spawn_blocking(move || observe::observe(&layout))
                .await
                .unwrap_or_default()
        };
        if !quiet {
            observed.leftovers.clear();
        }
        self.follow_processes(layout, &observed);
        self.contain_pass(layout, &observed).await;
        observed
    }

    /// Adds the newest observations of the sources to `observed` (none of them waits for
    /// the network: each source's task reported before, or a new one was started now);
    /// returns the bases in force.
    async fn take_observations(&mut self, layout: &StateLayout, observed: &mut Observed) -> Bases {
        let desired = &self.desired;
        super::docker_steps::serve_adopted(&self.host.docker, layout, observed, |n| {
            desired.spec_for(n)
        })
        .await;
        observed.server = self.registrations(observed).await;
        if observed.server.is_some() || self.seen.github.is_none() {
            self.seen.first_listing_due = None;
        }
        let bases = self.bases();
        self.measure_disk(layout, observed, &bases).await;
        observed.bases = bases
            .iter()
            .filter_map(|(source, base)| Some((source.clone(), base.as_ref().ok()?.path().into())))
            .collect();
        self.observe_demand(observed);
        self.observe_scalesets(observed);
        self.publish.scaleset_status.clone_from(&observed.scalesets);
        bases
    }

    /// When the next pass is due at the latest, for this plan.
    fn requeue_for(&self, desired: &Desired, actions: &[Action]) -> Duration {
        let mut requeue = self.desired.resync_interval;
        if !desired.pools.is_empty() {
            // Demand is polled, and idle runners retired, on this beat.
            requeue = requeue.min(self.desired.demand_poll_interval);
        }
        if actions.iter().any(|a| matches!(a, Action::Rebase { .. })) {
            // A rolling upgrade goes on as soon as these runners are back.
            requeue = requeue.min(Duration::from_secs(1));
        }
        requeue
    }

    /// What changed during apply shows in the status of the next pass; observe again so
    /// status.json reflects this one.
    async fn publish_pass(&mut self, layout: &StateLayout) {
        let observed = tokio::task::spawn_blocking({
            let layout = layout.clone();
            move || {
                let observed = observe::observe(&layout);
                tighten_credentials(&layout, &observed);
                observed
            }
        })
        .await
        .unwrap_or_default();
        self.follow_processes(layout, &observed);
        self.write_status(layout, &observed);
    }

    /// Hands each runner's actions to a worker of its own; a runner whose worker still runs
    /// is left to the pass after it ends.
    fn apply(
        &mut self,
        layout: &StateLayout,
        actions: Vec<Action>,
        desired: &Desired,
        observed: &Observed,
        bases: &Bases,
    ) {
        let ctx = Arc::new(ApplyCtx {
            layout: layout.clone(),
            github: self.github_client(),
            triggers: self.triggers.clone(),
            spawner: self.tasks.spawner(),
            docker: Arc::clone(&self.host.docker),
            contain: self.contain(),
            scalesets: self.scaleset_clients(),
        });
        let now = super::now();
        for (name, actions) in group(actions) {
            let spec = desired.runners.get(&name).cloned();
            if self.held_back(&name, &actions, spec.as_ref(), observed, now) {
                continue;
            }
            let recorded = observed
                .runners
                .get(&name)
                .and_then(|r| r.spec.as_ref()?.spec.as_ref());
            let repo = spec
                .as_ref()
                .or(recorded)
                .map(|s| s.repo.url.to_lowercase());
            let phase = super::runtime::phase_of(&actions);
            let job = self.job_for(name.clone(), actions, spec, desired, bases, now);
            self.book
                .workers
                .spawn(name, repo, phase, apply::apply(Arc::clone(&ctx), job));
        }
    }

    /// What a worker is given for `name`'s steps, from what corral remembers of it.
    fn job_for(
        &mut self,
        name: String,
        actions: Vec<Action>,
        spec: Option<crate::config::RunnerSpec>,
        desired: &Desired,
        bases: &Bases,
        now: Instant,
    ) -> Job {
        let runtime = self.book.runtimes.entry(name.clone()).or_default();
        if actions
            .iter()
            .any(|a| matches!(a, Action::Start { .. } | Action::Restart { .. }))
        {
            runtime.view.restarted();
        }
        if actions
            .iter()
            .any(|a| matches!(a, Action::Deprovision { .. }))
        {
            // Its records go, the log with them: the next log is read from its start.
            runtime.tail = None;
        }
        let source = spec
            .as_ref()
            .map_or_else(|| desired.base.clone(), |s| desired.base_of(s));
        Job {
            base: bases
                .get(&source)
                .map_or(Err(BaseUnavailable::NotOpened), Clone::clone),
            spec,
            backoff_wait: runtime.hold(now),
            drain_started: runtime.drain_started,
            pending_jit: runtime.pending_jit.clone(),
            name,
            actions,
        }
    }

    /// True when `name`'s steps wait: its worker still runs, the first listing is not in
    /// yet, its listener's exit is not judged yet, or a backoff holds it (then the pass is
    /// requeued for when it ends).
    fn held_back(
        &mut self,
        name: &str,
        actions: &[Action],
        spec: Option<&crate::config::RunnerSpec>,
        observed: &Observed,
        now: Instant,
    ) -> bool {
        if self.book.workers.running(name) {
            return true;
        }
        if let Some(due) = self.seen.first_listing_due.filter(|due| *due > now) {
            let restart = actions.iter().any(|a| {
                matches!(
                    a,
                    Action::Start {
                        reason: reconcile::StartReason::NotRunning,
                        ..
                    }
                )
            });
            if restart {
                self.requeue_no_later_than(due);
                return true;
            }
        }
        let runtime = self.book.runtimes.entry(name.to_string()).or_default();
        runtime.applying(spec);
        runtime.forget_old_stops(now);
        let exit_unjudged = runtime.running_listener().is_some_and(|pid| {
            observed
                .runners
                .get(name)
                .and_then(|r| r.process)
                .is_none_or(|p| p.pid != pid)
        });
        if exit_unjudged {
            // Its listener is gone and its exit not yet reported: the exit decides the
            // backoff first (the report wakes the loop).
            return true;
        }
        let retry = runtime
            .retry_at
            .map_or(Duration::ZERO, |at| at.saturating_duration_since(now));
        let held = runtime.hold(now).max(retry);
        if !held.is_zero() {
            // Its last steps failed or its listener crashed: nothing is tried again
            // before the backoff ends.
            self.requeue_no_later_than(now + held);
            return true;
        }
        false
    }

    /// Folds an apply outcome into the runner's memory; returns its requeue.
    pub(super) fn remember(&mut self, name: &str, out: apply::Outcome, now: Instant) -> Duration {
        if name.starts_with('.') {
            // Leftover removal is not about any runner.
            return out.requeue.unwrap_or(if out.failure.is_some() {
                Duration::from_secs(5)
            } else {
                Duration::MAX
            });
        }
        if out.change == Some(apply::Change::Removed) {
            self.book.runtimes.remove(name);
            return Duration::MAX;
        }
        let runtime = self.book.runtimes.entry(name.to_string()).or_default();
        runtime.pending_jit = out.jit;
        runtime.retry_at = out.requeue.and_then(|d| now.checked_add(d));
        if let Some(pid) = out.stopping {
            runtime.stopping(pid, now);
        }
        if let Some(pid) = out.started {
            runtime.watch(pid);
            runtime.backoff.started(now);
            // Its start emptied its cgroup: nothing of an earlier job is left to sweep, and a
            // sweep would only freeze the new listener while it connects.
            runtime.contain.sweep_due = false;
            if let Some(not_applied) = out.not_applied {
                runtime.contain.not_applied = not_applied;
                runtime.contain.applied = out.limits;
                runtime.contain.applied_pid = Some(pid);
            }
        }
        if out.change == Some(apply::Change::Registered) {
            // A fresh identity: earlier errors are history.
            runtime.last_error = None;
        }
        runtime.drain_started = if out.draining {
            Some(runtime.drain_started.unwrap_or(now))
        } else {
            None
        };
        runtime.local_only |= out.local_only;
        let mut requeue = out.requeue.unwrap_or(Duration::MAX);
        if let Some(delay) = runtime.step_result(out.failure.as_ref(), now, SystemTime::now()) {
            requeue = requeue.min(delay);
        }
        requeue
    }
}

/// Actions grouped by runner, in plan order; leftovers go under their own key.
/// A listener started from a JIT configuration writes the identity files with its umask;
/// every pass makes them 0600 again (the 0700 root keeps others out in between).
fn tighten_credentials(layout: &StateLayout, observed: &Observed) {
    for (name, runner) in &observed.runners {
        if !runner.configured {
            continue;
        }
        let root = layout.runner_dir(name);
        match crate::provision::tighten_credentials(&root) {
            Ok(0) => {}
            Ok(changed) => tracing::debug!(runner = %name, changed, "identity files made 0600"),
            Err(e) => {
                tracing::warn!(runner = %name, cause = %e, "cannot make the identity files 0600");
            }
        }
    }
}

fn group(actions: Vec<Action>) -> BTreeMap<String, Vec<Action>> {
    let mut groups: BTreeMap<String, Vec<Action>> = BTreeMap::new();
    for action in actions {
        let key = action
            .runner()
            .map_or_else(|| ".leftovers".to_string(), str::to_string);
        groups.entry(key).or_default().push(action);
    }
    groups
}
