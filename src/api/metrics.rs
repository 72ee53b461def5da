//! Prometheus text exposition of corral's state: gauges derived from the last status, and
//! counters and histograms the controller accumulates.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::Published;
use crate::status::State;

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

    fn render(&self, out: &mut String, name: &str, help: &str, bounds: &[f64], labels: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, bound) in bounds.iter().enumerate() {
            let n = self.counts.get(i).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
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

/// Label values escaped as the text format wants them.
fn esc(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The whole exposition.
pub fn render(p: &Published) -> String {
    let mut out = String::new();
    let runners = p
        .status
        .as_ref()
        .map(|s| s.runners.as_slice())
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "# HELP corral_runners Runners by state.\n# TYPE corral_runners gauge"
    );
    for state in STATES {
        let n = runners.iter().filter(|r| r.state == state).count();
        let _ = writeln!(out, "corral_runners{{state=\"{state}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP corral_runner_busy 1 while the runner runs a job.\n# TYPE corral_runner_busy gauge"
    );
    for r in runners {
        let _ = writeln!(
            out,
            "corral_runner_busy{{runner=\"{}\"}} {}",
            esc(&r.name),
            u8::from(r.busy)
        );
    }
    let _ = writeln!(out, "# HELP corral_runner_restarts_total Restarts after unexpected exits.\n# TYPE corral_runner_restarts_total counter");
    for r in runners {
        let _ = writeln!(
            out,
            "corral_runner_restarts_total{{runner=\"{}\"}} {}",
            esc(&r.name),
            r.restarts
        );
    }
    let _ = writeln!(out, "# HELP corral_runner_last_exit_code The listener's last exit code.\n# TYPE corral_runner_last_exit_code gauge");
    for r in runners {
        if let Some(code) = r.last_exit_code {
            let _ = writeln!(
                out,
                "corral_runner_last_exit_code{{runner=\"{}\"}} {code}",
                esc(&r.name)
            );
        }
    }
    let _ = writeln!(out, "# HELP corral_jobs_total Finished jobs by runner and result.\n# TYPE corral_jobs_total counter");
    for ((runner, result), n) in &p.metrics.jobs {
        let _ = writeln!(
            out,
            "corral_jobs_total{{runner=\"{}\",result=\"{}\"}} {n}",
            esc(runner),
            esc(result)
        );
    }
    p.metrics.job_durations.render(
        &mut out,
        "corral_job_duration_seconds",
        "Durations of finished jobs.",
        JOB_BUCKETS,
        "",
    );
    p.metrics.passes.render(
        &mut out,
        "corral_reconcile_pass_duration_seconds",
        "Durations of observe, plan and apply passes.",
        PASS_BUCKETS,
        "",
    );
    let _ = writeln!(out, "# HELP corral_config_reload_failures_total Config edits refused.\n# TYPE corral_config_reload_failures_total counter");
    let _ = writeln!(
        out,
        "corral_config_reload_failures_total {}",
        p.metrics.config_reload_failures
    );
    let _ = writeln!(out, "# HELP corral_webhook_refused_total Webhook deliveries refused for their signature.\n# TYPE corral_webhook_refused_total counter\ncorral_webhook_refused_total {}", p.metrics.webhook_refused);
    render_disk_and_github(&mut out, p);
    render_docker(&mut out, p);
    out
}

/// Each runner's Docker socket: objects reaped by kind, requests refused, images kept.
fn render_docker(out: &mut String, p: &Published) {
    let runners: Vec<_> = p
        .status
        .iter()
        .flat_map(|s| &s.runners)
        .filter_map(|r| Some((esc(&r.name), r.docker.as_ref()?)))
        .collect();
    let _ = writeln!(out, "# HELP corral_docker_reaped_total Docker objects removed after jobs and at removal, by kind.\n# TYPE corral_docker_reaped_total counter");
    for (name, d) in &runners {
        for (kind, n) in [
            ("container", d.reaped_containers),
            ("network", d.reaped_networks),
            ("volume", d.reaped_volumes),
            ("image", d.reaped_images),
        ] {
            let _ = writeln!(
                out,
                "corral_docker_reaped_total{{runner=\"{name}\",kind=\"{kind}\"}} {n}"
            );
        }
    }
    let _ = writeln!(out, "# HELP corral_docker_refused_total Docker requests the runner's policy refused.\n# TYPE corral_docker_refused_total counter");
    for (name, d) in &runners {
        let _ = writeln!(
            out,
            "corral_docker_refused_total{{runner=\"{name}\"}} {}",
            d.refused
        );
    }
    let _ = writeln!(out, "# HELP corral_docker_image_bytes Bytes of images the runner's jobs built that are kept.\n# TYPE corral_docker_image_bytes gauge");
    for (name, d) in &runners {
        let _ = writeln!(
            out,
            "corral_docker_image_bytes{{runner=\"{name}\"}} {}",
            d.image_bytes
        );
    }
}

fn render_disk_and_github(out: &mut String, p: &Published) {
    let runners = p
        .status
        .as_ref()
        .map(|s| s.runners.as_slice())
        .unwrap_or_default();
    let _ = writeln!(out, "# HELP corral_runner_disk_bytes Disk a runner holds alone (unique) and shares with the base (shared).\n# TYPE corral_runner_disk_bytes gauge");
    for r in runners {
        if let Some(disk) = r.disk {
            let name = esc(&r.name);
            let _ = writeln!(
                out,
                "corral_runner_disk_bytes{{runner=\"{name}\",kind=\"unique\"}} {}",
                disk.unique_bytes
            );
            let _ = writeln!(
                out,
                "corral_runner_disk_bytes{{runner=\"{name}\",kind=\"shared\"}} {}",
                disk.shared_bytes
            );
        }
    }
    let _ = writeln!(out, "# HELP corral_github_requests_total GitHub API requests by endpoint and status (0: no answer).\n# TYPE corral_github_requests_total counter");
    for (endpoint, status, n) in &p.metrics.github_requests {
        let _ = writeln!(
            out,
            "corral_github_requests_total{{endpoint=\"{}\",status=\"{status}\"}} {n}",
            esc(endpoint)
        );
    }
    if let Some(budget) = p
        .status
        .as_ref()
        .and_then(|s| s.github.as_ref()?.rate_limit.as_ref())
    {
        let _ = writeln!(out, "# HELP corral_github_rate_limit_remaining GitHub API requests left in the window.\n# TYPE corral_github_rate_limit_remaining gauge");
        let _ = writeln!(
            out,
            "corral_github_rate_limit_remaining {}",
            budget.remaining
        );
    }
}
