//! What an apply task is given and what it hands back: shared by the steps
//! ([`super::apply`], [`super::github_steps`]) and the pass that spawns them, so the step
//! modules do not import each other.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::config::RunnerSpec;
use crate::github::GitHubClient;
use crate::layout::StateLayout;
use crate::provision::Base;
use crate::reconcile::Action;
use crate::secret::Secret;

use super::step_error::{BaseUnavailable, StepError};
use super::Trigger;

/// How often a draining runner is tried again.
pub const DRAIN_RETRY: Duration = Duration::from_secs(2);

/// What every apply task shares.
pub struct ApplyCtx {
    /// Paths under `state_dir`.
    pub layout: StateLayout,
    /// GitHub, when a credential is configured.
    pub github: Option<GitHubClient>,
    /// Where exits of started listeners are reported.
    pub triggers: mpsc::UnboundedSender<Trigger>,
    /// Spawns the tasks that wait for started listeners (tracked, joined at shutdown).
    pub spawner: super::tasks::Spawner,
    /// The runners' Docker sockets.
    pub docker: Arc<crate::docker::Hub>,
    /// The runners' cgroups.
    pub contain: Arc<super::contain::Contain>,
    /// Scale-set pools' clients and scale set ids, by pool key, for JIT registration.
    pub scalesets: std::collections::BTreeMap<String, (crate::scaleset::ScaleSetClient, u64)>,
}

/// One runner's steps and what it knew before them.
pub struct Job {
    /// Runner name.
    pub name: String,
    /// Its desired spec (`None`: removed from the file).
    pub spec: Option<RunnerSpec>,
    /// Steps in order.
    pub actions: Vec<Action>,
    /// Time left before a restart is allowed.
    pub backoff_wait: Duration,
    /// When its drain began, if it is draining.
    pub drain_started: Option<Instant>,
    /// A JIT configuration generated earlier and not yet given to a listener.
    pub pending_jit: Option<Secret>,
    /// The base its dir is built from, or why it cannot be used.
    pub base: Result<Arc<Base>, BaseUnavailable>,
}

impl ApplyCtx {
    /// The user `spec` runs as (its own one is created when missing).
    pub fn runner_user(&self, spec: &RunnerSpec) -> Result<crate::users::RunnerUser, StepError> {
        Ok(crate::users::for_runner(
            spec,
            &self.layout.runner_dir(&spec.name),
        )?)
    }
}

impl Job {
    /// Its entry in the file; a step that needs one fails for a runner that left it.
    pub fn desired(&self) -> Result<&RunnerSpec, StepError> {
        self.spec.as_ref().ok_or(StepError::NotInConfig)
    }
}

/// What happened, for the controller to remember.
#[derive(Debug, Default)]
pub struct Outcome {
    /// A listener started: its pid.
    pub started: Option<i32>,
    /// corral is stopping this pid.
    pub stopping: Option<i32>,
    /// The runner is draining (busy while removed): keep its drain start.
    pub draining: bool,
    /// Registration on GitHub could not be managed (no credential).
    pub local_only: bool,
    /// It was registered afresh, or removed for good.
    pub change: Option<Change>,
    /// The step that failed, and why: [`super::step_error::error_policy`] decides when it
    /// is tried again.
    pub failure: Option<StepError>,
    /// Run a pass again within this time.
    pub requeue: Option<Duration>,
    /// A JIT configuration not yet given to a listener (a start that had to wait).
    pub jit: Option<Secret>,
    /// The limits of a started listener that are not in force, and why.
    pub not_applied: Option<Vec<crate::cgroup::NotApplied>>,
    /// The limits it was started with.
    pub limits: Option<crate::cgroup::Limits>,
}

/// A change of a runner's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Registered afresh.
    Registered,
    /// Everything about it is gone (it left the file).
    Removed,
}

/// Forgets a runner's local identity so that the next pass registers it again.
pub fn forget_identity(root: &Path) {
    for file in [
        ".runner",
        ".credentials",
        ".credentials_rsaparams",
        ".runner_migrated",
        ".credentials_migrated",
    ] {
        let _ = std::fs::remove_file(root.join(file));
    }
}
