//! The `git` child process: its environment, its credentials, and running it under a deadline.

use std::path::Path;
use std::time::Duration;

use tokio::process::Command;

use super::GitSourceError;
use crate::config::{GitCredential, GitSource, TokenSource};

/// What git keeps of corral's environment: `HOME` (where git and the tools it runs look for
/// their files), proxies, CA bundles, the ssh agent.
const PASSED_THROUGH: [&str; 15] = [
    "HOME",
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "GIT_SSL_CAINFO",
    "GIT_SSL_CAPATH",
    "CURL_CA_BUNDLE",
    "SSH_AUTH_SOCK",
];

const ASKPASS: &str = "#!/bin/sh\n\
# Written by corral: hands git the source token; holds no secret itself.\n\
case \"$1\" in\n\
Username*) printf '%s\\n' x-access-token ;;\n\
*) if [ -n \"$CORRAL_GIT_TOKEN_FILE\" ]; then cat \"$CORRAL_GIT_TOKEN_FILE\"; else printf '%s\\n' \"$CORRAL_GIT_TOKEN\"; fi ;;\n\
esac\n";

/// A git command with a cleared environment and the source's credential wired in.
pub(super) fn git(source: &GitSource, dir: &Path) -> Result<Command, GitSourceError> {
    let mut cmd = Command::new("git");
    cmd.env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
        )
        .env("LC_ALL", "C")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_ASKPASS", "/bin/false")
        .env("SSH_ASKPASS", "/bin/false")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    for name in PASSED_THROUGH {
        if let Some(value) = std::env::var_os(name) {
            cmd.env(name, value);
        }
    }
    // An ssh key is named in the ssh config below.
    if let Some(GitCredential::Token(token)) = &source.credential {
        let askpass = dir.join("askpass");
        write_if_changed(&askpass, ASKPASS, 0o700)?;
        cmd.env("GIT_ASKPASS", &askpass);
        match token {
            TokenSource::Env(name) => {
                let value =
                    std::env::var(name).map_err(|_| GitSourceError::TokenEnvUnset(name.clone()))?;
                cmd.env("CORRAL_GIT_TOKEN", value.trim());
            }
            TokenSource::File(path) => {
                cmd.env("CORRAL_GIT_TOKEN_FILE", path);
            }
        }
    }
    if source.url.starts_with("ssh://") {
        let config = dir.join("ssh_config");
        write_if_changed(&config, &ssh_config(source)?, 0o600)?;
        cmd.env("GIT_SSH_VARIANT", "ssh").env(
            "GIT_SSH_COMMAND",
            format!("ssh -F {}", shell_quote(&config.to_string_lossy())),
        );
    }
    Ok(cmd)
}

/// The ssh client config of an `ssh://` source. The key and `known_hosts` paths go in this
/// file, not on ssh's command line (`-i`), so no process's argv shows where the key is.
/// Settings here come first, so they win over the user's and the system's config, which
/// are included after them (first value wins in `ssh_config`).
fn ssh_config(source: &GitSource) -> Result<String, GitSourceError> {
    use std::fmt::Write as _;
    let quoted = |path: &Path, field: &'static str| {
        let text = path.to_string_lossy();
        if text.contains(['"', '\n', '\r']) {
            return Err(GitSourceError::UnquotablePath {
                field,
                path: text.into_owned(),
            });
        }
        // `%` starts a token in these ssh_config values.
        Ok(format!("\"{}\"", text.replace('%', "%%")))
    };
    let mut text = String::from(
        "# Written by corral for source.git: ssh's settings; holds no secret.\n\
         Host *\n  BatchMode yes\n",
    );
    if let Some(GitCredential::SshKey(key)) = &source.credential {
        let _ = writeln!(
            text,
            "  IdentityFile {}\n  IdentitiesOnly yes",
            quoted(key, "ssh_key_file")?
        );
    }
    if let Some(known) = &source.known_hosts {
        let _ = writeln!(
            text,
            "  UserKnownHostsFile {}",
            quoted(known, "known_hosts_file")?
        );
    }
    text.push_str("  Include ~/.ssh/config\n  Include /etc/ssh/ssh_config\n");
    Ok(text)
}

/// Writes `text` to `path` with `mode` (by a rename, so git never reads half a file),
/// unless it already holds it.
fn write_if_changed(path: &Path, text: &str, mode: u32) -> Result<(), GitSourceError> {
    use std::os::unix::fs::PermissionsExt as _;
    if std::fs::read_to_string(path).is_ok_and(|t| t == text) {
        return Ok(());
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)))
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|source| GitSourceError::Local {
            what: "write",
            path: path.to_path_buf(),
            source,
        })
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Runs `cmd` (named `what` in errors), killing it at `deadline`; returns its stdout.
pub(super) async fn run(
    mut cmd: Command,
    deadline: Duration,
    what: &'static str,
) -> Result<Vec<u8>, GitSourceError> {
    let child = cmd.spawn().map_err(GitSourceError::Spawn)?;
    match tokio::time::timeout(deadline, child.wait_with_output()).await {
        Err(_) => Err(GitSourceError::TimedOut { what, deadline }),
        Ok(Err(source)) => Err(GitSourceError::Wait { what, source }),
        Ok(Ok(out)) if out.status.success() => Ok(out.stdout),
        Ok(Ok(out)) => Err(GitSourceError::Failed {
            what,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_settings_go_in_a_config_file_not_argv() {
        let source = GitSource {
            url: "ssh://git@example.com/fleet.git".into(),
            git_ref: "main".into(),
            path: "runners.yaml".into(),
            interval: Duration::from_secs(60),
            credential: Some(GitCredential::SshKey("/keys/100%/id".into())),
            known_hosts: Some("/keys/known hosts".into()),
            revision: None,
        };
        let text = ssh_config(&source).expect("config");
        assert!(text.contains("IdentityFile \"/keys/100%%/id\"\n"), "{text}");
        assert!(
            text.contains("UserKnownHostsFile \"/keys/known hosts\"\n"),
            "{text}"
        );
        assert!(text.contains("BatchMode yes") && !text.contains("StrictHostKeyChecking"));
        let dir = tempfile::tempdir().expect("dir");
        let cmd = git(&source, dir.path()).expect("git");
        let ssh = cmd
            .as_std()
            .get_envs()
            .find(|(k, _)| *k == "GIT_SSH_COMMAND")
            .and_then(|(_, v)| v)
            .expect("GIT_SSH_COMMAND")
            .to_string_lossy()
            .into_owned();
        assert!(
            ssh.starts_with("ssh -F ") && !ssh.contains("/keys"),
            "{ssh}"
        );
        let bad = GitSource {
            credential: Some(GitCredential::SshKey("/k\"ey".into())),
            ..source
        };
        assert!(
            matches!(
                ssh_config(&bad),
                Err(GitSourceError::UnquotablePath {
                    field: "ssh_key_file",
                    ..
                })
            ),
            "a key path with a quote is refused by name"
        );
    }
}
