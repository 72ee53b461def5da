//! Fetching the `source.git` repository (DESIGN.md §6) with the `git` command.
//!
//! Why the command and not gix or git2: the command is what users already have configured
//! and debug with (ssh, proxies, `https` CA bundles all behave as in their shell), it speaks
//! every transport (`https://`, `ssh://`, `file://`) and shallow fetch without extra native
//! libraries in the build (git2 links libgit2 + OpenSSL/libssh2; gix's shallow and https
//! support need large feature sets), and each fetch is a child process corral can bound with a
//! deadline and kill, so a hung remote never blocks the controller.
//!
//! git runs with a cleared environment but for `PATH`, `HOME`, the proxy variables
//! (`HTTPS_PROXY`, `NO_PROXY`, …), the CA bundle ones (`SSL_CERT_FILE`, `GIT_SSL_CAINFO`, …) and
//! `SSH_AUTH_SOCK`, and without the user's global or system git config (a credential helper
//! there could store the token on disk).
//!
//! Credentials never reach argv, a URL or a log: git runs with a cleared environment; an https
//! token is handed over by an askpass script (written by corral, holding no secret) that prints
//! the token from a variable set only in that git child's environment, or from the token file;
//! for an `ssh://` URL ssh runs as `ssh -F <state_dir>/source/ssh_config`, a file corral writes
//! naming the key (`ssh_key_file`) and the `known_hosts` file (`known_hosts_file`), so not even
//! the key's path is on a command line. Host keys are checked as ssh always does
//! (`StrictHostKeyChecking` stays ssh's default, and `BatchMode` refuses an unknown host): a
//! `known_hosts_file` of the source's own, else ssh's own files. ssh finds `~` from the
//! password database, not `HOME`.
//!
//! Each fetch is shallow (`--depth 1`) into the bare repository `<state_dir>/source/repo.git`;
//! the commit is `FETCH_HEAD`, the file is read with `git cat-file` from that commit, so a
//! revision is one commit's file, whole. A forced push is followed: what counts is the commit
//! `ref` names now, not how it got there. A deleted `ref` is an error (the last good revision
//! stays in force).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::process::Command;
use tokio::sync::Notify;

use crate::config::{Fleet, GitCredential, GitSource, TokenSource};

/// Longest a single git command may run.
pub const FETCH_DEADLINE: Duration = Duration::from_secs(120);
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
/// First retry after a failed fetch; doubles up to the interval.
const FIRST_RETRY: Duration = Duration::from_secs(1);

const ASKPASS: &str = "#!/bin/sh\n\
# Written by corral: hands git the source token; holds no secret itself.\n\
case \"$1\" in\n\
Username*) printf '%s\\n' x-access-token ;;\n\
*) if [ -n \"$CORRAL_GIT_TOKEN_FILE\" ]; then cat \"$CORRAL_GIT_TOKEN_FILE\"; else printf '%s\\n' \"$CORRAL_GIT_TOKEN\"; fi ;;\n\
esac\n";

/// The outcome of one fetch, for the controller.
#[derive(Debug)]
pub struct Fetched {
    /// When the fetch ended.
    pub at: SystemTime,
    /// The commit's file, or why there is none.
    pub result: Result<Fleet, String>,
}

/// The fetch task of one source, and how to ask it to fetch now.
pub struct Follower {
    /// The source it follows (revision ignored).
    pub source: GitSource,
    kick: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Follower {
    /// Starts fetching `source` into `<state_dir>/source`, at once and then every interval;
    /// each result is handed to `deliver`, which says whether anyone still listens (`false`
    /// ends the task). A callback rather than the controller's channel, so this module does
    /// not depend on the controller that wraps each result into its own trigger.
    pub fn spawn(
        source: GitSource,
        state_dir: &Path,
        deliver: impl FnMut(Fetched) -> bool + Send + 'static,
        kick: Arc<Notify>,
    ) -> Self {
        let dir = state_dir.join("source");
        let task = tokio::spawn(follow(source.clone(), dir, deliver, kick.clone()));
        Follower { source, kick, task }
    }

    /// Fetches now (a push webhook).
    pub fn fetch_now(&self) {
        self.kick.notify_one();
    }

    /// Stops fetching and returns once the task has ended.
    pub async fn stop(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn follow(
    source: GitSource,
    dir: PathBuf,
    mut deliver: impl FnMut(Fetched) -> bool,
    kick: Arc<Notify>,
) {
    let mut failures: u32 = 0;
    loop {
        let result = fetch(&source, &dir, FETCH_DEADLINE).await;
        let wait = match &result {
            Ok(_) => {
                failures = 0;
                source.interval
            }
            Err(err) => {
                failures = failures.saturating_add(1);
                let wait = retry_after(failures, source.interval);
                tracing::warn!(url = %source.url, git_ref = %source.git_ref, cause = %err, retry_in = ?wait,
                    "cannot fetch the source; the last good revision stays in force");
                wait
            }
        };
        let fetched = Fetched {
            at: SystemTime::now(),
            result,
        };
        if !deliver(fetched) {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = kick.notified() => {}
        }
    }
}

/// The wait after `failures` failed fetches in a row: 1 s doubling, at most `interval`.
pub fn retry_after(failures: u32, interval: Duration) -> Duration {
    let doubled = FIRST_RETRY.saturating_mul(1u32 << failures.saturating_sub(1).min(20));
    doubled.min(interval)
}

/// Fetches `source`'s `ref` (shallow) into the bare repository under `dir` and reads its file.
pub async fn fetch(source: &GitSource, dir: &Path, deadline: Duration) -> Result<Fleet, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create `{}`: {e}", dir.display()))?;
    let repo = dir.join("repo.git");
    if !repo.join("HEAD").exists() {
        let _ = std::fs::remove_dir_all(&repo);
        let mut init = git(source, dir)?;
        init.arg("init").arg("--bare").arg("-q").arg(&repo);
        run(init, deadline, "git init").await?;
    }
    let commit = fetch_ref(source, dir, &repo, deadline).await?;
    keep_only(source, dir, &repo, &commit, deadline).await?;
    let mut show = git(source, dir)?;
    show.arg("-C")
        .arg(&repo)
        .args(["cat-file", "blob"])
        .arg(format!("{commit}:{}", source.path));
    let bytes = run(show, deadline, "git cat-file")
        .await
        .map_err(|_| format!("commit {commit} has no file `{}`", source.path))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| format!("commit {commit}: `{}` is not UTF-8 text", source.path))?;
    Ok(Fleet { commit, text })
}

/// Fetches `ref` into `repo`; returns the commit it names now.
async fn fetch_ref(
    source: &GitSource,
    dir: &Path,
    repo: &Path,
    deadline: Duration,
) -> Result<String, String> {
    let mut fetch = git(source, dir)?;
    fetch
        .arg("-C")
        .arg(repo)
        .args(["fetch", "--depth", "1", "--no-tags", "--force", "--quiet"])
        .arg(&source.url)
        .arg(&source.git_ref);
    run(fetch, deadline, "git fetch").await.map_err(|err| {
        if err.contains("couldn't find remote ref") || err.contains("not our ref") {
            format!(
                "`{}` is not in the repository (deleted?): {err}",
                source.git_ref
            )
        } else {
            err
        }
    })?;
    let mut parse = git(source, dir)?;
    parse
        .arg("-C")
        .arg(repo)
        .args(["rev-parse", "--verify", "--quiet", "FETCH_HEAD^{commit}"]);
    let commit = String::from_utf8_lossy(&run(parse, deadline, "git rev-parse").await?)
        .trim()
        .to_string();
    if commit.len() != 40 || !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("git rev-parse gave `{commit}`, not a commit id"));
    }
    Ok(commit)
}

/// Keeps `commit` by a ref and, when it is new, drops every other object, so the clone
/// holds one commit's objects however long it is followed.
async fn keep_only(
    source: &GitSource,
    dir: &Path,
    repo: &Path,
    commit: &str,
    deadline: Duration,
) -> Result<(), String> {
    // A ref keeps the commit through gc; the shallow clone then holds one commit's objects.
    let before = std::fs::read_to_string(repo.join("refs/corral/fetched")).unwrap_or_default();
    if before.trim() == commit {
        return Ok(());
    }
    let mut keep = git(source, dir)?;
    keep.arg("-C")
        .arg(repo)
        .args(["update-ref", "refs/corral/fetched", commit]);
    run(keep, deadline, "git update-ref").await?;
    let mut gc = git(source, dir)?;
    gc.arg("-C")
        .arg(repo)
        .args(["gc", "--quiet", "--prune=now"]);
    if let Err(err) = run(gc, deadline, "git gc").await {
        tracing::debug!(cause = %err, "git gc of the source clone failed");
    }
    Ok(())
}

/// A git command with a cleared environment and the source's credential wired in.
fn git(source: &GitSource, dir: &Path) -> Result<Command, String> {
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
        write_askpass(&askpass)?;
        cmd.env("GIT_ASKPASS", &askpass);
        match token {
            TokenSource::Env(name) => {
                let value = std::env::var(name).map_err(|_| {
                    format!("the environment variable `{name}` (source.git.token_env) is not set")
                })?;
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
fn ssh_config(source: &GitSource) -> Result<String, String> {
    use std::fmt::Write as _;
    let quoted = |path: &Path, field: &str| {
        let text = path.to_string_lossy();
        if text.contains(['"', '\n', '\r']) {
            return Err(format!(
                "source.git.{field} `{text}`: a path with `\"` or a line break cannot be given to ssh"
            ));
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

fn write_askpass(path: &Path) -> Result<(), String> {
    write_if_changed(path, ASKPASS, 0o700)
}

/// Writes `text` to `path` with `mode` (by a rename, so git never reads half a file),
/// unless it already holds it.
fn write_if_changed(path: &Path, text: &str, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt as _;
    if std::fs::read_to_string(path).is_ok_and(|t| t == text) {
        return Ok(());
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)))
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("cannot write `{}`: {e}", path.display()))
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

async fn run(mut cmd: Command, deadline: Duration, what: &str) -> Result<Vec<u8>, String> {
    let child = cmd.spawn().map_err(|e| format!("cannot run git: {e}"))?;
    match tokio::time::timeout(deadline, child.wait_with_output()).await {
        Err(_) => Err(format!("{what} took longer than {}s", deadline.as_secs())),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Ok(Ok(out)) if out.status.success() => Ok(out.stdout),
        Ok(Ok(out)) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let stderr = stderr.trim();
            Err(format!(
                "{what} failed ({}): {}",
                out.status,
                if stderr.is_empty() {
                    "no message"
                } else {
                    stderr
                }
            ))
        }
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
        assert!(ssh_config(&bad).is_err());
    }

    #[test]
    fn retries_back_off_to_the_interval() {
        let i = Duration::from_secs(60);
        assert_eq!(retry_after(1, i), Duration::from_secs(1));
        assert_eq!(retry_after(2, i), Duration::from_secs(2));
        assert_eq!(retry_after(4, i), Duration::from_secs(8));
        assert_eq!(retry_after(30, i), i);
    }
}
