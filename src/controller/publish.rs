//! Status: `status.json`, the HTTP API's copy and metrics, and one event per state change.

use std::collections::BTreeMap;

use tracing::{error, info};

use super::runtime::build_status;
use super::Controller;
use crate::layout::StateLayout;
use crate::observe::{self, Observed};
use crate::status::{self, GitHubStatus};

impl Controller {
    pub(super) fn write_status(&mut self, layout: &StateLayout, observed: &Observed) {
        let github = self.seen.github.as_ref().map(|(_, gh)| GitHubStatus {
            rate_limit: gh.budget(),
            blocked_until: gh
                .blocked_until()
                .map(|t| humantime::format_rfc3339_seconds(t).to_string()),
        });
        let mut status = build_status(
            self.publish.effective.as_ref().unwrap_or(&self.desired),
            observed,
            &self.book.runtimes,
            self.book.workers.phases(),
            self.file.error.clone(),
            github,
            super::now(),
        );
        status.source = self.seen.source.status(&self.desired);
        super::docker_steps::attach_counters(&self.host.docker, &mut status);
        let now = std::time::SystemTime::now();
        status.pools = self
            .desired
            .pools
            .iter()
            .enumerate()
            .map(|(i, pool)| {
                let jobs = self
                    .publish
                    .pool_queues
                    .get(i)
                    .map_or(&[][..], Vec::as_slice);
                let engine = pool
                    .scale_set_key()
                    .and_then(|key| self.publish.scaleset_status.get(&key));
                status::PoolStatus::new(pool, jobs, engine, now)
            })
            .collect();
        self.log_state_changes(&status);
        if let Some(api) = &self.publish.api {
            let ready = self.file.error.is_none();
            let requests = self
                .seen
                .github
                .as_ref()
                .map(|(_, gh)| gh.request_counts())
                .unwrap_or_default();
            api.with(|p| {
                p.status = Some(status.clone());
                p.ready = ready;
                p.metrics.github_requests = requests;
            });
        }
        if let Err(err) = status::write(&layout.status_file(), &status) {
            error!(cause = %err, "cannot write status.json");
        }
    }

    /// One structured event per state change: runner, from, to, and why.
    fn log_state_changes(&mut self, status: &status::Status) {
        let mut now: BTreeMap<String, status::State> = BTreeMap::new();
        for r in &status.runners {
            let before = self.publish.last_states.get(&r.name).copied();
            if before != Some(r.state) {
                let from = before.map_or_else(|| "absent".to_string(), |s| s.to_string());
                let reason = r.last_error.as_deref().unwrap_or("");
                info!(runner = %r.name, from = %from, to = %r.state, reason, "runner state changed");
            }
            now.insert(r.name.clone(), r.state);
        }
        for gone in self
            .publish
            .last_states
            .keys()
            .filter(|n| !now.contains_key(*n))
        {
            info!(runner = %gone, from = %self.publish.last_states[gone], to = "removed", reason = "", "runner state changed");
        }
        self.publish.last_states = now;
    }

    /// Writes the status as observed now.
    pub fn write_final_status(&mut self) {
        let layout = self.layout();
        self.write_status(&layout, &observe::observe(&layout));
    }
}
