//! Registers and removes a runner with the runner's own `config.sh`
//! (`reference/runner-contract.md` §3). The token goes in `ACTIONS_RUNNER_INPUT_TOKEN`,
//! which the runner reads and removes from its environment: never in argv.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::config::RunnerSpec;
use crate::process::{runner_command, RunAs};
use crate::secret::Secret;

/// How long `config.sh` may take before corral gives up on it.
const CONFIG_TIMEOUT: Duration = Duration::from_secs(300);

/// Why `config.sh` failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    /// It could not be started.
    #[error("cannot run `{}`", path.display())]
    Spawn {
        /// The script.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It ran longer than allowed and was killed.
    #[error("config.sh {0} did not finish within {CONFIG_TIMEOUT:?}")]
    Timeout(&'static str),
    /// It failed; `output` is the runner's own error text.
    #[error("config.sh {command} exited with {code}: {output}")]
    Failed {
        /// `configure` or `remove`.
        command: &'static str,
        /// Exit code (-1 when killed by a signal).
        code: i32,
        /// The last lines the runner printed.
        output: String,
    },
}

impl RegistrationError {
    /// True when GitHub refused to remove the runner because it runs a job.
    pub fn is_busy(&self) -> bool {
        matches!(self, RegistrationError::Failed { output, .. } if output.contains("still running a job"))
    }
}

/// The `config.sh` arguments for `spec`; nothing secret.
pub fn configure_args(spec: &RunnerSpec) -> Vec<String> {
    let mut args: Vec<String> = [
        "--unattended",
        "--url",
        &spec.repo.url,
        "--name",
        &spec.name,
        "--work",
        "_work",
        "--replace",
        "--disableupdate",
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    let labels = spec.registered_labels();
    if !labels.is_empty() {
        args.push("--labels".into());
        args.push(labels.join(","));
    }
    if spec.ephemeral {
        args.push("--ephemeral".into());
    }
    if spec.no_default_labels {
        args.push("--no-default-labels".into());
    }
    args
}

/// Runs `config.sh` (configure) in `root` with `token`.
pub async fn configure(
    spec: &RunnerSpec,
    root: &Path,
    token: &Secret,
    run_as: RunAs,
) -> Result<(), RegistrationError> {
    run_config_sh(
        spec,
        root,
        token,
        run_as,
        "configure",
        &configure_args(spec),
    )
    .await
}

/// Runs `config.sh remove` in `root` with a removal `token`. Deletes the registration on
/// GitHub (refused while a job runs) and the runner's local identity files.
pub async fn remove(
    spec: &RunnerSpec,
    root: &Path,
    token: &Secret,
    run_as: RunAs,
) -> Result<(), RegistrationError> {
    run_config_sh(spec, root, token, run_as, "remove", &["remove".to_string()]).await
}

async fn run_config_sh(
    spec: &RunnerSpec,
    root: &Path,
    token: &Secret,
    run_as: RunAs,
    command: &'static str,
    args: &[String],
) -> Result<(), RegistrationError> {
    let script = root.join("config.sh");
    let mut cmd = runner_command(&script, root, &spec.env, run_as, spec.allow_root, root);
    cmd.args(args)
        .env("ACTIONS_RUNNER_INPUT_TOKEN", token.expose())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(|source| RegistrationError::Spawn {
        path: script.clone(),
        source,
    })?;
    let output = tokio::time::timeout(CONFIG_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| RegistrationError::Timeout(command))?
        .map_err(|source| RegistrationError::Spawn {
            path: script,
            source,
        })?;
    if output.status.success() {
        return Ok(());
    }
    Err(RegistrationError::Failed {
        command,
        code: output.status.code().unwrap_or(-1),
        output: last_lines(&output.stderr, &output.stdout),
    })
}

/// The runner's error text: stderr's last lines, else stdout's, without blank lines.
fn last_lines(stderr: &[u8], stdout: &[u8]) -> String {
    let pick = if stderr.iter().any(|b| !b.is_ascii_whitespace()) {
        stderr
    } else {
        stdout
    };
    let text = String::from_utf8_lossy(pick);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(3)..].join(" / ")
}
