//! Graceful shutdown: every listener is stopped, in parallel, by the one stop
//! ([`super::listener::stop_listener`]); a busy one first gets `shutdown_timeout` to finish
//! its job (SIGINT then cancels it, as the runner itself would on Ctrl-C). A second signal
//! kills every runner's session at once. This file only orchestrates.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinSet;
use tracing::{info, warn, Instrument as _};

use super::listener::stop_listener;
use super::Controller;
use crate::layout::{read_record, ProcessRecord};
use crate::observe::{self, Observed};
use crate::procfs::has_worker_child;
use crate::supervisor::{self, STOP_GRACE};

const BUSY_POLL: Duration = Duration::from_millis(250);

/// Stops every live listener, then writes the final status.
pub async fn stop_all(ctl: &mut Controller, force: impl Future<Output = ()>) {
    let layout = ctl.layout();
    let contain = ctl.contain();
    let observed = observe::observe(&layout);
    stop_listeners(ctl, &observed, force).await;
    // Whatever their jobs left goes with them, and so do their cgroups.
    let names: Vec<(String, Option<crate::config::Isolation>)> = observed
        .runners
        .iter()
        .map(|(name, seen)| {
            let spec = ctl.desired().spec_for(name);
            let recorded = seen.spec.as_ref().and_then(|r| r.spec.clone());
            (name.clone(), spec.or(recorded).map(|s| s.isolation))
        })
        .collect();
    let _ = tokio::task::spawn_blocking(move || {
        for (name, isolation) in names {
            contain.remove(&name, super::contain::own_uid(&name, isolation));
        }
        contain.remove_empty();
    })
    .await;
    // The listeners' jobs ended with them: what they left in Docker goes.
    ctl.docker().stop_all().await;
    // Sessions closed, so the next corral opens its own at once (no 409).
    ctl.stop_scalesets().await;
    // Leave no record that would make a later corral adopt a process that is gone.
    for name in ctl.runtimes().keys() {
        let path = layout.process_record(name);
        if let Some(rec) = read_record::<ProcessRecord>(&path) {
            if !supervisor::is_alive(&rec) {
                let _ = std::fs::remove_file(path);
            }
        }
    }
    ctl.write_final_status();
    info!("corral stopped");
}

/// Stops every recorded live listener in parallel, a busy one after its job or
/// `shutdown_timeout`; `force` kills every one's session at once.
async fn stop_listeners(
    ctl: &mut Controller,
    observed: &Observed,
    force: impl Future<Output = ()>,
) {
    let layout = ctl.layout();
    let timeout = ctl.desired().shutdown_timeout;
    let contain = ctl.contain();
    let mut groups = Vec::new();
    let mut tasks = JoinSet::new();
    for (name, seen) in &observed.runners {
        if seen.process.is_none() {
            continue;
        }
        let Some(rec) = read_record::<ProcessRecord>(&layout.process_record(name)) else {
            continue;
        };
        let (name, layout, contain) = (name.clone(), layout.clone(), contain.clone());
        groups.push(rec.clone());
        tasks.spawn(async move {
            let deadline = super::now() + timeout;
            while has_worker_child(rec.pid) && super::now() < deadline {
                tokio::time::sleep(BUSY_POLL).await;
            }
            if has_worker_child(rec.pid) {
                warn!(runner = %name, "shutdown_timeout reached: cancelling the running job");
            }
            stop_listener(&layout, &contain, &name, STOP_GRACE)
                .instrument(tracing::info_span!("runner", runner = %name))
                .await;
        });
    }
    tokio::select! {
        () = async { while tasks.join_next().await.is_some() {} } => {}
        () = force => {
            warn!("second signal: killing every runner now");
            tasks.abort_all();
            for rec in groups {
                // Only the recorded listener and its session's members, by start time.
                supervisor::kill_recorded(&rec);
            }
        }
    }
}
