//! Registers a runner with the runner's own `config.sh` (`reference/runner-contract.md` §3),
//! and turns a JIT configuration into the same identity files.
//!
//! `config.sh` runs in a private install of its own (`registrations/<name>`, root's alone) as
//! corral's user, never in the runner's directory as the runner's user: the token goes in
//! `ACTIONS_RUNNER_INPUT_TOKEN`, and a process's environment (`/proc/<pid>/environ`) is
//! readable by its own user, so only a process of another user keeps it from the runner's
//! jobs. The runner's directory gets the identity files `config.sh` wrote there, from corral.
//! Deregistration needs no token at all: corral deletes the registration through the API by
//! the id it recorded (`controller::github_steps`).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;

use crate::config::RunnerSpec;
use crate::process::{runner_command, RunAs};
use crate::provision::Beneath;
use crate::secret::Secret;

/// The files a registration leaves (`reference/runner-contract.md` §2.4, §7).
const IDENTITY_FILES: [&str; 3] = [".runner", ".credentials", ".credentials_rsaparams"];

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
        /// `configure`.
        command: &'static str,
        /// Exit code (-1 when killed by a signal).
        code: i32,
        /// The last lines the runner printed.
        output: String,
    },
    /// It succeeded but left no usable identity files.
    #[error("config.sh configure left no usable `{file}`: {why}")]
    NoIdentity {
        /// The missing or unreadable file.
        file: &'static str,
        /// Why.
        why: String,
    },
    /// A JIT configuration that is not what GitHub hands out.
    #[error("the JIT configuration cannot be used: {0}")]
    BadJit(String),
    /// Another live registration holds the name (another host's, in a fleet): `--replace`
    /// would take it from a running listener. Retried until its owner drains it.
    #[error("a registration named `{name}` (id {id}) is {state} on GitHub and not this runner's; waiting for its owner to remove it")]
    HeldElsewhere {
        /// The runner name.
        name: String,
        /// The registration's id.
        id: u64,
        /// `online` or `busy`.
        state: &'static str,
    },
    /// GitHub could not be asked who holds the name.
    #[error("look up the registration of this name")]
    Lookup(#[source] crate::github::GitHubError),
}

/// Refuses to register `spec` while another registration of its name is online or busy:
/// `config.sh --replace` would delete it under a running listener (a fleet's entry moved to
/// this host before the old host drained it). `ours` is the id this host recorded, which
/// may be replaced (its own listener is gone or about to be).
pub async fn refuse_live_elsewhere(
    gh: &crate::github::GitHubClient,
    spec: &RunnerSpec,
    ours: Option<u64>,
) -> Result<(), RegistrationError> {
    let found = gh
        .find_runner(&spec.repo, &spec.name)
        .await
        .map_err(RegistrationError::Lookup)?;
    match found {
        Some(r) if Some(r.id) != ours && (r.busy || r.status == "online") => {
            Err(RegistrationError::HeldElsewhere {
                name: spec.name.clone(),
                id: r.id,
                state: if r.busy { "busy" } else { "online" },
            })
        }
        _ => Ok(()),
    }
}

/// A runner's identity as its registration left it: the files it runs with and the id
/// GitHub gave the registration. The file contents are credentials, never printed.
pub struct Identity {
    /// `(file name, bytes)`: `.runner`, `.credentials`, `.credentials_rsaparams`.
    pub files: Vec<(String, Vec<u8>)>,
    /// The registration's id on GitHub (`agentId` of `.runner`), when it says.
    pub runner_id: Option<u64>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.files.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Identity")
            .field("files", &names)
            .field("runner_id", &self.runner_id)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// The files of a JIT configuration (base64 of a JSON map from file name to base64
    /// content, runner-contract §7), as the listener would write them; only the three
    /// identity files are accepted.
    pub fn from_jit(encoded: &Secret) -> Result<Identity, RegistrationError> {
        let engine = base64::engine::general_purpose::STANDARD;
        let bad = |why: &str| RegistrationError::BadJit(why.to_owned());
        let json = engine
            .decode(encoded.expose().trim())
            .map_err(|_| bad("not base64"))?;
        let map: std::collections::BTreeMap<String, String> =
            serde_json::from_slice(&json).map_err(|_| bad("not a JSON map of files"))?;
        let mut files = Vec::new();
        for (name, content) in map {
            if !IDENTITY_FILES.contains(&name.as_str()) {
                return Err(RegistrationError::BadJit(format!(
                    "it names a file `{}` that is no identity file",
                    name.escape_debug()
                )));
            }
            let bytes = engine
                .decode(content.trim())
                .map_err(|_| bad("a file is not base64"))?;
            files.push((name, bytes));
        }
        if !files.iter().any(|(n, _)| n == ".runner") {
            return Err(bad("it has no `.runner`"));
        }
        let runner_id = files
            .iter()
            .find(|(n, _)| n == ".runner")
            .and_then(|(_, b)| agent_id(b));
        Ok(Identity { files, runner_id })
    }

    /// The identity files `config.sh` left in the private install `staging`.
    fn read_from(staging: &Path) -> Result<Identity, RegistrationError> {
        let dir = Beneath::open(staging).map_err(|e| RegistrationError::NoIdentity {
            file: ".runner",
            why: e.to_string(),
        })?;
        let mut files = Vec::new();
        for file in IDENTITY_FILES {
            let bytes = dir
                .read(file)
                .map_err(|e| e.to_string())
                .and_then(|b| b.ok_or_else(|| "missing".to_owned()))
                .map_err(|why| RegistrationError::NoIdentity { file, why })?;
            files.push((file.to_owned(), bytes));
        }
        let runner_id = agent_id(&files[0].1);
        Ok(Identity { files, runner_id })
    }
}

/// `agentId` of a `.runner` file (JSON, maybe with a BOM; keys read case-insensitively as
/// the runner does).
fn agent_id(runner: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(runner).ok()?;
    let value: serde_json::Value =
        serde_json::from_str(text.trim_start_matches('\u{feff}')).ok()?;
    let (_, id) = value
        .as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("agentId"))?;
    id.as_u64().or_else(|| id.as_str()?.parse().ok())
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

/// Runs `config.sh` (configure) with `token` in the private install `staging` (built by
/// `Provisioner::stage_registration`), as corral's own user; returns the identity it wrote.
pub async fn configure(
    spec: &RunnerSpec,
    staging: &Path,
    token: &Secret,
) -> Result<Identity, RegistrationError> {
    run_config_sh(spec, staging, token, "configure", &configure_args(spec)).await?;
    Identity::read_from(staging)
}

async fn run_config_sh(
    spec: &RunnerSpec,
    root: &Path,
    token: &Secret,
    command: &'static str,
    args: &[String],
) -> Result<(), RegistrationError> {
    let script = root.join("config.sh");
    // As root, `config.sh` needs to be told that is fine (runner-contract §3, §8).
    let as_root = nix::unistd::geteuid().is_root();
    let mut cmd = runner_command(&script, root, &spec.env, RunAs::Inherit, as_root, root);
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
