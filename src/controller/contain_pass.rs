//! Each pass, before planning: what runners' jobs left is cleaned up (processes after every
//! job, `_work` with `clean: workspace`, everything in the cgroup of a runner whose listener
//! is gone), limits follow the file, and usage is measured for status and metrics.

use std::time::Duration;

use tracing::{info, warn};

use super::contain::{Done, Work};
use super::Controller;
use crate::config::{Clean, Leftovers};
use crate::layout::{read_record, ProcessRecord, StateLayout};
use crate::observe::Observed;

/// How often usage is read (a few small files per runner).
const USAGE_EVERY: Duration = Duration::from_secs(2);

impl Controller {
    /// Runs every runner's containment work for this pass on the blocking pool.
    pub(super) async fn contain_pass(&mut self, layout: &StateLayout, observed: &Observed) {
        let now = super::now();
        let measure = self
            .seen
            .last_usage
            .is_none_or(|at| now.duration_since(at) >= USAGE_EVERY);
        if measure {
            self.seen.last_usage = Some(now);
        }
        // A runner whose worker runs may be starting a listener the observation predates:
        // its cgroup is left alone until the worker ends (what is due stays due).
        let works: Vec<Work> = observed
            .runners
            .iter()
            .filter(|(name, _)| !self.book.workers.running(name))
            .map(|(name, seen)| self.work_for(layout, name, seen, measure))
            .collect();
        let contain = self.contain();
        let done = tokio::task::spawn_blocking(move || {
            works
                .into_iter()
                .map(|w| contain.run(&w))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for d in done {
            self.fold(d);
        }
    }

    fn work_for(
        &self,
        layout: &StateLayout,
        name: &str,
        seen: &crate::observe::ObservedRunner,
        measure: bool,
    ) -> Work {
        let spec = self.desired.spec_for(name);
        let recorded = seen.spec.as_ref().and_then(|r| r.spec.as_ref());
        let isolation = spec.as_ref().or(recorded).map(|s| s.isolation);
        let listener = seen.process.and_then(|p| {
            read_record::<ProcessRecord>(&layout.process_record(name))
                .filter(|r| r.pid == p.pid)
                .map(|r| (r.pid, r.start_time))
        });
        let busy = seen.process.is_some_and(|p| p.busy);
        let state = self.book.runtimes.get(name).map(|r| &r.contain);
        let due =
            |flag: fn(&super::runtime::ContainState) -> bool| !busy && state.is_some_and(flag);
        let persistent = spec.as_ref().is_some_and(|s| !s.ephemeral);
        let clean = (due(|s| s.clean_due)
            && persistent
            && spec.as_ref().is_some_and(|s| s.clean == Clean::Workspace))
        .then(|| (layout.runner_dir(name), layout.runners_dir()));
        let limits = match (&spec, listener) {
            (Some(spec), Some((pid, _)))
                if state.is_none_or(|s| {
                    s.applied != Some(spec.resources) || s.applied_pid != Some(pid)
                }) =>
            {
                Some(spec.resources)
            }
            _ => None,
        };
        // A new listener (or none any more) is described at once, not at the next beat.
        let pid = listener.map(|(p, _)| p);
        let measure = measure || state.is_none_or(|s| s.cgroup.is_none() || s.described_pid != pid);
        Work {
            name: name.to_string(),
            listener,
            isolation,
            sweep: due(|s| s.sweep_due)
                && spec.as_ref().is_none_or(|s| s.leftovers == Leftovers::Kill),
            clean,
            limits,
            measure,
        }
    }

    /// Folds one runner's containment results into its memory.
    fn fold(&mut self, done: Done) {
        let Some(runtime) = self.book.runtimes.get_mut(&done.name) else {
            return;
        };
        let spec = self.desired.spec_for(&done.name);
        let listener = runtime.running_listener();
        let state = &mut runtime.contain;
        let _span = tracing::info_span!("runner", runner = %done.name).entered();
        if done.reaped > 0 {
            info!(
                processes = done.reaped,
                "killed what the runner's stopped listener left in its cgroup"
            );
        }
        if let Some(swept) = done.swept {
            if swept.killed > 0 {
                info!(
                    processes = swept.killed,
                    "killed what the last job left running"
                );
            }
            state.leftovers_killed += swept.killed as u64;
        }
        // Owed until it ran, unless `leftovers: keep` says none is wanted.
        if done.sweep_asked
            || spec
                .as_ref()
                .is_some_and(|s| s.leftovers == Leftovers::Keep)
        {
            state.sweep_due = false;
        }
        let cleans = spec
            .as_ref()
            .is_some_and(|s| s.clean == Clean::Workspace && !s.ephemeral);
        fold_clean(state, done.cleaned, cleans);
        if let Some(not_applied) = done.not_applied {
            for missing in &not_applied {
                warn!(controller = %missing.controller, reason = %missing.reason, "a resource limit is not applied");
            }
            state.not_applied = not_applied;
            state.applied = spec.as_ref().map(|s| s.resources);
            state.applied_pid = listener;
        }
        if let Some((cgroup, usage)) = done.described {
            state.cgroup = Some(cgroup);
            state.usage = usage;
            state.described_pid = done.listener;
        }
    }
}

/// Folds the result of a workspace clean-up (`None`: none ran) into `state`; `cleans` is
/// whether the runner's entry asks for one after every job.
fn fold_clean(
    state: &mut super::runtime::ContainState,
    cleaned: Option<Result<usize, super::contain::CleanError>>,
    cleans: bool,
) {
    match cleaned {
        Some(Ok(removed)) => {
            state.clean_due = false;
            if removed > 0 {
                info!(entries = removed, "emptied the workspace after the job");
            }
        }
        Some(Err(err)) => {
            state.clean_due = false;
            let error = crate::error_chain(&err);
            warn!(error, "cannot empty the workspace after the job");
        }
        // Not asked while a job runs, or postponed because the next one started.
        None if cleans => {}
        None => state.clean_due = false,
    }
}
