//! One observe → plan → apply pass, and the controller state it works on.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
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
#[path = "demand.rs"]
mod demand;
#[path = "refresh.rs"]
mod refresh;
#[path = "scalesets.rs"]
mod scalesets;

use base_source::{Bases, ReleaseOutcome};

/// Runners applied at the same time.
const CONCURRENCY: usize = 8;
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
        Controller {
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
            pool_queues: Vec::new(),
            scalesets: scalesets::ScaleSetPools::default(),
            scaleset_status: BTreeMap::new(),
        }
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
            Trigger::Exited { name, pid, code } => (name, pid, code),
            Trigger::JobQueued => {
                tracing::debug!("a webhook reported a queued job: polling demand now");
                self.demand_changed();
                return;
            }
            // The pass that follows every trigger reads the engines' statuses.
            Trigger::ScaleSetChanged => return,
            Trigger::ReleaseInstalled { version, result } => {
                self.release_installed(version, result);
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

    /// One pass; returns when the next one is due at the latest.
    pub async fn pass(&mut self) -> Duration {
        let started = Instant::now();
        let requeue = self.pass_inner().await;
        if let Some(api) = &self.api {
            api.with(|p| p.metrics.observe_pass(started.elapsed().as_secs_f64()));
        }
        requeue
    }

    async fn pass_inner(&mut self) -> Duration {
        let layout = self.layout();
        let mut observed = {
            let layout = layout.clone();
            tokio::task::spawn_blocking(move || observe::observe(&layout))
                .await
                .unwrap_or_default()
        };
        self.follow_processes(&layout, &observed);
        let desired = &self.desired;
        super::docker_steps::serve_adopted(&self.docker, &layout, &observed, |n| {
            desired.spec_for(n)
        })
        .await;
        observed.server = self.list_registrations(&observed).await;
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
            requeue = requeue.min(self.apply(&layout, actions, &desired, &bases).await);
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
            if runtime.watched_pid == Some(process.pid) {
                continue;
            }
            // Not our child (corral restarted): its pidfd tells of the exit.
            runtime.watched_pid = Some(process.pid);
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

    async fn apply(
        &mut self,
        layout: &StateLayout,
        actions: Vec<Action>,
        desired: &Desired,
        bases: &Bases,
    ) -> Duration {
        let ctx = Arc::new(ApplyCtx {
            layout: layout.clone(),
            github: self.github_client(),
            triggers: self.triggers.clone(),
            docker: Arc::clone(&self.docker),
            scalesets: self.scaleset_clients(),
        });
        let semaphore = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
        let mut tasks = JoinSet::new();
        let now = Instant::now();
        for (name, actions) in group(actions) {
            let runtime = self.runtimes.entry(name.clone()).or_default();
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
            let spec = desired.runners.get(&name).cloned();
            let source = spec
                .as_ref()
                .map_or_else(|| desired.base.clone(), |s| desired.base_of(s));
            let job = Job {
                base: bases
                    .get(&source)
                    .cloned()
                    .unwrap_or_else(|| Err("no base".into())),
                spec,
                backoff_wait: runtime.backoff.wait(now),
                drain_started: runtime.drain_started,
                pending_jit: runtime.pending_jit.clone(),
                name,
                actions,
            };
            let (ctx, semaphore) = (Arc::clone(&ctx), Arc::clone(&semaphore));
            tasks.spawn(async move {
                let _permit = semaphore.acquire_owned().await;
                let name = job.name.clone();
                (name, apply::apply(ctx, job).await)
            });
        }
        let mut requeue = Duration::MAX;
        while let Some(Ok((name, outcome))) = tasks.join_next().await {
            requeue = requeue.min(self.remember(&name, outcome, now));
        }
        requeue
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
        if let Some(pid) = out.stopping {
            runtime.stopping_pid = Some(pid);
        }
        if let Some(pid) = out.started {
            runtime.watched_pid = Some(pid);
            runtime.backoff.started(now);
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
        if let Some(failure) = out.failure {
            let registration = matches!(failure, apply::Failure::Registration(_));
            runtime.last_error = Some(failure.message().to_string());
            let delay = if registration || runtime.backoff.failures() > 0 {
                runtime.backoff.failed(now)
            } else {
                Duration::from_secs(5)
            };
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
