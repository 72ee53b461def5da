//! Steps that talk to GitHub: deregistering (the drain), JIT registration, label sync,
//! deleting orphaned registrations.

use std::time::Instant;

use tracing::{info, warn};

use super::apply::{chain, ApplyCtx, Job, Outcome, DRAIN_RETRY};
use super::listener::stop;
use crate::config::RunnerSpec;
use crate::github::{GitHubClient, GitHubError, JitConfig};
use crate::layout::{read_record, write_record, SpecRecord};

/// Deletes the registration through the API, by the id corral recorded when it registered
/// (no removal token is ever minted, so none can reach a runner's user). GitHub refuses while
/// a job runs: that is the drain; once the drain time is up the job is stopped first.
pub(super) async fn deregister(
    ctx: &ApplyCtx,
    job: &Job,
    recorded: Option<&RunnerSpec>,
    out: &mut Outcome,
) -> Result<bool, String> {
    let Some(spec) = recorded.or(job.spec.as_ref()) else {
        // No record of how it was registered: nothing corral can deregister.
        out.local_only = true;
        return Ok(true);
    };
    let Some(gh) = ctx.github.as_ref() else {
        warn!("no GitHub credential: the registration stays on GitHub until it expires");
        out.local_only = true;
        return Ok(true);
    };
    let recorded_id =
        read_record::<SpecRecord>(&ctx.layout.spec_record(&job.name)).and_then(|r| r.runner_id);
    let id = match recorded_id {
        Some(id) => Some(id),
        // A record from before corral kept ids: its registration by name.
        None => gh
            .find_runner(&spec.repo, &spec.name)
            .await
            .map_err(|e| chain(&e))?
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
            super::listener::forget_identity(&ctx.layout.runner_dir(&job.name));
            info!(runner_id = ?id, "deregistered");
            Ok(true)
        }
        Err(GitHubError::Busy { .. }) => {
            let started = job.drain_started.unwrap_or_else(Instant::now);
            if started.elapsed() < spec.drain_timeout {
                info!("busy: draining before removal");
                out.draining = true;
                out.requeue = Some(DRAIN_RETRY);
                return Ok(false);
            }
            warn!(drain_timeout = ?spec.drain_timeout, "drain time is up: stopping the running job");
            stop(ctx, &job.name, out).await;
            if let Some(id) = id {
                gh.delete_runner(&spec.repo, id)
                    .await
                    .map_err(|e| chain(&e))?;
            }
            super::listener::forget_identity(&ctx.layout.runner_dir(&job.name));
            Ok(true)
        }
        Err(err) => Err(chain(&err)),
    }
}

/// The labels a JIT runner is created with: the runner's defaults unless turned off, then
/// its custom labels (the `generate-jitconfig` call takes the whole set).
pub fn jit_labels(spec: &RunnerSpec) -> Vec<String> {
    spec.all_labels()
}

/// Creates a just-in-time registration for an ephemeral runner; corral writes its files into
/// the runner's directory when the listener starts.
pub async fn register_jit(gh: &GitHubClient, spec: &RunnerSpec) -> Result<JitConfig, String> {
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
                .map_err(|e| chain(&e))?
        }
        other => other.map_err(|e| chain(&e))?,
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
) -> Result<(u64, crate::secret::Secret), String> {
    let key = crate::config::scale_set_key(&spec.repo.url, name);
    let Some((client, set)) = ctx.scalesets.get(&key) else {
        return Err(format!("scale set {name:?} is not ready yet"));
    };
    let (id, encoded) = client
        .generate_jit_config(*set, &spec.name)
        .await
        .map_err(|e| chain(&e))?;
    info!(runner_id = id, scale_set = %name, "registered just in time with the scale set");
    Ok((id, encoded))
}

/// Deletes the offline, idle registration named like `spec`; refuses a live one.
async fn replace_unused(gh: &GitHubClient, spec: &RunnerSpec) -> Result<(), String> {
    let Some(found) = gh
        .find_runner(&spec.repo, &spec.name)
        .await
        .map_err(|e| chain(&e))?
    else {
        return Ok(());
    };
    if found.busy || found.status == "online" {
        return Err(format!(
            "a registration named `{}` (id {}) is {} on GitHub; not replaced",
            spec.name,
            found.id,
            if found.busy { "busy" } else { "online" }
        ));
    }
    gh.delete_runner(&spec.repo, found.id)
        .await
        .map_err(|e| chain(&e))?;
    info!(id = found.id, "deleted an unused registration of this name");
    Ok(())
}

/// Sets the runner's custom labels on GitHub to the file's and records them.
pub async fn sync_labels(ctx: &ApplyCtx, spec: &RunnerSpec) -> Result<(), String> {
    let gh = ctx
        .github
        .as_ref()
        .ok_or("no GitHub credential to change labels")?;
    let found = gh
        .find_runner(&spec.repo, &spec.name)
        .await
        .map_err(|e| chain(&e))?
        .ok_or("the registration is not on GitHub")?;
    let labels = spec.registered_labels();
    gh.set_labels(&spec.repo, found.id, &labels)
        .await
        .map_err(|e| chain(&e))?;
    let path = ctx.layout.spec_record(&spec.name);
    if let Some(mut record) = read_record::<SpecRecord>(&path) {
        record.spec = Some(spec.clone());
        write_record(&path, &record).map_err(|e| format!("write record: {e}"))?;
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
) -> Result<(), String> {
    let gh = ctx.github.as_ref().ok_or("no GitHub credential")?;
    gh.delete_runner(repo, id).await.map_err(|e| chain(&e))?;
    info!(name, id, repo = %repo.url, "deleted orphan registration");
    Ok(())
}
