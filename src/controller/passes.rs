//! One observe → plan → apply pass, and the controller state it works on.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;
use tracing::{error, info};

use super::apply::{self, ApplyCtx, Job};
use super::runtime::{build_status, ExitMeaning, Runtime};
use super::Trigger;
use crate::config::{self, Desired};
use crate::github::GitHubClient;
use crate::layout::StateLayout;
use crate::markers::LogTail;
use crate::observe::{self, Observed};
use crate::process::cap_log;
use crate::provision::Base;
use crate::reconcile::{self, Action};
use crate::status::{self, GitHubStatus};

#[path = "base_source.rs"]
mod base_source;
#[path = "contain_pass.rs"]
mod contain_pass;
#[path = "demand.rs"]
mod demand;
#[path = "refresh.rs"]
mod refresh;
#[path = "scalesets.rs"]
mod scalesets;

use base_source::{Bases, ReleaseOutcome};

/// How long, after corral starts, a registered runner's start waits for the first listing.
const FIRST_LISTING_GRACE: Duration = Duration::from_secs(5);
/// Largest listener log before it is rotated.
const LOG_CAP: u64 = 10 * 1024 * 1024;

/// The controller's state between passes.
pub struct Controller {
    config_path: PathBuf,
    config_digest: Vec<u8>,
    desired: Desired,
    config_error: Option<String>,
    runtimes: BTreeMap<String, Runtime>,
    triggers: mpsc::UnboundedSender<Trigger>,
    /// Base trees opened this far, by path.
    opened: BTreeMap<PathBuf, Result<Arc<Base>, String>>,
    github: Option<(config::GitHub, GitHubClient)>,
    last_listing: Option<Instant>,
    last_states: BTreeMap<String, status::State>,
    api: Option<crate::api::Shared>,
    last_disk: Option<Instant>,
    /// Releases as asked (`2.329.0`, `latest`): the installed tree or why not (and when to
    /// try again).
    releases: BTreeMap<String, ReleaseOutcome>,
    installing: BTreeSet<String>,
    /// Installed releases no runner uses, since when.
    unused_since: BTreeMap<String, Instant>,
    /// When `latest` was last looked up, and whether a listener asked for it sooner.
    latest_checked: Option<Instant>,
    recheck_latest: bool,
    /// Queued jobs and idle times for the pools.
    demand: demand::Demand,
    /// The desired state of the last pass, pools expanded (for status and exits).
    effective: Option<Desired>,
    /// The queued jobs each pool of `desired` served at the last pass.
    pool_queues: Vec<Vec<crate::observe::QueuedJob>>,
    /// The engines of pools with `engine: scaleset`.
    scalesets: scalesets::ScaleSetPools,
    /// Their statuses at the last pass, by pool key.
    scaleset_status: BTreeMap<String, crate::scaleset::EngineStatus>,
    /// The runners' Docker sockets.
    docker: Arc<crate::docker::Hub>,
    /// Each runner's apply steps, in flight.
    workers: super::workers::Workers,
    /// A listing of the registrations in the background, and when it began.
    listing: Option<(Instant, tokio::task::JoinHandle<crate::observe::ServerView>)>,
    /// The earliest requeue an ended worker asked for, taken by the next pass.
    requeue_at: Option<Instant>,
    /// Exits of listeners whose runner's worker was still running (runner, pid, code).
    exits_after_worker: Vec<(String, i32, Option<i32>)>,
    /// Until the first listing of the registrations after corral started (or this time),
    /// a registered runner's listener is not started: its registration may have been
    /// deleted while corral was down, and a listener would then start only to fail.
    first_listing_due: Option<Instant>,
    /// The runners' cgroups, for the state directory they were made for.
    contain: (PathBuf, Arc<super::contain::Contain>),
    /// When usage was last measured.
    last_usage: Option<Instant>,
    /// `source.git`: its fetch task and what the last fetch said.
    source: super::source_follow::SourceState,
}

impl Controller {
    /// A controller for the already loaded `desired`, parsed from `config_digest` or a later
    /// version of the file.
    pub fn new(
        config_path: PathBuf,
        config_digest: Vec<u8>,
        desired: Desired,
        triggers: mpsc::UnboundedSender<Trigger>,
    ) -> Self {
        let docker = Arc::new(crate::docker::Hub::new(
            crate::docker::engine_socket_from_env(),
            &desired.state_dir,
        ));
        let contain = (
            desired.state_dir.clone(),
            Arc::new(super::contain::Contain::establish(&desired.state_dir)),
        );
        Controller {
            contain,
            last_usage: None,
            config_digest,
            config_path,
            desired,
            config_error: None,
            runtimes: BTreeMap::new(),
            triggers,
            opened: BTreeMap::new(),
            github: None,
            last_listing: None,
            last_states: BTreeMap::new(),
            api: None,
            last_disk: None,
            releases: BTreeMap::new(),
            installing: BTreeSet::new(),
            unused_since: BTreeMap::new(),
            latest_checked: None,
            recheck_latest: false,
            docker,
            demand: demand::Demand::default(),
            effective: None,
            workers: super::workers::Workers::default(),
            listing: None,
            requeue_at: None,
            exits_after_worker: Vec::new(),
            first_listing_due: Some(Instant::now() + FIRST_LISTING_GRACE),
            pool_queues: Vec::new(),
            scalesets: scalesets::ScaleSetPools::default(),
            scaleset_status: BTreeMap::new(),
            source: super::source_follow::SourceState::default(),
        }
    }

    /// Starts (or restarts) following the config's `source`, if any.
    pub fn follow_source(&mut self) {
        self.source.follow(&self.desired, &self.triggers);
    }

    /// What a valid `push` webhook delivery does (fetch the source now if it is for it).
    pub fn source_on_push(&self) -> crate::api::OnPush {
        self.source.on_push()
    }

    /// Polls demand at the next pass, whatever the interval (a webhook reported a queued job).
    pub fn demand_changed(&mut self) {
        self.demand.due_now = true;
    }

    /// True when the next pass must poll demand (so it must not be skipped).
    pub fn demand_due_now(&self) -> bool {
        self.demand.due_now
    }

    /// Publishes status and metrics to the HTTP API from now on.
    pub fn publish_to(&mut self, api: crate::api::Shared) {
        self.api = Some(api);
    }

    /// The config file.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The desired state in force.
    pub fn desired(&self) -> &Desired {
        &self.desired
    }

    /// Paths under the state directory in force.
    pub fn layout(&self) -> StateLayout {
        StateLayout::new(&self.desired.state_dir)
    }

    /// Re-reads the config file. Returns false when its bytes did not change. An invalid file
    /// is logged and kept in status; the last good desired state stays in force.
    pub fn reload(&mut self) -> bool {
        let bytes = std::fs::read(&self.config_path).unwrap_or_default();
        if bytes == self.config_digest {
            return false;
        }
        self.config_digest = bytes;
        match config::load_on(&self.config_path, &self.desired.host_id) {
            Ok(desired) => {
                info!(runners = desired.runners.len(), "config reloaded");
                self.desired = desired;
                self.config_error = None;
                self.source.local_changed();
                self.follow_source();
            }
            Err(errors) => {
                error!(errors = %errors, "config edit refused; the last good config stays in force");
                self.config_error = Some(errors.to_string());
                if let Some(api) = &self.api {
                    api.with(|p| p.metrics.config_reload_failures += 1);
                }
            }
        }
        true
    }

    /// Records what an exit means before the next pass.
    pub fn on_trigger(&mut self, trigger: Trigger) {
        let (name, pid, code) = match trigger {
            Trigger::Exited { name, pid, code } if self.workers.running(&name) => {
                // Its worker started or is stopping this listener: the exit is judged once
                // the worker's outcome says which.
                self.exits_after_worker.push((name, pid, code));
                return;
            }
            Trigger::Exited { name, pid, code } => (name, pid, code),
            Trigger::JobQueued => {
                tracing::debug!("a webhook reported a queued job: polling demand now");
                self.demand_changed();
                return;
            }
            Trigger::ReleaseInstalled { version, result } => {
                self.release_installed(version, result);
                return;
            }
            // The pass that follows every trigger reads the engines' statuses and takes the
            // listing.
            Trigger::ScaleSetChanged | Trigger::Listed => return,
            Trigger::SourceFetched(fetched) => {
                if let Some(next) = self
                    .source
                    .fetched(*fetched, &self.desired, &self.config_path)
                {
                    self.desired = next;
                }
                return;
            }
        };
        let spec = self.desired.spec_for(&name);
        if spec.is_none() && !self.runtimes.contains_key(&name) {
            // A runner corral removed: its listener's exit is the end of the story.
            return;
        }
        if code == Some(7) {
            // The runner version is deprecated: look for a newer release now.
            self.recheck_latest = true;
        }
        let ephemeral = spec.is_some_and(|s| s.ephemeral);
        let layout = self.layout();
        let runtime = self.runtimes.entry(name.clone()).or_default();
        if let Some(tail) = runtime.tail.as_mut() {
            tail.read_into(&layout.listener_log(&name), &mut runtime.view);
        }
        // Its job, if any, ended with it.
        self.docker.job_ended(&name);
        let _span = tracing::info_span!("runner", runner = %name).entered();
        if runtime.exited(pid, code, ephemeral, Instant::now()) == ExitMeaning::RegistrationDeleted
        {
            apply::forget_identity(&layout.runner_dir(&name));
        }
    }

    /// The next runner whose steps ended; never resolves while none are in flight.
    pub async fn worker_ended(&mut self) -> super::workers::Done {
        self.workers.next().await
    }

    /// Folds the outcome of a runner's steps into its memory; and every other that ended.
    pub fn on_worker_ended(&mut self, done: super::workers::Done) {
        let mut done = Some(done);
        while let Some(ended) = done.take().or_else(|| self.workers.try_next()) {
            let now = Instant::now();
            let requeue = self.remember(&ended.name, ended.outcome, now);
            if let Some(at) = now.checked_add(requeue) {
                self.requeue_no_later_than(at);
            }
            let (exits, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.exits_after_worker)
                .into_iter()
                .partition(|(name, _, _)| *name == ended.name);
            self.exits_after_worker = later;
            for (name, pid, code) in exits {
                self.on_trigger(Trigger::Exited { name, pid, code });
            }
        }
    }

    /// Makes the next pass due at `at` at the latest.
    fn requeue_no_later_than(&mut self, at: Instant) {
        self.requeue_at = Some(self.requeue_at.map_or(at, |t| t.min(at)));
    }

    /// Stops every runner's steps in flight and the listing (corral is stopping).
    pub async fn stop_workers(&mut self) {
        if let Some((_, listing)) = self.listing.take() {
            listing.abort();
        }
        self.workers.abort().await;
    }

    /// One pass; returns when the next one is due at the latest.
    pub async fn pass(&mut self) -> Duration {
        let started = Instant::now();
        let mut requeue = self.pass_inner().await;
        if let Some(at) = self.requeue_at.take() {
            requeue = requeue.min(at.saturating_duration_since(Instant::now()));
        }
        if let Some(api) = &self.api {
            api.with(|p| p.metrics.observe_pass(started.elapsed().as_secs_f64()));
        }
        requeue
    }

    async fn pass_inner(&mut self) -> Duration {
        let layout = self.layout();
        // A worker may be building a runner directory under a temporary name right now:
        // temporary directories are leftovers only when none runs.
        let quiet = !self.workers.any();
        let mut observed = {
            let layout = layout.clone();
            tokio::task::spawn_blocking(move || observe::observe(&layout))
                .await
                .unwrap_or_default()
        };
        if !quiet {
            observed.leftovers.clear();
        }
        self.follow_processes(&layout, &observed);
        self.contain_pass(&layout, &observed).await;
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
        let desired = &self.desired;
        super::docker_steps::serve_adopted(&self.docker, &layout, &observed, |n| {
            desired.spec_for(n)
        })
        .await;
        observed.server = self.registrations(&observed).await;
        if observed.server.is_some() || self.github.is_none() {
            self.first_listing_due = None;
        }
        let bases = self.bases();
        self.measure_disk(&layout, &observed, &bases).await;
        observed.bases = bases
            .iter()
            .filter_map(|(source, base)| Some((source.clone(), base.as_ref().ok()?.path().into())))
            .collect();
        self.observe_demand(&mut observed).await;
        self.observe_scalesets(&mut observed).await;
        self.scaleset_status.clone_from(&observed.scalesets);
        let (desired, queues) = crate::scale::plan_pools(&self.desired, &observed);
        self.pool_queues = queues;
        let actions = reconcile::plan(&desired, &observed);
        let mut requeue = self.desired.resync_interval;
        if !desired.pools.is_empty() {
            // Demand is polled, and idle runners retired, on this beat.
            requeue = requeue.min(self.desired.demand_poll_interval);
        }
        if actions.iter().any(|a| matches!(a, Action::Rebase { .. })) {
            // A rolling upgrade goes on as soon as these runners are back.
            requeue = requeue.min(Duration::from_secs(1));
        }
        if !actions.is_empty() {
            self.apply(&layout, actions, &desired, &observed, &bases);
        }
        self.effective = Some(desired);
        // What changed during apply shows in the status of the next pass; observe again so
        // status.json reflects this one.
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
        self.follow_processes(&layout, &observed);
        self.write_status(&layout, &observed);
        requeue
    }

    /// Keeps up with live listeners: reads their logs, caps them, watches adopted ones.
    fn follow_processes(&mut self, layout: &StateLayout, observed: &Observed) {
        for (name, seen) in &observed.runners {
            let log = layout.listener_log(name);
            let runtime = self.runtimes.entry(name.clone()).or_default();
            let _ = cap_log(&log, LOG_CAP);
            let job_before = runtime.view.job.clone();
            runtime
                .tail
                .get_or_insert_with(LogTail::default)
                .read_into(&log, &mut runtime.view);
            let finished = std::mem::take(&mut runtime.view.finished);
            if runtime.view.job != job_before || !finished.is_empty() {
                // A job began or ended: a drain waiting on it is tried again at once.
                runtime.retry_at = None;
            }
            if !finished.is_empty() || seen.process.is_some_and(|p| p.busy) {
                // A job ran: once its Worker is gone, what it left goes.
                runtime.contain.sweep_due = true;
                runtime.contain.clean_due = true;
            }
            super::docker_steps::job_events(
                &self.docker,
                name,
                job_before.as_deref(),
                &runtime.view,
                finished.len(),
            );
            if let Some(api) = &self.api {
                api.with(|p| {
                    for job in &finished {
                        p.metrics
                            .observe_job(name, &job.result, job.duration_seconds);
                    }
                });
            }
            let Some(process) = seen.process else {
                continue;
            };
            // A listener its worker just started is watched by that worker's outcome.
            if runtime.watched_pid == Some(process.pid) || self.workers.running(name) {
                continue;
            }
            // Not our child (corral restarted): its pidfd tells of the exit. A job may have
            // ended while corral was away: what it left goes.
            runtime.watched_pid = Some(process.pid);
            runtime.contain.sweep_due = true;
            let record = crate::layout::read_record::<crate::layout::ProcessRecord>(
                &layout.process_record(name),
            )
            .filter(|r| r.pid == process.pid)
            .or_else(|| record_unrecorded(layout, name, process.pid));
            let Some(record) = record else { continue };
            info!(runner = %name, pid = record.pid, "adopted a running listener");
            let (name, triggers) = (name.clone(), self.triggers.clone());
            tokio::spawn(async move {
                crate::process::wait_gone(record.pid, record.start_time).await;
                let _ = triggers.send(Trigger::Exited {
                    name,
                    pid: record.pid,
                    code: None,
                });
            });
        }
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
            docker: Arc::clone(&self.docker),
            contain: self.contain(),
            scalesets: self.scaleset_clients(),
        });
        let now = Instant::now();
        for (name, actions) in group(actions) {
            if self.workers.running(&name) {
                continue;
            }
            if let Some(due) = self.first_listing_due.filter(|due| *due > now) {
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
                    continue;
                }
            }
            let runtime = self.runtimes.entry(name.clone()).or_default();
            let spec = desired.runners.get(&name).cloned();
            runtime.applying(spec.as_ref());
            let exit_unjudged = runtime.watched_pid.is_some_and(|pid| {
                observed
                    .runners
                    .get(&name)
                    .and_then(|r| r.process)
                    .is_none_or(|p| p.pid != pid)
            });
            if exit_unjudged {
                // Its listener is gone and its exit not yet reported: the exit decides the
                // backoff first (the report wakes the loop).
                continue;
            }
            let retry = runtime
                .retry_at
                .map_or(Duration::ZERO, |at| at.saturating_duration_since(now));
            let held = runtime.hold(now).max(retry);
            if !held.is_zero() {
                // Its last steps failed or its listener crashed: nothing is tried again
                // before the backoff ends.
                let at = now + held;
                self.requeue_no_later_than(at);
                continue;
            }
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
            let recorded = observed
                .runners
                .get(&name)
                .and_then(|r| r.spec.as_ref()?.spec.as_ref());
            let repo = spec
                .as_ref()
                .or(recorded)
                .map(|s| s.repo.url.to_lowercase());
            let source = spec
                .as_ref()
                .map_or_else(|| desired.base.clone(), |s| desired.base_of(s));
            let job = Job {
                base: bases
                    .get(&source)
                    .map_or_else(|| Err("no base".into()), |b| b.clone().map_err(Into::into)),
                spec,
                backoff_wait: runtime.hold(now),
                drain_started: runtime.drain_started,
                pending_jit: runtime.pending_jit.clone(),
                name: name.clone(),
                actions,
            };
            self.workers
                .spawn(name, repo, apply::apply(Arc::clone(&ctx), job));
        }
    }

    /// Folds an apply outcome into the runner's memory; returns its requeue.
    fn remember(&mut self, name: &str, out: apply::Outcome, now: Instant) -> Duration {
        if name.starts_with('.') {
            // Leftover removal is not about any runner.
            return out.requeue.unwrap_or(if out.failure.is_some() {
                Duration::from_secs(5)
            } else {
                Duration::MAX
            });
        }
        if out.change == Some(apply::Change::Removed) {
            self.runtimes.remove(name);
            return Duration::MAX;
        }
        let runtime = self.runtimes.entry(name.to_string()).or_default();
        runtime.pending_jit = out.jit;
        runtime.retry_at = out.requeue.and_then(|d| now.checked_add(d));
        if let Some(pid) = out.stopping {
            runtime.stopping_pid = Some(pid);
        }
        if let Some(pid) = out.started {
            runtime.watched_pid = Some(pid);
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

    /// The GitHub client for the `github` section in force, kept across passes (it holds
    /// the rate-limit budget and cached tokens) and made anew when the section changes.
    fn github_client(&mut self) -> Option<GitHubClient> {
        let wanted = self
            .desired
            .github
            .clone()
            .filter(|g| g.auth != config::GitHubAuth::None);
        match (&self.github, wanted) {
            (Some((have, client)), Some(want)) if *have == want => Some(client.clone()),
            (_, Some(want)) => {
                let client = GitHubClient::new(&want);
                self.github = Some((want, client.clone()));
                Some(client)
            }
            (_, None) => {
                self.github = None;
                None
            }
        }
    }

    fn write_status(&mut self, layout: &StateLayout, observed: &Observed) {
        let github = self.github.as_ref().map(|(_, gh)| GitHubStatus {
            rate_limit: gh.budget(),
            blocked_until: gh
                .blocked_until()
                .map(|t| humantime::format_rfc3339_seconds(t).to_string()),
        });
        let mut status = build_status(
            self.effective.as_ref().unwrap_or(&self.desired),
            observed,
            &self.runtimes,
            self.config_error.clone(),
            github,
            Instant::now(),
        );
        status.source = self.source.status(&self.desired);
        super::docker_steps::attach_counters(&self.docker, &mut status);
        let now = std::time::SystemTime::now();
        status.pools = self
            .desired
            .pools
            .iter()
            .enumerate()
            .map(|(i, pool)| {
                let jobs = self.pool_queues.get(i).map_or(&[][..], Vec::as_slice);
                let engine = pool
                    .scale_set_key()
                    .and_then(|key| self.scaleset_status.get(&key));
                status::PoolStatus::new(pool, jobs, engine, now)
            })
            .collect();
        self.log_state_changes(&status);
        if let Some(api) = &self.api {
            let ready = self.config_error.is_none();
            let requests = self
                .github
                .as_ref()
                .map(|(_, gh)| gh.request_counts())
                .unwrap_or_default();
            api.with(|p| {
                p.status = Some(status.clone());
                p.ready = ready;
                p.metrics.github_requests = requests;
            });
        }
        if let Err(err) = status::write(&layout.status_file(), &status) {
            error!(cause = %err, "cannot write status.json");
        }
    }

    /// One structured event per state change: runner, from, to, and why.
    fn log_state_changes(&mut self, status: &status::Status) {
        let mut now: BTreeMap<String, status::State> = BTreeMap::new();
        for r in &status.runners {
            let before = self.last_states.get(&r.name).copied();
            if before != Some(r.state) {
                let from = before.map_or_else(|| "absent".to_string(), |s| s.to_string());
                let reason = r.last_error.as_deref().unwrap_or("");
                info!(runner = %r.name, from = %from, to = %r.state, reason, "runner state changed");
            }
            now.insert(r.name.clone(), r.state);
        }
        for gone in self.last_states.keys().filter(|n| !now.contains_key(*n)) {
            info!(runner = %gone, from = %self.last_states[gone], to = "removed", reason = "", "runner state changed");
        }
        self.last_states = now;
    }

    /// The runners' cgroups, made anew when `state_dir` changed.
    pub fn contain(&mut self) -> Arc<super::contain::Contain> {
        if self.contain.0 != self.desired.state_dir {
            let state_dir = self.desired.state_dir.clone();
            self.contain = (
                state_dir.clone(),
                Arc::new(super::contain::Contain::establish(&state_dir)),
            );
        }
        Arc::clone(&self.contain.1)
    }

    /// The runners' Docker sockets.
    pub fn docker(&self) -> Arc<crate::docker::Hub> {
        Arc::clone(&self.docker)
    }

    /// Every runtime, for shutdown.
    pub fn runtimes(&self) -> &BTreeMap<String, Runtime> {
        &self.runtimes
    }

    /// Writes the status as observed now.
    pub fn write_final_status(&mut self) {
        let layout = self.layout();
        self.write_status(&layout, &observe::observe(&layout));
    }
}

/// Records a listener found running without a record (corral was killed right after starting
/// it), so that it is stopped and watched like any other.
fn record_unrecorded(
    layout: &StateLayout,
    name: &str,
    pid: i32,
) -> Option<crate::layout::ProcessRecord> {
    let record = crate::layout::ProcessRecord {
        pid,
        start_time: crate::observe::process_start_time(pid)?,
    };
    info!(runner = %name, pid, "found a listener corral had not recorded");
    crate::layout::write_record(&layout.process_record(name), &record).ok()?;
    Some(record)
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
