//! Carries out one runner's planned steps, in order. Every step is idempotent and tolerates
//! half-done state, so a pass that stops half-way is finished by the next one.

use std::sync::Arc;

use tracing::{debug, info, warn};

use crate::config::{Registration, RunnerSpec};
use crate::layout::{read_record, write_record, SpecRecord};
use crate::process::RunAs;
use crate::provision::Provisioner;
use crate::reconcile::Action;
use crate::registration;
use crate::secret::{self, Secret};
use crate::users;

use super::github_steps::{self, Deregistered};
pub use super::job::{forget_identity, ApplyCtx, Change, Job, Outcome};
use super::listener::{remove_records, start, stop};
use super::step_error::StepError;

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
            Err(err) => {
                warn!(step = %action, error = %err.chain(), "step failed");
                out.failure = Some(err);
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
) -> Result<bool, StepError> {
    let name = job.name.as_str();
    match action {
        Action::RemoveLeftover { path } => {
            let path = path.clone();
            blocking(ctx, job, None, move |p| p.remove_leftover(&path)).await?;
        }
        Action::Provision { .. } => {
            let spec = job.desired()?;
            let owner = owner_of(ctx, spec).await?;
            let name = name.to_string();
            blocking(ctx, job, owner, move |p| p.provision(&name).map(drop)).await?;
        }
        Action::Register { .. } => {
            register(ctx, job, job.desired()?, out).await?;
            secure(ctx, job).await?;
        }
        Action::Start { .. } => return start_listener(ctx, job, out).await,
        Action::Restart { .. } => {
            stop(ctx, name, out).await;
            return start_listener(ctx, job, out).await;
        }
        Action::Deregister { .. } => {
            match github_steps::deregister(ctx, job, recorded, out).await? {
                Deregistered::Done => {}
                Deregistered::Draining => return Ok(false),
                Deregistered::DrainTimeUp { id } => {
                    stop(ctx, name, out).await;
                    github_steps::delete_after_drain(ctx, job, recorded, id).await?;
                }
            }
        }
        Action::SyncLabels { .. } => github_steps::sync_labels(ctx, job.desired()?).await?,
        Action::Forget { .. } => forget_identity(&ctx.layout.runner_dir(name)),
        Action::Rebase { .. } => rebase(ctx, job, out).await?,
        Action::DeleteOrphan { name, repo, id } => {
            github_steps::delete_orphan(ctx, name, repo, *id).await?;
        }
        Action::Stop { .. } => stop(ctx, name, out).await,
        Action::Deprovision { .. } => deprovision(ctx, job, recorded, out).await?,
    }
    Ok(true)
}

/// Its root secured, its Docker socket and cgroup ready, then its listener started.
async fn start_listener(
    ctx: &Arc<ApplyCtx>,
    job: &Job,
    out: &mut Outcome,
) -> Result<bool, StepError> {
    secure(ctx, job).await?;
    let docker = docker_env(ctx, job).await?;
    let entry = enter_cgroup(ctx, job).await?;
    start(ctx, job, out, &docker, entry)
}

/// Its listener stopped, then its directory moved onto the new base.
async fn rebase(ctx: &Arc<ApplyCtx>, job: &Job, out: &mut Outcome) -> Result<(), StepError> {
    stop(ctx, &job.name, out).await;
    crate::crashpoint::reached("rebase.stopped");
    let spec = job.desired()?;
    let owner = owner_of(ctx, spec).await?;
    let name = job.name.clone();
    blocking(ctx, job, owner, move |p| {
        p.rebase(&name, p.base(), true).map(drop)
    })
    .await?;
    crate::crashpoint::reached("rebase.done");
    info!("moved to the new base");
    Ok(())
}

/// Everything of the runner on the host goes: what its jobs left running (its cgroup with
/// it), its jobs' Docker objects and socket, its directory and corral's records of it.
async fn deprovision(
    ctx: &Arc<ApplyCtx>,
    job: &Job,
    recorded: Option<&RunnerSpec>,
    out: &mut Outcome,
) -> Result<(), StepError> {
    let name = job.name.as_str();
    let isolation = job.spec.as_ref().or(recorded).map(|s| s.isolation);
    let (contain, owned) = (Arc::clone(&ctx.contain), name.to_string());
    let _ = tokio::task::spawn_blocking(move || {
        let uid = super::contain::own_uid(&owned, isolation);
        contain.remove(&owned, uid);
    })
    .await;
    ctx.docker.remove(name).await;
    let owned = name.to_string();
    blocking(ctx, job, None, move |p| p.deprovision(&owned)).await?;
    remove_records(&ctx.layout, name);
    if job.spec.is_none() {
        out.change = Some(Change::Removed);
    }
    Ok(())
}

/// Who owns the runner's own entries: its user when corral drops privileges to it.
/// On the blocking pool: a runner's own user may be created here (`useradd`), which is the
/// first step of a new runner.
async fn owner_of(
    ctx: &ApplyCtx,
    spec: &RunnerSpec,
) -> Result<Option<(nix::unistd::Uid, nix::unistd::Gid)>, StepError> {
    let (spec, root) = (spec.clone(), ctx.layout.runner_dir(&spec.name));
    let user = tokio::task::spawn_blocking(move || users::for_runner(&spec, &root))
        .await
        .map_err(|e| StepError::Task("user lookup", e))??;
    Ok(match user.run_as {
        RunAs::User { uid, gid } => Some((uid, gid)),
        RunAs::Inherit => None,
    })
}

/// Makes the runner's root its own alone, handing it over if its user changed.
async fn secure(ctx: &Arc<ApplyCtx>, job: &Job) -> Result<(), StepError> {
    let spec = job.desired()?;
    let owner = owner_of(ctx, spec).await?;
    let name = spec.name.clone();
    blocking(ctx, job, owner, move |p| p.secure(&name)).await
}

/// The runner's Docker socket served before its listener starts: `DOCKER_HOST` for it.
async fn docker_env(ctx: &ApplyCtx, job: &Job) -> Result<Vec<(String, String)>, StepError> {
    if !job.backoff_wait.is_zero() {
        return Ok(Vec::new());
    }
    let spec = job.desired()?;
    let owner = owner_of(ctx, spec).await?;
    super::docker_steps::serve_socket(&ctx.docker, &ctx.layout, spec, owner)
        .await
        .map_err(StepError::Docker)
}

/// Runs a file system step of a provisioner (for runner dirs owned by `owner`) on the
/// blocking pool.
async fn blocking(
    ctx: &Arc<ApplyCtx>,
    job: &Job,
    owner: Option<(nix::unistd::Uid, nix::unistd::Gid)>,
    f: impl FnOnce(&Provisioner) -> Result<(), crate::provision::ProvisionError> + Send + 'static,
) -> Result<(), StepError> {
    let (layout, base) = (ctx.layout.clone(), job.base.clone());
    tokio::task::spawn_blocking(move || match base {
        Ok(base) => Ok(f(&Provisioner::new(layout, base, owner))?),
        Err(why) => Err(StepError::Base(why)),
    })
    .await
    .map_err(|e| StepError::Task("provisioning", e))?
}

async fn registration_token(ctx: &ApplyCtx, spec: &RunnerSpec) -> Result<Secret, StepError> {
    match &spec.registration {
        Registration::TokenEnv(var) => secret::from_env(var).map_err(StepError::Secret),
        Registration::TokenFile(path) => secret::from_file(path).map_err(StepError::Secret),
        Registration::GitHub => {
            let gh = ctx
                .github
                .as_ref()
                .ok_or(StepError::NoCredential("mint a registration token"))?;
            gh.registration_token(&spec.repo)
                .await
                .map_err(StepError::github("registration token"))
        }
    }
}

async fn register(
    ctx: &Arc<ApplyCtx>,
    job: &Job,
    spec: &RunnerSpec,
    out: &mut Outcome,
) -> Result<(), StepError> {
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
                .map_err(|err| match err {
                    // A lookup GitHub refused follows GitHub's policy (a rate limit waits).
                    registration::RegistrationError::Lookup(source) => StepError::GitHub {
                        during: "look up the registration of this name",
                        source,
                    },
                    other => StepError::Registration(other),
                })?;
        }
        let token = registration_token(ctx, spec).await?;
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
        .map_err(StepError::io("write record"))?;
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
) -> Result<Option<u64>, StepError> {
    let owner = owner_of(ctx, spec).await?;
    let name = spec.name.clone();
    let staged = {
        let name = name.clone();
        let (layout, base) = (ctx.layout.clone(), job.base.clone());
        tokio::task::spawn_blocking(move || {
            let base = base.map_err(StepError::Base)?;
            Ok::<_, StepError>(Provisioner::new(layout, base, None).stage_registration(&name)?)
        })
        .await
        .map_err(|e| StepError::Task("provisioning", e))??
    };
    let configured = registration::configure(spec, &staged, token)
        .await
        .map_err(StepError::from);
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
        Err(err) => Err(err),
    };
    let unstaged = blocking(ctx, job, None, move |p| p.unstage_registration(&name)).await;
    if let Err(err) = unstaged {
        warn!(error = %err.chain(), "cannot remove the private registration install; the next one replaces it");
    }
    result
}

/// The runner's cgroup made, emptied and limited before its listener starts (none while it
/// waits out a backoff, when `start` does not start it).
async fn enter_cgroup(ctx: &ApplyCtx, job: &Job) -> Result<super::contain::Entry, StepError> {
    if !job.backoff_wait.is_zero() {
        return Ok(super::contain::Entry::default());
    }
    let (contain, spec) = (Arc::clone(&ctx.contain), job.desired()?.clone());
    tokio::task::spawn_blocking(move || contain.prepare(&spec))
        .await
        .map_err(|e| StepError::Task("cgroup", e))?
        .map_err(StepError::Cgroup)
}
