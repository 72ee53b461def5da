//! Per-runner metric families: state and restarts, disk, the Docker socket, the cgroup and
//! its usage.

use std::fmt;

use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use super::{family, Snapshot, STATES};
use crate::status::RunnerStatus;

impl Snapshot {
    /// Gauges and counters of the last status, by runner.
    pub(super) fn runner_families(&self, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let runners = &self.runners;
        let by_runner = |value: fn(&RunnerStatus) -> u64| {
            runners
                .iter()
                .map(move |r| ([("runner", r.name.clone())], value(r)))
        };
        family(
            encoder,
            "corral_runners",
            "Runners by state.",
            MetricType::Gauge,
            STATES.iter().map(|state| {
                let n = runners.iter().filter(|r| r.state == *state).count() as u64;
                ([("state", state.to_string())], n)
            }),
        )?;
        family(
            encoder,
            "corral_runner_busy",
            "1 while the runner runs a job.",
            MetricType::Gauge,
            by_runner(|r| u64::from(r.busy)),
        )?;
        family(
            encoder,
            "corral_runner_restarts",
            "Restarts after unexpected exits.",
            MetricType::Counter,
            by_runner(|r| u64::from(r.restarts)),
        )?;
        let mut metric = encoder.encode_descriptor(
            "corral_runner_last_exit_code",
            "The listener's last exit code.",
            None,
            MetricType::Gauge,
        )?;
        for r in runners {
            if let Some(code) = r.last_exit_code {
                metric
                    .encode_family(&[("runner", r.name.as_str())])?
                    .encode_gauge(&i64::from(code))?;
            }
        }
        Ok(())
    }

    /// Disk per runner, unique and shared.
    pub(super) fn disk_family(&self, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let runners = &self.runners;
        family(
            encoder,
            "corral_runner_disk_bytes",
            "Disk a runner holds alone (unique) and shares with the base (shared).",
            MetricType::Gauge,
            runners
                .iter()
                .filter_map(|r| r.disk.map(|d| (r, d)))
                .flat_map(|(r, d)| {
                    [("unique", d.unique_bytes), ("shared", d.shared_bytes)].map(|(kind, bytes)| {
                        ([("runner", r.name.clone()), ("kind", kind.into())], bytes)
                    })
                }),
        )
    }

    /// Each runner's Docker socket: objects reaped by kind, requests refused, images kept.
    pub(super) fn docker_families(&self, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let sockets: Vec<_> = self
            .runners
            .iter()
            .filter_map(|r| Some((r.name.clone(), r.docker.as_ref()?)))
            .collect();
        if sockets.is_empty() {
            // No runner has `docker.enabled`: no families, so a host without it scrapes as before.
            return Ok(());
        }
        family(
            encoder,
            "corral_docker_reaped",
            "Docker objects removed after jobs and at removal, by kind.",
            MetricType::Counter,
            sockets.iter().flat_map(|(name, d)| {
                [
                    ("container", d.reaped_containers),
                    ("network", d.reaped_networks),
                    ("volume", d.reaped_volumes),
                    ("image", d.reaped_images),
                ]
                .map(|(kind, n)| ([("runner", name.clone()), ("kind", kind.into())], n))
            }),
        )?;
        family(
            encoder,
            "corral_docker_refused",
            "Docker requests the runner's policy refused.",
            MetricType::Counter,
            sockets
                .iter()
                .map(|(name, d)| ([("runner", name.clone())], d.refused)),
        )?;
        family(
            encoder,
            "corral_docker_image_bytes",
            "Bytes of images the runner's jobs built that are kept.",
            MetricType::Gauge,
            sockets
                .iter()
                .map(|(name, d)| ([("runner", name.clone())], d.image_bytes)),
        )
    }

    /// Each runner's cgroup: usage, OOM kills, leftovers killed, degraded clean-up.
    pub(super) fn cgroup_families(&self, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let contained: Vec<&RunnerStatus> =
            self.runners.iter().filter(|r| r.cgroup.is_some()).collect();
        if contained.is_empty() {
            // A status without cgroup fields (an older corral's): no families.
            return Ok(());
        }
        let label = |r: &RunnerStatus| [("runner", r.name.clone())];
        family(
            encoder,
            "corral_runner_cleanup_degraded",
            "1 when the runner has no cgroup and clean-up falls back to its session and user.",
            MetricType::Gauge,
            contained.iter().map(|r| {
                let degraded = r
                    .cgroup
                    .as_deref()
                    .is_some_and(|c| c.starts_with("degraded"));
                (label(r), u64::from(degraded))
            }),
        )?;
        family(
            encoder,
            "corral_runner_leftover_processes_killed",
            "Processes the runner's jobs left running that corral killed after them.",
            MetricType::Counter,
            contained.iter().map(|r| (label(r), r.leftovers_killed)),
        )?;
        usage_families(encoder, &contained)
    }
}

/// What the cgroups of `contained` use, for those whose usage could be read.
fn usage_families(encoder: &mut DescriptorEncoder<'_>, contained: &[&RunnerStatus]) -> fmt::Result {
    let label = |r: &RunnerStatus| [("runner", r.name.clone())];
    let used: Vec<(&RunnerStatus, crate::cgroup::Usage)> = contained
        .iter()
        .filter_map(|r| Some((*r, r.usage?)))
        .collect();
    let mut cpu = encoder.encode_descriptor(
        "corral_runner_cpu_seconds",
        "CPU time used in the runner's cgroup, its jobs included.",
        None,
        MetricType::Counter,
    )?;
    for (r, u) in &used {
        #[allow(
            clippy::cast_precision_loss,
            reason = "CPU microseconds stay far below 2^52"
        )]
        let seconds = u.cpu_micros as f64 / 1e6;
        cpu.encode_family(&label(r))?
            .encode_counter::<NoLabelSet, _, u64>(&seconds, None)?;
    }
    family(
        encoder,
        "corral_runner_memory_bytes",
        "Memory in use in the runner's cgroup.",
        MetricType::Gauge,
        used.iter()
            .filter_map(|(r, u)| Some((label(r), u.memory_bytes?))),
    )?;
    family(
        encoder,
        "corral_runner_memory_peak_bytes",
        "The most memory the runner's cgroup used at once.",
        MetricType::Gauge,
        used.iter()
            .filter_map(|(r, u)| Some((label(r), u.memory_peak_bytes?))),
    )?;
    family(
        encoder,
        "corral_runner_oom_kills",
        "Processes the kernel's OOM killer killed in the runner's cgroup.",
        MetricType::Counter,
        used.iter()
            .filter_map(|(r, u)| Some((label(r), u.oom_kills?))),
    )?;
    family(
        encoder,
        "corral_runner_processes",
        "Processes in the runner's cgroup.",
        MetricType::Gauge,
        used.iter().map(|(r, u)| (label(r), u.processes)),
    )
}
