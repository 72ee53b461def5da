//! `status.json`: the last observed state of every runner, written atomically after each pass,
//! and read by `corral status`. It holds no secret.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The whole status file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// When it was written (RFC 3339, UTC).
    pub updated_at: String,
    /// Why the last edit of the config file was refused, while it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_error: Option<String>,
    /// corral's GitHub API budget, when it talks to GitHub.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github: Option<GitHubStatus>,
    /// The git repository the runner list is followed from, when the file has a `source`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceStatus>,
    /// Every runner, by name.
    pub runners: Vec<RunnerStatus>,
    /// Instances the file asks for that were not created because `max_runners` was reached.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_created: Vec<String>,
    /// Every pool (entry with `scale`, per repository): the queued jobs it serves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<PoolStatus>,
}

/// A pool's demand as of the last poll.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolStatus {
    /// The entry's name.
    pub name: String,
    /// The repository.
    pub repo_url: String,
    /// How demand is learnt: `rest` (polling the runs and jobs endpoints) or `scaleset`.
    pub engine: String,
    /// Queued jobs counted for this pool (each job counts for one pool only).
    pub queued: usize,
    /// How long the oldest of them has been queued, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_longest_seconds: Option<u64>,
    /// How many have been queued longer than `queued_alert_after`.
    pub queued_too_long: usize,
    /// The pool's `queued_alert_after`, in seconds.
    pub queued_alert_after_seconds: u64,
    /// The ids of the jobs queued longer than that, oldest first (at most 10).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting_jobs: Vec<u64>,
    /// With `engine: scaleset`: the scale set, its session and the last message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_set: Option<ScaleSetStatus>,
}

/// A scale-set pool's engine, as status shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleSetStatus {
    /// The scale set's name (what workflows put in `runs-on`).
    pub name: String,
    /// The engine's view: set id, session, last message, statistics.
    #[serde(flatten)]
    pub engine: crate::scaleset::EngineStatus,
}

impl PoolStatus {
    /// `pool`'s status with `jobs` queued for it (REST) or its `engine`'s (scale set), at `now`.
    pub fn new(
        pool: &crate::config::Pool,
        jobs: &[crate::observe::QueuedJob],
        engine: Option<&crate::scaleset::EngineStatus>,
        now: std::time::SystemTime,
    ) -> Self {
        if let Some(name) = &pool.scale_set {
            let engine = engine.cloned().unwrap_or_default();
            return PoolStatus {
                name: pool.name.clone(),
                repo_url: pool.spec.repo.url.clone(),
                engine: "scaleset".into(),
                queued: usize::try_from(engine.waiting_jobs()).unwrap_or(usize::MAX),
                queued_longest_seconds: None,
                queued_too_long: 0,
                queued_alert_after_seconds: pool.queued_alert_after.as_secs(),
                waiting_jobs: Vec::new(),
                scale_set: Some(ScaleSetStatus {
                    name: name.clone(),
                    engine,
                }),
            };
        }
        let waited = |j: &crate::observe::QueuedJob| {
            j.queued_at
                .map(|at| now.duration_since(at).unwrap_or_default())
        };
        let mut late: Vec<(std::time::Duration, u64)> = jobs
            .iter()
            .filter_map(|j| Some((waited(j)?, j.id)))
            .filter(|(w, _)| *w > pool.queued_alert_after)
            .collect();
        late.sort_by(|a, b| b.cmp(a));
        PoolStatus {
            name: pool.name.clone(),
            repo_url: pool.spec.repo.url.clone(),
            engine: "rest".into(),
            queued: jobs.len(),
            queued_longest_seconds: jobs.iter().filter_map(waited).max().map(|d| d.as_secs()),
            queued_too_long: late.len(),
            queued_alert_after_seconds: pool.queued_alert_after.as_secs(),
            waiting_jobs: late.iter().take(10).map(|(_, id)| *id).collect(),
            scale_set: None,
        }
    }
}

/// `source` in status: the revision in force and why a newer one is not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceStatus {
    /// Repository URL.
    pub url: String,
    /// Branch, tag or commit followed.
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// The file inside the repository.
    pub path: String,
    /// The 40-hex commit in force; `null` before the first good fetch.
    pub revision: Option<String>,
    /// When the last fetch ended (RFC 3339, UTC).
    pub fetched_at: Option<String>,
    /// Why the newest fetched commit is not in force (naming it), or why fetching fails.
    pub error: Option<String>,
}

/// What is left of corral's GitHub API budget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitHubStatus {
    /// The rate limit as GitHub last reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<crate::github::RateBudget>,
    /// Until when corral sends nothing, having been rate-limited (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_until: Option<String>,
}

/// What corral does about a runner's failed step (`last_error_kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// GitHub's rate limit: tried again at its reset (`retry_at`), not before.
    RateLimited,
    /// A cause that passes (5xx, a timeout, a full disk): backed off 1 s doubling to 1 min.
    Transient,
    /// Retrying cannot help until something changes (bad credentials, no such repository,
    /// a config the step cannot use): tried again after a minute or at once after an edit.
    Permanent,
}

/// A runner's life-cycle state as shown to users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Its directory is being built.
    Provisioning,
    /// Registration is under way or being retried.
    Registering,
    /// Started, not yet listening.
    Starting,
    /// Online, no job.
    Idle,
    /// Running a job.
    Busy,
    /// Removed from the file; waiting for its job before it goes.
    Draining,
    /// Waiting before the next restart.
    Backoff,
    /// Restarted again and again.
    Crashloop,
    /// Something corral cannot fix by itself; see `last_error`.
    Error,
    /// Not running.
    Stopped,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = format!("{self:?}").to_lowercase();
        f.write_str(&text)
    }
}

/// One runner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerStatus {
    /// Runner name.
    pub name: String,
    /// Repository URL.
    pub repo_url: String,
    /// `running` or `stopped` (the original project's `GET /runners` field).
    pub status: String,
    /// Listener pid when running.
    pub pid: Option<i32>,
    /// Life-cycle state.
    pub state: State,
    /// Running a job now.
    #[serde(default)]
    pub busy: bool,
    /// The job it runs now.
    pub job: Option<String>,
    /// When that job started (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_started_at: Option<String>,
    /// How its last job ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_job: Option<crate::markers::JobEnd>,
    /// Its custom labels (with corral's marker).
    #[serde(default)]
    pub labels: Vec<String>,
    /// The runner version its listener reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Disk it holds alone and shares with the base (measured once per resync interval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<crate::provision::DiskUsage>,
    /// When its listener started (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// Restarts after unexpected exits.
    pub restarts: u32,
    /// The listener's last exit code (`null` when killed by a signal or never exited).
    pub last_exit_code: Option<i32>,
    /// `registered`, `unregistered`, or `local-only` (no API credential to manage it on GitHub).
    pub registration: String,
    /// The last error, in corral's or the runner's own words.
    pub last_error: Option<String>,
    /// What corral does about `last_error` when a step of its own failed (absent for a
    /// listener's exit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_kind: Option<ErrorKind>,
    /// When that step is tried again (RFC 3339, UTC), while it is held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<String>,
    /// Its Docker socket and what was refused and reaped there (`docker.enabled`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<crate::docker::Counters>,
    /// Its cgroup's path, or `degraded (reason)` when it has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// What becomes of what its jobs leave running: `after every job`, `at removal`
    /// (`leftovers: keep`), or `degraded (reason)` (its session and own user only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleanup: Option<String>,
    /// What its cgroup used (its jobs included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<crate::cgroup::Usage>,
    /// Limits of `resources` that are not in force, each with the reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub limits_not_applied: Vec<String>,
    /// Processes its jobs left running that corral killed after them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub leftovers_killed: u64,
}

#[allow(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if signature"
)]
fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Writes `status` to `path` atomically (a temporary file renamed over it).
pub fn write(path: &Path, status: &Status) -> std::io::Result<()> {
    // One write: serde_json writes token by token, a syscall each on an unbuffered file
    // (some 29,000 for 200 runners).
    let mut bytes = serde_json::to_vec_pretty(status)?;
    bytes.push(b'\n');
    // Root's alone (0600): it names every runner's jobs and errors.
    crate::layout::write_private(path, &path.with_extension("json.tmp"), &bytes, true)
}

/// Reads the status file.
pub fn read(path: &Path) -> std::io::Result<Status> {
    let bytes = std::fs::read(path)?;
    serde_json::from_slice(&bytes).map_err(std::io::Error::other)
}

/// One table row: name, state, pid, job, restarts, last exit, uptime, version, disk, repo.
fn row(r: &RunnerStatus, now: std::time::SystemTime) -> [String; 10] {
    let dash = || "-".to_string();
    let uptime = r
        .started_at
        .as_deref()
        .and_then(|t| humantime::parse_rfc3339(t).ok())
        .and_then(|t| now.duration_since(t).ok())
        .map_or_else(dash, |d| {
            humantime::format_duration(std::time::Duration::from_secs(d.as_secs())).to_string()
        });
    let disk = r
        .disk
        .map_or_else(dash, |d| format!("{} KiB", d.unique_bytes.div_ceil(1024)));
    [
        r.name.clone(),
        r.state.to_string(),
        r.pid.map_or_else(dash, |p| p.to_string()),
        r.job.clone().unwrap_or_else(dash),
        r.restarts.to_string(),
        r.last_exit_code.map_or_else(dash, |c| c.to_string()),
        uptime,
        r.version.clone().unwrap_or_else(dash),
        disk,
        r.repo_url.clone(),
    ]
}

/// `corral status` as an aligned table.
pub fn write_table(status: &Status, out: &mut dyn Write) -> std::io::Result<()> {
    write_notices(status, out)?;
    write_runner_rows(&status.runners, out)?;
    for r in status.runners.iter().filter(|r| r.last_error.is_some()) {
        writeln!(
            out,
            "{}: {}",
            r.name,
            r.last_error.as_deref().unwrap_or_default()
        )?;
    }
    if !status.not_created.is_empty() {
        writeln!(
            out,
            "not created (max_runners reached): {}",
            status.not_created.join(", ")
        )?;
    }
    for p in &status.pools {
        pool_line(p, out)?;
    }
    writeln!(out, "updated {}", status.updated_at)
}

/// The lines above the table: a refused config, the source, the GitHub API budget.
fn write_notices(status: &Status, out: &mut dyn Write) -> std::io::Result<()> {
    if let Some(err) = &status.config_error {
        writeln!(out, "config error (last good config still in force): {err}")?;
    }
    if let Some(src) = &status.source {
        writeln!(
            out,
            "source: {} {} {} at {}",
            src.url,
            src.git_ref,
            src.path,
            src.revision.as_deref().unwrap_or("(no revision yet)")
        )?;
        if let Some(err) = &src.error {
            writeln!(out, "source error (revision above still in force): {err}")?;
        }
    }
    if let Some(budget) = status.github.as_ref().and_then(|g| g.rate_limit.as_ref()) {
        writeln!(
            out,
            "GitHub API: {}/{} requests left",
            budget.remaining, budget.limit
        )?;
    }
    if let Some(until) = status
        .github
        .as_ref()
        .and_then(|g| g.blocked_until.as_ref())
    {
        writeln!(
            out,
            "GitHub API: rate-limited, sending nothing until {until}"
        )?;
    }
    Ok(())
}

/// The table itself: a header and a row per runner, in aligned columns.
fn write_runner_rows(runners: &[RunnerStatus], out: &mut dyn Write) -> std::io::Result<()> {
    let now = std::time::SystemTime::now();
    let rows: Vec<[String; 10]> = runners.iter().map(|r| row(r, now)).collect();
    let header = [
        "NAME",
        "STATE",
        "PID",
        "JOB",
        "RESTARTS",
        "LAST-EXIT",
        "UPTIME",
        "VERSION",
        "DISK",
        "REPO",
    ]
    .map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        writeln!(out, "{}", line.join("  ").trim_end())?;
    }
    Ok(())
}

/// One line about pool `p`: its queue and, for a scale-set pool, its session.
fn pool_line(p: &PoolStatus, out: &mut dyn Write) -> std::io::Result<()> {
    write!(
        out,
        "pool {} ({}, {}): {} queued",
        p.name, p.repo_url, p.engine, p.queued
    )?;
    if let Some(longest) = p.queued_longest_seconds {
        write!(out, ", oldest waiting {longest}s")?;
    }
    if p.queued_too_long > 0 {
        write!(
            out,
            ", {} waiting longer than {}s",
            p.queued_too_long, p.queued_alert_after_seconds
        )?;
    }
    if let Some(set) = &p.scale_set {
        let session = serde_json::to_value(set.engine.session).unwrap_or_default();
        write!(
            out,
            "; scale set {} (session {}",
            set.name,
            session.as_str().unwrap_or("?")
        )?;
        if let (Some(at), Some(what)) = (&set.engine.last_message_at, &set.engine.last_message) {
            write!(
                out,
                ", last message {} at {at}: {what}",
                set.engine.last_message_id
            )?;
        }
        write!(out, ")")?;
        if let Some(err) = &set.engine.error {
            write!(out, ": {err}")?;
        }
    }
    writeln!(out)?;
    Ok(())
}
