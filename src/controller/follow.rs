//! Keeping up with live listeners between steps: their logs, caps, and adopted ones.

use tracing::info;

use super::{Controller, Trigger};
use crate::layout::StateLayout;
use crate::markers::LogTail;
use crate::observe::Observed;
use crate::process::cap_log;

/// Largest listener log before it is rotated.
const LOG_CAP: u64 = 10 * 1024 * 1024;

impl Controller {
    /// Keeps up with live listeners: reads their logs, caps them, watches adopted ones.
    pub(super) fn follow_processes(&mut self, layout: &StateLayout, observed: &Observed) {
        for (name, seen) in &observed.runners {
            let log = layout.listener_log(name);
            let runtime = self.book.runtimes.entry(name.clone()).or_default();
            let _ = cap_log(&log, LOG_CAP);
            let job_before = runtime.view.job.clone();
            runtime
                .tail
                .get_or_insert_with(LogTail::default)
                .read_into(&log, &mut runtime.view);
            let finished = std::mem::take(&mut runtime.view.finished);
            if runtime.view.job != job_before || !finished.is_empty() {
                // A job began or ended: a drain waiting on it is tried again at once.
                runtime.retry_at = None;
            }
            if !finished.is_empty() || seen.process.is_some_and(|p| p.busy) {
                // A job ran: once its Worker is gone, what it left goes.
                runtime.contain.sweep_due = true;
                runtime.contain.clean_due = true;
            }
            super::docker_steps::job_events(
                &self.host.docker,
                name,
                job_before.as_deref(),
                &runtime.view,
                finished.len(),
            );
            if let Some(api) = &self.publish.api {
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
            // A listener its worker just started is watched by that worker's outcome.
            if runtime.watches(process.pid) || self.book.workers.running(name) {
                continue;
            }
            // Not our child (corral restarted): its pidfd tells of the exit. A job may have
            // ended while corral was away: what it left goes.
            runtime.watch(process.pid);
            runtime.contain.sweep_due = true;
            self.adopt(layout, name, process.pid);
        }
    }

    /// Watches listener `pid` of runner `name`, which corral did not start (or no longer
    /// waits for): a tracked task reports its exit.
    fn adopt(&self, layout: &StateLayout, name: &str, pid: i32) {
        let record = crate::layout::read_record::<crate::layout::ProcessRecord>(
            &layout.process_record(name),
        )
        .filter(|r| r.pid == pid)
        .or_else(|| record_unrecorded(layout, name, pid));
        let Some(record) = record else { return };
        info!(runner = %name, pid = record.pid, "adopted a running listener");
        let (name, triggers) = (name.to_string(), self.triggers.clone());
        self.tasks.spawner().spawn(async move {
            // One that cannot be adopted is gone already: its exit is reported at once.
            if let Ok(mut listener) = crate::supervisor::Listener::adopt(&record) {
                listener.wait().await;
            }
            let _ = triggers.send(Trigger::Exited {
                name,
                pid: record.pid,
                code: None,
            });
        });
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
        start_time: crate::procfs::process_start_time(pid)?,
    };
    info!(runner = %name, pid, "found a listener corral had not recorded");
    crate::layout::write_record(&layout.process_record(name), &record).ok()?;
    Some(record)
}
