//! Steps that talk to GitHub: deregistering (the drain), JIT registration, label sync,
//! deleting orphaned registrations.

use tracing::{info, warn};

use super::job::{forget_identity, ApplyCtx, Job, Outcome, DRAIN_RETRY};
use super::step_error::StepError;
use crate::config::RunnerSpec;
use crate::github::{GitHubClient, GitHubError, JitConfig};
use crate::layout::{read_record, write_record, SpecRecord};

/// How a deregistration step ended.
#[derive(Debug)]
pub(super) enum Deregistered {
    /// Gone from GitHub (or never manageable there): the next steps may run.
    Done,
    /// A job runs and the drain time is not up: tried again after [`DRAIN_RETRY`].
    Draining,
    /// The drain time is up: the caller stops the listener, then calls
    /// [`delete_after_drain`] with these.
    DrainTimeUp {
        /// Its registration's id, when known.
        id: Option<u64>,
    },
}

/// Deletes the registration through the API, by the id corral recorded when it registered
/// (no removal token is ever minted, so none can reach a runner's user). GitHub refuses while
/// a job runs: that is the drain; once the drain time is up the job is stopped first.
pub(super) async fn deregister(
    ctx: &ApplyCtx,
    job: &Job,
    recorded: Option<&RunnerSpec>,
    out: &mut Outcome,
) -> Result<Deregistered, StepError> {
    let Some(spec) = recorded.or(job.spec.as_ref()) else {
        // No record of how it was registered: nothing corral can deregister.
        out.local_only = true;
        return Ok(Deregistered::Done);
    };
    let Some(gh) = ctx.github.as_ref() else {
        warn!("no GitHub credential: the registration stays on GitHub until it expires");
        out.local_only = true;
        return Ok(Deregistered::Done);
    };
    let recorded_id =
        read_record::<SpecRecord>(&ctx.layout.spec_record(&job.name)).and_then(|r| r.runner_id);
    let id = match recorded_id {
        Some(id) => Some(id),
        // A record from before corral kept ids: its registration by name.
        None => gh
            .find_runner(&spec.repo, &spec.name)
            .await
            .map_err(StepError::github("deregister"))?
            .map(|r| r.id),
    };
    crate::crashpoint::reached("deregister.token");
    let deleted = match id {
        None => Ok(()),
        Some(id) => gh.delete_runner(&spec.repo, id).await,
    };
    match deleted {
        Ok(()) => {
            crate::crashpoint::reached("deregister.removed");
            forget_identity(&ctx.layout.runner_dir(&job.name));
            info!(runner_id = ?id, "deregistered");
            Ok(Deregistered::Done)
        }
        Err(GitHubError::Busy { .. }) => {
            let started = job.drain_started.unwrap_or_else(super::now);
            if super::now().duration_since(started) < spec.drain_timeout {
                info!("busy: draining before removal");
                out.draining = true;
                out.requeue = Some(DRAIN_RETRY);
                return Ok(Deregistered::Draining);
            }
            warn!(drain_timeout = ?spec.drain_timeout, "drain time is up: stopping the running job");
            Ok(Deregistered::DrainTimeUp { id })
        }
        Err(err) => Err(StepError::github("deregister")(err)),
    }
}

/// After a drain that timed out and the stop of its listener: the registration deleted and
/// the local identity forgotten.
pub(super) async fn delete_after_drain(
    ctx: &ApplyCtx,
    job: &Job,
    recorded: Option<&RunnerSpec>,
    id: Option<u64>,
) -> Result<(), StepError> {
    let spec = recorded
        .or(job.spec.as_ref())
        .ok_or(StepError::NotInConfig)?;
    let gh = ctx
        .github
        .as_ref()
        .ok_or(StepError::NoCredential("deregister"))?;
    if let Some(id) = id {
        gh.delete_runner(&spec.repo, id)
            .await
            .map_err(StepError::github("deregister"))?;
    }
    forget_identity(&ctx.layout.runner_dir(&job.name));
    Ok(())
}

/// The labels a JIT runner is created with: the runner's defaults unless turned off, then
/// its custom labels (the `generate-jitconfig` call takes the whole set).
pub fn jit_labels(spec: &RunnerSpec) -> Vec<String> {
    spec.all_labels()
}

/// Creates a just-in-time registration for an ephemeral runner; corral writes its files into
/// the runner's directory when the listener starts.
pub async fn register_jit(gh: &GitHubClient, spec: &RunnerSpec) -> Result<JitConfig, StepError> {
    let labels = jit_labels(spec);
    let jit = match gh
        .generate_jitconfig(&spec.repo, &spec.name, &labels, "_work")
        .await
    {
        Err(err) if err.status() == Some(409) => {
            // corral killed between this call and the listener's start leaves a registration
            // of this name that no listener will ever use: replace it, as `config.sh
            // --replace` does for a plain runner, but never one that is online or busy.
            replace_unused(gh, spec).await?;
            gh.generate_jitconfig(&spec.repo, &spec.name, &labels, "_work")
                .await
                .map_err(StepError::github("JIT registration"))?
        }
        other => other.map_err(StepError::github("JIT registration"))?,
    };
    info!(runner_id = jit.runner_id, "registered just in time");
    Ok(jit)
}

/// A just-in-time registration with the scale set `name` of `spec`'s pool (its engine must
/// have adopted or created the set).
pub async fn register_scale_set_jit(
    ctx: &ApplyCtx,
    spec: &RunnerSpec,
    name: &str,
) -> Result<(u64, crate::secret::Secret), StepError> {
    let key = crate::config::scale_set_key(&spec.repo.url, name);
    let Some((client, set)) = ctx.scalesets.get(&key) else {
        return Err(StepError::ScaleSetNotReady(name.to_string()));
    };
    let (id, encoded) = client
        .generate_jit_config(*set, &spec.name)
        .await
        .map_err(StepError::ScaleSet)?;
    info!(runner_id = id, scale_set = %name, "registered just in time with the scale set");
    Ok((id, encoded))
}

/// Deletes the offline, idle registration named like `spec`; refuses a live one.
async fn replace_unused(gh: &GitHubClient, spec: &RunnerSpec) -> Result<(), StepError> {
    let Some(found) = gh
        .find_runner(&spec.repo, &spec.name)
        .await
        .map_err(StepError::github("JIT registration"))?
    else {
        return Ok(());
    };
    if found.busy || found.status == "online" {
        return Err(StepError::NameTaken {
            name: spec.name.clone(),
            id: found.id,
            state: if found.busy { "busy" } else { "online" },
        });
    }
    gh.delete_runner(&spec.repo, found.id)
        .await
        .map_err(StepError::github("JIT registration"))?;
    info!(id = found.id, "deleted an unused registration of this name");
    Ok(())
}

/// Sets the runner's custom labels on GitHub to the file's and records them.
pub async fn sync_labels(ctx: &ApplyCtx, spec: &RunnerSpec) -> Result<(), StepError> {
    let gh = ctx
        .github
        .as_ref()
        .ok_or(StepError::NoCredential("change labels"))?;
    let found = gh
        .find_runner(&spec.repo, &spec.name)
        .await
        .map_err(StepError::github("label sync"))?
        .ok_or(StepError::NotOnGitHub)?;
    let labels = spec.registered_labels();
    gh.set_labels(&spec.repo, found.id, &labels)
        .await
        .map_err(StepError::github("label sync"))?;
    let path = ctx.layout.spec_record(&spec.name);
    if let Some(mut record) = read_record::<SpecRecord>(&path) {
        record.spec = Some(spec.clone());
        write_record(&path, &record).map_err(StepError::io("write record"))?;
    }
    info!(labels = ?labels, "labels set on GitHub");
    Ok(())
}

/// Deletes a registration no runner owns; one that became busy meanwhile is left alone.
pub async fn delete_orphan(
    ctx: &ApplyCtx,
    name: &str,
    repo: &crate::config::Repo,
    id: u64,
) -> Result<(), StepError> {
    let gh = ctx
        .github
        .as_ref()
        .ok_or(StepError::NoCredential("delete an orphaned registration"))?;
    gh.delete_runner(repo, id)
        .await
        .map_err(StepError::github("orphan removal"))?;
    info!(name, id, repo = %repo.url, "deleted orphan registration");
    Ok(())
}
