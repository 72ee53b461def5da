//! The controller's state between passes, in named groups: what the sources observed,
//! each runner's book, the installed releases, the host's shared services and what was
//! last published.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::base_source::ReleaseOutcome;
use super::runtime::Runtime;
use super::tasks::{Spawner, Tasks};
use super::Trigger;
use crate::config::{self, Desired};
use crate::github::GitHubClient;
use crate::layout::StateLayout;
use crate::status;

/// How long, after corral starts, a registered runner's start waits for the first listing.
const FIRST_LISTING_GRACE: Duration = Duration::from_secs(5);

/// The controller's state between passes.
pub struct Controller {
    /// The config file and what its last read said.
    pub(super) file: ConfigFile,
    /// The desired state in force (the last good one).
    pub(super) desired: Desired,
    /// Where tasks report to the loop.
    pub(super) triggers: mpsc::UnboundedSender<Trigger>,
    /// Every task spawned, joined at stop.
    pub(super) tasks: Tasks,
    /// What the sources beyond the host observed (GitHub, demand, scale sets, git).
    pub(super) seen: Observations,
    /// Each runner's memory and steps in flight.
    pub(super) book: Book,
    /// Runner releases: opened, installed, installing.
    pub(super) releases: Releases,
    /// Services shared by every runner on the host.
    pub(super) host: Host,
    /// What the last pass published (status, metrics, state changes).
    pub(super) publish: Publish,
}

/// The config file.
pub(super) struct ConfigFile {
    /// Its path (absolute).
    pub(super) path: PathBuf,
    /// The bytes last read, to tell an edit from an event that changed nothing.
    pub(super) digest: Vec<u8>,
    /// Why the last edit was refused, if it was.
    pub(super) error: Option<String>,
}

/// What the sources beyond the host observed, each in the background with its own deadline.
#[derive(Default)]
pub(super) struct Observations {
    /// The GitHub client for the `github` section in force.
    pub(super) github: Option<(config::GitHub, GitHubClient)>,
    /// When the last listing of the registrations began.
    pub(super) last_listing: Option<Instant>,
    /// A listing of the registrations in the background, and when it began.
    pub(super) listing: Option<(Instant, tokio::task::JoinHandle<crate::observe::ServerView>)>,
    /// Until the first listing of the registrations after corral started (or this time),
    /// a registered runner's listener is not started: its registration may have been
    /// deleted while corral was down, and a listener would then start only to fail.
    pub(super) first_listing_due: Option<Instant>,
    /// Queued jobs and idle times for the pools.
    pub(super) demand: super::demand::Demand,
    /// The engines of pools with `engine: scaleset`.
    pub(super) scalesets: super::scalesets::ScaleSetPools,
    /// `source.git`: its fetch task and what the last fetch said.
    pub(super) source: super::source_follow::SourceState,
    /// When disks were last measured.
    pub(super) last_disk: Option<Instant>,
    /// When usage was last measured.
    pub(super) last_usage: Option<Instant>,
}

/// Each runner's memory and steps in flight.
#[derive(Default)]
pub(super) struct Book {
    /// By runner name.
    pub(super) runtimes: BTreeMap<String, Runtime>,
    /// Each runner's apply steps, in flight.
    pub(super) workers: super::workers::Workers,
    /// Exits of listeners whose runner's worker was still running (runner, pid, code).
    pub(super) exits_after_worker: Vec<(String, i32, Option<i32>)>,
    /// The earliest requeue an ended worker asked for, taken by the next pass.
    pub(super) requeue_at: Option<Instant>,
}

/// Runner releases.
#[derive(Default)]
pub(super) struct Releases {
    /// Base trees opened this far, by path.
    pub(super) opened: BTreeMap<PathBuf, super::base_source::Opened>,
    /// Releases as asked (`2.329.0`, `latest`): the installed tree or why not (and when to
    /// try again).
    pub(super) outcomes: BTreeMap<String, ReleaseOutcome>,
    /// Installs in flight.
    pub(super) installing: BTreeSet<String>,
    /// Installed releases no runner uses, since when.
    pub(super) unused_since: BTreeMap<String, Instant>,
    /// When `latest` was last looked up, and whether a listener asked for it sooner.
    pub(super) latest_checked: Option<Instant>,
    pub(super) recheck_latest: bool,
}

/// Services shared by every runner.
pub(super) struct Host {
    /// The runners' Docker sockets.
    pub(super) docker: Arc<crate::docker::Hub>,
    /// The runners' cgroups, for the state directory they were made for.
    pub(super) contain: (PathBuf, Arc<super::contain::Contain>),
}

/// What the last pass published.
#[derive(Default)]
pub(super) struct Publish {
    /// The HTTP API's shared state, when it is served.
    pub(super) api: Option<crate::api::Shared>,
    /// Each runner's state at the last pass, to log changes.
    pub(super) last_states: BTreeMap<String, status::State>,
    /// The desired state of the last pass, pools expanded (for status and exits).
    pub(super) effective: Option<Desired>,
    /// The queued jobs each pool of `desired` served at the last pass.
    pub(super) pool_queues: Vec<Vec<crate::observe::QueuedJob>>,
    /// The scale-set engines' statuses at the last pass, by pool key.
    pub(super) scaleset_status: BTreeMap<String, crate::scaleset::EngineStatus>,
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
            file: ConfigFile {
                path: config_path,
                digest: config_digest,
                error: None,
            },
            desired,
            triggers,
            tasks: Tasks::default(),
            seen: Observations {
                first_listing_due: Some(super::now() + FIRST_LISTING_GRACE),
                ..Observations::default()
            },
            book: Book::default(),
            releases: Releases::default(),
            host: Host { docker, contain },
            publish: Publish::default(),
        }
    }

    /// Starts (or restarts) following the config's `source`, if any.
    pub fn follow_source(&mut self) {
        self.seen.source.follow(&self.desired, &self.triggers);
    }

    /// What a valid `push` webhook delivery does (fetch the source now if it is for it).
    pub fn source_on_push(&self) -> crate::api::OnPush {
        self.seen.source.on_push()
    }

    /// Polls demand at the next pass, whatever the interval (a webhook reported a queued job).
    pub fn demand_changed(&mut self) {
        self.seen.demand.due_now = true;
    }

    /// True when the next pass must poll demand (so it must not be skipped).
    pub fn demand_due_now(&self) -> bool {
        self.seen.demand.due_now
    }

    /// Publishes status and metrics to the HTTP API from now on.
    pub fn publish_to(&mut self, api: crate::api::Shared) {
        self.publish.api = Some(api);
    }

    /// The config file.
    pub fn config_path(&self) -> &Path {
        &self.file.path
    }

    /// The desired state in force.
    pub fn desired(&self) -> &Desired {
        &self.desired
    }

    /// Paths under the state directory in force.
    pub fn layout(&self) -> StateLayout {
        StateLayout::new(&self.desired.state_dir)
    }

    /// Makes the next pass due at `at` at the latest.
    pub(super) fn requeue_no_later_than(&mut self, at: Instant) {
        self.book.requeue_at = Some(self.book.requeue_at.map_or(at, |t| t.min(at)));
    }

    /// The GitHub client for the `github` section in force, kept across passes (it holds
    /// the rate-limit budget and cached tokens) and made anew when the section changes.
    pub(super) fn github_client(&mut self) -> Option<GitHubClient> {
        let wanted = self
            .desired
            .github
            .clone()
            .filter(|g| g.auth != config::GitHubAuth::None);
        match (&self.seen.github, wanted) {
            (Some((have, client)), Some(want)) if *have == want => Some(client.clone()),
            (_, Some(want)) => {
                let client = GitHubClient::new(&want);
                self.seen.github = Some((want, client.clone()));
                Some(client)
            }
            (_, None) => {
                self.seen.github = None;
                None
            }
        }
    }

    /// The runners' cgroups, made anew when `state_dir` changed.
    pub fn contain(&mut self) -> Arc<super::contain::Contain> {
        if self.host.contain.0 != self.desired.state_dir {
            let state_dir = self.desired.state_dir.clone();
            self.host.contain = (
                state_dir.clone(),
                Arc::new(super::contain::Contain::establish(&state_dir)),
            );
        }
        Arc::clone(&self.host.contain.1)
    }

    /// The runners' Docker sockets.
    pub fn docker(&self) -> Arc<crate::docker::Hub> {
        Arc::clone(&self.host.docker)
    }

    /// Every runtime, for shutdown.
    pub fn runtimes(&self) -> &BTreeMap<String, Runtime> {
        &self.book.runtimes
    }

    /// Spawns tasks tracked until `corral run` returns.
    pub fn spawner(&self) -> Spawner {
        self.tasks.spawner()
    }

    /// Aborts every tracked task and waits for all to end (the last thing a stop does).
    pub async fn stop_tasks(&mut self) {
        self.tasks.stop().await;
    }
}
