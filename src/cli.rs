//! The command line (DESIGN.md §2): argument types and the commands that need no daemon.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand, ValueEnum};

use crate::config;
use crate::layout::StateLayout;
use crate::observe;
use crate::plan_view::{Fetch, PlanSource, PlanView};
use crate::reconcile;

/// corral keeps a host's GitHub Actions runners equal to runners.yaml.
#[derive(Debug, Parser)]
#[command(name = "corral", version, about)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The `-c/--config` option every config-reading command takes.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArg {
    /// The runners file.
    #[arg(
        short,
        long = "config",
        env = "CORRAL_CONFIG",
        default_value = "runners.yaml"
    )]
    pub config: PathBuf,
    /// This host's id, matched against entries' `hosts` (default: the hostname).
    #[arg(long, env = "CORRAL_HOST_ID", value_name = "ID")]
    pub host_id: Option<String>,
}

impl ConfigArg {
    /// The host id in force: `--host-id`, else the hostname.
    pub fn host_id(&self) -> String {
        self.host_id.clone().unwrap_or_else(config::default_host_id)
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the config file; exit 0, or 1 with every error listed.
    Check {
        #[command(flatten)]
        config: ConfigArg,
        /// The file to check (same as -c).
        #[arg(value_name = "FILE", conflicts_with = "config")]
        file: Option<PathBuf>,
    },
    /// Show what `corral run` would do now, without doing it.
    Plan {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        options: PlanOptions,
    },
    /// Run the controller in the foreground until SIGTERM or SIGINT.
    Run {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Show every runner: state, pid, job, restarts, last exit, registration.
    Status {
        #[command(flatten)]
        config: ConfigArg,
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a runner's listener log.
    Logs {
        #[command(flatten)]
        config: ConfigArg,
        /// The runner.
        runner: String,
        /// Keep printing what is appended (until interrupted).
        #[arg(short, long)]
        follow: bool,
    },
    /// Print the JSON Schema of runners.yaml.
    Schema,
    /// Install, list, verify and prune runner releases under `<state_dir>/bases`.
    Base {
        #[command(subcommand)]
        command: BaseCommand,
    },
}

/// `corral base …`: the runner releases corral keeps (DESIGN.md §3).
#[derive(Debug, Subcommand)]
pub enum BaseCommand {
    /// Download, verify and install a runner release (`2.329.0` or `latest`).
    Install {
        #[command(flatten)]
        config: ConfigArg,
        /// The release: `2.329.0` or `latest`.
        version: String,
    },
    /// List installed releases and their sizes.
    List {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Check installed releases against their manifests; exit 1 if any differs.
    Verify {
        #[command(flatten)]
        config: ConfigArg,
        /// One release; all installed ones when omitted.
        version: Option<String>,
    },
    /// Remove installed releases that are neither configured nor used by a runner.
    Prune {
        #[command(flatten)]
        config: ConfigArg,
    },
}

/// Exit status of a command that ran to the end: 0 fine, 1 the input was refused.
pub type ExitStatus = u8;

/// `corral check`: prints a summary for host `host`, or every error to `err`.
pub fn check(
    path: &Path,
    host: &str,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<ExitStatus> {
    if let Err(message) = config::check_host_id(host) {
        writeln!(err, "--host-id: {message}")?;
        return Ok(1);
    }
    match config::load_on(path, host) {
        Ok(desired) => {
            let n = desired.runners.len();
            write!(
                out,
                "{}: ok, {n} runner{}",
                path.display(),
                if n == 1 { "" } else { "s" }
            )?;
            if !desired.pools.is_empty() {
                let slots: usize = desired.pools.iter().map(|p| p.slots.len()).sum();
                write!(
                    out,
                    " and {} scaled set(s) of up to {slots}",
                    desired.pools.len()
                )?;
            }
            writeln!(out, " on host {host}")?;
            write_left_out(&desired, out)?;
            write_containment(&desired, out)?;
            Ok(0)
        }
        Err(errors) => {
            writeln!(err, "{errors}")?;
            let n = errors.len();
            writeln!(
                err,
                "{}: {n} error{}",
                path.display(),
                if n == 1 { "" } else { "s" }
            )?;
            Ok(1)
        }
    }
}

/// What this host leaves out of the file: entries for other hosts, instances past `max_runners`.
fn write_left_out(desired: &config::Desired, out: &mut dyn Write) -> std::io::Result<()> {
    if !desired.elsewhere.is_empty() {
        writeln!(
            out,
            "left alone on host {} (not in their hosts): {}",
            desired.host_id,
            desired.elsewhere.join(", ")
        )?;
    }
    if let (Some(max), false) = (desired.max_runners, desired.capped.is_empty()) {
        writeln!(
            out,
            "not created (max_runners: {max}): {}",
            desired.capped.join(", ")
        )?;
    }
    Ok(())
}

/// What this host cannot give the runners: cgroups (then clean-up is degraded), or the
/// controllers some `resources` need, each with the reason (issue 22).
fn write_containment(desired: &config::Desired, out: &mut dyn Write) -> std::io::Result<()> {
    let root = std::env::var_os(crate::cgroup::ROOT_ENV).map(std::path::PathBuf::from);
    let host = crate::cgroup::Host::detect();
    let assessed = crate::cgroup::assess(&host, &desired.state_dir, root.as_deref());
    let limited: Vec<(String, &config::RunnerSpec)> = desired
        .runners
        .values()
        .map(|s| (s.name.clone(), s))
        .chain(desired.pools.iter().map(|p| (p.slots.join(", "), &p.spec)))
        .filter(|(_, s)| !s.resources.is_empty())
        .collect();
    if let Err(reason) = &assessed.tree {
        writeln!(
            out,
            "cleanup: degraded ({reason}): what jobs leave is found by the listener's session (and a runner's own user) only"
        )?;
        if !limited.is_empty() {
            writeln!(
                out,
                "resources not applied on this host (no cgroups): {}",
                names(&limited)
            )?;
        }
        return Ok(());
    }
    for (controller, reason) in &assessed.missing {
        let wanting: Vec<(String, &config::RunnerSpec)> = limited
            .iter()
            .filter(|(_, s)| s.resources.controllers().contains(controller))
            .cloned()
            .collect();
        if !wanting.is_empty() {
            writeln!(
                out,
                "resources.{controller} not applied on this host for {}: {reason}",
                names(&wanting)
            )?;
        }
    }
    Ok(())
}

fn names(specs: &[(String, &config::RunnerSpec)]) -> String {
    specs
        .iter()
        .map(|(name, _)| name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The desired state, or `None` after printing every error to `err`.
fn load_or_report(path: &Path, err: &mut dyn Write) -> std::io::Result<Option<config::Desired>> {
    load_or_report_on(path, &config::default_host_id(), err)
}

/// [`load_or_report`] for host `host`.
fn load_or_report_on(
    path: &Path,
    host: &str,
    err: &mut dyn Write,
) -> std::io::Result<Option<config::Desired>> {
    if let Err(message) = config::check_host_id(host) {
        writeln!(err, "--host-id: {message}")?;
        return Ok(None);
    }
    match config::load_on(path, host) {
        Ok(desired) => Ok(Some(desired)),
        Err(errors) => {
            writeln!(err, "{errors}")?;
            Ok(None)
        }
    }
}

/// `corral plan`'s options.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct PlanOptions {
    /// Print the plan as JSON (the schema is in the README).
    #[arg(long)]
    pub json: bool,
    /// Exit 0 when nothing would change, 2 when something would (1 is an error).
    #[arg(long)]
    pub detailed_exitcode: bool,
}

/// `corral plan`: one line per runner of host `host` with what would change and why, the
/// releases to fetch first and a summary; then what the file has that this host leaves out.
/// Coloured when stdout is a terminal and `NO_COLOR` is not set.
pub fn plan(
    path: &Path,
    host: &str,
    options: PlanOptions,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<ExitStatus> {
    let Some(desired) = load_or_report_on(path, host, err)? else {
        return Ok(1);
    };
    let observed = observe::observe(&StateLayout::new(&desired.state_dir));
    // Pools as they would be without queued jobs: `plan` does not ask GitHub.
    let desired = crate::scale::effective(&desired, &observed);
    let actions = reconcile::plan(&desired, &observed);
    let wanted = desired.runners.keys().cloned().collect();
    let mut view = PlanView::new(&actions, &wanted, releases_to_fetch(&desired));
    view.source = desired.source.as_ref().map(|src| PlanSource {
        url: src.url.clone(),
        git_ref: src.git_ref.clone(),
        path: src.path.clone(),
        revision: src.revision.clone(),
    });
    if options.json {
        serde_json::to_writer_pretty(&mut *out, &view)?;
        writeln!(out)?;
    } else {
        let colour = std::io::stdout().is_terminal()
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        out.write_all(view.text(colour).as_bytes())?;
        write_left_out(&desired, out)?;
        write_containment(&desired, out)?;
        if let Some(src) = &desired.source {
            // `plan` does not fetch: it plans the revision kept under state_dir.
            writeln!(
                out,
                "source: {} {} {} at {}",
                src.url,
                src.git_ref,
                src.path,
                src.revision
                    .as_deref()
                    .unwrap_or("(no revision fetched yet: no runners)")
            )?;
        }
    }
    Ok(if options.detailed_exitcode && view.changes() {
        2
    } else {
        0
    })
}

/// The pinned releases the file names that are not installed under `<state_dir>/bases`.
fn releases_to_fetch(desired: &config::Desired) -> Vec<Fetch> {
    let mut versions = std::collections::BTreeSet::new();
    if let config::BaseSource::Version { version, .. } = &desired.base {
        versions.insert(version.clone());
    }
    versions.extend(desired.runners.values().filter_map(|r| r.version.clone()));
    let bases = desired.state_dir.join("bases");
    versions
        .into_iter()
        .filter(|v| v != "latest" && !bases.join(v).is_dir())
        .map(|version| Fetch {
            url: desired
                .download_url
                .replace("{version}", &version)
                .replace("{arch}", crate::bases::runner_arch().unwrap_or("{arch}")),
            version,
        })
        .collect()
}

/// `corral status`: the controller's last `status.json`, as a table or JSON.
pub fn status(
    path: &Path,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<ExitStatus> {
    let (state_dir, api) = match config::load(path) {
        Ok(desired) => (desired.state_dir, desired.api),
        Err(errors) => {
            writeln!(err, "{errors}")?;
            // An invalid edit leaves the controller running on the last good file; its
            // status says so. Find it where the file still says it is.
            let Some(found) = config::status_locations(path) else {
                return Ok(1);
            };
            writeln!(
                err,
                "{}: showing the running controller's status",
                path.display()
            )?;
            found
        }
    };
    let live = api.as_ref().and_then(|api| match live_status(api) {
        Ok(status) => Some(status),
        Err(e) => {
            let _ = writeln!(
                err,
                "status API at {} did not answer ({e}); reading status.json",
                api.listen
            );
            None
        }
    });
    let file = StateLayout::new(&state_dir).status_file();
    let status = match live.map_or_else(|| crate::status::read(&file), Ok) {
        Ok(status) => status,
        Err(e) => {
            writeln!(
                err,
                "{}: no status yet ({e}); is `corral run` running?",
                file.display()
            )?;
            return Ok(1);
        }
    };
    if json {
        serde_json::to_writer_pretty(&mut *out, &status)?;
        writeln!(out)?;
    } else {
        crate::status::write_table(&status, out)?;
    }
    Ok(0)
}

/// The controller's status from its live API (`GET /status`).
fn live_status(api: &config::Api) -> Result<crate::status::Status, String> {
    let token = api
        .token
        .as_ref()
        .map(crate::secret::read)
        .transpose()
        .map_err(|e| e.to_string())?;
    // An API listening on every address is reached through loopback.
    let mut addr = api.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(5))
            .build()
            .map_err(|e| e.to_string())?;
        let mut request = client.get(format!("http://{addr}/status"));
        if let Some(token) = &token {
            request = request.bearer_auth(token.expose());
        }
        let response = request
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        response
            .json()
            .await
            .map_err(|e| e.without_url().to_string())
    })
}

/// `corral logs`: a runner's listener log, and with `follow` what is appended to it.
pub fn logs(
    path: &Path,
    runner: &str,
    follow: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<ExitStatus> {
    let Some(desired) = load_or_report(path, err)? else {
        return Ok(1);
    };
    let log = StateLayout::new(&desired.state_dir).listener_log(runner);
    let mut offset = match std::fs::read(&log) {
        Ok(bytes) => {
            out.write_all(&bytes)?;
            bytes.len() as u64
        }
        Err(e) => {
            writeln!(
                err,
                "{}: no listener log for runner `{runner}` ({e})",
                log.display()
            )?;
            return Ok(1);
        }
    };
    if follow {
        loop {
            out.flush()?;
            std::thread::sleep(std::time::Duration::from_millis(200));
            offset = copy_new(&log, offset, out)?;
        }
    }
    Ok(0)
}

/// Writes what `log` gained past `offset`; a log that was capped starts again from 0.
fn copy_new(log: &Path, offset: u64, out: &mut dyn Write) -> std::io::Result<u64> {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = std::fs::File::open(log) else {
        return Ok(offset);
    };
    let len = file.metadata()?.len();
    let from = if len < offset { 0 } else { offset };
    file.seek(SeekFrom::Start(from))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    out.write_all(&bytes)?;
    Ok(from + bytes.len() as u64)
}

/// `corral schema`.
pub fn schema(out: &mut dyn Write) -> std::io::Result<ExitStatus> {
    writeln!(out, "{}", config::schema_json())?;
    Ok(0)
}
