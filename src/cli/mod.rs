//! The command line (DESIGN.md §2): argument types and the commands that need no daemon.

//!
//! Here the arguments; each command is in a file of its own: `check` (and `schema`), `plan`,
//! `status` (and `logs`).

mod check;
mod plan;
mod status;

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand, ValueEnum};

pub use check::{check, schema};
pub use plan::{plan, PlanOptions};
pub use status::{logs, status};

use crate::config;

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

/// The desired state, or `None` after printing every error to `err`.
pub(super) fn load_or_report(
    path: &Path,
    err: &mut dyn Write,
) -> std::io::Result<Option<config::Desired>> {
    load_or_report_on(path, &config::default_host_id(), err)
}

/// [`load_or_report`] for host `host`.
pub(super) fn load_or_report_on(
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
