//! What the loop hears between passes: config edits, triggers from tasks and ended workers.

use tracing::{error, info};

use super::runtime::ExitMeaning;
use super::{Controller, Trigger};
use crate::config;

impl Controller {
    /// Re-reads the config file. Returns false when its bytes did not change. An invalid file
    /// is logged and kept in status; the last good desired state stays in force.
    pub fn reload(&mut self) -> bool {
        let bytes = std::fs::read(&self.file.path).unwrap_or_default();
        if bytes == self.file.digest {
            return false;
        }
        self.file.digest = bytes;
        match config::load_on(&self.file.path, &self.desired.host_id) {
            Ok(desired) => {
                info!(runners = desired.runners.len(), "config reloaded");
                self.desired = desired;
                self.file.error = None;
                self.seen.source.local_changed();
                self.follow_source();
            }
            Err(errors) => {
                error!(errors = %errors, "config edit refused; the last good config stays in force");
                self.file.error = Some(errors.to_string());
                if let Some(api) = &self.publish.api {
                    api.with(|p| p.metrics.config_reload_failures += 1);
                }
            }
        }
        true
    }

    /// Records what an exit means before the next pass.
    pub fn on_trigger(&mut self, trigger: Trigger) {
        let (name, pid, code) = match trigger {
            Trigger::Exited { name, pid, code } if self.book.workers.running(&name) => {
                // Its worker started or is stopping this listener: the exit is judged once
                // the worker's outcome says which.
                self.book.exits_after_worker.push((name, pid, code));
                return;
            }
            Trigger::Exited { name, pid, code } => (name, pid, code),
            Trigger::JobQueued => {
                tracing::debug!("a webhook reported a queued job: polling demand now");
                self.demand_changed();
                return;
            }
            Trigger::DemandPolled(polled) => {
                self.seen.demand.polled(*polled);
                return;
            }
            Trigger::ReleaseInstalled { version, result } => {
                self.release_installed(version, result);
                return;
            }
            // The pass that follows every trigger reads the engines' statuses and takes the
            // listing.
            Trigger::ScaleSetChanged | Trigger::Listed => return,
            Trigger::SourceFetched(fetched) => {
                if let Some(next) =
                    self.seen
                        .source
                        .fetched(*fetched, &self.desired, &self.file.path)
                {
                    self.desired = next;
                }
                return;
            }
        };
        let spec = self.desired.spec_for(&name);
        if spec.is_none() && !self.book.runtimes.contains_key(&name) {
            // A runner corral removed: its listener's exit is the end of the story.
            return;
        }
        if code == Some(7) {
            // The runner version is deprecated: look for a newer release now.
            self.releases.recheck_latest = true;
        }
        let ephemeral = spec.is_some_and(|s| s.ephemeral);
        let layout = self.layout();
        let runtime = self.book.runtimes.entry(name.clone()).or_default();
        if let Some(tail) = runtime.tail.as_mut() {
            tail.read_into(&layout.listener_log(&name), &mut runtime.view);
        }
        // Its job, if any, ended with it.
        self.host.docker.job_ended(&name);
        let _span = tracing::info_span!("runner", runner = %name).entered();
        if runtime.exited(pid, code, ephemeral, super::now()) == ExitMeaning::RegistrationDeleted {
            super::job::forget_identity(&layout.runner_dir(&name));
        }
    }

    /// The next runner whose steps ended; never resolves while none are in flight.
    pub async fn worker_ended(&mut self) -> super::workers::Done {
        self.book.workers.next().await
    }

    /// Folds the outcome of a runner's steps into its memory; and every other that ended.
    pub fn on_worker_ended(&mut self, done: super::workers::Done) {
        let mut done = Some(done);
        while let Some(ended) = done.take().or_else(|| self.book.workers.try_next()) {
            let now = super::now();
            let requeue = self.remember(&ended.name, ended.outcome, now);
            if let Some(at) = now.checked_add(requeue) {
                self.requeue_no_later_than(at);
            }
            let (exits, later): (Vec<_>, Vec<_>) =
                std::mem::take(&mut self.book.exits_after_worker)
                    .into_iter()
                    .partition(|(name, _, _)| *name == ended.name);
            self.book.exits_after_worker = later;
            for (name, pid, code) in exits {
                self.on_trigger(Trigger::Exited { name, pid, code });
            }
        }
    }

    /// Stops every runner's steps in flight and the listing (corral is stopping).
    pub async fn stop_workers(&mut self) {
        if let Some((_, listing)) = self.seen.listing.take() {
            listing.abort();
        }
        self.seen.demand.abort();
        self.seen.source.stop().await;
        self.book.workers.abort().await;
    }
}
