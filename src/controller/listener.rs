//! A runner's listener as apply steps see it: started (identity files, records, the program
//! behind a [`Listener`] handle), stopped (the one stop, shared with shutdown), forgotten.
//! The process side of it is [`crate::supervisor`].

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, info, warn};

use crate::config::RunnerSpec;
use crate::layout::{read_record, write_record, ProcessRecord, SpecRecord, StateLayout};
use crate::process::{detach_to_log, runner_command, RunAs};
use crate::provision::Provisioner;
use crate::registration;
use crate::supervisor::{self, kill_recorded, Listener, Stopped, STOP_GRACE};
use crate::users;

use super::contain::Contain;
use super::job::{ApplyCtx, Job, Outcome};
use super::step_error::StepError;
use super::Trigger;

/// Starts the runner's listener (unless a backoff holds it): its identity files and records
/// first, then the program in a session and cgroups of its own, recorded at once and waited
/// for by a task that reports its exit.
pub(super) fn start(
    ctx: &ApplyCtx,
    job: &Job,
    out: &mut Outcome,
    docker: &[(String, String)],
    entry: super::contain::Entry,
) -> Result<bool, StepError> {
    if !job.backoff_wait.is_zero() {
        out.requeue = Some(job.backoff_wait);
        return Ok(false);
    }
    let spec = job.desired()?;
    let root = ctx.layout.runner_dir(&spec.name);
    let user = ctx.runner_user(spec)?;
    prepare_start(ctx, job, spec, &user, out)?;
    let log = ctx.layout.listener_log(&spec.name);
    std::fs::create_dir_all(ctx.layout.record_dir(&spec.name))
        .map_err(StepError::io("create records"))?;
    // corral's alone: the listener logs name every runner's jobs, of every repository.
    let records = ctx.layout.records_dir();
    std::fs::set_permissions(&records, std::fs::Permissions::from_mode(0o700)).map_err(
        StepError::io(format!("make `{}` private", records.display())),
    )?;
    let mut cmd = listener_command(spec, &root, &user, docker);
    for missing in &entry.not_applied {
        warn!(controller = %missing.controller, reason = %missing.reason, "a resource limit is not applied");
    }
    out.not_applied = Some(entry.not_applied);
    out.limits = Some(spec.resources);
    detach_to_log(&mut cmd, &log, entry.fds)
        .map_err(StepError::io(format!("open `{}`", log.display())))?;
    let mut listener = Listener::start(&mut cmd)?;
    let pid = listener.pid();
    crate::crashpoint::reached("start.spawned");
    listener.record(&ctx.layout.process_record(&spec.name))?;
    crate::crashpoint::reached("start.recorded");
    update_runtime_hash(&ctx.layout, spec);
    let (name, triggers) = (spec.name.clone(), ctx.triggers.clone());
    ctx.spawner.spawn(async move {
        let code = listener.wait().await;
        let _ = triggers.send(Trigger::Exited { name, pid, code });
    });
    info!(pid, "listener started");
    out.started = Some(pid);
    Ok(true)
}

/// `Runner.Listener run` for `spec`, as its user, with its Docker socket.
fn listener_command(
    spec: &RunnerSpec,
    root: &std::path::Path,
    user: &users::RunnerUser,
    docker: &[(String, String)],
) -> tokio::process::Command {
    let mut cmd = runner_command(
        &root.join("bin/Runner.Listener"),
        root,
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
    cmd
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
) -> Result<(), StepError> {
    let base = job.base.clone().map_err(StepError::Base)?;
    let owner = match user.run_as {
        RunAs::User { uid, gid } => Some((uid, gid)),
        RunAs::Inherit => None,
    };
    let provisioner = Provisioner::new(ctx.layout.clone(), base, owner);
    if let Some(jit) = out.jit.take() {
        let written = registration::Identity::from_jit(&jit)
            .map_err(StepError::from)
            .and_then(|identity| Ok(provisioner.install_identity(&spec.name, &identity.files)?));
        if let Err(err) = written {
            out.jit = Some(jit);
            return Err(err);
        }
    }
    Ok(provisioner.record_started(&spec.name)?)
}

fn update_runtime_hash(layout: &StateLayout, spec: &RunnerSpec) {
    let path = layout.spec_record(&spec.name);
    if let Some(mut record) = read_record::<SpecRecord>(&path) {
        record.runtime_hash = spec.runtime_hash();
        let _ = write_record(&path, &record);
    }
}

/// Stops the runner's recorded listener (see [`stop_listener`]) for an apply step.
pub(super) async fn stop(ctx: &ApplyCtx, name: &str, out: &mut Outcome) {
    if let Some(stopped) = stop_listener(&ctx.layout, &ctx.contain, name, STOP_GRACE).await {
        out.stopping = Some(stopped.pid);
    }
}

/// The one stop of a runner's listener, for apply steps and shutdown alike: the recorded
/// listener stopped through its handle (SIGINT, `grace`, then SIGKILL to its session), then
/// everything left in the runner's cgroup killed. A recorded listener that is gone still has
/// its session's leftovers killed. `None` when nothing is recorded.
pub(super) async fn stop_listener(
    layout: &StateLayout,
    contain: &Arc<Contain>,
    name: &str,
    grace: Duration,
) -> Option<Stopped> {
    let path = layout.process_record(name);
    let rec = read_record::<ProcessRecord>(&path)?;
    let stopped = match Listener::adopt(&rec) {
        Ok(mut listener) => listener.stop(grace).await,
        Err(err) => {
            debug!(cause = %err, "the recorded listener is gone; its session's leftovers go");
            let identity = rec.clone();
            let killed = tokio::task::spawn_blocking(move || kill_recorded(&identity))
                .await
                .unwrap_or(0);
            Stopped {
                pid: rec.pid,
                clean: true,
                killed,
                since: super::now(),
            }
        }
    };
    // The listener is gone: so goes everything in its cgroup.
    let (contain, owned) = (Arc::clone(contain), name.to_string());
    let _ = tokio::task::spawn_blocking(move || contain.reap(&owned, None)).await;
    crate::crashpoint::reached("stop.done");
    info!(
        pid = stopped.pid,
        clean = stopped.clean,
        killed = stopped.killed,
        "listener stopped"
    );
    // A record of a listener that outlived even SIGKILL stays, so it is never started twice.
    if !supervisor::is_alive(&rec) {
        let _ = std::fs::remove_file(&path);
    }
    Some(stopped)
}

/// Removes corral's records of a runner (it is gone for good).
pub(super) fn remove_records(layout: &StateLayout, name: &str) {
    let dir = layout.record_dir(name);
    if let Err(err) = std::fs::remove_dir_all(&dir) {
        if err.kind() != std::io::ErrorKind::NotFound {
            warn!(path = %dir.display(), cause = %err, "cannot remove records");
        }
    }
}
