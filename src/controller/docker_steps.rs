//! Where the controller meets [`crate::docker::Hub`], each in one small function so the
//! calls can move with the controller: the socket served before a listener starts (its
//! `DOCKER_HOST`), served again for listeners adopted after a restart, jobs starting and
//! ending as the listener's log tells, reaping at removal and at stop, and the counters in
//! status.

use std::collections::BTreeSet;
use std::path::Path;

use crate::config::RunnerSpec;
use crate::docker::{Hub, RunnerSocket};
use crate::layout::StateLayout;
use crate::markers::ListenerView;
use crate::observe::Observed;
use crate::status::Status;

/// Serves `spec`'s socket before its listener starts; returns the environment to add.
/// A runner whose `docker` was turned off loses its socket and objects.
pub(super) async fn serve_socket(
    hub: &Hub,
    layout: &StateLayout,
    spec: &RunnerSpec,
    owner: Option<(nix::unistd::Uid, nix::unistd::Gid)>,
) -> Result<Vec<(String, String)>, crate::docker::DockerError> {
    let Some(policy) = &spec.docker else {
        hub.remove(&spec.name).await;
        return Ok(Vec::new());
    };
    let root = layout.runner_dir(&spec.name);
    hub.serve(socket_spec(&root, spec, policy.clone(), owner))
        .await
}

fn socket_spec(
    root: &Path,
    spec: &RunnerSpec,
    policy: crate::config::DockerPolicy,
    owner: Option<(nix::unistd::Uid, nix::unistd::Gid)>,
) -> RunnerSocket {
    RunnerSocket {
        name: spec.name.clone(),
        owner,
        work: root.join("_work"),
        // The runner's container jobs mount its externals (node) read-only.
        read_only: vec![root.join("externals")],
        policy,
    }
}

/// Serves the sockets of live listeners that have none in this corral (adopted after a
/// restart: their `DOCKER_HOST` names a socket nobody listens on yet).
pub(super) async fn serve_adopted(
    hub: &Hub,
    layout: &StateLayout,
    observed: &Observed,
    spec_of: impl Fn(&str) -> Option<RunnerSpec>,
) {
    for (name, seen) in &observed.runners {
        if seen.process.is_none() || hub.is_serving(name) {
            continue;
        }
        let Some((spec, policy)) = spec_of(name).and_then(|s| s.docker.clone().map(|p| (s, p)))
        else {
            continue;
        };
        let root = layout.runner_dir(name);
        let user = {
            let (spec, root) = (spec.clone(), root.clone());
            tokio::task::spawn_blocking(move || crate::users::for_runner(&spec, &root)).await
        };
        let owner = match user {
            Ok(Ok(user)) => match user.run_as {
                crate::process::RunAs::User { uid, gid } => Some((uid, gid)),
                crate::process::RunAs::Inherit => None,
            },
            _ => continue,
        };
        if let Err(err) = hub.serve(socket_spec(&root, &spec, policy, owner)).await {
            tracing::warn!(runner = %name, cause = %crate::error_chain(&err), "cannot serve the Docker socket");
        }
    }
}

/// Tells the hub what the listener's log said since `job_before`: a job started, jobs
/// ended (`finished` of them).
pub(super) fn job_events(
    hub: &Hub,
    name: &str,
    job_before: Option<&str>,
    view: &ListenerView,
    finished: usize,
) {
    if finished > 0 {
        hub.job_ended(name);
    }
    if let Some(job) = view
        .job
        .as_deref()
        .filter(|j| Some(*j) != job_before || finished > 0)
    {
        hub.job_started(name, job);
    }
}

/// Each runner's Docker counters into `status`; forgets those of runners gone.
pub(super) fn attach_counters(hub: &Hub, status: &mut Status) {
    let mut counters = hub.counters();
    let names: BTreeSet<String> = status.runners.iter().map(|r| r.name.clone()).collect();
    hub.retain_counters(&names);
    for runner in &mut status.runners {
        runner.docker = counters.remove(&runner.name);
    }
}
