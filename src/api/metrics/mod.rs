//! Prometheus text exposition of corral's state: gauges derived from the last status, and
//! counters and histograms the controller accumulates.

use std::collections::BTreeMap;
use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{prometheus_text, DescriptorEncoder, EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::Published;
use crate::status::{PoolStatus, RunnerStatus, State};

mod pools;
mod runners;

/// Upper bounds of the histogram buckets, in seconds.
const PASS_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const JOB_BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0,
];

/// A cumulative histogram.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, bounds: &[f64], value: f64) {
        self.counts.resize(bounds.len(), 0);
        for (slot, bound) in self.counts.iter_mut().zip(bounds) {
            if value <= *bound {
                *slot += 1;
            }
        }
        self.sum += value;
        self.count += 1;
    }
}

/// What the controller counts between passes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    /// Durations of observe → plan → apply passes.
    pub passes: Histogram,
    /// Durations of finished jobs.
    pub job_durations: Histogram,
    /// Finished jobs by runner and result.
    pub jobs: BTreeMap<(String, String), u64>,
    /// Edits of the config file that were refused.
    pub config_reload_failures: u64,
    /// `POST /webhook` deliveries refused for their signature.
    pub webhook_refused: u64,
    /// GitHub requests by endpoint template and status (0: no answer).
    pub github_requests: Vec<(String, u16, u64)>,
}

impl Metrics {
    /// A pass took `seconds`.
    pub fn observe_pass(&mut self, seconds: f64) {
        self.passes.observe(PASS_BUCKETS, seconds);
    }

    /// `runner` finished a job with `result`, which took `seconds` when known.
    pub fn observe_job(&mut self, runner: &str, result: &str, seconds: Option<u64>) {
        *self
            .jobs
            .entry((runner.to_string(), result.to_string()))
            .or_default() += 1;
        if let Some(seconds) = seconds {
            #[allow(
                clippy::cast_precision_loss,
                reason = "job durations are far below 2^52 s"
            )]
            self.job_durations.observe(JOB_BUCKETS, seconds as f64);
        }
    }
}

const STATES: [State; 10] = [
    State::Provisioning,
    State::Registering,
    State::Starting,
    State::Idle,
    State::Busy,
    State::Draining,
    State::Backoff,
    State::Crashloop,
    State::Error,
    State::Stopped,
];

/// The whole exposition, in the Prometheus text format (0.0.4), encoded by
/// `prometheus-client` from what was last published.
pub fn render(p: &Published) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot {
        runners: p
            .status
            .as_ref()
            .map(|s| s.runners.clone())
            .unwrap_or_default(),
        pools: p
            .status
            .as_ref()
            .map(|s| s.pools.clone())
            .unwrap_or_default(),
        source: p.status.as_ref().and_then(|s| s.source.clone()),
        rate_limit_remaining: p
            .status
            .as_ref()
            .and_then(|s| s.github.as_ref()?.rate_limit.as_ref())
            .map(|budget| budget.remaining),
        metrics: p.metrics.clone(),
    }));
    let mut out = String::new();
    // Writing into a `String` cannot fail.
    let _ = prometheus_text::encode(&mut out, &registry);
    out
}

/// One scrape's values, encoded by the registry.
#[derive(Debug)]
struct Snapshot {
    runners: Vec<RunnerStatus>,
    pools: Vec<PoolStatus>,
    source: Option<crate::status::SourceStatus>,
    rate_limit_remaining: Option<u64>,
    metrics: Metrics,
}

/// Writes one metric family: its descriptor, then a sample per label set.
fn family<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: impl IntoIterator<Item = (L, u64)>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in samples {
        let mut sample = metric.encode_family(&labels)?;
        match kind {
            MetricType::Counter => sample.encode_counter::<NoLabelSet, _, u64>(&value, None)?,
            _ => sample.encode_gauge(&value)?,
        }
    }
    Ok(())
}

/// Writes one metric without labels.
fn single(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    value: u64,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    match kind {
        MetricType::Counter => metric.encode_counter::<NoLabelSet, _, u64>(&value, None),
        _ => metric.encode_gauge(&value),
    }
}

/// A histogram without labels from its cumulative counts.
fn histogram(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    bounds: &[f64],
    h: &Histogram,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    // The encoder sums per-bucket counts; ours are cumulative.
    let mut below = 0;
    let buckets: Vec<(f64, u64)> = bounds
        .iter()
        .enumerate()
        .map(|(i, bound)| {
            let cumulative = h.counts.get(i).copied().unwrap_or(0);
            let own = cumulative - below;
            below = cumulative;
            (*bound, own)
        })
        .collect();
    metric.encode_histogram::<NoLabelSet>(h.sum, h.count, &buckets, None)
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        self.runner_families(&mut encoder)?;
        self.counted_families(&mut encoder)?;
        self.disk_family(&mut encoder)?;
        self.github_families(&mut encoder)?;
        self.docker_families(&mut encoder)?;
        self.pool_families(&mut encoder)?;
        self.source_families(&mut encoder)?;
        self.cgroup_families(&mut encoder)
    }
}

/// The families of the controller as a whole; those by runner are in `runners.rs`, those by
/// pool in `pools.rs`.
impl Snapshot {
    /// What the controller counted: jobs, passes, refusals, GitHub requests.
    fn counted_families(&self, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
        family(
            encoder,
            "corral_jobs",
            "Finished jobs by runner and result.",
            MetricType::Counter,
            self.metrics.jobs.iter().map(|((runner, result), n)| {
                ([("runner", runner.clone()), ("result", result.clone())], *n)
            }),
        )?;
        histogram(
            encoder,
            "corral_job_duration_seconds",
            "Durations of finished jobs.",
            JOB_BUCKETS,
            &self.metrics.job_durations,
        )?;
        histogram(
            encoder,
            "corral_reconcile_pass_duration_seconds",
            "Durations of observe, plan and apply passes.",
            PASS_BUCKETS,
            &self.metrics.passes,
        )?;
        single(
            encoder,
            "corral_config_reload_failures",
            "Config edits refused.",
            MetricType::Counter,
            self.metrics.config_reload_failures,
        )?;
        single(
            encoder,
            "corral_webhook_refused",
            "Webhook deliveries refused for their signature.",
            MetricType::Counter,
            self.metrics.webhook_refused,
        )?;
        Ok(())
    }

    /// `source.git`: the revision in force (as a label) and whether the newest is refused or
    /// cannot be fetched. Absent without a source, so other hosts scrape as before.
    fn source_families(&self, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let Some(source) = &self.source else {
            return Ok(());
        };
        family(
            encoder,
            "corral_source_revision",
            "1 for the commit of source.git in force (revision label; empty before the first).",
            MetricType::Gauge,
            [(
                [
                    ("url", source.url.clone()),
                    ("ref", source.git_ref.clone()),
                    ("revision", source.revision.clone().unwrap_or_default()),
                ],
                1,
            )],
        )?;
        single(
            encoder,
            "corral_source_error",
            "1 while the newest commit of source.git is refused or cannot be fetched.",
            MetricType::Gauge,
            u64::from(source.error.is_some()),
        )
    }

    /// GitHub requests and the rate limit left.
    fn github_families(&self, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
        family(
            encoder,
            "corral_github_requests",
            "GitHub API requests by endpoint and status (0: no answer).",
            MetricType::Counter,
            self.metrics
                .github_requests
                .iter()
                .map(|(endpoint, status, n)| {
                    (
                        [
                            ("endpoint", endpoint.clone()),
                            ("status", status.to_string()),
                        ],
                        *n,
                    )
                }),
        )?;
        if let Some(remaining) = self.rate_limit_remaining {
            single(
                encoder,
                "corral_github_rate_limit_remaining",
                "GitHub API requests left in the window.",
                MetricType::Gauge,
                remaining,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod golden {
    use super::*;
    use crate::status::{RunnerStatus, Status};

    pub(super) fn sample() -> Published {
        let runner = |name: &str, state: &str, busy: bool, exit: Option<i32>| -> RunnerStatus {
            serde_json::from_value(serde_json::json!({
                "name": name, "repo_url": "https://github.com/o/r", "status": "running",
                "pid": 1, "state": state, "busy": busy, "job": null, "restarts": 2,
                "last_exit_code": exit, "registration": "registered", "last_error": null,
                "disk": {"unique_bytes": 40960, "shared_bytes": 1_000_000}
            }))
            .expect("runner")
        };
        let mut metrics = Metrics::default();
        metrics.observe_pass(0.02);
        metrics.observe_pass(3.0);
        metrics.observe_job("web-1", "succeeded", Some(42));
        metrics.observe_job("web-\"2\"", "failed", None);
        metrics.config_reload_failures = 1;
        metrics.webhook_refused = 3;
        metrics.github_requests = vec![("GET /repos/{o}/{r}/actions/runners".into(), 200, 7)];
        Published {
            status: Some(Status {
                runners: vec![
                    runner("web-1", "busy", true, None),
                    runner("web-\"2\"", "crashloop", false, Some(1)),
                ],
                github: serde_json::from_value(serde_json::json!({"rate_limit": {"limit": 5000, "remaining": 4999, "reset_at": "2030-01-01T00:00:00Z"}})).ok(),
                ..Status::default()
            }),
            ready: true,
            metrics,
        }
    }

    /// A runner with a cgroup gets its usage families; one without, none.
    #[test]
    fn usage_families_follow_the_cgroups() {
        let mut p = sample();
        let status = p.status.as_mut().expect("status");
        status.runners[0].cgroup = Some("/sys/fs/cgroup/corral-1/web-1".into());
        status.runners[0].leftovers_killed = 3;
        status.runners[0].usage = Some(crate::cgroup::Usage {
            cpu_micros: 1_500_000,
            memory_bytes: Some(4096),
            memory_peak_bytes: Some(8192),
            oom_kills: Some(1),
            processes: 5,
        });
        status.runners[1].cgroup = Some("degraded (no cgroup2 hierarchy is mounted)".into());
        let text = render(&p);
        for line in [
            "corral_runner_cpu_seconds_total{runner=\"web-1\"} 1.5",
            "corral_runner_memory_bytes{runner=\"web-1\"} 4096",
            "corral_runner_memory_peak_bytes{runner=\"web-1\"} 8192",
            "corral_runner_oom_kills_total{runner=\"web-1\"} 1",
            "corral_runner_processes{runner=\"web-1\"} 5",
            "corral_runner_leftover_processes_killed_total{runner=\"web-1\"} 3",
            "corral_runner_cleanup_degraded{runner=\"web-1\"} 0",
            "corral_runner_cleanup_degraded{runner=\"web-\\\"2\\\"\"} 1",
        ] {
            assert!(text.contains(line), "no `{line}` in:\n{text}");
        }
        assert!(!text.contains("corral_runner_memory_bytes{runner=\"web-\\\"2"));
    }

    /// The exposition is the one corral wrote by hand before `prometheus-client`: the same
    /// names, labels and values, line for line.
    #[test]
    fn the_exposition_is_unchanged() {
        let golden = include_str!("metrics_golden.txt");
        let rendered = render(&sample());
        let lines = |text: &str| text.lines().map(str::to_string).collect::<Vec<_>>();
        assert_eq!(lines(&rendered), lines(golden), "{rendered}");
    }
}
