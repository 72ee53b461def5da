//! Per-pool metric families: queued jobs and, for `engine: scaleset` pools, the session.

use std::fmt;

use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use super::{family, Snapshot};
use crate::status::PoolStatus;

impl Snapshot {
    /// Each pool's queued jobs, how long the oldest waits and how many wait too long.
    pub(super) fn pool_families(&self, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
        if self.pools.is_empty() {
            // No entry has `scale`: no families, so a host without pools scrapes as before.
            return Ok(());
        }
        let by_pool = |value: fn(&PoolStatus) -> u64| {
            self.pools.iter().map(move |p| (pool_labels(p), value(p)))
        };
        family(
            encoder,
            "corral_jobs_queued",
            "Queued jobs a pool serves (each job counted for one pool).",
            MetricType::Gauge,
            by_pool(|p| p.queued as u64),
        )?;
        family(
            encoder,
            "corral_jobs_queued_longest_seconds",
            "How long the oldest queued job of a pool has waited.",
            MetricType::Gauge,
            by_pool(|p| p.queued_longest_seconds.unwrap_or(0)),
        )?;
        family(
            encoder,
            "corral_jobs_queued_too_long",
            "Queued jobs of a pool waiting longer than its queued_alert_after.",
            MetricType::Gauge,
            by_pool(|p| p.queued_too_long as u64),
        )?;
        self.scaleset_families(encoder)
    }

    /// The message session of each `engine: scaleset` pool; absent when there is none.
    fn scaleset_families(&self, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
        if self.pools.iter().all(|p| p.scale_set.is_none()) {
            return Ok(());
        }
        let scaleset = |value: fn(&crate::status::ScaleSetStatus) -> u64| {
            self.pools
                .iter()
                .filter_map(move |p| Some((pool_labels(p), value(p.scale_set.as_ref()?))))
        };
        family(
            encoder,
            "corral_scaleset_session_open",
            "1 while the scale-set pool holds its message session.",
            MetricType::Gauge,
            scaleset(|s| u64::from(s.engine.session == crate::scaleset::SessionState::Open)),
        )?;
        family(
            encoder,
            "corral_scaleset_jobs_assigned",
            "Jobs assigned to the pool's scale set, waiting or running.",
            MetricType::Gauge,
            scaleset(|s| s.engine.statistics.total_assigned_jobs),
        )?;
        family(
            encoder,
            "corral_scaleset_last_message_id",
            "Id of the last message the scale-set session received.",
            MetricType::Gauge,
            scaleset(|s| u64::try_from(s.engine.last_message_id).unwrap_or(0)),
        )
    }
}

/// The labels of a pool's samples: its name and `owner/repo`.
fn pool_labels(p: &PoolStatus) -> [(&'static str, String); 2] {
    // `https://host/owner/repo` → `owner/repo`.
    let repo = p.repo_url.splitn(4, '/').nth(3).unwrap_or(&p.repo_url);
    [("pool", p.name.clone()), ("repo", repo.to_string())]
}
