//! Carries out one runner's planned steps, in order. Every step is idempotent and tolerates
//! half-done state, so a pass that stops half-way is finished by the next one.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::config::{Registration, RunnerSpec};
use crate::github::GitHubClient;
use crate::layout::{read_record, write_record, ProcessRecord, SpecRecord, StateLayout};
use crate::process::{detach_to_log, runner_command, stop_session, RunAs};
use crate::provision::{Base, Provisioner};
use crate::reconcile::Action;
use crate::registration;
use crate::secret::{self, Secret};
use crate::users;

use super::{github_steps, Trigger};

/// How long a listener may take to stop after SIGINT before its session is killed.
const STOP_GRACE: Duration = Duration::from_secs(30);
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
    /// The base its dir is built from; the error text when it cannot be used.
    pub base: Result<Arc<Base>, String>,
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
    /// The step that failed.
    pub failure: Option<Failure>,
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

/// A step that failed, in words (registration's are the runner's own text). Every failed
/// step is backed off by the runner's step backoff, which the next success clears.
#[derive(Debug)]
pub struct Failure(pub String);

impl Failure {
    /// The message.
    pub fn message(&self) -> &str {
        &self.0
    }
}

/// Runs `job`'s steps until one fails or must wait.
#[tracing::instrument(name = "runner", skip_all, fields(runner = %job.name))]
pub async fn apply(ctx: Arc<ApplyCtx>, job: Job) -> Outcome {
    let mut out = Outcome {
        jit: job.pending_jit.clone(),
        ..Outcome::default()
    };
    let recorded =
        read_record::<SpecRecord>(&ctx.layout.spec_record(&job.name)).and_then(|r| r.spec);
    for action in &job.actions {
        debug!(step = %action, "applying");
        let step = step(&ctx, &job, recorded.as_ref(), action, &mut out).await;
        match step {
            Ok(true) => {}
            Ok(false) => break,
            Err(message) => {
                warn!(step = %action, error = %message, "step failed");
                out.failure = Some(Failure(message));
                break;
            }
        }
    }
    out
}

/// One step; `Ok(false)` stops the runner's remaining steps without an error.
async fn step(
    ctx: &Arc<ApplyCtx>,
    job: &Job,
    recorded: Option<&RunnerSpec>,
    action: &Action,
    out: &mut Outcome,
) -> Result<bool, String> {
    let name = job.name.as_str();
    match action {
        Action::RemoveLeftover { path } => {
            let path = path.clone();
            blocking(ctx, job, None, move |p| p.remove_leftover(&path)).await?;
        }
        Action::Provision { .. } => {
            let spec = desired(job)?;
            let owner = owner_of(ctx, spec).await?;
            let name = name.to_string();
            blocking(ctx, job, owner, move |p| p.provision(&name).map(drop)).await?;
        }
        Action::Register { .. } => {
            register(ctx, job, desired(job)?, out).await?;
            secure(ctx, job).await?;
        }
        Action::Start { .. } => {
            secure(ctx, job).await?;
            let docker = docker_env(ctx, job).await?;
            let entry = enter_cgroup(ctx, job).await?;
            return start(ctx, job, out, &docker, entry);
        }
        Action::Restart { .. } => {
            stop(ctx, name, out).await;
            secure(ctx, job).await?;
            let docker = docker_env(ctx, job).await?;
            let entry = enter_cgroup(ctx, job).await?;
            return start(ctx, job, out, &docker, entry);
        }
        Action::Deregister { .. } => {
            return github_steps::deregister(ctx, job, recorded, out).await;
        }
        Action::SyncLabels { .. } => github_steps::sync_labels(ctx, desired(job)?).await?,
        Action::Forget { .. } => forget_identity(&ctx.layout.runner_dir(name)),
        Action::Rebase { .. } => {
            stop(ctx, name, out).await;
            crate::crashpoint::reached("rebase.stopped");
            let spec = desired(job)?;
            let owner = owner_of(ctx, spec).await?;
            let name = name.to_string();
            blocking(ctx, job, owner, move |p| {
                p.rebase(&name, p.base(), true).map(drop)
            })
            .await?;
            crate::crashpoint::reached("rebase.done");
            info!("moved to the new base");
        }
        Action::DeleteOrphan { name, repo, id } => {
            github_steps::delete_orphan(ctx, name, repo, *id).await?;
        }
        Action::Stop { .. } => stop(ctx, name, out).await,
        Action::Deprovision { .. } => {
            // Everything its jobs left running, its cgroup with it.
            let isolation = job.spec.as_ref().or(recorded).map(|s| s.isolation);
            let (contain, owned) = (Arc::clone(&ctx.contain), name.to_string());
            let _ = tokio::task::spawn_blocking(move || {
                let uid = super::contain::own_uid(&owned, isolation);
                contain.remove(&owned, uid);
            })
            .await;
            // Its jobs' containers, networks, volumes and images, and its socket.
            ctx.docker.remove(name).await;
            let owned = name.to_string();
            blocking(ctx, job, None, move |p| p.deprovision(&owned)).await?;
            remove_records(&ctx.layout, name);
            if job.spec.is_none() {
                out.change = Some(Change::Removed);
            }
        }
    }
    Ok(true)
}

/// Who owns the runner's own entries: its user when corral drops privileges to it.
/// On the blocking pool: a runner's own user may be created here (`useradd`), which is the
/// first step of a new runner.
async fn owner_of(
    ctx: &ApplyCtx,
    spec: &RunnerSpec,
) -> Result<Option<(nix::unistd::Uid, nix::unistd::Gid)>, String> {
    let (spec, root) = (spec.clone(), ctx.layout.runner_dir(&spec.name));
    let user = tokio::task::spawn_blocking(move || users::for_runner(&spec, &root))
        .await
        .map_err(|e| format!("user lookup task failed: {e}"))?
        .map_err(|e| e.to_string())?;
    Ok(match user.run_as {
        RunAs::User { uid, gid } => Some((uid, gid)),
        RunAs::Inherit => None,
    })
}

/// The user `spec` runs as (its own one is created when missing).
pub(super) fn runner_user(ctx: &ApplyCtx, spec: &RunnerSpec) -> Result<users::RunnerUser, String> {
    users::for_runner(spec, &ctx.layout.runner_dir(&spec.name)).map_err(|e| e.to_string())
}

/// Makes the runner's root its own alone, handing it over if its user changed.
async fn secure(ctx: &Arc<ApplyCtx>, job: &Job) -> Result<(), String> {
    let spec = desired(job)?;
    let owner = owner_of(ctx, spec).await?;
    let name = spec.name.clone();
    blocking(ctx, job, owner, move |p| p.secure(&name)).await
}

/// The runner's Docker socket served before its listener starts: `DOCKER_HOST` for it.
async fn docker_env(ctx: &ApplyCtx, job: &Job) -> Result<Vec<(String, String)>, String> {
    if !job.backoff_wait.is_zero() {
        return Ok(Vec::new());
    }
    let spec = desired(job)?;
    let owner = owner_of(ctx, spec).await?;
    super::docker_steps::serve_socket(&ctx.docker, &ctx.layout, spec, owner)
        .await
        .map_err(|e| format!("docker socket: {e}"))
}

fn desired(job: &Job) -> Result<&RunnerSpec, String> {
    job.spec
        .as_ref()
        .ok_or_else(|| "runner is not in the config".to_string())
}

/// Runs a file system step of a provisioner (for runner dirs owned by `owner`) on the
/// blocking pool.
async fn blocking(
    ctx: &Arc<ApplyCtx>,
    job: &Job,
    owner: Option<(nix::unistd::Uid, nix::unistd::Gid)>,
    f: impl FnOnce(&Provisioner) -> Result<(), crate::provision::ProvisionError> + Send + 'static,
) -> Result<(), String> {
    let (layout, base) = (ctx.layout.clone(), job.base.clone());
    tokio::task::spawn_blocking(move || match base {
        Ok(base) => f(&Provisioner::new(layout, base, owner)).map_err(|e| chain(&e)),
        Err(message) => Err(message),
    })
    .await
    .map_err(|e| format!("provisioning task failed: {e}"))?
}

/// An error with its causes, on one line.
pub(super) fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

async fn registration_token(ctx: &ApplyCtx, spec: &RunnerSpec) -> Result<Secret, String> {
    match &spec.registration {
        Registration::TokenEnv(var) => secret::from_env(var).map_err(|e| e.to_string()),
        Registration::TokenFile(path) => secret::from_file(path).map_err(|e| chain(&e)),
        Registration::GitHub => {
            let gh = ctx
                .github
                .as_ref()
                .ok_or("no GitHub credential to mint a registration token")?;
            gh.registration_token(&spec.repo)
                .await
                .map_err(|e| chain(&e))
        }
    }
}

async fn register(
    ctx: &Arc<ApplyCtx>,
    job: &Job,
    spec: &RunnerSpec,
    out: &mut Outcome,
) -> Result<(), String> {
    let recorded_id =
        read_record::<SpecRecord>(&ctx.layout.spec_record(&spec.name)).and_then(|r| r.runner_id);
    let runner_id = if let (Some(gh), true) = (&ctx.github, spec.ephemeral) {
        // One job per registration: a JIT config, no config.sh, no token in between. Its
        // files are written at the start (see `start`).
        if out.jit.is_some() {
            recorded_id
        } else if let Some(name) = &spec.scale_set {
            let (id, encoded) = github_steps::register_scale_set_jit(ctx, spec, name).await?;
            out.jit = Some(encoded);
            Some(id)
        } else {
            let jit = github_steps::register_jit(gh, spec).await?;
            out.jit = Some(jit.encoded);
            Some(jit.runner_id)
        }
    } else {
        if let Some(gh) = &ctx.github {
            registration::refuse_live_elsewhere(gh, spec, recorded_id)
                .await
                .map_err(|e| chain(&e))?;
        }
        let token = registration_token(ctx, spec)
            .await
            .map_err(|message| format!("registration token: {message}"))?;
        configure_in_private(ctx, job, spec, &token).await?
    };
    crate::crashpoint::reached("register.configured");
    let record = SpecRecord {
        registration_hash: spec.registration_hash(),
        runtime_hash: spec.runtime_hash(),
        spec: Some(spec.clone()),
        runner_id,
    };
    write_record(&ctx.layout.spec_record(&spec.name), &record)
        .map_err(|e| format!("write record: {e}"))?;
    crate::crashpoint::reached("register.recorded");
    out.local_only = !matches!(spec.registration, Registration::GitHub) && ctx.github.is_none();
    out.change = Some(Change::Registered);
    info!(repo = %spec.repo.url, labels = ?spec.labels, ephemeral = spec.ephemeral, "registered");
    Ok(())
}

/// `config.sh` in a private install of the base (root's alone), then its identity files
/// handed to the runner's directory; the install goes, whatever happened. Returns the
/// registration's id.
async fn configure_in_private(
    ctx: &Arc<ApplyCtx>,
    job: &Job,
    spec: &RunnerSpec,
    token: &Secret,
) -> Result<Option<u64>, String> {
    let owner = owner_of(ctx, spec).await?;
    let name = spec.name.clone();
    let staged = {
        let name = name.clone();
        let (layout, base) = (ctx.layout.clone(), job.base.clone());
        tokio::task::spawn_blocking(move || {
            let base = base?;
            Provisioner::new(layout, base, None)
                .stage_registration(&name)
                .map_err(|e| chain(&e))
        })
        .await
        .map_err(|e| format!("provisioning task failed: {e}"))??
    };
    let configured = registration::configure(spec, &staged, token)
        .await
        .map_err(|err| chain(&err));
    let result = match configured {
        Ok(identity) => {
            let id = identity.runner_id;
            let name = name.clone();
            blocking(ctx, job, owner, move |p| {
                p.install_identity(&name, &identity.files)
            })
            .await
            .map(|()| id)
        }
        Err(message) => Err(message),
    };
    let unstaged = blocking(ctx, job, None, move |p| p.unstage_registration(&name)).await;
    if let Err(message) = unstaged {
        warn!(error = %message, "cannot remove the private registration install; the next one replaces it");
    }
    result
}

/// The runner's cgroup made, emptied and limited before its listener starts (none while it
/// waits out a backoff, when `start` does not start it).
async fn enter_cgroup(ctx: &ApplyCtx, job: &Job) -> Result<super::contain::Entry, String> {
    if !job.backoff_wait.is_zero() {
        return Ok(super::contain::Entry::default());
    }
    let (contain, spec) = (Arc::clone(&ctx.contain), desired(job)?.clone());
    tokio::task::spawn_blocking(move || contain.prepare(&spec))
        .await
        .map_err(|e| format!("cgroup task failed: {e}"))?
}

fn start(
    ctx: &ApplyCtx,
    job: &Job,
    out: &mut Outcome,
    docker: &[(String, String)],
    entry: super::contain::Entry,
) -> Result<bool, String> {
    if !job.backoff_wait.is_zero() {
        out.requeue = Some(job.backoff_wait);
        return Ok(false);
    }
    let spec = desired(job)?;
    let root = ctx.layout.runner_dir(&spec.name);
    let user = runner_user(ctx, spec)?;
    prepare_start(ctx, job, spec, &user, out)?;
    let log = ctx.layout.listener_log(&spec.name);
    std::fs::create_dir_all(ctx.layout.record_dir(&spec.name))
        .map_err(|e| format!("create records: {e}"))?;
    // corral's alone: the listener logs name every runner's jobs, of every repository.
    let records = ctx.layout.records_dir();
    std::fs::set_permissions(&records, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("make `{}` private: {e}", records.display()))?;
    let mut cmd = runner_command(
        &root.join("bin/Runner.Listener"),
        &root,
        &spec.env,
        user.run_as,
        spec.allow_root,
        &user.home,
    );
    cmd.arg("run");
    cmd.envs(docker.iter().map(|(k, v)| (k, v)));
    // A listener too old for GitHub then exits 7 instead of the 1 it shares with a deleted
    // registration, so corral can tell "upgrade" from "register again" (runner-contract §4.1).
    if !spec
        .env
        .contains_key("ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE")
    {
        cmd.env("ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE", "true");
    }
    for missing in &entry.not_applied {
        warn!(controller = %missing.controller, reason = %missing.reason, "a resource limit is not applied");
    }
    out.not_applied = Some(entry.not_applied);
    out.limits = Some(spec.resources);
    detach_to_log(&mut cmd, &log, entry.fds)
        .map_err(|e| format!("open `{}`: {e}", log.display()))?;
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("start the listener: {e}"))?;
    let pid = child.id().map_or(0, |p| p as i32);
    crate::crashpoint::reached("start.spawned");
    let start_time = crate::observe::process_start_time(pid).unwrap_or(0);
    write_record(
        &ctx.layout.process_record(&spec.name),
        &ProcessRecord { pid, start_time },
    )
    .map_err(|e| format!("write process record: {e}"))?;
    crate::crashpoint::reached("start.recorded");
    update_runtime_hash(&ctx.layout, spec);
    let (name, triggers) = (spec.name.clone(), ctx.triggers.clone());
    tokio::spawn(async move {
        let code = child.wait().await.ok().and_then(|s| s.code());
        let _ = triggers.send(Trigger::Exited { name, pid, code });
    });
    info!(pid, "listener started");
    out.started = Some(pid);
    Ok(true)
}

/// Before a listener starts: a pending JIT configuration becomes the runner's identity files
/// (written by corral, 0600, as the listener would write them from `--jitconfig`; so no
/// listener ever holds it in its environment, which its jobs could read), and corral's
/// record notes that the directory is now used.
fn prepare_start(
    ctx: &ApplyCtx,
    job: &Job,
    spec: &RunnerSpec,
    user: &users::RunnerUser,
    out: &mut Outcome,
) -> Result<(), String> {
    let base = job.base.clone()?;
    let owner = match user.run_as {
        RunAs::User { uid, gid } => Some((uid, gid)),
        RunAs::Inherit => None,
    };
    let provisioner = Provisioner::new(ctx.layout.clone(), base, owner);
    if let Some(jit) = out.jit.take() {
        let written = registration::Identity::from_jit(&jit)
            .map_err(|e| chain(&e))
            .and_then(|identity| {
                provisioner
                    .install_identity(&spec.name, &identity.files)
                    .map_err(|e| chain(&e))
            });
        if let Err(message) = written {
            out.jit = Some(jit);
            return Err(message);
        }
    }
    provisioner
        .record_started(&spec.name)
        .map_err(|e| chain(&e))
}

fn update_runtime_hash(layout: &StateLayout, spec: &RunnerSpec) {
    let path = layout.spec_record(&spec.name);
    if let Some(mut record) = read_record::<SpecRecord>(&path) {
        record.runtime_hash = spec.runtime_hash();
        let _ = write_record(&path, &record);
    }
}

pub(super) async fn stop(ctx: &ApplyCtx, name: &str, out: &mut Outcome) {
    let Some(rec) = read_record::<ProcessRecord>(&ctx.layout.process_record(name)) else {
        return;
    };
    out.stopping = Some(rec.pid);
    let clean = stop_session(rec.pid, rec.start_time, STOP_GRACE).await;
    // The listener is gone: so goes everything in its cgroup.
    let (contain, owned) = (Arc::clone(&ctx.contain), name.to_string());
    let _ = tokio::task::spawn_blocking(move || contain.reap(&owned, None)).await;
    crate::crashpoint::reached("stop.done");
    info!(pid = rec.pid, clean, "listener stopped");
    let _ = std::fs::remove_file(ctx.layout.process_record(name));
}

fn remove_records(layout: &StateLayout, name: &str) {
    let dir = layout.record_dir(name);
    if let Err(err) = std::fs::remove_dir_all(&dir) {
        if err.kind() != std::io::ErrorKind::NotFound {
            warn!(path = %dir.display(), cause = %err, "cannot remove records");
        }
    }
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
